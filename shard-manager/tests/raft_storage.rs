//! openraft's storage conformance suite against the redb log store and state machine,
//! plus a restart: what was appended and snapshotted is there after reopening the file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_model::Epoch;
use baton_shard_manager::raft::{self, LogStore, StateMachine, TypeConfig};
use baton_shard_manager::state::{Command, Outcome, Rejection, Tenant};
use baton_shardmap::Change;
use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, CommittedLeaderId, LogId};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), raft::StorageError> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (log, sm) = raft::open(&dir.path().join("raft.redb"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::error(e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_redb_store_passes_openraft_s_conformance_suite() {
    Suite::test_all(Builder).unwrap();
}

/// A network for a one-node cluster: it never has a peer to reach.
struct Alone;

fn unreachable<E: std::error::Error>() -> openraft::error::RPCError<u64, BasicNode, E> {
    openraft::error::RPCError::Unreachable(openraft::error::Unreachable::new(&std::io::Error::other("no peers")))
}

impl RaftNetworkFactory<TypeConfig> for Alone {
    type Network = Alone;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> Self::Network {
        Alone
    }
}

impl RaftNetwork<TypeConfig> for Alone {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

async fn start(path: &std::path::Path) -> (openraft::Raft<TypeConfig>, StateMachine) {
    // The previous node's tasks may still be letting go of the file after its shutdown
    // (in a real restart the process is gone).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (log, sm) = loop {
        match raft::open(path) {
            Ok(stores) => break stores,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening {}: {e}", path.display()),
        }
    };
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let node = openraft::Raft::new(1, config, Alone, log, sm.clone()).await.unwrap();
    (node, sm)
}

/// A committed command survives a restart: with a snapshot taken, and for entries after
/// it, replayed from the durable log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let tenant = |name: &str| {
        Command::PutTenant(Tenant {
            name: name.into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        })
    };
    {
        let (node, _) = start(&path).await;
        node.initialize(BTreeMap::from([(1, BasicNode::default())])).await.unwrap();
        node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader").await.unwrap();
        node.client_write(tenant("before-snapshot")).await.unwrap();
        node.trigger().snapshot().await.unwrap();
        node.wait(Some(Duration::from_secs(5)))
            .snapshot(LogId::new(CommittedLeaderId::new(1, 1), 2), "snapshot")
            .await
            .unwrap();
        let written = node.client_write(tenant("after-snapshot")).await.unwrap();
        assert_eq!(written.data, Outcome::Applied { epoch: Epoch(2), generation: None, created: false });
        node.shutdown().await.unwrap();
    }
    let (node, sm) = start(&path).await;
    node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader again").await.unwrap();
    node.wait(Some(Duration::from_secs(5))).applied_index_at_least(Some(3), "replayed").await.unwrap();
    let state = sm.state().await;
    assert_eq!(state.tenants.keys().collect::<Vec<_>>(), ["after-snapshot", "before-snapshot"]);
    assert_eq!(state.epoch, Epoch(2));
    node.shutdown().await.unwrap();
}

/// Concurrent writes through the proposer share raft entries, and each still gets its own
/// outcome: every command applied once with its own epoch, whose delta is that command's
/// (a rejected one in a batch does not hold the others back), all durable across a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_batched_and_each_answered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    const WRITES: usize = 300;
    let applied = (WRITES - WRITES / 10) as u64;
    {
        let (node, sm) = start(&path).await;
        node.initialize(BTreeMap::from([(1, BasicNode::default())])).await.unwrap();
        node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader").await.unwrap();
        let proposer = raft::Proposer::new(node.clone());
        let tenant =
            Tenant { name: "t".into(), default_region: "local".into(), max_functions: 0, limits: Default::default() };
        proposer.write(Command::PutTenant(tenant)).await.unwrap();
        let (_, mut feed) = sm.follow().await;
        let before = node.metrics().borrow().last_log_index.unwrap();
        let writes: Vec<_> = (0..WRITES)
            .map(|i| {
                let proposer = proposer.clone();
                // Every tenth write is a key for a tenant that does not exist.
                let tenant = if i % 10 == 9 { "nobody" } else { "t" };
                let command = Command::PutApiKey { key_hash: format!("h{i}"), tenant: tenant.into() };
                tokio::spawn(async move { proposer.write(command).await.unwrap() })
            })
            .collect();
        let mut answered = BTreeMap::new();
        for (i, write) in writes.into_iter().enumerate() {
            match write.await.unwrap() {
                Outcome::Applied { epoch, .. } => assert!(answered.insert(epoch.0, format!("h{i}")).is_none()),
                Outcome::Rejected(reason) => {
                    assert!(i % 10 == 9 && reason.to_string().contains("nobody"), "{i}: {reason}")
                }
                Outcome::Batch(_) => panic!("{i}: a batch outcome for one command"),
            }
        }
        assert_eq!(answered.keys().copied().collect::<Vec<_>>(), (2..=applied + 1).collect::<Vec<_>>(), "no gap");
        for _ in 0..applied {
            let delta = feed.recv().await.unwrap();
            let [Change::PutApiKey { key_hash, .. }] = &delta.changes[..] else { panic!("{delta:?}") };
            assert_eq!(&answered[&delta.epoch.0], key_hash, "epoch {} answered to another write", delta.epoch);
        }
        let entries = node.metrics().borrow().last_log_index.unwrap() - before;
        assert!(entries < WRITES as u64 / 2, "{WRITES} concurrent writes took {entries} raft entries");
        node.shutdown().await.unwrap();
    }
    let (node, sm) = start(&path).await;
    node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader again").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sm.state().await.epoch < Epoch(applied + 1) {
        assert!(std::time::Instant::now() < deadline, "the batches were not replayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sm.state().await.api_keys.len() as u64, applied);
    node.shutdown().await.unwrap();
}

/// A tenant's function count is derived state, rebuilt when a snapshot is read at start:
/// after a restart from a snapshot the tenant is still at its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_limits_hold_after_a_restart_from_a_snapshot() {
    use baton_shard_manager::state::FunctionRecord;
    use baton_shardmap::{Cell, CellId, CellState};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let put = |name: &str| Command::PutFunction {
        record: FunctionRecord {
            tenant: "dev".into(),
            name: name.into(),
            home_region: "local".into(),
            spec_json: "{}".into(),
            usage: Default::default(),
        },
        cell: CellId("c1".into()),
    };
    {
        let (node, _) = start(&path).await;
        node.initialize(BTreeMap::from([(1, BasicNode::default())])).await.unwrap();
        node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader").await.unwrap();
        let cell = Cell {
            id: CellId("c1".into()),
            region: "local".into(),
            control: String::new(),
            data_planes: vec![],
            weight: 1,
            state: CellState::Active,
        };
        let mut last = None;
        for command in [
            Command::PutTenant(Tenant {
                name: "dev".into(),
                default_region: "local".into(),
                max_functions: 1,
                limits: Default::default(),
            }),
            Command::PutCell(cell),
            put("a"),
        ] {
            let written = node.client_write(command).await.unwrap();
            assert!(matches!(written.data, Outcome::Applied { .. }));
            last = Some(written.log_id);
        }
        // The metrics may trail the write's answer: wait for the snapshot of the last write
        // itself, not of whatever the metrics showed as applied.
        node.trigger().snapshot().await.unwrap();
        node.wait(Some(Duration::from_secs(5))).snapshot(last.unwrap(), "snapshot").await.unwrap();
        node.shutdown().await.unwrap();
    }
    let (node, _) = start(&path).await;
    node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader again").await.unwrap();
    let refused = node.client_write(put("b")).await.unwrap().data;
    assert_eq!(refused, Outcome::Rejected(Rejection::OverLimit { tenant: "dev".into(), would_have: 2, limit: 1 }));
    node.shutdown().await.unwrap();
}
