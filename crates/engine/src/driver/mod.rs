//! The backends that own the sockets: io_uring and epoll.
//!
//! A backend starts connects for slots of the shard's slab and reports what happened to each
//! as a [`porthawk_core::ConnectEvent`]; the shard asks the core's probe machine what that
//! means. Both backends close a probe's socket before they report its completion; a
//! connected one with `SO_LINGER 0` (an RST, no TIME_WAIT on either side).

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
    /// until [`Driver::close`]; after anything else it is already closed.
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

    /// Hands queued work (the closes of finished probes) to the kernel without waiting. A
    /// shard calls it before it goes idle, so no socket of a finished job stays open until
    /// the next job.
    fn flush(&mut self) -> io::Result<()>;
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

/// The errno of an I/O error (EIO when it carries none).
pub(crate) fn errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}
