//! Three `baton-shard-manager` processes on free ports: they form a cluster, writes sent to
//! a follower commit, and when the leader is killed with SIGKILL another is elected within
//! 2 s, nothing committed is lost, and registration resumes.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{GetStatusRequest, PutTenantRequest, WatchShardMapRequest, shard_map_event};
use baton_shardmap::MapSnapshot;
use baton_testkit::{Proc, bin, free_port, wait_port};
use support::cell;
use tonic::transport::Channel;

/// The leader every client agrees on, other than `not`.
async fn agreed_leader(clients: &BTreeMap<u64, ShardManagerClient<Channel>>, not: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for client in clients.values() {
            let status = client.clone().get_status(GetStatusRequest {}).await.map(|r| r.into_inner().leader_id);
            seen.push(status.unwrap_or(0));
        }
        if seen.iter().all(|&l| l == seen[0] && l != 0 && l != not) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader within {within:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn snapshot(client: &ShardManagerClient<Channel>) -> MapSnapshot {
    let mut stream = client.clone().watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    let Some(shard_map_event::Event::SnapshotJson(json)) = stream.message().await.unwrap().unwrap().event else {
        panic!("the stream starts with a snapshot");
    };
    serde_json::from_str(&json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_of_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let mut procs = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let child = Command::new(bin("baton-shard-manager"))
            .args(["--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join(format!("node-{id}")))
            .args(["--initial-members", &members.join(",")])
            .env("BATON_LOG__FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        procs.insert(id, Proc(child));
    }
    let mut clients = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        wait_port(*port).await;
        clients.insert(i as u64 + 1, ShardManagerClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap());
    }
    let leader = agreed_leader(&clients, 0, Duration::from_secs(10)).await;

    // Writes given to a follower reach the leader.
    let follower = clients.iter().find(|(id, _)| **id != leader).map(|(_, c)| c.clone()).unwrap();
    follower.clone().put_tenant(PutTenantRequest { name: "dev".into(), default_region: "local".into() }).await.unwrap();
    follower.clone().register_cell(cell("c1")).await.unwrap();

    procs.get_mut(&leader).unwrap().sigkill();
    let killed = Instant::now();
    clients.remove(&leader);
    let new_leader = agreed_leader(&clients, leader, Duration::from_secs(2)).await;
    eprintln!("leader {leader} SIGKILLed; {new_leader} leads after {:?}", killed.elapsed());

    for client in clients.values() {
        // A follower applies what the new leader commits on its next round: poll briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut map = snapshot(client).await;
        while map.epoch < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            map = snapshot(client).await;
        }
        assert_eq!(map.epoch, 2, "nothing committed is lost");
        assert_eq!(map.cells.iter().map(|c| c.id.0.as_str()).collect::<Vec<_>>(), ["c1"]);
    }
    // Registration resumes, through either survivor.
    let survivor = clients.values().next().unwrap().clone();
    survivor.clone().register_cell(cell("c2")).await.unwrap();
    let map = snapshot(&survivor).await;
    assert_eq!(map.cells.iter().map(|c| c.id.0.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
}
