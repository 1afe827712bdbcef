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

use http::header::{HeaderMap, HeaderName, HeaderValue};
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
use crate::http::{random_bytes, traceparent_value, valid_traceparent};

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
    /// decided here, as [`Sampling`] says; a span not recorded costs no more than the
    /// IDs it passes on.
    pub fn server(&self, name: &'static str, headers: &HeaderMap) -> Span {
        let Some(inner) = &self.inner else { return Span::default() };
        let caller = caller(headers);
        let sampled = match (&caller, inner.sampling) {
            (Some(sc), Sampling::FollowCaller) => sc.is_sampled(),
            (Some(sc), Sampling::Edge) => sampled(sc.trace_id(), inner.ratio),
            // A new trace's ID is random: deciding by a fresh random one is the same draw.
            (None, _) => sampled(TraceId::from_bytes(random_bytes()), inner.ratio),
        };
        if !sampled {
            // What goes on names the caller's span (nothing of ours is recorded), or a new
            // trace, with the decision not to record it.
            let (trace, span) = match &caller {
                Some(sc) => (sc.trace_id(), sc.span_id()),
                None => new_ids(),
            };
            return Span { at: Some(At::Unsampled { trace, span }) };
        }
        let parent = caller.map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc));
        let span =
            inner.tracer.span_builder(name).with_kind(SpanKind::Server).start_with_context(&inner.tracer, &parent);
        Span { at: Some(At::Recording(Context::new().with_span(span), inner.clone())) }
    }

    /// Sends what is recorded and stops; later spans are dropped.
    pub async fn shutdown(&self) {
        if let Some(inner) = self.inner.clone() {
            // The SDK waits for its export thread, whose export runs on this runtime.
            let _ = tokio::task::spawn_blocking(move || inner.provider.shutdown()).await;
        }
    }
}

/// The caller's span, from its one valid `traceparent` (and `tracestate`).
fn caller(headers: &HeaderMap) -> Option<SpanContext> {
    let mut given = headers.get_all("traceparent").iter();
    let (Some(one), None) = (given.next(), given.next()) else { return None };
    let text = one.to_str().ok().filter(|t| valid_traceparent(t))?;
    let mut parts = text.split('-').skip(1);
    let trace = TraceId::from_hex(parts.next()?).ok()?;
    let span = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace, span, TraceFlags::new(flags & 1), true, state))
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

/// A new trace's IDs, neither all zeros.
fn new_ids() -> (TraceId, SpanId) {
    let bytes: [u8; 24] = random_bytes();
    let mut trace: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
    let mut span: [u8; 8] = bytes[16..].try_into().expect("8 bytes");
    trace[15] |= 1;
    span[7] |= 1;
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// One span: recording, part of a trace not sampled, or nothing (tracing off). Ends when
/// dropped unless ended at a given time.
#[derive(Default)]
pub struct Span {
    at: Option<At>,
}

enum At {
    Recording(Context, Arc<Inner>),
    /// A trace not recorded: the IDs passed on, nothing else.
    Unsampled {
        trace: TraceId,
        span: SpanId,
    },
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
            Some(At::Unsampled { trace, span }) => {
                return Span { at: Some(At::Unsampled { trace: *trace, span: *span }) };
            }
            Some(At::Recording(cx, inner)) => (cx, inner),
        };
        let mut builder = inner.tracer.span_builder(name).with_kind(kind.into());
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let span = builder.start_with_context(&inner.tracer, cx);
        Span { at: Some(At::Recording(cx.with_span(span), inner.clone())) }
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

    /// The `traceparent` naming this span as the parent of what it calls: the sampled flag
    /// is the trace's decision. `None` when tracing is off.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        match self.at.as_ref()? {
            At::Unsampled { trace, span } => Some(traceparent_value(trace.to_bytes(), span.to_bytes(), false)),
            At::Recording(cx, _) => {
                let span = cx.span();
                let sc = span.span_context();
                Some(traceparent_value(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.is_sampled()))
            }
        }
    }

    /// Puts [`Span::traceparent`] in `headers` (the caller's `tracestate` stays as it is);
    /// leaves them alone when tracing is off.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(value) = self.traceparent() {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
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

    #[test]
    fn a_valid_traceparent_is_the_parent_and_anything_else_is_none() {
        let mut headers = HeaderMap::new();
        headers
            .insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let sc = caller(&headers).expect("valid");
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=1");
        headers
            .append("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(caller(&headers).is_none(), "two parents are none");
        headers.insert("traceparent", HeaderValue::from_static("00-junk"));
        assert!(caller(&headers).is_none());
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
    fn spans_off_record_nothing_and_leave_headers_alone() {
        let spans = Spans::default();
        let span = spans.server("invoke", &HeaderMap::new());
        assert!(!span.is_recording());
        let mut headers = HeaderMap::new();
        span.child("proxy", Kind::Client).propagate(&mut headers);
        assert!(headers.is_empty());
    }
}
