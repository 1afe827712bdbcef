//! Rebalancing under load, on a federation in the test's process (emulated sandboxes):
//! a third cell joins and takes about a third of the functions; a drained cell ends
//! empty; filled again, it takes functions back. Every move is a graceful migration,
//! and not one call fails throughout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_proto::cell::ListFunctionsRequest as CellListFunctions;
use baton_proto::shard::{ListCellsRequest, SetCellStateRequest};
use baton_testkit::{FederationApi, inproc};
use serde_json::json;

const FUNCTIONS: usize = 60;

/// Functions owned by each cell.
async fn counts(federation: &impl FederationApi) -> BTreeMap<String, u64> {
    let cells = federation.client().await.list_cells(ListCellsRequest {}).await.unwrap().into_inner().cells;
    cells.into_iter().map(|c| (c.id, c.functions)).collect()
}

/// Waits until the counts show what `done` wants and then stay unchanged for two seconds
/// (a move runs as long as its target takes to start sandboxes: a pause between moves is
/// not the end of the rebalancing); returns them.
async fn settled(
    federation: &impl FederationApi,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    const QUIET: Duration = Duration::from_secs(2);
    let start = Instant::now();
    let (mut last, mut since) = (counts(federation).await, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counts(federation).await;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if done(&last) && since.elapsed() >= QUIET {
            return last;
        }
        assert!(start.elapsed() < limit, "{what} not within {limit:?}: {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cell_a_drain_and_a_fill_move_functions_without_failed_calls() {
    let manager = json!({"cells": {
        "move_budget": 4,
        "rebalance_interval": "200ms",
        "move_cooldown": "0s",
        // Balance down to the planner's own stopping rule (a move must leave the source at
        // least as loaded as the target), not the default 5 % dead band.
        "rebalance_threshold": 0.01,
    }});
    // Emulated sandboxes: the moves are the point here, not 120 sandbox processes.
    let mut federation = inproc::Builder::new(24000).cells(2).manager(manager).emulated("40ms").start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let extra = json!({
        "runtime": "emulated",
        "timeout": "2s",
        "resources": {"cpu_millis": 10, "memory_mib": 16},
        "scaling": {"max_scale": 2},
    });
    federation.deploy_echoes(r, &key, FUNCTIONS, extra).await;

    // Every function called every 300 ms: 200 calls/s in all.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..FUNCTIONS {
        let (client, key, url) = (client.clone(), key.clone(), federation.routers[r].url(&format!("/function/f{i}")));
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.post(&url).bearer_auth(&key).body("x").send().await {
                    Ok(answer) if answer.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(answer) => {
                        let status = answer.status();
                        eprintln!("failed call to {url}: {status} {}", answer.text().await.unwrap_or_default());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed call to {url}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    let all = |c: &BTreeMap<String, u64>| c.values().sum::<u64>() == FUNCTIONS as u64;
    let before = settled(&federation, Duration::from_secs(30), "registration", all).await;
    eprintln!("two cells, settled: {before:?}");

    // Moves are counted by reason on the shard manager's /metrics.
    let admin = federation.replicas[0].as_ref().unwrap().admin_addr.port();
    let moves = |reason: &'static str| async move {
        baton_testkit::metric_at(admin, &format!(r#"baton_shard_manager_moves_total{{reason="{reason}"}}"#)).await
    };
    let balanced_before = moves("balance").await;

    // A third cell joins: about a third of the functions move to it.
    let started = Instant::now();
    federation.add_cell().await;
    let share = FUNCTIONS as f64 / 3.0;
    let fair = |n: Option<&u64>| n.is_some_and(|&n| (n as f64 - share).abs() <= share * 0.1);
    let after = settled(&federation, Duration::from_secs(60), "a third to the new cell (±10 %)", |c| {
        all(c) && fair(c.get("cell-3"))
    })
    .await;
    eprintln!("three cells, settled {:?} after the join: {after:?}", started.elapsed());
    let balanced = moves("balance").await - balanced_before;
    assert!(balanced >= after["cell-3"] as f64, "{balanced} balance moves for {} on cell-3", after["cell-3"]);

    // Drain cell-1 under load: it ends owning nothing, and after its functions' timeout
    // its control plane has forgotten them all.
    let mut sm = federation.client().await;
    let drain = |state: &str| SetCellStateRequest { cell: "cell-1".into(), state: state.into() };
    sm.set_cell_state(drain("draining")).await.unwrap();
    let drained =
        settled(&federation, Duration::from_secs(60), "cell-1 empty", |c| all(c) && c.get("cell-1") == Some(&0)).await;
    eprintln!("cell-1 drained: {drained:?}");
    assert_eq!(moves("drain").await, after["cell-1"] as f64, "one drain move per function cell-1 held");
    let api = federation.cells[0].api().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = api.clone().list_functions(CellListFunctions {}).await.unwrap().into_inner().functions;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "cell-1 still runs {} functions", left.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Fill it again: it takes functions back.
    sm.set_cell_state(drain("active")).await.unwrap();
    let filled = settled(&federation, Duration::from_secs(60), "a third back to cell-1 (±10 %)", |c| {
        all(c) && fair(c.get("cell-1"))
    })
    .await;
    eprintln!("cell-1 filled: {filled:?}");

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls succeeded, {failed} failed");
    assert_eq!(failed, 0, "graceful migrations fail no call");
    assert!(ok > 1000);
    federation.shutdown().await;
}
