//! Watching a directory with inotify, so that what cares about a file (the config file, the
//! database) sleeps in the kernel until it changes instead of looking at it on a timer.
//! Events only wake the watcher: what changed is then found by looking at the file itself
//! (its stamp, the store's health), so a missed or merged event costs nothing but a look.
//!
//! A [`WatchThread`] blocks in `read` on its inotify descriptor; stopping it removes the
//! watch, which the kernel answers with an `IN_IGNORED` event that wakes the read.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// An inotify descriptor with one directory watch on it.
struct DirWatch {
    fd: OwnedFd,
    wd: i32,
}

/// What one read of events said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// Some event of interest arrived.
    pub(crate) any: bool,
    /// The watch is gone (stopped, or its directory deleted): no event comes after this.
    pub(crate) ended: bool,
}

/// Bytes of events read at once (an event is 16 bytes plus its name).
const BUF: usize = 4096;

impl DirWatch {
    fn new(dir: &Path, flags: WatchFlags) -> io::Result<DirWatch> {
        let fd = inotify::init(CreateFlags::CLOEXEC)?;
        let wd = inotify::add_watch(&fd, dir, flags | WatchFlags::ONLYDIR)?;
        Ok(DirWatch { fd, wd })
    }

    /// Blocks until events arrive and reads one buffer of them. `wanted` says whether an
    /// event's file name is of interest (events on the directory itself have no name and
    /// always are).
    fn read(&self, wanted: &dyn Fn(&CStr) -> bool) -> io::Result<Events> {
        let mut buf = [MaybeUninit::<u8>::uninit(); BUF];
        let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
        let mut out = Events::default();
        loop {
            match reader.next() {
                Ok(e) => {
                    if e.events().contains(ReadFlags::IGNORED) {
                        out.ended = true;
                    } else if e.file_name().is_none_or(wanted) {
                        out.any = true;
                    }
                    if reader.is_buffer_empty() {
                        return Ok(out);
                    }
                }
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes the watch: a reader blocked in [`DirWatch::read`] wakes with `ended`.
    fn stop(&self) {
        let _ = inotify::remove_watch(&self.fd, self.wd);
    }
}

/// A thread that sleeps until events of interest arrive in a directory and hands each read
/// of them to a closure; stopped (and joined) on drop.
pub(crate) struct WatchThread {
    watch: Arc<DirWatch>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchThread {
    /// Watches `dir` for `flags` on thread `name`: `on_events` is called for every read with
    /// an event whose name is `wanted`, and once more with `ended` when the watch goes away
    /// by itself (the directory deleted or moved out of its file system); a read that fails
    /// is logged and ends the thread like that.
    pub(crate) fn spawn(
        name: &str,
        dir: &Path,
        flags: WatchFlags,
        wanted: impl Fn(&CStr) -> bool + Send + 'static,
        mut on_events: impl FnMut(Events) + Send + 'static,
    ) -> io::Result<WatchThread> {
        let watch = Arc::new(DirWatch::new(dir, flags)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (w, flag) = (Arc::clone(&watch), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                let events = match w.read(&wanted) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "a directory watch failed");
                        Events {
                            any: false,
                            ended: true,
                        }
                    }
                };
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if events.any || events.ended {
                    on_events(events);
                }
                if events.ended {
                    return;
                }
            })?;
        Ok(WatchThread {
            watch,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WatchThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread (with IN_IGNORED) if it still watches; an IN_IGNORED queued
        // before it reads again wakes it all the same.
        self.watch.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// The thread wakes for the wanted file's change and not for other files, and a drop
    /// stops it (the join returns).
    #[test]
    fn wakes_for_its_file_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let watch = WatchThread::spawn(
            "test-watch",
            dir.path(),
            WatchFlags::CLOSE_WRITE,
            |n| n.to_bytes() == b"mine",
            move |e| {
                let _ = tx.send(e);
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(dir.path().join("mine"), "x").unwrap();
        let e = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            e,
            Events {
                any: true,
                ended: false
            }
        );
        drop(watch);
        // The closure (and its sender) went with the thread; no other event was sent.
        assert_eq!(rx.recv(), Err(mpsc::RecvError));
    }

    /// A deleted directory ends the watch by itself: the closure hears `ended`.
    #[test]
    fn a_deleted_directory_ends_the_watch() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("watched");
        std::fs::create_dir(&dir).unwrap();
        let (tx, rx) = mpsc::channel();
        let _watch = WatchThread::spawn(
            "test-watch",
            &dir,
            WatchFlags::DELETE_SELF,
            |_| true,
            move |e| {
                let _ = tx.send(e);
            },
        )
        .unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let mut ended = false;
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(10)) {
            ended |= e.ended;
        }
        assert!(ended, "the watch did not end");
    }
}
