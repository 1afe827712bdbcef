//! Test support shared by the crates' end-to-end tests: a cell cluster of real processes
//! (`baton-cell`, `baton-worker`s and the sample functions) on free ports, killed however
//! the test ends.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::cell::PutFunctionRequest;
use baton_proto::cell::cell_control_client::CellControlClient;
use tonic::transport::Channel;

mod api;
mod federation;
mod layers;
mod observability;
pub mod otlp;
mod pki;
mod registry;
mod token;
pub use layers::raw_layer;
pub use observability::{dashboard_queries, dashboards, metric_names, panels, promql_of};
pub use pki::{Pki, daemon};
pub use registry::Registry;
pub use token::TokenServer;
#[cfg(feature = "inproc")]
pub mod inproc;
pub use api::FederationApi;
pub use federation::{Federation, RouterProc, start_shard_manager, start_shard_manager_with_admin};

/// Path of a workspace binary (built by `cargo build --workspace --bins`): tests run from
/// `target/<profile>/deps/`, the binaries sit in `target/<profile>/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Every file under `dir`, at any depth (none when it cannot be read).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// A counter or gauge from the `/metrics` served on `admin_port`: summed over its labels,
/// or one series when `name` gives them (`name{label="value"}`).
pub async fn metric_at(admin_port: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) || l.strip_prefix(name).is_some_and(|r| r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends `request` (raw bytes of HTTP/1.1, for what a client library would not send) to
/// `addr` and reads until the server closes the connection, at most 5 s; returns what came
/// back and when the connection closed.
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let sent = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open 5 s: {}", String::from_utf8_lossy(&answer));
    (String::from_utf8_lossy(&answer).into_owned(), sent.elapsed())
}

/// A data-plane process of a [`Cluster`] split by role.
pub struct DataPlaneProc {
    /// Its invocation ingress.
    pub http_port: u16,
    /// Its `/metrics`.
    pub admin_port: u16,
    /// The process.
    pub proc: Proc,
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One cell (control plane + data plane in one process) and its workers.
pub struct Cluster {
    /// The cell's ID (default `test-cell`).
    pub id: String,
    pub dir: tempfile::TempDir,
    pub control_port: u16,
    pub http_port: u16,
    pub admin_port: u16,
    pub cell: Option<Proc>,
    pub data_planes: Vec<DataPlaneProc>,
    pub workers: Vec<Proc>,
    /// Each worker's admin port (`/metrics`), in the order of `workers`.
    pub worker_admin_ports: Vec<u16>,
    pub cell_env: Vec<(String, String)>,
    pub cgroup_parents: Vec<String>,
    pub extra_cell_toml: String,
}

impl Cluster {
    pub fn new(extra_cell_toml: &str) -> Self {
        Self {
            id: "test-cell".into(),
            dir: tempfile::tempdir().unwrap(),
            control_port: free_port(),
            http_port: free_port(),
            admin_port: free_port(),
            cell: None,
            data_planes: Vec::new(),
            workers: Vec::new(),
            worker_admin_ports: Vec::new(),
            cell_env: Vec::new(),
            cgroup_parents: Vec::new(),
            extra_cell_toml: extra_cell_toml.to_string(),
        }
    }

    pub fn cell_config(&self) -> PathBuf {
        let path = self.dir.path().join("cell.toml");
        let body = format!(
            r#"
[cell]
id = "{id}"
admin_listen = "127.0.0.1:{admin}"
[control_plane]
listen = "127.0.0.1:{control}"
worker_timeout = "1s"
autoscale_interval = "100ms"
load_report_interval = "100ms"
scale_down_drain = "200ms"
[data_plane]
listen = "127.0.0.1:{http}"
queue_timeout = "10s"
[store]
path = "{store}"
{extra}
"#,
            id = self.id,
            admin = self.admin_port,
            control = self.control_port,
            http = self.http_port,
            store = self.dir.path().join("cell.redb").display(),
            extra = self.extra_cell_toml,
        );
        std::fs::write(&path, body).unwrap();
        path
    }

    fn cell_command(&self, args: &[String]) -> Command {
        let mut cmd = daemon("baton-cell");
        cmd.arg("--config").arg(self.cell_config()).args(args).stdin(Stdio::null()).stdout(Stdio::null());
        for (k, v) in &self.cell_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the cell with both planes in one process.
    pub async fn start_cell(&mut self) {
        self.cell = Some(Proc(self.cell_command(&[]).spawn().unwrap()));
        wait_port(self.control_port).await;
        wait_port(self.http_port).await;
    }

    /// Starts the control plane alone (data planes then run with `start_data_plane`).
    pub async fn start_control(&mut self) {
        self.cell = Some(Proc(self.cell_command(&["--role".into(), "control".into()]).spawn().unwrap()));
        wait_port(self.control_port).await;
    }

    /// Starts a data plane process following the control plane on `http_port`.
    pub async fn start_data_plane(&mut self, id: &str, http_port: u16) {
        let admin_port = free_port();
        let args = [
            "--role".to_string(),
            "data".into(),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
            "--control-plane".into(),
            format!("http://127.0.0.1:{}", self.control_port),
        ];
        let mut cmd = self.cell_command(&args);
        cmd.env("BATON_DATA_PLANE__ID", id);
        self.data_planes.push(DataPlaneProc { http_port, admin_port, proc: Proc(cmd.spawn().unwrap()) });
        wait_port(http_port).await;
    }

    /// The control plane's store writes so far, read from its `/metrics`.
    pub async fn store_writes(&self) -> u64 {
        self.metric("baton_cell_store_writes_total").await as u64
    }

    /// Starts a process-runtime worker with `max_sandboxes`, registered with the cell.
    pub async fn start_worker(&mut self, name: &str, max_sandboxes: u32, port_base: u16) -> u16 {
        const HEALTHY: &str = "baton_cell_workers{state=\"healthy\"}";
        let healthy_before = match self.cell {
            Some(_) => {
                wait_port(self.admin_port).await;
                Some(self.metric(HEALTHY).await)
            }
            None => None,
        };
        let (grpc, admin) = (free_port(), free_port());
        let parent = format!("baton-e2e-{name}-{}", std::process::id());
        let path = self.dir.path().join(format!("{name}.toml"));
        let body = format!(
            r#"
[worker]
node_id = "{name}"
listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{admin}"
state_dir = "{state}"
max_sandboxes = {max_sandboxes}
[process]
port_range_start = {port_base}
port_range_end = {}
cgroup_parent = "{parent}"
# The sample functions run from the checkout, which the sandbox user may not reach.
user_fallback = "worker"
[control_plane]
address = "http://127.0.0.1:{cp}"
heartbeat_interval = "100ms"
retry_initial = "50ms"
retry_max = "200ms"
"#,
            port_base + 199,
            state = self.dir.path().join(name).display(),
            cp = self.control_port,
        );
        std::fs::write(&path, body).unwrap();
        let child = daemon("baton-worker")
            .arg("--config")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.workers.push(Proc(child));
        self.worker_admin_ports.push(admin);
        self.cgroup_parents.push(parent);
        wait_port(grpc).await;
        // Its port is bound before its runtime is ready: wait until the cell counts it.
        if let Some(before) = healthy_before {
            self.wait_metric(HEALTHY, |n| n > before).await;
        }
        grpc
    }

    pub async fn api(&self) -> CellControlClient<Channel> {
        CellControlClient::connect(format!("http://127.0.0.1:{}", self.control_port)).await.unwrap()
    }

    pub async fn deploy(&self, spec: serde_json::Value) {
        self.api()
            .await
            .put_function(PutFunctionRequest { spec_json: spec.to_string(), pull_first: false })
            .await
            .unwrap();
        // Data planes learn of it through their routing streams: wait until each has applied
        // every routing change the control plane has made (the put's included).
        let data_plane_admins: Vec<u16> = match self.data_planes.len() {
            0 => vec![self.admin_port],
            _ => self.data_planes.iter().map(|d| d.admin_port).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let control = self.metric("baton_cell_routing_version").await;
            let mut data = f64::MAX;
            for port in &data_plane_admins {
                data = data.min(metric_at(*port, "baton_cell_data_plane_routing_version").await);
            }
            if data >= control && control > 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the data plane applied routing {data}, the control plane is at {control}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// A gauge or counter of the cell's `/metrics` (summed over its labels).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_at(self.admin_port, name).await
    }

    /// Polls a metric until `check` holds (gauges refresh every load report, 100 ms).
    pub async fn wait_metric(&self, name: &str, check: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(name).await;
            if check(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} is {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `request` until the data plane knows its function (10 s at most): a deployment
/// reaches data planes asynchronously, and a 404 starts nothing, so the first other answer
/// is still the function's first call. Returns it and how many 404s came before.
pub async fn send_when_known(request: reqwest::RequestBuilder) -> (reqwest::Response, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        let answer = request.try_clone().expect("a request with a plain body").send().await.unwrap();
        if answer.status() != reqwest::StatusCode::NOT_FOUND || Instant::now() > deadline {
            return (answer, refused);
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Workers first (SIGKILL leaves sandboxes: kill what is in their cgroups).
        self.workers.clear();
        for parent in &self.cgroup_parents {
            kill_sandboxes(parent);
        }
        remove_orphan_packet_filters();
    }
}

/// Removes the sandbox packet filters (`inet baton_sandboxes_<pid>_<n>`) of workers that
/// are gone: a worker killed with SIGKILL leaves its table for the next worker to clear.
pub fn remove_orphan_packet_filters() {
    let Ok(listed) = std::process::Command::new("nft").args(["list", "tables"]).output() else { return };
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some(table) = line.strip_prefix("table inet ") else { continue };
        let pid = table.strip_prefix("baton_sandboxes_").and_then(|rest| rest.split('_').next());
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::process::Command::new("nft").args(["delete", "table", "inet", table]).output();
        }
    }
}

/// Kills every process in the sandbox cgroups under `cgroup_parent = parent` and removes
/// the cgroups: what a worker killed with SIGKILL (or a test that failed) leaves behind.
/// Returns how many processes it signalled.
pub fn kill_sandboxes(parent: &str) -> usize {
    let mut killed = 0;
    for dir in cgroup_dirs(parent) {
        let sandboxes = std::fs::read_dir(&dir).into_iter().flatten().filter_map(Result::ok);
        for entry in sandboxes.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            if let Ok(procs) = std::fs::read_to_string(entry.path().join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    killed += 1;
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(entry.path()).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    killed
}

/// The folders a worker's sandboxes get under `cgroup_parent = parent`, in this process's
/// own cgroups, as a worker this process starts uses them: one per cgroup v1 hierarchy
/// (memory, cpu and pids for process sandboxes; runc puts a container in every one).
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    own.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            // "0::" is the unified hierarchy of a hybrid machine.
            let mount = if ctrls.is_empty() { "unified" } else { ctrls.strip_prefix("name=").unwrap_or(ctrls) };
            Some(Path::new("/sys/fs/cgroup").join(mount).join(path.trim_start_matches('/')).join(parent))
        })
        .filter(|dir| dir.parent().is_some_and(Path::exists))
        .collect()
}

/// A tenant in `region` with at most `max_functions` (0: the federation's default) that may
/// run host executables (the sample functions are), other limits the federation's.
pub fn tenant_request(name: &str, region: &str, max_functions: u32) -> baton_proto::shard::PutTenantRequest {
    baton_proto::shard::PutTenantRequest {
        name: name.into(),
        default_region: region.into(),
        max_functions,
        executables: true,
        ..Default::default()
    }
}

/// A spec for `baton-fn-echo`, with `extra` merged in.
pub fn echo_spec(name: &str, extra: serde_json::Value) -> serde_json::Value {
    sample_spec(name, "baton-fn-echo", extra)
}

/// A spec for `baton-fn-spin`, with `extra` merged in.
pub fn spin_spec(name: &str, extra: serde_json::Value) -> serde_json::Value {
    sample_spec(name, "baton-fn-spin", extra)
}

/// A spec running a sample function at 0.1 core and 64 MiB, with `extra` merged in.
fn sample_spec(name: &str, binary: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "name": name,
        "executable": bin(binary).display().to_string(),
        "resources": {"cpu_millis": 100, "memory_mib": 64},
    });
    merge(&mut spec, extra);
    spec
}

pub(crate) fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            match (a.get_mut(&k), v) {
                (Some(existing @ serde_json::Value::Object(_)), v @ serde_json::Value::Object(_)) => merge(existing, v),
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
}
