//! The queue's contract, which both stores keep:
//!
//! - [`CallStore::accept`] returns only once the call is durably stored and queued.
//! - [`CallStore::take`] leases queued calls that are due to this router; a lease lapses
//!   when not extended within `async.lease` (its router died), and the call is then taken
//!   again (by any router sharing the store).
//! - Every write under a lease ([`CallStore::update`], [`CallStore::settle`]) is fenced:
//!   it happens only while the lease is still this router's, else it returns `false` and
//!   changes nothing. So a router that lost a lease cannot overwrite what the new holder
//!   records, and a call is never settled twice.
//! - A call leaves the queue only in [`CallStore::settle`], in the same atomic write that
//!   records its outcome.

use bytes::Bytes;

use super::record::CallRecord;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or could not be reached.
    #[error("the async queue's Redis: {0}")]
    Redis(String),
    /// The embedded store failed.
    #[error("the async queue's file {path}: {message}")]
    Embedded {
        /// Its file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be read.
    #[error("the stored call {id} is unreadable: {message}")]
    Corrupt {
        /// The call.
        id: String,
        /// Why.
        message: String,
    },
}

/// A call leased to this router.
#[derive(Debug, Clone)]
pub struct Taken {
    /// What names the lease to the store.
    pub lease: String,
    /// The call as stored.
    pub record: CallRecord,
    /// Its request body.
    pub body: Bytes,
}

/// What happens to a call when its lease is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It ended (`succeeded` or `failed`): kept this many seconds for `GET /v1/calls`.
    Done {
        /// Retention, seconds.
        keep_secs: u64,
    },
    /// It is dead: into its function's dead letters, kept (with its request) this long.
    Dead {
        /// Retention, seconds.
        keep_secs: u64,
    },
    /// It goes back to the queue, due at this time (Unix ms).
    Later {
        /// When it may be taken again.
        due_ms: u64,
    },
}

/// How deep the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Calls not ended (queued, waiting for a retry, or running).
    pub pending: u64,
    /// Calls waiting for a retry or a free slot.
    pub delayed: u64,
    /// Accepted time of the oldest call not ended, Unix ms (0: none).
    pub oldest_ms: u64,
}

/// A durable queue of async calls with their records and dead letters.
#[async_trait::async_trait]
pub trait CallStore: Send + Sync {
    /// Stores `record` (queued) with its request `body` and queues it.
    async fn accept(&self, record: &CallRecord, body: &Bytes) -> Result<(), StoreError>;

    /// Up to `max` calls that are due, leased to this router: calls whose lease lapsed
    /// first, then queued ones (waiting up to about 200 ms for one when none is due).
    async fn take(&self, max: usize) -> Result<Vec<Taken>, StoreError>;

    /// Keeps `leases` alive; answers those no longer this router's.
    async fn extend(&self, leases: &[String]) -> Result<Vec<String>, StoreError>;

    /// Writes `record` under `lease` (a try starts); `false` if the lease was lost.
    async fn update(&self, lease: &str, record: &CallRecord) -> Result<bool, StoreError>;

    /// Writes `record` and gives the lease back, the call going where `next` says, in one
    /// atomic write; `false` (and nothing written) if the lease was lost.
    async fn settle(&self, lease: &str, record: &CallRecord, next: Next) -> Result<bool, StoreError>;

    /// Moves calls whose retry is due back into the queue; how many.
    async fn promote(&self, now_ms: u64) -> Result<u64, StoreError>;

    /// The call `id`, if stored.
    async fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError>;

    /// Up to `limit` of `function_key`'s dead letters, oldest first, with their bodies.
    async fn dead_letters(&self, function_key: &str, limit: usize) -> Result<Vec<(CallRecord, Bytes)>, StoreError>;

    /// Queues `function_key`'s dead letters again, as new calls (no tries, accepted now);
    /// how many.
    async fn redrive(&self, function_key: &str, now_ms: u64) -> Result<u64, StoreError>;

    /// Deletes `function_key`'s dead letters; how many.
    async fn purge(&self, function_key: &str) -> Result<u64, StoreError>;

    /// How deep the queue is.
    async fn depth(&self) -> Result<Depth, StoreError>;
}

/// A dead letter as queued again by a redrive: no tries, accepted `now_ms`, no outcome.
pub fn redriven(mut record: CallRecord, now_ms: u64) -> CallRecord {
    record.state = super::State::Queued;
    record.attempts = 0;
    record.accepted_ms = now_ms;
    record.updated_ms = now_ms;
    record.ended_ms = None;
    record.last_error = None;
    record.dead_reason = None;
    record.result = None;
    record.callback_attempts = 0;
    record.callback_done = false;
    record.callback_error = None;
    record
}
