//! The io_uring backend: `CONNECT`, `SEND` and `RECV` each linked to a `LINK_TIMEOUT`, `CLOSE`
//! through the ring, one `io_uring_enter` per loop turn.
//!
//! This is the only module of porthawk that uses `unsafe`: pushing an entry hands the kernel
//! raw pointers (the peer address, the timeout, the send and receive buffers) that must stay
//! valid until the kernel is done with them. The slab below guarantees that; each `unsafe`
//! block says how.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::Duration;

use io_uring::squeue::Flags;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use porthawk_core::{ConnectEvent, Errno};
use socket2::{SockAddr, Socket};

use super::{errno, new_socket, reset_on_close, Completion, Driver, IoEvent, RECV_CHUNK};

/// `user_data` of entries whose completions carry no news: the link timeouts (the linked
/// operation's own completion says whether the timeout fired) and the closes.
const QUIET: u64 = u64::MAX;

/// The most in-flight probes one ring carries: two completions each must fit into the
/// largest completion queue the kernel allows (65,536 entries).
pub(crate) const MAX_SLOTS: usize = 32_736;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Idle,
    Connect,
    Send,
    Recv,
}

struct Slot {
    socket: Option<Socket>,
    op: Op,
    /// The peer address the kernel reads while the connect is in flight.
    addr: SockAddr,
    /// The timeout the kernel reads when it prepares the linked timeout.
    timeout: Timespec,
    target: SocketAddr,
    generation: u32,
    /// Bytes being sent; not touched while a send is in flight.
    tx: Vec<u8>,
    /// Receive buffer, allocated on the slot's first read; not touched while a read is in
    /// flight.
    rx: Vec<u8>,
    /// Bytes of `rx` filled by the last finished read.
    rx_len: usize,
}

/// One io_uring ring and the fixed slab of probes in flight on it.
pub(crate) struct UringDriver {
    ring: IoUring,
    /// Never resized after creation, so the addresses of `addr` and `timeout` are stable.
    slots: Box<[Slot]>,
    inflight: usize,
    /// Completions copied out of the ring before they are handled (reused every turn).
    cqes: Vec<(u64, i32)>,
}

/// Whether io_uring can run here with what the engine needs. The error says why not
/// (seccomp, `kernel.io_uring_disabled`, an old kernel).
pub(crate) fn available() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    for (code, name) in [
        (opcode::Connect::CODE, "CONNECT"),
        (opcode::LinkTimeout::CODE, "LINK_TIMEOUT"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Recv::CODE, "RECV"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring lacks IORING_OP_{name}"));
        }
    }
    Ok(())
}

impl UringDriver {
    /// A ring for `slots` concurrent probes (at most [`MAX_SLOTS`]). Must be called on the
    /// thread that will use it: the ring is set up single-issuer with deferred task work.
    pub(crate) fn new(slots: usize) -> io::Result<Self> {
        let slots = slots.clamp(1, MAX_SLOTS);
        let sq = (slots * 3).next_power_of_two().clamp(64, 4096) as u32;
        let cq = (slots * 2 + 64).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq)
            .or_else(|_| IoUring::builder().setup_cqsize(cq).build(sq))?;
        let slots = (0..slots)
            .map(|_| Slot {
                socket: None,
                op: Op::Idle,
                addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                timeout: Timespec::new(),
                target: SocketAddr::from(([0, 0, 0, 0], 0)),
                generation: 0,
                tx: Vec::new(),
                rx: Vec::new(),
                rx_len: 0,
            })
            .collect();
        Ok(UringDriver {
            ring,
            slots,
            inflight: 0,
            cqes: Vec::with_capacity(cq as usize),
        })
    }

    /// Pushes entries that must go to the kernel together, submitting first if the
    /// submission queue lacks room.
    ///
    /// # Safety
    /// Every pointer inside `entries` must stay valid until the kernel has completed the entry.
    unsafe fn push(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() >= entries.len() {
                // SAFETY: the caller guarantees the pointers' validity.
                return unsafe { sq.push_multiple(entries) }
                    .map_err(|_| io::Error::other("submission queue full"));
            }
        }
        self.ring.submit()?;
        let mut sq = self.ring.submission();
        // SAFETY: as above; the queue was just flushed to the kernel, so there is room.
        unsafe { sq.push_multiple(entries) }.map_err(|_| io::Error::other("submission queue full"))
    }

    fn close_socket(&mut self, socket: Socket) {
        let fd = socket.into_raw_fd();
        let entry = opcode::Close::new(Fd(fd))
            .build()
            .flags(Flags::SKIP_SUCCESS)
            .user_data(QUIET);
        // SAFETY: CLOSE carries no pointer; the fd is ours and no longer used by anyone else.
        if unsafe { self.push(&[entry]) }.is_err() {
            // SAFETY: the ring refused the close, so the fd is still ours alone to close.
            unsafe { libc::close(fd) };
        }
    }

    /// Pushes `op` linked to a timeout for `slot`.
    ///
    /// # Safety
    /// The pointers inside `entry` must point into `self.slots[slot]` (address, buffers),
    /// which the caller does not touch again until the operation's completion is reaped.
    unsafe fn push_linked(
        &mut self,
        slot: u32,
        op: Op,
        entry: squeue::Entry,
        timeout: Duration,
    ) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.timeout = Timespec::from(timeout);
        s.op = op;
        let entry = entry
            .flags(Flags::IO_LINK)
            .user_data((u64::from(slot) << 32) | u64::from(s.generation));
        let link_timeout = opcode::LinkTimeout::new(&s.timeout)
            .build()
            .user_data(QUIET);
        // SAFETY: `s.timeout` lives in the never-resized slab and is not rewritten until this
        // slot's operation completes; the caller vouches for `entry`'s pointers.
        match unsafe { self.push(&[entry, link_timeout]) } {
            Ok(()) => {
                self.inflight += 1;
                Ok(())
            }
            Err(e) => {
                self.slots[slot as usize].op = Op::Idle;
                Err(errno(e))
            }
        }
    }
}

/// The state of a socket whose connect io_uring reported successful: connected if it has a
/// peer, otherwise failed with its pending error (or `ENOTCONN` when none is left).
fn verify_connected(socket: &Socket, target: SocketAddr) -> ConnectEvent {
    match socket.peer_addr() {
        Ok(_) => match socket.local_addr().map(|a| a.as_socket()) {
            Ok(Some(local)) => ConnectEvent::Connected {
                local,
                peer: target,
            },
            Ok(None) => ConnectEvent::Failed(libc::EAFNOSUPPORT),
            Err(e) => ConnectEvent::Failed(errno(e)),
        },
        Err(e) => match socket.take_error() {
            Ok(Some(pending)) => ConnectEvent::Failed(errno(pending)),
            _ => ConnectEvent::Failed(errno(e)),
        },
    }
}

/// The state of a socket whose connect was cancelled by its timeout: connected (the peer
/// answered), failed with the error the peer's answer left pending, or still unanswered.
/// With deferred task work the answer can have arrived just before the timer fired.
fn last_look(socket: &Socket, target: SocketAddr) -> ConnectEvent {
    match socket.take_error() {
        Ok(Some(e)) => return ConnectEvent::Failed(errno(e)),
        Ok(None) => {}
        Err(e) => return ConnectEvent::Failed(errno(e)),
    }
    match (socket.peer_addr(), socket.local_addr()) {
        (Ok(_), Ok(local)) => match local.as_socket() {
            Some(local) => ConnectEvent::Connected {
                local,
                peer: target,
            },
            None => ConnectEvent::TimedOut,
        },
        _ => ConnectEvent::TimedOut,
    }
}

impl Driver for UringDriver {
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno> {
        // io_uring polls and retries a connect itself, so the socket stays in blocking mode:
        // a non-blocking one would surface EINPROGRESS instead of the outcome.
        let socket = new_socket(&target, false)?;
        let fd = socket.as_raw_fd();
        let s = &mut self.slots[slot as usize];
        debug_assert!(s.socket.is_none(), "slot {slot} started twice");
        s.target = target;
        s.addr = SockAddr::from(target);
        let connect = opcode::Connect::new(Fd(fd), s.addr.as_ptr().cast(), s.addr.len()).build();
        s.socket = Some(socket);
        // SAFETY: `addr` lives in the never-resized slab and is not rewritten until the
        // connect's completion has been reaped in `wait` (the slot is busy until then); the
        // socket stays open in the slot as well.
        let pushed = unsafe { self.push_linked(slot, Op::Connect, connect, timeout) };
        if pushed.is_err() {
            self.slots[slot as usize].socket = None;
        }
        pushed
    }

    fn send(&mut self, slot: u32, data: &[u8], timeout: Duration) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        let fd = s.socket.as_ref().ok_or(libc::ENOTCONN)?.as_raw_fd();
        s.tx.clear();
        s.tx.extend_from_slice(data);
        let entry = opcode::Send::new(Fd(fd), s.tx.as_ptr(), s.tx.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: `tx` belongs to the slot and is neither written nor reallocated until the
        // send's completion has been reaped.
        unsafe { self.push_linked(slot, Op::Send, entry, timeout) }
    }

    fn recv(&mut self, slot: u32, timeout: Duration) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        let fd = s.socket.as_ref().ok_or(libc::ENOTCONN)?.as_raw_fd();
        if s.rx.len() < RECV_CHUNK {
            s.rx.resize(RECV_CHUNK, 0);
        }
        s.rx_len = 0;
        let entry = opcode::Recv::new(Fd(fd), s.rx.as_mut_ptr(), RECV_CHUNK as u32).build();
        // SAFETY: `rx` belongs to the slot, has RECV_CHUNK initialised bytes, and is neither
        // read, written nor reallocated until the read's completion has been reaped.
        unsafe { self.push_linked(slot, Op::Recv, entry, timeout) }
    }

    fn received(&self, slot: u32) -> &[u8] {
        let s = &self.slots[slot as usize];
        &s.rx[..s.rx_len]
    }

    fn close(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        debug_assert_eq!(s.op, Op::Idle, "close with an operation in flight");
        if let Some(socket) = s.socket.take() {
            self.close_socket(socket);
        }
    }

    fn wait(&mut self, out: &mut Vec<Completion>, max_wait: Duration) -> io::Result<()> {
        if self.inflight == 0 {
            // Nothing to wait for, but closes may still be queued.
            if !self.ring.submission().is_empty() {
                self.ring.submit()?;
            }
            return Ok(());
        }
        let ts = Timespec::from(max_wait);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.cqes.clear();
        self.cqes
            .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        // With deferred task work the kernel runs only a bounded amount of it per enter
        // (about 20 items when asked for one completion), so completions that are ready would
        // wait for later turns while new probes pile up: at 20,000 in flight on loopback that
        // made the median connect take 300 ms instead of 20. Ask again, without waiting, for
        // as many as may be ready, while entries keep coming (bounded).
        let zero = Timespec::new();
        let args = SubmitArgs::new().timespec(&zero);
        for _ in 0..64 {
            let want = self.inflight.saturating_sub(self.cqes.len()).clamp(1, 4096);
            // ETIME is the normal answer here (fewer than `want` ready); nothing to report.
            let _ = self.ring.submitter().submit_with_args(want, &args);
            let before = self.cqes.len();
            self.cqes
                .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            if self.cqes.len() == before {
                break;
            }
        }
        for i in 0..self.cqes.len() {
            let (user_data, result) = self.cqes[i];
            if user_data == QUIET {
                continue;
            }
            let slot = (user_data >> 32) as u32;
            let s = &mut self.slots[slot as usize];
            if s.generation != user_data as u32 || s.op == Op::Idle {
                continue;
            }
            let op = std::mem::replace(&mut s.op, Op::Idle);
            self.inflight -= 1;
            let event = match op {
                Op::Connect => {
                    let Some(socket) = s.socket.take() else {
                        continue;
                    };
                    let event = match -result {
                        // A zero result is not proof of a handshake: when an ICMP error ends
                        // the attempt, io_uring can report 0 with the error already consumed.
                        0 => verify_connected(&socket, s.target),
                        // The linked timeout fired and cancelled the connect.
                        libc::ECANCELED => last_look(&socket, s.target),
                        e => ConnectEvent::Failed(e),
                    };
                    if matches!(event, ConnectEvent::Connected { .. }) {
                        reset_on_close(&socket);
                        s.socket = Some(socket);
                    } else {
                        self.close_socket(socket);
                    }
                    IoEvent::Connect(event)
                }
                Op::Send => match result {
                    n if n >= 0 => IoEvent::Sent(Ok(n as usize)),
                    e if -e == libc::ECANCELED => IoEvent::TimedOut,
                    e => IoEvent::Sent(Err(-e)),
                },
                Op::Recv => match result {
                    n if n >= 0 => {
                        s.rx_len = n as usize;
                        IoEvent::Received(Ok(n as usize))
                    }
                    e if -e == libc::ECANCELED => last_look_recv(s),
                    e => IoEvent::Received(Err(-e)),
                },
                Op::Idle => continue,
            };
            out.push(Completion { slot, event });
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.inflight
    }
}

/// A read cancelled by its timeout: bytes may have arrived just before the timer fired (see
/// [`last_look`]); take them if they are there, without waiting.
fn last_look_recv(s: &mut Slot) -> IoEvent {
    let Some(socket) = s.socket.as_ref() else {
        return IoEvent::TimedOut;
    };
    let buf = &mut s.rx[..RECV_CHUNK];
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the bytes are initialised; recv
    // only writes initialised bytes into it.
    let uninit: &mut [MaybeUninit<u8>] =
        unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    match socket.recv_with_flags(uninit, libc::MSG_DONTWAIT) {
        // Ok(0) is the peer's close, which is news too.
        Ok(n) => {
            s.rx_len = n;
            IoEvent::Received(Ok(n))
        }
        Err(_) => IoEvent::TimedOut,
    }
}
