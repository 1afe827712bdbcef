//! A tenant deploys a container image through the router, end to end with real things: a
//! real registry (Debian's `docker-registry`) holding an image this test builds without a
//! container engine, real baton processes, runc containers. The reference resolves to a
//! digest at registration (or the registration is refused, saying why, and nothing is
//! stored); the owning cell pre-pulls it; calls run cold and warm; the function moves to
//! the other cell and is failed over with no failed call; deleted, it leaves nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_image::build::{RunConfig, layer, program_with_libraries, push};
use baton_image::{Credentials, ResolverSettings};
use baton_testkit::{Federation, FederationApi, Registry, bin, send_when_known};
use serde_json::{Value, json};

/// Pre-pulls a cell asked of its workers: `pulled`, or `cached` when a cold start that
/// came first was already pulling it.
const PREPULLED: &str = "baton_cell_image_prepulls_total";

/// Pushes an image whose entrypoint is `baton-fn-echo`; its reference and digest.
async fn push_echo(registry: &Registry, name: &str) -> (String, String) {
    let files = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    let run = RunConfig { entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()], ..RunConfig::default() };
    let reference = registry.image(name);
    let digest =
        push(&reference, vec![layer(&files).unwrap()], &run, &Credentials::Anonymous, &ResolverSettings::default())
            .await
            .unwrap();
    (reference, digest)
}

/// Calls `url` until `stop`, counting answers that are not 200.
fn steady_load(
    client: reqwest::Client,
    url: String,
    key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match client.post(&url).bearer_auth(&key).body("x").send().await {
                Ok(answer) if answer.status() == 200 => ok += 1,
                Ok(answer) => failed.push(format!("{}: {}", answer.status(), answer.text().await.unwrap_or_default())),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_deploys_runs_moves_fails_over_and_goes_through_the_federation() {
    let registry = Registry::start().await;
    let (reference, digest) = push_echo(&registry, "acme/hello:1.2").await;
    let mut federation = Federation::start(2, 16400, "2s").await;
    let (key, r) = federation.open_to("acme").await;
    let client = reqwest::Client::new();
    let put = |name: &str, spec: Value| {
        client.put(federation.routers[r].url(&format!("/v1/functions/{name}"))).bearer_auth(&key).json(&spec).send()
    };

    // References that do not resolve: a 400 saying why, and nothing stored.
    for (bad, why) in [
        (registry.image("acme/hello:nope"), "not in its repository"),
        (registry.image("acme/missing:1"), "does not exist"),
        ("127.0.0.1:1/acme/hello:1".to_string(), "unreachable"),
        ("bad reference".to_string(), "image"),
    ] {
        let answer = put("hello", json!({"image": bad})).await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_image", "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("image") && message.contains(why), "{bad}: {message}");
    }
    let url = federation.routers[r].url("/v1/functions/hello");
    assert_eq!(client.get(&url).bearer_auth(&key).send().await.unwrap().status(), 404, "nothing was stored");
    // This federation has no key to seal credentials with: storing some is refused.
    let login = json!({"username": "u", "password": "p"});
    let refused = client.put(federation.routers[r].url("/v1/registries/ghcr.io")).bearer_auth(&key).json(&login);
    let refused = refused.send().await.unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("secrets.key_file"));

    // Registered: the reference and the digest it runs; the owning cell pre-pulls it.
    // It listens on a port of its own choosing, in a network of its own.
    let spec = json!({"image": reference, "port": 9000, "timeout": "5s", "resources": {"cpu_millis": 100, "memory_mib": 64}, "scaling": {"max_scale": 2}});
    let answer = put("hello", spec).await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    let got: Value = client.get(&url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (got["spec"]["image"].as_str(), got["spec"]["image_digest"].as_str(), got["spec"]["port"].as_u64()),
        (Some(reference.as_str()), Some(digest.as_str()), Some(9000))
    );
    let source = got["cell"].as_str().unwrap().to_string();
    let target = if source == "cell-1" { "cell-2" } else { "cell-1" };
    let cell = |id: &str| if id == "cell-1" { 0 } else { 1 };
    federation.cells[cell(&source)].wait_metric(PREPULLED, |n| n >= 1.0).await;

    // Cold, then warm.
    let call = federation.routers[r].url("/function/hello/path?q=1");
    let (first, _) = send_when_known(client.post(&call).bearer_auth(&key).body("cold")).await;
    assert_eq!(first.status(), 200);
    let reply: Value = first.json().await.unwrap();
    assert_eq!((reply["path"].as_str(), reply["body"].as_str()), (Some("/path"), Some("cold")));
    for _ in 0..20 {
        assert_eq!(client.post(&call).bearer_auth(&key).body("warm").send().await.unwrap().status(), 200);
    }
    let inside = container_ports(federation.cells[cell(&source)].dir.path());
    assert!(!inside.is_empty() && inside.iter().all(|p| *p == 9000), "containers listen on {inside:?}");

    // An entrypoint that does not exist: the call answers 502 with runc's word for it, at
    // once rather than after the queue timeout.
    let broken = json!({"image": reference, "command": ["/no/such/entrypoint"], "timeout": "20s"});
    assert_eq!(put("broken", broken).await.unwrap().status(), 201);
    let started = Instant::now();
    let (answer, _) =
        send_when_known(client.post(federation.routers[r].url("/function/broken")).bearer_auth(&key).body("x")).await;
    assert_eq!(answer.status(), 502);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sandbox_failing", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("/no/such/entrypoint") && message.contains("exit status"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
    // Its status says so too (from the owning cell's next heartbeat).
    let status_url = federation.routers[r].url("/v1/functions/broken");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Value = client.get(&status_url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if let Some(failure) = got["last_failure"].as_str() {
            assert!(failure.contains("/no/such/entrypoint"), "{failure}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure in {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy: Value = client.get(&url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert!(healthy["last_failure"].is_null(), "{healthy}");
    let deleted = client.delete(federation.routers[r].url("/v1/functions/broken")).bearer_auth(&key).send();
    assert_eq!(deleted.await.unwrap().status(), 204);

    // Moved under steady load: the target pulls it, no call fails.
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(client.clone(), call.clone(), key.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moved = federation.move_function("acme", "hello", target).await;
    assert_eq!(moved.cell, target);
    // The target's worker had pulled it before the switch was committed.
    let target_image = federation.cells[cell(target)]
        .dir
        .path()
        .join(format!("{target}-w1/images/images"))
        .join(digest.replace(':', "-"));
    assert!(target_image.is_dir(), "{} is not there when the move returns", target_image.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.post(&call).bearer_auth(&key).body("x").send().await.unwrap();
        let served_by = answer.headers().get("x-baton-cell").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if served_by == target {
            break;
        }
        assert!(Instant::now() < deadline, "still served by {served_by}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the move: {failed:?}",
        failed.len(),
        ok + failed.len() as u64
    );

    // Its cell dies: failed over to the source, which serves it again. (A call running on
    // the killed cell may fail with it, as in router/tests/failover.rs: no load here.)
    let dead = cell(target);
    federation.cells[dead].cell.as_mut().unwrap().sigkill();
    federation.cells[dead].workers.clear();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.post(&call).bearer_auth(&key).body("x").send().await.unwrap();
        let served_by = answer.headers().get("x-baton-cell").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if answer.status() == 200 && served_by == source {
            break;
        }
        assert!(Instant::now() < deadline, "not failed over: {} from {served_by:?}", answer.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleted: its sandboxes go, and its image leaves the worker's cache.
    let answer = client.delete(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(answer.status(), 204);
    let images = federation.cells[cell(&source)].dir.path().join(format!("{source}-w1")).join("images").join("images");
    let deadline = Instant::now() + Duration::from_secs(20);
    let count = AtomicU64::new(u64::MAX);
    while Instant::now() < deadline {
        count.store(std::fs::read_dir(&images).map(|d| d.count() as u64).unwrap_or(0), Ordering::Relaxed);
        if count.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count.load(Ordering::Relaxed), 0, "the image is still cached in {}", images.display());
}

/// The ports the containers whose records lie under `dir` listen on in their namespaces.
fn container_ports(dir: &std::path::Path) -> Vec<u16> {
    files_holding(dir, b"\"network\"")
        .into_iter()
        .filter(|path| path.ends_with("sandbox.json"))
        .filter_map(|path| {
            let record: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            record["network"].as_str()?.parse::<std::net::SocketAddrV4>().ok().map(|a| a.port())
        })
        .collect()
}

/// Everything under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let holds = |path: &std::path::PathBuf| {
        std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    };
    baton_testkit::files_under(dir).into_iter().filter(holds).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_runs_with_its_tenants_credentials_which_are_never_shown_nor_stored_in_plaintext() {
    const PASSWORD: &str = "s3cret-registry-token-9f2c";
    let registry = Registry::start_private("acme-bot", PASSWORD).await;
    let files = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    let run = RunConfig { entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()], ..RunConfig::default() };
    let reference = registry.image("acme/private:1");
    let pusher = Credentials::Basic { username: "acme-bot".into(), password: PASSWORD.into() };
    push(&reference, vec![layer(&files).unwrap()], &run, &pusher, &ResolverSettings::default()).await.unwrap();

    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("secrets.key");
    std::fs::write(&key_file, "5e".repeat(32)).unwrap();
    let key_path = key_file.display().to_string();
    let env = [
        ("BATON_CELLS__HEARTBEAT_TIMEOUT", "3s"),
        ("BATON_CELLS__MOVE_BUDGET", "0"),
        ("BATON_SECRETS__KEY_FILE", key_path.as_str()),
    ];
    let mut federation = Federation::start_with(1, 16800, &env).await;
    let (acme, r) = federation.open_to("acme").await;
    let other = federation.tenant("other").await;
    federation.wait_router_accepts(r, &other).await;
    let client = reqwest::Client::new();
    let url = |path: &str| federation.routers[r].url(path);
    let spec = json!({"image": reference, "timeout": "5s", "resources": {"cpu_millis": 100, "memory_mib": 64}});
    let deploy = |key: &str| client.put(url("/v1/functions/private")).bearer_auth(key).json(&spec).send();

    // Without credentials the registry refuses: a 400 saying so.
    let answer = deploy(&acme).await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("refused the credentials"), "{body}");

    // The tenant stores them; they are never answered back.
    let registry_name = registry.addr.to_string();
    let login = json!({"username": "acme-bot", "password": PASSWORD});
    let put = client.put(url(&format!("/v1/registries/{registry_name}"))).bearer_auth(&acme).json(&login);
    assert_eq!(put.send().await.unwrap().status(), 204);
    let listed = client.get(url("/v1/registries")).bearer_auth(&acme).send().await.unwrap().text().await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!({"registries": [registry_name]}));
    assert!(!listed.contains(PASSWORD));
    let bad = client.put(url("/v1/registries/not a host")).bearer_auth(&acme).json(&login).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    // Now the image resolves at registration and the cell's worker pulls it with them.
    let answer = deploy(&acme).await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    let got = client.get(url("/v1/functions/private")).bearer_auth(&acme).send().await.unwrap().text().await.unwrap();
    assert!(!got.contains(PASSWORD), "{got}");
    let (called, _) = send_when_known(client.post(url("/function/private")).bearer_auth(&acme).body("hi")).await;
    assert_eq!(called.status(), 200, "{}", called.text().await.unwrap());

    // Another tenant neither sees them nor pulls with them.
    let theirs = client.get(url("/v1/registries")).bearer_auth(&other).send().await.unwrap();
    assert_eq!(theirs.json::<Value>().await.unwrap(), json!({"registries": []}));
    assert_eq!(deploy(&other).await.unwrap().status(), 400);

    // Nowhere on disk in plaintext: not in the shard manager's raft log or snapshots, not in
    // the cell's store, not in the worker's state.
    let holding = files_holding(federation.dir.path(), PASSWORD.as_bytes());
    let mut holding_cells: Vec<_> =
        federation.cells.iter().flat_map(|c| files_holding(c.dir.path(), PASSWORD.as_bytes())).collect();
    holding_cells.extend(holding);
    assert!(holding_cells.is_empty(), "the password is stored in plaintext in {holding_cells:?}");

    // Forgotten: gone from the list; a new registration of the image is refused again.
    let forget = client.delete(url(&format!("/v1/registries/{registry_name}"))).bearer_auth(&acme).send();
    assert_eq!(forget.await.unwrap().status(), 204);
    let listed = client.get(url("/v1/registries")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(listed.json::<Value>().await.unwrap(), json!({"registries": []}));
    let again = client.put(url("/v1/functions/again")).bearer_auth(&acme).json(&spec).send().await.unwrap();
    assert_eq!(again.status(), 400);
}
