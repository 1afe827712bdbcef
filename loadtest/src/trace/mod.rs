//! Traces: the 2019 Azure layout (per-minute counts, duration percentiles, memory) and the
//! 2021 invocation-level layout, read into one model.

mod azure2019;
mod azure2021;
mod csvfile;

use std::fmt;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::error::{Error, Result};

pub use azure2019::DurationPercentiles;

/// Which layout a trace is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `invocations.csv`, `durations.csv` and `memory.csv` in one folder.
    Azure2019,
    /// One CSV of `app,func,end_timestamp,duration`.
    Azure2021,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Azure2019 => "azure2019",
            Format::Azure2021 => "azure2021",
        })
    }
}

/// A trace: its functions and how long it lasts.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The folder (2019) or file (2021) it was read from.
    pub path: PathBuf,
    /// Its layout.
    pub format: Format,
    /// Minutes it covers (the 2019 minute columns; for 2021, up to the last call's start).
    pub minutes: u32,
    /// Its functions, in file order.
    pub functions: Vec<TraceFunction>,
}

/// One function of a trace.
#[derive(Debug, Clone)]
pub struct TraceFunction {
    /// `HashFunction` (2019) or `app/func` (2021).
    pub id: String,
    /// Memory it was allocated, in MiB (2019: `AverageAllocatedMb_pct100`; 2021: unknown).
    pub memory_mib: Option<f64>,
    /// When it is called.
    pub arrivals: Arrivals,
}

/// When a function is called, as the trace gives it.
#[derive(Debug, Clone)]
pub enum Arrivals {
    /// Calls per minute, runtimes drawn from percentiles (2019).
    PerMinute {
        /// Calls started in each minute of the trace.
        counts: Vec<u32>,
        /// Its runtime distribution.
        durations: DurationPercentiles,
    },
    /// Every call with its start and runtime (2021), sorted by start.
    Calls(Vec<TracedCall>),
}

/// One call of an invocation-level trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracedCall {
    /// Seconds from the trace's start.
    pub start_s: f64,
    /// Its runtime in seconds.
    pub duration_s: f64,
}

/// A slice of a trace in whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// First minute, counted from 0 at the trace's first minute column.
    pub start_minute: u32,
    /// How many minutes.
    pub minutes: u32,
}

impl Trace {
    /// Reads a trace: a folder in the 2019 layout or a CSV file in the 2021 layout.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            if path.join("invocations.csv").exists() {
                return azure2019::load(path);
            }
            return Err(Error::file(
                path,
                "is not a trace: a 2019-layout folder holds invocations.csv, durations.csv and memory.csv \
                 (for the 2021 layout, give the CSV file itself)",
            ));
        }
        azure2021::load(path)
    }

    /// Checks that `window` lies within the trace.
    pub fn check_window(&self, window: Window) -> Result<()> {
        if window.minutes == 0 {
            return Err(Error::option("--minutes", "must be at least 1"));
        }
        let end = u64::from(window.start_minute) + u64::from(window.minutes);
        if end > u64::from(self.minutes) {
            return Err(Error::option(
                "--start-minute/--minutes",
                format!(
                    "minutes {}..{end} end past the end of {} ({} minutes)",
                    window.start_minute,
                    self.path.display(),
                    self.minutes
                ),
            ));
        }
        Ok(())
    }

    /// The whole trace as a window.
    pub fn whole(&self) -> Window {
        Window { start_minute: 0, minutes: self.minutes }
    }

    /// Calls the trace starts within `window`, over all functions.
    pub fn calls_in(&self, window: Window) -> u64 {
        self.functions.iter().map(|f| f.calls_in(window)).sum()
    }

    /// Keeps `n` functions picked at random (reproducibly, from `seed`), in trace order.
    /// Keeps all of them when `n` is at least their number.
    pub fn sample(mut self, n: usize, seed: u64) -> Self {
        if n < self.functions.len() {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut keep = rand::seq::index::sample(&mut rng, self.functions.len(), n).into_vec();
            keep.sort_unstable();
            let mut all: Vec<Option<TraceFunction>> = self.functions.into_iter().map(Some).collect();
            self.functions = keep.into_iter().filter_map(|i| all[i].take()).collect();
        }
        self
    }
}

impl TraceFunction {
    /// Calls started within `window`.
    pub fn calls_in(&self, window: Window) -> u64 {
        let range = window.start_minute as usize..(window.start_minute + window.minutes) as usize;
        match &self.arrivals {
            Arrivals::PerMinute { counts, .. } => {
                counts.get(range).map_or(0, |c| c.iter().map(|&n| u64::from(n)).sum())
            }
            Arrivals::Calls(calls) => {
                let (from, to) = (range.start as f64 * 60.0, range.end as f64 * 60.0);
                calls.iter().filter(|c| c.start_s >= from && c.start_s < to).count() as u64
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
