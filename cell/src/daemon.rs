//! Assembles a cell process from its config: the store, the control plane and its gRPC
//! service, the data plane, and the admin endpoints, as the role asks. [`start`] takes
//! listeners already bound (a test binds port 0 and keeps the addresses) and returns a
//! handle; `main` binds them from the configuration with [`Listeners::bind`].

use std::net::SocketAddr;
use std::sync::Arc;

use baton_proto::cell::cell_control_server::CellControlServer;
use baton_service::spans::Sampling;
use baton_service::{AdminServer, ConfigError, Readiness};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{CellConfig, Role};
use crate::control_plane::{ControlPlane, ControlPlaneSettings, StateConfig};
use crate::data_plane::follower::FollowerSettings;
use crate::data_plane::server::{DataPlaneError, DataPlaneSettings, RunningDataPlane};
use crate::store::{CellStore, EmbeddedStore, RedisStore, Store, StoreError};

/// Why a cell could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("opening the cell's store: {0}")]
    Store(#[from] StoreError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] baton_service::BindError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] baton_service::ConfigError),
    /// The data plane could not start.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

/// A cell process's listeners: the ones its role needs.
pub struct Listeners {
    /// CellControl gRPC (roles `control` and `all`).
    pub control: Option<TcpListener>,
    /// The invocation ingress (roles `data` and `all`).
    pub http: Option<TcpListener>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds what `config`'s role needs: `control_plane.listen`, `data_plane.listen` and
    /// `cell.admin_listen`.
    pub async fn bind(config: &CellConfig) -> Result<Self, StartError> {
        let role = config.cell.role;
        let control = match role {
            Role::Control | Role::All => {
                Some(baton_service::bind("control_plane.listen", config.control_plane.listen).await?.0)
            }
            Role::Data => None,
        };
        let http = match role {
            Role::Data | Role::All => Some(baton_service::bind("data_plane.listen", config.data_plane.listen).await?.0),
            Role::Control => None,
        };
        let admin = baton_service::bind("cell.admin_listen", config.cell.admin_listen).await?.0;
        Ok(Self { control, http, admin })
    }
}

/// A started cell process.
pub struct RunningCell {
    /// Where CellControl listens (roles `control` and `all`).
    pub control_addr: Option<SocketAddr>,
    /// Where the invocation ingress listens (roles `data` and `all`).
    pub http_addr: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The control plane, when this process runs one.
    pub control_plane: Option<ControlPlane>,
    /// The store's write counter, when this process runs the control plane.
    pub store: Option<CellStore>,
    readiness: Readiness,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    data_plane: Option<RunningDataPlane>,
    spans: baton_service::Spans,
}

impl RunningCell {
    /// Graceful shutdown: not ready, stop accepting, drain in-flight requests, stop loops.
    pub async fn shutdown(self) {
        self.readiness.set(false);
        let _ = self.stop.send(true);
        if let Some(dp) = self.data_plane {
            dp.stopped().await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.spans.shutdown().await;
    }
}

async fn open_store(config: &CellConfig) -> Result<Arc<dyn Store>, StoreError> {
    if config.store.redis_url.is_empty() {
        Ok(Arc::new(EmbeddedStore::open(&config.store.path)?))
    } else {
        Ok(Arc::new(RedisStore::connect(&config.store.redis_url, &format!("baton:cell:{}", config.cell.id)).await?))
    }
}

/// Starts a cell process from `config` on `listeners`.
pub async fn start(config: CellConfig, listeners: Listeners) -> Result<RunningCell, StartError> {
    // The recorder comes first, so nothing counted during start-up is lost.
    if config.metrics.enabled {
        baton_service::admin::metrics_handle();
    }
    let spans = baton_service::Spans::start(&config.traces, "baton-cell", &config.cell.id, Sampling::FollowCaller)?;
    let (stop, stopped) = watch::channel(false);
    let readiness = Readiness::default();
    let mut tasks = Vec::new();
    let (control_listener, http_listener) = match (config.cell.role, listeners.control, listeners.http) {
        (Role::All, Some(control), Some(http)) => (Some(control), Some(http)),
        (Role::Control, Some(control), _) => (Some(control), None),
        (Role::Data, _, Some(http)) => (None, Some(http)),
        (role, _, _) => {
            return Err(ConfigError::field("cell.role", format!("{role:?}: a listener it needs was not given")).into());
        }
    };
    // In a federation every process of the cell follows the shard map: the control plane
    // to run what the map gives the cell, the data plane to fence calls.
    let replicas: Vec<String> = config
        .federation
        .shard_manager
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect();
    let federated = !replicas.is_empty();
    let tls = baton_service::tls::Tls::load(&config.tls, baton_service::tls::Role::Cell)?;
    let (map_events, map_events_rx) = tokio::sync::mpsc::unbounded_channel();
    let map = federated.then(|| {
        let events = control_listener.is_some().then_some(map_events);
        baton_shardmap::follow(replicas.clone(), tls.clone(), events, stopped.clone())
    });
    let me = baton_shardmap::CellId(config.cell.id.clone());

    let (mut control_addr, mut control_plane, mut store) = (None, None, None);
    if let Some(listener) = control_listener {
        let cell_store = CellStore::new(open_store(&config).await?);
        let c = &config.control_plane;
        let settings = ControlPlaneSettings {
            state: StateConfig {
                worker_timeout: c.worker_timeout,
                load_expiry: c.load_expiry,
                scale_down_drain: c.scale_down_drain,
                create_retry: c.create_retry,
                placement: c.placement,
                id_prefix: sandbox_prefix(),
            },
            autoscale_interval: c.autoscale_interval,
            sandbox_pids: c.sandbox_pids,
            worker_call_timeout: c.worker_call_timeout,
            image_pull_timeout: c.image_pull_timeout,
            load_report_interval: c.load_report_interval,
            tls: tls.clone(),
        };
        let addr = listener.local_addr().map_err(|source| baton_service::BindError {
            what: "control_plane.listen",
            addr: c.listen,
            source,
        })?;
        let plane = ControlPlane::start(settings, cell_store.clone(), stopped.clone()).await?;
        let service = CellControlServer::new(plane.clone())
            .max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(baton_proto::MAX_MESSAGE_BYTES);
        let routes = tonic::service::Routes::new(service);
        let (tls, policy) = (tls.clone(), crate::access::policy);
        tasks.push(baton_service::grpc::spawn("CellControl", listener, routes, stopped.clone(), tls, policy));
        control_addr = Some(addr);
        control_plane = Some(plane);
        store = Some(cell_store);
    }

    let mut data_plane = None;
    if let Some(listener) = http_listener {
        let d = &config.data_plane;
        let target = match (&control_addr, d.control_plane.is_empty()) {
            (_, false) => d.control_plane.clone(),
            (Some(addr), true) => format!("http://{addr}"),
            (None, true) => {
                return Err(ConfigError::field("data_plane.control_plane", "is required for role \"data\"").into());
            }
        };
        let id = if d.id.is_empty() { format!("{}-dp", config.cell.id) } else { d.id.clone() };
        let settings = DataPlaneSettings {
            follower: FollowerSettings {
                id,
                http_address: String::new(),
                queue_capacity: d.queue_capacity,
                queue_timeout: d.queue_timeout,
                policy: d.balance,
            },
            control_plane: target,
            max_body_bytes: d.max_body_bytes,
            drain_timeout: d.drain_timeout,
            header_read_timeout: d.header_read_timeout,
            body_read_timeout: d.body_read_timeout,
            fence: map.clone().map(|view| crate::data_plane::fence::Fence::new(view, me.clone())),
            tls: tls.clone(),
            spans: spans.clone(),
        };
        data_plane = Some(crate::data_plane::server::start(settings, listener, stopped.clone()).await?);
    }

    let mut admin = AdminServer::on(listeners.admin, readiness.clone());
    if !config.metrics.enabled {
        admin = admin.without_metrics();
    } else {
        baton_service::catalog::install(&[crate::metrics::CATALOG, baton_shardmap::METRICS]);
    }
    if let Some(plane) = control_plane.clone().filter(|_| config.metrics.enabled) {
        let top = config.metrics.top_functions;
        admin =
            admin.with_metrics(move || crate::metrics::render_function_sandboxes(&plane.read(|st| st.busiest(top))));
    }
    let admin_addr = admin.local_addr();
    tasks.push(admin.spawn(stopped.clone()));
    let http_addr = data_plane.as_ref().map(|d| d.http_addr);
    let f = &config.federation;
    // The process with the control plane registers the cell and runs what it is given.
    if let (Some(view), Some(control), Some(plane)) = (map, control_addr, control_plane.clone()) {
        let data_planes = match (&f.data_planes[..], http_addr) {
            ([], Some(addr)) => vec![format!("{}://{addr}", tls.scheme())],
            ([], None) => return Err(ConfigError::field("federation.data_planes", "none given and none here").into()),
            (given, _) => given.to_vec(),
        };
        let registration = baton_proto::shard::RegisterCellRequest {
            id: config.cell.id.clone(),
            region: f.region.clone(),
            control: if f.advertise_control.is_empty() {
                format!("http://{control}")
            } else {
                f.advertise_control.clone()
            },
            data_planes,
            weight: f.weight.max(1),
        };
        let shard_manager = baton_shardmap::Replicas::new(&replicas, &tls)
            .map_err(|e| ConfigError::field("federation.shard_manager", e.to_string()))?;
        plane.set_credentials(std::sync::Arc::new(crate::federation::credentials::FromShardManager::new(
            shard_manager.clone(),
        )));
        let membership = crate::federation::Membership {
            shard_managers: shard_manager.clone(),
            registration,
            heartbeat_interval: f.heartbeat_interval,
            unservable_after: f.unservable_after,
            plane: plane.clone(),
        };
        tasks.push(tokio::spawn(crate::federation::run(membership, stopped.clone())));
        let reconciler = crate::federation::reconcile::Reconciler { me, plane, shard_manager, view };
        tasks.push(tokio::spawn(reconciler.run(map_events_rx, stopped.clone())));
    }
    readiness.set(true);
    tracing::info!(cell = %config.cell.id, role = ?config.cell.role, ?control_addr, ?http_addr, %admin_addr, "cell started");
    Ok(RunningCell {
        control_addr,
        http_addr,
        admin_addr,
        control_plane,
        store,
        readiness,
        stop,
        tasks,
        data_plane,
        spans,
    })
}

/// A short prefix, different at every start, that keeps sandbox IDs unique across
/// control-plane restarts.
fn sandbox_prefix() -> String {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("{:x}", micros % (1 << 40))
}
