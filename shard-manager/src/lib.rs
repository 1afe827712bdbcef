//! The federation's shard manager: cell membership, failover and rebalancing over a
//! raft-replicated federation state. So far: the state and its commands, the durable raft
//! storage, and the pure rebalancing planner; the service and its network follow (issue 4).

pub mod planner;
pub mod raft;
pub mod state;
