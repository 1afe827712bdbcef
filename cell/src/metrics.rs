//! The cell's metrics. Labels are bounded: no function or sandbox ID is ever a label.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};

use baton_service::catalog::{Kind, Metric};

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

/// Gauge, rendered at each scrape (not kept in the recorder, so a function that leaves the
/// top leaves no series behind): sandboxes desired, ready and creating for each of the
/// `control_plane.top_functions` functions with the most.
pub const FUNCTION_SANDBOXES: &str = "baton_cell_function_sandboxes";

/// The [`FUNCTION_SANDBOXES`] family in Prometheus's text format, for `rows` (a function's
/// name in this cell, `tenant.name`, and its counts). Empty when there are none.
pub fn render_function_sandboxes(rows: &[(String, crate::control_plane::Scale)]) -> String {
    use std::fmt::Write;
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# HELP {FUNCTION_SANDBOXES} {}\n# TYPE {FUNCTION_SANDBOXES} gauge\n",
        CATALOG.iter().find(|m| m.name == FUNCTION_SANDBOXES).map_or("", |m| m.help)
    );
    for (name, scale) in rows {
        // Names are validated at deployment; escaped anyway, as the format asks.
        let name = name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        for (state, n) in [("desired", scale.desired), ("ready", scale.ready), ("creating", scale.creating)] {
            let _ = writeln!(out, "{FUNCTION_SANDBOXES}{{function=\"{name}\",state=\"{state}\"}} {n}");
        }
    }
    out
}

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

/// Gauge: CPU of the healthy workers, thousandths of a core, offered or allocated to
/// sandboxes.
pub const CAPACITY_CPU: &str = "baton_cell_capacity_cpu_millis";
/// Gauge: memory of the healthy workers, bytes, offered or allocated to sandboxes.
pub const CAPACITY_MEMORY: &str = "baton_cell_capacity_memory_bytes";
/// Gauge: sandbox slots of the healthy workers (their `max_sandboxes`), offered or taken.
pub const CAPACITY_SANDBOXES: &str = "baton_cell_capacity_sandboxes";

/// An amount offered by the healthy workers and how much of it sandboxes hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Offered.
    pub offered: u64,
    /// Allocated.
    pub allocated: u64,
}

/// The cell's scale and membership, as its gauges show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sandboxes ready.
    pub ready: u32,
    /// Sandboxes the autoscalers want.
    pub desired: u32,
    /// Healthy workers.
    pub healthy: u32,
    /// Workers down.
    pub down: u32,
    /// CPU of the healthy workers, thousandths of a core.
    pub cpu_millis: Share,
    /// Memory of the healthy workers, MiB.
    pub memory_mib: Share,
    /// Sandbox slots of the healthy workers.
    pub sandboxes: Share,
}

/// Publishes the scale, membership and capacity gauges.
pub fn totals(t: Totals) {
    metrics::gauge!(SANDBOXES_READY).set(f64::from(t.ready));
    metrics::gauge!(SANDBOXES_DESIRED).set(f64::from(t.desired));
    metrics::gauge!(WORKERS, "state" => "healthy").set(f64::from(t.healthy));
    metrics::gauge!(WORKERS, "state" => "down").set(f64::from(t.down));
    let mib = 1024.0 * 1024.0;
    for (name, share, scale) in [
        (CAPACITY_CPU, t.cpu_millis, 1.0),
        (CAPACITY_MEMORY, t.memory_mib, mib),
        (CAPACITY_SANDBOXES, t.sandboxes, 1.0),
    ] {
        metrics::gauge!(name, "kind" => "offered").set(share.offered as f64 * scale);
        metrics::gauge!(name, "kind" => "allocated").set(share.allocated as f64 * scale);
    }
}

/// Records a decision's duration.
pub fn decision(took: Duration) {
    metrics::histogram!(DECISION_SECONDS).record(took.as_secs_f64());
}

/// Counter: invocations by outcome ([`INVOCATION_OUTCOMES`]).
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

/// The `outcome` values of [`INVOCATIONS`].
pub const INVOCATION_OUTCOMES: [&str; 9] = [
    "ok",
    "not_found",
    "misdirected",
    "too_large",
    "queue_full",
    "timeout",
    "sandbox_error",
    "client_error",
    "server_error",
];

/// The handles of the series every call updates, made on first use: building a series'
/// key and finding it in the recorder's registry on each call cost more than recording
/// (callgrind, docs/BENCHMARKS.md).
static INVOCATION_COUNTERS: [OnceLock<Counter>; 9] = [const { OnceLock::new() }; 9];
static INVOCATION_HISTOGRAM: OnceLock<Histogram> = OnceLock::new();

/// Records one invocation; `outcome` is one of [`INVOCATION_OUTCOMES`].
pub fn invocation(outcome: &'static str, took: Duration) {
    match INVOCATION_OUTCOMES.iter().position(|o| *o == outcome) {
        Some(at) => INVOCATION_COUNTERS[at]
            .get_or_init(|| metrics::counter!(INVOCATIONS, "outcome" => INVOCATION_OUTCOMES[at]))
            .increment(1),
        None => metrics::counter!(INVOCATIONS, "outcome" => outcome).increment(1),
    }
    INVOCATION_HISTOGRAM.get_or_init(|| metrics::histogram!(INVOCATION_SECONDS)).record(took.as_secs_f64());
}

/// Histogram: how long a call waited in the data plane's queue, by why: `cold` (for a
/// sandbox created after it arrived: a cold start's wait) or `busy` (behind busy sandboxes).
pub const QUEUE_SECONDS: &str = "baton_cell_queue_seconds";

/// Records one cold start.
pub fn cold_start() {
    metrics::counter!(COLD_STARTS).increment(1);
}

/// Records one call that queued for `wait`, `cold` when it waited for a new sandbox.
pub fn queued(wait: Duration, cold: bool) {
    metrics::counter!(QUEUED).increment(1);
    metrics::histogram!(QUEUE_SECONDS, "wait" => if cold { "cold" } else { "busy" }).record(wait.as_secs_f64());
}

/// Every metric a cell process exports: the control plane's and the data plane's (a
/// process running only a data plane exports the data plane's).
pub const CATALOG: &[Metric] = &[
    Metric {
        name: FUNCTION_SANDBOXES,
        kind: Kind::Gauge,
        labels: &[
            "function: one of the control_plane.top_functions (20) functions with the most sandboxes desired or held, as tenant.name",
            "state: desired, ready, creating",
        ],
        help: "Sandboxes desired, ready and creating for the cell's busiest functions (rendered at each scrape).",
    },
    Metric {
        name: CREATIONS,
        kind: Kind::Counter,
        labels: &["outcome: ok, error"],
        help: "Sandbox creations the control plane asked of workers, by outcome.",
    },
    Metric {
        name: DECISION_SECONDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Time of one autoscaling round over all functions, or of one urgent decision.",
    },
    Metric { name: SANDBOXES_READY, kind: Kind::Gauge, labels: &[], help: "Sandboxes ready, summed over functions." },
    Metric {
        name: SANDBOXES_DESIRED,
        kind: Kind::Gauge,
        labels: &[],
        help: "Sandboxes the autoscalers want, summed over functions.",
    },
    Metric { name: WORKERS, kind: Kind::Gauge, labels: &["state: healthy, down"], help: "Worker nodes by state." },
    Metric {
        name: STORE_WRITES,
        kind: Kind::Counter,
        labels: &["kind: functions, workers, data_planes"],
        help: "Writes to the cell's store, by kind; never one on the invocation path.",
    },
    Metric {
        name: ROUTING_VERSION,
        kind: Kind::Gauge,
        labels: &[],
        help: "Version of the control plane's routing table (one step per change of any function's routing).",
    },
    Metric {
        name: DATA_PLANE_ROUTING_VERSION,
        kind: Kind::Gauge,
        labels: &[],
        help: "Routing version this data plane has applied; behind the control plane's while changes travel.",
    },
    Metric {
        name: PREPULLS,
        kind: Kind::Counter,
        labels: &["outcome: pulled, cached, failed"],
        help: "Image pre-pulls the control plane asked of workers, by outcome.",
    },
    Metric {
        name: INVOCATIONS,
        kind: Kind::Counter,
        labels: &["outcome: ok, not_found, misdirected, too_large, queue_full, timeout, sandbox_error, client_error, \
             server_error"],
        help: "Calls the data plane answered, by outcome.",
    },
    Metric {
        name: INVOCATION_SECONDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Time from a call's arrival at the data plane to its answer.",
    },
    Metric {
        name: COLD_STARTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Calls that waited for a sandbox created after they arrived (cold starts).",
    },
    Metric {
        name: QUEUED,
        kind: Kind::Counter,
        labels: &[],
        help: "Calls that waited in a queue at all (cold starts, and calls behind busy sandboxes).",
    },
    Metric {
        name: QUEUE_SECONDS,
        kind: Kind::Histogram,
        labels: &["wait: cold, busy"],
        help: "Time a call waited in the data plane's queue: for a new sandbox (a cold start) or behind busy ones.",
    },
    Metric {
        name: CAPACITY_CPU,
        kind: Kind::Gauge,
        labels: &["kind: offered, allocated"],
        help: "CPU of the healthy workers in thousandths of a core: offered, and allocated to sandboxes.",
    },
    Metric {
        name: CAPACITY_MEMORY,
        kind: Kind::Gauge,
        labels: &["kind: offered, allocated"],
        help: "Memory of the healthy workers in bytes: offered, and allocated to sandboxes.",
    },
    Metric {
        name: CAPACITY_SANDBOXES,
        kind: Kind::Gauge,
        labels: &["kind: offered, allocated"],
        help: "Sandbox slots of the healthy workers (their max_sandboxes): offered, and taken.",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        labels: &[],
        help: "Calls queued in the data plane, over all functions.",
    },
    Metric {
        name: IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &[],
        help: "Calls in flight in the data plane, over all functions.",
    },
];
