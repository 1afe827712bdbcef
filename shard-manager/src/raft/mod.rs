//! The raft side of the shard manager: the type configuration and a durable log store and
//! state machine on redb. The network client and the raft gRPC service live apart from
//! the application's own service.
//!
//! Durability: the log, the vote and the committed index are written with redb's
//! immediate durability (fsync) before openraft is told they are. The state machine lives
//! in memory and persists its snapshots; after a restart openraft rebuilds it from the
//! last snapshot plus the committed log.

mod log_store;
pub mod network;
mod proposer;
mod state_machine;

use std::io::Cursor;

pub use log_store::LogStore;
pub use proposer::{ProposeError, Proposer};
pub use state_machine::StateMachine;

use crate::state::{Command, Outcome};

openraft::declare_raft_types!(
    /// baton's raft types: commands in, outcomes out, `u64` node IDs.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A storage failure as openraft wants it.
pub type StorageError = openraft::StorageError<u64>;

/// The raft database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct OpenError {
    /// The database file.
    pub path: std::path::PathBuf,
    /// Why.
    pub message: String,
}

/// Opens (or creates) the redb file at `path` with the shard manager's tables, and the
/// log store and state machine on it. One process at a time may hold it.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachine), OpenError> {
    let fail = |message: String| OpenError { path: path.to_path_buf(), message };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(format!("creating its folder: {e}")))?;
    }
    let db = std::sync::Arc::new(redb::Database::create(path).map_err(|e| fail(e.to_string()))?);
    let log = LogStore::new(db.clone()).map_err(fail)?;
    let sm = StateMachine::new(db).map_err(fail)?;
    Ok((log, sm))
}
