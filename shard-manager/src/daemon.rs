//! Runs one shard-manager replica: opens its raft store, serves the ShardManager API and
//! the raft transport on one gRPC port and `/metrics` `/healthz` `/readyz` on the admin
//! port, forms the initial cluster if told to, and runs the failure detector and the
//! rebalancer. [`start`] takes listeners already bound (a test binds port 0 and keeps the
//! addresses) and returns a handle; [`run`] binds from the configuration and stops on
//! SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use baton_service::ConfigError;
use baton_service::admin::{AdminServer, Readiness};
use openraft::{BasicNode, Raft};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::config::{NodeSection, ShardManagerConfig, parse_members};
use crate::raft::TypeConfig;
use crate::raft::network::Network;
use crate::service::{Manager, grpc_services};

/// Why a replica did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] baton_service::ConfigError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] baton_service::BindError),
    /// The raft store under `node.data_dir` could not be opened.
    #[error("node.data_dir: opening the raft store: {0}")]
    Storage(String),
    /// Raft refused to start, form the cluster or stop.
    #[error("raft: {0}")]
    Raft(String),
}

/// The replica's two listeners.
pub struct Listeners {
    /// The ShardManager API and the raft transport (gRPC).
    pub grpc: TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `node.listen` and `node.admin_listen`.
    pub async fn bind(node: &NodeSection) -> Result<Self, StartError> {
        let (grpc, _) = baton_service::bind("node.listen", node.listen).await?;
        let (admin, _) = baton_service::bind("node.admin_listen", node.admin_listen).await?;
        Ok(Self { grpc, admin })
    }
}

/// A started replica.
pub struct RunningShardManager {
    /// Where its gRPC API and raft transport are served.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub admin_addr: SocketAddr,
    raft: Raft<TypeConfig>,
    readiness: Readiness,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningShardManager {
    /// Stops serving, then stops raft.
    pub async fn shutdown(self) -> Result<(), StartError> {
        tracing::info!("stopping");
        self.readiness.set(false);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.raft.shutdown().await.map_err(|e| StartError::Raft(format!("stopping: {e}")))
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: ShardManagerConfig) -> Result<(), StartError> {
    let listeners = Listeners::bind(&config.node).await?;
    let running = start(config, listeners).await?;
    baton_service::shutdown::shutdown_signal().await;
    running.shutdown().await
}

/// Starts a replica on `listeners`.
pub async fn start(config: ShardManagerConfig, listeners: Listeners) -> Result<RunningShardManager, StartError> {
    let node = &config.node;
    if node.id == 0 {
        return Err(ConfigError::field("node.id", "must be at least 1").into());
    }
    let members = parse_members(&node.initial_members)?;
    let admission = Admission::new(&config.functions)?;
    if config.functions.executables.is_empty() {
        tracing::warn!(
            "functions.executables is empty: tenants' functions may run any program on the workers \
             (fine for development; list what they may run before opening the federation to tenants)"
        );
    }
    let bound = listeners.grpc.local_addr().map_err(|source| baton_service::BindError {
        what: "node.listen",
        addr: node.listen,
        source,
    })?;
    let advertise = if node.advertise.is_empty() { bound.to_string() } else { node.advertise.clone() };
    let readiness = Readiness::default();
    baton_service::catalog::install(&[crate::metrics::CATALOG]);
    let admin = AdminServer::on(listeners.admin, readiness.clone());
    let admin_addr = admin.local_addr();

    let (log, sm) =
        crate::raft::open(&node.data_dir.join("raft.redb")).map_err(|e| StartError::Storage(e.to_string()))?;
    let raft_config = openraft::Config {
        cluster_name: "baton".into(),
        heartbeat_interval: config.raft.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.raft.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.raft.election_timeout_max.as_millis() as u64,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate().map_err(|e| ConfigError::field("raft", e.to_string()))?);
    let tls = baton_service::tls::Tls::load(&config.tls, baton_service::tls::Role::ShardManager)?;
    let network = Network::new(tls.clone());
    let raft = Raft::new(node.id, raft_config, network.clone(), log, sm.clone())
        .await
        .map_err(|e| StartError::Raft(format!("starting: {e}")))?;

    let sealer = match config.secrets.key_file.as_os_str().is_empty() {
        true => None,
        false => Some(
            crate::secrets::Sealer::load(&config.secrets.key_file)
                .map_err(|e| ConfigError::field("secrets.key_file", e.to_string()))?,
        ),
    };
    let manager = Manager::new(raft.clone(), sm, network)
        .with_admission(admission)
        .with_sealer(sealer)
        .with_load_half_life(config.cells.load_half_life);
    let (stop, stopped) = watch::channel(false);
    let c = &config.cells;
    let detector = manager.clone().detect_failures(c.heartbeat_timeout, c.failover_interval);
    let rebalancer = manager.clone().rebalance(crate::service::RebalanceSettings {
        interval: c.rebalance_interval,
        budget: c.move_budget,
        threshold: c.rebalance_threshold,
        hysteresis: c.rebalance_hysteresis,
        cooldown: c.move_cooldown,
    });
    let (transport, api) = grpc_services(raft.clone(), manager);
    let routes = tonic::service::Routes::new(transport).add_service(api);
    let mut tasks = vec![
        baton_service::shutdown::spawn_until(stopped.clone(), detector),
        baton_service::shutdown::spawn_until(stopped.clone(), rebalancer),
        baton_service::grpc::spawn("ShardManager", listeners.grpc, routes, stopped.clone(), tls, crate::access::policy),
        admin.spawn(stopped.clone()),
    ];

    if node.join {
        tracing::info!("joining: waiting to be added to a cluster (AddReplica)");
    } else if !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
        let members: BTreeMap<u64, BasicNode> = if members.is_empty() {
            BTreeMap::from([(node.id, BasicNode::new(&advertise))])
        } else {
            members.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect()
        };
        if !members.contains_key(&node.id) {
            return Err(ConfigError::field(
                "node.initial_members",
                format!("this replica ({}) is not among them", node.id),
            )
            .into());
        }
        if members.keys().next() == Some(&node.id) {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "forming the cluster");
            raft.initialize(members).await.map_err(|e| StartError::Raft(format!("forming the cluster: {e}")))?;
        }
    }
    tracing::info!(id = node.id, listen = %bound, advertise, "shard manager replica up");

    // Ready once a leader is known (reads are served by any replica; writes need one).
    let mut metrics = raft.metrics();
    let ready = readiness.clone();
    let mut ready_stop = stopped;
    tasks.push(tokio::spawn(async move {
        loop {
            ready.set(metrics.borrow().current_leader.is_some());
            crate::metrics::raft(&metrics.borrow());
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = ready_stop.wait_for(|s| *s) => return,
            }
        }
    }));
    Ok(RunningShardManager { addr: bound, admin_addr, raft, readiness, stop, tasks })
}
