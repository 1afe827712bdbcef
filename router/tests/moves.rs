//! A graceful move lets the calls that already reached the source finish there: calls that
//! run far longer than the move takes are answered by the source, while calls sent after
//! the commit go to the target, and the source forgets the function only after them.

use std::time::{Duration, Instant};

use baton_testkit::{Federation, FederationApi, send_when_known, spin_spec};
use serde_json::json;

/// What a call got: its status, the cell that served it, how long it took.
type Answer = (u16, String, Duration);

async fn call(client: reqwest::Client, url: String, key: String) -> Answer {
    let started = Instant::now();
    let answer = client.post(&url).bearer_auth(&key).body("x").send().await.unwrap();
    let cell = answer.headers().get("x-baton-cell").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (answer.status().as_u16(), cell, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_running_on_the_source_when_a_function_moves_finish_there() {
    let mut federation = Federation::start(2, 26600, "3s").await;
    let (acme, router) = federation.open_to("acme").await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
    // One call per sandbox, so each long call holds a sandbox of its own.
    let spec = spin_spec("slow", json!({"timeout": "20s", "scaling": {"max_scale": 10, "container_concurrency": 1}}));
    let answer = client.post(federation.routers[router].url("/v1/functions")).bearer_auth(&acme).json(&spec);
    let created: serde_json::Value = answer.send().await.unwrap().json().await.unwrap();
    let source = created["cell"].as_str().unwrap().to_string();
    let target = if source == "cell-1" { "cell-2" } else { "cell-1" };
    let short = federation.routers[router].url("/function/slow?ms=1&mode=sleep");
    let (first, _) = send_when_known(client.post(&short).bearer_auth(&acme)).await;
    assert_eq!(first.status(), 200);

    // Four calls of 3 s each, running on the source's sandboxes before the move.
    let long = federation.routers[router].url("/function/slow?ms=3000&mode=sleep");
    let running: Vec<_> = (0..4).map(|_| tokio::spawn(call(client.clone(), long.clone(), acme.clone()))).collect();
    let source_cell = federation.cells.iter().find(|c| c.id == source).unwrap();
    source_cell.wait_metric("baton_cell_in_flight", |v| v >= 4.0).await;

    let started = Instant::now();
    let moved = federation.move_function("acme", "slow", target).await;
    let move_took = started.elapsed();
    assert_eq!(moved.cell, target);

    // A call after the commit is served by the target (the router's map may lag a moment:
    // a 421 from the source sends it there too).
    let (status, cell, _) = call(client.clone(), short.clone(), acme.clone()).await;
    assert_eq!((status, cell.as_str()), (200, target), "a call after the move goes to the target");

    for task in running {
        let (status, cell, took) = task.await.unwrap();
        assert_eq!(status, 200, "a call running on the source when the function moved was cut off after {took:?}");
        assert_eq!(cell, source, "it finished where it started");
        assert!(
            took >= Duration::from_millis(3000) && took > move_took * 4,
            "{took:?} against a move of {move_took:?}"
        );
    }
    eprintln!("move committed in {move_took:?}; four 3 s calls on the source all finished");
}
