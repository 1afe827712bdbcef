//! The 2021 invocation-level layout: `app,func,end_timestamp,duration`, times in seconds
//! from the trace's start; a call starts at `end_timestamp - duration`.

use std::collections::HashMap;
use std::path::Path;

use super::csvfile::CsvFile;
use super::{Arrivals, Format, Trace, TraceFunction, TracedCall};
use crate::error::{Error, Result};

pub(super) fn load(path: &Path) -> Result<Trace> {
    let mut file = CsvFile::open(path)?;
    let (app, func) = (file.column("app")?, file.column("func")?);
    let (end, duration) = (file.column("end_timestamp")?, file.column("duration")?);
    let rows: Vec<_> = file.rows().collect::<Result<_>>()?;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut functions: Vec<(String, Vec<TracedCall>)> = Vec::new();
    let mut last_start = 0.0f64;
    for row in rows {
        let end_s = file.non_negative(&row, end)?;
        let duration_s = file.non_negative(&row, duration)?;
        let id = format!("{}/{}", &row.record[app], &row.record[func]);
        if row.record[app].is_empty() || row.record[func].is_empty() {
            return Err(file.line_error(&row, "app and func must not be empty"));
        }
        // A call that ended before it could have started began with the trace.
        let start_s = (end_s - duration_s).max(0.0);
        last_start = last_start.max(start_s);
        let slot = *index.entry(id.clone()).or_insert_with(|| {
            functions.push((id, Vec::new()));
            functions.len() - 1
        });
        functions[slot].1.push(TracedCall { start_s, duration_s });
    }
    if functions.is_empty() {
        return Err(Error::file(path, "has no calls"));
    }
    let functions = functions
        .into_iter()
        .map(|(id, mut calls)| {
            calls.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
            TraceFunction { id, memory_mib: None, arrivals: Arrivals::Calls(calls) }
        })
        .collect();
    let minutes = (last_start / 60.0).floor() as u32 + 1;
    Ok(Trace { path: path.to_path_buf(), format: Format::Azure2021, minutes, functions })
}
