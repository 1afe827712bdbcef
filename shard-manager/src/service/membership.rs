//! Raft membership at run time: add a replica as a learner, then change the voters. Any
//! replica takes these calls and passes them to the leader, the only one that can change
//! membership. A replica to add is started with `node.join`, so it forms no cluster of its
//! own.

use std::collections::BTreeSet;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{AddReplicaRequest, ChangeVotersRequest, StatusResponse};
use openraft::BasicNode;
use tonic::Status;
use tonic::transport::Channel;

use super::Manager;

impl Manager {
    /// A client of the leader when another replica leads; `None` when this one does.
    pub(super) fn leader_client(&self) -> Result<Option<ShardManagerClient<Channel>>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return Err(Status::unavailable("no leader yet; retry"));
        };
        if leader == metrics.id {
            return Ok(None);
        }
        let Some(node) = metrics.membership_config.nodes().find(|(n, _)| **n == leader).map(|(_, n)| n.clone()) else {
            return Err(Status::unavailable(format!("leader {leader} has no known address; retry")));
        };
        let channel = self.network.channel(&node.addr).map_err(Status::unavailable)?;
        Ok(Some(ShardManagerClient::new(channel).max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)))
    }

    /// This replica's view of the cluster.
    pub(super) async fn status(&self) -> StatusResponse {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = &metrics.membership_config;
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let (mut voter_list, mut learners) = (Vec::new(), Vec::new());
        for (id, node) in membership.nodes() {
            let entry = format!("{id}={}", node.addr);
            if voters.contains(id) { voter_list.push(entry) } else { learners.push(entry) }
        }
        StatusResponse {
            node_id: metrics.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            epoch: self.sm.read(|state| state.epoch).await.0,
            voters: voter_list,
            learners,
        }
    }

    pub(super) async fn add_replica_inner(&self, r: AddReplicaRequest) -> Result<StatusResponse, Status> {
        if r.id == 0 {
            return Err(Status::invalid_argument("id: must be at least 1"));
        }
        if r.address.trim().is_empty() || r.address.contains("://") {
            return Err(Status::invalid_argument(format!("address: {:?} must be HOST:PORT", r.address)));
        }
        if let Some(mut leader) = self.leader_client()? {
            return leader.add_replica(r).await.map(|s| s.into_inner());
        }
        let node = BasicNode::new(r.address.trim());
        self.raft.add_learner(r.id, node, true).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(id = r.id, address = r.address, "replica added as a learner");
        Ok(self.status().await)
    }

    pub(super) async fn change_voters_inner(&self, r: ChangeVotersRequest) -> Result<StatusResponse, Status> {
        let voters: BTreeSet<u64> = r.voters.iter().copied().collect();
        if voters.is_empty() || voters.contains(&0) {
            return Err(Status::invalid_argument("voters: one or more replica IDs, each at least 1"));
        }
        let known: BTreeSet<u64> = self.raft.metrics().borrow().membership_config.nodes().map(|(id, _)| *id).collect();
        if let Some(unknown) = voters.iter().find(|v| !known.contains(v)) {
            return Err(Status::invalid_argument(format!(
                "voters: replica {unknown} is not in the cluster; add it first"
            )));
        }
        if let Some(mut leader) = self.leader_client()? {
            return leader.change_voters(r).await.map(|s| s.into_inner());
        }
        self.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(?voters, "voters changed");
        Ok(self.status().await)
    }
}
