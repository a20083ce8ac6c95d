//! The monitors' history records, as the store keeps them and the API shows them. The
//! tables, and every read and write of them, live in `porthawk-store`.

pub use porthawk_store::{uptime, ActionRecord, Change, EventRow, NoticeRecord};
