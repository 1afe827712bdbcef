//! baton's own spans, received by a real OTLP/gRPC collector: one cold call's tree from the
//! router through the cell's queue, the creation of its sandbox (with the worker's phases)
//! and the proxying, joined to the caller's trace and to the function's; and the router,
//! not the caller, deciding what is sampled.

use std::time::{Duration, Instant};

use baton_testkit::otlp::{Collector, ReceivedSpan};
use baton_testkit::{FederationApi, echo_spec, inproc};
use serde_json::{Value, json};

const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn traces(endpoint: &str, ratio: f64) -> Value {
    json!({"traces": {"otlp_endpoint": endpoint, "sample_ratio": ratio, "export_interval": "100ms"}})
}

/// The one span named `name`.
fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span in {spans:#?}");
    found[0]
}

fn child_of<'a>(spans: &'a [ReceivedSpan], name: &str, parent: &ReceivedSpan) -> &'a ReceivedSpan {
    let span = one(spans, name);
    assert_eq!(span.parent_span_id, parent.span_id, "{name} is a child of {}", parent.name);
    span
}

/// Calls `f0` through router `r` in a trace of its own (`trace` made from `n`) until it is
/// routed (a new function reaches the router's map within moments); the answer's headers
/// and the function's view of the request.
async fn call(
    federation: &inproc::InProcess,
    r: usize,
    key: &str,
    flags: &str,
    n: &mut u32,
) -> (String, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        *n += 1;
        let trace = format!("4bf92f3577b34da6a3ce929d{:08x}", *n);
        let answer = client
            .post(federation.router_url(r, "/function/f0"))
            .bearer_auth(key)
            .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-{flags}"))
            .send()
            .await
            .unwrap();
        if answer.status() == 404 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(answer.status(), 200);
        let headers = answer.headers().clone();
        return (trace, headers, answer.json::<Value>().await.unwrap()["headers"].clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_calls_spans_form_one_tree_from_the_caller_to_the_function() {
    let collector = Collector::start().await;
    let settings = traces(&collector.endpoint, 1.0);
    let mut federation = inproc::Builder::new(8700).cell(settings.clone()).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router_configured(&key, settings).await;
    let registered = reqwest::Client::new()
        .post(federation.router_url(r, "/v1/functions"))
        .bearer_auth(&key)
        .json(&echo_spec("f0", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    // The first call waits for the function's first sandbox: a cold start. Its caller's
    // trace is not sampled; the router samples everything here, and decides.
    let mut n = 0;
    let (trace, headers, seen) = call(&federation, r, &key, "00", &mut n).await;
    assert_eq!(headers["x-baton-cold-start"], "true");
    let call_id = headers["x-call-id"].to_str().unwrap().to_string();
    assert_eq!(seen["x-call-id"], call_id.as_str(), "the function receives the call's ID");
    let names = ["invoke", "route", "call", "queue", "cold start", "spawn", "readiness", "proxy"];
    let spans = collector
        .trace(&trace, Duration::from_secs(20), |s| names.iter().all(|n| s.iter().any(|x| x.name == *n)))
        .await;

    let invoke = one(&spans, "invoke");
    assert_eq!((invoke.service.as_str(), invoke.kind), ("baton-router", SERVER));
    assert_eq!(invoke.parent_span_id, CALLER_SPAN, "the caller's trace is continued");
    assert_eq!(invoke.attributes["baton.call_id"], call_id);
    assert_eq!(invoke.attributes["baton.function"], "f0");
    assert_eq!(invoke.attributes["http.response.status_code"], "200");
    let route = child_of(&spans, "route", invoke);
    assert_eq!((route.service.as_str(), route.kind), ("baton-router", CLIENT));
    let cell = child_of(&spans, "call", route);
    assert_eq!((cell.service.as_str(), cell.kind), ("baton-cell", SERVER));
    assert_eq!(cell.attributes["baton.call_id"], call_id);
    let queue = child_of(&spans, "queue", cell);
    assert_eq!(queue.attributes["baton.cold_start"], "true");
    let cold = child_of(&spans, "cold start", queue);
    assert!(cold.end_unix_nano > cold.start_unix_nano, "{cold:?}");
    for phase in ["cgroup", "spawn", "readiness"] {
        if phase == "cgroup" && !spans.iter().any(|s| s.name == "cgroup") {
            continue; // A worker without cgroups (not root) has no such phase.
        }
        let phase = child_of(&spans, phase, cold);
        assert!(
            phase.start_unix_nano >= cold.start_unix_nano && phase.end_unix_nano <= cold.end_unix_nano,
            "{phase:?} lies within {cold:?}"
        );
    }
    let proxy = child_of(&spans, "proxy", cell);
    assert_eq!(proxy.kind, CLIENT);
    assert_eq!(
        seen["traceparent"],
        format!("00-{trace}-{}-01", proxy.span_id),
        "the function's parent is the proxy span"
    );
    assert!(spans.iter().all(|s| s.trace_id == trace));
    for name in names {
        let span = one(&spans, name);
        eprintln!("{name}: {:.2} ms", (span.end_unix_nano - span.start_unix_nano) as f64 / 1e6);
    }

    // A warm call: its queue span has no cold start under it.
    let (trace, headers, _) = call(&federation, r, &key, "00", &mut n).await;
    assert_eq!(headers["x-baton-cold-start"], "false");
    let spans = collector.trace(&trace, Duration::from_secs(20), |s| s.iter().any(|x| x.name == "proxy")).await;
    assert_eq!(one(&spans, "queue").attributes["baton.cold_start"], "false");
    assert!(!spans.iter().any(|s| s.name == "cold start"), "{spans:#?}");
    federation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_decides_what_is_sampled_not_the_caller() {
    let collector = Collector::start().await;
    // The cells would record everything a router asks them to; the router samples nothing.
    let mut federation = inproc::Builder::new(8900).cell(traces(&collector.endpoint, 1.0)).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router_configured(&key, traces(&collector.endpoint, 0.0)).await;
    federation.deploy_echoes(r, &key, 1, json!({})).await;
    let mut n = 0;
    let (trace, _, seen) = call(&federation, r, &key, "01", &mut n).await;
    let parent = seen["traceparent"].as_str().unwrap();
    assert!(parent.starts_with(&format!("00-{trace}-")), "the caller's trace goes on: {parent}");
    assert!(parent.ends_with("-00"), "not sampled, whatever the caller's flag: {parent}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
    federation.shutdown().await;
}
