//! What every process kind serves on `/metrics` under load is valid Prometheus exposition
//! (`promtool check metrics`: syntax, help text, naming) and lists only metrics the
//! catalogs document (docs/metrics.md), with their help text.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use baton_service::catalog::{self, Metric};
use baton_testkit::{Federation, FederationApi, send_when_known};
use serde_json::json;

fn catalogs() -> Vec<&'static Metric> {
    [
        baton_router::metrics::CATALOG,
        baton_cell::metrics::CATALOG,
        baton_worker::metrics::CATALOG,
        baton_shard_manager::metrics::CATALOG,
        baton_shardmap::METRICS,
        catalog::SERVICE,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `promtool check metrics` on `text`: its complaints (none when all is well).
fn promtool_check(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { String::new() } else { said }
}

/// The metric families `text` declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_kind_serves_valid_documented_metrics_under_load() {
    let mut federation = Federation::start(1, 31800, "2s").await;
    let (key, r) = federation.open_to("acme").await;
    let client = reqwest::Client::new();
    let spec = baton_testkit::echo_spec("echo", json!({"resources": {"cpu_millis": 50, "memory_mib": 32}}));
    let answer =
        client.post(federation.router_url(r, "/v1/functions")).bearer_auth(&key).json(&spec).send().await.unwrap();
    assert_eq!(answer.status(), 201);
    // Load: a cold call, warm ones, and calls that fail (an unknown function, no key).
    let call = federation.router_url(r, "/function/echo");
    let (first, _) = send_when_known(client.post(&call).bearer_auth(&key).body("cold")).await;
    assert_eq!(first.status(), 200);
    for i in 0..200 {
        let answer = client.post(&call).bearer_auth(&key).body(format!("warm {i}")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    let missing = client.post(federation.router_url(r, "/function/nope")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(client.post(&call).send().await.unwrap().status(), 401);

    let cell = &federation.cells[0];
    let endpoints = [
        ("router", federation.routers[r].admin_port),
        ("cell", cell.admin_port),
        ("worker", cell.worker_admin_ports[0]),
        ("shard manager", federation.replica_admin_ports[0]),
    ];
    let documented: BTreeSet<(String, String)> = catalogs()
        .into_iter()
        .map(|m| {
            let kind = match m.kind {
                catalog::Kind::Counter => "counter",
                catalog::Kind::Gauge => "gauge",
                catalog::Kind::Histogram => "histogram",
            };
            (m.name.to_string(), kind.to_string())
        })
        .collect();
    for (process, port) in endpoints {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
        let exported = families(&text);
        assert!(exported.len() >= 4, "the {process} exports its metrics: {text}");
        let complaints = promtool_check(&text);
        assert!(complaints.is_empty(), "promtool check metrics on the {process}'s /metrics:\n{complaints}\n{text}");
        let undocumented: Vec<_> = exported.difference(&documented).collect();
        assert!(undocumented.is_empty(), "the {process} exports metrics docs/metrics.md lacks: {undocumented:?}");
        for (name, _) in &exported {
            assert!(text.contains(&format!("# HELP {name} ")), "the {process}'s {name} has no help text");
        }
    }
}
