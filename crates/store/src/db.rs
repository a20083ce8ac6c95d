//! The store's handle: the writer thread, the readers, and the reply of a queued write.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::schema;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory '{}': {source}", path.display())]
    CreateDir {
        /// The directory.
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

    /// Queues `f` for the writer thread.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T> {
        let (responder, reply) = reply();
        let op: WriteOp = Box::new(move |conn| {
            // The caller may have stopped waiting; the write stands either way.
            responder.answer(f(conn));
        });
        if let Some(writer) = &self.writer {
            // A send fails only when the writer thread is gone: the dropped responder inside
            // the op answers WriterGone.
            let _ = writer.send(op);
        }
        reply
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
