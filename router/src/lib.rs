//! `baton-router`: the federation's front door. It follows the shard map from the shard
//! manager, authenticates tenants by API key (hashes in the map), serves the tenant API
//! (`/v1/functions`) through the shard manager, and proxies invocations
//! (`/function/{name}`) to the owning cell's data plane, retrying once at the owner a
//! `421` names; async calls (`/async-function/{name}`) are queued durably and delivered
//! by every router's delivery loop (docs/async.md). See `docs/router.md`.

pub mod api;
pub mod auth;
pub mod calls;
pub mod config;
pub mod context;
pub mod daemon;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod proxy;
pub mod registries;
pub mod server;
pub mod top;
