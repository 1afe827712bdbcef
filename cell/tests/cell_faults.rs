//! The cell under failures and bad input, with real processes: scale to zero, refusals at
//! the data plane, a worker or the control plane killed with SIGKILL under load, data-plane
//! restarts, and the invocation path's store writes (none).

mod support;

use std::time::{Duration, Instant};

use baton_proto::cell::GetFunctionRequest;
use baton_proto::worker::ListSandboxesRequest;
use baton_proto::worker::worker_client::WorkerClient;
use support::*;

async fn scale_of(cluster: &Cluster, name: &str) -> (u32, u32) {
    let info = cluster.api().await.get_function(GetFunctionRequest { name: name.into() }).await.unwrap().into_inner();
    (info.ready, info.creating)
}

async fn wait_scale(cluster: &Cluster, name: &str, want: (u32, u32), within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = scale_of(cluster, name).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: scale {now:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `url` every `every` until `stop`, recording (time since start, status or 0 on a
/// transport error).
fn steady_load(
    url: String,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(Duration, u16)>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let started = Instant::now();
        let mut results = Vec::new();
        let mut tick = tokio::time::interval(every);
        while !*stop.borrow() {
            tick.tick().await;
            let at = started.elapsed();
            let status = client.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            results.push((at, status));
        }
        results
    })
}

#[tokio::test]
async fn an_idle_function_scales_to_zero_after_its_grace_and_the_next_call_is_cold() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 20, 25000).await;
    let scaling =
        serde_json::json!({"scaling": {"stable_window": "2s", "panic_window": "1s", "scale_to_zero_grace": "1s"}});
    cluster.deploy(echo_spec("echo", scaling)).await;
    let client = reqwest::Client::new();
    let (first, _) = send_when_known(client.get(cluster.url("/function/echo"))).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-baton-cold-start"], "true");
    assert_eq!(scale_of(&cluster, "echo").await, (1, 0));
    wait_scale(&cluster, "echo", (0, 0), Duration::from_secs(15)).await;
    let again = client.get(cluster.url("/function/echo")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-baton-cold-start"], "true");
}

#[tokio::test]
async fn the_data_plane_refuses_clearly_and_leaves_nothing_behind() {
    let mut cluster = Cluster::new("");
    cluster.cell_env = vec![
        ("BATON_DATA_PLANE__QUEUE_CAPACITY".into(), "1".into()),
        ("BATON_DATA_PLANE__QUEUE_TIMEOUT".into(), "1s".into()),
        ("BATON_DATA_PLANE__MAX_BODY_BYTES".into(), "1024".into()),
    ];
    cluster.start_cell().await;
    let w1 = cluster.start_worker("w1", 20, 25200).await;
    cluster
        .deploy(spin_spec("spin", serde_json::json!({"scaling": {"max_scale": 1, "container_concurrency": 1}})))
        .await;
    let writes = cluster.store_writes().await;
    let client = reqwest::Client::new();
    let error_code = |body: serde_json::Value| body["error"]["code"].as_str().unwrap().to_string();

    // Body over the limit: 413, before anything else happens.
    let big = client.post(cluster.url("/function/spin")).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(error_code(big.json().await.unwrap()), "body_too_large");

    // The only sandbox is started; one long call holds its only slot; the next queues; the
    // one after finds the queue full.
    assert_eq!(send_when_known(client.get(cluster.url("/function/spin"))).await.0.status(), 200);
    // The gauges refresh every 100 ms: let them show the warm-up call gone first.
    cluster.wait_metric("baton_cell_in_flight", |n| n == 0.0).await;
    let long = tokio::spawn({
        let (client, url) = (client.clone(), cluster.url("/function/spin?ms=2500&mode=sleep"));
        async move { client.get(url).send().await.unwrap().status() }
    });
    cluster.wait_metric("baton_cell_in_flight", |n| n >= 1.0).await;
    let queued = tokio::spawn({
        let (client, url) = (client.clone(), cluster.url("/function/spin"));
        async move { client.get(url).send().await.unwrap() }
    });
    cluster.wait_metric("baton_cell_queue_depth", |n| n >= 1.0).await;
    let full = client.get(cluster.url("/function/spin")).send().await.unwrap();
    assert_eq!(full.status(), 503);
    assert_eq!(error_code(full.json().await.unwrap()), "queue_full");
    // The queued call waits its timeout (1 s) and gets 504.
    let timed_out = queued.await.unwrap();
    assert_eq!(timed_out.status(), 504);
    assert_eq!(error_code(timed_out.json().await.unwrap()), "queue_timeout");
    assert_eq!(long.await.unwrap(), 200);

    // The sandbox dies during a call (OOM: 64 MiB limit, 512 MiB asked): 502.
    let mut worker = WorkerClient::connect(format!("http://127.0.0.1:{w1}")).await.unwrap();
    let listed = worker.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;
    assert_eq!(listed.len(), 1);
    let crashed = listed[0].sandbox_id.clone();
    let crash = client.get(cluster.url("/function/spin?alloc_mb=512")).send().await.unwrap();
    assert_eq!(crash.status(), 502);
    assert_eq!(error_code(crash.json().await.unwrap()), "sandbox_error");
    // The dead sandbox leaves the tables (the worker's too: no exited record is left), and
    // the function still works afterwards.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = worker.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;
        if listed
            .iter()
            .all(|s| s.sandbox_id != crashed && s.state == baton_proto::worker::SandboxState::Running as i32)
        {
            break;
        }
        assert!(Instant::now() < deadline, "left behind on the worker: {listed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new sandbox is made for the next call; a call that waits past the queue timeout
    // (1 s) for it on a slow machine is answered 504, and the next one finds it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.get(cluster.url("/function/spin")).send().await.unwrap();
        if answer.status() == 200 {
            break;
        }
        assert_eq!(answer.status(), 504);
        assert!(Instant::now() < deadline, "the function never worked again");
    }
    assert_eq!(cluster.store_writes().await, writes, "no refusal or crash wrote to the store");
}

#[tokio::test]
async fn calls_after_a_worker_is_sigkilled_succeed_on_the_other_worker() {
    // Two workers in one cell, a sandbox on each; SIGKILL one under load.
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    let w1 = cluster.start_worker("w1", 20, 25400).await;
    let w2 = cluster.start_worker("w2", 20, 25600).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({"scaling": {"min_scale": 2}}))).await;
    wait_scale(&cluster, "echo", (2, 0), Duration::from_secs(10)).await;
    let mut victim = WorkerClient::connect(format!("http://127.0.0.1:{w1}")).await.unwrap();
    let hosted = victim.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;
    assert_eq!(hosted.len(), 1, "the worker to be killed hosts one of the two sandboxes: {hosted:?}");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load_started = Instant::now();
    let load = steady_load(cluster.url("/function/echo"), Duration::from_millis(20), stopped);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.workers[0].sigkill();
    let killed = load_started.elapsed();
    // Detection (worker_timeout 1 s) and replacement on w2.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let _ = stop.send(true);
    let results = load.await.unwrap();
    // Detection takes the 1 s timeout plus a check period (the load's clock starts no
    // later than `load_started`, so this errs towards later).
    let detected = killed + Duration::from_millis(1500);
    let late: Vec<_> = results.iter().filter(|(at, _)| *at >= detected).collect();
    assert!(late.len() > 20, "{} calls after detection", late.len());
    assert!(late.iter().all(|(_, status)| *status == 200), "calls after detection failed: {late:?}");
    let failed = results.iter().filter(|(_, s)| *s != 200).count();
    eprintln!("unavailability: {failed} of {} calls failed around the kill", results.len());
    // One caller, one call at a time: at most the call in flight at the kill may fail (the
    // worker's sandboxes outlive it; the cell replaces them on w2 once it is found dead).
    assert!(failed <= 1, "{failed} calls failed, more than were in flight at the kill: {results:?}");

    // No sandbox of the dead worker remains: both are on w2 now.
    wait_scale(&cluster, "echo", (2, 0), Duration::from_secs(5)).await;
    let mut client = WorkerClient::connect(format!("http://127.0.0.1:{w2}")).await.unwrap();
    let on_w2 = client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;
    assert_eq!(on_w2.len(), 2, "{on_w2:?}");
}

#[tokio::test]
async fn warm_calls_survive_a_sigkilled_control_plane_which_recovers_without_duplicates() {
    let mut cluster = Cluster::new("");
    cluster.start_control().await;
    let dp_port = free_port();
    cluster.start_data_plane("dp1", dp_port).await;
    let w1 = cluster.start_worker("w1", 20, 25800).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({"scaling": {"min_scale": 1}}))).await;
    cluster.deploy(echo_spec("other", serde_json::json!({}))).await;
    wait_scale(&cluster, "echo", (1, 0), Duration::from_secs(10)).await;
    let mut worker = WorkerClient::connect(format!("http://127.0.0.1:{w1}")).await.unwrap();
    let before = worker.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;

    let url = format!("http://127.0.0.1:{dp_port}/function/echo");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = steady_load(url, Duration::from_millis(10), stopped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.cell.as_mut().unwrap().sigkill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_control().await;
    // After the restart: functions are back, the running sandbox is reused.
    wait_scale(&cluster, "echo", (1, 0), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _ = stop.send(true);
    let results = load.await.unwrap();
    let failed: Vec<_> = results.iter().filter(|(_, s)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} warm calls failed: {failed:?}", failed.len(), results.len());
    assert!(results.len() > 100);
    assert_eq!(scale_of(&cluster, "other").await, (0, 0), "functions registered before the crash are there");
    let after = worker.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes;
    let ids = |v: &[baton_proto::worker::SandboxInfo]| v.iter().map(|s| s.sandbox_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the recovered sandbox is reused and none is created twice");
}

#[tokio::test]
async fn two_data_planes_serve_and_a_restarted_one_resyncs() {
    let mut cluster = Cluster::new("");
    cluster.start_control().await;
    let (p1, p2) = (free_port(), free_port());
    cluster.start_data_plane("dp1", p1).await;
    cluster.start_data_plane("dp2", p2).await;
    cluster.start_worker("w1", 20, 26000).await;
    cluster.deploy(echo_spec("echo", serde_json::json!({}))).await;
    let call = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/function/echo")).await.unwrap().status()
    };
    for port in [p1, p2] {
        let url = format!("http://127.0.0.1:{port}/function/echo");
        assert_eq!(send_when_known(reqwest::Client::new().get(url)).await.0.status(), 200);
    }

    cluster.data_planes[0].proc.sigkill();
    cluster.data_planes.remove(0);
    cluster.start_data_plane("dp1", p1).await;
    // It resyncs from a snapshot: the function is known (not 404) and served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = call(p1).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "restarted data plane answers {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(p2).await, 200);
}

#[tokio::test]
async fn a_thousand_mixed_cold_and_warm_invocations_write_nothing_to_the_store() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 40, 26200).await;
    for i in 0..10 {
        // One sandbox each (ten fit the worker's 2 cores of quota), any number of calls at once.
        let scaling = serde_json::json!({"scaling": {"max_scale": 1, "container_concurrency": 0}});
        cluster.deploy(echo_spec(&format!("fn-{i}"), scaling)).await;
    }
    let writes = cluster.store_writes().await;
    assert!(writes >= 12, "ten functions, the worker and the data plane were written: {writes}");
    let client = reqwest::Client::new();
    let mut lanes = Vec::new();
    for lane in 0..4 {
        let (client, base) = (client.clone(), cluster.url(""));
        lanes.push(tokio::spawn(async move {
            let (mut cold, mut ok) = (0, 0);
            // Until a function has answered, a 404 means its deployment has not reached the
            // data plane yet; after that, it would be a failure like any other.
            let mut known = std::collections::HashSet::new();
            for i in 0..250 {
                let function = (i + lane) % 10;
                let request = client.get(format!("{base}/function/fn-{function}"));
                let r = if known.contains(&function) {
                    request.send().await.unwrap()
                } else {
                    send_when_known(request).await.0
                };
                if r.status() == 200 {
                    known.insert(function);
                }
                ok += usize::from(r.status() == 200);
                cold += usize::from(r.headers().get("x-baton-cold-start").is_some_and(|v| v == "true"));
            }
            (cold, ok)
        }));
    }
    let (mut cold, mut ok) = (0, 0);
    for lane in lanes {
        let (c, o) = lane.await.unwrap();
        cold += c;
        ok += o;
    }
    assert_eq!(ok, 1000);
    assert!(cold >= 10, "every function started cold: {cold}");
    assert_eq!(cluster.store_writes().await, writes, "the invocation path wrote to the store");
}

#[tokio::test]
async fn a_function_whose_sandboxes_cannot_start_fails_fast_saying_why_and_recovers_when_fixed() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 20, 25100).await;
    // Valid, but not on the worker: every creation fails.
    let missing = "/nonexistent/baton-fn";
    cluster.deploy(serde_json::json!({"name": "broken", "executable": missing})).await;
    let client = reqwest::Client::new();
    let url = cluster.url("/function/broken");
    for attempt in ["the first call", "a call during the back-off"] {
        let started = Instant::now();
        let answer = client.get(&url).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status(), 502, "{attempt}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "sandbox_failing", "{attempt}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(missing), "{attempt}: the worker's reason: {body}");
        // Not the 30 s queue timeout: the failed creation itself, at most.
        assert!(took < Duration::from_secs(3), "{attempt} took {took:?}");
    }
    // Deployed again with a program that exists: served at once, whatever the back-off.
    cluster.deploy(echo_spec("broken", serde_json::json!({}))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.get(&url).send().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the fixed function still answers {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
