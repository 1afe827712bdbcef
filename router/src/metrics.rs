//! The router's metrics. Labels are bounded: a fixed route and outcome set, never a
//! function or tenant name.

use std::time::Duration;

use baton_service::catalog::{Kind, Metric};

/// Counts a request and records its duration.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    let outcome = match status {
        200..=399 => "ok",
        401 => "unauthorized",
        404 => "not_found",
        400..=499 => "client_error",
        502..=504 => "upstream_error",
        _ => "server_error",
    };
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

/// Every metric the router exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: "baton_router_requests_total",
        kind: Kind::Counter,
        labels: &[
            "route: invoke, functions, registries, other",
            "outcome: ok, unauthorized, not_found, client_error, upstream_error, server_error",
        ],
        help: "Requests the router answered, by route and outcome.",
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
