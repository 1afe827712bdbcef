//! Asynchronous calls (docs/async.md): a call accepted at `/async-function/{name}` is
//! stored durably before its `202`, then delivered by the routers' delivery loops through
//! the same path a synchronous call takes (so a cell that died, drained or gave the
//! function away is handled as for any call), tried again on the outcomes its function's
//! `async` policy names, and kept with its result for the operator's retention. Calls that
//! cannot be delivered go to their function's dead letters, with the reason.
//!
//! - [`record`]: what is stored of a call, and its states.
//! - [`store`]: the queue's contract; [`redis_store`] (Redis Streams, shared by every
//!   router) and [`embedded`] (a redb file, one router's own) keep it.
//! - [`decide`]: what an attempt's outcome makes of a call (pure).
//! - [`delivery`]: the loop that takes calls, runs attempts and keeps their leases.
//! - [`api`]: the tenant's endpoints.

pub mod api;
pub mod callback;
pub mod decide;
pub mod delivery;
pub mod embedded;
pub mod policies;
pub mod record;
pub mod redis_store;
pub mod store;

pub use record::{CallRecord, CallResult, DeadReason, State};
pub use store::{CallStore, Next, StoreError, Taken};

/// Milliseconds since the Unix epoch, the time every record keeps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
