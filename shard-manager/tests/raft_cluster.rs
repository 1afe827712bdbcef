//! Three replicas over the real gRPC raft transport on free ports: a write reaches every
//! replica; when the leader stops, another is elected within 2 s, nothing committed is
//! lost, and writes go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_model::Epoch;
use baton_proto::raft::raft_transport_server::RaftTransportServer;
use baton_shard_manager::raft::network::{Network, TransportService};
use baton_shard_manager::raft::{self, StateMachine, TypeConfig};
use baton_shard_manager::state::{Command, Outcome, Tenant};
use openraft::{BasicNode, Raft};

struct Replica {
    id: u64,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn replica(id: u64, listener: tokio::net::TcpListener) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let (log, sm) = raft::open(&dir.path().join("raft.redb")).unwrap();
    // openraft's defaults, written out: heartbeats every 50 ms, elections after 150-300 ms.
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        Network::new(baton_service::tls::Tls::Plaintext),
        log,
        sm.clone(),
    )
    .await
    .unwrap();
    let service = RaftTransportServer::new(TransportService::new(raft.clone(), raft::Proposer::new(raft.clone())));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    Replica { id, raft, sm, server, _dir: dir }
}

fn tenant(name: &str) -> Command {
    Command::PutTenant(Tenant {
        name: name.into(),
        default_region: "local".into(),
        max_functions: 0,
        limits: Default::default(),
    })
}

async fn leader_of(replicas: &[&Replica], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let leaders: BTreeSet<Option<u64>> =
            replicas.iter().map(|r| r.raft.metrics().borrow().current_leader).collect();
        if let [Some(leader)] = leaders.iter().copied().collect::<Vec<_>>()[..]
            && replicas.iter().any(|r| r.id == leader)
        {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader agreed on within {within:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn tenants(sm: &StateMachine) -> Vec<String> {
    sm.state().await.tenants.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_and_survive_losing_the_leader() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: BTreeMap<u64, BasicNode> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, BasicNode::new(l.local_addr().unwrap().to_string())))
        .collect();
    let mut replicas = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        replicas.push(replica(i as u64 + 1, listener).await);
    }
    replicas[0].raft.initialize(members).await.unwrap();
    // A follower of replica 2's shard map, from before the first write.
    let (snapshot, mut deltas) = replicas[1].sm.follow().await;
    let mut map = baton_shardmap::ShardMap::from(snapshot);
    let all: Vec<&Replica> = replicas.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(10)).await;
    let leading = replicas.iter().find(|r| r.id == leader).unwrap();
    let written = leading.raft.client_write(tenant("acme")).await.unwrap();
    assert_eq!(written.data, Outcome::Applied { epoch: Epoch(1), generation: None, created: false });
    // Committed means on a majority; give the third replica a moment too.
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in &replicas {
        while tenants(&r.sm).await != ["acme"] {
            assert!(Instant::now() < deadline, "replica {} never applied the write", r.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let delta = tokio::time::timeout(Duration::from_secs(5), deltas.recv()).await.unwrap().unwrap();
    map.apply(delta).unwrap();
    assert_eq!(map.epoch(), Epoch(1), "the follower moved to the write's epoch");

    // A write sent to a follower reaches the leader and commits everywhere.
    let follower = replicas.iter().find(|r| r.id != leader).unwrap();
    let outcome = Network::new(baton_service::tls::Tls::Plaintext)
        .write(&raft::Proposer::new(follower.raft.clone()), tenant("initech"))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Applied { epoch: Epoch(2), generation: None, created: false });
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in &replicas {
        while tenants(&r.sm).await != ["acme", "initech"] {
            assert!(Instant::now() < deadline, "replica {} never applied the forwarded write", r.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The leader goes away: its server stops answering and its raft stops.
    let index = replicas.iter().position(|r| r.id == leader).unwrap();
    let gone = replicas.remove(index);
    gone.server.abort();
    gone.raft.shutdown().await.unwrap();
    let stopped = Instant::now();
    let rest: Vec<&Replica> = replicas.iter().collect();
    let new_leader = leader_of(&rest, Duration::from_secs(2)).await;
    let election = stopped.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} elected {election:?} after leader {leader} stopped");
    let leading = replicas.iter().find(|r| r.id == new_leader).unwrap();
    assert_eq!(tenants(&leading.sm).await, ["acme", "initech"], "nothing committed is lost");
    let written = leading.raft.client_write(tenant("globex")).await.unwrap();
    assert_eq!(written.data, Outcome::Applied { epoch: Epoch(3), generation: None, created: false });
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(5);
        while tenants(&r.sm).await != ["acme", "globex", "initech"] {
            assert!(Instant::now() < deadline, "replica {} never applied the second write", r.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for r in replicas {
        r.server.abort();
        r.raft.shutdown().await.unwrap();
    }
}
