//! The 2019 Azure layout as InVitro preprocesses it: `invocations.csv` (calls per minute,
//! minute columns read by position), `durations.csv` (runtime percentiles) and
//! `memory.csv` (allocated memory), joined on `HashFunction` by header name.

use std::collections::HashMap;
use std::path::Path;

use super::csvfile::CsvFile;
use super::{Arrivals, Format, Trace, TraceFunction};
use crate::error::{Error, Result};

/// The columns of `invocations.csv` that are not minutes.
const ID_COLUMNS: [&str; 4] = ["HashOwner", "HashApp", "HashFunction", "Trigger"];

/// Percentile levels of `durations.csv`, in percent.
pub const LEVELS: [f64; 7] = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0];

/// A function's runtime percentiles in milliseconds, at [`LEVELS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationPercentiles(pub [f64; 7]);

impl DurationPercentiles {
    /// The runtime at quantile `q` in [0, 1], interpolating linearly between the two
    /// percentiles around it (InVitro's method), in milliseconds.
    pub fn at(&self, q: f64) -> f64 {
        let p = q.clamp(0.0, 1.0) * 100.0;
        let i = LEVELS.iter().rposition(|&l| l <= p).unwrap_or(0).min(LEVELS.len() - 2);
        let (l0, l1) = (LEVELS[i], LEVELS[i + 1]);
        let (v0, v1) = (self.0[i], self.0[i + 1]);
        let t = ((p - l0) / (l1 - l0)).clamp(0.0, 1.0);
        v0 + (v1 - v0) * t
    }
}

pub(super) fn load(dir: &Path) -> Result<Trace> {
    let durations = load_durations(&dir.join("durations.csv"))?;
    let memory = load_memory(&dir.join("memory.csv"))?;
    let path = dir.join("invocations.csv");
    let mut file = CsvFile::open(&path)?;
    for name in ID_COLUMNS {
        file.column(name)?;
    }
    let id = file.column("HashFunction")?;
    let minute_columns: Vec<usize> =
        (0..file.headers.len()).filter(|&i| !ID_COLUMNS.contains(&&file.headers[i])).collect();
    if minute_columns.is_empty() {
        return Err(Error::file(&path, "has no minute columns after HashOwner, HashApp, HashFunction, Trigger"));
    }
    let mut functions = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let rows: Vec<_> = file.rows().collect::<Result<_>>()?;
    for row in rows {
        if row.record.len() != file.headers.len() {
            return Err(
                file.line_error(&row, format!("has {} fields, the header {}", row.record.len(), file.headers.len()))
            );
        }
        let name = row.record[id].to_string();
        if let Some(first) = seen.insert(name.clone(), row.line) {
            return Err(file.line_error(&row, format!("function {name} appears again (first on line {first})")));
        }
        let counts = minute_columns.iter().map(|&c| file.field::<u32>(&row, c)).collect::<Result<Vec<_>>>()?;
        let durations = *durations.get(&name).ok_or_else(|| {
            file.line_error(&row, format!("function {name} has no row in {}", dir.join("durations.csv").display()))
        })?;
        let memory_mib = *memory.get(&name).ok_or_else(|| {
            file.line_error(&row, format!("function {name} has no row in {}", dir.join("memory.csv").display()))
        })?;
        functions.push(TraceFunction {
            id: name,
            memory_mib: Some(memory_mib),
            arrivals: Arrivals::PerMinute { counts, durations },
        });
    }
    if functions.is_empty() {
        return Err(Error::file(&path, "has no functions"));
    }
    Ok(Trace { path: dir.to_path_buf(), format: Format::Azure2019, minutes: minute_columns.len() as u32, functions })
}

fn load_durations(path: &Path) -> Result<HashMap<String, DurationPercentiles>> {
    let mut file = CsvFile::open(path)?;
    let id = file.column("HashFunction")?;
    let mut columns = [0usize; 7];
    for (slot, level) in columns.iter_mut().zip(LEVELS) {
        *slot = file.column(&format!("percentile_Average_{level}"))?;
    }
    let rows: Vec<_> = file.rows().collect::<Result<_>>()?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let mut values = [0.0; 7];
        for (value, &column) in values.iter_mut().zip(&columns) {
            *value = file.non_negative(&row, column)?;
        }
        if values.windows(2).any(|w| w[1] < w[0]) {
            return Err(file.line_error(&row, format!("percentiles {values:?} are not in increasing order")));
        }
        out.insert(row.record[id].to_string(), DurationPercentiles(values));
    }
    Ok(out)
}

fn load_memory(path: &Path) -> Result<HashMap<String, f64>> {
    let mut file = CsvFile::open(path)?;
    let id = file.column("HashFunction")?;
    let mb = file.column("AverageAllocatedMb_pct100")?;
    let rows: Vec<_> = file.rows().collect::<Result<_>>()?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let value = file.non_negative(&row, mb)?;
        out.insert(row.record[id].to_string(), value);
    }
    Ok(out)
}
