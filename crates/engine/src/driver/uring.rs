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
use std::time::{Duration, Instant};

use io_uring::squeue::Flags;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use porthawk_core::{ConnectEvent, Errno};
use socket2::{SockAddr, Socket};

use super::{errno, new_socket, reset_on_close, Completion, Driver, IoEvent, RECV_CHUNK};

/// `user_data` of entries whose completions carry no news: the link timeouts (the linked
/// operation's own completion says whether the timeout fired) and the closes.
const QUIET: u64 = u64::MAX;

/// In unit tests, setting up a ring of this many slots fails, so that the engine's fallback
/// to epoll can be exercised without breaking io_uring for the whole machine.
#[cfg(test)]
pub(crate) const SETUP_FAILS_FOR: usize = 4093;

/// `user_data` of the cancellations that [`UringDriver`]'s `Drop` submits.
const CANCEL: u64 = u64::MAX - 1;

/// How long dropping a driver waits for the kernel to give back the operations it cancelled.
/// Cancellation of a connect, send or read is prompt; this bound only guards against a kernel
/// that never answers, in which case the slab is leaked rather than freed under the kernel.
const DROP_WAIT: Duration = Duration::from_secs(10);

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
        #[cfg(test)]
        if slots == SETUP_FAILS_FOR {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let (sq, cq) = ring_sizes(slots);
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

/// The submission and completion queue sizes for `slots` probes (1 to [`MAX_SLOTS`]).
///
/// A probe has at most two entries in flight (its operation and the linked timeout) and may
/// queue a close besides, so three submission entries per slot are enough for a whole turn
/// (the queue is flushed early when it fills, so it is capped at 4,096). The completion queue
/// takes both completions of every slot plus room for the closes, and the kernel refuses
/// (`EINVAL`) a completion queue smaller than the submission queue, so it is never smaller.
fn ring_sizes(slots: usize) -> (u32, u32) {
    let slots = slots.clamp(1, MAX_SLOTS);
    let sq = (slots * 3).next_power_of_two().clamp(8, 4096);
    let cq = (slots * 2 + 64).next_power_of_two().max(sq);
    (sq as u32, cq as u32)
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

    fn flush(&mut self) -> io::Result<()> {
        if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        Ok(())
    }
}

impl UringDriver {
    /// Marks the operation that `user_data` names as finished, if it is still in flight.
    /// Used only while dropping: nothing is reported any more.
    fn retire(&mut self, user_data: u64) {
        if user_data == QUIET || user_data == CANCEL {
            return;
        }
        let Some(s) = self.slots.get_mut((user_data >> 32) as usize) else {
            return;
        };
        if s.generation == user_data as u32 && s.op != Op::Idle {
            s.op = Op::Idle;
            self.inflight -= 1;
        }
    }

    /// Asks the kernel to cancel the operation of every busy slot, one by one: for kernels
    /// without `IORING_ASYNC_CANCEL_ANY` (before 5.19).
    fn cancel_each(&mut self) {
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if s.op == Op::Idle {
                continue;
            }
            let user_data = ((slot as u64) << 32) | u64::from(s.generation);
            let entry = opcode::AsyncCancel::new(user_data)
                .build()
                .user_data(CANCEL);
            // SAFETY: a cancellation carries no pointer, only the `user_data` to match.
            let _ = unsafe { self.push(&[entry]) };
        }
    }
}

/// Dropping a driver with operations in flight (a shard that failed, an engine stopped
/// mid-job) cancels them all and waits until the kernel has completed every one of them, so
/// the slab (peer addresses, buffers the kernel reads or writes) is never freed under the
/// kernel; queued closes are submitted first and the slots' sockets are closed with the slab.
impl Drop for UringDriver {
    fn drop(&mut self) {
        // Queued closes (of probes already reported) go to the kernel now, or their
        // descriptors would leak with the ring.
        let _ = self.ring.submit();
        if self.inflight == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        // SAFETY: a cancellation carries no pointer.
        if unsafe { self.push(&[cancel]) }.is_err() {
            self.cancel_each();
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut cqes = std::mem::take(&mut self.cqes);
        while self.inflight > 0 && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&ts);
            // ETIME, EINTR, EBUSY: look at what is there and ask again.
            let _ = self.ring.submitter().submit_with_args(1, &args);
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            let mut any_refused = false;
            for &(user_data, result) in &cqes {
                if user_data == CANCEL && result == -libc::EINVAL {
                    any_refused = true;
                }
                self.retire(user_data);
            }
            if any_refused {
                // This kernel does not know IORING_ASYNC_CANCEL_ANY.
                self.cancel_each();
            }
        }
        if self.inflight > 0 {
            // The kernel still holds pointers into the slab: leaking it (and its sockets) is
            // the only safe choice left. Not reached on a working kernel: every operation
            // carries a linked timeout and was cancelled besides.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        // The slab's sockets close when it drops, after this function; then the ring.
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
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            IoEvent::TimedOut
        }
        // A reset that arrived just before the timer is news too; and this recv has taken it
        // from the socket, so swallowing it would leave the next read an ENOTCONN instead
        // (as the epoll driver's last look, it is reported).
        Err(e) => IoEvent::Received(Err(super::errno(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// Whether io_uring runs here; without it the tests cannot prove anything, which fails
    /// under CI and is reported otherwise.
    fn uring_here() -> bool {
        match available() {
            Ok(()) => true,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("io_uring is needed under CI: {e}")
            }
            Err(e) => {
                eprintln!("skipping: io_uring unavailable: {e}");
                false
            }
        }
    }

    fn listener(backlog: i32) -> TcpListener {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(backlog).unwrap();
        s.into()
    }

    /// What `/proc/self/fd/N` points at (`socket:[inode]`), if N is open.
    fn fd_link(fd: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn slot_fd(d: &UringDriver, slot: u32) -> i32 {
        d.slots[slot as usize]
            .socket
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .unwrap()
    }

    #[test]
    fn rings_build_for_every_inflight_value() {
        if !uring_here() {
            return;
        }
        let larger = [
            65, 86, 96, 100, 127, 128, 129, 200, 384, 500, 768, 1000, 1024, 1366,
        ];
        let largest = [4096, 10_000, 20_000, MAX_SLOTS];
        for slots in (1..=64).chain(larger).chain(largest) {
            let (sq, cq) = ring_sizes(slots);
            assert!(cq >= sq, "{slots} slots: cq {cq} < sq {sq}");
            assert!(cq as usize >= 2 * slots, "{slots} slots: cq {cq}");
            if let Err(e) = UringDriver::new(slots) {
                panic!("a ring for {slots} slots (sq {sq}, cq {cq}): {e}");
            }
        }
    }

    /// Issue 10 item 5: a driver dropped with thousands of connects and reads in flight
    /// cancels them, waits for the kernel, and leaves no descriptor open behind it (neither
    /// a slot's socket nor one whose close was still queued).
    #[test]
    fn dropping_with_thousands_in_flight_closes_everything() {
        if !uring_here() {
            return;
        }
        // Backlog 0: after the first connection the accept queue is full and the SYNs of the
        // rest are dropped, so their connects stay pending.
        let full = listener(0);
        let full_addr = full.local_addr().unwrap();
        // Never accepted either, but with room: these connects complete and then wait on a read.
        let open = listener(1024);
        let open_addr = open.local_addr().unwrap();
        let refused_addr = listener(1).local_addr().unwrap(); // closed again at once
        let (hanging, reading, refusing) = (3000u32, 500u32, 500u32);
        let long = Duration::from_secs(120);

        let mut d = UringDriver::new(4096).unwrap();
        let mut ours: Vec<(i32, String)> = Vec::new();
        let mut start = |d: &mut UringDriver, slot: u32, to: SocketAddr| {
            d.start(slot, to, long).unwrap();
            let fd = slot_fd(d, slot);
            ours.push((fd, fd_link(fd).unwrap()));
        };
        for slot in 0..hanging {
            start(&mut d, slot, full_addr);
        }
        for slot in hanging..hanging + reading {
            start(&mut d, slot, open_addr);
        }
        for slot in hanging + reading..hanging + reading + refusing {
            start(&mut d, slot, refused_addr);
        }
        // Wait (bounded) until the reads are in flight and the refusals are in.
        let (mut reads, mut refused) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while (reads < reading || refused < refusing) && Instant::now() < deadline {
            out.clear();
            d.wait(&mut out, Duration::from_millis(50)).unwrap();
            for c in &out {
                match c.event {
                    IoEvent::Connect(ConnectEvent::Connected { .. }) => {
                        d.recv(c.slot, long).unwrap();
                        reads += u32::from(c.slot >= hanging);
                    }
                    IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED)) => refused += 1,
                    other => panic!("slot {}: unexpected {other:?}", c.slot),
                }
            }
        }
        assert_eq!((reads, refused), (reading, refusing));
        // One more refusal, reaped right before the drop: its close is still queued then.
        let last = hanging + reading + refusing;
        start(&mut d, last, refused_addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = false;
        while !done && Instant::now() < deadline {
            out.clear();
            d.wait(&mut out, Duration::from_millis(50)).unwrap();
            done = out.iter().any(|c| c.slot == last);
        }
        assert!(done, "the last refusal did not come back");
        assert!(d.inflight() >= (hanging + reading) as usize - 1);

        open.set_nonblocking(true).unwrap();
        let mut peers: Vec<TcpStream> = Vec::new();
        while let Ok((peer, _)) = open.accept() {
            peers.push(peer);
        }
        assert_eq!(peers.len(), reading as usize);

        drop(d);

        let leaked: Vec<_> = ours
            .iter()
            .filter(|(fd, link)| fd_link(*fd).as_ref() == Some(link))
            .collect();
        assert!(
            leaked.is_empty(),
            "{} sockets left open: {:?}",
            leaked.len(),
            &leaked[..leaked.len().min(5)]
        );
        // The reads were really cancelled: the peers see their connections end.
        for mut peer in peers {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            match peer.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("a peer's connection did not end: {other:?}"),
            }
        }
        drop(full);
    }
}
