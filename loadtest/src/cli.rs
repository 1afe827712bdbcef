//! Command-line options. Every option is documented here; `--help` shows them all.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::runner::Execution;
use crate::schedule::Iat;
use crate::target::SandboxRuntime;

/// Replays real FaaS traces against baton and runs the sweeps the Dirigent paper reports.
#[derive(Debug, Parser)]
#[command(name = "baton-loadtest", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The workloads.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Replay a trace (2019 Azure folder or 2021 invocation CSV).
    Trace(TraceArgs),
    /// Cold starts at a list of steady rates: every function has at most one sandbox and is
    /// called once per cool-down, so every call finds none (InVitro's method).
    ColdSweep(ColdSweepArgs),
    /// Pre-warmed functions at a list of steady rates.
    WarmSweep(WarmSweepArgs),
    /// N simultaneous cold starts.
    Burst(BurstArgs),
}

/// Where calls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// A cell: functions registered through its control plane, calls to its data plane.
    Cell,
    /// Any HTTP endpoint (baselines such as HAProxy); nothing is registered.
    Http,
    /// A federation's router (`--url` is its base URL, e.g. `$BATON_URL`): functions
    /// registered through its tenant API, calls sent with `--api-key`.
    Router,
}

/// Options every mode takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// What to call.
    #[arg(long, value_enum, default_value = "cell")]
    pub target: TargetKind,
    /// The cell data plane's base URL; for `--target http`, the URL every call goes to
    /// (`{function}` in it is replaced by the function's name).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The cell control plane's gRPC address, where the run's functions are registered.
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    pub control: String,
    /// The tenant's API key, for `--target router`.
    #[arg(long, env = "BATON_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How functions spend the requested runtime: `spin` (busy, one core per running call)
    /// or `sleep` (for machines smaller than the workload).
    #[arg(long, value_enum, default_value = "spin")]
    pub execution: Execution,
    /// Sandbox runtime of the registered functions.
    #[arg(long, value_enum, default_value = "process")]
    pub runtime: SandboxRuntime,
    /// Absolute path of `baton-fn-spin` on the workers (process runtime). Default: the
    /// `baton-fn-spin` beside this program.
    #[arg(long)]
    pub function_binary: Option<PathBuf>,
    /// CPU per sandbox, in thousandths of a core.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub cpu_millis: u32,
    /// Memory floor per sandbox in MiB; a trace function's memory below it is raised.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(4..))]
    pub min_memory_mib: u64,
    /// Memory cap per sandbox in MiB: a trace function's memory above it is lowered (for
    /// machines smaller than the trace). Default: no cap.
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..))]
    pub max_memory_mib: Option<u64>,
    /// Pause after registering functions and before calling them, while the data planes
    /// learn of them through their routing stream.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Longest a call may take before the cell answers 504 (the function's `timeout`).
    #[arg(long, default_value = "65s", value_parser = positive_duration)]
    pub function_timeout: Duration,
    /// Longest the load tester waits for an answer before counting a timeout.
    #[arg(long, default_value = "75s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Prefix of the registered functions' names (lowercase letters, digits, `-`).
    #[arg(long, default_value = "lt", value_parser = name_prefix)]
    pub name_prefix: String,
    /// Leave the registered functions in place after the run.
    #[arg(long)]
    pub keep_functions: bool,
    /// Folder for `calls.csv`, `summary.json` and the plots. Default:
    /// `loadtest-results/<mode>-<unix time>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of every random draw (function sample, arrival times, runtimes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sweeps: a step is past the knee when its p99 exceeds this many times the first
    /// step's, or any call failed.
    #[arg(long, default_value_t = 2.0, value_parser = at_least_one)]
    pub knee_factor: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `trace` options.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// A 2019-layout folder (invocations.csv, durations.csv, memory.csv) or a 2021-layout
    /// CSV file.
    #[arg(long)]
    pub trace: PathBuf,
    /// First minute to replay, counted from 0 at the trace's first minute column.
    #[arg(long, default_value_t = 0)]
    pub start_minute: u32,
    /// Minutes to replay. Default: to the end of the trace.
    #[arg(long)]
    pub minutes: Option<u32>,
    /// Replay this many functions, sampled at random (with `--seed`). Default: all.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub functions: Option<u32>,
    /// Wall-clock seconds per trace second: 0.5 plays a trace minute in 30 s (twice the
    /// rate), 2 in 120 s. Call counts per trace minute are kept.
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    pub time_scale: f64,
    /// How calls are spread within each minute (2019 layout).
    #[arg(long, value_enum, default_value = "exponential")]
    pub iat: Iat,
    /// Longest runtime a call asks for, milliseconds: the trace's runtimes are clamped to
    /// [1, this]. Lower it to finish short replays on small machines; the summary says so.
    #[arg(long, default_value_t = crate::schedule::MAX_RUNTIME_MS, value_parser = runtime_ms)]
    pub max_runtime_ms: u32,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

/// `cold-sweep` options.
#[derive(Debug, Clone, Args)]
pub struct ColdSweepArgs {
    /// Cold starts per second, one step each, comma-separated (`100,200,400`).
    #[arg(long, required = true, value_delimiter = ',', value_parser = positive_f64)]
    pub rates: Vec<f64>,
    /// Length of each step.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub step: Duration,
    /// How long a function rests between its calls; its one sandbox must be gone by then
    /// (the functions scale to zero 1 s after their last call).
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub cooldown: Duration,
    /// Pause between steps, while the previous step's functions are removed.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Runtime each call asks for, milliseconds.
    #[arg(long, default_value_t = 1, value_parser = runtime_ms)]
    pub runtime_ms: u32,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

/// `warm-sweep` options.
#[derive(Debug, Clone, Args)]
pub struct WarmSweepArgs {
    /// Calls per second, one step each, comma-separated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = positive_f64)]
    pub rates: Vec<f64>,
    /// Length of each step.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub step: Duration,
    /// Functions the calls are spread over, in turn.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub functions: u32,
    /// Sandboxes kept warm per function (its min and max scale).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub sandboxes: u32,
    /// Length of the unmeasured warm-up at the first rate.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pause between steps.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Runtime each call asks for, milliseconds.
    #[arg(long, default_value_t = 1, value_parser = runtime_ms)]
    pub runtime_ms: u32,
    /// How calls are spread within each step.
    #[arg(long, value_enum, default_value = "equidistant")]
    pub iat: Iat,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

/// `burst` options.
#[derive(Debug, Clone, Args)]
pub struct BurstArgs {
    /// Simultaneous cold starts (one call to each of this many new functions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Runtime each call asks for, milliseconds.
    #[arg(long, default_value_t = 1, value_parser = runtime_ms)]
    pub runtime_ms: u32,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

fn positive_f64(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a number above zero (got {v})")),
        Err(e) => Err(format!("{text:?} is not a number ({e})")),
    }
}

fn at_least_one(text: &str) -> Result<f64, String> {
    positive_f64(text).and_then(|v| if v >= 1.0 { Ok(v) } else { Err(format!("must be at least 1 (got {v})")) })
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(format!("{text:?} is not a duration such as \"500ms\" or \"30s\" ({e})")),
    }
}

fn runtime_ms(text: &str) -> Result<u32, String> {
    let max = crate::schedule::MAX_RUNTIME_MS;
    match text.parse::<u32>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!("must be a whole number of milliseconds in 1..={max}")),
    }
}

fn name_prefix(text: &str) -> Result<String, String> {
    let ok = text.len() <= 20
        && text.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(text.to_string())
    } else {
        Err("must be 1-20 lowercase letters, digits and '-', starting with a letter".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(args: &[&str]) -> String {
        Cli::try_parse_from(args).unwrap_err().to_string()
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        let cases: [(&[&str], &str); 7] = [
            (&["x", "cold-sweep", "--rates", "100,0"], "--rates"),
            (&["x", "warm-sweep", "--rates", "abc"], "--rates"),
            (&["x", "trace", "--trace", "t", "--time-scale", "0"], "--time-scale"),
            (&["x", "burst", "--count", "0"], "--count"),
            (&["x", "cold-sweep", "--rates", "1", "--step", "soon"], "--step"),
            (&["x", "burst", "--count", "1", "--name-prefix", "Bad_"], "--name-prefix"),
            (&["x", "warm-sweep", "--rates", "1", "--runtime-ms", "0"], "--runtime-ms"),
        ];
        for (args, option) in cases {
            let err = error(args);
            assert!(err.contains(option), "{args:?}: {err}");
        }
        assert!(error(&["x", "cold-sweep", "--rates", "100,0"]).contains("above zero"));
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["x", "cold-sweep", "--rates", "10,20.5"]).unwrap();
        let Mode::ColdSweep(args) = cli.mode else { panic!("cold-sweep") };
        assert_eq!(args.rates, vec![10.0, 20.5]);
        assert_eq!(args.common.target, TargetKind::Cell);
        assert_eq!(args.cooldown, Duration::from_secs(5));
    }
}
