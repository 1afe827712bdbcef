//! The four workloads as plans (functions to register and stages of calls), and the one
//! loop that carries any plan out: register, send, remove, report.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::cli::{BurstArgs, ColdSweepArgs, Common, Mode, TargetKind, TraceArgs, WarmSweepArgs};
use crate::error::{Error, Result};
use crate::report::{self, Outcomes, Phase, Summary, Written};
use crate::runner::Runner;
use crate::schedule::{self, Iat, PlannedCall};
use crate::target::{FunctionDef, FunctionSettings, SandboxRuntime, Target};
use crate::trace::{Trace, Window};

/// One stage of a run: functions to register first, calls to send, functions to remove
/// after.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its phase.
    pub phase: Phase,
    /// Pause before it starts.
    pub pause_before: Duration,
    /// Functions (indices into the plan's list) registered before it.
    pub register: Range<usize>,
    /// Functions removed after it (unless `--keep-functions`).
    pub release: Range<usize>,
    /// Its calls; times are from the stage's start.
    pub calls: Vec<PlannedCall>,
}

/// A whole run, built before anything is sent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Mode name.
    pub mode: &'static str,
    /// The mode's settings, for the summary.
    pub settings: serde_json::Value,
    /// Every function the run calls.
    pub functions: Vec<FunctionDef>,
    /// Stages in order.
    pub stages: Vec<Stage>,
}

/// Builds the plan for `mode`, checking every input.
pub fn plan(mode: &Mode) -> Result<(Plan, Common)> {
    match mode {
        Mode::Trace(args) => Ok((plan_trace(args)?, args.common.clone())),
        Mode::ColdSweep(args) => Ok((plan_cold_sweep(args)?, args.common.clone())),
        Mode::WarmSweep(args) => Ok((plan_warm_sweep(args)?, args.common.clone())),
        Mode::Burst(args) => Ok((plan_burst(args)?, args.common.clone())),
    }
}

fn settings(common: &Common) -> Result<FunctionSettings> {
    let executable = match &common.function_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| Error::io("baton-loadtest", e))?.with_file_name("baton-fn-spin"),
    };
    let uses_binary = common.target != TargetKind::Http && common.runtime == SandboxRuntime::Process;
    if uses_binary && !(executable.is_absolute() && executable.is_file()) {
        return Err(Error::option(
            "--function-binary",
            format!("{} is not an executable file (build it with `cargo build --bins`)", executable.display()),
        ));
    }
    Ok(FunctionSettings {
        runtime: common.runtime,
        executable,
        cpu_millis: common.cpu_millis,
        min_memory_mib: common.min_memory_mib,
        max_memory_mib: common.max_memory_mib,
        timeout: common.function_timeout,
    })
}

/// A name that is valid at the cell: prefix, index, and a short tag from the trace's ID.
fn function_name(prefix: &str, index: usize, id: &str) -> String {
    let tag: String = id
        .rsplit('/')
        .next()
        .unwrap_or(id)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    if tag.is_empty() { format!("{prefix}-{index:03}") } else { format!("{prefix}-{index:03}-{tag}") }
}

fn plan_trace(args: &TraceArgs) -> Result<Plan> {
    let trace = Trace::load(&args.trace)?;
    let minutes = match args.minutes {
        Some(m) => m,
        None => trace.minutes.checked_sub(args.start_minute).filter(|&m| m > 0).ok_or_else(|| {
            Error::option(
                "--start-minute",
                format!("{} is past the end of the trace ({} minutes)", args.start_minute, trace.minutes),
            )
        })?,
    };
    let window = Window { start_minute: args.start_minute, minutes };
    trace.check_window(window)?;
    let trace = match args.functions {
        Some(n) => trace.sample(n as usize, args.common.seed),
        None => trace,
    };
    let settings = settings(&args.common)?;
    let functions: Vec<FunctionDef> = trace
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            settings.def(function_name(&args.common.name_prefix, i, &f.id), f.memory_mib, serde_json::json!({}))
        })
        .collect();
    let mut calls = schedule::trace_calls(&trace, window, args.iat, args.time_scale, args.common.seed);
    for call in &mut calls {
        call.requested_ms = call.requested_ms.min(args.max_runtime_ms);
    }
    let n = functions.len();
    Ok(Plan {
        mode: "trace",
        settings: serde_json::json!({
            "trace": trace.path,
            "format": trace.format,
            "window": window,
            "functions": n,
            "calls": calls.len(),
            "time_scale": args.time_scale,
            "iat": args.iat,
            "max_runtime_ms": args.max_runtime_ms,
            "execution": args.common.execution,
            "runtime": args.common.runtime,
            "seed": args.common.seed,
        }),
        functions,
        stages: vec![Stage {
            phase: Phase { label: "trace".into(), rate: None, measured: true },
            pause_before: Duration::ZERO,
            register: 0..n,
            release: 0..n,
            calls,
        }],
    })
}

fn rate_label(rate: f64) -> String {
    format!("rate={rate}")
}

/// Sweep rates must increase (each step is a phase labelled by its rate, and the knee is
/// the last good step).
fn check_rates(rates: &[f64]) -> Result<()> {
    match rates.windows(2).find(|w| w[1] <= w[0]) {
        Some(w) => Err(Error::option("--rates", format!("must increase step by step ({} then {})", w[0], w[1]))),
        None => Ok(()),
    }
}

fn plan_cold_sweep(args: &ColdSweepArgs) -> Result<Plan> {
    check_rates(&args.rates)?;
    let settings = settings(&args.common)?;
    // One sandbox at most, gone one stable window (1 s) after the last call.
    let scaling = serde_json::json!({
        "max_scale": 1, "stable_window": "1s", "panic_window": "1s", "scale_to_zero_grace": "0s",
    });
    let mut functions = Vec::new();
    let mut stages = Vec::new();
    for (step, &rate) in args.rates.iter().enumerate() {
        let count = (rate * args.cooldown.as_secs_f64()).ceil().max(1.0) as u32;
        let first = functions.len();
        for i in 0..count {
            let name = format!("{}-c{step}-{i}", args.common.name_prefix);
            functions.push(settings.def(name, None, scaling.clone()));
        }
        let mut calls =
            schedule::steady_calls(rate, args.step, count, Iat::Equidistant, args.runtime_ms, args.common.seed);
        for c in &mut calls {
            c.function += first as u32;
        }
        let range = first..functions.len();
        stages.push(Stage {
            phase: Phase { label: rate_label(rate), rate: Some(rate), measured: true },
            pause_before: if step == 0 { Duration::ZERO } else { args.pause },
            register: range.clone(),
            release: range,
            calls,
        });
    }
    Ok(Plan {
        mode: "cold-sweep",
        settings: serde_json::json!({
            "rates": args.rates,
            "step_s": args.step.as_secs_f64(),
            "cooldown_s": args.cooldown.as_secs_f64(),
            "runtime_ms": args.runtime_ms,
            "execution": args.common.execution,
            "runtime": args.common.runtime,
        }),
        functions,
        stages,
    })
}

fn plan_warm_sweep(args: &WarmSweepArgs) -> Result<Plan> {
    check_rates(&args.rates)?;
    let settings = settings(&args.common)?;
    let scaling = serde_json::json!({"min_scale": args.sandboxes, "max_scale": args.sandboxes});
    let n = args.functions as usize;
    let functions: Vec<FunctionDef> =
        (0..n).map(|i| settings.def(format!("{}-w-{i}", args.common.name_prefix), None, scaling.clone())).collect();
    let seed = args.common.seed;
    let mut stages = vec![Stage {
        phase: Phase { label: "warmup".into(), rate: Some(args.rates[0]), measured: false },
        pause_before: Duration::ZERO,
        register: 0..n,
        release: 0..0,
        calls: if args.warmup.is_zero() {
            Vec::new()
        } else {
            schedule::steady_calls(args.rates[0], args.warmup, args.functions, args.iat, args.runtime_ms, seed)
        },
    }];
    for (step, &rate) in args.rates.iter().enumerate() {
        let last = step + 1 == args.rates.len();
        stages.push(Stage {
            phase: Phase { label: rate_label(rate), rate: Some(rate), measured: true },
            pause_before: args.pause,
            register: 0..0,
            release: if last { 0..n } else { 0..0 },
            calls: schedule::steady_calls(
                rate,
                args.step,
                args.functions,
                args.iat,
                args.runtime_ms,
                seed + step as u64,
            ),
        });
    }
    Ok(Plan {
        mode: "warm-sweep",
        settings: serde_json::json!({
            "rates": args.rates,
            "step_s": args.step.as_secs_f64(),
            "functions": args.functions,
            "sandboxes_per_function": args.sandboxes,
            "warmup_s": args.warmup.as_secs_f64(),
            "runtime_ms": args.runtime_ms,
            "iat": args.iat,
            "execution": args.common.execution,
            "runtime": args.common.runtime,
        }),
        functions,
        stages,
    })
}

fn plan_burst(args: &BurstArgs) -> Result<Plan> {
    let settings = settings(&args.common)?;
    let n = args.count as usize;
    let functions: Vec<FunctionDef> = (0..n)
        .map(|i| settings.def(format!("{}-b-{i}", args.common.name_prefix), None, serde_json::json!({"max_scale": 1})))
        .collect();
    let calls = (0..args.count)
        .map(|i| PlannedCall { at: Duration::ZERO, function: i, requested_ms: args.runtime_ms })
        .collect();
    Ok(Plan {
        mode: "burst",
        settings: serde_json::json!({
            "count": args.count,
            "runtime_ms": args.runtime_ms,
            "execution": args.common.execution,
            "runtime": args.common.runtime,
        }),
        functions,
        stages: vec![Stage {
            phase: Phase { label: "burst".into(), rate: None, measured: true },
            pause_before: Duration::ZERO,
            register: 0..n,
            release: 0..n,
            calls,
        }],
    })
}

/// The target `common` names.
pub fn target(common: &Common) -> Result<Target> {
    let target = match common.target {
        TargetKind::Cell => Target::Cell { url: common.url.clone(), control: common.control.clone() },
        TargetKind::Http => Target::Http { url: common.url.clone() },
        TargetKind::Router => Target::Router {
            url: common.url.clone(),
            api_key: common.api_key.clone().ok_or_else(|| {
                crate::error::Error::option("--api-key", "the router target needs a key (or BATON_API_KEY)")
            })?,
        },
    };
    target.check()?;
    Ok(target)
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Carries out `plan` against the target in `common`: registers, sends, removes what it
/// registered (also on failure or Ctrl-C, unless told to keep it), and writes the report.
pub async fn execute(plan: Plan, common: &Common) -> Result<(Summary, Written)> {
    let target = target(common)?;
    let uris = plan.functions.iter().map(|f| target.call_uri(&f.name)).collect::<Result<Vec<_>>>()?;
    let out = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("loadtest-results").join(format!("{}-{}", plan.mode, unix_now().as_secs())));

    let (stop_tx, mut stop) = watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling: never interrupt (keep the sender, so nothing reads as
            // "stopped").
            return std::future::pending::<()>().await;
        }
        eprintln!(
            "interrupted: no more calls are sent; waiting for those in flight, then cleaning up (Ctrl-C again to quit now)"
        );
        let _ = stop_tx.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("quitting now: the run's functions stay registered (`baton-cell functions delete NAME`)");
            std::process::exit(130);
        }
    });
    let total: usize = plan.stages.iter().map(|s| s.calls.len()).sum();
    let progress = if common.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} calls  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let runner = Runner::new(uris, common.execution, common.timeout).with_authorization(target.authorization()?);
    let started = unix_now().as_secs();
    let mut records = Vec::with_capacity(total);
    let mut registered = vec![false; plan.functions.len()];
    let mut next_invocation = 0u64;
    let result: Result<()> = async {
        for stage in &plan.stages {
            if !stage.pause_before.is_zero() {
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(stage.pause_before) => {}
                }
            }
            if *stop.borrow() {
                break;
            }
            if target.registers() && !stage.register.is_empty() {
                progress.set_message(format!("registering {} functions", stage.register.len()));
                // Marked first: a registration that fails halfway still has its earlier
                // functions removed (removing one that is not there is fine).
                registered[stage.register.clone()].fill(true);
                target.register(&plan.functions[stage.register.clone()]).await?;
                // The data planes learn of new functions through their routing stream.
                tokio::time::sleep(common.settle).await;
            }
            progress.set_message(stage.phase.label.clone());
            let mut sent = runner.run(&stage.phase.label, &stage.calls, next_invocation, &progress, &mut stop).await;
            next_invocation += stage.calls.len() as u64;
            records.append(&mut sent);
            if target.registers() && !common.keep_functions && !stage.release.is_empty() {
                progress.set_message(format!("removing {} functions", stage.release.len()));
                let names: Vec<String> = plan.functions[stage.release.clone()].iter().map(|f| f.name.clone()).collect();
                // A failed removal is retried once the run ends; it does not cost the
                // measured steps their report.
                match target.unregister(&names).await {
                    Ok(()) => registered[stage.release.clone()].fill(false),
                    Err(e) => {
                        eprintln!("baton-loadtest: removing {} functions failed, retrying at the end: {e}", names.len())
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    progress.finish_and_clear();
    let interrupted = *stop.borrow();
    interrupt.abort();
    if target.registers() && !common.keep_functions {
        let left: Vec<String> =
            plan.functions.iter().zip(&registered).filter(|(_, r)| **r).map(|(f, _)| f.name.clone()).collect();
        if !left.is_empty()
            && let Err(e) = target.unregister(&left).await
        {
            eprintln!("baton-loadtest: could not remove {} functions ({}…): {e}", left.len(), left[0]);
        }
    }
    result?;
    let outcomes = Outcomes {
        names: plan.functions.iter().map(|f| f.name.clone()).collect(),
        phases: plan.stages.iter().map(|s| s.phase.clone()).collect(),
        records,
    };
    let summary = report::summarize(
        plan.mode,
        target.describe(),
        plan.settings.clone(),
        started,
        interrupted,
        &outcomes,
        common.knee_factor,
    );
    let written = report::write(&out, &summary, &outcomes)?;
    Ok((summary, written))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn plan_of(args: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(args).unwrap();
        plan(&cli.mode).map(|(p, _)| p)
    }

    #[test]
    fn names_are_valid_function_names() {
        assert_eq!(function_name("lt", 7, "B9386D10c889ce4c"), "lt-007-b9386d10");
        assert_eq!(function_name("lt", 12, "app/e3cdb488-30f6"), "lt-012-e3cdb488");
        assert_eq!(function_name("x", 1, "///"), "x-001");
    }

    #[test]
    fn a_cold_sweep_gives_each_step_fresh_functions_called_once_per_cooldown() {
        let plan =
            plan_of(&["x", "cold-sweep", "--rates", "10,20", "--step", "4s", "--cooldown", "2s", "--target", "http"])
                .unwrap();
        assert_eq!(plan.functions.len(), 20 + 40);
        let step = &plan.stages[1];
        assert_eq!(step.register, 20..60);
        assert_eq!(step.calls.len(), 80);
        for f in 20..60u32 {
            let times: Vec<f64> = step.calls.iter().filter(|c| c.function == f).map(|c| c.at.as_secs_f64()).collect();
            assert_eq!(times.len(), 2);
            assert!(times[1] - times[0] >= 2.0 - 1e-6, "function {f} called twice within the cool-down: {times:?}");
        }
        assert_eq!(plan.functions[0].spec["scaling"]["max_scale"], 1);
    }

    #[test]
    fn trace_plans_check_the_window_and_sample() {
        let dir = crate::trace::tests::workload("azure2019-100");
        let dir = dir.to_str().unwrap();
        let plan = plan_of(&["x", "trace", "--trace", dir, "--minutes", "2", "--functions", "10", "--target", "http"])
            .unwrap();
        assert_eq!(plan.functions.len(), 10);
        assert!(plan.stages[0].calls.iter().all(|c| c.at < Duration::from_secs(120)));
        let err =
            plan_of(&["x", "trace", "--trace", dir, "--start-minute", "479", "--minutes", "2", "--target", "http"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("past the end"), "{err}");
        let err = plan_of(&["x", "trace", "--trace", "/nonexistent/trace"]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/trace"), "{err}");
    }

    #[test]
    fn sweep_rates_must_increase() {
        for rates in ["100,100", "200,100"] {
            let err = plan_of(&["x", "cold-sweep", "--rates", rates, "--target", "http"]).unwrap_err().to_string();
            assert!(err.starts_with("--rates") && err.contains("increase"), "{err}");
        }
    }

    #[test]
    fn a_missing_function_binary_is_refused() {
        let err =
            plan_of(&["x", "burst", "--count", "2", "--function-binary", "/nonexistent/spin"]).unwrap_err().to_string();
        assert!(err.starts_with("--function-binary") && err.contains("/nonexistent/spin"), "{err}");
    }
}
