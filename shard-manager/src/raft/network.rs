//! The raft network: openraft's RPCs over gRPC, one cached channel per peer (created on
//! first use, reconnecting by itself), and the service that hands incoming RPCs to the
//! local raft node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::raft::RaftMessage;
use baton_proto::raft::raft_transport_client::RaftTransportClient;
use baton_proto::raft::raft_transport_server::RaftTransport;
use baton_service::tls::Tls;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::{Proposer, TypeConfig};
use crate::state::{Command, Outcome};

/// Creates clients to peers (other replicas, cells' control planes), sharing one channel
/// per peer address, over mutual TLS where the replica has credentials.
#[derive(Clone)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Tls,
}

impl Network {
    /// Clients that connect with `tls`.
    pub fn new(tls: Tls) -> Self {
        Self { channels: Arc::default(), tls }
    }

    /// The cached channel to `addr` (created on first use; it reconnects by itself).
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().expect("not poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let channel = self.tls.channel(&endpoint);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer { target, channel: self.channel(&node.addr) }
    }
}

/// A client to one peer.
pub struct Peer {
    target: u64,
    channel: Result<Channel, String>,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(&self, method: Method, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable =
            |e: &dyn std::fmt::Display| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())));
        let channel = self.channel.clone().map_err(|e| unreachable(&e))?;
        let json = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftMessage { json });
        request.set_timeout(option.hard_ttl());
        let mut client = transport_client(channel);
        let response = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| unreachable(&status))?;
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&response.into_inner().json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A client to a peer's raft transport, taking messages as large as its server does.
fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader is known (an election is under way): try again shortly.
    #[error("no leader is known yet; try again")]
    NoLeader,
    /// The leader could not be reached, or refused.
    #[error("forwarding to the leader at {leader}: {message}")]
    Forward {
        /// The leader's address.
        leader: String,
        /// What went wrong.
        message: String,
    },
    /// The local raft failed.
    #[error("raft: {0}")]
    Raft(String),
}

impl Network {
    /// Commits `command` through `proposer`: on this replica if it leads, otherwise on the
    /// leader it knows, over the transport (one hop).
    pub async fn write(&self, proposer: &Proposer, command: Command) -> Result<Outcome, WriteError> {
        let started = std::time::Instant::now();
        let result = self.write_once(proposer, command).await;
        crate::metrics::write(&result, started.elapsed());
        result
    }

    async fn write_once(&self, proposer: &Proposer, command: Command) -> Result<Outcome, WriteError> {
        let forward = match proposer.write(command.clone()).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) => match e.forward_to_leader::<BasicNode>() {
                Some(forward) => forward.clone(),
                None => return Err(WriteError::Raft(e.to_string())),
            },
        };
        let Some(leader) = forward.leader_node else { return Err(WriteError::NoLeader) };
        let fail = |message: String| WriteError::Forward { leader: leader.addr.clone(), message };
        let channel = self.channel(&leader.addr).map_err(fail)?;
        let json = serde_json::to_vec(&command).map_err(|e| fail(e.to_string()))?;
        let response = transport_client(channel)
            .propose(RaftMessage { json })
            .await
            .map_err(|status| fail(status.message().to_string()))?;
        serde_json::from_slice(&response.into_inner().json).map_err(|e| fail(e.to_string()))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

/// The gRPC service a replica serves to its peers.
pub struct TransportService {
    raft: Raft<TypeConfig>,
    /// The replica's proposer, for writes forwarded by followers.
    proposer: Proposer,
}

impl TransportService {
    /// Serves RPCs to `raft`; forwarded writes go through `proposer` (the replica's one).
    pub fn new(raft: Raft<TypeConfig>, proposer: Proposer) -> Self {
        Self { raft, proposer }
    }
}

fn decode<T: DeserializeOwned>(request: tonic::Request<RaftMessage>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|e| tonic::Status::invalid_argument(format!("json: not a raft message: {e}")))
}

fn encode<T: Serialize>(result: T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    let json = serde_json::to_vec(&result).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftMessage { json }))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        encode(self.raft.append_entries(decode(request)?).await)
    }

    async fn vote(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        encode(self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        encode(self.raft.install_snapshot(decode(request)?).await)
    }

    async fn propose(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let command: Command = decode(request)?;
        match self.proposer.write(command).await {
            Ok(outcome) => encode(outcome),
            Err(e) if e.forward_to_leader::<BasicNode>().is_some() => {
                Err(tonic::Status::failed_precondition(format!("not the leader: {e}")))
            }
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        }
    }
}
