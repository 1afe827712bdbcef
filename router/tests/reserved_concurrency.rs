//! A function's reserved concurrency caps its calls in flight (sync and async together):
//! over it a sync call is answered `429 reserved_concurrency` with `Retry-After`, an async
//! one waits in its queue without a try counted; `0` stops the function until it is
//! deployed with another value.

use std::time::{Duration, Instant};

use baton_testkit::{FederationApi, echo_spec, inproc, spin_spec};
use serde_json::{Value, json};

async fn put(client: &reqwest::Client, router: &str, key: &str, spec: &Value) -> u16 {
    let name = spec["name"].as_str().unwrap();
    let answer = client.put(format!("{router}/v1/functions/{name}")).bearer_auth(key).json(spec).send().await.unwrap();
    answer.status().as_u16()
}

async fn call(client: &reqwest::Client, router: &str, key: &str, id: &str) -> Value {
    client.get(format!("{router}/v1/calls/{id}")).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_caps_calls_and_zero_stops_the_function() {
    let mut federation = inproc::Builder::new(37000).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let router = federation.routers[r].url("");
    let client = reqwest::Client::new();

    // One call at a time, though the function may have three sandboxes.
    let capped = spin_spec("capped", json!({"reserved_concurrency": 1, "scaling": {"max_scale": 3}}));
    assert_eq!(put(&client, &router, &key, &capped).await, 201);
    let first = {
        let (client, url, key) = (client.clone(), format!("{router}/function/capped?ms=1500&mode=sleep"), key.clone());
        tokio::spawn(async move { client.post(url).bearer_auth(key).send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = client.post(format!("{router}/function/capped?ms=10")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "reserved_concurrency", "{body}");
    assert_eq!(first.await.unwrap(), 200);
    let after = client.post(format!("{router}/function/capped?ms=10")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(after.status(), 200, "the slot is free again");

    // Zero stops it: sync calls are refused, async ones wait (no try counted) until it
    // is deployed with room again.
    let stopped = echo_spec("paused", json!({"reserved_concurrency": 0}));
    assert_eq!(put(&client, &router, &key, &stopped).await, 201);
    let refused = client.post(format!("{router}/function/paused")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("stopped"), "{body}");
    let queued =
        client.post(format!("{router}/async-function/paused")).bearer_auth(&key).body("later").send().await.unwrap();
    assert_eq!(queued.status(), 202);
    let id = queued.headers()["x-call-id"].to_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = call(&client, &router, &key, &id).await;
    assert!(["queued", "running"].contains(&waiting["state"].as_str().unwrap()), "{waiting}");
    assert_eq!(waiting["attempts"], 0, "waiting for room is not a try: {waiting}");

    let resumed = echo_spec("paused", json!({"reserved_concurrency": 5}));
    assert_eq!(put(&client, &router, &key, &resumed).await, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = call(&client, &router, &key, &id).await;
        if state["state"] == "succeeded" {
            assert_eq!(state["attempts"], 1, "{state}");
            break;
        }
        assert!(Instant::now() < deadline, "the call never ran once the function had room: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A bad value is refused naming the field.
    let bad = echo_spec("paused", json!({"reserved_concurrency": -1}));
    let answer = client.put(format!("{router}/v1/functions/paused")).bearer_auth(&key).json(&bad).send().await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().starts_with("reserved_concurrency"), "{body}");
    federation.shutdown().await;
}
