//! The backends that own the sockets: io_uring and epoll.
//!
//! A backend starts connects for slots of the shard's slab and reports what happened to each
//! as a [`porthawk_core::ConnectEvent`]; the shard asks the core's probe machine what that
//! means. Both backends close a probe's socket before they report its completion; a
//! connected one with `SO_LINGER 0` (an RST, no TIME_WAIT on either side). A socket whose
//! connect timed out is disconnected instead and kept for the slot's next probe (epoll:
//! [`recycle`]; io_uring, on both fd paths: a disconnect through the ring), until the shard
//! goes idle.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use porthawk_core::{ConnectEvent, Errno};

pub(crate) mod epoll;
pub(crate) mod uring;

/// How a backend holds its probes' sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdPath {
    /// Direct descriptors: io_uring creates each socket inside the ring, into the shard's
    /// registered file table, and connects, sends, reads and closes it there, so a probe
    /// that ends refused or unanswered makes no system call of its own.
    Direct,
    /// Plain file descriptors: `socket(2)` per probe (epoll always; io_uring where the
    /// kernel lacks what the direct path needs, or when asked).
    Plain,
}

impl fmt::Display for FdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdPath::Direct => "direct",
            FdPath::Plain => "plain",
        })
    }
}

/// What finished on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoEvent {
    /// The connect attempt ended. After `Connected` the socket stays open for the dialog
    /// until [`Driver::close`]; after anything else it is already closed (or, after
    /// `TimedOut`, disconnected and kept for the slot's next probe).
    Connect(ConnectEvent),
    /// A send finished: bytes sent, or the errno.
    Sent(Result<usize, Errno>),
    /// A read finished: bytes read into [`Driver::received`] (0: the peer closed), or the errno.
    Received(Result<usize, Errno>),
    /// A send or read did not finish in time.
    TimedOut,
}

/// One finished operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The slot it belonged to.
    pub slot: u32,
    /// What happened.
    pub event: IoEvent,
}

/// Bytes one read may return.
pub(crate) const RECV_CHUNK: usize = 2048;

/// What a shard needs from a backend. A slot has at most one operation in flight.
pub(crate) trait Driver {
    /// Opens a socket for `slot` and starts connecting it to `target`, to be given up after
    /// `timeout`. An `Err` is the errno of a failure before anything was started (e.g.
    /// `EMFILE`); nothing is left open then.
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno>;

    /// Starts sending `data` on the slot's connected socket (the driver keeps a copy).
    fn send(&mut self, slot: u32, data: &[u8], timeout: Duration) -> Result<(), Errno>;

    /// Starts reading up to [`RECV_CHUNK`] bytes from the slot's connected socket.
    fn recv(&mut self, slot: u32, timeout: Duration) -> Result<(), Errno>;

    /// The bytes of the slot's last finished read.
    fn received(&self, slot: u32) -> &[u8];

    /// Closes the slot's connected socket with an RST. No operation may be in flight on it.
    fn close(&mut self, slot: u32);

    /// Hands started work to the kernel and waits up to `max_wait` for at least one operation
    /// to finish, appending finished ones to `out`. Returns at once when nothing is in flight.
    fn wait(&mut self, out: &mut Vec<Completion>, max_wait: Duration) -> io::Result<()>;

    /// Operations in flight.
    fn inflight(&self) -> usize;

    /// Hands queued work (the closes of finished probes) to the kernel without waiting, and
    /// closes the sockets kept for reuse. A shard calls it before it goes idle, so no socket
    /// of a finished job stays open until the next job.
    fn flush(&mut self) -> io::Result<()>;

    /// The descriptor of the slot's own probe socket, if it has one (tests).
    #[cfg(test)]
    fn socket_fd(&self, slot: u32) -> Option<std::os::fd::RawFd>;

    /// The descriptor of the socket kept for the slot's next probe, if any (tests).
    #[cfg(test)]
    fn spare_fd(&self, slot: u32) -> Option<std::os::fd::RawFd>;
}

/// A TCP socket for a probe of `target`.
///
/// `SO_LINGER 0` is not set here but by [`reset_on_close`] once a connect succeeds: only a
/// connected socket has anything to reset, and most probes of a sweep end refused or
/// unanswered, so this saves a system call on nearly every probe.
pub(crate) fn new_socket(target: &SocketAddr, nonblocking: bool) -> Result<socket2::Socket, Errno> {
    let domain = socket2::Domain::for_address(*target);
    let mut ty = socket2::Type::STREAM.cloexec();
    if nonblocking {
        ty = ty.nonblocking();
    }
    socket2::Socket::new(domain, ty, Some(socket2::Protocol::TCP)).map_err(errno)
}

/// Sets `SO_LINGER` to zero on a connected socket so that closing it sends an RST and leaves
/// no TIME_WAIT (which would eat ephemeral ports on the next sweep). Best effort: if it fails,
/// the close is an orderly one and the verdict is unchanged.
pub(crate) fn reset_on_close(socket: &socket2::Socket) {
    let _ = socket.set_linger(Some(Duration::ZERO));
}

/// Makes a socket whose connect timed out ready for the slot's next probe: disconnects it
/// (`connect(AF_UNSPEC)`, which releases its local port and source address) and clears the
/// errors that leaves pending (`ECONNRESET`; a soft error of the old attempt, if one came in
/// after its last look). `false` when it cannot be made clean: the caller closes it then.
///
/// Why: on a filtered network nearly every probe times out, and closing its socket and
/// creating the next one is most of what a probe costs the shard (`socket(2)`, a file and an
/// inode, their teardown); reusing the socket halves that, and the shard restarts a timed-out
/// slot sooner (docs/benchmarks.md, "Filtered throughput").
pub(crate) fn recycle(socket: &socket2::Socket) -> bool {
    rustix::net::connect_unspec(socket).is_ok() && soft_error(socket).is_ok()
}

/// After a disconnect (`connect(AF_UNSPEC)`, here or through io_uring): takes the errors it
/// leaves pending, so that the socket is clean. The disconnect's own `ECONNRESET` in the
/// hard error (unless the connect's completion took it), and behind it the soft error an
/// ICMP message may have left while the handshake was pending: that one is returned. An
/// error when the socket cannot be read or will not come clean (it is then not reused).
pub(crate) fn soft_error(socket: &socket2::Socket) -> Result<Option<Errno>, Errno> {
    for _ in 0..2 {
        match socket.take_error() {
            Ok(None) => return Ok(None),
            Ok(Some(e)) => match errno(e) {
                libc::ECONNRESET => {}
                e => return Ok(Some(e)),
            },
            Err(e) => return Err(errno(e)),
        }
    }
    Err(libc::ECONNRESET)
}

/// The errno of an I/O error (EIO when it carries none).
pub(crate) fn errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::os::fd::RawFd;
    use std::time::Instant;

    use super::*;

    /// What `/proc/self/fd/N` points at (`socket:[inode]`), if N is open: an inode names one
    /// socket for as long as it is open, where a descriptor number is reused at once.
    fn fd_link(fd: RawFd) -> Option<String> {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn listener(backlog: i32) -> TcpListener {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        s.listen(backlog).unwrap();
        s.into()
    }

    /// Runs `d` until slot `slot` completes (bounded by 20 s); nothing else may complete.
    fn outcome(d: &mut dyn Driver, slot: u32) -> IoEvent {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.is_empty() && Instant::now() < deadline {
            d.wait(&mut out, Duration::from_millis(50)).unwrap();
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].slot, slot);
        out[0].event
    }

    /// The backends this machine runs: epoll always, io_uring's plain path where io_uring
    /// works (its absence fails under CI, as in the io_uring driver's own tests).
    fn drivers() -> BTreeMap<&'static str, Box<dyn Driver>> {
        let mut drivers: BTreeMap<&'static str, Box<dyn Driver>> = BTreeMap::new();
        drivers.insert("epoll", Box::new(epoll::EpollDriver::new(8).unwrap()));
        match uring::available() {
            Ok(()) => {
                let d = uring::UringDriver::new(8, FdPath::Plain).unwrap();
                drivers.insert("io_uring plain", Box::new(d));
            }
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("io_uring is needed under CI: {e}")
            }
            Err(e) => eprintln!("skipping io_uring: {e}"),
        }
        drivers
    }

    /// Issue 15 item 3: a socket whose connect timed out is kept for the slot's next probe
    /// (the same socket, not a new one) and gives that probe exact verdicts: connected to
    /// an open port with its own local address, refused by a closed one (the reset that the
    /// disconnect leaves pending is not mistaken for the next target's answer), unanswered
    /// again; a spare of the wrong address family is not used; going idle closes it.
    /// The targets of the socket reuse tests, open for as long as the value lives.
    pub(super) struct ReuseTargets {
        /// Drops SYNs: backlog 0 and one connection in its queue.
        pub(super) unanswered: SocketAddr,
        pub(super) open: SocketAddr,
        /// Bound, never listening: refused, and the port stays ours.
        pub(super) refused: SocketAddr,
        _held: (TcpListener, TcpStream, TcpListener, socket2::Socket),
    }

    impl ReuseTargets {
        pub(super) fn new() -> Self {
            let full = listener(0);
            let unanswered = full.local_addr().unwrap();
            let first = TcpStream::connect(unanswered).unwrap();
            let open = listener(16);
            let open_addr = open.local_addr().unwrap();
            let bound =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            bound
                .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
                .unwrap();
            let refused = bound.local_addr().unwrap().as_socket().unwrap();
            ReuseTargets {
                unanswered,
                open: open_addr,
                refused,
                _held: (full, first, open, bound),
            }
        }
    }

    #[test]
    fn a_timed_out_socket_is_reused_for_the_next_probe_with_exact_verdicts() {
        let targets = ReuseTargets::new();
        let (full_addr, open_addr, refused) = (targets.unanswered, targets.open, targets.refused);
        let ipv6_refused = std::net::TcpListener::bind("[::1]:0")
            .map(|l| l.local_addr().unwrap())
            .ok(); // dropped at once: nothing listens there now
        let short = Duration::from_millis(200);
        let long = Duration::from_secs(10);

        for (name, mut d) in drivers() {
            let d = d.as_mut();
            let slot = 3;
            // Times out, and its socket is kept.
            d.start(slot, full_addr, short).unwrap();
            let first = fd_link(d.socket_fd(slot).unwrap()).unwrap();
            assert_eq!(
                outcome(d, slot),
                IoEvent::Connect(ConnectEvent::TimedOut),
                "{name}"
            );
            assert_eq!(d.socket_fd(slot), None, "{name}");
            let spare = d.spare_fd(slot).expect("a timed-out socket is kept");
            assert_eq!(fd_link(spare).as_ref(), Some(&first), "{name}");

            // The same socket connects to an open port, from its own address.
            d.start(slot, open_addr, long).unwrap();
            assert_eq!(d.spare_fd(slot), None, "{name}");
            assert_eq!(fd_link(d.socket_fd(slot).unwrap()), Some(first.clone()));
            match outcome(d, slot) {
                IoEvent::Connect(ConnectEvent::Connected { local, peer }) => {
                    assert_eq!(peer, open_addr, "{name}");
                    assert_ne!(local, peer, "{name}");
                    assert_eq!(local.ip(), peer.ip(), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            // An open socket is closed, never kept.
            d.close(slot);
            assert_eq!(d.spare_fd(slot), None, "{name}");

            // Unanswered again (a new socket), kept, then refused: ECONNREFUSED, not the
            // ECONNRESET its disconnect left behind.
            d.start(slot, full_addr, short).unwrap();
            let second = fd_link(d.socket_fd(slot).unwrap()).unwrap();
            assert_eq!(
                outcome(d, slot),
                IoEvent::Connect(ConnectEvent::TimedOut),
                "{name}"
            );
            d.start(slot, refused, long).unwrap();
            assert_eq!(fd_link(d.socket_fd(slot).unwrap()), Some(second.clone()));
            assert_eq!(
                outcome(d, slot),
                IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED)),
                "{name}"
            );
            assert_eq!(d.spare_fd(slot), None, "a refused socket is closed: {name}");

            // Unanswered twice on the same socket: the second timeout is a timeout too.
            d.start(slot, full_addr, short).unwrap();
            assert_eq!(outcome(d, slot), IoEvent::Connect(ConnectEvent::TimedOut));
            let third = fd_link(d.spare_fd(slot).unwrap()).unwrap();
            d.start(slot, full_addr, short).unwrap();
            assert_eq!(fd_link(d.socket_fd(slot).unwrap()), Some(third.clone()));
            assert_eq!(
                outcome(d, slot),
                IoEvent::Connect(ConnectEvent::TimedOut),
                "{name}"
            );

            // Another family: the spare is closed and a new socket made.
            if let Some(v6) = ipv6_refused {
                let spare = d.spare_fd(slot).unwrap();
                d.start(slot, v6, long).unwrap();
                assert_ne!(fd_link(d.socket_fd(slot).unwrap()), Some(third.clone()));
                assert_eq!(
                    outcome(d, slot),
                    IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED)),
                    "{name}"
                );
                d.flush().unwrap();
                assert_ne!(
                    fd_link(spare),
                    Some(third.clone()),
                    "{name}: spare left open"
                );
                d.start(slot, full_addr, short).unwrap();
                assert_eq!(outcome(d, slot), IoEvent::Connect(ConnectEvent::TimedOut));
            } else {
                eprintln!("no IPv6 loopback: the family switch is not tried");
            }

            // Going idle closes the kept socket.
            let spare = d.spare_fd(slot).unwrap();
            let link = fd_link(spare).unwrap();
            d.flush().unwrap();
            assert_eq!(d.spare_fd(slot), None, "{name}");
            assert_ne!(
                fd_link(spare),
                Some(link),
                "{name}: the spare is still open"
            );
        }
        drop(targets);
    }
}
