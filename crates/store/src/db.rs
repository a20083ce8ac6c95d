//! The store's handle: the writer thread, the readers, and the reply of a queued write.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::schema;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory '{}'", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file could not be opened or looked at, to watch it for deletion.
    #[error("cannot watch the database file '{}'", path.display())]
    Watch {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A value could not be encoded for or decoded from its column.
    #[error("column {column}: {message}")]
    Value {
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The writer thread has stopped (the store is closing, or it could not start).
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// The database file was deleted (or replaced) while the store had it open: whatever is
    /// written to it now is lost when the process ends, so nothing is.
    #[error("the database file '{}' was deleted while the server ran", path.display())]
    Deleted {
        /// The database file.
        path: PathBuf,
    },
}

/// The state of the store, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes succeed.
    Ok,
    /// A write failed (after its retries): what it said. It stays so until the process
    /// ends, since what that write carried is lost.
    WriteFailed(String),
    /// The database file was deleted or replaced while the store had it open.
    Deleted(PathBuf),
}

impl StoreHealth {
    /// Whether the store works.
    pub fn is_ok(&self) -> bool {
        matches!(self, StoreHealth::Ok)
    }
}

impl std::fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreHealth::Ok => f.write_str("ok"),
            StoreHealth::WriteFailed(e) => write!(f, "write failed: {e}"),
            StoreHealth::Deleted(path) => write!(
                f,
                "database deleted: '{}' no longer names the open database file",
                path.display()
            ),
        }
    }
}

/// What the writer and the readers of the store's state share: the database file as it was
/// opened (to notice it deleted) and the first write failure.
struct Watchdog {
    path: PathBuf,
    /// The database file, held open only to `fstat` it.
    file: std::fs::File,
    /// Device and inode of the file at open.
    id: (u64, u64),
    failure: Mutex<Option<String>>,
}

impl Watchdog {
    /// Whether the database file is gone: unlinked (no name left) or its path now names
    /// another file.
    fn deleted(&self) -> bool {
        match self.file.metadata() {
            Ok(m) if m.nlink() == 0 => return true,
            Ok(_) => {}
            Err(_) => return true,
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Remembers the first failed write.
    fn failed(&self, e: &StoreError) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some(e.to_string());
        }
    }

    fn health(&self) -> StoreHealth {
        if self.deleted() {
            return StoreHealth::Deleted(self.path.clone());
        }
        match &*lock(&self.failure) {
            Some(e) => StoreHealth::WriteFailed(e.clone()),
            None => StoreHealth::Ok,
        }
    }
}

/// Waits before each retry of a failed write: four tries in all, 0.75 s of waiting.
const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
];

/// Whether a failed write may succeed when tried again: a full disk may get room, an I/O
/// error or a lock may pass. A constraint or a bad value will not change.
fn retryable(e: &StoreError) -> bool {
    use rusqlite::ErrorCode as C;
    match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            C::DiskFull | C::SystemIoFailure | C::DatabaseBusy | C::DatabaseLocked
        ),
        _ => false,
    }
}

/// The answer to a queued write: [`Reply::wait`] for it on a thread that may block, or
/// `.await` it (any executor: the store depends on no async runtime).
#[must_use = "a write's outcome says whether it was stored"]
pub struct Reply<T>(Arc<Slot<T>>);

/// Where the writer leaves the outcome of one write.
struct Slot<T> {
    state: Mutex<Outcome<T>>,
    ready: Condvar,
}

enum Outcome<T> {
    /// Not written yet; the task to wake when it is.
    Pending(Option<Waker>),
    /// Written (or failed).
    Done(Result<T, StoreError>),
    /// Taken by the reply.
    Taken,
}

/// The writer's end of a [`Reply`]. Dropped unanswered (the writer thread is gone), it
/// answers [`StoreError::WriterGone`].
struct Responder<T>(Arc<Slot<T>>);

impl<T> Responder<T> {
    fn answer(self, outcome: Result<T, StoreError>) {
        self.fill(outcome);
    }

    /// Leaves the outcome, if none is there yet, and wakes whoever waits for it.
    fn fill(&self, outcome: Result<T, StoreError>) {
        let mut state = lock(&self.0.state);
        let waker = match &mut *state {
            Outcome::Pending(waker) => waker.take(),
            Outcome::Done(_) | Outcome::Taken => return,
        };
        *state = Outcome::Done(outcome);
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        self.0.ready.notify_all();
    }
}

impl<T> Drop for Responder<T> {
    fn drop(&mut self) {
        self.fill(Err(StoreError::WriterGone));
    }
}

fn reply<T>() -> (Responder<T>, Reply<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(Outcome::Pending(None)),
        ready: Condvar::new(),
    });
    (Responder(Arc::clone(&slot)), Reply(slot))
}

impl<T> Reply<T> {
    /// Blocks until the writer has run the write. On an async thread, `.await` instead.
    pub fn wait(self) -> Result<T, StoreError> {
        let mut state = lock(&self.0.state);
        loop {
            match std::mem::replace(&mut *state, Outcome::Taken) {
                Outcome::Done(outcome) => return outcome,
                Outcome::Taken => return Err(StoreError::WriterGone),
                pending @ Outcome::Pending(_) => {
                    *state = pending;
                    state = self.0.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.0.state);
        match std::mem::replace(&mut *state, Outcome::Taken) {
            Outcome::Done(outcome) => Poll::Ready(outcome),
            Outcome::Taken => Poll::Ready(Err(StoreError::WriterGone)),
            Outcome::Pending(_) => {
                *state = Outcome::Pending(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

type WriteOp = Box<dyn FnOnce(&mut Connection) + Send>;

/// Readers kept open for reuse.
const READER_POOL: usize = 8;

/// The SQLite store of one data directory.
pub struct Store {
    path: PathBuf,
    watchdog: Arc<Watchdog>,
    writer: Option<crossbeam_channel::Sender<WriteOp>>,
    writer_thread: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a pool that is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) `porthawk.db` in `dir`, migrates it, marks every sweep a
    /// previous process left queued or running as interrupted, and starts the writer thread.
    /// Returns the store and how many sweeps were marked.
    pub fn open(dir: &Path) -> Result<(Store, usize), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("porthawk.db");
        let mut conn = Connection::open(&path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        let interrupted = schema::mark_interrupted(&conn, now_ms())?;
        let watch_error = |source| StoreError::Watch {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(watch_error)?;
        let meta = file.metadata().map_err(watch_error)?;
        let watchdog = Arc::new(Watchdog {
            path: path.clone(),
            id: (meta.dev(), meta.ino()),
            file,
            failure: Mutex::new(None),
        });
        let (writer, ops) = crossbeam_channel::unbounded::<WriteOp>();
        let writer_thread = std::thread::Builder::new()
            .name("porthawk-store".into())
            .spawn(move || {
                // Runs every queued write in order until the store is dropped.
                for op in ops {
                    op(&mut conn);
                }
            })
            .map_err(|_| StoreError::WriterGone)?;
        Ok((
            Store {
                path,
                watchdog,
                writer: Some(writer),
                writer_thread: Some(writer_thread),
                readers: Mutex::new(Vec::new()),
            },
            interrupted,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's state: whether the database file is still there, and whether a write
    /// has failed. Cheap (two `stat`s): `/healthz` and new sweeps ask it each time.
    pub fn health(&self) -> StoreHealth {
        self.watchdog.health()
    }

    /// Queues `f` for the writer thread. A write to a database file that was deleted is
    /// refused ([`StoreError::Deleted`]); a failed write leaves the store unhealthy.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T> {
        let (responder, reply) = reply();
        let watchdog = Arc::clone(&self.watchdog);
        let op: WriteOp = Box::new(move |conn| {
            let outcome = if watchdog.deleted() {
                Err(StoreError::Deleted {
                    path: watchdog.path.clone(),
                })
            } else {
                f(conn)
            };
            if let Err(e @ (StoreError::Sql(_) | StoreError::Deleted { .. })) = &outcome {
                watchdog.failed(e);
            }
            // The caller may have stopped waiting; the write stands either way.
            responder.answer(outcome);
        });
        if let Some(writer) = &self.writer {
            // A send fails only when the writer thread is gone: the dropped responder inside
            // the op answers WriterGone.
            let _ = writer.send(op);
        }
        reply
    }

    /// [`Store::write`] of a transaction that is tried again, after a short wait, when it
    /// fails in a way that may pass (a full disk, an I/O error, a lock). A failed
    /// transaction is rolled back, so each try starts from the same database.
    pub(crate) fn write_retrying<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T> {
        self.write(move |conn| {
            let mut outcome = f(conn);
            for wait in RETRY_BACKOFF {
                match &outcome {
                    Err(e) if retryable(e) => {
                        std::thread::sleep(wait);
                        outcome = f(conn);
                    }
                    _ => break,
                }
            }
            outcome
        })
    }

    /// Runs `f` on a read-only connection, on the caller's thread.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                schema::configure_reader(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        out
    }
}

impl Drop for Store {
    /// Lets the writer finish every queued write, then stops it.
    fn drop(&mut self) {
        self.writer = None;
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_gets_the_answer_from_another_thread() {
        let (responder, reply) = reply::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            responder.answer(Ok(7));
        });
        assert_eq!(reply.wait().unwrap(), 7);
        t.join().unwrap();
    }

    /// A write that never runs (its writer thread is gone) answers WriterGone instead of
    /// leaving its caller waiting forever.
    #[test]
    fn an_unanswered_reply_says_the_writer_is_gone() {
        let (responder, first) = reply::<u32>();
        drop(responder);
        assert!(matches!(first.wait(), Err(StoreError::WriterGone)));
        let (responder, second) = reply::<u32>();
        let t = std::thread::spawn(move || drop(responder));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            runtime.block_on(second),
            Err(StoreError::WriterGone)
        ));
        t.join().unwrap();
    }
}
