//! baton's own spans: what a call did in the router and in the cell (its queue, the
//! creation of the sandbox it waited for, the proxying), exported to an OpenTelemetry
//! collector over OTLP/gRPC. Off by default (`[traces]` without an `otlp_endpoint`); on, a
//! share of traces is recorded, decided by trace ID (docs/observability.md).
//!
//! The OpenTelemetry SDK does the recording, batching and export; this module keeps its
//! types out of the daemons: a [`Spans`] per process, a [`Span`] per unit of work, ended
//! when dropped (or at a given time, for work measured elsewhere such as a creation on a
//! worker). A span of a trace not sampled records nothing and costs no allocation past
//! the server span's.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
};
use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::http::{TRACEPARENT, TRACESTATE, TraceParent, caller_traceparent, traceparent_value};

/// The `[traces]` section shared by the router and the cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// OTLP/gRPC endpoint of a collector (an OpenTelemetry Collector, Jaeger, Tempo), such
    /// as `http://127.0.0.1:4317`; `""` records no spans. Default: `""`.
    pub otlp_endpoint: String,
    /// Share of traces recorded, 0 to 1. The router decides by trace ID (a caller's
    /// `sampled` flag does not force it); a cell follows the decision its caller sent, so
    /// a trace is recorded whole or not at all. Default: `0.01`.
    pub sample_ratio: f64,
    /// How often recorded spans are sent. Default: `"5s"`.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// Longest one export may take. Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Spans held for export at most; past it new ones are dropped (the collector is down
    /// or slow), never the process's memory. Default: `4096`.
    pub queue_size: usize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: 0.01,
            export_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            queue_size: 4096,
        }
    }
}

impl TracesConfig {
    /// Refuses values that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::field("traces.sample_ratio", "must be between 0 and 1"));
        }
        if !self.otlp_endpoint.is_empty() {
            let uri = http::Uri::from_str(&self.otlp_endpoint).ok();
            let scheme = uri.as_ref().and_then(|u| u.scheme_str());
            if !matches!(scheme, Some("http" | "https")) || uri.as_ref().and_then(|u| u.host()).is_none() {
                return Err(ConfigError::field(
                    "traces.otlp_endpoint",
                    "must be an http:// or https:// URL of an OTLP/gRPC receiver, such as http://127.0.0.1:4317",
                ));
            }
        }
        if self.export_interval.is_zero() || self.export_timeout.is_zero() {
            return Err(ConfigError::field("traces.export_interval", "and export_timeout must be over zero"));
        }
        if self.queue_size == 0 {
            return Err(ConfigError::field("traces.queue_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// Whom a span stands for, as OpenTelemetry's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Serving a request.
    Server,
    /// A request to another process.
    Client,
    /// Work within the process.
    Internal,
}

impl From<Kind> for SpanKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Internal => SpanKind::Internal,
        }
    }
}

struct Inner {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    sampling: Sampling,
    ratio: f64,
}

/// A process's span recorder. Cheap to clone; [`Spans::default`] records nothing.
#[derive(Clone, Default)]
pub struct Spans {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spans").field("on", &self.inner.is_some()).finish()
    }
}

/// Who decides whether a trace is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// By trace ID alone, whatever the caller's flag (the router: its callers are tenants).
    Edge,
    /// As the caller's `traceparent` says, by trace ID when there is none (a cell: its
    /// callers are routers).
    FollowCaller,
}

impl Spans {
    /// Starts exporting as `config` says, for a process of `service` (`baton-router`,
    /// `baton-cell`) with `instance` as its ID; records nothing when no endpoint is set.
    /// Must run within a tokio runtime: exports are sent from it.
    pub fn start(
        config: &TracesConfig,
        service: &'static str,
        instance: &str,
        sampling: Sampling,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if config.otlp_endpoint.is_empty() {
            return Ok(Self::default());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| ConfigError::field("traces.otlp_endpoint", e.to_string()))?;
        let exporter = OnRuntime { inner: exporter, runtime: tokio::runtime::Handle::current() };
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(config.queue_size)
            .with_scheduled_delay(config.export_interval)
            .build();
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batches).build())
            // Whether a trace is recorded is decided before the SDK sees it (`Spans::server`):
            // a trace not recorded never reaches it.
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("baton");
        Ok(Self { inner: Some(Arc::new(Inner { tracer, provider, sampling, ratio: config.sample_ratio })) })
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// A server span named `name` for a request with `headers`: in the caller's trace when
    /// it sent one valid `traceparent`, else in a new one. Whether it is recorded is
    /// decided here, as [`Sampling`] says. A span not recorded (tracing off too) costs the
    /// reading of the caller's `traceparent`, or a new trace's IDs, and no more: what it
    /// passes on is fixed here, once per call.
    pub fn server(&self, name: &'static str, headers: &HeaderMap) -> Span {
        let caller = caller_traceparent(headers);
        let continued = caller.is_some();
        let Some(inner) = &self.inner else {
            // Tracing off: the caller's trace goes on unchanged, else a new one.
            let traceparent = match caller {
                Some((value, _)) => value.clone(),
                None => {
                    let new = TraceParent::new_trace();
                    traceparent_value(new.trace, new.parent, false)
                }
            };
            return Span { at: Some(At::Passing(traceparent)), continued };
        };
        let ids = caller.map_or_else(TraceParent::new_trace, |(_, parsed)| parsed);
        let sampled = match (continued, inner.sampling) {
            (true, Sampling::FollowCaller) => ids.sampled(),
            // A new trace's ID is random: deciding by it is a fair draw.
            _ => sampled(TraceId::from_bytes(ids.trace), inner.ratio),
        };
        if !sampled {
            // What goes on names the caller's span (nothing of ours is recorded), or a new
            // trace, with the decision not to record it: the caller's own value when it
            // says just that already.
            let traceparent = match caller {
                Some((value, parsed)) if value.len() == 55 && parsed.flags == 0 => value.clone(),
                _ => traceparent_value(ids.trace, ids.parent, false),
            };
            return Span { at: Some(At::Passing(traceparent)), continued };
        }
        let parent = if continued {
            let state = headers
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| TraceState::from_str(s).ok())
                .unwrap_or_default();
            let sc = SpanContext::new(
                TraceId::from_bytes(ids.trace),
                SpanId::from_bytes(ids.parent),
                TraceFlags::new(ids.flags & 1),
                true,
                state,
            );
            Context::new().with_remote_span_context(sc)
        } else {
            // A new trace: the SDK makes its IDs (the draw above was as fair as its own).
            Context::new()
        };
        let span =
            inner.tracer.span_builder(name).with_kind(SpanKind::Server).start_with_context(&inner.tracer, &parent);
        Span { at: Some(At::Recording(Context::new().with_span(span), inner.clone())), continued }
    }

    /// Sends what is recorded and stops; later spans are dropped.
    pub async fn shutdown(&self) {
        if let Some(inner) = self.inner.clone() {
            // The SDK waits for its export thread, whose export runs on this runtime.
            let _ = tokio::task::spawn_blocking(move || inner.provider.shutdown()).await;
        }
    }
}

/// Whether a trace is recorded at `ratio`, by its ID: the rule of OpenTelemetry's
/// `TraceIdRatioBased` (the low 63 bits of the ID's last 8 bytes against the ratio's share
/// of 2^63), so every process deciding by ID decides alike. Pure.
pub fn sampled(trace: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace.to_bytes()[8..].try_into().expect("8 bytes"));
    (low >> 1) < bound
}

/// One span: recording, or only passing on a trace context (its trace not sampled, or
/// tracing off), or nothing ([`Span::default`]). Ends when dropped unless ended at a given
/// time.
#[derive(Default)]
pub struct Span {
    at: Option<At>,
    /// Whether the trace is the caller's: else its `tracestate` is not passed on (it
    /// belongs to no valid parent).
    continued: bool,
}

enum At {
    Recording(Context, Arc<Inner>),
    /// Nothing recorded: the `traceparent` passed on, the same for the whole call.
    Passing(HeaderValue),
}

impl Span {
    /// Whether this span is recorded (its trace was sampled).
    pub fn is_recording(&self) -> bool {
        matches!(&self.at, Some(At::Recording(cx, _)) if cx.span().span_context().is_sampled())
    }

    /// A child starting now.
    pub fn child(&self, name: &'static str, kind: Kind) -> Span {
        self.child_from(name, kind, None)
    }

    /// An internal child that started at `start` (work measured elsewhere); end it with
    /// [`Span::end_at`].
    pub fn child_at(&self, name: &'static str, start: SystemTime) -> Span {
        self.child_from(name, Kind::Internal, Some(start))
    }

    fn child_from(&self, name: &'static str, kind: Kind, start: Option<SystemTime>) -> Span {
        let (cx, inner) = match &self.at {
            None => return Span::default(),
            // Not recorded: neither are its children; what propagates stays the same.
            Some(At::Passing(traceparent)) => {
                return Span { at: Some(At::Passing(traceparent.clone())), continued: self.continued };
            }
            Some(At::Recording(cx, inner)) => (cx, inner),
        };
        let mut builder = inner.tracer.span_builder(name).with_kind(kind.into());
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let span = builder.start_with_context(&inner.tracer, cx);
        Span { at: Some(At::Recording(cx.with_span(span), inner.clone())), continued: self.continued }
    }

    fn recording(&self) -> Option<&Context> {
        match &self.at {
            Some(At::Recording(cx, _)) if cx.span().span_context().is_sampled() => Some(cx),
            _ => None,
        }
    }

    /// Sets an attribute (recorded spans only).
    pub fn set(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(cx) = self.recording() {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Records the HTTP status answered (`http.response.status_code`); a 5xx marks the span
    /// as an error with `why`.
    pub fn status(&self, status: u16, why: &'static str) {
        let Some(cx) = self.recording() else { return };
        cx.span().set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            cx.span().set_status(Status::error(why));
        }
    }

    /// Ends the span at `end` (work measured elsewhere).
    pub fn end_at(self, end: SystemTime) {
        if let Some(cx) = self.recording() {
            cx.span().end_with_timestamp(end);
        }
    }

    /// The `traceparent` naming this span as the parent of what it calls (the sampled
    /// flag is the trace's decision), or the one it passes on. `None` for
    /// [`Span::default`].
    pub fn traceparent(&self) -> Option<HeaderValue> {
        match self.at.as_ref()? {
            At::Passing(traceparent) => Some(traceparent.clone()),
            At::Recording(cx, _) => {
                let span = cx.span();
                let sc = span.span_context();
                Some(traceparent_value(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.is_sampled()))
            }
        }
    }

    /// Sets the trace context of what this span calls in `headers`: its
    /// [`Span::traceparent`], replacing any, and the caller's `tracestate` only when the
    /// trace is the caller's. Leaves them alone for [`Span::default`].
    pub fn propagate(&self, headers: &mut HeaderMap) {
        let Some(value) = self.traceparent() else { return };
        if !self.continued {
            headers.remove(&TRACESTATE);
        }
        headers.insert(TRACEPARENT.clone(), value);
    }
}

/// An exporter whose exports run within a tokio runtime: the SDK sends batches from a
/// thread of its own, and the gRPC client needs the runtime's reactor and timers.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: tokio::runtime::Handle,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        InRuntime { runtime: self.runtime.clone(), future: Box::pin(self.inner.export(batch)) }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A future polled within a runtime's context.
struct InRuntime<'a> {
    runtime: tokio::runtime::Handle,
    future: Pin<Box<dyn Future<Output = OTelSdkResult> + Send + 'a>>,
}

impl Future for InRuntime<'_> {
    type Output = OTelSdkResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<OTelSdkResult> {
        let _entered = self.runtime.enter();
        self.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::valid_traceparent;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// What a span of `spans` for a caller's `headers` passes on, to a copy of them.
    fn passed_on(spans: &Spans, headers: &HeaderMap) -> HeaderMap {
        let mut sent = headers.clone();
        spans.server("call", headers).child("proxy", Kind::Client).propagate(&mut sent);
        sent
    }

    #[test]
    fn tracing_off_continues_a_valid_caller_unchanged_and_starts_a_trace_otherwise() {
        let off = Spans::default();
        let mut continued = HeaderMap::new();
        continued.insert("traceparent", HeaderValue::from_static(PARENT));
        continued.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let sent = passed_on(&off, &continued);
        assert_eq!((&sent["traceparent"], &sent["tracestate"]), (&continued["traceparent"], &continued["tracestate"]));

        let mut malformed = HeaderMap::new();
        malformed.insert("traceparent", HeaderValue::from_static("junk"));
        malformed.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let sent = passed_on(&off, &malformed);
        let new = sent["traceparent"].to_str().unwrap();
        assert!(valid_traceparent(new) && new.ends_with("-00"), "{new}");
        assert!(sent.get("tracestate").is_none(), "a state without a valid parent goes");

        let (a, b) = (passed_on(&off, &HeaderMap::new()), passed_on(&off, &HeaderMap::new()));
        assert_ne!(a["traceparent"], b["traceparent"], "each new trace is its own");
        let mut twice = HeaderMap::new();
        twice.append("traceparent", HeaderValue::from_static(PARENT));
        twice.append("traceparent", HeaderValue::from_static(PARENT));
        let sent = passed_on(&off, &twice);
        assert_eq!(sent.get_all("traceparent").iter().count(), 1);
        assert_ne!(sent["traceparent"], PARENT, "a repeated traceparent is not continued");
    }

    #[test]
    fn bad_settings_are_refused_by_field() {
        let field = |c: TracesConfig| match c.validate() {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(TracesConfig { sample_ratio: 1.5, ..Default::default() }), "traces.sample_ratio");
        assert_eq!(
            field(TracesConfig { otlp_endpoint: "127.0.0.1:4317".into(), ..Default::default() }),
            "traces.otlp_endpoint"
        );
        assert_eq!(field(TracesConfig { queue_size: 0, ..Default::default() }), "traces.queue_size");
        TracesConfig { otlp_endpoint: "http://127.0.0.1:4317".into(), ..Default::default() }.validate().expect("valid");
    }

    proptest::proptest! {
        #[test]
        fn a_trace_sampled_at_one_ratio_is_sampled_at_every_higher_one(id: u128, a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let trace = TraceId::from(id);
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(!sampled(trace, low) || sampled(trace, high));
            proptest::prop_assert!(sampled(trace, 1.0));
            proptest::prop_assert!(!sampled(trace, 0.0));
        }

        #[test]
        fn a_traceparent_written_reads_back(trace: [u8; 16], span: [u8; 8], flag: bool) {
            let value = traceparent_value(trace, span, flag);
            let text = value.to_str().unwrap();
            let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let flags = if flag { "01" } else { "00" };
            proptest::prop_assert_eq!(text, format!("00-{}-{}-{flags}", hex(&trace), hex(&span)));
        }
    }

    #[test]
    fn the_share_sampled_is_the_ratio() {
        let ids = (0..20_000u64).map(|i| TraceId::from(u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 1));
        let share = ids.filter(|&t| sampled(t, 0.25)).count() as f64 / 20_000.0;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    fn traces(ratio: f64) -> TracesConfig {
        // Nothing listens there: nothing is sampled or ended in these tests.
        let short = Duration::from_millis(50);
        TracesConfig {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            sample_ratio: ratio,
            export_interval: short,
            export_timeout: short,
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trace_not_sampled_passes_on_its_ids_with_the_decision() {
        const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(SAMPLED));
        // At the edge, the caller's flag does not count: ratio 0 records nothing.
        let edge = Spans::start(&traces(0.0), "baton-router", "r", Sampling::Edge).unwrap();
        let span = edge.server("invoke", &headers);
        assert!(!span.is_recording());
        let mut sent = HeaderMap::new();
        span.child("route", Kind::Client).propagate(&mut sent);
        assert_eq!(sent["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        // Without a caller, a new trace, not recorded, valid.
        let mut sent = HeaderMap::new();
        edge.server("invoke", &HeaderMap::new()).propagate(&mut sent);
        let text = sent["traceparent"].to_str().unwrap();
        assert!(valid_traceparent(text) && text.ends_with("-00"), "{text}");
        // Behind the edge, the caller's flag is the decision.
        headers
            .insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        let cell = Spans::start(&traces(1.0), "baton-cell", "c", Sampling::FollowCaller).unwrap();
        assert!(!cell.server("call", &headers).is_recording());
        headers.insert("traceparent", HeaderValue::from_static(SAMPLED));
        assert!(cell.server("call", &headers).is_recording());
        edge.shutdown().await;
        cell.shutdown().await;
    }

    #[test]
    fn spans_off_record_nothing_and_no_span_leaves_headers_alone() {
        assert!(!Spans::default().server("invoke", &HeaderMap::new()).is_recording());
        let mut headers = HeaderMap::new();
        Span::default().child("proxy", Kind::Client).propagate(&mut headers);
        assert!(headers.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_span_is_the_callers_child_and_keeps_its_state() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(PARENT));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let cell = Spans::start(&traces(1.0), "baton-cell", "c", Sampling::FollowCaller).unwrap();
        let span = cell.server("call", &headers);
        assert!(span.is_recording());
        let sent = passed_on(&cell, &headers);
        let ours = crate::http::TraceParent::parse(sent["traceparent"].as_bytes()).expect("valid");
        let theirs = crate::http::TraceParent::parse(PARENT.as_bytes()).unwrap();
        assert_eq!((ours.trace, ours.flags), (theirs.trace, 1), "the caller's trace, recorded");
        assert_ne!(ours.parent, theirs.parent, "our span is the parent of what we call");
        assert_eq!(sent["tracestate"], "vendor=1");
        drop(span);
        cell.shutdown().await;
    }
}
