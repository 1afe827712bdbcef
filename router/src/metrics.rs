//! The router's metrics. Labels are bounded: a fixed route and outcome set, never a
//! function or tenant name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

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
    let (counter, histogram) = handles().request(route, outcome);
    counter.increment(1);
    histogram.record(elapsed.as_secs_f64());
}

/// The handles of the series a call updates, kept once made: building a series' key and
/// finding it in the recorder's registry cost more instructions than the rest of the
/// router's metrics together (callgrind, docs/BENCHMARKS.md). Bounded: the fixed
/// route and outcome sets, and the tenants and functions with series of their own.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, &'static str), (Counter, Histogram)>,
    tenants: HashMap<String, Tenant>,
}

#[derive(Default)]
struct Tenant {
    calls: Vec<(&'static str, Counter)>,
    seconds: Option<Histogram>,
    functions: HashMap<String, Counter>,
}

/// Held to this many tenants and, per tenant, functions; past it the handles are dropped
/// and made again (the top sets changed many times: old labels' handles go).
const MOST_HANDLES: usize = 1024;

impl Handles {
    fn request(&mut self, route: &'static str, outcome: &'static str) -> (Counter, Histogram) {
        self.requests
            .entry((route, outcome))
            .or_insert_with(|| {
                (
                    metrics::counter!("baton_router_requests_total", "route" => route, "outcome" => outcome),
                    metrics::histogram!("baton_router_request_duration_seconds", "route" => route),
                )
            })
            .clone()
    }

    fn tenant(&mut self, label: &str) -> &mut Tenant {
        if !self.tenants.contains_key(label) {
            if self.tenants.len() >= MOST_HANDLES {
                self.tenants.clear();
            }
            self.tenants.insert(label.to_string(), Tenant::default());
        }
        self.tenants.get_mut(label).expect("inserted")
    }
}

impl Tenant {
    fn call(&mut self, label: &str, outcome: &'static str) -> &Counter {
        let at = match self.calls.iter().position(|(o, _)| *o == outcome) {
            Some(at) => at,
            None => {
                let counter = metrics::counter!(TENANT_CALLS, "tenant" => label.to_string(), "outcome" => outcome);
                self.calls.push((outcome, counter));
                self.calls.len() - 1
            }
        };
        &self.calls[at].1
    }

    fn seconds(&mut self, label: &str) -> &Histogram {
        self.seconds.get_or_insert_with(|| metrics::histogram!(TENANT_CALL_SECONDS, "tenant" => label.to_string()))
    }

    fn function(&mut self, tenant: &str, function: &str) -> &Counter {
        if !self.functions.contains_key(function) {
            if self.functions.len() >= MOST_HANDLES {
                self.functions.clear();
            }
            let counter =
                metrics::counter!(FUNCTION_CALLS, "tenant" => tenant.to_string(), "function" => function.to_string());
            self.functions.insert(function.to_string(), counter);
        }
        &self.functions[function]
    }
}

static HANDLES: std::sync::OnceLock<Mutex<Handles>> = std::sync::OnceLock::new();

fn handles() -> std::sync::MutexGuard<'static, Handles> {
    HANDLES.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let tenant_label = if tops.tenants.call(tenant, now) { tenant } else { OTHER };
    let function_label = (status != 404).then(|| {
        if tops.functions.call(&format!("{tenant}/{function}"), now) { (tenant, function) } else { (OTHER, OTHER) }
    });
    let mut handles = handles();
    let series = handles.tenant(tenant_label);
    series.call(tenant_label, outcome(status)).increment(1);
    series.seconds(tenant_label).record(elapsed.as_secs_f64());
    if let Some((tenant, function)) = function_label {
        // Under the tenant's label of its own series: `other` when the tenant has none.
        handles.tenant(tenant).function(tenant, function).increment(1);
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
