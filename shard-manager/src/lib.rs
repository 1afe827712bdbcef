//! The federation's shard manager: cell membership, failover and rebalancing over a
//! raft-replicated federation state. So far: the state and its commands, durable raft
//! storage and the gRPC transport, and the pure failover and rebalancing decisions; the
//! service and binary follow (issue 4).

pub mod config;
pub mod daemon;
pub mod failover;
pub mod planner;
pub mod raft;
pub mod service;
pub mod state;
