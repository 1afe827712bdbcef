//! One row per call: what was asked, what came back, and how long it took.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// No complete answer within the call timeout.
    Timeout,
    /// A 4xx answer.
    Http4xx,
    /// A 5xx answer.
    Http5xx,
    /// The connection could not be made or broke.
    Connection,
    /// Any other status (1xx, 3xx).
    OtherStatus,
}

/// One call as sent and answered.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Phase label (`trace`, `rate=200`, `warmup`, `burst`).
    pub phase: Arc<str>,
    /// Function index in the run's function list.
    pub function: u32,
    /// Sequence number within the run.
    pub invocation: u64,
    /// Planned send time, from the start of the phase.
    pub scheduled: Duration,
    /// How late the send was against the plan (the generator's own lag).
    pub lag: Duration,
    /// Wall-clock send time, microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// Runtime asked for, milliseconds.
    pub requested_ms: u32,
    /// From sending the request to the end of the response body.
    pub response: Duration,
    /// Execution time the function reported (`X-Execution-Time-Us`).
    pub actual_us: Option<u64>,
    /// HTTP status, when one came.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
    /// `X-Baton-Cold-Start`, when given: it waited for a sandbox created for it.
    pub cold: Option<bool>,
    /// Whether it waited in the cell's queue at all (`Server-Timing`'s `queue` entry above
    /// zero), when given: cold starts, and calls queued behind busy sandboxes.
    pub queued: Option<bool>,
    /// `X-Baton-Cell`, when given.
    pub cell: Option<String>,
}

/// The CSV columns, in [`Row`]'s order.
const COLUMNS: [&str; 15] = [
    "phase",
    "instance",
    "invocationID",
    "startTime",
    "requestedDuration",
    "responseTime",
    "actualDuration",
    "connectionTimeout",
    "functionTimeout",
    "status",
    "outcome",
    "cell",
    "coldStart",
    "queued",
    "scheduleLag",
];

/// The CSV row: InVitro's result columns (times in microseconds) and baton's own.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    phase: &'a str,
    instance: &'a str,
    #[serde(rename = "invocationID")]
    invocation_id: String,
    start_time: u64,
    requested_duration: u64,
    response_time: u64,
    actual_duration: Option<u64>,
    connection_timeout: bool,
    function_timeout: bool,
    status: Option<u16>,
    outcome: Outcome,
    cell: Option<&'a str>,
    cold_start: Option<bool>,
    queued: Option<bool>,
    schedule_lag: u64,
}

/// Writes `records` to `path` as CSV; `names` maps function indices to names.
pub fn write_csv(path: &Path, records: &[CallRecord], names: &[String]) -> Result<()> {
    let mut writer =
        csv::WriterBuilder::new().has_headers(false).from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    // The header even when no call was sent.
    writer.write_record(COLUMNS).map_err(|e| Error::file(path, e.to_string()))?;
    for r in records {
        let instance = names.get(r.function as usize).map_or("", String::as_str);
        writer
            .serialize(Row {
                phase: &r.phase,
                instance,
                invocation_id: format!("{instance}-{}", r.invocation),
                start_time: r.start_unix_us,
                requested_duration: u64::from(r.requested_ms) * 1000,
                response_time: r.response.as_micros() as u64,
                actual_duration: r.actual_us,
                connection_timeout: r.outcome == Outcome::Connection,
                function_timeout: r.outcome == Outcome::Timeout || r.status == Some(504),
                status: r.status,
                outcome: r.outcome,
                cell: r.cell.as_deref(),
                cold_start: r.cold,
                queued: r.queued,
                schedule_lag: r.lag.as_micros() as u64,
            })
            .map_err(|e| Error::file(path, e.to_string()))?;
    }
    writer.flush().map_err(|e| Error::io(path, e))
}
