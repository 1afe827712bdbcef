//! The Dirigent paper's metrics from per-call records: per-function slowdown (geometric
//! mean per function, p50/p99 across functions), scheduling latency (end-to-end latency
//! minus the execution time the function measured; per call and per-function average),
//! cold-start fraction, throughput and failures by kind. Percentiles are nearest-rank.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{CallRecord, Outcome};

/// The nearest-rank `p`-quantile (`p` in [0, 1]) of sorted `values`; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Geometric mean of positive `values`; `None` when empty.
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some((values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// p50 and p99 of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Spread {
    fn of(values: Vec<f64>) -> Self {
        let values = sorted(values);
        Self { p50: percentile(&values, 0.5), p99: percentile(&values, 0.99) }
    }
}

/// Failed calls by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    /// No answer within the call timeout.
    pub timeout: u64,
    /// 4xx answers.
    pub http_4xx: u64,
    /// 5xx answers.
    pub http_5xx: u64,
    /// Connection refused, reset or broken.
    pub connection: u64,
    /// 1xx or 3xx answers.
    pub other: u64,
}

impl Failures {
    /// All failed calls.
    pub fn total(&self) -> u64 {
        self.timeout + self.http_4xx + self.http_5xx + self.connection + self.other
    }
}

/// The metrics of one phase (the whole trace, or one rate of a sweep).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// Phase label.
    pub phase: String,
    /// Calls per second the schedule offered (sweeps).
    pub offered_rate: Option<f64>,
    /// Calls sent.
    pub calls: u64,
    /// Calls answered 2xx.
    pub ok: u64,
    /// The rest, by kind.
    pub failures: Failures,
    /// From the first send to the last successful answer, seconds.
    pub duration_s: f64,
    /// Successful calls per second over `duration_s`.
    pub throughput: f64,
    /// End-to-end latency of successful calls, milliseconds.
    pub latency_ms: Spread,
    /// Per-function slowdown: each function's geometric mean of latency / requested runtime,
    /// spread across functions.
    pub slowdown: Spread,
    /// Scheduling latency (latency minus measured execution time) per call, milliseconds.
    pub scheduling_ms: Spread,
    /// Each function's average scheduling latency, spread across functions, milliseconds.
    pub scheduling_per_function_ms: Spread,
    /// Fraction of successful calls the target marked cold (when it says): they waited
    /// for a sandbox created for them.
    pub cold_start_fraction: Option<f64>,
    /// Fraction of successful calls that waited in the cell's queue at all (cold starts
    /// and calls queued behind busy sandboxes), when the target says.
    pub queued_fraction: Option<f64>,
    /// How late the generator sent calls against the plan, milliseconds (p99): a check on
    /// the generator, not on the target.
    pub send_lag_ms_p99: Option<f64>,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One call's slowdown: latency over the runtime it asked for.
pub fn slowdown(r: &CallRecord) -> f64 {
    ms(r.response) / f64::from(r.requested_ms.max(1))
}

/// One call's scheduling latency in milliseconds, when the function reported its runtime.
pub fn scheduling_ms(r: &CallRecord) -> Option<f64> {
    r.actual_us.map(|us| (ms(r.response) - us as f64 / 1000.0).max(0.0))
}

/// Each function's geometric-mean slowdown over its successful calls.
pub fn per_function_slowdowns(records: &[&CallRecord]) -> Vec<f64> {
    let mut by_function: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
        by_function.entry(r.function).or_default().push(slowdown(r));
    }
    by_function.values().filter_map(|v| geometric_mean(v)).collect()
}

/// The metrics of `records`, one phase's calls.
pub fn summarize(phase: &str, offered_rate: Option<f64>, records: &[&CallRecord]) -> PhaseSummary {
    let mut failures = Failures::default();
    for r in records {
        match r.outcome {
            Outcome::Ok => {}
            Outcome::Timeout => failures.timeout += 1,
            Outcome::Http4xx => failures.http_4xx += 1,
            Outcome::Http5xx => failures.http_5xx += 1,
            Outcome::Connection => failures.connection += 1,
            Outcome::OtherStatus => failures.other += 1,
        }
    }
    let ok: Vec<&CallRecord> = records.iter().copied().filter(|r| r.outcome == Outcome::Ok).collect();
    // From the first send to the last successful answer (a timeout does not stretch it).
    let first = records.iter().map(|r| r.start_unix_us).min().unwrap_or(0);
    let last = ok.iter().map(|r| r.start_unix_us + r.response.as_micros() as u64).max().unwrap_or(0);
    let duration_s = last.saturating_sub(first) as f64 / 1e6;
    let mut per_function: BTreeMap<u32, (f64, u32)> = BTreeMap::new();
    for r in &ok {
        if let Some(s) = scheduling_ms(r) {
            let e = per_function.entry(r.function).or_default();
            *e = (e.0 + s, e.1 + 1);
        }
    }
    let marked: Vec<bool> = ok.iter().filter_map(|r| r.cold).collect();
    let queued: Vec<bool> = ok.iter().filter_map(|r| r.queued).collect();
    PhaseSummary {
        phase: phase.to_string(),
        offered_rate,
        calls: records.len() as u64,
        ok: ok.len() as u64,
        failures,
        duration_s,
        throughput: if duration_s > 0.0 { ok.len() as f64 / duration_s } else { 0.0 },
        latency_ms: Spread::of(ok.iter().map(|r| ms(r.response)).collect()),
        slowdown: Spread::of(per_function_slowdowns(&ok)),
        scheduling_ms: Spread::of(ok.iter().filter_map(|r| scheduling_ms(r)).collect()),
        scheduling_per_function_ms: Spread::of(per_function.values().map(|(sum, n)| sum / f64::from(*n)).collect()),
        cold_start_fraction: (!marked.is_empty())
            .then(|| marked.iter().filter(|&&c| c).count() as f64 / marked.len() as f64),
        queued_fraction: (!queued.is_empty())
            .then(|| queued.iter().filter(|&&q| q).count() as f64 / queued.len() as f64),
        send_lag_ms_p99: percentile(&sorted(records.iter().map(|r| ms(r.lag)).collect()), 0.99),
    }
}

/// The knee of a sweep: the highest offered rate up to which every step had no failures
/// and a p99 latency within `factor` times the first step's. `None` when the first step
/// already failed.
pub fn knee(phases: &[PhaseSummary], factor: f64) -> Option<f64> {
    let base = phases.first()?.latency_ms.p99?;
    let mut knee = None;
    for p in phases {
        let Some(p99) = p.latency_ms.p99 else { break };
        if p.failures.total() > 0 || p99 > base * factor {
            break;
        }
        knee = p.offered_rate;
    }
    knee
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn record(
        function: u32,
        requested_ms: u32,
        response_ms: u64,
        actual_ms: Option<u64>,
        outcome: Outcome,
    ) -> CallRecord {
        CallRecord {
            phase: Arc::from("p"),
            function,
            invocation: 0,
            scheduled: Duration::ZERO,
            lag: Duration::from_micros(100),
            start_unix_us: 1_000_000,
            requested_ms,
            response: Duration::from_millis(response_ms),
            actual_us: actual_ms.map(|ms| ms * 1000),
            status: Some(200),
            outcome,
            cold: Some(false),
            queued: Some(false),
            cell: None,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.99), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.91), Some(10.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn geometric_means_by_hand() {
        assert!((geometric_mean(&[1.0, 4.0]).unwrap() - 2.0).abs() < 1e-12);
        assert!((geometric_mean(&[2.0, 8.0, 4.0]).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(geometric_mean(&[]), None);
    }

    #[test]
    fn slowdown_and_scheduling_latency_match_hand_computed_values() {
        // Function 0: slowdowns 2 (20/10) and 8 (80/10): geometric mean 4.
        // Function 1: slowdowns 1.5 (150/100) and 1.5: geometric mean 1.5.
        // Function 2: slowdown 9 (9/1, the requested runtime clamps to 1 ms).
        let records = [
            record(0, 10, 20, Some(10), Outcome::Ok),
            record(0, 10, 80, Some(11), Outcome::Ok),
            record(1, 100, 150, Some(100), Outcome::Ok),
            record(1, 100, 150, Some(101), Outcome::Ok),
            record(2, 1, 9, Some(1), Outcome::Ok),
            record(2, 1, 5000, None, Outcome::Timeout),
            record(1, 100, 3, None, Outcome::Http5xx),
        ];
        let refs: Vec<&CallRecord> = records.iter().collect();
        let mut slowdowns = per_function_slowdowns(&refs);
        slowdowns.sort_by(f64::total_cmp);
        assert_eq!(slowdowns.len(), 3);
        assert!(
            (slowdowns[0] - 1.5).abs() < 1e-9 && (slowdowns[1] - 4.0).abs() < 1e-9 && (slowdowns[2] - 9.0).abs() < 1e-9
        );
        let s = summarize("p", None, &refs);
        assert_eq!((s.calls, s.ok), (7, 5));
        assert_eq!(s.failures, Failures { timeout: 1, http_5xx: 1, ..Failures::default() });
        // Slowdown across functions [1.5, 4, 9]: p50 4, p99 9.
        let round = |v: Option<f64>| v.map(|v| (v * 1e6).round() / 1e6);
        assert_eq!((round(s.slowdown.p50), round(s.slowdown.p99)), (Some(4.0), Some(9.0)));
        // Scheduling per call: 10, 69, 50, 49, 8 -> sorted 8, 10, 49, 50, 69: p50 49, p99 69.
        assert_eq!((s.scheduling_ms.p50, s.scheduling_ms.p99), (Some(49.0), Some(69.0)));
        // Per-function averages: f0 (10+69)/2 = 39.5, f1 (50+49)/2 = 49.5, f2 8: p50 39.5, p99 49.5.
        assert_eq!((s.scheduling_per_function_ms.p50, s.scheduling_per_function_ms.p99), (Some(39.5), Some(49.5)));
        // Latency of the five successes: 9, 20, 80, 150, 150.
        assert_eq!((s.latency_ms.p50, s.latency_ms.p99), (Some(80.0), Some(150.0)));
        assert_eq!(s.cold_start_fraction, Some(0.0));
        // All sent at the same instant; the slowest success (150 ms) ends the phase, not the
        // 5 s timeout.
        assert_eq!(s.duration_s, 0.15);
        assert!((s.throughput - 5.0 / 0.15).abs() < 1e-9);
    }

    #[test]
    fn the_knee_is_the_last_rate_before_p99_or_failures_break() {
        let phase = |rate: f64, p99: f64, failed: u64| PhaseSummary {
            offered_rate: Some(rate),
            latency_ms: Spread { p50: Some(1.0), p99: Some(p99) },
            failures: Failures { http_5xx: failed, ..Failures::default() },
            ..summarize("x", None, &[])
        };
        assert_eq!(knee(&[phase(100.0, 10.0, 0), phase(200.0, 15.0, 0), phase(400.0, 25.0, 0)], 2.0), Some(200.0));
        assert_eq!(knee(&[phase(100.0, 10.0, 0), phase(200.0, 12.0, 3)], 2.0), Some(100.0));
        assert_eq!(knee(&[phase(100.0, 10.0, 0), phase(200.0, 19.0, 0)], 2.0), Some(200.0));
        assert_eq!(knee(&[], 2.0), None);
        let mut failed = phase(400.0, 1.0, 10);
        failed.latency_ms = Spread { p50: None, p99: None };
        assert_eq!(knee(&[phase(100.0, 10.0, 0), phase(200.0, 12.0, 0), failed], 2.0), Some(200.0));
    }
}
