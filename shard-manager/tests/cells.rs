//! Real `baton-cell` processes join a real `baton-shard-manager`: they register with
//! their region, addresses and weight and heartbeat; a cell killed with SIGKILL is marked
//! down once silent past the heartbeat timeout; restarted, it registers again and is
//! active.

use std::process::Stdio;
use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{WatchShardMapRequest, shard_map_event};
use baton_shardmap::{CellState, MapSnapshot};
use baton_testkit::{Proc, free_port, start_shard_manager};
use tonic::transport::Channel;

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

async fn snapshot(client: &ShardManagerClient<Channel>) -> MapSnapshot {
    let mut stream = client.clone().watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    let Some(shard_map_event::Event::SnapshotJson(json)) = stream.message().await.unwrap().unwrap().event else {
        panic!("the stream starts with a snapshot");
    };
    serde_json::from_str(&json).unwrap()
}

/// Polls the map until `check` holds; returns how long it took.
async fn until(
    client: &ShardManagerClient<Channel>,
    within: Duration,
    what: &str,
    check: impl Fn(&MapSnapshot) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let map = snapshot(client).await;
        if check(&map) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what} not within {within:?}: {map:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(map: &MapSnapshot, id: &str) -> Option<CellState> {
    map.cells.iter().find(|c| c.id.0 == id).map(|c| c.state)
}

struct CellProcess {
    http: u16,
    proc: Proc,
}

fn start_cell(dir: &std::path::Path, id: &str, shard_manager: u16) -> CellProcess {
    let (control, http) = (free_port(), free_port());
    let child = baton_testkit::daemon("baton-cell")
        .args(["--id", id, "--listen", &format!("127.0.0.1:{control}"), "--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--admin-listen", "127.0.0.1:0", "--store-path"])
        .arg(dir.join(format!("{id}.redb")))
        .env("BATON_FEDERATION__SHARD_MANAGER", format!("http://127.0.0.1:{shard_manager}"))
        .env("BATON_FEDERATION__REGION", "eu")
        .env("BATON_FEDERATION__HEARTBEAT_INTERVAL", "100ms")
        .env("BATON_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    CellProcess { http, proc: Proc(child) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_register_heartbeat_and_a_killed_one_is_marked_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _manager = start_shard_manager(port, &dir.path().join("sm"), &[("BATON_CELLS__HEARTBEAT_TIMEOUT", "1s")]).await;
    let client = ShardManagerClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();

    let mut c1 = start_cell(dir.path(), "c1", port);
    let c2 = start_cell(dir.path(), "c2", port);
    until(&client, Duration::from_secs(10), "both cells registered", |m| {
        state_of(m, "c1") == Some(CellState::Active) && state_of(m, "c2") == Some(CellState::Active)
    })
    .await;
    let map = snapshot(&client).await;
    let c2_record = map.cells.iter().find(|c| c.id.0 == "c2").unwrap();
    assert_eq!(c2_record.region, "eu");
    assert_eq!(c2_record.data_planes, [format!("http://127.0.0.1:{}", c2.http)]);
    assert!(c2_record.control.starts_with("http://127.0.0.1:"));

    // Heartbeats keep both active well past the timeout.
    tokio::time::sleep(HEARTBEAT_TIMEOUT * 2).await;
    let map = snapshot(&client).await;
    assert_eq!((state_of(&map, "c1"), state_of(&map, "c2")), (Some(CellState::Active), Some(CellState::Active)));

    c1.proc.sigkill();
    let took = until(&client, HEARTBEAT_TIMEOUT + Duration::from_secs(1), "c1 marked down", |m| {
        state_of(m, "c1") == Some(CellState::Down)
    })
    .await;
    eprintln!("c1 marked down {took:?} after SIGKILL (heartbeat timeout {HEARTBEAT_TIMEOUT:?})");
    assert_eq!(state_of(&snapshot(&client).await, "c2"), Some(CellState::Active), "the live cell is untouched");

    // Back again: it registers anew and is active.
    let _c1 = start_cell(dir.path(), "c1", port);
    until(&client, Duration::from_secs(10), "c1 active again", |m| state_of(m, "c1") == Some(CellState::Active)).await;
}
