//! Starts a router from its config: follows the shard map, serves the tenant API and
//! invocations, and the admin endpoints (ready once the first map has arrived). [`start`]
//! takes listeners already bound (a test binds port 0 and keeps the addresses); `main`
//! binds them from the configuration with [`Listeners::bind`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_service::spans::Sampling;
use baton_service::{AdminServer, ConfigError, Readiness};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RouterConfig;
use crate::context::Router;

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] baton_service::ConfigError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] baton_service::BindError),
    /// The async queue could not be opened.
    #[error("async queue: {0}")]
    Calls(#[from] crate::calls::StoreError),
}

/// Opens the async queue `[async]` names: Redis when a URL is given, else the file.
async fn open_calls(section: &crate::config::AsyncSection) -> Result<Arc<dyn crate::calls::CallStore>, StartError> {
    if section.lease < Duration::from_secs(1) {
        return Err(ConfigError::field("async.lease", "must be at least 1s").into());
    }
    if section.concurrency == 0 {
        return Err(ConfigError::field("async.concurrency", "must be at least 1").into());
    }
    if section.retention.is_zero() || section.dead_letter_retention.is_zero() {
        return Err(ConfigError::field("async.retention", "retentions must be above zero").into());
    }
    if section.redis_url.is_empty() {
        return Ok(Arc::new(crate::calls::embedded::EmbeddedCalls::open(&section.path)?));
    }
    let prefix = &section.redis_prefix;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ConfigError::field("async.redis_prefix", "must be letters, digits, '-' and '_'").into());
    }
    let consumer = format!("router-{:016x}", rand::random::<u64>());
    let store = crate::calls::redis_store::RedisCalls::connect(&section.redis_url, prefix, consumer, section.lease);
    Ok(Arc::new(store.await?))
}

/// The router's two listeners.
pub struct Listeners {
    /// The tenant API and invocations.
    pub http: TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `router.listen` and `router.admin_listen`.
    pub async fn bind(config: &RouterConfig) -> Result<Self, StartError> {
        let (http, _) = baton_service::bind("router.listen", config.router.listen).await?;
        let (admin, _) = baton_service::bind("router.admin_listen", config.router.admin_listen).await?;
        Ok(Self { http, admin })
    }
}

/// A started router.
pub struct RunningRouter {
    /// Where the tenant API and invocations are served.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    spans: baton_service::Spans,
}

impl RunningRouter {
    /// Graceful shutdown: stop accepting, let in-flight requests finish, stop following.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.spans.shutdown().await;
    }
}

/// Starts a router from `config` on `listeners`.
pub async fn start(config: RouterConfig, listeners: Listeners) -> Result<RunningRouter, StartError> {
    if config.metrics.enabled {
        baton_service::admin::metrics_handle();
    }
    let section = config.router;
    if section.max_spec_bytes > baton_model::function::MAX_SPEC_BYTES {
        // The shard manager refuses larger specs whatever the router lets through.
        let most = baton_model::function::MAX_SPEC_BYTES;
        return Err(ConfigError::field("router.max_spec_bytes", format!("is more than a spec may be ({most})")).into());
    }
    if config.metrics.top_window.is_zero() {
        return Err(ConfigError::field("metrics.top_window", "must be above zero").into());
    }
    crate::metrics::configure(&config.metrics);
    let tls = baton_service::tls::Tls::load(&config.tls, baton_service::tls::Role::Router)?;
    let manager = baton_shardmap::Replicas::new(&section.shard_managers, &tls)
        .map_err(|e| ConfigError::field("router.shard_managers", e.to_string()))?;
    let (stop, stopped) = watch::channel(false);
    let view = baton_shardmap::follow(section.shard_managers.clone(), tls.clone(), None, stopped.clone());
    let addr = listeners.http.local_addr().map_err(|source| baton_service::BindError {
        what: "router.listen",
        addr: section.listen,
        source,
    })?;
    let spans = baton_service::Spans::start(&config.traces, "baton-router", &addr.to_string(), Sampling::Edge)?;
    let readiness = Readiness::default();
    let mut admin = AdminServer::on(listeners.admin, readiness.clone());
    if config.metrics.enabled {
        baton_service::catalog::install(&[crate::metrics::CATALOG, baton_shardmap::METRICS]);
    } else {
        admin = admin.without_metrics();
    }
    let admin_addr = admin.local_addr();
    let mut tasks = Vec::new();
    tasks.push(admin.spawn(stopped.clone()));
    // Ready once a map has arrived; the epoch is exported as a gauge.
    let (ready_view, mut ready_stop) = (view.clone(), stopped.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            readiness.set(ready_view.synced());
            crate::metrics::map_epoch(ready_view.epoch().0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = ready_stop.wait_for(|s| *s) => {
                    readiness.set(false);
                    return;
                }
            }
        }
    }));
    let (drain, header_read) = (section.drain_timeout, section.header_read_timeout);
    let calls = open_calls(&config.async_calls).await?;
    let router = Router {
        view,
        manager: Arc::new(manager),
        upstream: crate::context::upstream(&tls, section.upstream_protocol),
        config: Arc::new(section),
        seen: Arc::default(),
        images: Arc::new(baton_image::Resolver::new(config.images.resolver())),
        spans: spans.clone(),
        call_ids: Arc::new(baton_service::http::CallIds::new()),
        calls: Some(calls.clone()),
        callback_private_networks: config.async_calls.callback_private_networks,
    };
    let settings = crate::calls::delivery::Settings {
        lease: config.async_calls.lease,
        retention: crate::calls::decide::Retention {
            done: config.async_calls.retention,
            dead: config.async_calls.dead_letter_retention,
        },
        max_result_bytes: config.async_calls.max_result_bytes,
        concurrency: config.async_calls.concurrency,
        callback_private_networks: config.async_calls.callback_private_networks,
    };
    let delivery = crate::calls::delivery::Delivery::new(router.clone(), calls, settings);
    tasks.push(tokio::spawn(delivery.run(stopped.clone(), drain)));
    let handler = move |req| {
        let router = router.clone();
        async move { router.handle(req).await }
    };
    let public = baton_service::http::Access::public("router");
    tasks.push(tokio::spawn(baton_service::http::serve(listeners.http, public, handler, stopped, drain, header_read)));
    tracing::info!(%addr, %admin_addr, "router started");
    Ok(RunningRouter { addr, admin_addr, stop, tasks, spans })
}
