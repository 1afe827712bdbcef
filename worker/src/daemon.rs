//! Assembles a whole worker process from its config: runtime(s), nodes, the gRPC Worker
//! service, the admin endpoints and the control-plane links. `main` and the tests both
//! start workers through [`start`], on listeners already bound ([`Listeners::bind`] binds
//! them from the configuration; a test binds port 0 and keeps the addresses).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use baton_proto::NodeId;
use baton_proto::worker::worker_server::WorkerServer;
use baton_service::{AdminServer, ConfigError, Readiness};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

use crate::config::{RuntimeChoice, ShutdownPolicy, WorkerConfig};
use crate::emulated::{EmulatedRuntime, FunctionServer};
use crate::error::RuntimeError;
use crate::node::{Capacity, WorkerNode};
use crate::process::ProcessRuntime;
use crate::runtime::SandboxRuntime;
use crate::service::WorkerService;
use crate::validate::Limits;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] baton_service::ConfigError),
    /// The node ID (configured or the host name) is not a valid ID.
    #[error("worker.node_id: {0}")]
    NodeId(#[from] baton_proto::IdError),
    /// A runtime could not start.
    #[error("starting the sandbox runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] baton_service::BindError),
    /// The control-plane address is not a URL.
    #[error("control_plane.address {0:?} is not a valid URL such as http://127.0.0.1:7100")]
    ControlPlaneAddress(String),
}

/// A worker process's listeners.
pub struct Listeners {
    /// The Worker gRPC service.
    pub grpc: TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: TcpListener,
    /// The emulated runtime's function server (runtime `emulated` only).
    pub function: Option<TcpListener>,
}

impl Listeners {
    /// Binds `worker.listen`, `worker.admin_listen` and, for the emulated runtime,
    /// `emulated.function_listen`.
    pub async fn bind(config: &WorkerConfig) -> Result<Self, StartError> {
        let (grpc, _) = baton_service::bind("worker.listen", config.worker.listen).await?;
        let (admin, _) = baton_service::bind("worker.admin_listen", config.worker.admin_listen).await?;
        let function = match config.worker.runtime {
            RuntimeChoice::Emulated => {
                Some(baton_service::bind("emulated.function_listen", config.emulated.function_listen).await?.0)
            }
            RuntimeChoice::Process => None,
        };
        Ok(Self { grpc, admin, function })
    }
}

/// A started worker process.
pub struct RunningWorker {
    /// Where the Worker gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The emulated runtime's function server, if any.
    pub function_addr: Option<SocketAddr>,
    /// The nodes this process hosts.
    pub nodes: Vec<Arc<WorkerNode>>,
    on_shutdown: ShutdownPolicy,
    readiness: Readiness,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _function_server: Option<FunctionServer>,
}

impl RunningWorker {
    /// Stops at once, without waiting: not ready, no new sandbox, links and services told
    /// to stop. What runs is left as it is (for [`RunningWorker::shutdown`], or for a test
    /// that failed to kill).
    pub fn halt(&self) {
        self.readiness.set(false);
        let _ = self.stop.send(true);
        for node in &self.nodes {
            node.close();
        }
    }

    /// Graceful shutdown: not ready, stop taking calls, stop the links, then delete or keep
    /// sandboxes as `worker.on_shutdown` says.
    pub async fn shutdown(self) {
        self.readiness.set(false);
        let _ = self.stop.send(true);
        let delete_all = self.on_shutdown == ShutdownPolicy::Delete;
        futures::future::join_all(self.nodes.iter().map(|n| n.shutdown(delete_all))).await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the listeners `config` names and starts a worker on them.
pub async fn bind_and_start(config: WorkerConfig) -> Result<RunningWorker, StartError> {
    let listeners = Listeners::bind(&config).await?;
    start(config, listeners).await
}

/// Starts a worker from `config` on `listeners`.
pub async fn start(config: WorkerConfig, listeners: Listeners) -> Result<RunningWorker, StartError> {
    config.validate()?;
    let tls = baton_service::tls::Tls::load(&config.tls, baton_service::tls::Role::Worker)?;
    // The recorder comes first, so nothing counted during start-up is lost.
    baton_service::admin::metrics_handle();
    let base_id = if config.worker.node_id.is_empty() {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "worker".into())
    } else {
        config.worker.node_id.clone()
    };
    NodeId::new(base_id.as_str())?;
    let capacity = Capacity {
        cpu_millis: if config.worker.cpu_millis > 0 { config.worker.cpu_millis } else { machine_cpu_millis() },
        memory_mib: if config.worker.memory_mib > 0 { config.worker.memory_mib } else { machine_memory_mib() },
        sandboxes: config.worker.max_sandboxes,
    };
    let limits = |needs_executable| Limits {
        ports: config.process.port_range_start..=config.process.port_range_end,
        cpu_millis: capacity.cpu_millis,
        memory_mib: capacity.memory_mib,
        default_readiness_timeout: config.worker.readiness_timeout,
        max_readiness_timeout: config.worker.max_readiness_timeout,
        needs_executable,
    };

    let mut runtimes: Vec<(NodeId, Arc<dyn SandboxRuntime>, mpsc::UnboundedReceiver<_>)> = Vec::new();
    let mut function_server = None;
    match config.worker.runtime {
        RuntimeChoice::Process => {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime =
                ProcessRuntime::start_with(config.process.clone(), config.images.clone(), &config.worker.state_dir, tx)
                    .await?;
            runtimes.push((NodeId::new(base_id.as_str())?, Arc::new(runtime), rx));
        }
        RuntimeChoice::Emulated => {
            let listen = config.emulated.function_listen;
            let listener = listeners.function.ok_or_else(|| {
                ConfigError::field(
                    "emulated.function_listen",
                    "the emulated runtime needs a listener for its function server",
                )
            })?;
            let server = FunctionServer::on(listener).map_err(|source| baton_service::BindError {
                what: "emulated.function_listen",
                addr: listen,
                source,
            })?;
            for i in 0..config.emulated.nodes {
                let id = if config.emulated.nodes == 1 { base_id.clone() } else { format!("{base_id}-{i}") };
                let (_tx, rx) = mpsc::unbounded_channel();
                let runtime = EmulatedRuntime::new(config.emulated.create_delay, server.addr());
                runtimes.push((NodeId::new(id)?, Arc::new(runtime), rx));
            }
            function_server = Some(server);
        }
    }
    let needs_executable = config.worker.runtime == RuntimeChoice::Process;

    let listener = listeners.grpc;
    let grpc_addr = listener.local_addr().map_err(|source| baton_service::BindError {
        what: "worker.listen",
        addr: config.worker.listen,
        source,
    })?;
    let advertise =
        if config.worker.advertise.is_empty() { grpc_addr.to_string() } else { config.worker.advertise.clone() };
    let readiness = Readiness::default();
    baton_service::catalog::install(&[crate::metrics::CATALOG]);
    let admin = AdminServer::on(listeners.admin, readiness.clone());
    let admin_addr = admin.local_addr();

    let channel = if config.control_plane.address.is_empty() {
        tracing::warn!("control_plane.address is empty: running standalone, registering with no control plane");
        None
    } else {
        let endpoint = Endpoint::from_shared(config.control_plane.address.clone())
            .map_err(|_| StartError::ControlPlaneAddress(config.control_plane.address.clone()))?
            .connect_timeout(config.control_plane.call_timeout)
            .tcp_nodelay(true);
        Some(tls.channel(&endpoint))
    };

    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut nodes = Vec::new();
    for (id, runtime, exits) in runtimes {
        let node = WorkerNode::new(id, runtime, capacity, limits(needs_executable), config.worker.delete_grace);
        node.account_existing().await;
        match &channel {
            Some(channel) => {
                let (report, reports) = mpsc::unbounded_channel();
                node.pump_exits(exits, Some(report));
                tasks.push(tokio::spawn(crate::cell_link::run_link(
                    node.clone(),
                    channel.clone(),
                    advertise.clone(),
                    config.control_plane.clone(),
                    reports,
                    stopped.clone(),
                )));
            }
            None => node.pump_exits(exits, None),
        }
        nodes.push(node);
    }

    let routes = tonic::service::Routes::new(WorkerServer::new(WorkerService::new(nodes.clone())));
    // Only its own cell's control plane: a caller's certificate must be valid for the host
    // the worker dials it at.
    let host = baton_service::tls::host_of(&config.control_plane.address);
    let guard = baton_service::tls::GuardLayer { server: "Worker", policy: crate::access::policy, host };
    tasks.push(baton_service::grpc::spawn_guarded(listener, routes, stopped.clone(), tls, guard));
    tasks.push(admin.spawn(stopped.clone()));
    readiness.set(true);
    tracing::info!(%grpc_addr, %admin_addr, nodes = nodes.len(), runtime = ?config.worker.runtime, "worker started");
    Ok(RunningWorker {
        grpc_addr,
        admin_addr,
        function_addr: function_server.as_ref().map(FunctionServer::addr),
        nodes,
        on_shutdown: config.worker.on_shutdown,
        readiness,
        stop,
        tasks,
        _function_server: function_server,
    })
}

fn machine_cpu_millis() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32 * 1000).unwrap_or(1000)
}

fn machine_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .flatten()
        .map(|kib| kib / 1024)
        .unwrap_or(1024)
}

/// The default state folder for a user without `/var/lib` rights: `$TMPDIR/baton-worker`.
pub fn fallback_state_dir() -> PathBuf {
    std::env::temp_dir().join("baton-worker")
}
