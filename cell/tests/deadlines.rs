//! A call's time in baton is bounded by its function's timeout, whichever phase it spends
//! it in: waiting in the queue behind a busy sandbox, waiting for a cold start, the
//! function's own answer, or before it reached the cell (what a router says it spent). Each
//! runs out as a `504 call_timeout` within a small margin of the timeout, with real
//! processes. The cell's own queue timeout (10 s here) is far longer, so it cannot be what
//! answers.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// The margin past the timeout a 504 may take on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(700);

/// Sends `request`; returns the status, the error code and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    (status, body["error"]["code"].as_str().unwrap_or("").to_string(), started.elapsed())
}

fn assert_timed_out(what: &str, (status, code, took): (u16, String, Duration), timeout: Duration) {
    assert_eq!((status, code.as_str()), (504, "call_timeout"), "{what}");
    assert!(took >= timeout.saturating_sub(Duration::from_millis(50)) && took <= timeout + MARGIN, "{what}: {took:?}");
}

#[tokio::test]
async fn every_phase_of_a_call_is_bounded_by_the_function_timeout() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("w1", 20, 27400).await;
    let client = reqwest::Client::new();
    let timeout = Duration::from_secs(1);

    // One sandbox, one call at a time.
    cluster
        .deploy(spin_spec(
            "slow",
            serde_json::json!({"timeout": "1s", "scaling": {"max_scale": 1, "container_concurrency": 1}}),
        ))
        .await;
    let (first, _) = send_when_known(client.get(cluster.url("/function/slow?ms=1&mode=sleep"))).await;
    assert_eq!(first.status(), 200);

    // The function's answer: it sleeps 3 s.
    let answer = timed(client.get(cluster.url("/function/slow?ms=3000&mode=sleep"))).await;
    assert_timed_out("the function's answer", answer, timeout);

    // The queue: a 900 ms call holds the only slot, the next waits for it. Queued from
    // about 0 ms on, it would get the slot at about 900 ms and need another 800 ms.
    cluster.wait_metric("baton_cell_in_flight", |n| n == 0.0).await;
    let holder = tokio::spawn(timed(client.get(cluster.url("/function/slow?ms=900&mode=sleep"))));
    cluster.wait_metric("baton_cell_in_flight", |n| n >= 1.0).await;
    let queued = timed(client.get(cluster.url("/function/slow?ms=800&mode=sleep"))).await;
    assert_timed_out("queue, then the answer", queued, timeout);
    assert_eq!(holder.await.unwrap().0, 200, "the holder finished within its time");

    // Time already spent before the cell (a router's hold): 800 of the 1,000 ms are gone,
    // so a 500 ms answer is too late.
    cluster.wait_metric("baton_cell_in_flight", |n| n == 0.0).await;
    let late = client.get(cluster.url("/function/slow?ms=500&mode=sleep")).header("x-baton-spent-ms", "800");
    assert_timed_out("time spent before the cell", timed(late).await, Duration::from_millis(200));
    let on_time = client.get(cluster.url("/function/slow?ms=100&mode=sleep")).header("x-baton-spent-ms", "500");
    assert_eq!(timed(on_time).await.0, 200, "what is left is enough");

    // A cold start: the sandbox takes 3 s to serve (a shell sleeps before the function).
    let echo = bin("baton-fn-echo").display().to_string();
    cluster
        .deploy(serde_json::json!({
            "name": "sluggish",
            "executable": "/bin/sh",
            "args": ["-c", format!("sleep 3; exec {echo}")],
            "timeout": "1s",
            "resources": {"cpu_millis": 100, "memory_mib": 64},
            "scaling": {"max_scale": 1},
        }))
        .await;
    let cold = timed(client.get(cluster.url("/function/sluggish"))).await;
    assert_timed_out("a cold start", cold, timeout);
}
