//! The shard manager's metrics. Labels are bounded: fixed outcome and state sets, never a
//! tenant, function or cell name. Each replica reports its own view: the state gauges of a
//! follower trail its leader's by what it has not applied yet.

use std::time::Duration;

use baton_service::catalog::{Kind, Metric};
use baton_shardmap::CellState;
use openraft::{BasicNode, RaftMetrics};

use crate::state::{FederationState, Outcome};

/// Counter: writes this replica took (its own and those its API received), by outcome
/// (`applied`, `rejected`: refused by the state, nothing changed; `error`: not committed,
/// e.g. no leader).
pub const WRITES: &str = "baton_shard_manager_writes_total";
/// Histogram: time from a write's arrival to its outcome, forwarding to the leader included.
pub const WRITE_SECONDS: &str = "baton_shard_manager_write_seconds";
/// Histogram: commands per raft entry the proposer hands to raft (1 for a lone write).
pub const ENTRY_COMMANDS: &str = "baton_shard_manager_entry_commands";
/// Gauge: the federation epoch this replica has applied.
pub const EPOCH: &str = "baton_shard_manager_epoch";
/// Gauge: tenants.
pub const TENANTS: &str = "baton_shard_manager_tenants";
/// Gauge: registered functions.
pub const FUNCTIONS: &str = "baton_shard_manager_functions";
/// Gauge: cells by state (`active`, `draining`, `down`).
pub const CELLS: &str = "baton_shard_manager_cells";
/// Gauge: 1 while this replica leads, else 0.
pub const IS_LEADER: &str = "baton_shard_manager_is_leader";
/// Gauge: this replica's raft term.
pub const RAFT_TERM: &str = "baton_shard_manager_raft_term";
/// Gauge: index of the last raft log entry this replica holds.
pub const RAFT_LOG_INDEX: &str = "baton_shard_manager_raft_log_index";
/// Gauge: index of the last raft log entry this replica has applied.
pub const RAFT_APPLIED_INDEX: &str = "baton_shard_manager_raft_applied_index";
/// Counter: cells this replica, as leader, marked down for silence.
pub const CELL_FAILOVERS: &str = "baton_shard_manager_cell_failovers_total";
/// Counter: functions given a new owner by failover.
pub const FAILOVER_REASSIGNMENTS: &str = "baton_shard_manager_failover_reassignments_total";
/// Counter: functions given a new owner because their live cell reported it could not
/// serve them (no worker, no room, creations failing).
pub const UNSERVABLE_REASSIGNMENTS: &str = "baton_shard_manager_unservable_reassignments_total";
/// Counter: graceful moves committed, by reason (`admin`: a MoveFunction call; `drain`:
/// off a draining cell; `balance`: from a cell above its region's mean, after a fill or a
/// new cell too).
pub const MOVES: &str = "baton_shard_manager_moves_total";
/// Gauge: open shard-map streams (routers and cell processes following this replica).
pub const MAP_FOLLOWERS: &str = "baton_shard_manager_map_followers";
/// Gauge: bytes of this replica's current raft snapshot (the whole federation state).
pub const SNAPSHOT_BYTES: &str = "baton_shard_manager_snapshot_bytes";
/// Counter: snapshots this replica stored, by source (`built` from its own state,
/// `installed` from the leader).
pub const SNAPSHOTS: &str = "baton_shard_manager_snapshots_total";

/// Records a snapshot of `bytes` stored (`source`: `built`, `installed`), or the one found
/// at start (`None`).
pub fn snapshot(source: Option<&'static str>, bytes: usize) {
    if let Some(source) = source {
        metrics::counter!(SNAPSHOTS, "source" => source).increment(1);
    }
    metrics::gauge!(SNAPSHOT_BYTES).set(bytes as f64);
}

/// Records a write's outcome and duration.
pub fn write<E>(result: &Result<Outcome, E>, took: Duration) {
    let outcome = match result {
        Ok(Outcome::Rejected(_)) => "rejected",
        Ok(_) => "applied",
        Err(_) => "error",
    };
    metrics::counter!(WRITES, "outcome" => outcome).increment(1);
    metrics::histogram!(WRITE_SECONDS).record(took.as_secs_f64());
}

/// Records one raft entry of `commands` commands.
pub fn entry(commands: usize) {
    metrics::histogram!(ENTRY_COMMANDS).record(commands as f64);
}

/// Publishes the state's gauges (after entries were applied or a snapshot installed).
pub fn state(state: &FederationState) {
    metrics::gauge!(EPOCH).set(state.epoch.0 as f64);
    metrics::gauge!(TENANTS).set(state.tenants.len() as f64);
    metrics::gauge!(FUNCTIONS).set(state.functions.len() as f64);
    let count = |wanted: CellState| state.cells.values().filter(|c| c.state == wanted).count() as f64;
    metrics::gauge!(CELLS, "state" => "active").set(count(CellState::Active));
    metrics::gauge!(CELLS, "state" => "draining").set(count(CellState::Draining));
    metrics::gauge!(CELLS, "state" => "down").set(count(CellState::Down));
}

/// Publishes this replica's raft role, term and log positions.
pub fn raft(metrics: &RaftMetrics<u64, BasicNode>) {
    let leads = metrics.current_leader == Some(metrics.id);
    metrics::gauge!(IS_LEADER).set(if leads { 1.0 } else { 0.0 });
    metrics::gauge!(RAFT_TERM).set(metrics.current_term as f64);
    metrics::gauge!(RAFT_LOG_INDEX).set(metrics.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_APPLIED_INDEX).set(metrics.last_applied.map_or(0, |l| l.index) as f64);
}

/// Records a cell marked down by failover.
pub fn cell_failover() {
    metrics::counter!(CELL_FAILOVERS).increment(1);
}

/// Records one function reassigned by failover.
pub fn failover_reassignment() {
    metrics::counter!(FAILOVER_REASSIGNMENTS).increment(1);
}

/// Records one function moved off a cell that could not serve it.
pub fn unservable_reassignment() {
    metrics::counter!(UNSERVABLE_REASSIGNMENTS).increment(1);
}

/// Records one committed graceful move, for `reason` (`admin`, `drain`, `balance`).
pub fn moved(reason: &'static str) {
    metrics::counter!(MOVES, "reason" => reason).increment(1);
}

/// An open shard-map stream, counted until dropped.
pub struct MapFollower(());

/// Counts a new shard-map stream while the returned guard lives.
pub fn map_follower() -> MapFollower {
    metrics::gauge!(MAP_FOLLOWERS).increment(1.0);
    MapFollower(())
}

impl Drop for MapFollower {
    fn drop(&mut self) {
        metrics::gauge!(MAP_FOLLOWERS).decrement(1.0);
    }
}

/// Every metric a shard-manager replica exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: WRITES,
        kind: Kind::Counter,
        labels: &["outcome: applied, rejected, error"],
        help: "Writes this replica took (its own and those its API received), by outcome.",
    },
    Metric {
        name: WRITE_SECONDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Time from a write's arrival to its outcome, forwarding to the leader included.",
    },
    Metric {
        name: ENTRY_COMMANDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Commands per raft entry the proposer hands to raft (1 for a lone write).",
    },
    Metric { name: EPOCH, kind: Kind::Gauge, labels: &[], help: "The federation epoch this replica has applied." },
    Metric { name: TENANTS, kind: Kind::Gauge, labels: &[], help: "Tenants, as this replica has applied them." },
    Metric {
        name: FUNCTIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Registered functions, as this replica has applied them.",
    },
    Metric { name: CELLS, kind: Kind::Gauge, labels: &["state: active, draining, down"], help: "Cells by state." },
    Metric { name: IS_LEADER, kind: Kind::Gauge, labels: &[], help: "1 while this replica leads, else 0." },
    Metric { name: RAFT_TERM, kind: Kind::Gauge, labels: &[], help: "This replica's raft term." },
    Metric {
        name: RAFT_LOG_INDEX,
        kind: Kind::Gauge,
        labels: &[],
        help: "Index of the last raft log entry this replica holds.",
    },
    Metric {
        name: RAFT_APPLIED_INDEX,
        kind: Kind::Gauge,
        labels: &[],
        help: "Index of the last raft log entry this replica has applied.",
    },
    Metric {
        name: CELL_FAILOVERS,
        kind: Kind::Counter,
        labels: &[],
        help: "Cells this replica, as leader, marked down for silence.",
    },
    Metric {
        name: FAILOVER_REASSIGNMENTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Functions given a new owner by failover.",
    },
    Metric {
        name: UNSERVABLE_REASSIGNMENTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Functions given a new owner because their live cell reported it could not serve them.",
    },
    Metric {
        name: MOVES,
        kind: Kind::Counter,
        labels: &["reason: admin, drain, balance"],
        help: "Graceful moves committed, by reason.",
    },
    Metric {
        name: MAP_FOLLOWERS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Open shard-map streams (routers and cell processes following this replica).",
    },
    Metric {
        name: SNAPSHOT_BYTES,
        kind: Kind::Gauge,
        labels: &[],
        help: "Bytes of this replica's current raft snapshot (0 until its first).",
    },
    Metric {
        name: SNAPSHOTS,
        kind: Kind::Counter,
        labels: &["source: built, installed"],
        help: "Raft snapshots this replica stored: built from its own state, or installed from the leader.",
    },
];
