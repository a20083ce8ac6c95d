//! The database file's watcher: the `porthawk-store-watch` thread sleeps in inotify on the
//! data directory and, when an entry named like the database is deleted, moved or created
//! there (or the directory itself is deleted or moved), looks at the store's health and logs
//! a change once. So a deleted database is logged when it happens, even when nothing is
//! written, and an idle server does not look at the file on a timer. The writer still checks
//! before each write, and `/healthz` and new sweeps at each request, so a watch that cannot
//! be set up (no inotify) only loses the log line's timeliness.

use std::sync::Arc;

use rustix::fs::inotify::WatchFlags;

use crate::fs_watch::WatchThread;
use crate::shared::Shared;
use crate::store::StoreHealth;

/// The database's file name in the data directory (`porthawk-store` opens it there).
const DB_FILE: &[u8] = b"porthawk.db";

/// Starts watching `shared`'s data directory on the `porthawk-store-watch` thread (stopped
/// and joined when the result is dropped); `None` (logged) when inotify cannot watch it.
pub(crate) fn start(shared: Arc<Shared>) -> Option<WatchThread> {
    let dir = shared.config.data_dir.clone();
    let flags = WatchFlags::DELETE
        | WatchFlags::MOVE
        | WatchFlags::CREATE
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF;
    let mut health = shared.store.health();
    let on_events = move |_| {
        let now = shared.store.health();
        if now != health {
            log_change(&now);
            health = now;
        }
    };
    let wanted = |name: &std::ffi::CStr| name.to_bytes() == DB_FILE;
    match WatchThread::spawn("porthawk-store-watch", &dir, flags, wanted, on_events) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch the data directory: a deleted database is noticed at the next \
                 write or /healthz request only"
            );
            None
        }
    }
}

fn log_change(health: &StoreHealth) {
    if health.is_ok() {
        tracing::info!("the store is healthy again");
    } else {
        tracing::error!("the store is unhealthy: {health}");
    }
}
