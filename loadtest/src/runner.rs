//! The open-loop sender. Every call is sent at its planned instant on an absolute clock
//! (a late wake-up does not push later calls back) and runs in its own task, so a slow
//! answer never delays the next send: no coordinated omission.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;
use tokio::sync::{mpsc, watch};

use crate::record::{CallRecord, Outcome};
use crate::schedule::PlannedCall;

/// How the function spends the requested runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Busy-spin (one core per running call, as in the trace's functions).
    Spin,
    /// Sleep (for machines smaller than the trace).
    Sleep,
}

impl Execution {
    fn header(self) -> &'static str {
        match self {
            Execution::Spin => "spin",
            Execution::Sleep => "sleep",
        }
    }
}

/// Sends planned calls to one target.
#[derive(Clone)]
pub struct Runner {
    client: Client<HttpConnector, Empty<Bytes>>,
    uris: Arc<[Uri]>,
    execution: Execution,
    timeout: Duration,
    authorization: Option<http::HeaderValue>,
}

impl Runner {
    /// A runner calling function `i` at `uris[i]`.
    pub fn new(uris: Vec<Uri>, execution: Execution, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { client, uris: uris.into(), execution, timeout, authorization: None }
    }

    /// Sends `value` as every call's `Authorization` header (a router's API key).
    pub fn with_authorization(mut self, value: Option<http::HeaderValue>) -> Self {
        self.authorization = value;
        self
    }

    /// Sends `calls` on their schedule and returns one record per call sent, in completion
    /// order. Stops sending when `stop` turns true; calls already sent are awaited.
    pub async fn run(
        &self,
        phase: &str,
        calls: &[PlannedCall],
        first_invocation: u64,
        progress: &ProgressBar,
        stop: &mut watch::Receiver<bool>,
    ) -> Vec<CallRecord> {
        let phase: Arc<str> = phase.into();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A short lead so the first calls are not already late.
        let start = tokio::time::Instant::now() + Duration::from_millis(20);
        let dispatch = async {
            for (k, call) in calls.iter().enumerate() {
                if *stop.borrow() {
                    break;
                }
                let due = start + call.at;
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep_until(due) => {}
                }
                let (runner, tx, phase, call) = (self.clone(), tx.clone(), phase.clone(), *call);
                let invocation = first_invocation + k as u64;
                tokio::spawn(async move {
                    let record = runner.call(phase, call, invocation, due).await;
                    let _ = tx.send(record);
                });
            }
            drop(tx);
        };
        let collect = async {
            let mut records = Vec::with_capacity(calls.len());
            while let Some(record) = rx.recv().await {
                progress.inc(1);
                records.push(record);
            }
            records
        };
        let ((), records) = tokio::join!(dispatch, collect);
        records
    }

    async fn call(&self, phase: Arc<str>, call: PlannedCall, invocation: u64, due: tokio::time::Instant) -> CallRecord {
        let mut request = Request::get(self.uris[call.function as usize].clone())
            .header("x-duration-ms", call.requested_ms)
            .header("x-duration-mode", self.execution.header())
            .body(Empty::new())
            .expect("a GET with valid headers");
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
        // Lag and send time are taken here, in the call's own task, so a busy runtime's
        // delay between waking and sending shows as lag rather than hiding.
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        let start_unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let sent = Instant::now();
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            // A body that breaks off counts as a broken connection.
            body.collect().await.map_err(|_| ())?;
            Ok::<_, CallError>(parts)
        };
        let result = tokio::time::timeout(self.timeout, exchange).await;
        let response = sent.elapsed();
        let mut record = CallRecord {
            phase,
            function: call.function,
            invocation,
            scheduled: call.at,
            lag,
            start_unix_us,
            requested_ms: call.requested_ms,
            response,
            actual_us: None,
            status: None,
            outcome: Outcome::Timeout,
            cold: None,
            queued: None,
            cell: None,
        };
        match result {
            Err(_) => {}
            Ok(Err(_)) => record.outcome = Outcome::Connection,
            Ok(Ok(parts)) => {
                let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
                record.status = Some(parts.status.as_u16());
                record.outcome = match parts.status.as_u16() {
                    200..=299 => Outcome::Ok,
                    400..=499 => Outcome::Http4xx,
                    500..=599 => Outcome::Http5xx,
                    _ => Outcome::OtherStatus,
                };
                record.actual_us = header("x-execution-time-us").and_then(|v| v.parse().ok());
                record.cold = header(baton_model::headers::COLD_START).map(|v| v == "true");
                record.queued = header("server-timing").and_then(queued);
                record.cell = header(baton_model::headers::CELL).map(str::to_string);
            }
        }
        record
    }
}

/// Any failure of the exchange itself (connect, send, receive).
struct CallError;

impl From<hyper_util::client::legacy::Error> for CallError {
    fn from(_: hyper_util::client::legacy::Error) -> Self {
        CallError
    }
}

impl From<()> for CallError {
    fn from(_: ()) -> Self {
        CallError
    }
}

/// Whether a `Server-Timing` value says the call queued (`queue;dur=` above zero); `None`
/// when it has no `queue` entry.
fn queued(timing: &str) -> Option<bool> {
    let entry = timing.split(',').map(str::trim).find(|e| e.starts_with("queue;"))?;
    let dur: f64 = entry.split_once("dur=")?.1.trim().parse().ok()?;
    Some(dur > 0.0)
}

#[cfg(test)]
mod queue_tests {
    use super::queued;

    #[test]
    fn the_queue_entry_of_server_timing_says_whether_a_call_queued() {
        assert_eq!(queued("queue;dur=0.000, proxy;dur=0.412"), Some(false));
        assert_eq!(queued("queue;dur=3.125, create;dur=2.900, proxy;dur=0.5"), Some(true));
        assert_eq!(queued("proxy;dur=1"), None);
        assert_eq!(queued("queue;dur=x"), None);
    }
}
