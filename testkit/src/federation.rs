//! A federation of real processes: one `baton-shard-manager`, cells (each a `baton-cell`
//! with one process-runtime `baton-worker`) registered with it, and `baton-router`s.

use std::process::Stdio;

use crate::{Cluster, FederationApi, Proc, free_port, wait_port};

/// A router process.
pub struct RouterProc {
    /// Its HTTP port.
    pub port: u16,
    /// Its admin port.
    pub admin_port: u16,
    /// The process.
    pub proc: Proc,
}

impl RouterProc {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A counter or gauge from its `/metrics` (summed over labels).
    pub async fn metric(&self, name: &str) -> f64 {
        crate::metric_at(self.admin_port, name).await
    }
}

/// Starts a one-replica `baton-shard-manager` on `port` with its data in `data_dir`,
/// checking cells every 50 ms, with `env` (`BATON_…` settings) on top; waits for its port.
pub async fn start_shard_manager(port: u16, data_dir: &std::path::Path, env: &[(&str, &str)]) -> Proc {
    start_replica(1, port, &[], data_dir, env, 0).await
}

/// As [`start_shard_manager`], with `/metrics`, `/healthz` and `/readyz` on `admin_port`;
/// waits for both ports.
pub async fn start_shard_manager_with_admin(
    port: u16,
    admin_port: u16,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Proc {
    let replica = start_replica(1, port, &[], data_dir, env, admin_port).await;
    wait_port(admin_port).await;
    replica
}

/// Starts replica `id` of a shard manager whose initial members are `members`
/// (`"ID=HOST:PORT"`, none for a single replica), its admin server on `admin_port` (0: any).
async fn start_replica(
    id: u64,
    port: u16,
    members: &[String],
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    admin_port: u16,
) -> Proc {
    let mut command = crate::daemon("baton-shard-manager");
    command
        .args(["--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("BATON_CELLS__FAILOVER_INTERVAL", "50ms")
        .env("BATON_LOG__FILTER", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if !members.is_empty() {
        command.args(["--initial-members", &members.join(",")]);
    }
    let replica = Proc(command.spawn().unwrap());
    wait_port(port).await;
    replica
}

/// The federation.
pub struct Federation {
    pub dir: tempfile::TempDir,
    /// The first replica's port.
    pub manager_port: u16,
    /// The shard-manager replicas: raft ID, port, process.
    pub replicas: Vec<(u64, u16, Proc)>,
    /// Each replica's admin port (`/metrics`), in the order of `replicas`.
    pub replica_admin_ports: Vec<u16>,
    pub cells: Vec<Cluster>,
    pub routers: Vec<RouterProc>,
}

impl Federation {
    /// A shard manager failing cells over after `heartbeat_timeout`, rebalancing off, and
    /// `cells` cells (`cell-1`, …) whose workers take sandbox ports from `port_base` (200
    /// each).
    pub async fn start(cells: usize, port_base: u16, heartbeat_timeout: &str) -> Self {
        let env = [("BATON_CELLS__HEARTBEAT_TIMEOUT", heartbeat_timeout), ("BATON_CELLS__MOVE_BUDGET", "0")];
        Self::start_with(cells, port_base, &env).await
    }

    /// As [`Federation::start`], with the shard manager's settings in `env`.
    pub async fn start_with(cells: usize, port_base: u16, env: &[(&str, &str)]) -> Self {
        Self::start_replicated(1, cells, port_base, env).await
    }

    /// As [`Federation::start_with`], with `replicas` shard-manager replicas; cells and
    /// routers are given every replica's URL.
    pub async fn start_replicated(replicas: usize, cells: usize, port_base: u16, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let members: Vec<String> = if replicas == 1 {
            Vec::new()
        } else {
            ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect()
        };
        let mut started = Vec::new();
        let mut admin_ports = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let data = dir.path().join(format!("shard-manager-{id}"));
            let admin = free_port();
            started.push((id, *port, start_replica(id, *port, &members, &data, env, admin).await));
            admin_ports.push(admin);
        }
        let mut federation = Self {
            dir,
            manager_port: ports[0],
            replicas: started,
            replica_admin_ports: admin_ports,
            cells: Vec::new(),
            routers: Vec::new(),
        };
        for i in 0..cells {
            federation.add_cell(port_base + 200 * i as u16).await;
        }
        federation
    }

    /// Creates tenant `name` and starts a router that knows its new key; returns the key and
    /// the router's index.
    pub async fn open_to(&mut self, name: &str) -> (String, usize) {
        let key = self.tenant(name).await;
        let router = self.start_router(None, &key).await;
        (key, router)
    }

    /// Starts cell `cell-N` with one worker taking sandbox ports from `port_base`; waits
    /// until it is registered and active.
    pub async fn add_cell(&mut self, port_base: u16) {
        let id = format!("cell-{}", self.cells.len() + 1);
        let extra =
            format!("[federation]\nshard_manager = \"{}\"\nheartbeat_interval = \"100ms\"\n", self.manager_url());
        let mut cell = Cluster::new(&extra);
        cell.id = id.clone();
        cell.cell_env.push(("BATON_LOG__FILTER".into(), "warn".into()));
        cell.start_cell().await;
        // Room for a whole federation's functions on one worker (a drain or failover puts
        // them on the others), each with a sandbox or two, so no test runs out of sandboxes
        // while it checks something else.
        cell.start_worker(&format!("{id}-w1"), 100, port_base).await;
        self.cells.push(cell);
        self.wait_cell_active(&id).await;
    }

    /// As [`Federation::add_cell`], with its control plane and its one data plane in two
    /// processes (`cells[i].cell` and `cells[i].data_planes[0]`), so a test can kill each.
    pub async fn add_split_cell(&mut self, port_base: u16) {
        let id = format!("cell-{}", self.cells.len() + 1);
        let data_plane_port = free_port();
        let extra = format!(
            "[federation]\nshard_manager = \"{}\"\nheartbeat_interval = \"100ms\"\ndata_planes = [\"http://127.0.0.1:{data_plane_port}\"]\n",
            self.manager_url()
        );
        let mut cell = Cluster::new(&extra);
        cell.id = id.clone();
        cell.cell_env.push(("BATON_LOG__FILTER".into(), "warn".into()));
        cell.start_control().await;
        cell.start_data_plane(&format!("{id}-dp-1"), data_plane_port).await;
        cell.start_worker(&format!("{id}-w1"), 100, port_base).await;
        self.cells.push(cell);
        self.wait_cell_active(&id).await;
    }

    /// Starts a router following `shard_manager` (default: this federation's); waits until
    /// it has the map with `key` in it.
    pub async fn start_router(&mut self, shard_manager: Option<String>, key: &str) -> usize {
        self.start_router_with(shard_manager, key, &[]).await
    }

    /// As [`Federation::start_router`], with `env` (`BATON_…` settings) on top; unless
    /// `env` names another, its async queue is a file of its own in the federation's folder.
    pub async fn start_router_with(&mut self, shard_manager: Option<String>, key: &str, env: &[(&str, &str)]) -> usize {
        let (port, admin_port) = (free_port(), free_port());
        let queue = self.dir.path().join(format!("router-{port}-calls.redb"));
        let proc = Proc(
            crate::daemon("baton-router")
                .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin_port}")])
                .args(["--shard-managers", &shard_manager.unwrap_or_else(|| self.manager_url())])
                .env("BATON_LOG__FILTER", "warn")
                .env("BATON_ASYNC__PATH", &queue)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(port).await;
        self.routers.push(RouterProc { port, admin_port, proc });
        self.wait_router_accepts(self.routers.len() - 1, key).await;
        self.routers.len() - 1
    }
}

impl FederationApi for Federation {
    fn manager_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|(_, port, _)| format!("http://127.0.0.1:{port}")).collect()
    }

    fn router_url(&self, router: usize, path: &str) -> String {
        self.routers[router].url(path)
    }
}
