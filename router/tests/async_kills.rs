//! Async calls survive the death of the processes delivering them (real processes, killed
//! with SIGKILL), with the queue in Redis shared by two routers:
//!
//! - a router dies with tries running and calls queued: the other takes its calls once
//!   their leases lapse, and every call ends `succeeded` or dead with its reason;
//! - a cell dies with 1,000 calls for its function queued: the function fails over and
//!   the new owner serves every one.
//!
//! The count of tries above one per call is printed: tries cut short by the kill run again.

use std::time::{Duration, Instant};

use baton_testkit::{Federation, FederationApi, spin_spec};
use serde_json::{Value, json};

/// Posts `count` async calls to `path` through `routers` in turn; their IDs.
async fn accept_many(client: &reqwest::Client, routers: &[String], key: &str, path: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let url = format!("{}{path}", routers[i % routers.len()]);
        let answer = client.post(&url).bearer_auth(key).send().await.unwrap();
        assert_eq!(answer.status(), 202, "{url}");
        ids.push(answer.headers()["x-call-id"].to_str().unwrap().to_string());
    }
    ids
}

/// Waits (`within` at most) until every call ended; answers (succeeded, dead, tries).
async fn all_ended(
    client: &reqwest::Client,
    router: &str,
    key: &str,
    ids: &[String],
    within: Duration,
) -> (usize, usize, u64) {
    let deadline = Instant::now() + within;
    let (mut succeeded, mut dead, mut tries) = (0, 0, 0);
    for id in ids {
        loop {
            let answer = client.get(format!("{router}/v1/calls/{id}")).bearer_auth(key).send().await.unwrap();
            assert_eq!(answer.status(), 200, "call {id} is not lost");
            let call: Value = answer.json().await.unwrap();
            match call["state"].as_str().unwrap() {
                "succeeded" => succeeded += 1,
                "dead" => {
                    assert_eq!(call["dead_reason"], "retries_exhausted", "{call}");
                    dead += 1;
                }
                "failed" => panic!("no try of these fails for good: {call}"),
                _ => {
                    assert!(Instant::now() < deadline, "call {id} never ended: {call}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            tries += call["attempts"].as_u64().unwrap();
            break;
        }
    }
    (succeeded, dead, tries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_outlive_a_killed_router_and_a_killed_cell() {
    let redis =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    let prefix = format!("kills-{:x}", std::process::id());
    let mut federation = Federation::start(2, 35200, "1s").await;
    let key = federation.tenant("acme").await;
    let env = [
        ("BATON_ASYNC__REDIS_URL", redis.as_str()),
        ("BATON_ASYNC__REDIS_PREFIX", prefix.as_str()),
        ("BATON_ASYNC__LEASE", "2s"),
    ];
    let first = federation.start_router_with(None, &key, &env).await;
    let second = federation.start_router_with(None, &key, &env).await;
    let routers = [federation.routers[first].url(""), federation.routers[second].url("")];
    let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
    let small = json!({"cpu_millis": 20, "memory_mib": 32});
    let policy = json!({"max_attempts": 10, "backoff": {"initial": "20ms", "max": "200ms"}});
    let spec = spin_spec("flaky", json!({"resources": small, "scaling": {"max_scale": 6}, "async": policy}));
    let answer =
        client.post(format!("{}/v1/functions", routers[0])).bearer_auth(&key).json(&spec).send().await.unwrap();
    assert_eq!(answer.status(), 201);

    // 200 calls of 200 ms, 30 % of them failing; a router dies with tries running.
    let ids =
        accept_many(&client, &routers, &key, "/async-function/flaky?ms=200&mode=sleep&fail_percent=30", 200).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let running = federation.routers[first].metric("baton_router_async_running_calls").await;
    federation.routers[first].proc.sigkill();
    let (succeeded, dead, tries) = all_ended(&client, &routers[1], &key, &ids, Duration::from_secs(120)).await;
    println!(
        "router killed with {running} tries running: {succeeded} succeeded, {dead} dead, {tries} tries for {} calls",
        ids.len()
    );
    assert_eq!(succeeded + dead, ids.len());
    assert!(running > 0.0, "the killed router was running tries");

    // A cell dies with 1,000 calls for its function queued.
    let owner = {
        let spec = spin_spec("batch", json!({"resources": small, "scaling": {"max_scale": 10}}));
        let answer =
            client.post(format!("{}/v1/functions", routers[1])).bearer_auth(&key).json(&spec).send().await.unwrap();
        assert_eq!(answer.status(), 201);
        answer.json::<Value>().await.unwrap()["cell"].as_str().unwrap().to_string()
    };
    let ids = accept_many(&client, &routers[1..], &key, "/async-function/batch?ms=20&mode=sleep", 1000).await;
    let cell = federation.cells.iter_mut().find(|c| c.id == owner).unwrap();
    cell.cell.as_mut().unwrap().sigkill();
    cell.workers.clear();
    let (succeeded, dead, tries) = all_ended(&client, &routers[1], &key, &ids, Duration::from_secs(180)).await;
    println!("cell {owner} killed with 1,000 calls queued: {succeeded} succeeded, {dead} dead, {tries} tries");
    assert_eq!(succeeded, ids.len(), "the new owner served every call");
    let served_by: Value = {
        let probe = client.post(format!("{}/function/batch", routers[1])).bearer_auth(&key).send().await.unwrap();
        json!(probe.headers().get("x-baton-cell").map(|c| c.to_str().unwrap().to_string()))
    };
    assert_ne!(served_by, json!(owner), "the function moved off the dead cell");
}
