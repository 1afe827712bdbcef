//! Runs one shard-manager replica: opens its raft store, serves the ShardManager API and
//! the raft transport on one gRPC port and `/metrics` `/healthz` `/readyz` on the admin
//! port, forms the initial cluster if told to, runs the failure detector, and stops on
//! SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use baton_service::admin::{AdminServer, Readiness};
use openraft::{BasicNode, Raft};

use crate::admission::Admission;
use crate::config::{ShardManagerConfig, parse_members};
use crate::raft::network::Network;
use crate::service::{Manager, grpc_services};

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: ShardManagerConfig) -> anyhow::Result<()> {
    let node = &config.node;
    anyhow::ensure!(node.id > 0, "node.id: must be at least 1");
    let members = parse_members(&node.initial_members).map_err(anyhow::Error::msg)?;
    let admission = Admission::new(&config.functions).map_err(anyhow::Error::msg)?;
    if config.functions.executables.is_empty() {
        tracing::warn!(
            "functions.executables is empty: tenants' functions may run any program on the workers \
             (fine for development; list what they may run before opening the federation to tenants)"
        );
    }
    let listener = tokio::net::TcpListener::bind(node.listen)
        .await
        .with_context(|| format!("node.listen: binding {}", node.listen))?;
    let bound = listener.local_addr()?;
    let advertise = if node.advertise.is_empty() { bound.to_string() } else { node.advertise.clone() };
    let readiness = Readiness::default();
    let admin = AdminServer::bind(node.admin_listen, readiness.clone())
        .await
        .with_context(|| format!("node.admin_listen: binding {}", node.admin_listen))?;

    let (log, sm) = crate::raft::open(&node.data_dir.join("raft.redb")).context("node.data_dir")?;
    let raft_config = openraft::Config {
        cluster_name: "baton".into(),
        heartbeat_interval: config.raft.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.raft.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.raft.election_timeout_max.as_millis() as u64,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate().context("raft")?);
    let network = Network::default();
    let raft = Raft::new(node.id, raft_config, network.clone(), log, sm.clone()).await.context("starting raft")?;

    let manager = Manager::new(raft.clone(), sm, network)
        .with_admission(admission)
        .with_load_half_life(config.cells.load_half_life);
    tokio::spawn(manager.clone().detect_failures(config.cells.heartbeat_timeout, config.cells.failover_interval));
    let c = &config.cells;
    tokio::spawn(manager.clone().rebalance(crate::service::RebalanceSettings {
        interval: c.rebalance_interval,
        budget: c.move_budget,
        threshold: c.rebalance_threshold,
        hysteresis: c.rebalance_hysteresis,
        cooldown: c.move_cooldown,
    }));
    let (transport, api) = grpc_services(raft.clone(), manager);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(transport)
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|s| *s).await;
            }),
    );
    let admin = admin.spawn(stop_rx.clone());

    if node.join {
        tracing::info!("joining: waiting to be added to a cluster (AddReplica)");
    } else if !raft.is_initialized().await? {
        let members: BTreeMap<u64, BasicNode> = if members.is_empty() {
            BTreeMap::from([(node.id, BasicNode::new(&advertise))])
        } else {
            members.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect()
        };
        anyhow::ensure!(
            members.contains_key(&node.id),
            "node.initial_members: this replica ({}) is not among them",
            node.id
        );
        if members.keys().next() == Some(&node.id) {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "forming the cluster");
            raft.initialize(members).await.context("forming the cluster")?;
        }
    }
    tracing::info!(id = node.id, listen = %bound, advertise, "shard manager replica up");

    // Ready once a leader is known (reads are served by any replica; writes need one).
    let mut metrics = raft.metrics();
    let ready = readiness.clone();
    tokio::spawn(async move {
        loop {
            ready.set(metrics.borrow().current_leader.is_some());
            crate::metrics::raft(&metrics.borrow());
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });

    baton_service::shutdown::shutdown_signal().await;
    tracing::info!("stopping");
    readiness.set(false);
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = admin.await;
    raft.shutdown().await.context("stopping raft")?;
    Ok(())
}
