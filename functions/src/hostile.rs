//! `baton-fn-hostile`: a function that attacks its own sandbox, for the isolation tests. A
//! `POST` with a JSON plan makes it try each attack and answer what happened to each:
//!
//! ```json
//! {"connect": ["127.0.0.1:7300"], "read": ["/var/lib/baton/worker/sandboxes"],
//!  "environ": true, "fork": 5000, "memory_mib": 512, "user_namespace": true}
//! ```
//!
//! - `connect`: a TCP connection to each address (1 s timeout): `"connected"` or the error.
//! - `read`: each path read as a file, or listed as a folder: what it got, or the error.
//! - `environ`: every process it can see in `/proc`, and which of those other than itself
//!   it could read the environment of.
//! - `fork`: starts up to this many idle children (`/bin/sleep`): how many it got and the
//!   error that stopped it; then kills them all.
//! - `memory_mib`: a child touches this much memory: how that child ended.
//! - `user_namespace`: `unshare --user --map-root-user true`: its exit status and stderr.
//!
//! Started as `baton-fn-hostile --eat MIB`, it touches that much memory and exits 0, having
//! asked the OOM killer to take it before the function.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use crate::{Body, Call};

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many children for `fork`, whatever the plan says.
const MAX_FORK: u64 = 100_000;

/// Runs the child role (`--eat MIB`) when given; `false` when this process is the function
/// itself.
pub fn child_role(args: &[String]) -> bool {
    match args.get(1).map(String::as_str) {
        Some("--eat") => {
            // The OOM killer takes this child first, so the function lives to report.
            let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
            let mib: usize = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(0);
            let mut held: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                // Touch every page so the memory is really charged.
                held.push(vec![1u8; 1 << 20]);
            }
            println!("held {} MiB", held.len());
            true
        }
        _ => false,
    }
}

/// Handles one call: runs the plan in its body.
pub async fn handle(call: Call) -> hyper::Response<Body> {
    let plan: Value = match serde_json::from_slice(&call.body) {
        Ok(v) => v,
        Err(e) => return crate::json(StatusCode::BAD_REQUEST, &json!({"error": format!("plan: {e}")})),
    };
    let report =
        tokio::task::spawn_blocking(move || run_plan(&plan)).await.unwrap_or_else(|e| json!({"panic": e.to_string()}));
    crate::json(StatusCode::OK, &report)
}

fn run_plan(plan: &Value) -> Value {
    let mut report = Map::new();
    if let Some(addrs) = plan["connect"].as_array() {
        let results: Map<String, Value> =
            addrs.iter().filter_map(Value::as_str).map(|a| (a.to_string(), Value::from(connect(a)))).collect();
        report.insert("connect".into(), results.into());
    }
    if let Some(paths) = plan["read"].as_array() {
        let results: Map<String, Value> =
            paths.iter().filter_map(Value::as_str).map(|p| (p.to_string(), Value::from(read(p)))).collect();
        report.insert("read".into(), results.into());
    }
    if plan["environ"].as_bool() == Some(true) {
        report.insert("environ".into(), environ());
    }
    if let Some(n) = plan["fork"].as_u64() {
        report.insert("fork".into(), fork(n.min(MAX_FORK)));
    }
    if let Some(mib) = plan["memory_mib"].as_u64() {
        report.insert("memory".into(), eat(mib));
    }
    if plan["user_namespace"].as_bool() == Some(true) {
        report.insert("user_namespace".into(), user_namespace());
    }
    report.into()
}

/// Makes a user namespace (as root in it, a process reaches much more of the kernel) with
/// util-linux's `unshare`: its exit status and what it said.
fn user_namespace() -> Value {
    match Command::new("unshare").args(["--user", "--map-root-user", "true"]).stdin(Stdio::null()).output() {
        Ok(out) => json!({"status": out.status.code(), "stderr": String::from_utf8_lossy(&out.stderr).trim()}),
        Err(e) => json!({"status": null, "stderr": format!("could not run unshare: {e}")}),
    }
}

fn connect(addr: &str) -> String {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return format!("bad address: {e}"),
    };
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => "connected".into(),
        Err(e) if e.kind() == ErrorKind::TimedOut => "timed out".into(),
        Err(e) => format!("error: {e}"),
    }
}

fn read(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            format!("listed: {}", names.join(","))
        }
        Err(_) => match std::fs::read(path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("error: {e}"),
        },
    }
}

fn environ() -> Value {
    let me = std::process::id();
    let mut seen = Vec::new();
    let mut readable = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        seen.push(pid);
        if pid != me && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| !e.is_empty()) {
            readable.push(pid);
        }
    }
    json!({"self": me, "seen": seen, "readable": readable})
}

fn fork(n: u64) -> Value {
    let mut children: Vec<Child> = Vec::new();
    let mut error = String::new();
    while (children.len() as u64) < n {
        match Command::new("/bin/sleep").arg("60").stdin(Stdio::null()).stdout(Stdio::null()).spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                error = e.to_string();
                break;
            }
        }
    }
    let started = children.len();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    json!({"started": started, "error": error})
}

fn eat(mib: u64) -> Value {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let status = Command::new(exe).arg("--eat").arg(mib.to_string()).stdout(Stdio::null()).status();
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(code), _) => json!({"exit_code": code}),
                (_, Some(signal)) => json!({"signal": signal}),
                _ => json!({"exit": s.to_string()}),
            }
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}
