//! What async calls cost, with each queue, in one run: an in-process federation (one shard
//! manager, one cell with one worker, one router) per queue, the router's own redb file
//! (`embedded`) and a Redis server (`redis`, when `BATON_TEST_REDIS_URL` names one), one
//! warm `baton-fn-echo` sandbox (one core, concurrency 1,000).
//!
//! - Accepting: 32 clients post `/async-function/echo` back to back for 8 s (the routers
//!   deliver meanwhile, as in production): calls accepted per second, and the time to the
//!   `202` at p50/p99.
//! - Delivery: one call at a time, 300 times: the time from sending an async call to its
//!   callback's arrival (accept, queue, the try through the data plane, and the callback's
//!   POST), against a sync call's round trip to the same sandbox in the same pass.
//!
//! Run with `cargo build --release --bins && BATON_TEST_REDIS_URL=redis://… cargo bench -p
//! baton-router --bench async_queue`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_testkit::{FederationApi, inproc};
use http_body_util::Full;
use serde_json::{Value, json};

const CLIENTS: usize = 32;
const ACCEPT_FOR: Duration = Duration::from_secs(8);
const ONE_BY_ONE: usize = 300;

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A callback receiver: the instant each call's callback arrived, by call ID.
type Arrivals = Arc<Mutex<std::collections::HashMap<String, Instant>>>;

async fn receiver() -> (String, Arrivals) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let at = Instant::now();
                    let id =
                        req.headers().get("x-call-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                    seen.lock().unwrap().insert(id, at);
                    async { Ok::<_, Infallible>(hyper::Response::new(Full::new(bytes::Bytes::new()))) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (url, arrivals)
}

async fn pass(name: &str, port_base: u16, queue: Value) {
    let mut federation = inproc::Builder::new(port_base).start().await;
    let key = federation.tenant("bench").await;
    let mut settings = json!({"async": {"callback_private_networks": true}});
    if let Value::Object(extra) = queue {
        for (k, v) in extra {
            settings["async"][k] = v;
        }
    }
    let r = federation.start_router_configured(&key, settings).await;
    let spec = baton_testkit::echo_spec(
        "echo",
        json!({"resources": {"cpu_millis": 1000}, "scaling": {"min_scale": 1, "max_scale": 1, "container_concurrency": 1000}, "async": {"max_share": 1.0}}),
    );
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let registered =
        client.post(federation.router_url(r, "/v1/functions")).bearer_auth(&key).json(&spec).send().await.unwrap();
    assert_eq!(registered.status(), 201);
    let (sync_url, async_url) =
        (federation.router_url(r, "/function/echo"), federation.router_url(r, "/async-function/echo"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post(&sync_url).bearer_auth(&key).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "echo did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Accepting, 32 clients back to back.
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, key) = (client.clone(), async_url.clone(), key.clone());
        clients.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while started.elapsed() < ACCEPT_FOR {
                let sent = Instant::now();
                let answer = client.post(&url).bearer_auth(&key).body("x").send().await.unwrap();
                assert_eq!(answer.status(), 202);
                times.push(sent.elapsed());
            }
            times
        }));
    }
    let mut accepted = Vec::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    let took = started.elapsed();
    accepted.sort();
    println!(
        "{name}: accepted {} calls in {:.1} s: {:.0}/s, time to 202 p50 {:.2} ms, p99 {:.2} ms",
        accepted.len(),
        took.as_secs_f64(),
        accepted.len() as f64 / took.as_secs_f64(),
        quantile(&accepted, 0.5),
        quantile(&accepted, 0.99)
    );
    // Let the queue drain before timing single calls.
    let drained = Instant::now();
    loop {
        let depth =
            baton_testkit::metric_at(federation.routers[r].admin_addr.port(), "baton_router_async_queue_depth").await;
        if depth == 0.0 {
            break;
        }
        assert!(drained.elapsed() < Duration::from_secs(300), "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{name}: the {} calls were delivered within {:.1} s of the last 202",
        accepted.len(),
        drained.elapsed().as_secs_f64()
    );

    // One at a time: sync round trip, and async send-to-callback.
    let (hook, arrivals) = receiver().await;
    let (mut sync, mut delivered) = (Vec::new(), Vec::new());
    for _ in 0..ONE_BY_ONE {
        let sent = Instant::now();
        let answer = client.post(&sync_url).bearer_auth(&key).body("x").send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let _ = answer.bytes().await;
        sync.push(sent.elapsed());

        let sent = Instant::now();
        let answer =
            client.post(&async_url).bearer_auth(&key).header("x-callback-url", &hook).body("x").send().await.unwrap();
        assert_eq!(answer.status(), 202);
        let id = answer.headers()["x-call-id"].to_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = arrivals.lock().unwrap().get(&id) {
                delivered.push(at.duration_since(sent));
                break;
            }
            assert!(Instant::now() < deadline, "no callback for {id}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
    sync.sort();
    delivered.sort();
    println!(
        "{name}: sync call p50 {:.2} ms p99 {:.2} ms; async send to callback p50 {:.2} ms p99 {:.2} ms ({} each)",
        quantile(&sync, 0.5),
        quantile(&sync, 0.99),
        quantile(&delivered, 0.5),
        quantile(&delivered, 0.99),
        ONE_BY_ONE
    );
    federation.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    pass("embedded", 36000, json!({})).await;
    match std::env::var("BATON_TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("bench-{:x}", std::process::id());
            pass("redis", 36200, json!({"redis_url": url, "redis_prefix": prefix})).await;
        }
        Err(_) => println!("redis: skipped (set BATON_TEST_REDIS_URL)"),
    }
}
