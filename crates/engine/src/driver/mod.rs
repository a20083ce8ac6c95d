//! The backends that own the sockets: io_uring and epoll.
//!
//! A backend starts connects for slots of the shard's slab and reports what happened to each
//! as a [`porthawk_core::ConnectEvent`]; the shard asks the core's probe machine what that
//! means. Both backends close a probe's socket with `SO_LINGER 0` (an RST, no TIME_WAIT)
//! before they report its completion.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use porthawk_core::{ConnectEvent, Errno};

pub(crate) mod epoll;
pub(crate) mod uring;

/// One finished connect attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The slot the attempt belonged to.
    pub slot: u32,
    /// What happened.
    pub event: ConnectEvent,
}

/// What a shard needs from a backend.
pub(crate) trait Driver {
    /// Opens a socket for `slot` and starts connecting it to `target`, to be given up after
    /// `timeout`. The slot must not have an attempt in flight. An `Err` is the errno of a
    /// failure before anything was started (e.g. `EMFILE`); nothing is left open then.
    fn start(&mut self, slot: u32, target: SocketAddr, timeout: Duration) -> Result<(), Errno>;

    /// Hands started work to the kernel and waits up to `max_wait` for at least one attempt
    /// to finish, appending finished attempts to `out`. Returns at once when nothing is in
    /// flight.
    fn wait(&mut self, out: &mut Vec<Completion>, max_wait: Duration) -> io::Result<()>;

    /// Attempts in flight.
    fn inflight(&self) -> usize;
}

/// Sets `SO_LINGER` to zero so that closing the socket sends an RST and leaves no TIME_WAIT.
pub(crate) fn new_socket(target: &SocketAddr, nonblocking: bool) -> Result<socket2::Socket, Errno> {
    let domain = socket2::Domain::for_address(*target);
    let mut ty = socket2::Type::STREAM.cloexec();
    if nonblocking {
        ty = ty.nonblocking();
    }
    let socket = socket2::Socket::new(domain, ty, Some(socket2::Protocol::TCP)).map_err(errno)?;
    socket.set_linger(Some(Duration::ZERO)).map_err(errno)?;
    Ok(socket)
}

/// The errno of an I/O error (EIO when it carries none).
pub(crate) fn errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}
