//! The io_uring backend: `CONNECT`, `SEND` and `RECV` through the ring, `SEND` and `RECV`
//! each linked to a `LINK_TIMEOUT`, `CLOSE` through the ring, one `io_uring_enter` per loop
//! turn.
//!
//! A connect's timeout is the driver's own ([`Timers`]): when it passes, the socket is
//! disconnected through the ring (`CONNECT` to `AF_UNSPEC`), which ends the pending connect
//! with `ECONNRESET` at once and leaves the socket clean for the slot's next probe, on both
//! paths. A linked timeout would cancel the connect instead, and a cancellation looks the
//! request up among every pending one: on a filtered network, with 20,000 connects pending,
//! that lookup was a seventh of the shard's CPU, and a cancelled socket still had to be
//! closed and a new one made (docs/benchmarks.md, "Filtered throughput").
//!
//! Sockets are held one of two ways ([`FdPath`]), chosen once when the engine starts:
//!
//! - **Direct**: each probe's socket is created inside the ring (`IORING_OP_SOCKET`, linked
//!   to its `CONNECT`) into the slot's own entry of a registered, sparse file table (entry =
//!   slot index), used there by `CONNECT`, `SEND` and `RECV`, and closed there
//!   (`IORING_OP_CLOSE` on the entry). A refused or unanswered probe makes no system call of
//!   its own. `SO_LINGER 0` goes through the ring's setsockopt command, and a timed-out
//!   socket's `SO_ERROR` is read by its getsockopt command. Where a success needs checking
//!   (is it real, and is it a self-connect?) the entry is installed as an fd
//!   (`IORING_OP_FIXED_FD_INSTALL`) for the same checks as on the plain path
//!   (`getpeername`, `getsockname`). Needs Linux 6.8; [`direct_available`] tries it.
//! - **Plain**: a `socket(2)` per probe, the descriptor used by the ring; the fallback.
//!
//! This is the only module of porthawk that uses `unsafe`: pushing an entry hands the kernel
//! raw pointers (the peer address, the timeout, the send and receive buffers) that must stay
//! valid until the kernel is done with them. The slab below guarantees that; each `unsafe`
//! block says how.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use io_uring::squeue::Flags;
use io_uring::types::{CancelBuilder, DestinationSlot, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use porthawk_core::{ConnectEvent, Errno};
use socket2::{SockAddr, Socket};

use super::{
    errno, new_socket, reset_on_close, soft_error, Completion, Driver, FdPath, IoEvent, RECV_CHUNK,
};

/// `user_data` of entries whose completions carry no news: the link timeouts (the linked
/// operation's own completion says whether the timeout fired), the closes and the
/// `SO_LINGER` commands (best effort, as on the plain path).
const QUIET: u64 = u64::MAX;

/// In unit tests, setting up a ring of this many slots fails, so that the engine's fallback
/// to epoll can be exercised without breaking io_uring for the whole machine.
#[cfg(test)]
pub(crate) const SETUP_FAILS_FOR: usize = 4093;

/// `user_data` of the cancellations that [`UringDriver`]'s `Drop` submits.
const CANCEL: u64 = u64::MAX - 1;

/// Marks the `user_data` of a direct path's `IORING_OP_SOCKET`. It completes only when it
/// fails (`SKIP_SUCCESS`), and then the kernel skips the completion of the `CONNECT` linked
/// after it: the socket's failure is the slot's one completion.
const SOCKET_OP: u64 = 1 << 48;

/// How long dropping a driver waits for the kernel to give back the operations it cancelled.
/// Cancellation of a connect, send or read is prompt; this bound only guards against a kernel
/// that never answers, in which case the slab is leaked rather than freed under the kernel.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// The most in-flight probes one ring carries: two completions each must fit into the
/// largest completion queue the kernel allows (65,536 entries).
pub(crate) const MAX_SLOTS: usize = 32_736;

/// The address a connect to which disconnects a socket (`connect(2)` with `AF_UNSPEC`). A
/// static, so the pointer the ring's connect reads is valid for as long as the program runs.
static UNSPEC: libc::sockaddr = libc::sockaddr {
    sa_family: libc::AF_UNSPEC as libc::sa_family_t,
    sa_data: [0; 14],
};

/// The socket command number of a getsockopt (`SOCKET_URING_OP_GETSOCKOPT` in
/// `<linux/io_uring.h>`, Linux 6.7); io-uring 0.7 builds only the setsockopt one (3).
const SOCKET_URING_OP_GETSOCKOPT: u32 = 2;

/// No slot (the end of a [`Timers`] list), or no list.
const NIL: u32 = u32::MAX;

/// `SO_LINGER` on, zero seconds: closing sends an RST and leaves no TIME_WAIT. A static, so
/// the pointer the ring's setsockopt command reads is valid for as long as the program runs.
static LINGER_ZERO: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Idle,
    Connect,
    Send,
    Recv,
    /// Direct path: the connect reported success; its entry is being installed as an fd so
    /// that its peer and its own address can be checked ([`verify_connected`]).
    Confirm,
    /// Direct path: a read was cancelled by its timeout; a non-blocking read takes what
    /// arrived just before (the direct path's [`last_look_recv`]).
    RecvLook,
    /// Direct path: the connect's deadline passed and the disconnect ended it; the ring's
    /// getsockopt reads `SO_ERROR` (the soft error an ICMP message may have left while the
    /// handshake was pending, which nothing else in the ring reads) and clears it, so that
    /// the socket is clean for the slot's next probe.
    Soft,
}

/// How far a connect whose deadline passed has been ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Its deadline has not passed.
    No,
    /// Its socket was disconnected; the connect ends with `ECONNRESET`.
    Disconnected,
    /// The disconnect did not end it within another timeout (a kernel that retries a
    /// connect after an error): it was cancelled.
    Cancelled,
}

/// The connects in flight with one timeout, in the order of their deadlines (the order in
/// which they went to the kernel): a list threaded through the slots' `t_prev` and
/// `t_next`, so that it costs nothing per probe but two links, and its first entry is the
/// only one a turn looks at while no deadline has passed.
struct Timers {
    timeout: Duration,
    head: u32,
    tail: u32,
}

struct Slot {
    /// Plain path: the probe's socket.
    socket: Option<Socket>,
    /// Plain path: the socket of the slot's last probe, which timed out (disconnected
    /// through the ring, [`UringDriver::expire`]) and is clean: the slot's next probe of the
    /// same address family connects it instead of creating a socket. Closed by
    /// [`Driver::flush`] when the shard goes idle.
    spare: Option<Socket>,
    /// Direct path: the slot's entry of the file table holds a socket (the probe's, or a
    /// spare).
    fixed: bool,
    /// Direct path: the entry's socket is the last probe's (to `target`), which timed out,
    /// disconnected and clean; the slot's next probe of that address family connects it
    /// instead of creating a socket. Closed by [`Driver::flush`].
    fixed_spare: bool,
    op: Op,
    /// Where the connect in flight stands with its deadline.
    expiry: Expiry,
    /// When the connect in flight times out (valid while `t_list` is not [`NIL`]).
    deadline: Instant,
    /// The [`Timers`] list the connect in flight is on ([`NIL`]: none), and its neighbours.
    t_list: u32,
    t_prev: u32,
    t_next: u32,
    /// Direct path: the `SO_ERROR` value the ring's getsockopt writes ([`Op::Soft`]).
    soft: i32,
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
    /// Sockets are direct descriptors in the ring's file table (one entry per slot).
    direct: bool,
    inflight: usize,
    /// Completions copied out of the ring before they are handled (reused every turn).
    cqes: Vec<(u64, i32)>,
    /// The connects' deadlines, one list per timeout in use (a list left empty is reused
    /// for the next new timeout).
    timers: Vec<Timers>,
    /// Connects started since the last submission, with their timeouts: their deadlines
    /// count from the submission that sends them (as a linked timeout's would).
    fresh: Vec<(u32, Duration)>,
    /// The protocol of direct sockets; tests set an impossible one to make creation fail.
    #[cfg(test)]
    socket_protocol: i32,
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

/// Whether a ring here can hold `slots` probes' sockets as direct descriptors: the opcodes
/// are known, a sparse file table of `slots` entries registers (its size is bounded by
/// `RLIMIT_NOFILE`), and one real socket goes through what the direct path does with it:
/// created into an entry, given `SO_LINGER 0` by the ring's setsockopt command and its
/// `SO_ERROR` read by the getsockopt one (Linux 6.7; an LSM may refuse socket commands),
/// installed as an fd (Linux 6.8). The error says which
/// part failed.
pub(crate) fn direct_available(slots: usize) -> Result<(), String> {
    // Written by the getsockopt command; declared before the ring, so that it outlives it.
    // Not 0, so that a command that writes nothing is told from one that reads no error.
    let mut so_error: i32 = -1;
    let mut ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    for (code, name) in [
        (opcode::Socket::CODE, "SOCKET (Linux 5.19)"),
        (opcode::UringCmd16::CODE, "URING_CMD"),
        (opcode::FixedFdInstall::CODE, "FIXED_FD_INSTALL (Linux 6.8)"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring lacks IORING_OP_{name}"));
        }
    }
    let slots = slots.clamp(1, MAX_SLOTS) as u32;
    ring.submitter()
        .register_files_sparse(slots)
        .map_err(|e| format!("cannot register a file table of {slots} entries: {e}"))?;
    let entries = [
        opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            .file_index(Some(
                DestinationSlot::try_from_slot_target(0)
                    .map_err(|_| "no file table entry 0".to_string())?,
            ))
            .build()
            .flags(Flags::IO_LINK)
            .user_data(0),
        linger_command(0).flags(Flags::IO_LINK).user_data(1),
        so_error_command(0, &mut so_error)
            .flags(Flags::IO_LINK)
            .user_data(3),
        opcode::FixedFdInstall::new(Fixed(0), 0)
            .build()
            .user_data(2),
    ];
    // SAFETY: the socket and install entries carry no pointer; the setsockopt command points
    // at a static; the getsockopt command at `so_error`, which outlives the ring.
    unsafe { ring.submission().push_multiple(&entries) }
        .map_err(|_| "the submission queue is full".to_string())?;
    let second = Timespec::from(Duration::from_secs(1));
    let args = SubmitArgs::new().timespec(&second);
    let mut results = [None; 4];
    let deadline = Instant::now() + Duration::from_secs(2);
    while results.iter().any(Option::is_none) && Instant::now() < deadline {
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(format!("io_uring_enter failed: {e}")),
        }
        for cqe in ring.completion() {
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                *r = Some(cqe.result());
            }
        }
    }
    let step = |i: usize, what: &str| match results[i] {
        Some(r) if r >= 0 => Ok(r),
        Some(r) => Err(format!(
            "{what} failed: {}",
            io::Error::from_raw_os_error(-r)
        )),
        None => Err(format!("{what} did not complete")),
    };
    step(0, "IORING_OP_SOCKET into a registered file table")?;
    step(1, "the ring's setsockopt command (Linux 6.7)")?;
    match step(3, "the ring's getsockopt command (Linux 6.7)")? {
        4 if so_error == 0 => {}
        n => {
            return Err(format!(
                "the ring's getsockopt command read {n} bytes of SO_ERROR: {so_error}"
            ))
        }
    }
    let fd = step(2, "IORING_OP_FIXED_FD_INSTALL (Linux 6.8)")?;
    // SAFETY: the kernel just installed `fd` as a new descriptor of this process; nothing
    // else knows it, so it is ours to own and close.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    match socket.linger() {
        Ok(Some(d)) if d.is_zero() => Ok(()),
        other => Err(format!(
            "the ring's setsockopt command did not set SO_LINGER: {other:?}"
        )),
    }
    // The entry and the installed fd close with `socket` and `ring`.
}

/// The setsockopt command that sets `SO_LINGER 0` on the socket in file table entry `slot`.
fn linger_command(slot: u32) -> squeue::Entry {
    opcode::SetSockOpt::new(
        Fixed(slot),
        libc::SOL_SOCKET as u32,
        libc::SO_LINGER as u32,
        std::ptr::from_ref(&LINGER_ZERO).cast(),
        std::mem::size_of::<libc::linger>() as u32,
    )
    .build()
}

/// The `user_data` of `slot`'s operation of generation `generation`.
fn op_data(slot: u32, generation: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(generation)
}

/// The slot a `user_data` names (without the [`SOCKET_OP`] mark).
fn slot_of(user_data: u64) -> usize {
    ((user_data >> 32) & 0xffff) as usize
}

/// Builds an operation on a slot's socket: `$body` uses `$fd`, bound to the slot's file
/// table entry on the direct path and to its descriptor on the plain path.
macro_rules! on_socket {
    ($driver:expr, $slot:expr, |$fd:ident| $body:expr) => {{
        let s = &$driver.slots[$slot as usize];
        if $driver.direct {
            if !s.fixed {
                return Err(libc::ENOTCONN);
            }
            let $fd = Fixed($slot);
            $body
        } else {
            let $fd = Fd(s.socket.as_ref().ok_or(libc::ENOTCONN)?.as_raw_fd());
            $body
        }
    }};
}

impl UringDriver {
    /// A ring for `slots` concurrent probes (at most [`MAX_SLOTS`]), with their sockets as
    /// direct descriptors when `path` says so (check [`direct_available`] first). Must be
    /// called on the thread that will use it: the ring is set up single-issuer with deferred
    /// task work.
    pub(crate) fn new(slots: usize, path: FdPath) -> io::Result<Self> {
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
        let direct = path == FdPath::Direct;
        if direct {
            ring.submitter().register_files_sparse(slots as u32)?;
        }
        let slots = (0..slots)
            .map(|_| Slot {
                socket: None,
                spare: None,
                fixed: false,
                fixed_spare: false,
                op: Op::Idle,
                expiry: Expiry::No,
                deadline: Instant::now(),
                t_list: NIL,
                t_prev: NIL,
                t_next: NIL,
                soft: 0,
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
            direct,
            inflight: 0,
            cqes: Vec::with_capacity(cq as usize),
            timers: Vec::new(),
            fresh: Vec::new(),
            #[cfg(test)]
            socket_protocol: libc::IPPROTO_TCP,
        })
    }

    /// Direct path: the family of the spare that `slot`'s entry holds (`true`: IPv4).
    #[cfg(test)]
    fn fixed_spare(&self, slot: u32) -> Option<bool> {
        let s = &self.slots[slot as usize];
        s.fixed_spare.then(|| s.target.is_ipv4())
    }

    /// How this driver holds its sockets.
    #[cfg(test)]
    pub(crate) fn fd_path(&self) -> FdPath {
        if self.direct {
            FdPath::Direct
        } else {
            FdPath::Plain
        }
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
        // The connects queued so far go to the kernel now: their deadlines count from now.
        self.link_fresh(Instant::now());
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

    /// Closes the socket in `slot`'s file table entry (direct path). If the ring cannot take
    /// the close, the entry keeps the socket until the slot's next socket replaces it or
    /// the table goes with the driver.
    fn close_fixed(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !std::mem::replace(&mut s.fixed, false) {
            return;
        }
        let entry = opcode::Close::new(Fixed(slot))
            .build()
            .flags(Flags::SKIP_SUCCESS)
            .user_data(QUIET);
        // SAFETY: CLOSE carries no pointer.
        let _ = unsafe { self.push(&[entry]) };
    }

    /// Pushes `op` for `slot`, after `create` (the direct path's socket creation) when given,
    /// and linked to a timeout when `timeout` is given (a connect's timeout is the driver's
    /// own: [`UringDriver::arm`]).
    ///
    /// # Safety
    /// The pointers inside `entry` must point into `self.slots[slot]` (address, buffers),
    /// which the caller does not touch again until the operation's completion is reaped.
    unsafe fn push_linked(
        &mut self,
        slot: u32,
        op: Op,
        create: Option<squeue::Entry>,
        entry: squeue::Entry,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.op = op;
        let data = op_data(slot, s.generation);
        let create = create.map(|create| {
            create
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS)
                .user_data(SOCKET_OP | data)
        });
        let entry = entry.user_data(data);
        // SAFETY: `s.timeout` lives in the never-resized slab and is not rewritten until this
        // slot's operation completes; the caller vouches for `entry`'s pointers; `create`
        // carries none.
        let pushed = match (create, timeout) {
            (create, Some(timeout)) => {
                s.timeout = Timespec::from(timeout);
                let link_timeout = opcode::LinkTimeout::new(&s.timeout)
                    .build()
                    .user_data(QUIET);
                let entry = entry.flags(Flags::IO_LINK);
                match create {
                    Some(create) => unsafe { self.push(&[create, entry, link_timeout]) },
                    None => unsafe { self.push(&[entry, link_timeout]) },
                }
            }
            (Some(create), None) => unsafe { self.push(&[create, entry]) },
            (None, None) => unsafe { self.push(&[entry]) },
        };
        match pushed {
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

    /// Puts `slot`'s connect, just pushed, under `timeout`: its deadline counts from the
    /// submission that sends it ([`UringDriver::wait`] links it into its list then).
    fn arm(&mut self, slot: u32, timeout: Duration) {
        self.slots[slot as usize].expiry = Expiry::No;
        self.fresh.push((slot, timeout));
    }

    /// Puts the connects started since the last submission on their deadline lists, due
    /// a timeout after `now` (when they go to the kernel).
    fn link_fresh(&mut self, now: Instant) {
        let mut fresh = std::mem::take(&mut self.fresh);
        for &(slot, timeout) in &fresh {
            self.link(slot, timeout, now + timeout);
        }
        fresh.clear();
        self.fresh = fresh;
    }

    /// Links `slot` at the end of the list of `timeout`, due at `deadline` (not before the
    /// deadline of any connect already on the list).
    fn link(&mut self, slot: u32, timeout: Duration, deadline: Instant) {
        let list = match self.timers.iter().position(|t| t.timeout == timeout) {
            Some(i) => i,
            None => match self.timers.iter().position(|t| t.head == NIL) {
                Some(i) => {
                    self.timers[i].timeout = timeout;
                    i
                }
                None => {
                    self.timers.push(Timers {
                        timeout,
                        head: NIL,
                        tail: NIL,
                    });
                    self.timers.len() - 1
                }
            },
        };
        let tail = self.timers[list].tail;
        self.insert(slot, list, deadline, tail, NIL);
    }

    /// Puts `slot` on list `list` between `prev` and `next` (neighbours there, or [`NIL`]
    /// for the list's ends), due at `deadline`.
    fn insert(&mut self, slot: u32, list: usize, deadline: Instant, prev: u32, next: u32) {
        let s = &mut self.slots[slot as usize];
        s.deadline = deadline;
        s.t_list = list as u32;
        s.t_prev = prev;
        s.t_next = next;
        let t = &mut self.timers[list];
        if prev == NIL {
            t.head = slot;
        } else {
            self.slots[prev as usize].t_next = slot;
        }
        if next == NIL {
            t.tail = slot;
        } else {
            self.slots[next as usize].t_prev = slot;
        }
    }

    /// Takes `slot` off its deadline list, if it is on one.
    fn unlink(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let list = std::mem::replace(&mut s.t_list, NIL);
        if list == NIL {
            return;
        }
        let (prev, next) = (s.t_prev, s.t_next);
        let t = &mut self.timers[list as usize];
        if prev == NIL {
            t.head = next;
        } else {
            self.slots[prev as usize].t_next = next;
        }
        if next == NIL {
            t.tail = prev;
        } else {
            self.slots[next as usize].t_prev = prev;
        }
    }

    /// The earliest deadline of a connect in flight.
    fn next_deadline(&self) -> Option<Instant> {
        self.timers
            .iter()
            .filter(|t| t.head != NIL)
            .map(|t| self.slots[t.head as usize].deadline)
            .min()
    }

    /// Ends the connects whose deadline has passed by `now`: disconnects each socket through
    /// the ring (its connect then completes with `ECONNRESET`, reported as the timeout), and
    /// keeps it on its list for one more timeout; a connect still pending by then is
    /// cancelled. Says whether it queued anything.
    fn expire(&mut self, now: Instant) -> bool {
        let mut pushed = false;
        for list in 0..self.timers.len() {
            loop {
                let slot = self.timers[list].head;
                if slot == NIL || self.slots[slot as usize].deadline > now {
                    break;
                }
                self.unlink(slot);
                let timeout = self.timers[list].timeout;
                let s = &mut self.slots[slot as usize];
                debug_assert_eq!(s.op, Op::Connect, "slot {slot} on a deadline list");
                let (entry, next) = match s.expiry {
                    Expiry::No => match self.disconnect(slot) {
                        Some(entry) => (entry, Expiry::Disconnected),
                        None => continue,
                    },
                    Expiry::Disconnected => (
                        opcode::AsyncCancel::new(op_data(slot, s.generation)).build(),
                        Expiry::Cancelled,
                    ),
                    Expiry::Cancelled => continue,
                };
                let entry = entry.flags(Flags::SKIP_SUCCESS).user_data(QUIET);
                // SAFETY: the disconnect points only at the static `UNSPEC`; a cancellation
                // carries no pointer.
                match unsafe { self.push(&[entry]) } {
                    Ok(()) => {
                        pushed = true;
                        self.slots[slot as usize].expiry = next;
                        if next == Expiry::Disconnected {
                            self.link(slot, timeout, now + timeout);
                        }
                    }
                    // The ring takes nothing now: again in a millisecond (the list's order
                    // is off by at most that).
                    Err(_) => {
                        let retry = now + Duration::from_millis(1);
                        let head = self.timers[list].head;
                        self.insert(slot, list, retry, NIL, head);
                        break;
                    }
                }
            }
        }
        pushed
    }

    /// The connect that disconnects `slot`'s socket (`AF_UNSPEC`), if it has one.
    fn disconnect(&self, slot: u32) -> Option<squeue::Entry> {
        let addr = std::ptr::from_ref(&UNSPEC);
        let len = std::mem::size_of::<libc::sockaddr>() as u32;
        Some(if self.direct {
            opcode::Connect::new(Fixed(slot), addr, len).build()
        } else {
            let fd = self.slots[slot as usize].socket.as_ref()?.as_raw_fd();
            opcode::Connect::new(Fd(fd), addr, len).build()
        })
    }

    /// Direct path: moves `slot` on to `op` (which completes without waiting), pushing
    /// `quiet` (an entry whose completion carries no news) before it. Fails with `ENOBUFS`,
    /// a local shortage, when the ring cannot take them.
    fn follow(
        &mut self,
        slot: u32,
        op: Op,
        quiet: Option<squeue::Entry>,
        entry: squeue::Entry,
    ) -> Result<(), Errno> {
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.op = op;
        let entry = entry.user_data(op_data(slot, s.generation));
        // SAFETY: the follow-ups carry no pointer but the static `LINGER_ZERO` and, for a
        // read, the slot's receive buffer, which is not touched until the read is reaped.
        let pushed = match quiet {
            Some(q) => unsafe {
                self.push(&[q.flags(Flags::SKIP_SUCCESS).user_data(QUIET), entry])
            },
            None => unsafe { self.push(&[entry]) },
        };
        match pushed {
            Ok(()) => {
                self.inflight += 1;
                Ok(())
            }
            Err(_) => {
                self.slots[slot as usize].op = Op::Idle;
                Err(libc::ENOBUFS)
            }
        }
    }

    /// Direct path: installs `slot`'s entry as an fd (`op` says what to check on it), with
    /// `SO_LINGER 0` set first through the ring, for the case the check finds it connected
    /// (on a socket that is not, it changes nothing).
    fn install(&mut self, slot: u32, op: Op) -> Result<(), Errno> {
        let entry = opcode::FixedFdInstall::new(Fixed(slot), 0).build();
        self.follow(slot, op, Some(linger_command(slot)), entry)
    }

    /// What a completion `result` of `slot`'s operation `op` means: the event to report, or
    /// `None` when the slot moved on to a follow-up (still in flight).
    fn finish(&mut self, slot: u32, op: Op, result: i32) -> Option<IoEvent> {
        let s = &mut self.slots[slot as usize];
        Some(match op {
            Op::Connect if !self.direct => {
                let socket = s.socket.take()?;
                let expiry = std::mem::replace(&mut s.expiry, Expiry::No);
                let event = if expiry != Expiry::No {
                    match expired_connect(result, expiry) {
                        Some(event) => event,
                        // The disconnect ended it: the socket is kept, unless the soft
                        // error it held is the verdict or it cannot be read.
                        None => match soft_error(&socket) {
                            Ok(None) => {
                                s.spare = Some(socket);
                                return Some(IoEvent::Connect(ConnectEvent::TimedOut));
                            }
                            Ok(Some(e)) => ConnectEvent::Failed(e),
                            Err(_) => ConnectEvent::TimedOut,
                        },
                    }
                } else {
                    match -result {
                        // A zero result is not proof of a handshake: when an ICMP error
                        // ends the attempt, io_uring can report 0 with the error already
                        // consumed.
                        0 => verify_connected(&socket, s.target),
                        e => ConnectEvent::Failed(e),
                    }
                };
                if matches!(event, ConnectEvent::Connected { .. }) {
                    reset_on_close(&socket);
                    s.socket = Some(socket);
                } else {
                    self.close_socket(socket);
                }
                IoEvent::Connect(event)
            }
            Op::Connect => {
                let expiry = std::mem::replace(&mut s.expiry, Expiry::No);
                let next = if expiry != Expiry::No {
                    match expired_connect(result, expiry) {
                        Some(event) => {
                            self.close_fixed(slot);
                            return Some(IoEvent::Connect(event));
                        }
                        // The disconnect ended it: read and clear the soft error.
                        None => {
                            let entry = so_error_command(slot, &mut s.soft);
                            s.soft = 0;
                            match self.follow(slot, Op::Soft, None, entry) {
                                Ok(()) => return None,
                                Err(_) => {
                                    self.close_fixed(slot);
                                    return Some(IoEvent::Connect(ConnectEvent::TimedOut));
                                }
                            }
                        }
                    }
                } else {
                    match -result {
                        // As on the plain path, a zero result is checked on the socket
                        // itself.
                        0 => self.install(slot, Op::Confirm),
                        // The socket never reached its entry (creating it succeeded, so
                        // this is the table entry's allocation failing): a local shortage.
                        libc::EBADF => {
                            s.fixed = false;
                            Err(libc::ENOMEM)
                        }
                        e => Err(e),
                    }
                };
                match next {
                    Ok(()) => return None,
                    Err(e) => {
                        self.close_fixed(slot);
                        IoEvent::Connect(ConnectEvent::Failed(e))
                    }
                }
            }
            Op::Soft => {
                let event = match (result, s.soft) {
                    // Read and cleared: the socket is kept for the slot's next probe.
                    (r, 0) if r >= 0 => {
                        s.fixed_spare = true;
                        return Some(IoEvent::Connect(ConnectEvent::TimedOut));
                    }
                    // The disconnect's own reset was still there (the connect did not take
                    // it): a soft error may sit behind it, so the socket goes.
                    (r, libc::ECONNRESET) if r >= 0 => ConnectEvent::TimedOut,
                    (r, soft) if r >= 0 => ConnectEvent::Failed(soft),
                    // Not read: the timeout stands, and the socket goes.
                    _ => ConnectEvent::TimedOut,
                };
                self.close_fixed(slot);
                IoEvent::Connect(event)
            }
            Op::Confirm => {
                if result < 0 {
                    // No fd to check it on (EMFILE ...): a local shortage, never a verdict.
                    self.close_fixed(slot);
                    return Some(IoEvent::Connect(ConnectEvent::Failed(-result)));
                }
                // SAFETY: the kernel just installed `result` as a new descriptor of this
                // process for the slot's socket; nothing else knows it, so it is ours to own.
                let socket = unsafe { Socket::from_raw_fd(result) };
                let event = verify_connected(&socket, s.target);
                // The table entry keeps the socket; only this second descriptor goes.
                self.close_socket(socket);
                if !matches!(event, ConnectEvent::Connected { .. }) {
                    self.close_fixed(slot);
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
                e if -e == libc::ECANCELED && self.direct => {
                    let entry =
                        opcode::Recv::new(Fixed(slot), s.rx.as_mut_ptr(), RECV_CHUNK as u32)
                            .flags(libc::MSG_DONTWAIT)
                            .build();
                    match self.follow(slot, Op::RecvLook, None, entry) {
                        Ok(()) => return None,
                        // The read timed out; the look that could not be made changes nothing.
                        Err(_) => IoEvent::TimedOut,
                    }
                }
                e if -e == libc::ECANCELED => last_look_recv(s),
                e => IoEvent::Received(Err(-e)),
            },
            Op::RecvLook => match result {
                // Ok(0) is the peer's close, which is news too.
                n if n >= 0 => {
                    s.rx_len = n as usize;
                    IoEvent::Received(Ok(n as usize))
                }
                e if -e == libc::EAGAIN || -e == libc::EINTR => IoEvent::TimedOut,
                // A reset that arrived just before the timer is news too (see
                // [`last_look_recv`]).
                e => IoEvent::Received(Err(-e)),
            },
            Op::Idle => return None,
        })
    }
}

/// The submission and completion queue sizes for `slots` probes (1 to [`MAX_SLOTS`]).
///
/// A probe has at most three entries in flight (on the direct path its socket creation and
/// its connect, or a send or read and its linked timeout, or a disconnect or a
/// cancellation) and may queue a close besides, so three submission entries per slot are
/// enough for a whole turn (the queue is flushed early when it fills,
/// so it is capped at 4,096). The completion queue takes both completions of every slot (a
/// failed socket creation is a slot's only one) plus room for the closes, and the kernel
/// refuses (`EINVAL`) a completion queue smaller than the submission queue, so it is never
/// smaller.
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

/// The event of a connect whose deadline passed ([`UringDriver::expire`]), from its
/// completion's `result`; `None` when the disconnect ended it (the timeout, unless the soft
/// error the socket holds says otherwise).
///
/// A connect is expired only after the turn that saw its deadline pass had taken every
/// completion the kernel had ready, so an answer that came before the deadline has been
/// reported already: whatever completes it now came after.
fn expired_connect(result: i32, expiry: Expiry) -> Option<ConnectEvent> {
    match -result {
        libc::ECONNRESET if expiry == Expiry::Disconnected => None,
        // A handshake that completed after the deadline (the disconnect resets it), a
        // connect cancelled a timeout after its disconnect.
        0 | libc::ECONNRESET | libc::ECANCELED => Some(ConnectEvent::TimedOut),
        // A refusal or an ICMP error that came between the deadline and the disconnect
        // (which then found the socket closed): an answer all the same.
        e => Some(ConnectEvent::Failed(e)),
    }
}

/// The socket command that reads and clears `SO_ERROR` of the socket in file table entry
/// `slot` into `*out` (Linux 6.7, as the setsockopt command; [`direct_available`] tries it).
fn so_error_command(slot: u32, out: *mut i32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    let entry = opcode::SetSockOpt::new(
        Fixed(slot),
        libc::SOL_SOCKET as u32,
        libc::SO_ERROR as u32,
        out.cast_const().cast(),
        std::mem::size_of::<i32>() as u32,
    )
    .build();
    // SAFETY: `squeue::Entry` is a `#[repr(C)]` wrapper of the kernel's 64-byte
    // `io_uring_sqe` (size asserted above), and every bit pattern of an sqe is a valid one.
    // Bytes 8..12 are a `URING_CMD`'s `cmd_op`, which the builder set to the setsockopt
    // command; the other fields (level, optname, optval, optlen) mean the same to the
    // getsockopt command, which writes the value through `optval`.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[8..12].copy_from_slice(&SOCKET_URING_OP_GETSOCKOPT.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

impl Driver for UringDriver {
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno> {
        if self.direct {
            return self.start_direct(slot, target, timeout);
        }
        // The slot's last socket, if it timed out and the family matches; else a new one.
        // io_uring polls and retries a connect itself, so the socket stays in blocking mode:
        // a non-blocking one would surface EINPROGRESS instead of the outcome.
        let s = &mut self.slots[slot as usize];
        let spare = s.spare.take();
        let socket = match spare {
            Some(socket) if s.target.is_ipv4() == target.is_ipv4() => socket,
            other => {
                if let Some(socket) = other {
                    self.close_socket(socket);
                }
                new_socket(&target, false)?
            }
        };
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
        let pushed = unsafe { self.push_linked(slot, Op::Connect, None, connect, None) };
        match pushed {
            Ok(()) => self.arm(slot, timeout),
            Err(_) => self.slots[slot as usize].socket = None,
        }
        pushed
    }

    fn send(&mut self, slot: u32, data: &[u8], timeout: Duration) -> Result<(), Errno> {
        let entry = on_socket!(self, slot, |fd| {
            let s = &mut self.slots[slot as usize];
            s.tx.clear();
            s.tx.extend_from_slice(data);
            opcode::Send::new(fd, s.tx.as_ptr(), s.tx.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        });
        // SAFETY: `tx` belongs to the slot and is neither written nor reallocated until the
        // send's completion has been reaped.
        unsafe { self.push_linked(slot, Op::Send, None, entry, Some(timeout)) }
    }

    fn recv(&mut self, slot: u32, timeout: Duration) -> Result<(), Errno> {
        let entry = on_socket!(self, slot, |fd| {
            let s = &mut self.slots[slot as usize];
            if s.rx.len() < RECV_CHUNK {
                s.rx.resize(RECV_CHUNK, 0);
            }
            s.rx_len = 0;
            opcode::Recv::new(fd, s.rx.as_mut_ptr(), RECV_CHUNK as u32).build()
        });
        // SAFETY: `rx` belongs to the slot, has RECV_CHUNK initialised bytes, and is neither
        // read, written nor reallocated until the read's completion has been reaped.
        unsafe { self.push_linked(slot, Op::Recv, None, entry, Some(timeout)) }
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
        // A spare stays for the slot's next probe.
        if !self.slots[slot as usize].fixed_spare {
            self.close_fixed(slot);
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
        // The connects started since the last submission go to the kernel with this one:
        // their deadlines count from now.
        let now = Instant::now();
        self.link_fresh(now);
        let max_wait = match self.next_deadline() {
            Some(at) => max_wait.min(at.saturating_duration_since(now)),
            None => max_wait,
        };
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
        // The deadlines that have passed by now expire after this turn has taken every
        // completion that is ready (below): an answer that came before its deadline is
        // reported, never taken for the timeout ([`expired_connect`]).
        let now = Instant::now();
        self.take_ready();
        self.handle(out);
        if self.expire(now) {
            // The disconnects go to the kernel now, and what they lead to (the connects'
            // completions, the direct path's reads of SO_ERROR) completes at once: taking
            // it in this turn frees the timed-out slots for the shard's restarts at once,
            // where leaving each step to the next turn made every round of a filtered sweep
            // a few turns late.
            for _ in 0..3 {
                self.take_ready();
                if self.cqes.is_empty() {
                    break;
                }
                self.handle(out);
            }
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn flush(&mut self) -> io::Result<()> {
        // The shard goes idle: no socket stays open for a job that may never come.
        for slot in 0..self.slots.len() {
            if let Some(socket) = self.slots[slot].spare.take() {
                self.close_socket(socket);
            }
            if std::mem::take(&mut self.slots[slot].fixed_spare) {
                self.close_fixed(slot as u32);
            }
        }
        if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn socket_fd(&self, slot: u32) -> Option<std::os::fd::RawFd> {
        self.slots[slot as usize]
            .socket
            .as_ref()
            .map(AsRawFd::as_raw_fd)
    }

    #[cfg(test)]
    fn spare_fd(&self, slot: u32) -> Option<std::os::fd::RawFd> {
        self.slots[slot as usize]
            .spare
            .as_ref()
            .map(AsRawFd::as_raw_fd)
    }
}

impl UringDriver {
    /// Takes every completion that is ready into `self.cqes` (submitting what is queued).
    ///
    /// With deferred task work the kernel runs only a bounded amount of it per enter (about
    /// 20 items when asked for one completion), so completions that are ready would wait for
    /// later turns while new probes pile up: at 20,000 in flight on loopback that made the
    /// median connect take 300 ms instead of 20. So it asks again, without waiting, for as
    /// many as may be ready, while entries keep coming (bounded).
    fn take_ready(&mut self) {
        self.cqes.clear();
        self.cqes
            .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
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
    }

    /// Handles the completions in `self.cqes`, pushing the events they make to `out`.
    fn handle(&mut self, out: &mut Vec<Completion>) {
        for i in 0..self.cqes.len() {
            let (user_data, result) = self.cqes[i];
            if user_data == QUIET || user_data == CANCEL {
                continue;
            }
            let slot = slot_of(user_data) as u32;
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.generation != user_data as u32 || s.op == Op::Idle {
                continue;
            }
            let op = std::mem::replace(&mut s.op, Op::Idle);
            self.inflight -= 1;
            if op == Op::Connect {
                self.unlink(slot);
            }
            let s = &mut self.slots[slot as usize];
            let event = if user_data & SOCKET_OP != 0 {
                // The direct path's socket creation failed (ENFILE, ENOBUFS, ENOMEM ...),
                // and the kernel skipped the completions linked after it: the slot's connect
                // ends here, with nothing in its entry.
                s.fixed = false;
                s.expiry = Expiry::No;
                Some(IoEvent::Connect(ConnectEvent::Failed(-result)))
            } else {
                self.finish(slot, op, result)
            };
            if let Some(event) = event {
                out.push(Completion { slot, event });
            }
        }
    }

    /// Direct path: creates the socket inside the ring, into `slot`'s file table entry,
    /// linked to its connect; or connects the spare the entry holds, when it is of the
    /// target's family.
    fn start_direct(
        &mut self,
        slot: u32,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<(), Errno> {
        let entry = DestinationSlot::try_from_slot_target(slot).map_err(|_| libc::EINVAL)?;
        #[cfg(not(test))]
        let protocol = libc::IPPROTO_TCP;
        #[cfg(test)]
        let protocol = self.socket_protocol;
        let s = &mut self.slots[slot as usize];
        debug_assert!(s.socket.is_none(), "slot {slot} started twice");
        debug_assert!(!s.fixed || s.fixed_spare, "slot {slot} started twice");
        let reuse = std::mem::take(&mut s.fixed_spare) && s.target.is_ipv4() == target.is_ipv4();
        if s.fixed && !reuse {
            // A spare of the other family: the new socket's creation replaces it in the
            // entry, but closing it first keeps the count of open sockets exact.
            self.close_fixed(slot);
        }
        let s = &mut self.slots[slot as usize];
        s.target = target;
        s.addr = SockAddr::from(target);
        let domain = if target.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // No SOCK_CLOEXEC: a direct descriptor is in no descriptor table (the kernel refuses
        // the flag with a file index).
        let create = (!reuse).then(|| {
            opcode::Socket::new(domain, libc::SOCK_STREAM, protocol)
                .file_index(Some(entry))
                .build()
        });
        let connect =
            opcode::Connect::new(Fixed(slot), s.addr.as_ptr().cast(), s.addr.len()).build();
        // SAFETY: `addr` lives in the never-resized slab and is not rewritten until the
        // connect's completion (or its socket's failure) has been reaped in `wait`.
        let pushed = unsafe { self.push_linked(slot, Op::Connect, create, connect, None) };
        if let Err(e) = pushed {
            if reuse {
                // The spare stays in its entry; it is no longer one.
                self.close_fixed(slot);
            }
            return Err(e);
        }
        self.arm(slot, timeout);
        // Blocking, as on the plain path. Counted as there until its creation says otherwise.
        self.slots[slot as usize].fixed = true;
        Ok(())
    }

    /// Marks the operation that `user_data` names as finished, if it is still in flight.
    /// Used only while dropping: nothing is reported any more, but a descriptor that an
    /// install created for a check is closed.
    fn retire(&mut self, user_data: u64, result: i32) {
        if user_data == QUIET || user_data == CANCEL {
            return;
        }
        let Some(s) = self.slots.get_mut(slot_of(user_data)) else {
            return;
        };
        if s.generation == user_data as u32 && s.op != Op::Idle {
            if s.op == Op::Confirm && user_data & SOCKET_OP == 0 && result >= 0 {
                // SAFETY: the kernel installed `result` as a new descriptor for this check,
                // which nothing else knows and nobody will use now.
                unsafe { libc::close(result) };
            }
            s.op = Op::Idle;
            s.expiry = Expiry::No;
            self.inflight -= 1;
            self.unlink(slot_of(user_data) as u32);
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
            let user_data = op_data(slot as u32, s.generation);
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
/// kernel; queued closes are submitted first and the slots' sockets are closed with the slab
/// (plain path) or with the file table, unregistered here (direct path).
impl Drop for UringDriver {
    fn drop(&mut self) {
        // Queued closes (of probes already reported) go to the kernel now, or their
        // descriptors would leak with the ring.
        let _ = self.ring.submit();
        if self.inflight > 0 {
            self.cancel_all();
        }
        if self.inflight > 0 {
            // The kernel still holds pointers into the slab: leaking it (and its sockets) is
            // the only safe choice left. Not reached on a working kernel: every operation
            // was cancelled, and a send or read carries a linked timeout besides.
            std::mem::forget(std::mem::take(&mut self.slots));
            return;
        }
        if self.direct {
            // Closes every socket still in the table now, rather than when the kernel gets
            // round to tearing the ring down after this driver is gone.
            let _ = self.ring.submitter().unregister_files();
        }
        // The slab's sockets close when it drops, after this function; then the ring.
    }
}

impl UringDriver {
    /// Cancels every operation in flight and waits (bounded) until the kernel has
    /// completed them.
    fn cancel_all(&mut self) {
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
                self.retire(user_data, result);
            }
            if any_refused {
                // This kernel does not know IORING_ASYNC_CANCEL_ANY.
                self.cancel_each();
            }
        }
    }
}

/// A read cancelled by its timeout: bytes may have arrived just before the timer fired (with
/// deferred task work, the answer's completion can still be queued then); take them if they
/// are there, without waiting.
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
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{Read, Write};
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

    /// Whether direct descriptors work here (Linux 6.8); as [`uring_here`], their absence
    /// fails under CI.
    fn direct_here() -> bool {
        match direct_available(64) {
            Ok(()) => true,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("direct descriptors are needed under CI: {e}")
            }
            Err(e) => {
                eprintln!("skipping the direct path: {e}");
                false
            }
        }
    }

    /// The fd paths to test here: plain always, direct where the kernel has it.
    fn paths_here() -> Vec<FdPath> {
        let mut paths = vec![FdPath::Plain];
        if direct_here() {
            paths.push(FdPath::Direct);
        }
        paths
    }

    /// Runs `d` until `want` completions have come (bounded by 30 s), returning them by slot.
    /// Every slot completes once: a second completion for a slot fails the test.
    fn completions(d: &mut UringDriver, want: usize) -> BTreeMap<u32, IoEvent> {
        let mut got = BTreeMap::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < want && Instant::now() < deadline {
            out.clear();
            d.wait(&mut out, Duration::from_millis(50)).unwrap();
            for c in &out {
                if let Some(earlier) = got.insert(c.slot, c.event) {
                    panic!("slot {}: {earlier:?}, then {:?}", c.slot, c.event);
                }
            }
        }
        assert_eq!(got.len(), want, "completions missing: {got:?}");
        got
    }

    /// A listener whose connections are accepted on a thread and handled by `serve`
    /// (bounded: it stops after `n` connections).
    fn serving(
        n: usize,
        serve: impl Fn(TcpStream) + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = listener(128);
        let addr = l.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            for _ in 0..n {
                match l.accept() {
                    Ok((c, _)) => serve(c),
                    Err(_) => return,
                }
            }
        });
        (addr, thread)
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
        // As `Engine::start` does: a file table may not have more entries than the limit.
        let limit = crate::raise_nofile_limit();
        for slots in (1..=64).chain(larger).chain(largest) {
            let (sq, cq) = ring_sizes(slots);
            assert!(cq >= sq, "{slots} slots: cq {cq} < sq {sq}");
            assert!(cq as usize >= 2 * slots, "{slots} slots: cq {cq}");
            for path in paths_here() {
                if path == FdPath::Direct && slots as u64 > limit {
                    // Refused (EMFILE), which `direct_available` finds at start.
                    assert!(UringDriver::new(slots, path).is_err());
                    assert!(direct_available(slots).is_err());
                    continue;
                }
                match UringDriver::new(slots, path) {
                    Ok(d) => assert_eq!(d.fd_path(), path),
                    Err(e) => panic!("a {path} ring for {slots} slots (sq {sq}, cq {cq}): {e}"),
                }
            }
        }
    }

    /// The sockets of this process's network namespace connected or connecting to one of
    /// `ports` on 127.0.0.1 (from `/proc/self/net/tcp`).
    fn sockets_to(ports: &BTreeSet<u16>) -> usize {
        let text = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
        text.lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let Some(remote) = fields.get(2) else {
                    return false;
                };
                let Some((_, port)) = remote.split_once(':') else {
                    return false;
                };
                u16::from_str_radix(port, 16).is_ok_and(|p| ports.contains(&p))
            })
            .count()
    }

    /// Issue 10 item 5, on both fd paths: a driver dropped with thousands of connects and
    /// reads in flight cancels them, waits for the kernel, and leaves no socket open behind
    /// it (neither a slot's socket nor one whose close was still queued). On the plain path
    /// the descriptors are gone from `/proc/self/fd`; on the direct path, where sockets have
    /// no descriptor, the connections are gone from `/proc/self/net/tcp`.
    #[test]
    fn dropping_with_thousands_in_flight_closes_everything() {
        if !uring_here() {
            return;
        }
        for path in paths_here() {
            drop_with_thousands_in_flight(path);
        }
    }

    fn drop_with_thousands_in_flight(path: FdPath) {
        // Backlog 0: after the first connection the accept queue is full and the SYNs of the
        // rest are dropped, so their connects stay pending.
        let full = listener(0);
        let full_addr = full.local_addr().unwrap();
        // Never accepted either, but with room: these connects complete and then wait on a read.
        let open = listener(1024);
        let open_addr = open.local_addr().unwrap();
        // Bound, never listening: refused, and the port stays ours for the whole test.
        let refusing_socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        refusing_socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let refused_addr = refusing_socket.local_addr().unwrap().as_socket().unwrap();
        let (hanging, reading, refusing) = (3000u32, 500u32, 500u32);
        let long = Duration::from_secs(120);
        let ports: BTreeSet<u16> = [full_addr.port(), open_addr.port(), refused_addr.port()]
            .into_iter()
            .collect();

        let mut d = UringDriver::new(4096, path).unwrap();
        let mut ours: Vec<(i32, String)> = Vec::new();
        let mut start = |d: &mut UringDriver, slot: u32, to: SocketAddr| {
            d.start(slot, to, long).unwrap();
            if path == FdPath::Plain {
                let fd = slot_fd(d, slot);
                ours.push((fd, fd_link(fd).unwrap()));
            }
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
                    other => panic!("{path}: slot {}: unexpected {other:?}", c.slot),
                }
            }
        }
        assert_eq!((reads, refused), (reading, refusing), "{path}");
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
        assert!(done, "{path}: the last refusal did not come back");
        assert!(d.inflight() >= (hanging + reading) as usize - 1);
        assert!(
            sockets_to(&ports) >= (hanging + reading) as usize,
            "{path}: the probes' sockets are not where this test looks for them"
        );

        open.set_nonblocking(true).unwrap();
        let mut peers: Vec<TcpStream> = Vec::new();
        while let Ok((peer, _)) = open.accept() {
            peers.push(peer);
        }
        assert_eq!(peers.len(), reading as usize, "{path}");

        drop(d);

        let leaked: Vec<_> = ours
            .iter()
            .filter(|(fd, link)| fd_link(*fd).as_ref() == Some(link))
            .collect();
        assert!(
            leaked.is_empty(),
            "{path}: {} sockets left open: {:?}",
            leaked.len(),
            &leaked[..leaked.len().min(5)]
        );
        // Whatever the path, no connection of ours is left (bounded wait: the kernel may
        // finish a close just after the drop returns).
        let deadline = Instant::now() + Duration::from_secs(10);
        while sockets_to(&ports) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(sockets_to(&ports), 0, "{path}: connections left behind");
        // The reads were really cancelled: the peers see their connections end.
        for mut peer in peers {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            match peer.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("{path}: a peer's connection did not end: {other:?}"),
            }
        }
        drop(full);
    }

    /// Issue 15 item 2: on both fd paths, a farm of real listeners and closed ports gets
    /// exact verdicts: open ports connect (with a real local address, never the peer's),
    /// closed ones are refused, a listener that accepts and resets is open (connected, or
    /// reset after the handshake); a dialog sends and reads on the connected socket; an
    /// unanswered connect and a silent read time out.
    #[test]
    fn farm_verdicts_are_exact_on_both_fd_paths() {
        if !uring_here() {
            return;
        }
        for path in paths_here() {
            farm_verdicts(path);
        }
    }

    fn farm_verdicts(path: FdPath) {
        let open: Vec<TcpListener> = (0..40).map(|_| listener(128)).collect();
        // Bound, never listening: refused, and the ports stay ours for the whole test.
        let bound: Vec<socket2::Socket> = (0..200)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                    .unwrap();
                s
            })
            .collect();
        let closed: Vec<SocketAddr> = bound
            .iter()
            .map(|s| s.local_addr().unwrap().as_socket().unwrap())
            .collect();
        let (resetting, reset_thread) = serving(10, |c| {
            let c = socket2::Socket::from(c);
            let _ = c.set_linger(Some(Duration::ZERO));
        });
        let (greeting, greet_thread) = serving(1, |mut c| {
            c.write_all(b"220 hello\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 16];
            let n = c.read(&mut buf).unwrap_or(0);
            assert_eq!(&buf[..n], b"QUIT\r\n");
        });
        let full = listener(0);
        let full_addr = full.local_addr().unwrap();
        let _first = TcpStream::connect(full_addr).unwrap(); // fills the accept queue
        let silent = listener(16);

        let mut d = UringDriver::new(512, path).unwrap();
        let long = Duration::from_secs(10);
        let mut want: BTreeMap<u32, &str> = BTreeMap::new();
        let mut slot = 0u32;
        let mut start = |d: &mut UringDriver, to: SocketAddr, timeout, kind| {
            d.start(slot, to, timeout).unwrap();
            want.insert(slot, kind);
            slot += 1;
        };
        for l in &open {
            start(&mut d, l.local_addr().unwrap(), long, "open");
        }
        for &a in &closed {
            start(&mut d, a, long, "closed");
        }
        for _ in 0..10 {
            start(&mut d, resetting, long, "reset");
        }
        start(&mut d, greeting, long, "greeting");
        start(&mut d, silent.local_addr().unwrap(), long, "silent");
        for _ in 0..5 {
            start(&mut d, full_addr, Duration::from_millis(200), "unanswered");
        }
        let got = completions(&mut d, want.len());
        let mut dialogs = Vec::new();
        for (slot, event) in &got {
            let kind = want[slot];
            match (kind, event) {
                (
                    "open" | "greeting" | "silent",
                    IoEvent::Connect(ConnectEvent::Connected { local, peer }),
                ) => {
                    assert_ne!(local, peer, "{path}: slot {slot}");
                    assert_eq!(local.ip(), peer.ip(), "{path}: slot {slot}");
                    if kind == "open" {
                        d.close(*slot);
                    } else {
                        d.recv(*slot, Duration::from_millis(300)).unwrap();
                        dialogs.push(*slot);
                    }
                }
                ("reset", IoEvent::Connect(ConnectEvent::Connected { .. })) => d.close(*slot),
                ("reset", IoEvent::Connect(ConnectEvent::Failed(libc::ECONNRESET))) => {}
                ("closed", IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED))) => {}
                ("unanswered", IoEvent::Connect(ConnectEvent::TimedOut)) => {}
                _ => panic!("{path}: slot {slot} ({kind}): {event:?}"),
            }
        }
        let got = completions(&mut d, dialogs.len());
        for (slot, event) in got {
            match (want[&slot], event) {
                ("greeting", IoEvent::Received(Ok(n))) => {
                    assert_eq!(d.received(slot), b"220 hello\r\n", "{path}");
                    assert_eq!(n, 11);
                    d.send(slot, b"QUIT\r\n", long).unwrap();
                }
                ("silent", IoEvent::TimedOut) => d.close(slot),
                (kind, event) => panic!("{path}: slot {slot} ({kind}) read: {event:?}"),
            }
        }
        let got = completions(&mut d, 1);
        for (slot, event) in got {
            assert_eq!(event, IoEvent::Sent(Ok(6)), "{path}");
            d.close(slot);
        }
        d.flush().unwrap();
        greet_thread.join().unwrap();
        drop(d);
        reset_thread.join().unwrap();
        drop(bound);
    }

    /// Issue 15 item 2: when the ring cannot create a probe's socket, the slot gets exactly
    /// one completion, the connect failing with the creation's errno (so ENFILE, ENOBUFS and
    /// ENOMEM reach the shard as the local shortages they are), and the slot works again.
    #[test]
    fn a_failed_socket_creation_is_one_completion_with_its_errno() {
        if !uring_here() || !direct_here() {
            return;
        }
        let refused = listener(1).local_addr().unwrap();
        let mut d = UringDriver::new(64, FdPath::Direct).unwrap();
        // A stream socket of the UDP protocol cannot be made: EPROTONOSUPPORT.
        d.socket_protocol = libc::IPPROTO_UDP;
        for slot in 0..32 {
            d.start(slot, refused, Duration::from_secs(10)).unwrap();
        }
        let got = completions(&mut d, 32);
        for (slot, event) in &got {
            assert_eq!(
                *event,
                IoEvent::Connect(ConnectEvent::Failed(libc::EPROTONOSUPPORT)),
                "slot {slot}"
            );
        }
        assert_eq!(d.inflight(), 0);
        // Nothing else comes for those slots (`completions` fails on a second one).
        d.socket_protocol = libc::IPPROTO_TCP;
        for slot in 0..32 {
            d.start(slot, refused, Duration::from_secs(10)).unwrap();
        }
        let got = completions(&mut d, 32);
        for (slot, event) in &got {
            assert_eq!(
                *event,
                IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED)),
                "slot {slot}"
            );
        }
    }

    /// Whether `slot`'s file table entry holds a socket: installing it as an fd works (the
    /// fd is closed again). Only on a driver with nothing in flight.
    fn entry_holds_a_socket(d: &mut UringDriver, slot: u32) -> bool {
        assert_eq!(d.inflight(), 0);
        let entry = opcode::FixedFdInstall::new(Fixed(slot), 0)
            .build()
            .user_data(7);
        // SAFETY: the install carries no pointer.
        unsafe { d.ring.submission().push(&entry) }.unwrap();
        d.ring.submit_and_wait(1).unwrap();
        let cqe = d
            .ring
            .completion()
            .next()
            .expect("the install's completion");
        assert_eq!(cqe.user_data(), 7);
        if cqe.result() >= 0 {
            // SAFETY: the kernel just installed this descriptor for the test alone.
            unsafe { libc::close(cqe.result()) };
        }
        cqe.result() >= 0
    }

    /// Issue 15 item 3, direct path: a socket whose connect timed out stays in its entry for
    /// the slot's next probe of its family (which then creates no socket: with socket
    /// creation made to fail, it still connects) and gives that probe exact verdicts;
    /// a connected socket is never kept; a spare of the other family is not used; going
    /// idle closes it.
    #[test]
    fn a_timed_out_direct_socket_is_reused_for_the_next_probe_with_exact_verdicts() {
        if !uring_here() || !direct_here() {
            return;
        }
        let targets = crate::driver::tests::ReuseTargets::new();
        let (full_addr, open_addr, refused) = (targets.unanswered, targets.open, targets.refused);
        let short = Duration::from_millis(200);
        let long = Duration::from_secs(10);
        let mut d = UringDriver::new(8, FdPath::Direct).unwrap();
        let slot = 5;
        let one = |d: &mut UringDriver| {
            let got = completions(d, 1);
            assert_eq!(got.keys().copied().collect::<Vec<_>>(), [slot]);
            got[&slot]
        };
        let timed_out = IoEvent::Connect(ConnectEvent::TimedOut);

        d.start(slot, full_addr, short).unwrap();
        assert_eq!(one(&mut d), timed_out);
        assert_eq!(d.fixed_spare(slot), Some(true));
        // From here on a new socket cannot be made: only the spare can connect.
        d.socket_protocol = libc::IPPROTO_UDP;
        d.start(slot, open_addr, long).unwrap();
        assert_eq!(d.fixed_spare(slot), None);
        match one(&mut d) {
            IoEvent::Connect(ConnectEvent::Connected { local, peer }) => {
                assert_eq!(peer, open_addr);
                assert_ne!(local, peer);
                assert_eq!(local.ip(), peer.ip());
            }
            other => panic!("the spare did not connect: {other:?}"),
        }
        // A connected socket is closed, never kept: the next probe needs a new one.
        d.close(slot);
        assert_eq!(d.fixed_spare(slot), None);
        d.start(slot, refused, long).unwrap();
        assert_eq!(
            one(&mut d),
            IoEvent::Connect(ConnectEvent::Failed(libc::EPROTONOSUPPORT))
        );

        // Unanswered (a new socket), kept, then refused on the same socket: ECONNREFUSED,
        // not the ECONNRESET that its disconnect left behind; a refused socket goes.
        d.socket_protocol = libc::IPPROTO_TCP;
        d.start(slot, full_addr, short).unwrap();
        assert_eq!(one(&mut d), timed_out);
        d.socket_protocol = libc::IPPROTO_UDP;
        d.start(slot, refused, long).unwrap();
        assert_eq!(
            one(&mut d),
            IoEvent::Connect(ConnectEvent::Failed(libc::ECONNREFUSED))
        );
        assert_eq!(d.fixed_spare(slot), None);

        // Unanswered twice on the same socket: the second timeout is a timeout too.
        d.socket_protocol = libc::IPPROTO_TCP;
        d.start(slot, full_addr, short).unwrap();
        assert_eq!(one(&mut d), timed_out);
        d.socket_protocol = libc::IPPROTO_UDP;
        d.start(slot, full_addr, short).unwrap();
        assert_eq!(one(&mut d), timed_out);
        assert_eq!(d.fixed_spare(slot), Some(true));

        // Another family: the spare is not used (its creation is tried, and fails here).
        if let Ok(v6) = TcpListener::bind("[::1]:0").map(|l| l.local_addr().unwrap()) {
            d.start(slot, v6, long).unwrap();
            assert_eq!(
                one(&mut d),
                IoEvent::Connect(ConnectEvent::Failed(libc::EPROTONOSUPPORT))
            );
            assert_eq!(d.fixed_spare(slot), None);
            d.socket_protocol = libc::IPPROTO_TCP;
            d.start(slot, full_addr, short).unwrap();
            assert_eq!(one(&mut d), timed_out);
        } else {
            eprintln!("no IPv6 loopback: the family switch is not tried");
        }

        // Going idle closes the kept socket.
        assert_eq!(d.fixed_spare(slot), Some(true));
        assert!(entry_holds_a_socket(&mut d, slot));
        d.flush().unwrap();
        assert_eq!(d.fixed_spare(slot), None);
        assert!(
            !entry_holds_a_socket(&mut d, slot),
            "the spare is still open"
        );
        d.socket_protocol = libc::IPPROTO_UDP;
        d.start(slot, full_addr, short).unwrap();
        assert_eq!(
            one(&mut d),
            IoEvent::Connect(ConnectEvent::Failed(libc::EPROTONOSUPPORT))
        );
        drop(targets);
    }
}
