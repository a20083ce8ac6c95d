//! The io_uring backend: `CONNECT` linked to a `LINK_TIMEOUT`, `CLOSE` through the ring, one
//! `io_uring_enter` per loop turn.
//!
//! This is the only module of porthawk that uses `unsafe`: pushing an entry hands the kernel
//! raw pointers (the peer address, the timeout) that must stay valid until the kernel is done
//! with them. The slab below guarantees that; each `unsafe` block says how.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::Duration;

use io_uring::squeue::Flags;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use porthawk_core::{ConnectEvent, Errno};
use socket2::{SockAddr, Socket};

use super::{errno, new_socket, reset_on_close, Completion, Driver};

/// `user_data` of entries whose completions carry no news: the link timeouts (the connect's
/// own completion says whether the timeout fired) and the closes.
const QUIET: u64 = u64::MAX;

/// The most in-flight probes one ring carries: two completions each must fit into the
/// largest completion queue the kernel allows (65,536 entries).
pub(crate) const MAX_SLOTS: usize = 32_736;

struct Slot {
    socket: Option<Socket>,
    /// The peer address the kernel reads while the connect is in flight.
    addr: SockAddr,
    /// The timeout the kernel reads when it prepares the linked timeout.
    timeout: Timespec,
    target: SocketAddr,
    generation: u32,
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

/// Whether io_uring can run here with what the engine needs (CONNECT, LINK_TIMEOUT, CLOSE).
/// The error says why not (seccomp, `kernel.io_uring_disabled`, an old kernel).
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
                addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                timeout: Timespec::new(),
                target: SocketAddr::from(([0, 0, 0, 0], 0)),
                generation: 0,
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
    /// Every pointer inside `entries` must stay valid until the kernel has consumed the entry
    /// (for CONNECT: until its completion).
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

    fn close(&mut self, socket: Socket) {
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
        s.generation = s.generation.wrapping_add(1);
        s.target = target;
        s.addr = SockAddr::from(target);
        s.timeout = Timespec::from(timeout);
        let connect = opcode::Connect::new(Fd(fd), s.addr.as_ptr().cast(), s.addr.len())
            .build()
            .flags(Flags::IO_LINK)
            .user_data((u64::from(slot) << 32) | u64::from(s.generation));
        let link_timeout = opcode::LinkTimeout::new(&s.timeout)
            .build()
            .user_data(QUIET);
        s.socket = Some(socket);
        // SAFETY: `addr` and `timeout` live in `self.slots`, a boxed slice that is never
        // resized, and this slot is not started again (so they are not overwritten) until
        // the connect's completion has been reaped in `wait`. The socket stays open in the
        // slot until then as well.
        if let Err(e) = unsafe { self.push(&[connect, link_timeout]) } {
            self.slots[slot as usize].socket = None;
            return Err(errno(e));
        }
        self.inflight += 1;
        Ok(())
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
        for i in 0..self.cqes.len() {
            let (user_data, result) = self.cqes[i];
            if user_data == QUIET {
                continue;
            }
            let slot = (user_data >> 32) as u32;
            let s = &mut self.slots[slot as usize];
            if s.generation != user_data as u32 {
                continue;
            }
            let Some(socket) = s.socket.take() else {
                continue;
            };
            let event = match -result {
                // A zero result is not proof of a handshake: when an ICMP error ends the
                // attempt, io_uring can report 0 with the error already consumed. Only a
                // socket with a peer is connected.
                0 => verify_connected(&socket, s.target),
                // The linked timeout fired and cancelled the connect. The answer may have
                // arrived just before, with its completion still queued as deferred task work:
                // take a last look at the socket before calling the attempt unanswered.
                libc::ECANCELED => last_look(&socket, s.target),
                e => ConnectEvent::Failed(e),
            };
            if matches!(event, ConnectEvent::Connected { .. }) {
                reset_on_close(&socket);
            }
            self.close(socket);
            self.inflight -= 1;
            out.push(Completion { slot, event });
        }
        Ok(())
    }

    fn inflight(&self) -> usize {
        self.inflight
    }
}
