//! The router's metrics. Labels are bounded: a fixed route and outcome set, never a
//! function or tenant name.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

use crate::config::MetricsSection;
use crate::top::{OTHER, Top};

use baton_service::catalog::{Kind, Metric};

/// What an answer's status says of a request.
fn outcome(status: u16) -> Outcome {
    match status {
        200..=399 => Outcome::Ok,
        401 => Outcome::Unauthorized,
        404 => Outcome::NotFound,
        429 => Outcome::Throttled,
        400..=499 => Outcome::ClientError,
        502..=504 => Outcome::UpstreamError,
        _ => Outcome::ServerError,
    }
}

/// The `outcome` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unauthorized,
    NotFound,
    Throttled,
    ClientError,
    UpstreamError,
    ServerError,
}

impl Outcome {
    const COUNT: usize = 7;

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unauthorized => "unauthorized",
            Outcome::NotFound => "not_found",
            Outcome::Throttled => "throttled",
            Outcome::ClientError => "client_error",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ServerError => "server_error",
        }
    }
}

/// The `route` label's values.
const ROUTES: [&str; 6] = ["invoke", "async", "calls", "functions", "registries", "other"];

/// The handles of one route's series, made on first use: building a series' key and
/// finding it in the recorder's registry cost more instructions than the rest of the
/// router's metrics together (callgrind, docs/BENCHMARKS.md).
struct Route {
    seconds: OnceLock<Histogram>,
    requests: [OnceLock<Counter>; Outcome::COUNT],
}

static ROUTE_HANDLES: [Route; ROUTES.len()] =
    [const { Route { seconds: OnceLock::new(), requests: [const { OnceLock::new() }; Outcome::COUNT] } }; ROUTES.len()];

/// Counts a request and records its duration.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    let at = ROUTES.iter().position(|r| *r == route).unwrap_or(ROUTES.len() - 1);
    let (route, handles) = (ROUTES[at], &ROUTE_HANDLES[at]);
    let outcome = outcome(status);
    handles.requests[outcome as usize]
        .get_or_init(
            || metrics::counter!("baton_router_requests_total", "route" => route, "outcome" => outcome.label()),
        )
        .increment(1);
    handles
        .seconds
        .get_or_init(|| metrics::histogram!("baton_router_request_duration_seconds", "route" => route))
        .record(elapsed.as_secs_f64());
}

/// The series of a tenant with a label of its own (or of `other`), made on first use.
#[derive(Default)]
struct TenantSeries {
    calls: [Option<Counter>; Outcome::COUNT],
    seconds: Option<Histogram>,
}

impl TenantSeries {
    fn record(&mut self, label: &str, outcome: Outcome, elapsed: Duration) {
        self.calls[outcome as usize]
            .get_or_insert_with(
                || metrics::counter!(TENANT_CALLS, "tenant" => label.to_string(), "outcome" => outcome.label()),
            )
            .increment(1);
        self.seconds
            .get_or_insert_with(|| metrics::histogram!(TENANT_CALL_SECONDS, "tenant" => label.to_string()))
            .record(elapsed.as_secs_f64());
    }
}

/// What the router keeps for its per-tenant and per-function series: which have labels
/// of their own, with their handles, and those of `other`.
struct Calls {
    top: Top<TenantSeries, Option<Counter>>,
    other: TenantSeries,
    other_function: Option<Counter>,
}

/// A call answered 421 by the cell the map named, retried at the owner it gave.
pub fn misdirected_retry() {
    metrics::counter!("baton_router_misdirected_retries_total").increment(1);
}

/// The shard-map epoch this router has applied.
pub fn map_epoch(epoch: u64) {
    metrics::gauge!("baton_router_map_epoch").set(epoch as f64);
}

/// A call whose owner could not be reached, resent to the new owner failover named.
pub fn failover_retry() {
    metrics::counter!("baton_router_failover_retries_total").increment(1);
}

/// An image reference resolved at registration, by outcome (`ok`, or the reason it did not).
pub fn image_resolution(outcome: &'static str) {
    metrics::counter!("baton_router_image_resolutions_total", "outcome" => outcome).increment(1);
}

/// An async call accepted (stored and queued).
pub fn async_accepted() {
    metrics::counter!("baton_router_async_calls_total", "event" => "accepted").increment(1);
}

/// What became of one try of an async call: `succeeded`, `failed` (final), `retried`
/// (queued again after an outcome its policy retries), `deferred` (its function's async
/// slots were taken), `undelivered` (no cell reached), `dead`, or `lease_lost`.
pub fn async_event(event: &'static str) {
    metrics::counter!("baton_router_async_calls_total", "event" => event).increment(1);
}

/// A callback try, by outcome (`delivered`, `failed`).
pub fn async_callback(outcome: &'static str) {
    metrics::counter!("baton_router_async_callbacks_total", "outcome" => outcome).increment(1);
}

/// An async call put in its function's dead letters, by reason.
pub fn async_dead(reason: &'static str) {
    metrics::counter!("baton_router_async_dead_letters_total", "reason" => reason).increment(1);
}

/// Time from an async call's acceptance to its end (succeeded, failed or dead).
pub fn async_completed(elapsed: Duration) {
    metrics::histogram!("baton_router_async_call_duration_seconds").record(elapsed.as_secs_f64());
}

/// The async queue's depth as this router last read it: calls not ended, those waiting
/// for a retry or a slot, and the age of the oldest in the queue.
pub fn async_depth(pending: u64, delayed: u64, oldest_age: Duration) {
    metrics::gauge!("baton_router_async_queue_depth").set(pending as f64);
    metrics::gauge!("baton_router_async_delayed_calls").set(delayed as f64);
    metrics::gauge!("baton_router_async_oldest_call_age_seconds").set(oldest_age.as_secs_f64());
}

/// Async tries running on this router now.
pub fn async_running(running: usize) {
    metrics::gauge!("baton_router_async_running_calls").set(running as f64);
}

/// The async queue could not be read or written.
pub fn async_store_error() {
    metrics::counter!("baton_router_async_store_errors_total").increment(1);
}

/// Counter: calls by tenant (the `metrics.top_tenants` most calling, or `other`) and outcome.
pub const TENANT_CALLS: &str = "baton_router_tenant_calls_total";
/// Histogram: call latency by tenant (as [`TENANT_CALLS`]).
pub const TENANT_CALL_SECONDS: &str = "baton_router_tenant_call_duration_seconds";
/// Counter: calls by function (the `metrics.top_functions` most called, with their tenant,
/// or `other`).
pub const FUNCTION_CALLS: &str = "baton_router_function_calls_total";

/// Which tenants and functions have series of their own, with their handles; `None`
/// when `metrics.enabled` is off (calls are not even ranked).
static CALLS: OnceLock<Option<Mutex<Calls>>> = OnceLock::new();

fn calls() -> Option<&'static Mutex<Calls>> {
    CALLS.get_or_init(|| calls_of(&MetricsSection::default())).as_ref()
}

fn calls_of(section: &MetricsSection) -> Option<Mutex<Calls>> {
    section.enabled.then(|| {
        Mutex::new(Calls {
            top: Top::new(section.top_tenants, section.top_functions, section.top_window, Instant::now()),
            other: TenantSeries::default(),
            other_function: None,
        })
    })
}

/// Sets how many tenants and functions get series of their own (once, at start; later
/// calls change nothing).
pub fn configure(section: &MetricsSection) {
    let _ = CALLS.set(calls_of(section));
}

/// Counts a call of `tenant`'s function `function` answered `status` after `elapsed`. A
/// function the router does not know (404) counts for its tenant only: names a caller
/// makes up never become labels.
pub fn tenant_call(tenant: &str, function: &str, status: u16, elapsed: Duration) {
    let Some(calls) = calls() else { return };
    let outcome = outcome(status);
    let mut calls = calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Calls { top, other, other_function } = &mut *calls;
    let (own, own_function) = top.call(tenant, (status != 404).then_some(function), Instant::now());
    match own {
        Some(series) => series.record(tenant, outcome, elapsed),
        None => other.record(OTHER, outcome, elapsed),
    }
    if status == 404 {
        return;
    }
    let counter = match own_function {
        // The function's series names its tenant, whether or not the tenant has its own.
        Some(counter) => counter.get_or_insert_with(
            || metrics::counter!(FUNCTION_CALLS, "tenant" => tenant.to_string(), "function" => function.to_string()),
        ),
        None => other_function
            .get_or_insert_with(|| metrics::counter!(FUNCTION_CALLS, "tenant" => OTHER, "function" => OTHER)),
    };
    counter.increment(1);
}

/// Every metric the router exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: "baton_router_requests_total",
        kind: Kind::Counter,
        labels: &[
            "route: invoke, async, calls, functions, registries, other",
            "outcome: ok, unauthorized, not_found, throttled, client_error, upstream_error, server_error",
        ],
        help: "Requests the router answered, by route and outcome.",
    },
    Metric {
        name: "baton_router_async_calls_total",
        kind: Kind::Counter,
        labels: &["event: accepted, succeeded, failed, retried, deferred, undelivered, dead, lease_lost"],
        help: "Async calls accepted, and what became of each try this router ran.",
    },
    Metric {
        name: "baton_router_async_callbacks_total",
        kind: Kind::Counter,
        labels: &["outcome: delivered, failed"],
        help: "Tries of ended async calls' callbacks, by outcome.",
    },
    Metric {
        name: "baton_router_async_dead_letters_total",
        kind: Kind::Counter,
        labels: &["reason: retries_exhausted, max_age_exceeded, function_deleted"],
        help: "Async calls this router put in their function's dead letters, by reason.",
    },
    Metric {
        name: "baton_router_async_call_duration_seconds",
        kind: Kind::Histogram,
        labels: &[],
        help: "Time from an async call's acceptance to its end (succeeded, failed or dead).",
    },
    Metric {
        name: "baton_router_async_queue_depth",
        kind: Kind::Gauge,
        labels: &[],
        help: "Async calls not yet ended in the queue this router uses (shared by all routers on one Redis).",
    },
    Metric {
        name: "baton_router_async_delayed_calls",
        kind: Kind::Gauge,
        labels: &[],
        help: "Async calls in the queue waiting for a retry's back-off or a free async slot.",
    },
    Metric {
        name: "baton_router_async_oldest_call_age_seconds",
        kind: Kind::Gauge,
        labels: &[],
        help: "Age of the oldest call waiting or running in the async queue.",
    },
    Metric {
        name: "baton_router_async_running_calls",
        kind: Kind::Gauge,
        labels: &[],
        help: "Async tries running on this router now.",
    },
    Metric {
        name: "baton_router_async_store_errors_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Reads and writes of the async queue that failed (Redis or the embedded file).",
    },
    Metric {
        name: TENANT_CALLS,
        kind: Kind::Counter,
        labels: &[
            "tenant: one of the metrics.top_tenants tenants with the most calls in the last window (20 by default), or other",
            "outcome: ok, unauthorized, not_found, throttled, client_error, upstream_error, server_error",
        ],
        help: "Calls by tenant and outcome.",
    },
    Metric {
        name: TENANT_CALL_SECONDS,
        kind: Kind::Histogram,
        labels: &["tenant: as for baton_router_tenant_calls_total"],
        help: "Time from a call's arrival at the router to its answer, by tenant.",
    },
    Metric {
        name: FUNCTION_CALLS,
        kind: Kind::Counter,
        labels: &[
            "tenant: the function's tenant, or other",
            "function: one of the metrics.top_functions functions with the most calls in the last window (50 by default), or other",
        ],
        help: "Calls by function, for the busiest functions; the rest together as other.",
    },
    Metric {
        name: "baton_router_request_duration_seconds",
        kind: Kind::Histogram,
        labels: &["route: invoke, functions, registries, other"],
        help: "Time from a request's arrival to its answer, by route.",
    },
    Metric {
        name: "baton_router_misdirected_retries_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Calls answered 421 by the cell the map named, retried at the owner it gave.",
    },
    Metric {
        name: "baton_router_failover_retries_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Calls whose owner could not be reached, resent to the owner failover named.",
    },
    Metric {
        name: "baton_router_map_epoch",
        kind: Kind::Gauge,
        labels: &[],
        help: "The shard-map epoch this router has applied.",
    },
    Metric {
        name: "baton_router_image_resolutions_total",
        kind: Kind::Counter,
        labels: &["outcome: ok, bad_reference, not_https, unreachable, unknown_repository, unknown_tag, \
             refused_credentials, not_linux_amd64, too_large, registry_error"],
        help: "Image references resolved at registration, by outcome.",
    },
];
