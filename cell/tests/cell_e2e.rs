//! One cell end to end with real processes: `baton-cell` (control and data plane), a
//! process-runtime `baton-worker`, and the sample functions.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn first_call_is_cold_the_next_warm_and_requests_round_trip() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 50, 23000).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({}))).await;
    let client = reqwest::Client::new();
    let first = client
        .post(cluster.url("/function/echo/a/b?x=1&y=two"))
        .header("x-custom", "kept")
        .header("x-call-id", "call-123")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-baton-cold-start"], "true");
    assert_eq!(first.headers()["x-call-id"], "call-123");
    assert!(first.headers()["server-timing"].to_str().unwrap().contains("queue;dur="));
    let reply: serde_json::Value = first.json().await.unwrap();
    assert_eq!(reply["method"], "POST");
    assert_eq!(reply["path"], "/a/b");
    assert_eq!(reply["query"], "x=1&y=two");
    assert_eq!(reply["headers"]["x-custom"], "kept");
    assert_eq!(reply["body"], "hello body");
    let second = client.get(cluster.url("/function/echo")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-baton-cold-start"], "false");
    assert!(!second.headers()["x-call-id"].is_empty(), "a call ID is made when none is given");

    // Unknown function: 404 with a JSON error.
    let missing = client.get(cluster.url("/function/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "function_not_found");

    // The metrics say the same, with bounded labels.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", cluster.admin_port)).await.unwrap().text().await.unwrap();
    for needle in [
        r#"baton_cell_invocations_total{outcome="ok"} 2"#,
        r#"baton_cell_invocations_total{outcome="not_found"} 1"#,
        "baton_cell_cold_starts_total 1",
        "baton_cell_invocation_seconds_bucket",
        "baton_cell_control_decision_seconds_bucket",
        "baton_cell_sandboxes_ready 1",
        r#"baton_cell_workers{state="healthy"} 1"#,
        r#"baton_cell_sandbox_creations_total{outcome="ok"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn thirty_concurrent_calls_scale_to_max_ten_and_never_past_it() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 50, 23200).await;
    cluster
        .deploy(spin_spec(
            "spin",
            serde_json::json!({"scaling": {"max_scale": 10, "container_concurrency": 1, "target_concurrency": 1.0}}),
        ))
        .await;
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for _ in 0..30 {
        let client = client.clone();
        let url = cluster.url("/function/spin?ms=300&mode=sleep");
        calls.push(tokio::spawn(async move { client.get(url).send().await.unwrap().status() }));
    }
    let mut api = cluster.api().await;
    let mut max_seen = 0;
    let mut done = 0;
    while done < calls.len() {
        let info =
            api.get_function(baton_proto::cell::GetFunctionRequest { name: "spin".into() }).await.unwrap().into_inner();
        max_seen = max_seen.max(info.ready + info.creating);
        done = calls.iter().filter(|c| c.is_finished()).count();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(max_seen, 10, "the scale reaches max_scale and never passes it");
}
