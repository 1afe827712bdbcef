//! The router's metrics. Labels are bounded: a fixed route and outcome set, never a
//! function or tenant name.

use std::time::Duration;

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
