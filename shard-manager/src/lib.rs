//! The federation's shard manager: tenants, API keys, the function catalog, cell
//! membership, failover and rebalancing over a raft-replicated federation state, served
//! over gRPC (the ShardManager API and the shard-map stream) by `baton-shard-manager`.

pub mod access;
pub mod admission;
pub mod config;
pub mod daemon;
pub mod failover;
pub mod loads;
pub mod metrics;
pub mod planner;
pub mod raft;
pub mod secrets;
pub mod service;
pub mod state;
