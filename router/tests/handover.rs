//! A rolling restart's first step, in the test's process: the shard-manager leader of three
//! replicas is stopped gracefully while routers and cells follow its map streams. It stops
//! within the drain bound (open streams are cut, not waited for), a new leader is elected,
//! calls keep flowing without one failure, and registration through the router resumes.
//! The cell's two workers share its sandboxes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_proto::worker::ListSandboxesRequest;
use baton_proto::worker::worker_client::WorkerClient;
use baton_testkit::{FederationApi, echo_spec, inproc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_hands_over_without_a_failed_call() {
    let mut federation = inproc::Builder::new(15400).replicas(3).workers_per_cell(2).emulated("10ms").start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let extra = json!({"runtime": "emulated", "scaling": {"min_scale": 2}});
    federation.deploy_echoes(r, &key, 4, extra.clone()).await;

    // Eight sandboxes, spread over both workers of the cell.
    for worker in &federation.cells[0].workers {
        let mut client = WorkerClient::connect(format!("http://{}", worker.grpc_addr)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes.is_empty() {
            assert!(Instant::now() < deadline, "worker {} got no sandbox", worker.grpc_addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Steady calls to every function.
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let (client, key, url) = (client.clone(), key.clone(), federation.router_url(r, &format!("/function/f{i}")));
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let served = client.post(&url).bearer_auth(&key).send().await.is_ok_and(|a| a.status() == 200);
                if served { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The leader stops while the router and the cell stream its map.
    let leader = federation.leader().await;
    let stopping = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(3), federation.stop_replica(leader as usize - 1)).await;
    assert!(stopped.is_ok(), "a replica with open map streams did not stop within 3 s");
    let stop_took = stopping.elapsed();
    // The others notice when the leader's heartbeats stop, and elect one of themselves.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut new_leader = federation.leader().await;
    while new_leader == leader {
        assert!(Instant::now() < deadline, "no new leader within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        new_leader = federation.leader().await;
    }
    let elected = stopping.elapsed();

    // Registration through the router resumes with the new leader.
    let answer = client
        .post(federation.router_url(r, "/v1/functions"))
        .bearer_auth(&key)
        .json(&echo_spec("late", extra))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "leader {leader} stopped in {stop_took:?}, {new_leader} leads {elected:?} after the stop; {ok} calls served, {failed} failed"
    );
    assert_eq!(failed, 0);
    assert!(ok > 50, "{ok} calls");
    federation.shutdown().await;
}
