//! The target farm: listeners on loopback addresses that the scenarios probe, with a ground
//! truth that depends only on the farm itself.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use porthawk_core::{AddrRange, HostSetBuilder, PortSet, PortState, SpaceError, TargetSpace};
use socket2::{Domain, SockRef, Socket, Type};

use crate::sys;

/// What a banner listener sends on accept before it closes.
pub const BANNER: &[u8] = b"SSH-2.0-porthawk_farm\r\n";

/// The most listeners a farm opens: it holds one descriptor each.
pub const MAX_LISTENERS: usize = 8192;

/// The backlog of every listener: large, so that a burst of connects is queued rather than
/// dropped while the accept threads catch up.
const BACKLOG: i32 = 4096;

/// The lowest port the farm uses: below it sit well-known services.
const FIRST_PORT: u16 = 10_000;

/// The farm's addresses are `127.a.b.1..=hosts` with `a` in this range.
const SECOND_OCTETS: std::ops::Range<u8> = 88..120;

const WAKE: Token = Token(usize::MAX);

/// The layout of a farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmConfig {
    /// Addresses, `127.a.b.1` up to `127.a.b.hosts` (1 to 254).
    pub hosts: u8,
    /// Ports with a listener on every host.
    pub open_ports: u16,
    /// How many of the open ports send [`BANNER`] on accept (the others close at once).
    pub banner_ports: u16,
    /// Ports where nothing listens.
    pub closed_ports: u16,
    /// Ports where nothing listens either, reserved for a firewall rule that drops them (the
    /// farm itself cannot make a port filtered; see the network namespace scenarios).
    pub filtered_ports: u16,
    /// Threads that accept connections.
    pub accept_threads: usize,
}

impl Default for FarmConfig {
    fn default() -> Self {
        FarmConfig {
            hosts: 16,
            open_ports: 8,
            banner_ports: 4,
            closed_ports: 1000,
            filtered_ports: 0,
            accept_threads: 2,
        }
    }
}

/// Why a farm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// A layout outside the bounds.
    #[error("invalid farm layout: {0}")]
    Layout(String),
    /// Not enough free ports below the ephemeral range.
    #[error("not enough free ports below {limit}: need {need}")]
    NoPorts {
        /// Ports needed.
        need: usize,
        /// The start of the ephemeral range.
        limit: u16,
    },
    /// No free address block was found, or a socket call failed.
    #[error("cannot set up the farm")]
    Io(#[from] io::Error),
}

/// A target farm on loopback: listeners spread over `127.a.b.1..=hosts`, some sending a
/// banner on accept, and ports left closed. Dropping it stops the accept threads and
/// closes every socket.
///
/// The ground truth ([`Farm::truth`]) is the farm's own listeners: the ports it calls closed
/// were checked to have no listener on any address when it was built, and its address block
/// had no listener in it.
pub struct Farm {
    hosts: Vec<Ipv4Addr>,
    open: Vec<u16>,
    banner: Vec<u16>,
    closed: Vec<u16>,
    filtered: Vec<u16>,
    /// Per port: what the farm makes of it on its hosts.
    class: Vec<u8>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    tids: Vec<u32>,
}

const CLASS_NONE: u8 = 0;
const CLASS_OPEN: u8 = 1;
const CLASS_CLOSED: u8 = 2;
const CLASS_FILTERED: u8 = 3;

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

impl Farm {
    /// Builds the farm in the calling thread's network namespace and starts its accept
    /// threads.
    pub fn start(config: &FarmConfig) -> Result<Farm, FarmError> {
        let listeners = usize::from(config.hosts) * usize::from(config.open_ports);
        if config.hosts == 0 || config.hosts == 255 {
            return Err(FarmError::Layout("hosts must be 1 to 254".into()));
        }
        if listeners > MAX_LISTENERS {
            return Err(FarmError::Layout(format!(
                "{listeners} listeners is more than {MAX_LISTENERS}"
            )));
        }
        if config.banner_ports > config.open_ports {
            return Err(FarmError::Layout(
                "banner ports must be among the open ports".into(),
            ));
        }
        let busy = sys::listening();
        let limit = sys::ephemeral_low();
        let need = usize::from(config.open_ports)
            + usize::from(config.closed_ports)
            + usize::from(config.filtered_ports);
        let free: Vec<u16> = (FIRST_PORT..limit)
            .filter(|p| !busy.ports.contains(p))
            .take(need)
            .collect();
        if free.len() < need {
            return Err(FarmError::NoPorts { need, limit });
        }
        let (open, rest) = free.split_at(config.open_ports.into());
        let (filtered, closed) = rest.split_at(config.filtered_ports.into());
        let banner = open[..config.banner_ports.into()].to_vec();
        let mut class = vec![CLASS_NONE; 1 << 16];
        for (ports, c) in [
            (open, CLASS_OPEN),
            (closed, CLASS_CLOSED),
            (filtered, CLASS_FILTERED),
        ] {
            for &p in ports {
                class[usize::from(p)] = c;
            }
        }

        // Pick an address block nobody listens in; spread by process id and a counter so
        // that farms of concurrent processes and threads do not meet.
        let blocks = SECOND_OCTETS.len() as u32 * 256;
        let start = std::process::id().wrapping_mul(131)
            + NEXT_BLOCK.fetch_add(1, Ordering::Relaxed).wrapping_mul(17);
        let mut last_error = None;
        for attempt in 0..64u32 {
            let block = (start.wrapping_add(attempt.wrapping_mul(7919))) % blocks;
            let (a, b) = (
                SECOND_OCTETS.start + (block / 256) as u8,
                (block % 256) as u8,
            );
            if busy.loopback_blocks.contains(&(a, b)) {
                continue;
            }
            let hosts: Vec<Ipv4Addr> = (1..=config.hosts)
                .map(|h| Ipv4Addr::new(127, a, b, h))
                .collect();
            match bind_all(&hosts, open, &banner) {
                Ok(sockets) => {
                    let mut farm = Farm {
                        hosts,
                        open: open.to_vec(),
                        banner,
                        closed: closed.to_vec(),
                        filtered: filtered.to_vec(),
                        class,
                        stop: Arc::new(AtomicBool::new(false)),
                        wakers: Vec::new(),
                        threads: Vec::new(),
                        tids: Vec::new(),
                    };
                    farm.spawn_accept_threads(sockets, config.accept_threads.max(1))?;
                    return Ok(farm);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(FarmError::Io(last_error.unwrap_or_else(|| {
            io::Error::other("no free 127.x.y.0/24 block for the farm")
        })))
    }

    fn spawn_accept_threads(
        &mut self,
        sockets: Vec<(std::net::TcpListener, bool)>,
        threads: usize,
    ) -> Result<(), FarmError> {
        let threads = threads.min(sockets.len()).max(1);
        let mut groups: Vec<Vec<(std::net::TcpListener, bool)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (i, s) in sockets.into_iter().enumerate() {
            groups[i % threads].push(s);
        }
        for (i, group) in groups.into_iter().enumerate() {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let mut listeners = Vec::with_capacity(group.len());
            for (n, (l, banner)) in group.into_iter().enumerate() {
                let mut l = TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, Token(n), Interest::READABLE)?;
                listeners.push((l, banner));
            }
            let stop = Arc::clone(&self.stop);
            let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
            let thread = std::thread::Builder::new()
                .name(format!("porthawk-farm-{i}"))
                .spawn(move || {
                    let _ = tid_tx.send(sys::current_tid());
                    accept_loop(poll, &listeners, &stop);
                })?;
            self.wakers.push(waker);
            self.threads.push(thread);
            if let Ok(Some(tid)) = tid_rx.recv() {
                self.tids.push(tid);
            }
        }
        Ok(())
    }

    /// The farm's addresses.
    pub fn hosts(&self) -> &[Ipv4Addr] {
        &self.hosts
    }

    /// Ports with a listener on every host.
    pub fn open_ports(&self) -> &[u16] {
        &self.open
    }

    /// The open ports whose listeners send [`BANNER`].
    pub fn banner_ports(&self) -> &[u16] {
        &self.banner
    }

    /// Ports where nothing listens.
    pub fn closed_ports(&self) -> &[u16] {
        &self.closed
    }

    /// Ports reserved for a drop rule.
    pub fn filtered_ports(&self) -> &[u16] {
        &self.filtered
    }

    /// The number of listeners.
    pub fn listeners(&self) -> usize {
        self.hosts.len() * self.open.len()
    }

    /// Every open target, for checking what a scan found.
    pub fn open_targets(&self) -> HashSet<SocketAddr> {
        self.hosts
            .iter()
            .flat_map(|&h| {
                self.open
                    .iter()
                    .map(move |&p| SocketAddr::new(IpAddr::V4(h), p))
            })
            .collect()
    }

    /// What a correct scan reports for `target`: `open` for the farm's listeners, `filtered`
    /// for its dropped ports, `closed` for its other ports; `None` outside the farm.
    pub fn truth(&self, target: SocketAddr) -> Option<PortState> {
        let IpAddr::V4(ip) = target.ip() else {
            return None;
        };
        let first = self.hosts.first()?;
        let o = ip.octets();
        let f = first.octets();
        if o[..3] != f[..3] || o[3] < f[3] || usize::from(o[3] - f[3]) >= self.hosts.len() {
            return None;
        }
        match self.class[usize::from(target.port())] {
            CLASS_OPEN => Some(PortState::Open),
            CLASS_CLOSED => Some(PortState::Closed),
            CLASS_FILTERED => Some(PortState::Filtered),
            _ => None,
        }
    }

    /// The target space of the first `hosts` farm hosts (at least one, at most all) ×
    /// `ports`, ordered by `seed`.
    pub fn space(&self, hosts: usize, ports: &[u16], seed: u64) -> Result<TargetSpace, SpaceError> {
        let mut b = HostSetBuilder::default();
        let hosts = &self.hosts[..hosts
            .clamp(1, self.hosts.len().max(1))
            .min(self.hosts.len())];
        if let (Some(&first), Some(&last)) = (hosts.first(), hosts.last()) {
            if let Some(range) = AddrRange::new(first.into(), last.into()) {
                b.include(range);
            }
        }
        TargetSpace::new(b.build(), PortSet::from_ports(ports.to_vec()), seed)
    }

    /// Kernel thread ids of the accept threads, so that their CPU time can be told apart
    /// from the scanner's.
    pub(crate) fn thread_ids(&self) -> &[u32] {
        &self.tids
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind_all(
    hosts: &[Ipv4Addr],
    open: &[u16],
    banner: &[u16],
) -> io::Result<Vec<(std::net::TcpListener, bool)>> {
    let mut out = Vec::with_capacity(hosts.len() * open.len());
    for &h in hosts {
        for &p in open {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::new(IpAddr::V4(h), p).into())?;
            s.listen(BACKLOG)?;
            out.push((s.into(), banner.contains(&p)));
        }
    }
    Ok(out)
}

/// Accepts until told to stop. mio is edge-triggered, so each readable listener is drained
/// until `WouldBlock`; a quiet poll also sweeps every listener, in case an edge was missed
/// while descriptors ran short.
fn accept_loop(mut poll: Poll, listeners: &[(TcpListener, bool)], stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if events.is_empty() {
            for l in listeners {
                drain(l);
            }
            continue;
        }
        for ev in &events {
            if let Some(l) = listeners.get(ev.token().0) {
                drain(l);
            }
        }
    }
}

fn drain((listener, banner): &(TcpListener, bool)) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if *banner {
                    // A fresh socket's send buffer takes a short banner at once; a peer that
                    // already reset the connection makes this fail, which is fine.
                    let _ = (&stream).write(BANNER);
                } else {
                    // Reset rather than FIN: no TIME_WAIT piles up on the farm's side.
                    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // Out of descriptors or memory: leave the rest queued for the next turn.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    #[test]
    fn farm_answers_then_is_gone_after_drop() {
        let config = FarmConfig {
            hosts: 3,
            open_ports: 3,
            banner_ports: 1,
            closed_ports: 5,
            filtered_ports: 0,
            accept_threads: 2,
        };
        let farm = Farm::start(&config).unwrap();
        assert_eq!(farm.listeners(), 9);
        assert_eq!(farm.open_targets().len(), 9);
        let timeout = Duration::from_secs(5);
        for target in farm.open_targets() {
            assert_eq!(farm.truth(target), Some(PortState::Open));
            let s = TcpStream::connect_timeout(&target, timeout);
            if !farm.banner_ports().contains(&target.port()) {
                // The listener resets at once: the reset may beat the connect's own check.
                if let Err(e) = s {
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{target}");
                }
            } else {
                let mut s = s.unwrap();
                s.set_read_timeout(Some(timeout)).unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                assert_eq!(got, BANNER);
            }
        }
        for &h in farm.hosts() {
            for &p in farm.closed_ports() {
                let target = SocketAddr::new(IpAddr::V4(h), p);
                assert_eq!(farm.truth(target), Some(PortState::Closed));
                let err = TcpStream::connect_timeout(&target, timeout).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
        let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), farm.open[0]);
        assert_eq!(farm.truth(outside), None);
        let space = farm.space(3, farm.closed_ports(), 1).unwrap();
        assert_eq!(space.len(), 15);
        assert_eq!(farm.space(1, farm.closed_ports(), 1).unwrap().len(), 5);
        assert_eq!(farm.space(0, farm.closed_ports(), 1).unwrap().len(), 5);

        let open = farm.open_targets();
        drop(farm);
        for target in open {
            let err = TcpStream::connect_timeout(&target, timeout).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{target}");
        }
    }

    #[test]
    fn layout_is_bounded() {
        let too_many = FarmConfig {
            hosts: 200,
            open_ports: 100,
            ..FarmConfig::default()
        };
        assert!(matches!(Farm::start(&too_many), Err(FarmError::Layout(_))));
        let no_hosts = FarmConfig {
            hosts: 0,
            ..FarmConfig::default()
        };
        assert!(matches!(Farm::start(&no_hosts), Err(FarmError::Layout(_))));
    }
}
