//! Three shard-manager replicas behind two cells and a router: SIGKILL the raft leader
//! under load. A new leader is elected within 2 s, the router and the cells keep serving
//! every existing function from their maps meanwhile (not one failed call), nothing
//! committed is lost, and registration through the router resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_proto::shard::GetStatusRequest;
use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_testkit::{Federation, FederationApi, echo_spec};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_serve_through_a_shard_manager_election() {
    let env = [("BATON_CELLS__HEARTBEAT_TIMEOUT", "3s"), ("BATON_CELLS__MOVE_BUDGET", "0")];
    let mut federation = Federation::start_replicated(3, 2, 30800, &env).await;
    let (key, r) = federation.open_to("acme").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let functions = federation.routers[r].url("/v1/functions");
    for i in 0..5 {
        let spec = echo_spec(&format!("f{i}"), json!({"resources": {"cpu_millis": 20, "memory_mib": 32}}));
        assert_eq!(client.post(&functions).bearer_auth(&key).json(&spec).send().await.unwrap().status(), 201);
        let url = federation.routers[r].url(&format!("/function/f{i}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.post(&url).bearer_auth(&key).send().await.unwrap().status() != 200 {
            assert!(Instant::now() < deadline, "f{i} never answered");
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..5 {
        let (client, key, url) = (client.clone(), key.clone(), federation.routers[r].url(&format!("/function/f{i}")));
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.post(&url).bearer_auth(&key).body("x").send().await {
                    Ok(answer) if answer.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed call: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let old = federation.leader().await;
    let killed = Instant::now();
    let (_, _, proc) = federation.replicas.iter_mut().find(|(id, _, _)| *id == old).unwrap();
    proc.sigkill();
    let survivors: Vec<u16> = federation.replicas.iter().filter(|(id, _, _)| *id != old).map(|r| r.1).collect();
    let elected = loop {
        let mut agreed = Vec::new();
        for port in &survivors {
            if let Ok(mut c) = ShardManagerClient::connect(format!("http://127.0.0.1:{port}")).await
                && let Ok(status) = c.get_status(GetStatusRequest {}).await
            {
                agreed.push(status.into_inner().leader_id);
            }
        }
        if agreed.len() == survivors.len() && agreed.iter().all(|l| *l != 0 && *l != old && *l == agreed[0]) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "no new leader within 2 s: {agreed:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("leader {old} killed; a new leader in {elected:?}");
    let served_before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Registration resumes through the router (a dead replica is skipped), and the new
    // function is served.
    let spec = echo_spec("after", json!({"resources": {"cpu_millis": 20, "memory_mib": 32}}));
    let answer = client.post(&functions).bearer_auth(&key).json(&spec).send().await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    let url = federation.routers[r].url("/function/after");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.post(&url).bearer_auth(&key).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the function registered after the election never answered");
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls succeeded ({} after the kill), {failed} failed", ok - served_before);
    assert_eq!(failed, 0, "the router and cells serve from their maps through the election");
    assert!(ok > served_before, "calls were served after the kill");

    // Nothing committed was lost: every function is listed.
    let listed: serde_json::Value =
        client.get(&functions).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let mut names: Vec<&str> =
        listed["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["after", "f0", "f1", "f2", "f3", "f4"]);
}
