//! openraft's storage conformance suite against the redb log store and state machine,
//! plus a restart: what was appended and snapshotted is there after reopening the file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_shard_manager::raft::{self, LogStore, StateMachine, TypeConfig};
use baton_shard_manager::state::{Command, Outcome, Tenant};
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
    let tenant =
        |name: &str| Command::PutTenant(Tenant { name: name.into(), default_region: "local".into(), max_functions: 0 });
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
        assert_eq!(written.data, Outcome::Applied { epoch: 2, generation: None });
        node.shutdown().await.unwrap();
    }
    let (node, sm) = start(&path).await;
    node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader again").await.unwrap();
    node.wait(Some(Duration::from_secs(5))).applied_index_at_least(Some(3), "replayed").await.unwrap();
    let state = sm.state().await;
    assert_eq!(state.tenants.keys().collect::<Vec<_>>(), ["after-snapshot", "before-snapshot"]);
    assert_eq!(state.epoch, 2);
    node.shutdown().await.unwrap();
}
