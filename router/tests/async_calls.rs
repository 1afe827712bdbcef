//! Async calls through a federation in the test's process, with each queue: the router's
//! own file, and Redis shared by two routers. The tenant's whole API: `202` only for a
//! function it has, its call's state and result (never another tenant's), retries by its
//! function's policy, dead letters with their reasons, redrive and purge, the function's
//! async share holding further calls back, and a function deleted under queued calls.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use baton_testkit::{FederationApi, echo_spec, inproc, spin_spec};
use serde_json::{Value, json};

/// Posts an async call; answers its ID after checking the `202`.
async fn accept(client: &reqwest::Client, url: &str, key: &str, body: &'static str) -> String {
    let answer = client.post(url).bearer_auth(key).body(body).send().await.unwrap();
    assert_eq!(answer.status(), 202, "{url}: {}", answer.text().await.unwrap());
    let header = answer.headers()["x-call-id"].to_str().unwrap().to_string();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["call_id"], header.as_str(), "the body names the call the header does");
    header
}

/// Waits (30 s at most) until the call is in a final state; answers it.
async fn ended(client: &reqwest::Client, router: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.get(format!("{router}/v1/calls/{id}")).bearer_auth(key).send().await.unwrap();
        assert_eq!(answer.status(), 200, "GET /v1/calls/{id}");
        let call: Value = answer.json().await.unwrap();
        if ["succeeded", "failed", "dead"].contains(&call["state"].as_str().unwrap()) {
            return call;
        }
        assert!(Instant::now() < deadline, "call {id} never ended: {call}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (10 s at most) until the call's try has started, and 200 ms more for it to reach
/// its cell and take its slot there.
async fn running(client: &reqwest::Client, router: &str, key: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call: Value =
            client.get(format!("{router}/v1/calls/{id}")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        if call["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the call never ran: {call}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn register(client: &reqwest::Client, router: &str, key: &str, spec: Value) {
    let answer = client.post(format!("{router}/v1/functions")).bearer_auth(key).json(&spec).send().await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_end_with_their_result_retried_and_dead_lettered_by_policy() {
    let mut federation = inproc::Builder::new(33000).cells(2).start().await;
    let key = federation.tenant("acme").await;
    let other = federation.tenant("other").await;
    let r = federation.start_router_with(&key, json!({"max_body_bytes": 4096})).await;
    let router = federation.routers[r].url("");
    let client = reqwest::Client::new();
    let fast = json!({"max_attempts": 3, "backoff": {"initial": "20ms", "max": "50ms"}});
    register(&client, &router, &key, echo_spec("echo", json!({}))).await;
    register(&client, &router, &key, spin_spec("flaky", json!({"async": fast}))).await;

    // Delivered once, with its path, query, headers and body; the result is kept.
    let url = format!("{router}/async-function/echo/some/path?x=1");
    let answer = client.post(&url).bearer_auth(&key).header("x-tenant-header", "kept").body("hello").send().await;
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 202);
    let id = answer.headers()["x-call-id"].to_str().unwrap().to_string();
    let call = ended(&client, &router, &key, &id).await;
    assert_eq!((call["state"].as_str(), call["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{call}");
    assert_eq!(call["result"]["status"], 200);
    let echoed: Value =
        serde_json::from_slice(&STANDARD.decode(call["result"]["body"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(echoed["path"], "/some/path", "{echoed}");
    assert_eq!(echoed["query"], "x=1", "{echoed}");
    assert_eq!(echoed["body"], "hello", "{echoed}");
    assert_eq!(echoed["headers"]["x-tenant-header"], "kept", "{echoed}");
    assert_eq!(echoed["headers"]["x-call-id"], id.as_str(), "the function sees the call's ID: {echoed}");
    assert!(echoed["headers"].get("authorization").is_none(), "the key never reaches the function: {echoed}");
    assert!(call["ended_at_ms"].as_u64() >= call["accepted_at_ms"].as_u64());

    // Another tenant's call is not there; nor is one that never was.
    let other_router = federation.start_router(&other).await;
    let other_url = federation.routers[other_router].url("");
    for (router, key, id) in
        [(&other_url, &other, id.as_str()), (&router, &key, "no-such-call"), (&router, &key, "bad%2Fid")]
    {
        let answer = client.get(format!("{router}/v1/calls/{id}")).bearer_auth(key).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{id}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "call_not_found");
    }

    // Refused at the door, as a sync call is, and nothing is queued.
    let refusals = [
        (client.post(format!("{router}/async-function/nope")).bearer_auth(&key), 404, "function_not_found"),
        (client.post(format!("{other_url}/async-function/echo")).bearer_auth(&other), 404, "function_not_found"),
        (
            client.post(format!("{router}/async-function/echo")).bearer_auth(&key).body(vec![b'x'; 5000]),
            413,
            "body_too_large",
        ),
        (client.post(format!("{router}/async-function/echo")), 401, "unauthorized"),
        (
            client.post(format!("{router}/async-function/echo")).bearer_auth(&key).header("x-callback-url", "ftp://x/"),
            400,
            "invalid_request",
        ),
    ];
    for (request, status, code) in refusals {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), status);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // A client error is final: one try, `failed`.
    let id = accept(&client, &format!("{router}/async-function/flaky?ms=abc"), &key, "").await;
    let call = ended(&client, &router, &key, &id).await;
    assert_eq!((call["state"].as_str(), call["attempts"].as_u64()), (Some("failed"), Some(1)), "{call}");
    assert_eq!(call["result"]["status"], 400);

    // Retried outcomes: tried max_attempts times, then dead with the last answer.
    let id = accept(&client, &format!("{router}/async-function/flaky?fail_percent=100"), &key, "payload").await;
    let call = ended(&client, &router, &key, &id).await;
    assert_eq!((call["state"].as_str(), call["attempts"].as_u64()), (Some("dead"), Some(3)), "{call}");
    assert_eq!(
        (call["dead_reason"].as_str(), call["result"]["status"].as_u64()),
        (Some("retries_exhausted"), Some(503))
    );
    let letters = format!("{router}/v1/functions/flaky/dead-letters");
    let listed: Value = client.get(&letters).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let listed = listed["dead_letters"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["call_id"].as_str(), listed[0]["dead_reason"].as_str()),
        (Some(id.as_str()), Some("retries_exhausted"))
    );
    assert_eq!(listed[0]["request"]["body"], STANDARD.encode("payload"), "the original request is kept");
    assert_eq!(listed[0]["request"]["path"], "/?fail_percent=100");
    // Another tenant sees none of them.
    let theirs: Value = client
        .get(format!("{other_url}/v1/functions/flaky/dead-letters"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["dead_letters"], json!([]));

    // Redrive: the call runs again from no tries (and dies again), then purge empties it.
    let answer: Value =
        client.post(format!("{letters}/redrive")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["redriven"], 1);
    let listed: Value = client.get(&letters).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert!(listed["dead_letters"].as_array().unwrap().len() <= 1);
    let call = ended(&client, &router, &key, &id).await;
    assert_eq!((call["state"].as_str(), call["attempts"].as_u64()), (Some("dead"), Some(3)), "redriven: {call}");
    let answer: Value = client.delete(&letters).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["purged"], 1);
    let listed: Value = client.get(&letters).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["dead_letters"], json!([]));
    let gone = client.get(format!("{router}/v1/calls/{id}")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(gone.status(), 404, "a purged call is gone");
    for (method, status) in [(reqwest::Method::PUT, 405), (reqwest::Method::GET, 405)] {
        let path = if method == reqwest::Method::GET { format!("{letters}/redrive") } else { letters.clone() };
        assert_eq!(client.request(method, path).bearer_auth(&key).send().await.unwrap().status(), status);
    }
    let bad_limit = client.get(format!("{letters}?limit=0")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(bad_limit.status(), 400);

    federation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_keep_to_their_share_and_die_with_a_deleted_function() {
    let mut federation = inproc::Builder::new(33400).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let router = federation.routers[r].url("");
    let client = reqwest::Client::new();
    // One sandbox taking one call, half of it for async calls: one async call at a time,
    // and a sync call still gets through while one runs.
    let spec = spin_spec(
        "slow",
        json!({"scaling": {"max_scale": 2, "container_concurrency": 1}, "async": {"max_share": 0.5}}),
    );
    register(&client, &router, &key, spec).await;
    let first = accept(&client, &format!("{router}/async-function/slow?ms=1500&mode=sleep"), &key, "").await;
    running(&client, &router, &key, &first).await;
    let second = accept(&client, &format!("{router}/async-function/slow?ms=10&mode=sleep"), &key, "").await;
    let sync = client.post(format!("{router}/function/slow?ms=10&mode=sleep")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(sync.status(), 200, "a sync call is not held back by async ones");
    let (second, first) = (ended(&client, &router, &key, &second).await, ended(&client, &router, &key, &first).await);
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("succeeded"), Some("succeeded")),
        "{first} {second}"
    );
    let (first_end, second_end) = (first["ended_at_ms"].as_u64().unwrap(), second["ended_at_ms"].as_u64().unwrap());
    // Run beside the first, the 10 ms call would have ended over a second before it.
    assert!(second_end + 50 >= first_end, "the second waited for the first's slot: {first_end} {second_end}");
    assert_eq!(second["attempts"], 1, "waiting for a slot is not a try: {second}");

    // Calls queued for a function deleted before they ran are dead letters saying so.
    let spec = spin_spec("doomed", json!({"scaling": {"max_scale": 1}, "async": {"max_share": 1.0}}));
    register(&client, &router, &key, spec).await;
    let running_id = accept(&client, &format!("{router}/async-function/doomed?ms=2000&mode=sleep"), &key, "").await;
    running(&client, &router, &key, &running_id).await;
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(accept(&client, &format!("{router}/async-function/doomed?ms=10"), &key, "").await);
        }
        ids
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = client.delete(format!("{router}/v1/functions/doomed")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let mut reasons = Vec::new();
    for id in queued.iter().chain([&running_id]) {
        let call = ended(&client, &router, &key, id).await;
        reasons.push(call["dead_reason"].as_str().unwrap_or(call["state"].as_str().unwrap()).to_string());
    }
    assert!(reasons[..3].iter().all(|r| r == "function_deleted"), "{reasons:?}");
    federation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_a_redis_queue_and_every_call_ends() {
    let redis =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    let prefix = format!("test-{:x}", std::process::id());
    let mut federation = inproc::Builder::new(33800).cells(2).start().await;
    let key = federation.tenant("acme").await;
    let shared = json!({"async": {"redis_url": redis, "redis_prefix": prefix, "lease": "2s"}});
    let a = federation.start_router_configured(&key, shared.clone()).await;
    let b = federation.start_router_configured(&key, shared).await;
    let (a, b) = (federation.routers[a].url(""), federation.routers[b].url(""));
    let client = reqwest::Client::builder().pool_max_idle_per_host(32).build().unwrap();
    let policy = json!({"max_attempts": 10, "backoff": {"initial": "10ms", "max": "40ms"}});
    register(&client, &a, &key, spin_spec("flaky", json!({"async": policy, "scaling": {"max_scale": 4}}))).await;

    // 300 calls that fail 30 % of the time, half accepted by each router.
    let mut ids = Vec::new();
    for i in 0..300 {
        let router = if i % 2 == 0 { &a } else { &b };
        ids.push(accept(&client, &format!("{router}/async-function/flaky?fail_percent=30"), &key, "").await);
    }
    let (mut succeeded, mut tries) = (0, 0);
    for id in &ids {
        // Any router answers for any call.
        let call = ended(&client, &b, &key, id).await;
        match call["state"].as_str().unwrap() {
            "succeeded" => succeeded += 1,
            "dead" => assert_eq!(call["dead_reason"], "retries_exhausted", "{call}"),
            other => panic!("{id} ended {other}: {call}"),
        }
        tries += call["attempts"].as_u64().unwrap();
    }
    assert!(succeeded >= 299, "at 30 % failures, ten tries all failing is a 6-in-a-million event: {succeeded}");
    assert!((300..=600).contains(&tries), "about 1/0.7 tries per call: {tries}");
    federation.shutdown().await;
}
