//! The admin HTTP endpoints every process serves: `/metrics` (Prometheus text), `/healthz`
//! (the process is alive) and `/readyz` (it is ready to take traffic).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds, for every `_seconds` histogram: 100 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of histograms of how many items one operation took (names ending in
/// `_commands`, such as the shard manager's commands per raft entry).
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Whether the process takes traffic. Cheap to clone; flipped by the process as it starts
/// and stops.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_commands".into()), COUNT_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (several in-process servers in one
            // test); the handle still renders this recorder's view, which is then empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Renders families of series computed at each scrape, appended to `/metrics`.
type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound admin server, not yet serving.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    extra: Option<Extra>,
    /// Whether `/metrics` renders the process's recorder (off: the process records none).
    metrics: bool,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, readiness: Readiness) -> std::io::Result<Self> {
        Ok(Self::on(tokio::net::TcpListener::bind(addr).await?, readiness))
    }

    /// Serves on an already-bound `listener` (a test binds port 0 and keeps the address).
    pub fn on(listener: tokio::net::TcpListener, readiness: Readiness) -> Self {
        Self { listener, readiness, extra: None, metrics: true }
    }

    /// Appends what `extra` renders (families in Prometheus's text format, none of them
    /// the recorder's) to every `/metrics` answer: series computed at the scrape, such as
    /// a bounded top-k that must leave no series behind when a key drops out of it.
    pub fn with_metrics(mut self, extra: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.extra = Some(Arc::new(extra));
        self
    }

    /// Serves an empty `/metrics` and installs no recorder: the process records no
    /// metrics (`[metrics] enabled = false`, for measuring what they cost).
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self
    }

    fn router(handle: Option<PrometheusHandle>, extra: Option<Extra>, readiness: Readiness) -> Router {
        let metrics = move || {
            let mut text = handle.as_ref().map(PrometheusHandle::render).unwrap_or_default();
            if let Some(extra) = &extra {
                text.push_str(&extra());
            }
            std::future::ready(text)
        };
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| std::future::ready("ok\n")))
            .route("/readyz", get(ready))
            .with_state(readiness)
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let handle = self.metrics.then(metrics_handle);
        let router = Self::router(handle, self.extra, self.readiness);
        axum::serve(self.listener, router).with_graceful_shutdown(shutdown).await
    }

    /// Serves in a task of its own until `stop` turns true.
    pub fn spawn(self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let until = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = self.serve(until).await {
                tracing::error!(error = %e, "the admin endpoints failed");
            }
        })
    }
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}
