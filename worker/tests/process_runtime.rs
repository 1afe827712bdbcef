//! The process runtime against real sandboxes: namespaces, cgroup limits, OOM kills,
//! readiness failures and leak checks. Run as root (CI is) so full isolation is available;
//! every test has its own port range and cgroup parent, and leaves nothing behind.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use baton_proto::SandboxId;
use baton_proto::cell::ExitReason;
use baton_worker::RuntimeError;
use baton_worker::SandboxRuntime;
use baton_worker::config::ProcessSection;
use baton_worker::process::ProcessRuntime;
use baton_worker::runtime::{PortRequest, Resources, SandboxExit, SandboxSpec};
use support::*;
use tokio::sync::mpsc;

struct Harness {
    runtime: ProcessRuntime,
    exits: mpsc::UnboundedReceiver<SandboxExit>,
    parent: String,
    state: tempfile::TempDir,
}

async fn harness(test: &str, port_base: u16) -> Harness {
    harness_with(process_config(test, port_base, 50)).await
}

async fn harness_with(config: ProcessSection) -> Harness {
    let parent = config.cgroup_parent.clone();
    let state = tempfile::tempdir().unwrap();
    let (tx, exits) = mpsc::unbounded_channel();
    let runtime = ProcessRuntime::start(config, state.path(), tx).await.unwrap();
    Harness { runtime, exits, parent, state }
}

impl Harness {
    /// Asserts nothing is left: no process, no cgroup, no port, no file.
    async fn assert_clean(&self) {
        assert!(self.runtime.list().await.is_empty(), "sandboxes still listed");
        assert_eq!(self.runtime.ports().in_use(), 0, "ports still held");
        assert_eq!(leftover_cgroups(&self.parent), Vec::<std::path::PathBuf>::new(), "cgroups left");
        assert_eq!(files_in(self.state.path()), Vec::<std::path::PathBuf>::new(), "files left");
        assert!(
            eventually(Duration::from_secs(2), || descendants().is_empty()).await,
            "processes left: {:?}",
            descendants()
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.parent);
    }
}

fn spec(executable: &Path) -> SandboxSpec {
    SandboxSpec {
        function_id: "test-fn".into(),
        executable: executable.to_path_buf(),
        args: vec![],
        env: Default::default(),
        port: PortRequest::Any,
        resources: Resources { cpu_millis: 500, memory_mib: 64, pids: 64 },
        readiness_timeout: Duration::from_secs(5),
        readiness_path: "/healthz".into(),
        image: None,
    }
}

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

fn ns_of(pid: u32) -> String {
    namespace(pid, "pid")
}

/// The namespace `kind` (`pid`, `mnt`, `ipc`, `uts`) process `pid` is in.
fn namespace(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap().display().to_string()
}

#[tokio::test]
async fn echo_sandbox_is_isolated_limited_and_leaves_nothing_when_deleted() {
    let h = harness("echo", 21000).await;
    let (_copy_dir, echo) = world_reachable_copy(&bin("baton-fn-echo"));
    let mut s = spec(&echo);
    s.resources.memory_mib = 96;
    s.env.insert("GREETING".into(), "hi".into());
    let created = h.runtime.create(id("echo-1"), s).await.unwrap();
    assert_eq!(created.isolation.level(), "full", "{:?}", created.isolation);

    // The endpoint answers, passing method, path, query, headers and body through.
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{}/a/b?x=1", created.endpoint))
        .header("x-test", "yes")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let reply: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(reply["method"], "POST");
    assert_eq!(reply["path"], "/a/b");
    assert_eq!(reply["query"], "x=1");
    assert_eq!(reply["headers"]["x-test"], "yes");
    assert_eq!(reply["body"], "payload");

    // Its logs are the worker's alone: neither another sandbox nor any other user reads them.
    let logs = h.state.path().join("sandboxes").join("echo-1");
    let mode = |path: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&logs), 0o700, "{}", logs.display());
    assert_eq!(mode(&logs.join("stderr.log")), 0o600);

    // Its own pid, mount, ipc and uts namespaces, and the spec's memory, CPU and pids
    // limits in its cgroup.
    let pid = created.pid;
    for kind in ["pid", "mnt", "ipc", "uts"] {
        assert_ne!(namespace(pid, kind), namespace(std::process::id(), kind), "{kind} namespace");
    }
    let cgroup_line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup_line.contains("echo-1"), "{cgroup_line}");
    let dirs: Vec<std::path::PathBuf> = cgroup_parent_dirs(&h.parent).iter().map(|d| d.join("echo-1")).collect();
    let read = |dir: &std::path::Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap().trim().to_string();
    let memory_dir = dirs[0].clone();
    if memory_dir.join("memory.max").exists() {
        // cgroup v2: one folder.
        assert_eq!(read(&memory_dir, "memory.max"), (96u64 << 20).to_string());
        assert_eq!(read(&memory_dir, "cpu.max"), "50000 100000", "0.5 core: 50 ms of every 100 ms");
        assert_eq!(read(&memory_dir, "pids.max"), "64");
    } else {
        // cgroup v1: memory, cpu and pids folders.
        assert_eq!(read(&dirs[0], "memory.limit_in_bytes"), (96u64 << 20).to_string());
        assert_eq!(read(&dirs[1], "cpu.cfs_quota_us"), "50000", "0.5 core");
        assert_eq!(read(&dirs[1], "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&dirs[2], "pids.max"), "64");
        for dir in &dirs[..3] {
            let procs = read(dir, "cgroup.procs");
            assert!(procs.lines().any(|p| p == pid.to_string()), "{} holds the sandbox: {procs}", dir.display());
        }
    }
    // It runs as a uid of its own, from the sandbox range, never root.
    let uid = uid_of(pid);
    assert!((2_000_000_000..=2_000_099_999).contains(&uid), "uid {uid}");

    let port: u16 = created.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let deleted = h.runtime.delete(&id("echo-1"), Duration::from_secs(2)).await.unwrap();
    assert!(!deleted.killed, "echo exits on SIGTERM within the grace period");
    assert!(!alive(pid));
    assert!(!memory_dir.exists());
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
    h.assert_clean().await;
}

#[tokio::test]
async fn a_function_past_its_memory_limit_is_oom_killed_and_reported() {
    let mut h = harness("oom", 21100).await;
    let mut s = spec(&bin("baton-fn-spin"));
    s.resources.memory_mib = 32;
    let created = h.runtime.create(id("hog"), s).await.unwrap();
    let result = reqwest::get(format!("http://{}/?alloc_mb=256", created.endpoint)).await;
    assert!(result.is_err() || !result.unwrap().status().is_success(), "the call cannot succeed");
    let exit =
        tokio::time::timeout(Duration::from_secs(10), h.exits.recv()).await.expect("an exit is reported").unwrap();
    assert_eq!(exit.id.as_str(), "hog");
    assert_eq!(exit.exit.reason, ExitReason::OomKilled, "{exit:?}");
    assert_eq!(exit.exit.signal, Some(9));
    // It stays listed as exited until deleted; its port and cgroup are already free.
    let listed = h.runtime.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, baton_worker::runtime::SandboxState::Exited);
    assert_eq!(h.runtime.ports().in_use(), 0);
    h.runtime.delete(&id("hog"), Duration::from_secs(1)).await.unwrap();
    h.assert_clean().await;
}

#[tokio::test]
async fn a_function_that_never_gets_ready_fails_after_the_timeout_and_leaves_nothing() {
    let h = harness("never-ready", 21200).await;
    let mut s = spec(Path::new("/bin/sleep"));
    s.args = vec!["600".into()];
    s.readiness_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = h.runtime.create(id("sleepy"), s).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RuntimeError::ReadinessTimeout { .. }), "{err}");
    assert!(err.to_string().contains("did not answer GET /healthz"), "{err}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");
    h.assert_clean().await;
}

#[tokio::test]
async fn a_function_that_exits_at_start_fails_at_once_with_its_stderr() {
    let h = harness("crash-at-start", 21250).await;
    let mut s = spec(Path::new("/bin/sh"));
    s.args = vec!["-c".into(), "echo 'fatal: no config' >&2; exit 3".into()];
    let started = Instant::now();
    let err = h.runtime.create(id("crasher"), s).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::ExitedDuringStartup { .. }), "{text}");
    assert!(text.contains("exit status 3") && text.contains("fatal: no config"), "{text}");
    h.assert_clean().await;
}

#[tokio::test]
async fn a_missing_executable_fails_at_once_and_clearly() {
    let h = harness("missing", 21300).await;
    let started = Instant::now();
    let err = h.runtime.create(id("ghost"), spec(Path::new("/nonexistent/fn"))).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(matches!(err, RuntimeError::Executable { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/fn"), "{err}");
    let plain = h.state.path().join("plain-file");
    std::fs::write(&plain, "not a program").unwrap();
    let err = h.runtime.create(id("not-exec"), spec(&plain)).await.unwrap_err();
    std::fs::remove_file(plain).unwrap();
    assert!(err.to_string().contains("not executable"), "{err}");
    h.assert_clean().await;
}

/// An executable the sandbox user cannot reach (here: in a folder only root may enter) is
/// refused by default, naming the path and the way out, and nothing is left behind; with
/// `user_fallback = "worker"` it runs as the worker's own user (root).
#[tokio::test]
async fn an_executable_the_sandbox_user_cannot_reach_is_refused_unless_told_otherwise() {
    use baton_worker::config::UserFallback;
    assert!(nix::unistd::geteuid().is_root(), "this test switches users: run it as root (CI does)");
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let echo = private.path().join("baton-fn-echo");
    std::fs::copy(bin("baton-fn-echo"), &echo).unwrap();

    let refusing = ProcessSection { user_fallback: UserFallback::Refuse, ..process_config("refuse", 21700, 10) };
    let strict = harness_with(refusing.clone()).await;
    let err = strict.runtime.create(id("private"), spec(&echo)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Executable { .. }), "{err}");
    let message = err.to_string();
    for needle in [echo.to_str().unwrap(), "\"nobody\" cannot reach it", "process.user_fallback = \"worker\""] {
        assert!(message.contains(needle), "{needle:?} missing from {message}");
    }
    strict.assert_clean().await;

    let lenient = harness("fallback", 21750).await;
    let created = lenient.runtime.create(id("private"), spec(&echo)).await.unwrap();
    assert!(!created.isolation.unprivileged_user, "{:?}", created.isolation);
    let status = std::fs::read_to_string(format!("/proc/{}/status", created.pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().nth(1), Some("0"), "{uid_line}");
    lenient.runtime.delete(&id("private"), Duration::from_secs(2)).await.unwrap();
    lenient.assert_clean().await;

    // A sandbox user that does not exist would make every sandbox root's: the runtime does
    // not start, unless told to fall back.
    let missing = ProcessSection { user: "baton-no-such-user".into(), ..refusing };
    let state = tempfile::tempdir().unwrap();
    let err = ProcessRuntime::start(missing.clone(), state.path(), mpsc::unbounded_channel().0).await.err().unwrap();
    assert!(err.to_string().starts_with("process.user: no user \"baton-no-such-user\""), "{err}");
    let lenient = ProcessSection { user_fallback: UserFallback::Worker, ..missing };
    let runtime = ProcessRuntime::start(lenient, state.path(), mpsc::unbounded_channel().0).await.unwrap();
    runtime.shutdown(true, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_path_that_resolves_to_batons_own_program_is_refused() {
    // An innocent name, a symlink to a program named as one of baton's.
    let dir = tempfile::tempdir().unwrap();
    let disguised = dir.path().join("baton-shard-manager");
    std::fs::copy("/bin/true", &disguised).unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink(&disguised, &link).unwrap();
    // And a hard link to the program this very process runs from.
    let own = dir.path().join("also-innocent");
    std::fs::hard_link(std::env::current_exe().unwrap(), &own)
        .or_else(|_| std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &own))
        .unwrap();

    let h = harness("own-programs", 21780).await;
    for path in [&link, &own] {
        let err = h.runtime.create(id("own"), spec(path)).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Executable { .. }), "{err}");
        assert!(err.to_string().contains("one of baton's own programs"), "{err}");
    }
    h.assert_clean().await;
}

#[tokio::test]
async fn a_symlink_out_of_the_allowed_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("fns");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::copy(bin("baton-fn-echo"), allowed.join("echo")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", allowed.join("escape")).unwrap();
    let config = ProcessSection {
        executables: vec![format!("{}/", allowed.display())],
        ..process_config("allowed-folder", 21790, 5)
    };
    let h = harness_with(config).await;
    let err = h.runtime.create(id("escape"), spec(&allowed.join("escape"))).await.unwrap_err();
    assert!(err.to_string().contains("outside process.executables"), "{err}");
    h.runtime.create(id("inside"), spec(&allowed.join("echo"))).await.unwrap();
    h.runtime.delete(&id("inside"), Duration::from_secs(2)).await.unwrap();
    h.assert_clean().await;
}

#[tokio::test]
async fn a_hundred_creations_in_a_row_and_eight_at_a_time_leak_nothing() {
    let h = harness("churn", 21400).await;
    let echo = bin("baton-fn-echo");
    let client = reqwest::Client::new();
    for i in 0..100 {
        let sid = id(&format!("seq-{i}"));
        let created = h.runtime.create(sid.clone(), spec(&echo)).await.unwrap();
        let status = client.get(format!("http://{}/", created.endpoint)).send().await.unwrap().status();
        assert!(status.is_success());
        h.runtime.delete(&sid, Duration::from_secs(2)).await.unwrap();
    }
    h.assert_clean().await;

    let runtime = h.runtime.clone();
    let mut tasks = Vec::new();
    for lane in 0..8 {
        let runtime = runtime.clone();
        let echo = echo.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (lane..100).step_by(8) {
                let sid = id(&format!("par-{i}"));
                let created = runtime.create(sid.clone(), spec(&echo)).await.unwrap();
                let status = client.get(format!("http://{}/", created.endpoint)).send().await.unwrap().status();
                assert!(status.is_success());
                runtime.delete(&sid, Duration::from_secs(2)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.assert_clean().await;
}

#[tokio::test]
async fn without_namespaces_or_cgroups_isolation_is_none_and_sandboxes_still_work() {
    let mut config = process_config("no-isolation", 21500, 10);
    config.namespaces = false;
    config.cgroups = false;
    config.user = String::new();
    let state = tempfile::tempdir().unwrap();
    let (tx, _exits) = mpsc::unbounded_channel();
    let runtime = ProcessRuntime::start(config, state.path(), tx).await.unwrap();
    let created = runtime.create(id("plain"), spec(&bin("baton-fn-echo"))).await.unwrap();
    assert_eq!(created.isolation.level(), "none");
    assert_eq!(ns_of(created.pid), ns_of(std::process::id()));
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());
    runtime.delete(&id("plain"), Duration::from_secs(2)).await.unwrap();
    assert!(!alive(created.pid));
    assert!(files_in(state.path()).is_empty());
}

#[tokio::test]
async fn ports_are_never_shared_and_a_duplicate_id_is_refused() {
    let h = harness("ports", 21600).await;
    let (_copy_dir, echo) = world_reachable_copy(&bin("baton-fn-echo"));
    let mut s = spec(&echo);
    s.port = PortRequest::Fixed(21601);
    let a = h.runtime.create(id("a"), s.clone()).await.unwrap();
    assert_eq!(a.endpoint, "127.0.0.1:21601");
    let err = h.runtime.create(id("b"), s).await.unwrap_err();
    assert!(err.to_string().contains("21601"), "{err}");
    let err = h.runtime.create(id("a"), spec(&echo)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists(_)), "{err}");
    let b = h.runtime.create(id("b"), spec(&echo)).await.unwrap();
    assert_ne!(a.endpoint, b.endpoint);
    // Nor a uid: neither can read the other's /proc files (its environment among them).
    assert_ne!(uid_of(a.pid), uid_of(b.pid));
    h.runtime.delete(&id("a"), Duration::from_secs(2)).await.unwrap();
    h.runtime.delete(&id("b"), Duration::from_secs(2)).await.unwrap();
    h.assert_clean().await;
}

/// The real uid process `pid` runs as.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
