//! A whole federation in the test's own process: shard-manager replicas, cells, workers
//! (process or emulated runtime) and routers, each started through its crate's
//! `daemon::start` on listeners bound to port 0, so no port is picked and then hoped for.
//!
//! Use it where a test does not need a real process to die. Two limits: metrics are one
//! registry for the whole test process (a cell's `/metrics` shows every cell's series), and
//! the workers reap every child of the process, so a test using it must not spawn and wait
//! for processes of its own (run the CLI against a [`crate::Federation`] instead).

use std::net::SocketAddr;

use baton_cell::daemon::RunningCell;
use baton_proto::cell::cell_control_client::CellControlClient;
use baton_router::daemon::RunningRouter;
use baton_service::tls::{Role, Tls};
use baton_shard_manager::daemon::RunningShardManager;
use baton_worker::RunningWorker;
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::FederationApi;

/// How to lay out an in-process federation.
pub struct Builder {
    replicas: usize,
    cells: usize,
    workers_per_cell: usize,
    port_base: u16,
    manager: serde_json::Value,
    cell: serde_json::Value,
    worker: serde_json::Value,
    emulated: Option<String>,
    pki: Option<crate::Pki>,
}

impl Builder {
    /// One replica and one cell with one worker; sandboxes take ports from `port_base`
    /// (200 per worker); the shard manager fails a cell over after 3 s of silence and does
    /// not rebalance.
    pub fn new(port_base: u16) -> Self {
        Self {
            replicas: 1,
            cells: 1,
            workers_per_cell: 1,
            port_base,
            manager: serde_json::json!({
                "cells": {"heartbeat_timeout": "3s", "failover_interval": "50ms", "move_budget": 0},
            }),
            cell: serde_json::json!({}),
            worker: serde_json::json!({}),
            emulated: None,
            pki: None,
        }
    }

    /// Every connection between the federation's processes over mutual TLS, each with a
    /// certificate of its role from a private authority ([`InProcess::pki`]); data planes
    /// then serve `https` to routers only.
    pub fn tls(mut self) -> Self {
        self.pki = Some(crate::Pki::new());
        self
    }

    /// Worker settings merged over the builder's (as its TOML, in JSON), for every worker.
    pub fn worker(mut self, settings: serde_json::Value) -> Self {
        crate::merge(&mut self.worker, settings);
        self
    }

    /// Cell settings merged over the builder's (as its TOML, in JSON), for every cell.
    pub fn cell(mut self, settings: serde_json::Value) -> Self {
        crate::merge(&mut self.cell, settings);
        self
    }

    /// Workers with the emulated runtime: no processes, every sandbox served by the
    /// worker's in-process `baton-fn-spin` handler, each creation taking `create_delay`
    /// (`"40ms"`). For tests of placement and movement rather than of sandboxes. Specs
    /// must then say `"runtime": "emulated"`: a cell places a function only on workers of
    /// its runtime.
    pub fn emulated(mut self, create_delay: &str) -> Self {
        self.emulated = Some(create_delay.to_string());
        self
    }

    /// How many shard-manager replicas (one raft cluster).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// How many cells (`cell-1`, …).
    pub fn cells(mut self, n: usize) -> Self {
        self.cells = n;
        self
    }

    /// How many workers each cell has (`cell-N-w1`, …).
    pub fn workers_per_cell(mut self, n: usize) -> Self {
        self.workers_per_cell = n;
        self
    }

    /// Shard-manager settings merged over the defaults (as its TOML, in JSON).
    pub fn manager(mut self, settings: serde_json::Value) -> Self {
        crate::merge(&mut self.manager, settings);
        self
    }

    /// Starts it all and waits until every cell is active.
    pub async fn start(self) -> InProcess {
        let mut federation = InProcess {
            dir: tempfile::tempdir().unwrap(),
            replicas: Vec::new(),
            cells: Vec::new(),
            routers: Vec::new(),
            workers_per_cell: self.workers_per_cell,
            next_port_base: self.port_base,
            cell_settings: self.cell,
            worker_settings: self.worker,
            emulated: self.emulated,
            pki: self.pki,
        };
        let mut bound = Vec::new();
        for _ in 0..self.replicas {
            let grpc = any_port().await;
            let addr = grpc.local_addr().unwrap();
            bound.push((grpc, addr));
        }
        let members: Vec<String> = if self.replicas == 1 {
            Vec::new()
        } else {
            bound.iter().enumerate().map(|(i, (_, addr))| format!("{}={addr}", i + 1)).collect()
        };
        for (i, (grpc, addr)) in bound.into_iter().enumerate() {
            let mut settings = self.manager.clone();
            let node = serde_json::json!({"node": {
                "id": i + 1,
                "listen": addr.to_string(),
                "data_dir": federation.dir.path().join(format!("shard-manager-{}", i + 1)),
                "initial_members": members,
            }});
            crate::merge(&mut settings, node);
            federation.give_tls(&mut settings, Role::ShardManager);
            let config = config(settings);
            let listeners = baton_shard_manager::daemon::Listeners { grpc, admin: any_port().await };
            federation.replicas.push(Some(baton_shard_manager::daemon::start(config, listeners).await.unwrap()));
        }
        for _ in 0..self.cells {
            federation.add_cell().await;
        }
        federation
    }
}

/// A cell (both planes in one) and its workers.
pub struct InProcessCell {
    /// `cell-N`.
    pub id: String,
    /// The cell.
    pub cell: RunningCell,
    /// Its workers.
    pub workers: Vec<RunningWorker>,
    cgroup_parents: Vec<String>,
    operator: Tls,
}

impl InProcessCell {
    /// A client of its control plane (as an operator, where the federation runs TLS).
    pub async fn api(&self) -> CellControlClient<Channel> {
        let addr = self.cell.control_addr.expect("an in-process cell runs its control plane");
        CellControlClient::new(self.operator.connect_url(&format!("http://{addr}")).await.unwrap())
    }

    /// `http://DATA_PLANE{path}` (`https` where the federation runs TLS).
    pub fn url(&self, path: &str) -> String {
        let addr = self.cell.http_addr.expect("an in-process cell runs its data plane");
        format!("{}://{addr}{path}", self.operator.scheme())
    }
}

/// A router.
pub struct InProcessRouter {
    /// Where it serves the tenant API and invocations.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    running: RunningRouter,
}

impl InProcessRouter {
    /// `http://ROUTER{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A federation running in this process; stopped by [`InProcess::shutdown`], and its
/// sandboxes killed however the test ends.
pub struct InProcess {
    /// Its files (raft logs, cell stores, worker state).
    pub dir: tempfile::TempDir,
    /// The replicas; `None` once stopped.
    pub replicas: Vec<Option<RunningShardManager>>,
    /// The cells.
    pub cells: Vec<InProcessCell>,
    /// The routers.
    pub routers: Vec<InProcessRouter>,
    workers_per_cell: usize,
    next_port_base: u16,
    cell_settings: serde_json::Value,
    worker_settings: serde_json::Value,
    emulated: Option<String>,
    pki: Option<crate::Pki>,
}

impl FederationApi for InProcess {
    fn operator_tls(&self) -> Tls {
        self.pki.as_ref().map_or(Tls::Plaintext, |pki| pki.tls(Role::Operator))
    }

    fn manager_urls(&self) -> Vec<String> {
        self.replicas.iter().flatten().map(|r| format!("http://{}", r.addr)).collect()
    }

    fn router_url(&self, router: usize, path: &str) -> String {
        self.routers[router].url(path)
    }
}

impl InProcess {
    /// The federation's authority and certificates, where it runs with mutual TLS.
    pub fn pki(&self) -> Option<&crate::Pki> {
        self.pki.as_ref()
    }

    /// Puts the `[tls]` of `role` into a daemon's `settings`, where the federation runs TLS.
    fn give_tls(&self, settings: &mut serde_json::Value, role: Role) {
        if let Some(pki) = &self.pki {
            let tls = serde_json::to_value(pki.config(role)).expect("a TLS config serializes");
            crate::merge(settings, serde_json::json!({ "tls": tls }));
        }
    }

    /// Starts cell `cell-N` and its workers, and waits until the shard manager has it
    /// active.
    pub async fn add_cell(&mut self) -> &InProcessCell {
        let n = self.cells.len() + 1;
        let id = format!("cell-{n}");
        let mut settings = serde_json::json!({
            "cell": {"id": id, "admin_listen": "127.0.0.1:0"},
            "control_plane": {
                "listen": "127.0.0.1:0",
                "worker_timeout": "1s",
                "autoscale_interval": "100ms",
                "load_report_interval": "100ms",
                "scale_down_drain": "200ms",
            },
            "data_plane": {"listen": "127.0.0.1:0", "queue_timeout": "10s"},
            "store": {"path": self.dir.path().join(format!("{id}.redb"))},
            "federation": {"shard_manager": self.manager_url(), "heartbeat_interval": "100ms"},
        });
        crate::merge(&mut settings, self.cell_settings.clone());
        self.give_tls(&mut settings, Role::Cell);
        let config: baton_cell::config::CellConfig = config(settings);
        let listeners = baton_cell::daemon::Listeners::bind(&config).await.unwrap();
        let cell = baton_cell::daemon::start(config, listeners).await.unwrap();
        let control = cell.control_addr.expect("role all");
        let operator = self.operator_tls();
        let mut added =
            InProcessCell { id: id.clone(), cell, workers: Vec::new(), cgroup_parents: Vec::new(), operator };
        for w in 1..=self.workers_per_cell {
            let name = format!("{id}-w{w}");
            let parent = format!("baton-inproc-{name}-{}", std::process::id());
            added.workers.push(self.start_worker(&name, &parent, control).await);
            added.cgroup_parents.push(parent);
        }
        self.cells.push(added);
        self.wait_cell_active(&id).await;
        self.cells.last().expect("just added")
    }

    async fn start_worker(&mut self, name: &str, cgroup_parent: &str, control: SocketAddr) -> RunningWorker {
        let port_base = self.next_port_base;
        self.next_port_base += 200;
        let mut settings = serde_json::json!({
            "worker": {
                "node_id": name,
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "state_dir": self.dir.path().join(name),
                // Room for a whole federation's functions on one worker (a drain or
                // failover puts them on the others).
                "max_sandboxes": 100,
            },
            "process": {
                "port_range_start": port_base,
                "port_range_end": port_base + 199,
                "cgroup_parent": cgroup_parent,
                // The sample functions run from the checkout, which the sandbox user may
                // not reach.
                "user_fallback": "worker",
            },
            "control_plane": {
                "address": format!("http://{control}"),
                "heartbeat_interval": "100ms",
                "retry_initial": "50ms",
                "retry_max": "200ms",
            },
        });
        if let Some(delay) = &self.emulated {
            crate::merge(
                &mut settings,
                serde_json::json!({"worker": {"runtime": "emulated"}, "emulated": {"create_delay": delay}}),
            );
        }
        crate::merge(&mut settings, self.worker_settings.clone());
        self.give_tls(&mut settings, Role::Worker);
        baton_worker::bind_and_start(config(settings)).await.unwrap()
    }

    /// Starts a router following every live replica; waits until it has a map that knows
    /// `key`. Returns its index.
    pub async fn start_router(&mut self, key: &str) -> usize {
        self.start_router_with(key, serde_json::json!({})).await
    }

    /// [`InProcess::start_router`] with `settings` (its `[router]` section, in JSON) on
    /// top of the defaults.
    pub async fn start_router_with(&mut self, key: &str, settings: serde_json::Value) -> usize {
        self.start_router_configured(key, serde_json::json!({ "router": settings })).await
    }

    /// [`InProcess::start_router`] with `config` (the whole configuration, in JSON: its
    /// `[traces]`, `[metrics]`, …) on top of the defaults.
    pub async fn start_router_configured(&mut self, key: &str, config_given: serde_json::Value) -> usize {
        // Each router its own async queue file, in the federation's folder.
        let queue = self.dir.path().join(format!("router-{}-calls.redb", self.routers.len()));
        let mut settings = serde_json::json!({
            "router": {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "shard_managers": self.manager_urls(),
            },
            "async": { "path": queue },
        });
        crate::merge(&mut settings, config_given);
        self.give_tls(&mut settings, Role::Router);
        let listeners = baton_router::daemon::Listeners { http: any_port().await, admin: any_port().await };
        let running = baton_router::daemon::start(config(settings), listeners).await.unwrap();
        self.routers.push(InProcessRouter { addr: running.addr, admin_addr: running.admin_addr, running });
        let index = self.routers.len() - 1;
        self.wait_router_accepts(index, key).await;
        index
    }

    /// Stops cell `index` and its workers, deleting their sandboxes (its ports then refuse
    /// connections); the shard manager still lists it until its heartbeats time out.
    pub async fn stop_cell(&mut self, index: usize) {
        let cell = self.cells.remove(index);
        for worker in cell.workers {
            worker.shutdown().await;
        }
        cell.cell.shutdown().await;
        for parent in &cell.cgroup_parents {
            crate::kill_sandboxes(parent);
        }
    }

    /// Stops replica `index` (its port then refuses connections).
    pub async fn stop_replica(&mut self, index: usize) {
        if let Some(replica) = self.replicas[index].take() {
            replica.shutdown().await.unwrap();
        }
    }

    /// Stops everything: routers, workers (deleting their sandboxes), cells, replicas.
    pub async fn shutdown(mut self) {
        for router in std::mem::take(&mut self.routers) {
            router.running.shutdown().await;
        }
        while !self.cells.is_empty() {
            self.stop_cell(0).await;
        }
        for index in 0..self.replicas.len() {
            self.stop_replica(index).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // A test that ends early (a failed assertion) leaves sandbox processes: kill what is
        // in the workers' cgroups.
        // The cells and workers still run on the test's runtime and would replace what is
        // killed: stop the workers creating first, then kill until nothing is left.
        for cell in &self.cells {
            for worker in &cell.workers {
                worker.halt();
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut quiet = 0;
        while quiet < 3 && std::time::Instant::now() < deadline {
            let killed: usize =
                self.cells.iter().flat_map(|c| c.cgroup_parents.iter()).map(|p| crate::kill_sandboxes(p)).sum();
            quiet = if killed == 0 { quiet + 1 } else { 0 };
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A daemon's configuration: its defaults with `settings` (its TOML, in JSON) on top.
///
/// Without a `tls` section of its own it runs plaintext, as most tests do; a federation
/// built with [`Builder::tls`] gives each daemon its certificate.
fn config<C>(mut settings: serde_json::Value) -> C
where
    C: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    if let Some(fields) = settings.as_object_mut() {
        fields.entry("tls").or_insert_with(|| serde_json::json!({"plaintext": true}));
    }
    baton_service::load_config(None, &settings).expect("a valid test configuration")
}

async fn any_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}
