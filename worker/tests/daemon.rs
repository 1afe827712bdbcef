//! The `baton-worker` daemon end to end: real worker processes (SIGKILLed and restarted),
//! a fake control plane, the gRPC API's answers to bad input, emulated nodes at scale, and
//! the admin endpoints.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::cell::ExitReason;
use baton_proto::worker::worker_client::WorkerClient;
use baton_proto::worker::{
    CreateSandboxRequest, CreateSandboxResponse, DeleteSandboxRequest, ListSandboxesRequest, PortPolicy, Resources,
    SandboxSpec, SandboxState, port_policy,
};
use support::fake_control_plane::FakeControlPlane;
use support::*;
use tonic::transport::Channel;

/// Writes a worker config into `dir` and returns its path.
fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("worker.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn spawn_worker(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> KillOnDrop {
    let mut cmd = Command::new(bin("baton-worker"));
    cmd.env("BATON_TLS__PLAINTEXT", "true");
    cmd.arg("--config").arg(config).args(extra).stdin(Stdio::null()).stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().expect("starting baton-worker"))
}

async fn connect(port: u16) -> WorkerClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match WorkerClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("worker on {port} never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn create(id: &str, executable: &Path) -> CreateSandboxRequest {
    CreateSandboxRequest {
        node_id: String::new(),
        sandbox_id: id.into(),
        spec: Some(SandboxSpec {
            function_id: "f".into(),
            executable: executable.display().to_string(),
            resources: Some(Resources { cpu_millis: 250, memory_mib: 64, pids: 32 }),
            ..SandboxSpec::default()
        }),
    }
}

fn process_toml(state: &Path, grpc: u16, admin: u16, ports: (u16, u16), parent: &str, extra: &str) -> String {
    format!(
        r#"
[worker]
node_id = "w1"
listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{admin}"
state_dir = "{state}"
{extra}
[process]
port_range_start = {}
port_range_end = {}
cgroup_parent = "{parent}"
adopted_poll_interval = "50ms"
user_fallback = "worker"
"#,
        ports.0,
        ports.1,
        state = state.display()
    )
}

struct CgroupParent(String);

/// A process-runtime worker's files and ports, private to one test.
struct Setup {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
    parent: CgroupParent,
    grpc: u16,
    config: std::path::PathBuf,
    /// `baton-fn-echo`, copied where the sandbox users can run it.
    echo: (tempfile::TempDir, std::path::PathBuf),
}

/// A worker config for test `name` taking sandbox ports from `ports`, with `extra` TOML
/// lines in its `[worker]` section and `tail` after everything else.
fn setup(name: &str, ports: (u16, u16), extra: &str, tail: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let parent = CgroupParent(format!("baton-test-{name}-{}", std::process::id()));
    let (grpc, admin) = (free_port(), free_port());
    let toml = process_toml(&state, grpc, admin, ports, &parent.0, extra) + tail;
    let config = write_config(dir.path(), &toml);
    Setup { dir, state, parent, grpc, config, echo: world_reachable_copy(&bin("baton-fn-echo")) }
}

impl Setup {
    /// Starts the worker and creates an echo sandbox `id` on it.
    async fn worker_with(&self, id: &str) -> (KillOnDrop, CreateSandboxResponse) {
        let worker = spawn_worker(&self.config, &[], &[]);
        let mut client = connect(self.grpc).await;
        let created = client.create_sandbox(create(id, &self.echo.1)).await.unwrap().into_inner();
        (worker, created)
    }
}

/// Sends `signal` to process `pid` (a worker or a sandbox).
fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.0);
    }
}

#[tokio::test]
async fn a_sigkilled_worker_readopts_its_running_sandboxes_on_restart() {
    let w = setup("readopt", (22000, 22049), "", "");
    let (mut worker, created) = w.worker_with("keep-me").await;
    let endpoint = created.endpoint.clone();
    assert!(reqwest::get(format!("http://{endpoint}/")).await.unwrap().status().is_success());

    // SIGKILL: no chance to clean up. The sandbox keeps running.
    signal(worker.0.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = worker.0.wait();
    assert!(alive(created.pid));
    assert!(reqwest::get(format!("http://{endpoint}/")).await.unwrap().status().is_success());

    adopts_and_cleans_up(&w, &created).await;
}

/// Starts a new worker process and checks that it adopts sandbox `keep-me` (`created`,
/// left running by its predecessor): same endpoint, same pid, still serving, its port still
/// reserved; and that deleting it and a new one leaves nothing behind.
async fn adopts_and_cleans_up(w: &Setup, created: &CreateSandboxResponse) {
    let _worker = spawn_worker(&w.config, &[], &[]);
    let mut client = connect(w.grpc).await;
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.sandboxes.len(), 1, "{listed:?}");
    let s = &listed.sandboxes[0];
    assert_eq!(
        (s.sandbox_id.as_str(), s.endpoint.as_str(), s.pid, s.adopted),
        ("keep-me", created.endpoint.as_str(), created.pid, true)
    );
    assert_eq!(s.state, SandboxState::Running as i32);
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());

    // Its port stays reserved: a new sandbox gets another one.
    let other = client.create_sandbox(create("new-one", &w.echo.1)).await.unwrap().into_inner();
    assert_ne!(other.endpoint, created.endpoint);
    // So does its uid: the new sandbox runs as another.
    let uid = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string()
    };
    assert_ne!(uid(other.pid), uid(created.pid));

    // And the new worker can delete it, leaving nothing behind.
    for id in ["keep-me", "new-one"] {
        client.delete_sandbox(DeleteSandboxRequest { sandbox_id: id.into(), ..Default::default() }).await.unwrap();
    }
    assert!(!alive(created.pid) && !alive(other.pid));
    assert!(leftover_cgroups(&w.parent.0).is_empty());
    assert!(files_in(&w.state.join("sandboxes")).is_empty());
}

#[tokio::test]
async fn a_worker_stopped_with_on_shutdown_keep_leaves_its_sandboxes_to_its_successor() {
    let w = setup("keep", (22150, 22199), "on_shutdown = \"keep\"", "");
    let (mut worker, created) = w.worker_with("keep-me").await;

    // A graceful stop (SIGTERM, as systemd sends) that keeps the sandbox running, serving
    // its callers while the worker is upgraded.
    signal(worker.0.id(), nix::sys::signal::Signal::SIGTERM);
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "a clean exit: {status}");
    assert!(alive(created.pid));
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());

    adopts_and_cleans_up(&w, &created).await;
}

#[tokio::test]
async fn a_restarted_worker_cleans_up_sandboxes_whose_process_died_meanwhile() {
    let w = setup("cleanup", (22050, 22099), "", "");
    let (mut worker, created) = w.worker_with("doomed").await;
    signal(worker.0.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = worker.0.wait();
    signal(created.pid, nix::sys::signal::Signal::SIGKILL);
    assert!(eventually(Duration::from_secs(2), || !alive(created.pid)).await);

    let _worker = spawn_worker(&w.config, &[], &[]);
    let mut client = connect(w.grpc).await;
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert!(listed.sandboxes.is_empty(), "{listed:?}");
    assert!(leftover_cgroups(&w.parent.0).is_empty());
    assert!(files_in(&w.state.join("sandboxes")).is_empty());
}

#[tokio::test]
async fn registers_once_the_control_plane_appears_heartbeats_and_reports_exits() {
    let cp_port = free_port();
    let control_plane = format!(
        "[control_plane]\naddress = \"http://127.0.0.1:{cp_port}\"\nheartbeat_interval = \"100ms\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n"
    );
    let Setup { dir: _dir, state: _, parent: _parent, grpc, config, .. } =
        setup("cp", (22100, 22149), "", &control_plane);
    // The environment overrides the file's node ID.
    let _worker = spawn_worker(&config, &[], &[("BATON_WORKER__NODE_ID", "from-env")]);
    let mut client = connect(grpc).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The control plane comes up late; the worker's retries find it.
    let cp = FakeControlPlane::default();
    let (_addr, _stop) = cp.serve(format!("127.0.0.1:{cp_port}").parse().unwrap()).await;
    assert!(eventually(Duration::from_secs(5), || cp.heartbeating_nodes() == 1).await, "no heartbeat arrived");
    {
        let r = cp.recorded.lock().unwrap();
        let reg = &r.registrations[0];
        assert_eq!(reg.node_id, "from-env");
        assert_eq!(reg.address, format!("127.0.0.1:{grpc}"));
        let capacity = reg.capacity.unwrap();
        assert!(capacity.cpu_millis >= 1000 && capacity.memory_mib > 0, "{capacity:?}");
    }

    // Heartbeats carry the allocation.
    let created = client.create_sandbox(create("alloc", &bin("baton-fn-spin"))).await.unwrap().into_inner();
    let allocated = || {
        cp.recorded.lock().unwrap().heartbeats["from-env"]
            .last()
            .map(|h| (h.allocated_cpu_millis, h.allocated_memory_mib, h.sandboxes))
            == Some((250, 64, 1))
    };
    assert!(eventually(Duration::from_secs(3), allocated).await);

    // A sandbox killed behind the worker's back is reported as it happens.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(created.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(3), || !cp.events().is_empty()).await, "no exit reported");
    let event = &cp.events()[0];
    assert_eq!(event.sandbox_id, "alloc");
    assert_eq!(event.reason, ExitReason::Killed as i32);
    assert_eq!(event.signal, Some(9));
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.sandboxes[0].state, SandboxState::Exited as i32);
    // Its allocation is released.
    let freed = || cp.recorded.lock().unwrap().heartbeats["from-env"].last().map(|h| h.sandboxes) == Some(0);
    assert!(eventually(Duration::from_secs(3), freed).await);
    client.delete_sandbox(DeleteSandboxRequest { sandbox_id: "alloc".into(), ..Default::default() }).await.unwrap();
}

#[tokio::test]
async fn a_thousand_emulated_nodes_register_and_heartbeat_from_one_process() {
    let cp = FakeControlPlane::default();
    let (cp_addr, _stop) = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[worker]\nnode_id = \"emu\"\nlisten = \"127.0.0.1:{grpc}\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
             [emulated]\ncreate_delay = \"200ms\"\n[control_plane]\nheartbeat_interval = \"1s\"\n",
            dir.path().display()
        ),
    );
    let cp_url = format!("http://{cp_addr}");
    let _worker = spawn_worker(&config, &["--emulate-nodes", "1000", "--control-plane", &cp_url], &[]);
    assert!(
        eventually(Duration::from_secs(30), || cp.heartbeating_nodes() == 1000).await,
        "registered {}, heartbeating {}",
        cp.registered_nodes(),
        cp.heartbeating_nodes()
    );
    assert_eq!(cp.registered_nodes(), 1000);
    {
        let r = cp.recorded.lock().unwrap();
        assert!(r.registrations.iter().all(|x| x.runtime == baton_proto::worker::RuntimeKind::Emulated as i32));
        assert!(r.heartbeats.contains_key("emu-0") && r.heartbeats.contains_key("emu-999"));
    }

    // A creation on one node takes the configured delay: never less, and (this process
    // also sends 1,000 heartbeats a second on a shared machine) well under twice it.
    let mut client = connect(grpc).await;
    let mut req = create("emu-sb", Path::new(""));
    req.node_id = "emu-417".into();
    let started = Instant::now();
    let created = client.create_sandbox(req).await.unwrap().into_inner();
    let took = started.elapsed();
    let server_side = Duration::from_micros(created.latency.unwrap().total_us);
    assert!(server_side >= Duration::from_millis(200) && server_side < Duration::from_millis(400), "{server_side:?}");
    assert!(took >= server_side, "{took:?} < {server_side:?}");
    // Its endpoint serves calls that honour the requested duration.
    let started = Instant::now();
    let reply = reqwest::get(format!("http://{}/?ms=50&mode=sleep", created.endpoint)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    let took_us: u64 = reply.headers()["x-execution-time-us"].to_str().unwrap().parse().unwrap();
    assert!(took_us >= 50_000, "{took_us}");
    // Node IDs are checked: the process hosts many, so one must be named.
    let err = client.create_sandbox(create("x", Path::new(""))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node_id"), "{}", err.message());
    let mut req = create("x", Path::new(""));
    req.node_id = "emu-1000".into();
    assert_eq!(client.create_sandbox(req).await.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn emulated_creation_takes_the_default_forty_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = baton_worker::WorkerConfig::default();
    config.tls.plaintext = true;
    config.worker.runtime = baton_worker::config::RuntimeChoice::Emulated;
    config.worker.listen = "127.0.0.1:0".parse().unwrap();
    config.worker.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.worker.state_dir = dir.path().to_path_buf();
    let worker = baton_worker::bind_and_start(config).await.unwrap();
    let mut client = connect(worker.grpc_addr.port()).await;
    // Never less than the delay; the median within 20 % of it (one late wake-up on a
    // loaded machine is not the delay).
    let mut took = Vec::new();
    for i in 0..5 {
        let created = client.create_sandbox(create(&format!("e{i}"), Path::new(""))).await.unwrap().into_inner();
        took.push(Duration::from_micros(created.latency.unwrap().total_us));
    }
    took.sort();
    assert!(took[0] >= Duration::from_millis(40), "{took:?}");
    assert!(took[2] <= Duration::from_millis(48), "{took:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = baton_worker::WorkerConfig::default();
    config.tls.plaintext = true;
    config.worker.listen = "127.0.0.1:0".parse().unwrap();
    config.worker.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.worker.state_dir = dir.path().to_path_buf();
    config.worker.cpu_millis = 2000;
    config.worker.memory_mib = 4096;
    config.process = process_config("bad-input", 22200, 10);
    let parent = CgroupParent(config.process.cgroup_parent.clone());
    let worker = baton_worker::bind_and_start(config).await.unwrap();
    let mut client = connect(worker.grpc_addr.port()).await;
    let echo = bin("baton-fn-echo");

    let good = create("ok-1", &echo);
    type Mutation = Box<dyn Fn(&mut CreateSandboxRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("sandbox_id", Box::new(|r| r.sandbox_id.clear())),
        ("sandbox_id", Box::new(|r| r.sandbox_id = "../../etc".into())),
        ("spec", Box::new(|r| r.spec = None)),
        ("spec.executable", Box::new(|r| r.spec.as_mut().unwrap().executable.clear())),
        ("spec.resources", Box::new(|r| r.spec.as_mut().unwrap().resources = None)),
        (
            "spec.resources.cpu_millis",
            Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().cpu_millis = 0),
        ),
        (
            "spec.resources.cpu_millis",
            Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().cpu_millis = 1_000_000),
        ),
        (
            "spec.resources.memory_mib",
            Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().memory_mib = 0),
        ),
        (
            "spec.resources.memory_mib",
            Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().memory_mib = u64::MAX),
        ),
        ("spec.resources.pids", Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().pids = 0)),
        ("spec.resources.pids", Box::new(|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().pids = u32::MAX)),
        (
            "spec.port.fixed",
            Box::new(|r| {
                r.spec.as_mut().unwrap().port = Some(PortPolicy { policy: Some(port_policy::Policy::Fixed(80)) })
            }),
        ),
        (
            "spec.port.fixed",
            Box::new(|r| {
                r.spec.as_mut().unwrap().port = Some(PortPolicy { policy: Some(port_policy::Policy::Fixed(99_999)) })
            }),
        ),
    ];
    for (field, mutate) in &cases {
        let mut req = good.clone();
        mutate(&mut req);
        let status = client.create_sandbox(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "expected {field} in {:?}", status.message());
    }
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert!(listed.sandboxes.is_empty());
    assert!(files_in(&dir.path().join("sandboxes")).is_empty());
    assert!(leftover_cgroups(&parent.0).is_empty());

    // A duplicate ID is refused and leaves the first sandbox alone.
    let first = client.create_sandbox(good.clone()).await.unwrap().into_inner();
    let status = client.create_sandbox(good.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("sandbox_id"), "{}", status.message());
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.sandboxes.len(), 1);
    assert!(alive(first.pid));
    // Deleting an unknown sandbox is NOT_FOUND.
    let status = client
        .delete_sandbox(DeleteSandboxRequest { sandbox_id: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // The admin endpoints: alive, ready, and the creation metrics.
    let admin = format!("http://{}", worker.admin_addr);
    assert_eq!(reqwest::get(format!("{admin}/healthz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{admin}/readyz")).await.unwrap().status(), 200);
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    for needle in [
        r#"baton_worker_sandbox_creations_total{runtime="process",outcome="ok"} 1"#,
        r#"baton_worker_sandbox_creations_total{runtime="process",outcome="invalid"}"#,
        r#"baton_worker_sandbox_creation_seconds_bucket{runtime="process",phase="readiness""#,
        "baton_worker_sandboxes{runtime=\"process\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    // Graceful shutdown deletes the sandbox (worker.on_shutdown = delete) and the cgroup
    // parent folders with it.
    worker.shutdown().await;
    assert!(!alive(first.pid));
    assert!(leftover_cgroups(&parent.0).is_empty());
    assert!(cgroup_parent_dirs(&parent.0).iter().all(|d| !d.exists()), "the parent cgroup is left");
}

#[tokio::test]
async fn the_readme_demo_creates_calls_and_cleans_up_a_real_sandbox() {
    use std::io::{BufRead, BufReader};
    let mut demo = KillOnDrop(
        Command::new(bin("baton-worker"))
            .env("BATON_TLS__PLAINTEXT", "true")
            .arg("demo")
            .env("BATON_PROCESS__CGROUP_PARENT", format!("baton-test-demo-{}", std::process::id()))
            .env("BATON_PROCESS__PORT_RANGE_START", "22300")
            .env("BATON_PROCESS__PORT_RANGE_END", "22309")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _parent = CgroupParent(format!("baton-test-demo-{}", std::process::id()));
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(text.contains("sandbox demo-echo ready at http://127.0.0.1:2230"), "{text}");
    assert!(text.contains(r#""body":"hi sandbox""#), "{text}");
    // Run as root (CI is): the demo's copy of echo is within the sandbox user's reach.
    assert!(text.contains("unprivileged user: true"), "{text}");
    let pid: i32 = text.split("(pid ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
    assert!(alive(pid as u32));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(demo.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l.contains("nothing left behind")), "{rest:?}");
    assert!(demo.0.wait().unwrap().success());
    assert!(!alive(pid as u32));
    let state = std::env::temp_dir().join("baton-worker-demo");
    assert!(!state.exists(), "the demo's state folder is gone: {}", state.display());
}

#[tokio::test]
async fn a_worker_without_root_runs_sandboxes_says_why_once_and_reports_isolation_none() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    // Everything the unprivileged worker touches lives in a folder `nobody` may use.
    let (_worker_dir, worker_bin) = world_reachable_copy(&bin("baton-worker"));
    let (_echo_dir, echo) = world_reachable_copy(&bin("baton-fn-echo"));
    let dir = tempfile::Builder::new().prefix("baton-noroot-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = dir.path().join("state");
    let (grpc, admin) = (free_port(), free_port());
    let toml = process_toml(&state, grpc, admin, (22400, 22409), "baton-test-noroot", "");
    let config = write_config(dir.path(), &toml);
    let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    let _worker = KillOnDrop(
        Command::new(&worker_bin)
            .env("BATON_TLS__PLAINTEXT", "true")
            .arg("--config")
            .arg(&config)
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let mut client = connect(grpc).await;
    let created = client.create_sandbox(create("plain", &echo)).await.unwrap().into_inner();
    let isolation = created.isolation.clone().unwrap();
    assert_eq!(isolation.level, "none", "{isolation:?}");
    assert_eq!(isolation.cgroup, "", "no cgroup without root");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", created.pid)).unwrap();
    let uid = uid.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(uid, nobody.uid.to_string(), "the sandbox runs as the worker's own user");
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());

    client.delete_sandbox(DeleteSandboxRequest { sandbox_id: "plain".into(), ..Default::default() }).await.unwrap();
    assert!(!alive(created.pid));
    assert!(files_in(&state.join("sandboxes")).is_empty());
    let logged = std::fs::read_to_string(dir.path().join("worker.log")).unwrap();
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("reduced isolation")).collect();
    assert_eq!(warnings.len(), 1, "one warning at start: {logged}");
    assert!(warnings[0].contains("cgroup"), "it names what is missing: {}", warnings[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_readopts_its_containers_and_their_images() {
    use baton_image::build::{RunConfig, layer, program_with_libraries, push};
    // The image first: `ldd` runs as a child of this test, which has no reaper.
    let registry = baton_testkit::Registry::start().await;
    let files = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    let run = RunConfig { entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()], ..RunConfig::default() };
    let reference = registry.image("acme/echo:1");
    let settings = baton_image::ResolverSettings::default();
    let anonymous = baton_image::Credentials::Anonymous;
    let digest = push(&reference, vec![layer(&files).unwrap()], &run, &anonymous, &settings).await.unwrap();

    let w = setup("oci-readopt", (22410, 22449), "", "[images]\nenabled = \"on\"\n");
    let mut worker = spawn_worker(&w.config, &[], &[]);
    let mut client = connect(w.grpc).await;
    let mut request = create("box", Path::new(""));
    let spec = request.spec.as_mut().unwrap();
    spec.executable.clear();
    spec.image = Some(baton_proto::worker::Image { reference, digest, command: vec![], port: 0, credentials: None });
    let created = client.create_sandbox(request).await.unwrap().into_inner();
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());

    // SIGKILL: the container keeps running, and serving.
    signal(worker.0.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = worker.0.wait();
    assert!(alive(created.pid));
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());

    // The next worker adopts it (with its image: the cache keeps it), and can delete it.
    let _worker = spawn_worker(&w.config, &[], &[]);
    let mut client = connect(w.grpc).await;
    let listed = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.sandboxes.len(), 1, "{listed:?}");
    let s = &listed.sandboxes[0];
    assert_eq!((s.sandbox_id.as_str(), s.pid, s.adopted), ("box", created.pid, true));
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());
    // Its network namespace, veth and address came through with it.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.state.join("sandboxes/box/sandbox.json")).unwrap()).unwrap();
    let address: std::net::SocketAddrV4 = record["network"].as_str().unwrap().parse().unwrap();
    let veth = std::path::PathBuf::from(format!("/sys/class/net/baton{:08x}", u32::from(*address.ip())));
    assert!(veth.exists(), "{}", veth.display());
    client.delete_sandbox(DeleteSandboxRequest { sandbox_id: "box".into(), ..Default::default() }).await.unwrap();
    assert!(!alive(created.pid));
    assert!(eventually(Duration::from_secs(5), || !veth.exists()).await, "the veth went with the container");
    assert!(leftover_cgroups(&w.parent.0).is_empty(), "{:?}", leftover_cgroups(&w.parent.0));
    assert!(files_in(&w.state.join("sandboxes")).is_empty());
    assert!(files_in(&w.state.join("runc")).is_empty(), "runc's state of the container is gone");
    // The image stays cached for the next sandbox (no function said it is unwanted).
    assert!(!files_in(&w.state.join("images/images")).is_empty());
}
