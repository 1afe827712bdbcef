//! End to end: a shard manager, two cells with a worker each, routers. The tenant API and
//! invocations through the router, auth and tenant isolation, bad input, revocation and
//! idempotency keys on a federation in the test's process; a stale router corrected by 421
//! and a graceful move under load on real processes (they read each process's metrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_proto::cell::ListFunctionsRequest as CellListFunctions;
use baton_proto::shard::{FunctionRef, RevokeApiKeyRequest};
use baton_testkit::{Federation, FederationApi, echo_spec, inproc};
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap()
}

async fn status_and_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 5 ms until it holds; returns how long that took.
async fn within<F, Fut>(limit: Duration, what: &str, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_deploy_invoke_and_are_isolated_and_bad_input_stores_nothing() {
    let mut federation = inproc::Builder::new(29000).cells(2).start().await;
    let acme = federation.tenant("acme").await;
    let other = federation.tenant("other").await;
    let r = federation.start_router(&acme).await;
    let second_router = federation.start_router(&acme).await;
    let router = &federation.routers[r];
    let client = http();
    // Ready once it has a map (it is checked every 100 ms).
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("http://{}{probe}", router.admin_addr);
        within(Duration::from_secs(1), probe, || async { client.get(&url).send().await.unwrap().status() == 200 })
            .await;
    }
    let functions = router.url("/v1/functions");

    // No key, a malformed header, an unknown key: 401, on the API and on invocations.
    for path in ["/v1/functions", "/function/echo"] {
        assert_eq!(client.get(router.url(path)).send().await.unwrap().status(), 401);
        let bad = client.get(router.url(path)).bearer_auth("bk_not-a-key").send().await.unwrap();
        assert_eq!(bad.status(), 401);
        assert_eq!(bad.headers()["www-authenticate"], "Bearer");
        let basic = client.get(router.url(path)).header("authorization", "Basic eDp5").send().await.unwrap();
        assert_eq!(basic.status(), 401);
    }

    // Bad input: a clear 4xx naming what is wrong, and nothing stored.
    let spec = echo_spec("echo", json!({"timeout": "2s"}));
    let bad_inputs: Vec<(&str, String, &str)> = vec![
        ("not json", "{".into(), "body"),
        ("not an object", "[1]".into(), "body"),
        ("no name", json!({"executable": "/bin/true"}).to_string(), "name"),
        ("bad name", json!({"name": "Echo", "executable": "/bin/true"}).to_string(), "name"),
        ("unknown field", json!({"name": "echo", "executable": "/bin/true", "colour": 1}).to_string(), "colour"),
        ("bad value", json!({"name": "echo", "executable": "rel/path"}).to_string(), "executable"),
        ("bad region", json!({"name": "echo", "executable": "/bin/true", "home_region": 7}).to_string(), "home_region"),
    ];
    for (what, body, field) in bad_inputs {
        let (status, error) = status_and_json(client.post(&functions).bearer_auth(&acme).body(body)).await;
        assert_eq!(status, 400, "{what}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{what}: {error}");
    }
    let too_big = client.put(format!("{functions}/echo")).bearer_auth(&acme).body("x".repeat(70_000));
    let (status, _) = status_and_json(too_big).await;
    assert_eq!(status, 413);
    let (status, _) = status_and_json(client.patch(&functions).bearer_auth(&acme).body("{}")).await;
    assert_eq!(status, 405);
    let (_, listed) = status_and_json(client.get(&functions).bearer_auth(&acme)).await;
    assert_eq!(listed["functions"], json!([]), "bad input stored nothing");

    // Deploy: 201, then 200 for an update; the answer names the owning cell.
    let (status, created) = status_and_json(client.post(&functions).bearer_auth(&acme).json(&spec)).await;
    let committed = Instant::now();
    assert_eq!(status, 201, "{created}");
    assert!(created["cell"].as_str().unwrap().starts_with("cell-"));

    // Both routers know the function within 100 ms of its commit (a call they route is not
    // a 404, whatever it then waits for), and send it to the same cell.
    let visible = |url: String| {
        let (client, key) = (client.clone(), acme.clone());
        async move {
            loop {
                let sent = Instant::now();
                if client.post(&url).bearer_auth(&key).send().await.unwrap().status() != 404 {
                    return sent.duration_since(committed);
                }
                assert!(committed.elapsed() < Duration::from_secs(2), "the router never saw the registration");
                // Leave the cores to the routers the map is propagating to.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let (first, second) = tokio::join!(
        visible(federation.routers[r].url("/function/echo")),
        visible(federation.routers[second_router].url("/function/echo")),
    );
    // An upper bound (the send time of the first call that was not a 404): the propagation
    // itself is measured by the registration benchmark from the replica's commit stamp.
    eprintln!("both routers routed the registration within {first:?} and {second:?} of its answer");
    assert!(first < Duration::from_millis(100) && second < Duration::from_millis(100));
    let (status, _) = status_and_json(client.put(format!("{functions}/echo")).bearer_auth(&acme).json(&spec)).await;
    assert_eq!(status, 200);
    let (status, mismatch) =
        status_and_json(client.put(format!("{functions}/other-name")).bearer_auth(&acme).json(&spec)).await;
    assert_eq!(status, 400, "{mismatch}");

    // Invoke through the router (it learns the function from the map within milliseconds).
    let echo = router.url("/function/echo/some/path?x=1");
    let took = within(Duration::from_secs(10), "echo answers 200", || async {
        client.post(&echo).bearer_auth(&acme).body("hello").send().await.unwrap().status() == 200
    })
    .await;
    eprintln!("first successful call {took:?} after registration");
    for router in [&federation.routers[r], &federation.routers[second_router]] {
        let answer = client.post(router.url("/function/echo")).bearer_auth(&acme).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-baton-cell"], created["cell"].as_str().unwrap(), "both routers, one cell");
    }
    let (status, echoed) = status_and_json(client.post(&echo).bearer_auth(&acme).body("hello")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&echoed["body"], &echoed["path"], &echoed["query"]),
        (&json!("hello"), &json!("/some/path"), &json!("x=1"))
    );
    // Neither the key nor the routing generation reaches the function.
    let headers = echoed["headers"].as_object().unwrap();
    assert!(!headers.contains_key("authorization") && !headers.contains_key("x-baton-generation"), "{echoed}");

    // Another tenant sees nothing of it: 404 everywhere, never a 403.
    assert_eq!(client.post(&echo).bearer_auth(&other).send().await.unwrap().status(), 404);
    let (status, _) = status_and_json(client.get(format!("{functions}/echo")).bearer_auth(&other)).await;
    assert_eq!(status, 404);
    let (status, _) = status_and_json(client.delete(format!("{functions}/echo")).bearer_auth(&other)).await;
    assert_eq!(status, 404);
    let (_, listed) = status_and_json(client.get(&functions).bearer_auth(&other)).await;
    assert_eq!(listed["functions"], json!([]));
    let (status, got) = status_and_json(client.get(format!("{functions}/echo")).bearer_auth(&acme)).await;
    assert_eq!((status, got["name"].as_str()), (200, Some("echo")));
    assert_eq!(got["spec"]["executable"], spec["executable"]);

    // A batch registers all or none.
    let short = json!({"timeout": "2s"});
    let bad_batch = json!([echo_spec("b1", short.clone()), {"name": "b2", "executable": "rel/path"}]);
    let (status, error) = status_and_json(client.post(&functions).bearer_auth(&acme).json(&bad_batch)).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("functions[1].executable"), "{error}");
    let batch = json!([echo_spec("b1", short.clone()), echo_spec("b2", short.clone())]);
    let (status, put) = status_and_json(client.post(&functions).bearer_auth(&acme).json(&batch)).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["functions"].as_array().unwrap().iter().filter(|f| f["created"] == true).count(), 2);
    let (_, listed) = status_and_json(client.get(&functions).bearer_auth(&acme)).await;
    let names: Vec<&str> =
        listed["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b1", "b2", "echo"]);
    for name in ["b1", "b2"] {
        let (status, _) = status_and_json(client.delete(format!("{functions}/{name}")).bearer_auth(&acme)).await;
        assert_eq!(status, 204);
    }

    // A revoked key stops working within the map's propagation time.
    let second = federation.key("acme").await;
    let key_id = baton_shardmap::key_hash(&second)[..16].to_string();
    let both = [federation.routers[r].url("/function/echo"), federation.routers[second_router].url("/function/echo")];
    for url in &both {
        within(Duration::from_secs(2), "a new key works", || async {
            client.post(url).bearer_auth(&second).send().await.unwrap().status() == 200
        })
        .await;
    }
    let mut sm = federation.client().await;
    sm.revoke_api_key(RevokeApiKeyRequest { key_id }).await.unwrap();
    for url in &both {
        let took = within(Duration::from_millis(500), "the revoked key is refused", || async {
            client.post(url).bearer_auth(&second).send().await.unwrap().status() == 401
        })
        .await;
        eprintln!("revocation reached router {url} in {took:?}");
    }
    assert_eq!(client.get(&functions).bearer_auth(&acme).send().await.unwrap().status(), 200);

    // Delete: 204, then the function is gone from the API, the router and its cell.
    let owner = created["cell"].as_str().unwrap().to_string();
    let (status, _) = status_and_json(client.delete(format!("{functions}/echo")).bearer_auth(&acme)).await;
    assert_eq!(status, 204);
    let (status, _) = status_and_json(client.get(format!("{functions}/echo")).bearer_auth(&acme)).await;
    assert_eq!(status, 404);
    within(Duration::from_secs(1), "invocations of a deleted function are 404", || async {
        client.post(&echo).bearer_auth(&acme).send().await.unwrap().status() == 404
    })
    .await;
    let cell = federation.cells.iter().find(|c| c.id == owner).unwrap();
    let mut api = cell.api().await;
    // It is removed once calls in flight had time to finish (its timeout: 2 s).
    within(Duration::from_secs(10), "the owner removes the deleted function", || {
        let mut api = api.clone();
        async move {
            let names = api.list_functions(CellListFunctions {}).await.unwrap().into_inner().functions;
            names.is_empty()
        }
    })
    .await;
    let _ = api.list_functions(CellListFunctions {}).await.unwrap();
    federation.shutdown().await;
}

/// A deleted function gives its capacity back at once: its cell drops it as soon as the map
/// says it is gone (a function that moved away waits for its calls; a deleted one's data
/// planes already refuse new calls), and an idle sandbox goes after `scale_down_drain`,
/// long before the function's 30 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_idle_function_frees_its_sandboxes_at_once() {
    use baton_proto::worker::ListSandboxesRequest;
    use baton_proto::worker::worker_client::WorkerClient;
    let mut federation = inproc::Builder::new(30600).start().await;
    let acme = federation.tenant("acme").await;
    let r = federation.start_router(&acme).await;
    let client = http();
    let functions = federation.routers[r].url("/v1/functions");
    let created = client.post(&functions).bearer_auth(&acme).json(&echo_spec("echo", json!({"timeout": "30s"})));
    assert_eq!(created.send().await.unwrap().status(), 201);
    let call = client.post(federation.routers[r].url("/function/echo")).bearer_auth(&acme);
    assert_eq!(baton_testkit::send_when_known(call).await.0.status(), 200);
    let worker = federation.cells[0].workers[0].grpc_addr;
    let worker = WorkerClient::connect(format!("http://{worker}")).await.unwrap();
    let listed = || {
        let mut worker = worker.clone();
        async move { worker.list_sandboxes(ListSandboxesRequest::default()).await.unwrap().into_inner().sandboxes.len() }
    };
    assert_eq!(listed().await, 1);
    // The data plane's load reports (every 100 ms) say it is idle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(client.delete(format!("{functions}/echo")).bearer_auth(&acme).send().await.unwrap().status(), 204);
    let took =
        within(Duration::from_secs(5), "the deleted function's sandbox is gone", || async { listed().await == 0 })
            .await;
    eprintln!("sandbox of a deleted idle function removed after {took:?}");
    federation.shutdown().await;
}

/// A TCP forwarder the test can freeze: while frozen it passes no bytes, so a router
/// behind it keeps its last map (as when the shard manager is unreachable).
struct Forwarder {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Forwarder {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Self { port, frozen }
    }
}

/// A tenant's write retried with its `Idempotency-Key` (same request) is applied once and
/// answered as the first attempt was: a registration still says 201, a delete still 204.
/// Without a key, or with the same key on another body, it is a new request; a malformed
/// key is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_retried_with_an_idempotency_key_are_applied_once() {
    let mut federation = inproc::Builder::new(27000).start().await;
    let acme = federation.tenant("acme").await;
    let r = federation.start_router(&acme).await;
    let client = http();
    let functions = federation.routers[r].url("/v1/functions");
    let post = |spec: &Value, key: Option<&str>| {
        let request = client.post(&functions).bearer_auth(&acme).json(spec);
        status_and_json(match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        })
    };
    let spec = echo_spec("echo", json!({}));
    let (status, first) = post(&spec, Some("create-echo")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post(&spec, Some("create-echo")).await;
    assert_eq!((status, &again), (201, &first), "the retry is answered as the first attempt");
    let epoch = first["epoch"].as_u64().unwrap();
    let (status, update) = post(&spec, None).await;
    assert_eq!((status, update["epoch"].as_u64()), (200, Some(epoch + 1)), "no key: a new write");
    let changed = echo_spec("echo", json!({"timeout": "5s"}));
    let (status, other) = post(&changed, Some("create-echo")).await;
    assert_eq!((status, other["epoch"].as_u64()), (200, Some(epoch + 2)), "another body: another request");

    let delete = |key: Option<&str>| {
        let request = client.delete(format!("{functions}/echo")).bearer_auth(&acme);
        let request = match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(Some("delete-echo")).await, 204);
    assert_eq!(delete(Some("delete-echo")).await, 204, "a retried delete is not told the function is gone");
    assert_eq!(delete(None).await, 404);

    let (status, refused) = post(&spec, Some("has space")).await;
    assert_eq!((status, &refused["error"]["code"]), (400, &json!("invalid_idempotency_key")), "{refused}");
    // A read takes no key: a malformed one is ignored.
    let read = client.get(&functions).bearer_auth(&acme).header("Idempotency-Key", "has space");
    assert_eq!(read.send().await.unwrap().status(), 200);
    let (status, listed) = status_and_json(client.get(&functions).bearer_auth(&acme)).await;
    assert_eq!((status, &listed["functions"]), (200, &json!([])), "the refusal stored nothing");
    federation.shutdown().await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_router_is_corrected_by_421_and_a_graceful_move_under_load_fails_no_call() {
    let mut federation = Federation::start(2, 29400, "3s").await;
    let acme = federation.tenant("acme").await;
    let forwarder = Forwarder::start(federation.manager_port).await;
    let live = federation.start_router(None, &acme).await;
    let stale = federation.start_router(Some(format!("http://127.0.0.1:{}", forwarder.port)), &acme).await;
    let client = http();
    let spec = echo_spec("echo", json!({"timeout": "2s", "scaling": {"min_scale": 1}}));
    let (status, created) =
        status_and_json(client.post(federation.routers[live].url("/v1/functions")).bearer_auth(&acme).json(&spec))
            .await;
    assert_eq!(status, 201, "{created}");
    let source = created["cell"].as_str().unwrap().to_string();
    let target = if source == "cell-1" { "cell-2" } else { "cell-1" };
    for router in &federation.routers {
        let url = router.url("/function/echo");
        within(Duration::from_secs(10), "echo answers through every router", || async {
            client.post(&url).bearer_auth(&acme).body("x").send().await.unwrap().status() == 200
        })
        .await;
    }

    // Steady load through the live router while the function moves: twelve callers, each
    // pausing 20 ms between calls, keep well above 200 calls/s on a busy machine.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    let load_started = Instant::now();
    for _ in 0..12 {
        let (client, url, key) = (client.clone(), federation.routers[live].url("/function/echo"), acme.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.post(&url).bearer_auth(&key).body("load").send().await {
                    Ok(answer) if answer.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(answer) => {
                        eprintln!("failed call: {} {}", answer.status(), answer.text().await.unwrap_or_default());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    forwarder.frozen.store(true, Ordering::SeqCst);
    let (started, before_move) = (Instant::now(), ok.load(Ordering::Relaxed));
    let moved = federation.move_function("acme", "echo", target).await;
    assert_eq!((moved.cell.as_str(), moved.generation), (target, 2));
    eprintln!("move committed in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The rate from the move's start until two seconds after its commit.
    let during = (ok.load(Ordering::Relaxed) - before_move) as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let loaded = load_started.elapsed();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "graceful move under load: {ok} calls succeeded in {loaded:?} ({during:.0}/s during the move), {failed} failed"
    );
    assert_eq!(failed, 0, "a graceful move fails no call");
    assert!(during >= 200.0, "the load held at least 200 calls/s during the move: {during:.0}/s");

    // The stale router still routes to the source, which answers 421 naming the owner;
    // the router retries there and the call succeeds.
    let stale_router = &federation.routers[stale];
    let (status, echoed) =
        status_and_json(client.post(stale_router.url("/function/echo")).bearer_auth(&acme).body("s")).await;
    assert_eq!((status, &echoed["body"]), (200, &json!("s")));
    assert!(stale_router.metric("baton_router_misdirected_retries_total").await >= 1.0);
    forwarder.frozen.store(false, Ordering::SeqCst);

    // The source forgets the function once its calls had time to finish (timeout 2 s).
    let source_cell = federation.cells.iter().find(|c| c.id == source).unwrap();
    let api = source_cell.api().await;
    within(Duration::from_secs(10), "the source forgets the moved function", || {
        let mut api = api.clone();
        async move { api.list_functions(CellListFunctions {}).await.unwrap().into_inner().functions.is_empty() }
    })
    .await;
    let info = federation
        .client()
        .await
        .get_function(FunctionRef { tenant: "acme".into(), name: "echo".into(), min_epoch: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.cell, target);
}
