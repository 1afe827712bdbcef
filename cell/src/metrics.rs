//! The cell's metrics. Labels are bounded: no function or sandbox ID is ever a label.

use std::time::Duration;

/// Counter: sandbox creations asked of workers, by outcome (`ok`, `error`).
pub const CREATIONS: &str = "baton_cell_sandbox_creations_total";
/// Histogram: time of one autoscaling round (all functions) or one urgent decision.
pub const DECISION_SECONDS: &str = "baton_cell_control_decision_seconds";
/// Gauge: sandboxes ready, summed over functions.
pub const SANDBOXES_READY: &str = "baton_cell_sandboxes_ready";
/// Gauge: sandboxes the autoscalers want, summed over functions.
pub const SANDBOXES_DESIRED: &str = "baton_cell_sandboxes_desired";
/// Gauge: worker nodes by state (`healthy`, `down`).
pub const WORKERS: &str = "baton_cell_workers";

/// Records a creation's outcome.
pub fn creation(ok: bool) {
    metrics::counter!(CREATIONS, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// Records a decision's duration.
pub fn decision(took: Duration) {
    metrics::histogram!(DECISION_SECONDS).record(took.as_secs_f64());
}
