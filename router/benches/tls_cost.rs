//! What mutual TLS between baton's processes costs, against plaintext, in one run: an
//! in-process federation (one shard manager, one cell with one worker, one router) started
//! fresh for each pass, in four variants that differ only in `[tls]` and the router's
//! `upstream_protocol` (HTTP/2, the default, and HTTP/1). Passes go in mirrored order
//! (A B C D D C B A, twice), so drift over the run shows and favours none.
//!
//! - Warm path: `wrk -t1 -c32 -d8s --latency` (keep-alive) through the router to one
//!   `baton-fn-echo` sandbox (one core, concurrency 1,000): router → data plane is the
//!   hop TLS adds to each call. Calls/s, p50/p99, and the CPU of this process (router, cell
//!   and worker; not the sandbox, not wrk) per call.
//! - Registration: `POST /v1/functions` through the router, one at a time (router → shard
//!   manager over gRPC, a raft commit with fsync), 100 per pass, after the warm pass:
//!   p50/p99.
//!
//! Run with `cargo build --release --bins && cargo bench -p baton-router --bench tls_cost`
//! (needs `wrk`, a Debian package). `TLS_COST_PROFILE=plaintext` (or `tls`) instead runs
//! only that side's warm path, one 20 s pass, for `perf record` to profile.

use std::time::{Duration, Instant};

use baton_testkit::{FederationApi, inproc};
use serde_json::json;

struct Side {
    name: &'static str,
    federation: inproc::InProcess,
    router: usize,
    key: String,
}

/// Process CPU time (user + system) so far.
fn cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let time = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

async fn side(name: &'static str, port_base: u16, tls: bool, protocol: &str) -> Side {
    let mut builder = inproc::Builder::new(port_base);
    if tls {
        builder = builder.tls();
    }
    let mut federation = builder.start().await;
    let key = federation.tenant("bench").await;
    let router = federation.start_router_with(&key, json!({"upstream_protocol": protocol})).await;
    let spec = baton_testkit::echo_spec(
        "echo",
        json!({"resources": {"cpu_millis": 1000}, "scaling": {"min_scale": 1, "max_scale": 1, "container_concurrency": 1000}}),
    );
    let client = reqwest::Client::new();
    let registered =
        client.post(federation.router_url(router, "/v1/functions")).bearer_auth(&key).json(&spec).send().await.unwrap();
    assert_eq!(registered.status(), 201, "{}", registered.text().await.unwrap());
    let url = federation.router_url(router, "/function/echo");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post(&url).bearer_auth(&key).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "{name}: echo did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Side { name, federation, router, key }
}

/// Runs wrk against `side` for 8 s: calls/s, p50, p99 (ms) and µs of CPU per call.
async fn warm(side: &Side, duration: &str) -> (f64, f64, f64, f64) {
    let url = side.federation.router_url(side.router, "/function/echo");
    let auth = format!("Authorization: Bearer {}", side.key);
    // The in-process workers reap every child of this process, so wrk's exit cannot be
    // waited for: it writes its report to a file, and a second file says it is done.
    let dir = tempfile::tempdir().unwrap();
    let (report, done) = (dir.path().join("wrk.txt"), dir.path().join("done"));
    let before = cpu();
    // The reaper collects it; its exit status is the `done` file.
    #[allow(clippy::zombie_processes)]
    let _shell = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "wrk -t1 -c32 -d{duration} --latency -H '{auth}' '{url}' > '{}' 2>&1; touch '{}'",
            report.display(),
            done.display()
        ))
        .spawn()
        .expect("sh");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.exists() {
        assert!(Instant::now() < deadline, "wrk did not finish (apt-get install wrk)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spent = cpu() - before;
    let text = std::fs::read_to_string(&report).unwrap();
    let field = |prefix: &str| -> f64 {
        let line = text.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(1).map(parse_value).unwrap()
    };
    let rate = field("Requests/sec:");
    let total: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(!text.contains("Non-2xx"), "{}: failed calls\n{text}", side.name);
    (rate, field("50%"), field("99%"), spent.as_secs_f64() * 1e6 / total)
}

/// A wrk figure: `1.23ms`, `950.00us`, `2.01s` as milliseconds; a plain number as is.
fn parse_value(text: &str) -> f64 {
    let number = |suffix: &str| text.strip_suffix(suffix).and_then(|n| n.parse::<f64>().ok());
    if let Some(us) = number("us") {
        us / 1000.0
    } else if let Some(ms) = number("ms") {
        ms
    } else if let Some(s) = number("s") {
        s * 1000.0
    } else {
        text.parse().unwrap()
    }
}

/// Registers 100 functions through `side`'s router one at a time: p50 and p99 (ms).
async fn registrations(side: &Side, pass: usize) -> (f64, f64) {
    let client = reqwest::Client::new();
    let url = side.federation.router_url(side.router, "/v1/functions");
    let mut took = Vec::new();
    for i in 0..100 {
        let spec = baton_testkit::echo_spec(&format!("r{pass}-{i}"), json!({}));
        let sent = Instant::now();
        let answer = client.post(&url).bearer_auth(&side.key).json(&spec).send().await.unwrap();
        took.push(sent.elapsed());
        assert_eq!(answer.status(), 201);
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(took[49]), ms(took[98]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(which) = std::env::var("TLS_COST_PROFILE") {
        let side = side("profiled", 27200, which == "tls", "http2").await;
        let (rate, p50, p99, cpu) = warm(&side, "20s").await;
        println!("{which}: {rate:.0} calls/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {cpu:.1} µs CPU per call");
        side.federation.shutdown().await;
        return;
    }
    // Each pass starts a fresh federation and stops it after, so no side keeps a
    // placement (sandbox CPU, ports, cgroups) the others do not get: the sides differ
    // only in their settings. Mirrored order, twice, over two port ranges in turn.
    let sides = [
        ("plain h2", false, "http2"),
        ("TLS h2", true, "http2"),
        ("plain h1", false, "http1"),
        ("TLS h1", true, "http1"),
    ];
    let mirrored = [0, 1, 2, 3, 3, 2, 1, 0];
    println!("warm path: wrk -t1 -c32 -d8s (after 2 s unmeasured) through the router to one echo sandbox;");
    println!("registration: 100 POST /v1/functions through the router, one at a time, after it");
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>12} {:>9} {:>9}",
        "pass", "calls/s", "p50 ms", "p99 ms", "CPU µs/call", "reg p50", "reg p99"
    );
    let mut results: Vec<(&str, [f64; 6])> = Vec::new();
    for (pass, index) in mirrored.iter().chain(mirrored.iter()).enumerate() {
        let (name, tls, protocol) = sides[*index];
        let port_base = [27200, 31600][pass % 2];
        let side = side(name, port_base, tls, protocol).await;
        warm(&side, "2s").await;
        let (rate, p50, p99, cpu) = warm(&side, "8s").await;
        let (reg50, reg99) = registrations(&side, pass).await;
        println!("{name:<10} {rate:>9.0} {p50:>8.2} {p99:>8.2} {cpu:>12.1} {reg50:>9.2} {reg99:>9.2}");
        results.push((name, [rate, p50, p99, cpu, reg50, reg99]));
        side.federation.shutdown().await;
    }
    for (name, _, _) in sides {
        let median = |i: usize| {
            let mut values: Vec<f64> = results.iter().filter(|(n, _)| *n == name).map(|(_, v)| v[i]).collect();
            values.sort_by(f64::total_cmp);
            (values[(values.len() - 1) / 2] + values[values.len() / 2]) / 2.0
        };
        println!(
            "{name:<10} {:>9.0} {:>8.2} {:>8.2} {:>12.1} {:>9.2} {:>9.2}  (median of 4)",
            median(0),
            median(1),
            median(2),
            median(3),
            median(4),
            median(5)
        );
    }
}
