//! The worker's metrics. Labels are bounded: `runtime` (3 values), `outcome` (the error
//! labels of [`crate::error::RuntimeError`] plus `ok`), `phase` (5), `reason` (5), `call` (3).
//! No sandbox or function ID is ever a label.

use std::time::Duration;

use baton_proto::cell::ExitReason;
use baton_service::catalog::{Kind, Metric};

use crate::runtime::CreationLatency;

/// Gauge: sandboxes held, by runtime.
pub const SANDBOXES: &str = "baton_worker_sandboxes";
/// Counter: creations by runtime and outcome.
pub const CREATIONS: &str = "baton_worker_sandbox_creations_total";
/// Histogram: creation latency by runtime and phase (image, cgroup, spawn, readiness, total).
pub const CREATION_SECONDS: &str = "baton_worker_sandbox_creation_seconds";
/// Counter: deletions by runtime and outcome (graceful, killed, not_found).
pub const DELETIONS: &str = "baton_worker_sandbox_deletions_total";
/// Counter: sandbox exits the worker did not ask for, by reason.
pub const EXITS: &str = "baton_worker_sandbox_exits_total";
/// Counter: failed calls to the control plane, by call.
pub const CONTROL_PLANE_ERRORS: &str = "baton_worker_control_plane_errors_total";
/// Gauge: nodes of this process currently registered with the control plane.
pub const NODES_REGISTERED: &str = "baton_worker_nodes_registered";

/// Records one creation's outcome and, on success, its phase latencies.
pub fn creation(runtime: &'static str, outcome: &'static str, latency: Option<&CreationLatency>) {
    metrics::counter!(CREATIONS, "runtime" => runtime, "outcome" => outcome).increment(1);
    if let Some(l) = latency {
        let phases: [(&'static str, Duration); 5] = [
            ("image", l.image),
            ("cgroup", l.cgroup),
            ("spawn", l.spawn),
            ("readiness", l.readiness),
            ("total", l.total),
        ];
        for (phase, d) in phases {
            metrics::histogram!(CREATION_SECONDS, "runtime" => runtime, "phase" => phase).record(d.as_secs_f64());
        }
    }
}

/// Counter: image pulls a node was asked for, by outcome (cached, pulled, failed).
pub const IMAGE_PULLS: &str = "baton_worker_image_pulls_total";
/// Histogram: how long an image pull (download and unpack) took.
pub const IMAGE_PULL_SECONDS: &str = "baton_worker_image_pull_seconds";

/// Records one image pull.
pub fn image_pull(outcome: &'static str, took: Option<Duration>) {
    metrics::counter!(IMAGE_PULLS, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        metrics::histogram!(IMAGE_PULL_SECONDS).record(took.as_secs_f64());
    }
}

/// Records one exit.
pub fn exit(reason: ExitReason) {
    let reason = match reason {
        ExitReason::Exited => "exited",
        ExitReason::Crashed => "crashed",
        ExitReason::OomKilled => "oom_killed",
        ExitReason::Killed => "killed",
        ExitReason::Unknown | ExitReason::Unspecified => "unknown",
    };
    metrics::counter!(EXITS, "reason" => reason).increment(1);
}

/// Records one deletion.
pub fn deletion(runtime: &'static str, outcome: &'static str) {
    metrics::counter!(DELETIONS, "runtime" => runtime, "outcome" => outcome).increment(1);
}

/// Publishes a node's sandbox count. A process may host thousands of emulated nodes and a
/// node ID is no label, so the gauge is the process's total, summed by [`SandboxCounter`].
pub fn gauge_sandboxes(runtime: &'static str, node: &baton_proto::NodeId, count: usize) {
    SandboxCounter::get().set(node.as_str(), count);
    metrics::gauge!(SANDBOXES, "runtime" => runtime).set(SandboxCounter::get().total() as f64);
}

/// Per-node sandbox counts of this process, summed into the `baton_worker_sandboxes` gauge.
pub struct SandboxCounter(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl SandboxCounter {
    fn get() -> &'static SandboxCounter {
        static COUNTER: std::sync::OnceLock<SandboxCounter> = std::sync::OnceLock::new();
        COUNTER.get_or_init(|| SandboxCounter(std::sync::Mutex::default()))
    }

    fn set(&self, node: &str, count: usize) {
        self.0.lock().expect("counter lock").insert(node.to_string(), count);
    }

    fn total(&self) -> usize {
        self.0.lock().expect("counter lock").values().sum()
    }
}

/// Every metric a worker exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: SANDBOXES,
        kind: Kind::Gauge,
        labels: &["runtime: process, emulated"],
        help: "Sandboxes this process holds (over all its nodes), by runtime.",
    },
    Metric {
        name: CREATIONS,
        kind: Kind::Counter,
        labels: &[
            "runtime: process, emulated",
            "outcome: ok, invalid, exists, not_found, exhausted, executable, readiness_timeout, exited, image, os_error",
        ],
        help: "Sandbox creations, by runtime and outcome.",
    },
    Metric {
        name: CREATION_SECONDS,
        kind: Kind::Histogram,
        labels: &["runtime: process, emulated", "phase: image, cgroup, spawn, readiness, total"],
        help: "Time of each phase of a successful creation, and its total, by runtime.",
    },
    Metric {
        name: DELETIONS,
        kind: Kind::Counter,
        labels: &["runtime: process, emulated", "outcome: graceful, killed, not_found, os_error"],
        help: "Sandbox deletions, by runtime and how the sandbox ended.",
    },
    Metric {
        name: EXITS,
        kind: Kind::Counter,
        labels: &["reason: exited, crashed, oom_killed, killed, unknown"],
        help: "Sandbox exits the worker did not ask for, by reason.",
    },
    Metric {
        name: CONTROL_PLANE_ERRORS,
        kind: Kind::Counter,
        labels: &["call: register, heartbeat, report_events"],
        help: "Failed calls to the cell's control plane, by call.",
    },
    Metric {
        name: NODES_REGISTERED,
        kind: Kind::Gauge,
        labels: &[],
        help: "Nodes of this process currently registered with the control plane.",
    },
    Metric {
        name: IMAGE_PULLS,
        kind: Kind::Counter,
        labels: &["outcome: cached, pulled, failed"],
        help: "Image pulls a node was asked for (pre-pulls and cold starts), by outcome.",
    },
    Metric {
        name: IMAGE_PULL_SECONDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Time of one image pull (download and unpack).",
    },
];
