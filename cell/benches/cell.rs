//! Cell benchmarks (not tests), against real release processes: `baton-cell` (both planes),
//! `baton-worker`s and the sample functions.
//!
//!   cargo build --release --bins && cargo bench -p baton-cell --bench cell -- warm
//!   cargo bench -p baton-cell --bench cell -- cold
//!   cargo bench -p baton-cell --bench cell -- sweep [--rates 100,200,400] [--seconds 3]
//!
//! `warm` runs `wrk` (Debian package) against the data plane and straight against the
//! sandbox in the same run. `cold` measures cold-start latency and its parts with the
//! process and the emulated runtime. `sweep` raises the rate of cold starts (each call to a
//! function that has no sandbox, emulated 40 ms creation) and reports latency and the cell
//! process's CPU use at each rate.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::cell::PutFunctionRequest;
use baton_proto::cell::cell_control_client::CellControlClient;

/// A child process stopped on drop: SIGTERM first (a worker then deletes its sandboxes),
/// SIGKILL if it is still there after ten seconds.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(path.exists(), "{} missing: run `cargo build --release --bins` first", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_port(port: u16) {
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Cell {
    dir: tempfile::TempDir,
    control: u16,
    http: u16,
    // Dropped in this order: workers first (deleting their sandboxes), then the cell.
    _workers: Vec<Proc>,
    cell: Proc,
}

impl Cell {
    async fn start(emulated_nodes: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (control, http) = (free_port(), free_port());
        let cell = baton_testkit::daemon("baton-cell")
            .args(["--listen", &format!("127.0.0.1:{control}"), "--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", "127.0.0.1:0", "--store-path"])
            .arg(dir.path().join("cell.redb"))
            .env("BATON_LOG__FILTER", "warn")
            .env("BATON_CONTROL_PLANE__AUTOSCALE_INTERVAL", "100ms")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(control).await;
        wait_port(http).await;
        let mut worker = baton_testkit::daemon("baton-worker");
        worker
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--node-id", "bench"])
            .arg("--state-dir")
            .arg(dir.path().join("worker"))
            .args(["--control-plane", &format!("http://127.0.0.1:{control}")])
            .env("BATON_LOG__FILTER", "warn")
            .env("BATON_WORKER__MAX_SANDBOXES", "100000")
            .env("BATON_PROCESS__CGROUP_PARENT", format!("baton-bench-{}", std::process::id()))
            // The sample functions run from the checkout, which `nobody` may not reach.
            .env("BATON_PROCESS__USER_FALLBACK", "worker")
            .stdout(Stdio::null());
        // Offer more CPU than the machine has, so 100 cold sandboxes of 0.1 core fit; each
        // still gets its own CFS quota (a quota far below the start-up cost of a process,
        // 0.01 core say, stretches a 1.3 ms start to over 100 ms).
        worker.env("BATON_WORKER__CPU_MILLIS", "20000");
        if let Some(n) = emulated_nodes {
            worker.args(["--emulate-nodes", &n.to_string()]);
            worker.env("BATON_WORKER__CPU_MILLIS", "100000000").env("BATON_WORKER__MEMORY_MIB", "100000000");
        }
        let worker = Proc(worker.spawn().unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        Cell { dir, control, http, cell: Proc(cell), _workers: vec![worker] }
    }

    async fn deploy(&self, spec: serde_json::Value) {
        let mut api = CellControlClient::connect(format!("http://127.0.0.1:{}", self.control)).await.unwrap();
        api.put_function(PutFunctionRequest { spec_json: spec.to_string(), pull_first: false }).await.unwrap();
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.cell.0.id())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn wrk(url: &str, seconds: u32, connections: u32) -> String {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let grab = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            .unwrap_or_default()
    };
    format!("{} req/s | p50 {} | p90 {} | p99 {}", grab("Requests/sec:"), grab("50%"), grab("90%"), grab("99%"))
}

async fn warm() {
    let cell = Cell::start(None).await;
    let echo = bin("baton-fn-echo").display().to_string();
    cell.deploy(serde_json::json!({"name": "echo", "executable": echo, "resources": {"cpu_millis": 2000, "memory_mib": 128}, "scaling": {"min_scale": 1, "max_scale": 1, "container_concurrency": 0}})).await;
    let url = format!("http://127.0.0.1:{}/function/echo", cell.http);
    while reqwest::get(&url).await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sandbox's own address, from the worker's state folder record.
    let record_dir = cell.dir.path().join("worker/sandboxes");
    let entry = std::fs::read_dir(&record_dir).unwrap().next().unwrap().unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path().join("sandbox.json")).unwrap()).unwrap();
    let direct = format!("http://127.0.0.1:{}/", record["port"]);
    for connections in [1, 16] {
        println!("| direct to the sandbox | {connections} | {} |", wrk(&direct, 10, connections));
        println!("| through the data plane | {connections} | {} |", wrk(&url, 10, connections));
    }
}

/// The isolation the worker applied to the sandboxes it runs now, from its own records
/// (`<state_dir>/sandboxes/*/sandbox.json`): each distinct level with what it consists of,
/// e.g. `partial (namespaces, cgroup v1, as the worker's user)`.
fn isolation(cell: &Cell) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(cell.dir.path().join("worker/sandboxes")) else { return "no sandbox".into() };
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("sandbox.json")) else { continue };
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let i = &record["isolation"];
        let (namespaces, cgroup, unprivileged) =
            (i["namespaces"] == true, i["cgroup"].as_str().map(str::to_string), i["unprivileged_user"] == true);
        let level = match (namespaces, cgroup.is_some(), unprivileged) {
            (true, true, true) => "full",
            (false, false, false) => "none",
            _ => "partial",
        };
        let mut parts = vec![];
        if namespaces {
            parts.push("namespaces".to_string());
        }
        if let Some(v) = cgroup {
            parts.push(format!("cgroup {v}"));
        }
        parts.push(if unprivileged { "unprivileged user" } else { "as the worker's user" }.into());
        seen.insert(format!("{level} ({})", parts.join(", ")));
    }
    if seen.is_empty() { "no sandbox".into() } else { seen.into_iter().collect::<Vec<_>>().join(" / ") }
}

/// Cold calls to `n` new functions; the row is labelled `label` and, for process
/// sandboxes, the isolation the worker reports it applied.
async fn cold_runs(label: &str, cell: &Cell, spec: impl Fn(usize) -> serde_json::Value, n: usize) {
    for i in 0..n {
        cell.deploy(spec(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let (mut total, mut queue, mut proxy) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let started = Instant::now();
        let r = client.get(format!("http://127.0.0.1:{}/function/f{i}", cell.http)).send().await.unwrap();
        total.push(started.elapsed());
        assert_eq!(r.status(), 200, "f{i}");
        assert_eq!(r.headers()["x-baton-cold-start"], "true");
        let timing = r.headers()["server-timing"].to_str().unwrap().to_string();
        let dur = |name: &str| -> Duration {
            let part = timing.split(", ").find(|p| p.starts_with(name)).unwrap();
            Duration::from_secs_f64(part.rsplit('=').next().unwrap().parse::<f64>().unwrap() / 1000.0)
        };
        queue.push(dur("queue"));
        proxy.push(dur("proxy"));
    }
    for v in [&mut total, &mut queue, &mut proxy] {
        v.sort();
    }
    let label =
        if label.starts_with("process") { format!("{label}, isolation {}", isolation(cell)) } else { label.into() };
    println!(
        "| {label} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        pct(&total, 0.5),
        pct(&total, 0.99),
        pct(&queue, 0.5),
        pct(&queue, 0.99),
        pct(&proxy, 0.5)
    );
}

async fn cold() {
    println!(
        "| runtime | cold calls | latency p50 ms | p99 ms | queue (placement + creation) p50 ms | p99 ms | proxy p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cell = Cell::start(None).await;
    let echo = bin("baton-fn-echo").display().to_string();
    cold_runs(
        "process (baton-fn-echo)",
        &cell,
        |i| serde_json::json!({"name": format!("f{i}"), "executable": echo, "resources": {"cpu_millis": 100, "memory_mib": 32}}),
        100,
    )
    .await;
    drop(cell);
    let cell = Cell::start(Some(4)).await;
    cold_runs("emulated (40 ms)", &cell, |i| serde_json::json!({"name": format!("f{i}"), "runtime": "emulated", "resources": {"cpu_millis": 10, "memory_mib": 32}}), 100)
        .await;
}

async fn sweep(rates: Vec<u32>, seconds: u32) {
    let cell = Cell::start(Some(20)).await;
    let needed: u32 = rates.iter().map(|r| r * seconds).sum();
    eprintln!("registering {needed} functions…");
    let mut api = CellControlClient::connect(format!("http://127.0.0.1:{}", cell.control)).await.unwrap();
    for i in 0..needed {
        let spec = serde_json::json!({"name": format!("f{i}"), "runtime": "emulated", "resources": {"cpu_millis": 1, "memory_mib": 4}, "scaling": {"max_scale": 1}});
        api.put_function(PutFunctionRequest { spec_json: spec.to_string(), pull_first: false }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "| offered cold starts/s | achieved/s | p50 ms | p99 ms | scheduling overhead p50 / p99 ms (minus 40 ms) | failures | cell CPU (cores) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    let mut next = 0u32;
    for rate in rates {
        let calls = rate * seconds;
        let cpu_before = cell.cpu_seconds();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(calls as usize);
        for k in 0..calls {
            let due = started + Duration::from_secs_f64(f64::from(k) / f64::from(rate));
            tokio::time::sleep_until(due.into()).await;
            let url = format!("http://127.0.0.1:{}/function/f{}", cell.http, next);
            next += 1;
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = client.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false);
                (t.elapsed(), ok)
            }));
        }
        let mut latencies = Vec::new();
        let mut failures = 0;
        for t in tasks {
            let (d, ok) = t.await.unwrap();
            if ok {
                latencies.push(d);
            } else {
                failures += 1;
            }
        }
        let wall = started.elapsed();
        let cpu = (cell.cpu_seconds() - cpu_before) / wall.as_secs_f64();
        latencies.sort();
        let overhead: Vec<Duration> = latencies.iter().map(|d| d.saturating_sub(Duration::from_millis(40))).collect();
        println!(
            "| {rate} | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} | {failures} | {cpu:.2} |",
            latencies.len() as f64 / wall.as_secs_f64(),
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            pct(&overhead, 0.5),
            pct(&overhead, 0.99)
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let mode = args
        .iter()
        .skip(1)
        .find(|a| ["warm", "cold", "sweep"].contains(&a.as_str()))
        .cloned()
        .unwrap_or_else(|| "cold".into());
    match mode.as_str() {
        "warm" => warm().await,
        "sweep" => {
            let rates = arg("--rates")
                .unwrap_or_else(|| "100,200,400,800".into())
                .split(',')
                .map(|r| r.parse().unwrap())
                .collect();
            let seconds = arg("--seconds").map(|s| s.parse().unwrap()).unwrap_or(3);
            sweep(rates, seconds).await
        }
        _ => cold().await,
    }
}
