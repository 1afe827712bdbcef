//! Callbacks of async calls: a receiver that is down for 10 s still gets every result once
//! it is up (with `X-Call-Id`, `X-Baton-Status`, `X-Baton-Attempts` and the call as
//! JSON); and a router left with its default refuses a callback to the federation's own
//! network (an address at the door, a name when it resolves).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_testkit::{FederationApi, echo_spec, inproc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// What the receiver got, by call ID: (status header, attempts header, body).
type Received = Arc<Mutex<BTreeMap<String, Vec<(String, String, Value)>>>>;

/// Serves callbacks on `listener`, recording each.
fn receive(listener: tokio::net::TcpListener, received: Received) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let received = received.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
                        };
                        let (id, status, attempts) =
                            (header("x-call-id"), header("x-baton-status"), header("x-baton-attempts"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        received.lock().unwrap().entry(id).or_default().push((status, attempts, body));
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from_static(b"ok"))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_ten_seconds_still_gets_every_result() {
    let mut federation = inproc::Builder::new(34800).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router_configured(&key, json!({"async": {"callback_private_networks": true}})).await;
    let router = federation.routers[r].url("");
    // The router closes a connection idle for 10 s (`router.header_read_timeout`).
    let client = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(2)).build().unwrap();
    let answer =
        client.post(format!("{router}/v1/functions")).bearer_auth(&key).json(&echo_spec("echo", json!({}))).send();
    assert_eq!(answer.await.unwrap().status(), 201);

    // The receiver's port, not listened on yet: its callbacks are refused for 10 s.
    let port = baton_testkit::free_port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let mut ids = Vec::new();
    for i in 0..20 {
        let answer = client
            .post(format!("{router}/async-function/echo"))
            .bearer_auth(&key)
            .header("x-callback-url", &hook)
            .body(format!("call {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        ids.push(answer.headers()["x-call-id"].to_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let call: Value = client
        .get(format!("{router}/v1/calls/{}", ids[0]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(call["state"], "succeeded", "the call ended whatever its callback: {call}");
    assert_eq!(call["callback"]["delivered"], false, "{call}");
    assert!(call["callback"]["attempts"].as_u64().unwrap() >= 2, "tried while the receiver was down: {call}");

    let received: Received = Arc::default();
    receive(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), received.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "callbacks arrived for {} of {} calls",
            received.lock().unwrap().len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = received.lock().unwrap().clone();
    for (i, id) in ids.iter().enumerate() {
        let (status, attempts, body) = &received[id][0];
        assert_eq!((status.as_str(), attempts.as_str()), ("succeeded", "1"), "{id}");
        assert_eq!(body["call_id"], id.as_str());
        assert_eq!(body["result"]["status"], 200);
        let echoed = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            body["result"]["body"].as_str().unwrap(),
        )
        .unwrap();
        let echoed: Value = serde_json::from_slice(&echoed).unwrap();
        assert_eq!(echoed["body"], format!("call {i}"));
    }
    // Delivered, the record says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let call: Value = client
            .get(format!("{router}/v1/calls/{}", ids[19]))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if call["callback"]["delivered"] == true {
            assert_eq!(call["callback"]["last_error"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "{call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    federation.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_do_not_reach_the_federations_own_network_by_default() {
    let mut federation = inproc::Builder::new(35000).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let router = federation.routers[r].url("");
    let client = reqwest::Client::new();
    let answer =
        client.post(format!("{router}/v1/functions")).bearer_auth(&key).json(&echo_spec("echo", json!({}))).send();
    assert_eq!(answer.await.unwrap().status(), 201);
    // An address: refused at the door, naming the header; nothing is queued.
    let shard_manager = federation.manager_urls()[0].clone() + "/";
    for url in [shard_manager.as_str(), "http://169.254.169.254/latest/meta-data/", "http://[::1]:8000/"] {
        let answer =
            client.post(format!("{router}/async-function/echo")).bearer_auth(&key).header("x-callback-url", url).send();
        let answer = answer.await.unwrap();
        assert_eq!(answer.status(), 400, "{url}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("X-Callback-Url:"), "{body}");
    }
    // A name resolving to loopback: the call runs, its callback is refused when sent.
    let answer = client
        .post(format!("{router}/async-function/echo"))
        .bearer_auth(&key)
        .header("x-callback-url", format!("http://localhost:{}/", federation.routers[r].addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let id = answer.headers()["x-call-id"].to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call: Value =
            client.get(format!("{router}/v1/calls/{id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if let Some(why) = call["callback"]["last_error"].as_str() {
            assert!(why.contains("no public address"), "{why}");
            assert_eq!(call["state"], "succeeded");
            break;
        }
        assert!(Instant::now() < deadline, "{call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    federation.shutdown().await;
}
