//! The store as the server uses it: `porthawk-store`, whose sweep rows carry the server's
//! request type.

pub use porthawk_store::{now_ms, NewResult, Progress, ResultRow, Store, StoreHealth};

/// A stored sweep with its request.
pub type SweepRow = porthawk_store::SweepRow<crate::sweep::SweepRequest>;
