//! Three and five `baton-shard-manager` processes on free ports: they form a cluster,
//! writes sent to a follower commit, and when the leader is killed with SIGKILL another is
//! elected within 2 s, nothing committed is lost, and registration resumes. And one
//! replica grows to three at run time (AddReplica, ChangeVoters).

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use baton_model::Epoch;
use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{
    AddReplicaRequest, ChangeVotersRequest, CreateApiKeyRequest, GetStatusRequest, WatchShardMapRequest,
    shard_map_event,
};
use baton_shardmap::MapSnapshot;
use baton_testkit::{Proc, free_port, wait_port};
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

/// The replica's map once it has applied `epoch`: a follower applies what the leader
/// commits on its next round, so a write acknowledged by the leader may not be there yet.
async fn snapshot_at(client: &ShardManagerClient<Channel>, epoch: u64) -> MapSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let map = snapshot(client).await;
        if map.epoch >= Epoch(epoch) || Instant::now() > deadline {
            return map;
        }
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
    sigkill_the_leader(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_of_five_replicas() {
    sigkill_the_leader(5).await;
}

async fn sigkill_the_leader(replicas: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let members: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let mut procs = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let child = baton_testkit::daemon("baton-shard-manager")
            .args(["--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join(format!("node-{id}")))
            .args(["--initial-members", &members.join(",")])
            .env("BATON_LOG__FILTER", "warn")
            // The cells registered here never heartbeat: no failover may change the epoch.
            .env("BATON_CELLS__HEARTBEAT_TIMEOUT", "1h")
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
    follower.clone().put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    // With a request ID, as routers and cells send writes.
    let register_c1 = || {
        let mut request = tonic::Request::new(cell("c1"));
        request.metadata_mut().insert(baton_model::headers::REQUEST_ID, "register-c1".parse().unwrap());
        request
    };
    let committed = follower.clone().register_cell(register_c1()).await.unwrap().into_inner().epoch;
    assert_eq!(committed, 2);

    procs.get_mut(&leader).unwrap().sigkill();
    let killed = Instant::now();
    clients.remove(&leader);
    let new_leader = agreed_leader(&clients, leader, Duration::from_secs(2)).await;
    eprintln!("{replicas} replicas: leader {leader} SIGKILLed; {new_leader} leads after {:?}", killed.elapsed());

    for client in clients.values() {
        let map = snapshot_at(client, committed).await;
        assert_eq!(map.epoch, Epoch(committed), "nothing committed is lost");
        assert_eq!(map.cells.iter().map(|c| c.id.0.as_str()).collect::<Vec<_>>(), ["c1"]);
    }
    // The write sent again with its ID (as after an answer lost with the leader) to a
    // survivor under the new leader: answered as the first time, applied once.
    let survivor = clients.values().next().unwrap().clone();
    let again = survivor.clone().register_cell(register_c1()).await.unwrap().into_inner().epoch;
    assert_eq!(again, committed, "the new leader remembers the write");
    assert_eq!(snapshot(&survivor).await.epoch, Epoch(committed), "and does not apply it again");

    // Registration resumes, through either survivor.
    let epoch = survivor.clone().register_cell(cell("c2")).await.unwrap().into_inner().epoch;
    let map = snapshot_at(&survivor, epoch).await;
    assert_eq!(map.cells.iter().map(|c| c.id.0.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
}

fn replica(dir: &std::path::Path, id: u64, port: u16, join: bool) -> Proc {
    let mut command = baton_testkit::daemon("baton-shard-manager");
    command
        .args(["--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .env("BATON_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if join {
        command.arg("--join");
    }
    Proc(command.spawn().unwrap())
}

/// One replica grows to three at run time: two started with `--join` are added as
/// learners, then made voters; the cluster then survives losing the first replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_grows_to_three_with_add_replica_and_change_voters() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut procs: BTreeMap<u64, Proc> = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        procs.insert(id, replica(dir.path(), id, *port, id != 1));
    }
    let mut clients = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        wait_port(*port).await;
        clients.insert(i as u64 + 1, ShardManagerClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap());
    }
    let first = BTreeMap::from([(1, clients[&1].clone())]);
    assert_eq!(agreed_leader(&first, 0, Duration::from_secs(10)).await, 1);
    let mut c1 = clients[&1].clone();
    c1.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();

    // Bad input changes nothing.
    for bad in [
        AddReplicaRequest { id: 0, address: format!("127.0.0.1:{}", ports[1]) },
        AddReplicaRequest { id: 2, address: String::new() },
        AddReplicaRequest { id: 2, address: format!("http://127.0.0.1:{}", ports[1]) },
    ] {
        assert_eq!(c1.add_replica(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
    for bad in [vec![], vec![1, 9], vec![0]] {
        let err = c1.change_voters(ChangeVotersRequest { voters: bad }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }

    // Add the two as learners (through a replica: here the leader), then make them voters.
    for id in [2u64, 3] {
        let address = format!("127.0.0.1:{}", ports[id as usize - 1]);
        let status = c1.add_replica(AddReplicaRequest { id, address }).await.unwrap().into_inner();
        assert!(status.learners.iter().any(|l| l.starts_with(&format!("{id}="))), "{status:?}");
    }
    let status = c1.change_voters(ChangeVotersRequest { voters: vec![1, 2, 3] }).await.unwrap().into_inner();
    assert_eq!(status.voters.len(), 3, "{status:?}");
    assert!(status.learners.is_empty());
    assert_eq!(agreed_leader(&clients, 0, Duration::from_secs(5)).await, 1);

    // The grown cluster survives losing the replica it started from, with its state.
    procs.get_mut(&1).unwrap().sigkill();
    clients.remove(&1);
    let leader = agreed_leader(&clients, 1, Duration::from_secs(10)).await;
    let mut survivor = clients[&leader].clone();
    let key = survivor.create_api_key(CreateApiKeyRequest { tenant: "dev".into() }).await.unwrap().into_inner();
    assert!(key.key.starts_with("bk_"), "tenant dev survived: {key:?}");
}
