//! baton's gRPC contracts (one module per `.proto` package) and the ID newtypes they carry.
#![deny(unsafe_code)]

pub mod ids;

/// Generated code, nested as the `.proto` packages are (see `build.rs`).
#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/packages.rs"));
}

/// The Worker service and the sandbox types it speaks in (`baton.worker.v1`).
pub use generated::baton::worker::v1 as worker;

/// The CellControl service, the part workers call (`baton.cell.v1`).
pub use generated::baton::cell::v1 as cell;

/// The raft transport between shard-manager replicas (`baton.raft.v1`).
pub use generated::baton::raft::v1 as raft;

/// The ShardManager service: cells, tenants, functions and the shard-map stream
/// (`baton.shard.v1`).
pub use generated::baton::shard::v1 as shard;

pub use ids::{IdError, MAX_ID_LEN, NodeId, SandboxId};

/// Largest gRPC message baton's services take and its clients accept. tonic's default of
/// 4 MiB is far below what a large federation sends: a shard-map snapshot of 100,000
/// functions is about 7 MB, a cell's list of its functions with their specs more, and a
/// raft snapshot chunk travels as JSON. Every server and client of the shard-map,
/// catalog, raft and cell-routing streams sets this limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
