//! A cell that cannot serve gives its functions away. Three cells with one worker each
//! take steady load on 20 functions; the worker of one cell is killed with SIGKILL while
//! that cell's control and data planes stay up. The cell reports the functions it cannot
//! create sandboxes for, the shard manager moves them to cells that can, the calls queued
//! on the stricken cell are sent on with a 421, and calls to the affected functions are
//! served again within 5 s; no call fails after that, and the other cells' functions see
//! no failure at all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_testkit::{Federation, FederationApi};
use serde_json::json;

const FUNCTIONS: usize = 20;

/// One call: when it was sent (seconds since the kill, negative before) and its status.
type Call = (f64, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_whose_worker_dies_gives_its_functions_to_cells_that_can_serve() {
    let mut federation = Federation::start(3, 32000, "3s").await;
    let (key, r) = federation.open_to("acme").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let extra = json!({
        "timeout": "10s",
        "resources": {"cpu_millis": 20, "memory_mib": 32},
        "scaling": {"min_scale": 1, "max_scale": 2},
    });
    let owners = federation.deploy_echoes(r, &key, FUNCTIONS, extra).await;
    let victim = owners["f0"].clone();
    let affected: Vec<String> = owners.iter().filter(|(_, c)| **c == victim).map(|(f, _)| f.clone()).collect();

    // Steady load: one caller per function, a call every 50 ms (about 300 calls/s).
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let calls: Arc<Mutex<BTreeMap<String, Vec<Call>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for f in owners.keys() {
        let (client, key, f) = (client.clone(), key.clone(), f.clone());
        let url = federation.routers[r].url(&format!("/function/{f}"));
        let (stop, killed_at, calls) = (stop.clone(), killed_at.clone(), calls.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = Instant::now();
                let status = match client.post(&url).bearer_auth(&key).send().await {
                    Ok(answer) => answer.status().as_u16(),
                    Err(_) => 0,
                };
                let since = killed_at.lock().unwrap().map_or(-1.0, |k| {
                    if sent >= k { sent.duration_since(k).as_secs_f64() } else { -k.duration_since(sent).as_secs_f64() }
                });
                calls.lock().unwrap().entry(f.clone()).or_default().push((since, status));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cell = federation.cells.iter_mut().find(|c| c.id == victim).unwrap();
    *killed_at.lock().unwrap() = Some(Instant::now());
    cell.workers.clear(); // SIGKILL; the cell's own process stays up.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let mut worst: f64 = 0.0;
    let mut failed_before_resuming = 0;
    for (f, calls) in &calls {
        if !affected.contains(f) {
            let failed: Vec<&Call> = calls.iter().filter(|(_, status)| *status != 200).collect();
            assert!(failed.is_empty(), "{f}, on a healthy cell, failed: {failed:?}");
            continue;
        }
        // Served again: from the first success after the last failed call on, every call
        // succeeds (calls are in the order they were sent).
        let last_failure = calls.iter().rposition(|(_, status)| *status != 200);
        let resumed = match last_failure {
            None => 0.0,
            Some(i) => calls[i + 1..]
                .iter()
                .find(|(_, status)| *status == 200)
                .map(|(at, _)| *at)
                .unwrap_or_else(|| panic!("{f} was never served after the kill: {calls:?}")),
        };
        assert!(calls.iter().all(|(at, status)| *at >= 0.0 || *status == 200), "{f} failed before the kill: {calls:?}");
        failed_before_resuming += calls.iter().filter(|(_, status)| *status != 200).count();
        worst = worst.max(resumed);
        assert!(calls.iter().any(|(at, status)| *at > 5.0 && *status == 200), "{f} served at the end");
    }
    eprintln!(
        "worker of {victim} killed: its {} functions served again after at most {worst:.2} s; {failed_before_resuming} calls failed before that",
        affected.len()
    );
    assert!(worst <= 5.0, "served again only after {worst:.2} s");
    // They were served elsewhere: each now belongs to a cell that has a worker.
    for f in &affected {
        let url = federation.routers[r].url(&format!("/v1/functions/{f}"));
        let info: serde_json::Value = client.get(&url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert_ne!(info["cell"].as_str(), Some(victim.as_str()), "{f} still on {victim}: {info}");
    }
}
