//! One cell end to end with real processes: `baton-cell` (control and data plane), a
//! process-runtime `baton-worker`, and the sample functions.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test]
async fn first_call_is_cold_the_next_warm_and_requests_round_trip() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 50, 23000).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({}))).await;
    let client = reqwest::Client::new();
    let (first, not_yet) = send_when_known(
        client
            .post(cluster.url("/function/echo/a/b?x=1&y=two"))
            .header("x-custom", "kept")
            .header("x-call-id", "call-123")
            .body("hello body"),
    )
    .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-baton-cold-start"], "true");
    let call_id = first.headers()["x-call-id"].clone();
    assert!(!call_id.is_empty() && call_id != "call-123", "the call ID is the data plane's own: {call_id:?}");
    let timing = first.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(
        timing.starts_with("queue;dur=") && timing.contains(", create;dur=") && timing.contains(", proxy;dur="),
        "{timing}"
    );
    let reply: serde_json::Value = first.json().await.unwrap();
    assert_eq!(reply["method"], "POST");
    assert_eq!(reply["path"], "/a/b");
    assert_eq!(reply["query"], "x=1&y=two");
    assert_eq!(reply["headers"]["x-custom"], "kept");
    assert_eq!(reply["headers"]["x-client-call-id"], "call-123", "the client's ID, under its own name");
    assert_eq!(reply["body"], "hello body");
    let second = client.get(cluster.url("/function/echo")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-baton-cold-start"], "false");
    assert!(!second.headers()["x-call-id"].is_empty() && second.headers()["x-call-id"] != call_id);

    // Unknown function: 404 with a JSON error.
    let missing = client.get(cluster.url("/function/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "function_not_found");

    // The metrics say the same, with bounded labels: the cold call queued, the warm one
    // did not. Gauges refresh with the next autoscaling round: wait for them.
    let not_found = format!(r#"baton_cell_invocations_total{{outcome="not_found"}} {}"#, 1 + not_yet);
    let needles = [
        r#"baton_cell_invocations_total{outcome="ok"} 2"#,
        &not_found,
        "baton_cell_cold_starts_total 1",
        "baton_cell_queued_calls_total 1",
        "baton_cell_invocation_seconds_bucket",
        "baton_cell_control_decision_seconds_bucket",
        "baton_cell_sandboxes_ready 1",
        r#"baton_cell_workers{state="healthy"} 1"#,
        r#"baton_cell_sandbox_creations_total{outcome="ok"} 1"#,
    ];
    let url = format!("http://127.0.0.1:{}/metrics", cluster.admin_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let present = |n: &str| metrics.lines().any(|l| l == n || (n.ends_with("_bucket") && l.starts_with(n)));
        let missing: Vec<&&str> = needles.iter().filter(|n| !present(n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{missing:?} missing from:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn thirty_concurrent_calls_scale_to_max_ten_and_never_past_it() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    let w1 = cluster.start_worker("w1", 50, 23200).await;
    cluster
        .deploy(spin_spec(
            "spin",
            serde_json::json!({"scaling": {"max_scale": 10, "container_concurrency": 1, "target_concurrency": 1.0}}),
        ))
        .await;
    let mut worker =
        baton_proto::worker::worker_client::WorkerClient::connect(format!("http://127.0.0.1:{w1}")).await.unwrap();
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for _ in 0..30 {
        let client = client.clone();
        let url = cluster.url("/function/spin?ms=300&mode=sleep");
        calls.push(tokio::spawn(async move { client.get(url).send().await.unwrap().status() }));
    }
    let mut api = cluster.api().await;
    let (mut max_seen, mut max_on_worker) = (0, 0);
    let mut done = 0;
    while done < calls.len() {
        let info =
            api.get_function(baton_proto::cell::GetFunctionRequest { name: "spin".into() }).await.unwrap().into_inner();
        max_seen = max_seen.max(info.ready + info.creating);
        // What the worker really runs, not only the control plane's count.
        let listed = worker
            .list_sandboxes(baton_proto::worker::ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes;
        max_on_worker = max_on_worker.max(listed.len());
        done = calls.iter().filter(|c| c.is_finished()).count();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(max_seen, 10, "the scale reaches max_scale and never passes it");
    assert_eq!(max_on_worker, 10, "the worker ran max_scale sandboxes at most, and reached it");
}

#[tokio::test]
async fn the_readme_cli_registers_lists_and_deletes_functions() {
    use std::io::Write;
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    let cp = format!("http://127.0.0.1:{}", cluster.control_port);
    let run = |args: &[&str], stdin: Option<String>| {
        let mut cmd = baton_testkit::daemon("baton-cell");
        cmd.arg("functions").arg("--control-plane").arg(&cp).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let spec = echo_spec("echo", serde_json::json!({})).to_string();
    let (ok, out, _) = run(&["put", "-"], Some(spec.clone()));
    assert!(ok && out.trim() == "created", "{out}");
    let (ok, out, _) = run(&["put", "-"], Some(spec));
    assert!(ok && out.trim() == "updated", "{out}");
    let (ok, out, _) = run(&["list"], None);
    assert!(ok && out.contains(r#""name":"echo""#) && out.contains("ready=0"), "{out}");
    let (ok, _, err) =
        run(&["put", "-"], Some(r#"{"name":"bad","executable":"/x","scaling":{"min_scale":-1}}"#.into()));
    assert!(!ok && err.contains("scaling.min_scale"), "{err}");
    let (ok, out, _) = run(&["delete", "echo"], None);
    assert!(ok && out.trim() == "deleted");
    let (ok, _, err) = run(&["get", "echo"], None);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_cell_on_redis_keeps_its_functions_across_a_restart() {
    let url =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    let mut cluster = Cluster::new("");
    cluster.cell_env = vec![
        ("BATON_STORE__REDIS_URL".into(), url),
        ("BATON_CELL__ID".into(), format!("redis-e2e-{}", std::process::id())),
    ];
    cluster.start_cell().await;
    cluster.start_worker("w1", 20, 26400).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({}))).await;
    assert_eq!(send_when_known(reqwest::Client::new().get(cluster.url("/function/echo"))).await.0.status(), 200);
    let writes = cluster.store_writes().await;
    assert!(writes >= 3, "function, worker and data plane written to Redis: {writes}");

    cluster.cell.as_mut().unwrap().sigkill();
    cluster.start_cell().await;
    let info = cluster.api().await.get_function(baton_proto::cell::GetFunctionRequest { name: "echo".into() }).await;
    assert!(info.is_ok(), "the function survived the restart in Redis");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = reqwest::get(cluster.url("/function/echo")).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .api()
        .await
        .delete_function(baton_proto::cell::DeleteFunctionRequest { name: "echo".into() })
        .await
        .unwrap();
}
