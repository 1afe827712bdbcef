//! Helpers shared by the worker's integration tests: where the built binaries are, a
//! runtime config private to one test, leak checks, a fake control plane, and a guard that
//! kills a child process however the test ends.
#![allow(dead_code, missing_docs)]

pub mod fake_control_plane;
pub mod oci;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use baton_worker::config::{ProcessSection, UserFallback};

/// Path of a workspace binary. The suite runs after `cargo build --workspace --bins`
/// (scripts/test.sh does it), which puts every binary next to this crate's own.
pub fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_baton-worker")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A copy of a binary in a fresh folder everyone may traverse, so the sandbox user
/// (`nobody`) can run it wherever the checkout lives (a checkout under `/root` is not
/// reachable by other users).
pub fn world_reachable_copy(path: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("baton-fn-").tempdir_in("/tmp").unwrap();
    let copy = baton_worker::process::reachable_copy(path, dir.path()).unwrap();
    (dir, copy)
}

/// A process-runtime config private to one test: its own port range (tests pass distinct
/// `port_base`s, so parallel tests never share a port) and its own cgroup parent.
pub fn process_config(test: &str, port_base: u16, ports: u16) -> ProcessSection {
    ProcessSection {
        port_range_start: port_base,
        port_range_end: port_base + ports - 1,
        cgroup_parent: format!("baton-test-{test}-{}", std::process::id()),
        log_check_interval: Duration::from_millis(200),
        adopted_poll_interval: Duration::from_millis(50),
        // The sample functions run from the checkout, which the sandbox user may not reach
        // (under /root); tests of the user's isolation use `world_reachable_copy`.
        user_fallback: UserFallback::Worker,
        ..ProcessSection::default()
    }
}

/// The folders holding a test's sandbox cgroups, one per cgroup v1 hierarchy (v2 machines
/// keep everything under one folder).
pub fn cgroup_parent_dirs(parent: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        return vec![root.join(path.trim_start_matches('/')).join(parent)];
    }
    // memory, cpu and pids first (a process sandbox's), then every other hierarchy: runc
    // puts a container in all of them (freezer, devices, the hybrid unified one, …).
    let dir = |l: &str| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let mount = if ctrls.is_empty() { "unified" } else { ctrls.strip_prefix("name=").unwrap_or(ctrls) };
        let mount = root.join(mount);
        mount.is_dir().then(|| (ctrls.to_string(), mount.join(path.trim_start_matches('/')).join(parent)))
    };
    let all: Vec<(String, PathBuf)> = own.lines().filter_map(dir).collect();
    let ours = ["memory", "cpu", "pids"];
    let of = |c: &str| all.iter().find(|(ctrls, _)| ctrls.split(',').any(|x| x == c)).map(|(_, d)| d.clone());
    let mut dirs: Vec<PathBuf> = ours.iter().filter_map(|c| of(c)).collect();
    dirs.extend(all.iter().filter(|(ctrls, _)| !ctrls.split(',').any(|x| ours.contains(&x))).map(|(_, d)| d.clone()));
    dirs
}

/// Sandbox cgroups left under a test's parent.
pub fn leftover_cgroups(parent: &str) -> Vec<PathBuf> {
    cgroup_parent_dirs(parent)
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok))
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Removes a test's cgroup parent folders, first killing whatever a failed test left in
/// them, so no sandbox outlives its test.
pub fn remove_cgroup_parent(parent: &str) {
    for sandbox in leftover_cgroups(parent) {
        if let Ok(procs) = std::fs::read_to_string(sandbox.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&sandbox).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for dir in cgroup_parent_dirs(parent) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Pids of this process's live children and grandchildren (zombies excluded).
pub fn descendants() -> Vec<i32> {
    fn children(pid: i32) -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
            .collect()
    }
    let mut out = Vec::new();
    let mut stack = children(std::process::id() as i32);
    while let Some(pid) = stack.pop() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('?')).unwrap_or('?');
        if state != 'Z' && state != '?' {
            out.push(pid);
        }
        stack.extend(children(pid));
    }
    out
}

/// Whether a process with this pid is alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}

/// Files left in a folder, recursively.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().filter_map(Result::ok) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Polls `check` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills (SIGKILL) and reaps a child process when dropped, so a failing test leaves no
/// process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
