//! What a run leaves behind: `calls.csv`, `summary.json`, SVG plots, and a table on the
//! console.

use std::path::{Path, PathBuf};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{self, PhaseSummary};
use crate::plot;
use crate::record::{self, CallRecord, Outcome};

/// A run's summary, written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `trace`, `cold-sweep`, `warm-sweep` or `burst`.
    pub mode: String,
    /// The system under test.
    pub target: String,
    /// The mode's settings, as given (trace, window, rates, execution, time scale, …).
    pub settings: serde_json::Value,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Whether the run was interrupted (Ctrl-C) before its schedule ended.
    pub interrupted: bool,
    /// Functions the run called.
    pub functions: usize,
    /// Per-phase metrics, in order.
    pub phases: Vec<PhaseSummary>,
    /// Sweeps: the highest rate before the knee (see `docs/loadtest.md`).
    pub knee_rate: Option<f64>,
}

/// A phase of a run and its offered rate.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Label, as in the CSV.
    pub label: String,
    /// Offered calls per second (sweeps).
    pub rate: Option<f64>,
    /// Whether it counts in the metrics (a warm-up does not).
    pub measured: bool,
}

/// Everything a run produced.
pub struct Outcomes {
    /// Function names, by index.
    pub names: Vec<String>,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Every call.
    pub records: Vec<CallRecord>,
}

/// Files written for a run.
#[derive(Debug)]
pub struct Written {
    /// `summary.json`.
    pub summary: PathBuf,
    /// `calls.csv`.
    pub calls: PathBuf,
    /// The SVG plots.
    pub plots: Vec<PathBuf>,
}

/// Computes the summary of `outcomes`.
pub fn summarize(
    mode: &str,
    target: String,
    settings: serde_json::Value,
    started_unix_s: u64,
    interrupted: bool,
    outcomes: &Outcomes,
    knee_factor: f64,
) -> Summary {
    let phases: Vec<PhaseSummary> = outcomes
        .phases
        .iter()
        .filter(|p| p.measured)
        .map(|p| {
            let records: Vec<&CallRecord> = outcomes.records.iter().filter(|r| *r.phase == *p.label).collect();
            metrics::summarize(&p.label, p.rate, &records)
        })
        .collect();
    let knee_rate = if phases.iter().filter(|p| p.offered_rate.is_some()).count() > 1 {
        metrics::knee(&phases, knee_factor)
    } else {
        None
    };
    Summary {
        mode: mode.to_string(),
        target,
        settings,
        started_unix_s,
        interrupted,
        functions: outcomes.names.len(),
        phases,
        knee_rate,
    }
}

/// Writes the CSV, the JSON summary and the plots into `dir` (created if missing).
pub fn write(dir: &Path, summary: &Summary, outcomes: &Outcomes) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let calls = dir.join("calls.csv");
    let mut records: Vec<CallRecord> = outcomes.records.clone();
    records.sort_by_key(|r| r.invocation);
    record::write_csv(&calls, &records, &outcomes.names)?;
    let summary_path = dir.join("summary.json");
    let json = serde_json::to_vec_pretty(summary).expect("a summary serialises");
    std::fs::write(&summary_path, json).map_err(|e| Error::io(&summary_path, e))?;

    let measured: Vec<&Phase> = outcomes.phases.iter().filter(|p| p.measured).collect();
    let in_phase = |p: &Phase| -> Vec<&CallRecord> {
        outcomes.records.iter().filter(|r| *r.phase == *p.label && r.outcome == Outcome::Ok).collect()
    };
    let mut plots = Vec::new();
    let latency: Vec<(String, Vec<f64>)> = measured
        .iter()
        .map(|p| (p.label.clone(), sorted(in_phase(p).iter().map(|r| r.response.as_secs_f64() * 1000.0).collect())))
        .collect();
    if latency.iter().any(|(_, v)| !v.is_empty()) {
        let path = dir.join("latency-cdf.svg");
        plot::cdf(&path, &format!("{}: end-to-end latency", summary.mode), "latency (ms)", &latency)?;
        plots.push(path);
    }
    let scheduling: Vec<(String, Vec<f64>)> = measured
        .iter()
        .map(|p| (p.label.clone(), sorted(in_phase(p).iter().filter_map(|r| metrics::scheduling_ms(r)).collect())))
        .collect();
    if scheduling.iter().any(|(_, v)| !v.is_empty()) {
        let path = dir.join("scheduling-cdf.svg");
        plot::cdf(
            &path,
            &format!("{}: scheduling latency per call", summary.mode),
            "scheduling latency (ms)",
            &scheduling,
        )?;
        plots.push(path);
    }
    let slowdown: Vec<(String, Vec<f64>)> =
        measured.iter().map(|p| (p.label.clone(), sorted(metrics::per_function_slowdowns(&in_phase(p))))).collect();
    if slowdown.iter().any(|(_, v)| !v.is_empty()) {
        let path = dir.join("slowdown-cdf.svg");
        plot::cdf(&path, &format!("{}: per-function slowdown (geometric mean)", summary.mode), "slowdown", &slowdown)?;
        plots.push(path);
    }
    if summary.phases.iter().filter(|p| p.offered_rate.is_some()).count() > 1 {
        let path = dir.join("sweep.svg");
        plot::sweep(&path, &format!("{}: latency against offered rate", summary.mode), &summary.phases)?;
        plots.push(path);
    }
    Ok(Written { summary: summary_path, calls, plots })
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The console table: one row per phase.
pub fn table(summary: &Summary) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "phase",
        "offered/s",
        "calls",
        "ok",
        "failed (t/4xx/5xx/conn)",
        "ok/s",
        "latency p50/p99 ms",
        "sched p50/p99 ms",
        "sched/fn p50/p99 ms",
        "slowdown p50/p99",
        "cold %",
        "queued %",
    ]);
    for p in &summary.phases {
        let f = &p.failures;
        table.add_row([
            p.phase.clone(),
            num(p.offered_rate, 0),
            p.calls.to_string(),
            p.ok.to_string(),
            format!("{} ({}/{}/{}/{})", f.total(), f.timeout, f.http_4xx, f.http_5xx, f.connection + f.other),
            format!("{:.1}", p.throughput),
            format!("{} / {}", num(p.latency_ms.p50, 2), num(p.latency_ms.p99, 2)),
            format!("{} / {}", num(p.scheduling_ms.p50, 2), num(p.scheduling_ms.p99, 2)),
            format!("{} / {}", num(p.scheduling_per_function_ms.p50, 2), num(p.scheduling_per_function_ms.p99, 2)),
            format!("{} / {}", num(p.slowdown.p50, 2), num(p.slowdown.p99, 2)),
            num(p.cold_start_fraction.map(|c| c * 100.0), 1),
            num(p.queued_fraction.map(|q| q * 100.0), 1),
        ]);
    }
    let mut out = table.to_string();
    if let Some(knee) = summary.knee_rate {
        out.push_str(&format!("\nknee: {knee:.0} calls/s (highest rate with no failures and p99 within the knee factor of the first step's)"));
    }
    out
}
