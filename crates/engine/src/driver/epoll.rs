//! The epoll backend (through mio): for machines where io_uring is unavailable (Docker's
//! default seccomp profile, `kernel.io_uring_disabled`). Same probes, same verdicts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use porthawk_core::{ConnectEvent, Errno};

use super::{errno, new_socket, recycle, reset_on_close, Completion, Driver, IoEvent, RECV_CHUNK};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Idle,
    Connect,
    Send,
    Recv,
}

struct Slot {
    stream: Option<TcpStream>,
    /// The socket of the slot's last probe, which timed out: disconnected and clean
    /// ([`recycle`]), still registered with the slot's token and writable interest. The
    /// slot's next probe of the same address family connects it instead of a new socket.
    /// Closed by [`Driver::flush`] when the shard goes idle.
    spare: Option<TcpStream>,
    op: Op,
    target: SocketAddr,
    /// Bumped at every operation so a stale deadline of an earlier one is recognised.
    generation: u32,
    tx: Vec<u8>,
    sent: usize,
    rx: Vec<u8>,
    rx_len: usize,
}

/// Marks the deadline entry of an operation that may already be complete (a connect that
/// finished inside `connect(2)`, a send or read to try at once): it is looked at on the next
/// wait without waiting for readiness.
const IMMEDIATE: u32 = 1 << 31;

/// Non-blocking sockets watched by epoll, with deadlines kept in a heap.
pub(crate) struct EpollDriver {
    poll: Poll,
    events: Events,
    slots: Vec<Slot>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    inflight: usize,
    /// Slots reported ready by the last poll (kept to avoid an allocation per turn).
    ready: Vec<u32>,
}

impl EpollDriver {
    /// A driver for `slots` concurrent probes.
    pub(crate) fn new(slots: usize) -> io::Result<Self> {
        Ok(EpollDriver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: (0..slots)
                .map(|_| Slot {
                    stream: None,
                    spare: None,
                    op: Op::Idle,
                    target: SocketAddr::from(([0, 0, 0, 0], 0)),
                    generation: 0,
                    tx: Vec::new(),
                    sent: 0,
                    rx: Vec::new(),
                    rx_len: 0,
                })
                .collect(),
            deadlines: BinaryHeap::with_capacity(slots),
            inflight: 0,
            ready: Vec::with_capacity(1024),
        })
    }

    /// Arms `op` on `slot` with a deadline; `immediate` has it looked at on the next wait.
    fn arm(&mut self, slot: u32, op: Op, timeout: Duration, immediate: bool) {
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1) & !IMMEDIATE;
        s.op = op;
        self.inflight += 1;
        // Deadlines of operations that finished early stay in the heap until they expire;
        // keep the heap proportional to the slab rather than to rate × timeout.
        if self.deadlines.len() > 4 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((_, slot, generation))| {
                let s = &slots[*slot as usize];
                s.op != Op::Idle && s.generation == generation & !IMMEDIATE
            });
        }
        let s = &self.slots[slot as usize];
        let now = Instant::now();
        if immediate {
            self.deadlines
                .push(Reverse((now, slot, s.generation | IMMEDIATE)));
        }
        self.deadlines
            .push(Reverse((now + timeout, slot, s.generation)));
    }

    fn interest(&mut self, slot: u32, interest: Interest) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        let stream = s.stream.as_mut().ok_or(libc::ENOTCONN)?;
        self.poll
            .registry()
            .reregister(stream, Token(slot as usize), interest)
            .map_err(errno)
    }

    /// Tries to make progress on the slot's operation; `Some` when it is finished.
    /// `expired` says the deadline has passed: an unfinished operation then times out.
    fn progress(&mut self, slot: u32, expired: bool) -> Option<IoEvent> {
        let s = &mut self.slots[slot as usize];
        let stream = s.stream.as_mut()?;
        match s.op {
            Op::Idle => None,
            Op::Connect => match connect_outcome(stream) {
                Some(event) => Some(IoEvent::Connect(event)),
                None if expired => Some(IoEvent::Connect(ConnectEvent::TimedOut)),
                None => None,
            },
            Op::Send => loop {
                match stream.write(&s.tx[s.sent..]) {
                    Ok(n) => {
                        s.sent += n;
                        if s.sent == s.tx.len() || n == 0 {
                            return Some(IoEvent::Sent(Ok(s.sent)));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return if expired {
                            Some(if s.sent > 0 {
                                IoEvent::Sent(Ok(s.sent))
                            } else {
                                IoEvent::TimedOut
                            })
                        } else {
                            None
                        };
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(IoEvent::Sent(Err(errno(e)))),
                }
            },
            Op::Recv => loop {
                match stream.read(&mut s.rx[..RECV_CHUNK]) {
                    Ok(n) => {
                        s.rx_len = n;
                        return Some(IoEvent::Received(Ok(n)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return expired.then_some(IoEvent::TimedOut);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(IoEvent::Received(Err(errno(e)))),
                }
            },
        }
    }

    fn complete(&mut self, slot: u32, event: IoEvent, out: &mut Vec<Completion>) {
        let s = &mut self.slots[slot as usize];
        s.op = Op::Idle;
        self.inflight -= 1;
        if let IoEvent::Connect(connect) = event {
            match connect {
                ConnectEvent::Connected { .. } => {
                    if let Some(stream) = &s.stream {
                        reset_on_close(&socket2::SockRef::from(stream));
                    }
                }
                ConnectEvent::TimedOut
                    if s.stream
                        .as_ref()
                        .is_some_and(|stream| recycle(&socket2::SockRef::from(stream))) =>
                {
                    s.spare = s.stream.take();
                }
                _ => self.drop_stream(slot),
            }
        }
        out.push(Completion { slot, event });
    }

    fn drop_stream(&mut self, slot: u32) {
        if let Some(stream) = self.slots[slot as usize].stream.take() {
            self.close_stream(stream);
        }
    }

    fn close_stream(&mut self, mut stream: TcpStream) {
        // Closing deregisters too; the explicit call keeps mio's bookkeeping honest.
        let _ = self.poll.registry().deregister(&mut stream);
    }

    /// Connects the slot's spare socket to `target`, if it has one of the right family:
    /// `Some(immediate)` then, as [`Driver::start`] needs it. A spare that cannot take the
    /// connect is closed (`None`: the caller makes a new socket).
    fn connect_spare(&mut self, slot: u32, target: SocketAddr) -> Option<Result<bool, Errno>> {
        let s = &mut self.slots[slot as usize];
        let spare = s.spare.take()?;
        if s.target.is_ipv4() != target.is_ipv4() {
            self.close_stream(spare);
            return None;
        }
        // Still registered with this slot's token for writability, as a connect needs.
        let outcome = match socket2::SockRef::from(&spare).connect(&target.into()) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(errno(e)),
        };
        match outcome {
            Ok(_) => s.stream = Some(spare),
            Err(_) => self.close_stream(spare),
        }
        Some(outcome)
    }
}

/// The outcome of a non-blocking connect if it has one: connected (peer address known), or
/// the socket's pending error. `None` while the handshake is still under way.
fn connect_outcome(stream: &TcpStream) -> Option<ConnectEvent> {
    match stream.take_error() {
        Ok(Some(e)) => return Some(ConnectEvent::Failed(errno(e))),
        Ok(None) => {}
        Err(e) => return Some(ConnectEvent::Failed(errno(e))),
    }
    match stream.peer_addr() {
        Ok(peer) => match stream.local_addr() {
            Ok(local) => Some(ConnectEvent::Connected { local, peer }),
            Err(e) => Some(ConnectEvent::Failed(errno(e))),
        },
        // Not connected yet, and no error pending: still in progress.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => None,
        Err(e) => Some(ConnectEvent::Failed(errno(e))),
    }
}

impl Driver for EpollDriver {
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno> {
        if let Some(outcome) = self.connect_spare(slot, target) {
            let immediate = outcome?;
            self.slots[slot as usize].target = target;
            self.arm(slot, Op::Connect, timeout, immediate);
            return Ok(());
        }
        let socket = new_socket(&target, true)?;
        // A non-blocking connect answers EINPROGRESS, or at once on loopback.
        let immediate = match socket.connect(&target.into()) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => return Err(errno(e)),
        };
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket));
        self.poll
            .registry()
            .register(&mut stream, Token(slot as usize), Interest::WRITABLE)
            .map_err(errno)?;
        let s = &mut self.slots[slot as usize];
        s.stream = Some(stream);
        s.target = target;
        self.arm(slot, Op::Connect, timeout, immediate);
        Ok(())
    }

    fn send(&mut self, slot: u32, data: &[u8], timeout: Duration) -> Result<(), Errno> {
        self.interest(slot, Interest::WRITABLE)?;
        let s = &mut self.slots[slot as usize];
        s.tx.clear();
        s.tx.extend_from_slice(data);
        s.sent = 0;
        self.arm(slot, Op::Send, timeout, true);
        Ok(())
    }

    fn recv(&mut self, slot: u32, timeout: Duration) -> Result<(), Errno> {
        self.interest(slot, Interest::READABLE)?;
        let s = &mut self.slots[slot as usize];
        if s.rx.len() < RECV_CHUNK {
            s.rx.resize(RECV_CHUNK, 0);
        }
        s.rx_len = 0;
        self.arm(slot, Op::Recv, timeout, true);
        Ok(())
    }

    fn received(&self, slot: u32) -> &[u8] {
        let s = &self.slots[slot as usize];
        &s.rx[..s.rx_len]
    }

    fn close(&mut self, slot: u32) {
        self.drop_stream(slot);
    }

    fn wait(&mut self, out: &mut Vec<Completion>, max_wait: Duration) -> io::Result<()> {
        if self.inflight == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let next_deadline = self.deadlines.peek().map(|Reverse((t, _, _))| *t);
        let wait = next_deadline
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(max_wait)
            .min(max_wait);
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ready.clear();
        self.ready
            .extend(self.events.iter().map(|e| e.token().0 as u32));
        for i in 0..self.ready.len() {
            let slot = self.ready[i];
            if let Some(event) = self.progress(slot, false) {
                self.complete(slot, event, out);
            }
        }
        let now = Instant::now();
        while let Some(Reverse((t, slot, generation))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let s = &self.slots[slot as usize];
            if s.op == Op::Idle || s.generation != generation & !IMMEDIATE {
                continue; // already finished, or a deadline of an earlier operation
            }
            // For an immediate entry this looks at an operation that may be done already;
            // for a deadline it is a last look, since the answer may have arrived after the
            // poll returned.
            let expired = generation & IMMEDIATE == 0;
            if let Some(event) = self.progress(slot, expired) {
                self.complete(slot, event, out);
            }
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn flush(&mut self) -> io::Result<()> {
        // Sockets are closed synchronously, when their probe ends: nothing is ever queued.
        // The shard goes idle: no spare socket stays open for a job that may never come.
        for slot in 0..self.slots.len() {
            if let Some(spare) = self.slots[slot].spare.take() {
                self.close_stream(spare);
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn socket_fd(&self, slot: u32) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.slots[slot as usize]
            .stream
            .as_ref()
            .map(AsRawFd::as_raw_fd)
    }

    #[cfg(test)]
    fn spare_fd(&self, slot: u32) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.slots[slot as usize]
            .spare
            .as_ref()
            .map(AsRawFd::as_raw_fd)
    }
}
