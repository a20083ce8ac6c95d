//! The epoll backend (through mio): for machines where io_uring is unavailable (Docker's
//! default seccomp profile, `kernel.io_uring_disabled`). Same probes, same verdicts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use porthawk_core::{ConnectEvent, Errno};

use super::{errno, new_socket, reset_on_close, Completion, Driver};

struct Slot {
    stream: Option<TcpStream>,
    target: SocketAddr,
    /// Bumped at every start so a stale deadline for an earlier attempt is recognised.
    generation: u32,
}

/// Non-blocking connects watched by epoll, with deadlines kept in a heap.
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
    /// A driver for `slots` concurrent attempts.
    pub(crate) fn new(slots: usize) -> io::Result<Self> {
        Ok(EpollDriver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: (0..slots)
                .map(|_| Slot {
                    stream: None,
                    target: SocketAddr::from(([0, 0, 0, 0], 0)),
                    generation: 0,
                })
                .collect(),
            deadlines: BinaryHeap::with_capacity(slots),
            inflight: 0,
            ready: Vec::with_capacity(1024),
        })
    }

    fn finish(&mut self, slot: u32, event: ConnectEvent, out: &mut Vec<Completion>) {
        let s = &mut self.slots[slot as usize];
        if let Some(mut stream) = s.stream.take() {
            if matches!(event, ConnectEvent::Connected { .. }) {
                reset_on_close(&socket2::SockRef::from(&stream));
            }
            // Deregistering is implicit in close; the explicit call keeps mio's bookkeeping
            // honest. An error here changes nothing about the verdict.
            let _ = self.poll.registry().deregister(&mut stream);
            drop(stream);
            self.inflight -= 1;
            out.push(Completion { slot, event });
        }
    }
}

impl Driver for EpollDriver {
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno> {
        let socket = new_socket(&target, true)?;
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1) & !IMMEDIATE;
        s.target = target;
        // A non-blocking connect answers EINPROGRESS, or at once on loopback.
        let immediate = match socket.connect(&target.into()) {
            Ok(()) => Some(Ok(())),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => None,
            Err(e) => Some(Err(errno(e))),
        };
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket));
        self.poll
            .registry()
            .register(&mut stream, Token(slot as usize), Interest::WRITABLE)
            .map_err(errno)?;
        s.stream = Some(stream);
        self.inflight += 1;
        // Deadlines of attempts that finished early stay in the heap until they expire; keep
        // the heap proportional to the slab rather than to rate × timeout.
        if self.deadlines.len() > 4 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((_, slot, generation))| {
                let s = &slots[*slot as usize];
                s.stream.is_some() && s.generation == generation & !IMMEDIATE
            });
        }
        let s = &self.slots[slot as usize];
        match immediate {
            // Report immediate outcomes through the normal path on the next wait: arm a
            // deadline of zero so `wait` picks the slot up and reads SO_ERROR.
            Some(_) => {
                self.deadlines
                    .push(Reverse((Instant::now(), slot, s.generation | IMMEDIATE)))
            }
            None => self
                .deadlines
                .push(Reverse((Instant::now() + timeout, slot, s.generation))),
        }
        Ok(())
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
            let event = self.outcome(slot);
            if let Some(event) = event {
                self.finish(slot, event, out);
            }
        }
        let now = Instant::now();
        while let Some(Reverse((t, slot, generation))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let s = &self.slots[slot as usize];
            if s.stream.is_none() || s.generation != generation & !IMMEDIATE {
                continue; // already finished, or a deadline of an earlier attempt
            }
            // For an immediate outcome this reads it; for a deadline it is a last look, since
            // the answer may have arrived after the poll returned.
            let event = self.outcome(slot).unwrap_or(ConnectEvent::TimedOut);
            self.finish(slot, event, out);
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.inflight
    }
}

/// Marks the deadline entry of a connect that finished inside `connect(2)` itself.
const IMMEDIATE: u32 = 1 << 31;

impl EpollDriver {
    /// The outcome of the slot's attempt if it has one: connected (peer address known), or the
    /// socket's pending error. `None` while the handshake is still under way.
    fn outcome(&self, slot: u32) -> Option<ConnectEvent> {
        let s = &self.slots[slot as usize];
        let stream = s.stream.as_ref()?;
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
}
