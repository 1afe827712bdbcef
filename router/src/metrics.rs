//! The router's metrics. Labels are bounded: a fixed route and outcome set, never a
//! function or tenant name.

use std::time::{Duration, Instant};

use crate::config::MetricsSection;
use crate::top::{OTHER, TopKeys};

use baton_service::catalog::{Kind, Metric};

/// What an answer's status says of a request.
fn outcome(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        401 => "unauthorized",
        404 => "not_found",
        429 => "throttled",
        400..=499 => "client_error",
        502..=504 => "upstream_error",
        _ => "server_error",
    }
}

/// Counts a request and records its duration.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    let outcome = outcome(status);
    metrics::counter!("baton_router_requests_total", "route" => route, "outcome" => outcome).increment(1);
    metrics::histogram!("baton_router_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
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

/// Counter: calls by tenant (the `metrics.top_tenants` most calling, or `other`) and outcome.
pub const TENANT_CALLS: &str = "baton_router_tenant_calls_total";
/// Histogram: call latency by tenant (as [`TENANT_CALLS`]).
pub const TENANT_CALL_SECONDS: &str = "baton_router_tenant_call_duration_seconds";
/// Counter: calls by function (the `metrics.top_functions` most called, with their tenant,
/// or `other`).
pub const FUNCTION_CALLS: &str = "baton_router_function_calls_total";

/// Which tenants and functions have series of their own.
struct Tops {
    tenants: TopKeys,
    functions: TopKeys,
    /// `metrics.enabled`: off, calls are not even ranked.
    enabled: bool,
}

static TOPS: std::sync::OnceLock<Tops> = std::sync::OnceLock::new();

fn tops() -> &'static Tops {
    TOPS.get_or_init(|| tops_of(&MetricsSection::default()))
}

fn tops_of(section: &MetricsSection) -> Tops {
    let now = Instant::now();
    Tops {
        tenants: TopKeys::new(section.top_tenants, section.top_window, now),
        functions: TopKeys::new(section.top_functions, section.top_window, now),
        enabled: section.enabled,
    }
}

/// Sets how many tenants and functions get series of their own (once, at start; later
/// calls change nothing).
pub fn configure(section: &MetricsSection) {
    let _ = TOPS.set(tops_of(section));
}

/// Counts a call of `tenant`'s function `function` answered `status` after `elapsed`. A
/// function the router does not know (404) counts for its tenant only: names a caller
/// makes up never become labels.
pub fn tenant_call(tenant: &str, function: &str, status: u16, elapsed: Duration) {
    let tops = tops();
    if !tops.enabled {
        return;
    }
    let now = Instant::now();
    let tenant_label = if tops.tenants.call(tenant, now) { tenant.to_string() } else { OTHER.to_string() };
    metrics::counter!(TENANT_CALLS, "tenant" => tenant_label.clone(), "outcome" => outcome(status)).increment(1);
    metrics::histogram!(TENANT_CALL_SECONDS, "tenant" => tenant_label).record(elapsed.as_secs_f64());
    if status != 404 {
        let (tenant, function) =
            if tops.functions.call(&format!("{tenant}/{function}"), now) { (tenant, function) } else { (OTHER, OTHER) };
        metrics::counter!(FUNCTION_CALLS, "tenant" => tenant.to_string(), "function" => function.to_string())
            .increment(1);
    }
}

/// Every metric the router exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: "baton_router_requests_total",
        kind: Kind::Counter,
        labels: &[
            "route: invoke, functions, registries, other",
            "outcome: ok, unauthorized, not_found, throttled, client_error, upstream_error, server_error",
        ],
        help: "Requests the router answered, by route and outcome.",
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
