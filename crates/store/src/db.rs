//! The store's handle: the writer thread, the readers, and the reply of a queued write.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

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
/// `.await` it.
#[must_use = "a write's outcome says whether it was stored"]
pub struct Reply<T>(oneshot::Receiver<Result<T, StoreError>>);

impl<T> Reply<T> {
    /// Blocks until the writer has run the write. Not for async threads: `.await` there.
    pub fn wait(self) -> Result<T, StoreError> {
        self.0
            .blocking_recv()
            .unwrap_or(Err(StoreError::WriterGone))
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::WriterGone)))
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
        let (tx, rx) = oneshot::channel();
        let op: WriteOp = Box::new(move |conn| {
            // The caller may have stopped waiting; the write stands either way.
            let _ = tx.send(f(conn));
        });
        if let Some(writer) = &self.writer {
            // A send fails only when the writer thread is gone: the dropped reply says so.
            let _ = writer.send(op);
        }
        Reply(rx)
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
