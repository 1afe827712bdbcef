//! W3C trace context from the caller to the function: a caller's valid `traceparent` (and
//! its `tracestate`) reaches the function unchanged through the router and the data plane;
//! a call without one, or with a malformed one, reaches it with a new trace.

use baton_service::http::valid_traceparent;
use baton_testkit::{FederationApi, inproc};
use serde_json::{Value, json};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_reaches_the_function_and_a_call_without_one_starts_one() {
    let mut federation = inproc::Builder::new(8400).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    federation.deploy_echoes(r, &key, 1, json!({})).await;
    let client = reqwest::Client::new();
    let data_plane = federation.cells[0].cell.http_addr.expect("role all");
    for (what, url) in [
        ("router", federation.router_url(r, "/function/f0")),
        ("data plane", format!("http://{data_plane}/function/acme.f0")),
    ] {
        let call = |traceparent: Option<&str>| {
            let mut request = client.post(&url).bearer_auth(&key).header("tracestate", "vendor=1");
            if let Some(parent) = traceparent {
                request = request.header("traceparent", parent);
            }
            async move { request.send().await.unwrap().json::<Value>().await.unwrap()["headers"].clone() }
        };
        let continued = call(Some(PARENT)).await;
        assert_eq!(
            (continued["traceparent"].as_str(), continued["tracestate"].as_str()),
            (Some(PARENT), Some("vendor=1")),
            "{what}"
        );
        for given in [None, Some("00-junk")] {
            let started = call(given).await;
            let parent = started["traceparent"].as_str().unwrap_or_default();
            assert!(valid_traceparent(parent) && parent != PARENT, "{what}, {given:?}: {started}");
            assert!(
                started.get("tracestate").is_none(),
                "{what}, {given:?}: a state without its parent goes: {started}"
            );
        }
    }
}
