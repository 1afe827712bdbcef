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

/// Counter: writes to the cell's store, by kind (`functions`, `workers`, `data_planes`).
/// Never incremented on the invocation path.
pub const STORE_WRITES: &str = "baton_cell_store_writes_total";

/// Gauge: the version of the control plane's routing table (one step per change of any
/// function's routing).
pub const ROUTING_VERSION: &str = "baton_cell_routing_version";
/// Gauge: the routing version this data plane has applied; behind
/// [`ROUTING_VERSION`] while changes are on their way, or while the control plane is
/// unreachable.
pub const DATA_PLANE_ROUTING_VERSION: &str = "baton_cell_data_plane_routing_version";

/// Records a creation's outcome.
pub fn creation(ok: bool) {
    metrics::counter!(CREATIONS, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// Counter: image pre-pulls asked of workers, by outcome (pulled, cached, failed).
pub const PREPULLS: &str = "baton_cell_image_prepulls_total";

/// Records one pre-pull's outcome.
pub fn prepull(outcome: &'static str) {
    metrics::counter!(PREPULLS, "outcome" => outcome).increment(1);
}

/// Publishes the scale and membership gauges.
pub fn totals((ready, desired, healthy, down): (u32, u32, u32, u32)) {
    metrics::gauge!(SANDBOXES_READY).set(f64::from(ready));
    metrics::gauge!(SANDBOXES_DESIRED).set(f64::from(desired));
    metrics::gauge!(WORKERS, "state" => "healthy").set(f64::from(healthy));
    metrics::gauge!(WORKERS, "state" => "down").set(f64::from(down));
}

/// Records a decision's duration.
pub fn decision(took: Duration) {
    metrics::histogram!(DECISION_SECONDS).record(took.as_secs_f64());
}

/// Counter: invocations by outcome (`ok`, `not_found`, `too_large`, `queue_full`,
/// `timeout`, `sandbox_error`, `client_error`, `server_error`).
pub const INVOCATIONS: &str = "baton_cell_invocations_total";
/// Histogram: invocation latency through the data plane.
pub const INVOCATION_SECONDS: &str = "baton_cell_invocation_seconds";
/// Counter: requests that waited for a sandbox created after they arrived (cold starts).
pub const COLD_STARTS: &str = "baton_cell_cold_starts_total";
/// Counter: requests that waited in a queue at all (cold starts, and calls queued behind
/// busy sandboxes).
pub const QUEUED: &str = "baton_cell_queued_calls_total";
/// Gauge: requests queued in the data plane, over all functions.
pub const QUEUE_DEPTH: &str = "baton_cell_queue_depth";
/// Gauge: requests in flight in the data plane, over all functions.
pub const IN_FLIGHT: &str = "baton_cell_in_flight";

/// Records one invocation.
pub fn invocation(outcome: &'static str, took: Duration) {
    metrics::counter!(INVOCATIONS, "outcome" => outcome).increment(1);
    metrics::histogram!(INVOCATION_SECONDS).record(took.as_secs_f64());
}

/// Records one cold start.
pub fn cold_start() {
    metrics::counter!(COLD_STARTS).increment(1);
}

/// Records one call that queued.
pub fn queued() {
    metrics::counter!(QUEUED).increment(1);
}
