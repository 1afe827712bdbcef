//! Registration and propagation against a real `baton-shard-manager` process (one
//! replica, redb with fsync per commit): the latency of one `PutFunction` one at a time,
//! 10,000 functions in bulk (64 in flight), and how long a committed registration takes
//! to reach a follower of the shard-map stream: from the replica's commit (the stamp on
//! each delta) to the delta applied to a map by the router's own follower code
//! (`baton_shardmap::follow`) in this process, per epoch, and as a real `baton-router`
//! process reports it (`baton_shard_map_propagation_seconds`). Run with
//! `cargo build --release --bins && cargo bench -p baton-shard-manager --bench registration`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{
    PutFunctionRequest, PutFunctionsRequest, PutTenantRequest, RegisterCellRequest, WatchShardMapRequest,
};
use baton_shardmap::MapEvent;
use baton_testkit::{free_port, start_shard_manager};
use tokio::sync::Semaphore;

const SPEC: &str = r#"{"executable":"/usr/bin/true"}"#;

/// `message` with a request ID, as routers and cells send every write.
fn identified<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(baton_model::headers::REQUEST_ID, id.parse().expect("ASCII"));
    request
}

fn put(name: String) -> PutFunctionRequest {
    PutFunctionRequest {
        tenant: "bench".into(),
        name,
        spec_json: SPEC.into(),
        home_region: String::new(),
        min_epoch: 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The cells are names whose heartbeats this program sends; nothing to rebalance onto.
    let _manager = start_shard_manager(port, dir.path(), &[("BATON_CELLS__MOVE_BUDGET", "0")]).await;
    let url = format!("http://127.0.0.1:{port}");
    let mut client = loop {
        match ShardManagerClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let cell = |id: &str| RegisterCellRequest {
        id: id.into(),
        region: "local".into(),
        control: format!("http://{id}:7100"),
        data_planes: vec![format!("http://{id}:8080")],
        weight: 1,
    };
    loop {
        if client.register_cell(cell("c1")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.register_cell(cell("c2")).await.unwrap();
    // The cells are names only: heartbeat for them, or the leader fails them over.
    let mut beating = client.clone();
    tokio::spawn(async move {
        loop {
            for id in ["c1", "c2"] {
                let _ = beating
                    .cell_heartbeat(baton_proto::shard::CellHeartbeatRequest {
                        id: id.into(),
                        loads: vec![],
                        health: None,
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    client
        .put_tenant(PutTenantRequest {
            name: "bench".into(),
            default_region: "local".into(),
            max_functions: 100_000,
            executables: true,
            // Every function at the default max_scale of 100.
            max_sandboxes: 100 * 100_000,
            ..Default::default()
        })
        .await
        .unwrap();

    // A real router following the map, and the router's follower code in this process.
    let (router_port, router_admin) = (free_port(), free_port());
    let mut router = baton_testkit::daemon("baton-router")
        .args(["--listen", &format!("127.0.0.1:{router_port}"), "--admin-listen", &format!("127.0.0.1:{router_admin}")])
        .args(["--shard-managers", &url])
        .env("BATON_LOG__FILTER", "warn")
        .env("BATON_ASYNC__PATH", dir.path().join("router-calls.redb"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_follower, stopped) = tokio::sync::watch::channel(false);
    let view = baton_shardmap::follow(vec![url.clone()], baton_service::tls::Tls::Plaintext, Some(events_tx), stopped);
    while !view.synced() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let probe = tokio::spawn(async move {
        let mut lags = Vec::new();
        while let Some(event) = events.recv().await {
            if let MapEvent::Delta(delta) = event {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                let lag = (now.as_micros() as u64).saturating_sub(delta.applied_unix_micros);
                lags.push(Duration::from_micros(lag));
                if lags.len() == 1000 {
                    return lags;
                }
            }
        }
        lags
    });

    // One at a time, with a follower of the map timing each delta's arrival.
    let mut stream = client.watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let (mut latency, mut propagation) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let sent = Instant::now();
        client.put_function(identified(put(format!("seq-{i}")), &format!("seq-{i}"))).await.unwrap();
        let committed = sent.elapsed();
        stream.message().await.unwrap().unwrap();
        latency.push(committed);
        propagation.push(sent.elapsed());
    }
    latency.sort();
    propagation.sort();
    println!(
        "registration, one at a time (1000): p50 {:?} p99 {:?}",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99)
    );
    println!(
        "registration sent to its delta at a stream follower: p50 {:?} p99 {:?}",
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99)
    );
    drop(stream);
    let mut lags = probe.await.unwrap();
    lags.sort();
    println!(
        "commit to a follower's map (baton_shardmap::follow, per epoch, {}): p50 {:?} p99 {:?} max {:?}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
    let scrape = |name: &str| {
        let name = name.to_string();
        async move { baton_testkit::metric_at(router_admin, &name).await }
    };
    let count = scrape("baton_shard_map_propagation_seconds_count").await;
    let sum = scrape("baton_shard_map_propagation_seconds_sum").await;
    let mut buckets = String::new();
    for le in ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.01", "0.1"] {
        let n = scrape(&format!("baton_shard_map_propagation_seconds_bucket{{le=\"{le}\"}}")).await;
        buckets.push_str(&format!(" <={le}s: {n}"));
    }
    println!(
        "commit to the baton-router process's map: {count} deltas, mean {:?};{buckets}",
        Duration::from_secs_f64(if count > 0.0 { sum / count } else { 0.0 })
    );
    let _ = router.kill();
    let _ = router.wait();

    // 10,000 in bulk, 64 in flight.
    let limit = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.put_function(identified(put(format!("bulk-{i}")), &format!("bulk-{i}"))).await.unwrap();
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let bulk = started.elapsed();
    println!("10,000 registrations one per call (64 in flight): {bulk:?} ({:.0}/s)", 10_000.0 / bulk.as_secs_f64());

    // 10,000 in batches of 500 (PutFunctions: one commit each), 4 batches in flight.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for b in 0..20 {
        let mut client = client.clone();
        let functions = (0..500).map(|i| put(format!("batch-{b}-{i}"))).collect();
        tasks.push(tokio::spawn(async move {
            let batch = PutFunctionsRequest { functions, min_epoch: 0 };
            client.put_functions(identified(batch, &format!("batch-{b}"))).await.unwrap();
        }));
        if tasks.len() == 4 {
            tasks.remove(0).await.unwrap();
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let batched = started.elapsed();
    println!("10,000 registrations in batches of 500: {batched:?} ({:.0}/s)", 10_000.0 / batched.as_secs_f64());
}
