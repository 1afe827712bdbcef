//! A cell dies under load: SIGKILL every process of one cell (its `baton-cell` and its
//! worker) while 20 functions take steady load through a router. Its functions must be
//! served by the other cell within the heartbeat timeout + 1 s; the other cell's functions
//! see no failure. The measured unavailability is printed: until the later of the last
//! failed call's answer and the first successful answer to a call sent after the kill
//! (the router holds calls while the owner is down and answers them once it is known).
//! The time a call is held counts against its function's timeout: a function with a
//! timeout shorter than the hold is answered `504 call_timeout` by the new owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_testkit::{Federation, FederationApi, echo_spec};
use serde_json::json;

const FUNCTIONS: usize = 20;
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// Per function: calls that failed, and when they did (since the kill, negative before).
#[derive(Default, Debug)]
struct Record {
    ok: u64,
    /// (seconds from the kill to the call's start, negative for a call sent before it and
    /// `None` for one that ended before it; status).
    failures: Vec<(Option<f64>, u16)>,
    /// The last failed call's answer.
    last_failure: Option<Instant>,
    /// The first successful answer to a call sent once the cell was dead: service resumed.
    resumed: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cell_is_failed_over_under_load() {
    let mut federation = Federation::start(2, 29800, "1s").await;
    let (key, r) = federation.open_to("acme").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    // Small sandboxes, so the surviving cell's one worker has room for all 20; every
    // function answers before the load starts.
    let extra = json!({
        "timeout": "5s",
        "resources": {"cpu_millis": 20, "memory_mib": 32},
        "scaling": {"min_scale": 1, "max_scale": 2},
    });
    let owners = federation.deploy_echoes(r, &key, FUNCTIONS, extra).await;
    let victim = owners["f0"].clone();
    let moved: Vec<String> = owners.iter().filter(|(_, c)| **c == victim).map(|(f, _)| f.clone()).collect();
    assert!(moved.len() < FUNCTIONS, "both cells own functions: {owners:?}");

    // A function with a timeout shorter than any hold, on the cell that will die.
    let brief = echo_spec("brief", json!({"timeout": "300ms", "resources": {"cpu_millis": 20, "memory_mib": 32}}));
    let answer =
        client.post(federation.routers[r].url("/v1/functions")).bearer_auth(&key).json(&brief).send().await.unwrap();
    assert_eq!(answer.status(), 201);
    federation.move_function("acme", "brief", &victim).await;
    let brief_url = federation.routers[r].url("/function/brief");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.post(&brief_url).bearer_auth(&key).send().await.unwrap();
        if answer.status() == 200 && answer.headers()["x-baton-cell"] == victim.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "brief never answered on {victim}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Steady load: two callers per function, each calling every 100 ms (about 400 calls/s).
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let dead_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let records: Arc<Mutex<BTreeMap<String, Record>>> = Arc::default();
    let mut load = Vec::new();
    for f in owners.keys() {
        for _ in 0..2 {
            let (client, key, f) = (client.clone(), key.clone(), f.clone());
            let url = federation.routers[r].url(&format!("/function/{f}"));
            let (stop, killed_at, dead_at, records) =
                (stop.clone(), killed_at.clone(), dead_at.clone(), records.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let status = match client.post(&url).bearer_auth(&key).send().await {
                        Ok(answer) => answer.status().as_u16(),
                        Err(_) => 0,
                    };
                    let ok = status == 200;
                    let now = Instant::now();
                    {
                        let mut records = records.lock().unwrap();
                        let record = records.entry(f.clone()).or_default();
                        let kill = *killed_at.lock().unwrap();
                        if ok {
                            record.ok += 1;
                            if record.resumed.is_none() && dead_at.lock().unwrap().is_some_and(|d| sent > d) {
                                record.resumed = Some(now);
                            }
                        } else {
                            let since = kill.map(|k| match sent.checked_duration_since(k) {
                                Some(after) => after.as_secs_f64(),
                                None => -k.duration_since(sent).as_secs_f64(),
                            });
                            record.failures.push((since, status));
                            record.last_failure = Some(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cell = federation.cells.iter_mut().find(|c| c.id == victim).unwrap();
    let kill = Instant::now();
    *killed_at.lock().unwrap() = Some(kill);
    cell.cell.as_mut().unwrap().sigkill();
    let dead = Instant::now();
    cell.workers.clear();
    *dead_at.lock().unwrap() = Some(dead);
    // Calls sent between the signal and the reaping of the cell's processes may still
    // have reached it.
    let dying = dead.duration_since(kill).as_secs_f64();
    let held = tokio::spawn({
        let (client, url, key) = (client.clone(), brief_url.clone(), key.clone());
        async move {
            let sent = Instant::now();
            let answer = client.post(&url).bearer_auth(&key).send().await.unwrap();
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            (status, body["error"]["code"].as_str().unwrap_or("").to_string(), sent.elapsed())
        }
    });
    tokio::time::sleep(HEARTBEAT_TIMEOUT + Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let records = std::mem::take(&mut *records.lock().unwrap());
    let (mut worst, mut in_flight_failed) = (Duration::ZERO, 0);
    for (f, record) in records.iter() {
        if moved.contains(f) {
            let resumed = record.resumed.unwrap_or_else(|| panic!("{f} was never served after the kill: {record:?}"));
            let outage = resumed.max(record.last_failure.unwrap_or(resumed)).duration_since(kill);
            worst = worst.max(outage);
            assert!(record.failures.iter().all(|(t, _)| t.is_some()), "{f} failed before the kill: {record:?}");
            // The router holds every call sent once the cell is dead until the new owner is
            // known: only a call already running on it can fail (its connection is cut).
            let after: Vec<_> = record.failures.iter().filter(|(t, _)| t.is_some_and(|t| t > dying)).collect();
            assert!(after.is_empty(), "{f}: calls sent after the cell died ({dying:.4} s) failed: {after:?}");
            in_flight_failed += record.failures.len();
            if !record.failures.is_empty() {
                eprintln!("{f}: failed {:?} (the cell died {dying:.4} s after the kill)", record.failures);
            }
        } else {
            assert!(record.failures.is_empty(), "{f} on the surviving cell failed: {record:?}");
        }
        assert!(record.ok > 0, "{f} was served");
    }
    eprintln!(
        "cell {victim} killed: {} of its functions failed over; longest unavailability {worst:?} (heartbeat timeout {HEARTBEAT_TIMEOUT:?}); 0 calls sent after it died failed, {in_flight_failed} in flight on it did",
        moved.len()
    );
    assert!(worst <= HEARTBEAT_TIMEOUT + Duration::from_secs(1), "unavailable for {worst:?}");
    // At most one call per caller can have been in flight when the cell died.
    assert!(in_flight_failed <= 2 * moved.len(), "{in_flight_failed} calls failed");
    // Held for about the heartbeat timeout, longer than brief's 300 ms: the new owner
    // counts the hold and answers 504 at once rather than running the call.
    let (status, code, took) = held.await.unwrap();
    eprintln!("a call to a 300 ms function held through the failover: {status} {code} after {took:?}");
    assert_eq!((status, code.as_str()), (504, "call_timeout"), "held {took:?}");
    // Every function is now owned by the survivor and answers.
    for f in owners.keys() {
        let url = federation.routers[r].url(&format!("/function/{f}"));
        assert_eq!(client.post(&url).bearer_auth(&key).send().await.unwrap().status(), 200, "{f}");
    }
}
