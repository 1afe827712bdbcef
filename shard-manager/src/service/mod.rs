//! The ShardManager gRPC service and the leader's failure detector. Reads are served from
//! this replica's state machine (once it has applied the epoch the caller asks for, if
//! any); writes go through the replica's batching proposer into raft (forwarded to the
//! leader when this replica does not lead). Heartbeats are kept in memory only: the
//! leader's record is the one that counts, and a new leader starts every cell's clock
//! afresh.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_model::{Epoch, Generation};
use baton_proto::raft::raft_transport_server::RaftTransportServer;
use baton_proto::shard::shard_manager_server::{ShardManager, ShardManagerServer};
use baton_proto::shard::{
    Ack, AddReplicaRequest, CellHeartbeatRequest, CellHeartbeatResponse, CellInfo, ChangeVotersRequest,
    CreateApiKeyRequest, CreateApiKeyResponse, DeleteTenantRequest, FunctionInfo, FunctionRef, GetStatusRequest,
    ListApiKeysRequest, ListApiKeysResponse, ListCellsRequest, ListCellsResponse, ListFunctionsRequest,
    ListFunctionsResponse, ListRegistriesRequest, ListRegistriesResponse, ListTenantsRequest, ListTenantsResponse,
    MoveFunctionRequest, PinFunctionRequest, PutFunctionRequest, PutFunctionResponse, PutFunctionsRequest,
    PutFunctionsResponse, PutRegistryCredentialsRequest, PutTenantRequest, RegisterCellRequest,
    RegistryCredentialsResponse, RegistryRef, RevokeApiKeyRequest, SetCellStateRequest, ShardMapEvent, StatusResponse,
    WatchShardMapRequest, shard_map_event,
};
use baton_shardmap::{Cell, CellId, CellState};
use futures::Stream;
use openraft::Raft;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::admission::Admission;
use crate::failover::{CellHealth, failover, relieve};
use crate::loads::LoadTracker;
use crate::raft::network::{Network, TransportService, WriteError};
use crate::raft::{Proposer, StateMachine, TypeConfig};
use crate::state::{Command, Outcome, Rejection, RejectionClass};

mod access;
mod catalog;
mod membership;
mod rebalance;
mod registries;

pub use rebalance::RebalanceSettings;

/// A ring over the cells, and the cells it was built from.
type PlacementRing = (Vec<Cell>, baton_shardmap::ShardMap);

/// One replica's service.
#[derive(Clone)]
pub struct Manager {
    raft: Raft<TypeConfig>,
    /// This replica's writes (and, through the transport, forwarded ones), batched.
    proposer: Proposer,
    sm: StateMachine,
    network: Network,
    /// When each cell was last heard from, by this replica.
    heard: Arc<Mutex<BTreeMap<CellId, Instant>>>,
    /// Each function's load as its cell reported it: the last report and a decaying peak.
    loads: Arc<Mutex<LoadTracker>>,
    /// The origin of the clock the load tracker and the rebalancer's cooldowns read.
    origin: Instant,
    /// What each cell last said it can serve (its heartbeats), by cell.
    health: Arc<Mutex<BTreeMap<CellId, CellHealth>>>,
    /// The placement ring and the cells it was built from.
    ring: Arc<Mutex<Option<PlacementRing>>>,
    /// The same for functions of container images: cells whose workers run none left off.
    image_ring: Arc<Mutex<Option<PlacementRing>>>,
    /// What tenants may register.
    admission: Arc<Admission>,
    /// The operator's key for tenants' registry credentials, if configured.
    sealer: Option<Arc<crate::secrets::Sealer>>,
}

/// A replica's gRPC services, the raft transport and the ShardManager API, taking and
/// sending messages up to [`baton_proto::MAX_MESSAGE_BYTES`] (maps and catalogs of a large
/// federation, batches of specs, raft snapshot chunks).
pub fn grpc_services(
    raft: Raft<TypeConfig>,
    manager: Manager,
) -> (RaftTransportServer<TransportService>, ShardManagerServer<Manager>) {
    let max = baton_proto::MAX_MESSAGE_BYTES;
    let transport = RaftTransportServer::new(TransportService::new(raft, manager.proposer()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let api = ShardManagerServer::new(manager).max_decoding_message_size(max).max_encoding_message_size(max);
    (transport, api)
}

/// How long a function's peak load takes to halve unless configured (`cells.load_half_life`).
pub const DEFAULT_LOAD_HALF_LIFE: Duration = Duration::from_secs(60);

/// Longest a read waits for this replica to apply the epoch its caller asks for.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.trim().is_empty() { Err(Status::invalid_argument(format!("{field}: is required"))) } else { Ok(value) }
}

/// The caller's request ID ([`baton_model::headers::REQUEST_ID`]), if it sent one.
fn request_id<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get(baton_model::headers::REQUEST_ID) else { return Ok(None) };
    let id = value.to_str().ok().filter(|id| {
        (1..=baton_model::headers::MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
    });
    match id {
        Some(id) => Ok(Some(id.to_string())),
        None => Err(Status::invalid_argument(format!(
            "{}: must be 1 to {} printable ASCII characters without spaces",
            baton_model::headers::REQUEST_ID,
            baton_model::headers::MAX_REQUEST_ID_LEN
        ))),
    }
}

/// What a committed write did.
struct Written {
    epoch: Epoch,
    generation: Option<Generation>,
    created: bool,
}

/// The gRPC answer to a refusal of the state: the one place its classes meet gRPC codes.
pub fn rejected(rejection: &Rejection) -> Status {
    let code = match rejection.class() {
        RejectionClass::NotFound => tonic::Code::NotFound,
        RejectionClass::AlreadyExists => tonic::Code::AlreadyExists,
        RejectionClass::OverLimit => tonic::Code::ResourceExhausted,
        RejectionClass::FailedPrecondition => tonic::Code::FailedPrecondition,
        RejectionClass::Invalid => tonic::Code::InvalidArgument,
        RejectionClass::Forbidden => tonic::Code::PermissionDenied,
    };
    Status::new(code, rejection.to_string())
}

fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::NoLeader | WriteError::Forward { .. } => Status::unavailable(e.to_string()),
        WriteError::Raft(_) => Status::internal(e.to_string()),
    }
}

impl Manager {
    /// A service over this replica's raft node and state machine.
    pub fn new(raft: Raft<TypeConfig>, sm: StateMachine, network: Network) -> Self {
        Self {
            proposer: Proposer::new(raft.clone()),
            raft,
            sm,
            network,
            heard: Arc::default(),
            loads: Arc::new(Mutex::new(LoadTracker::new(DEFAULT_LOAD_HALF_LIFE))),
            origin: Instant::now(),
            health: Arc::default(),
            ring: Arc::default(),
            image_ring: Arc::default(),
            admission: Arc::default(),
            sealer: None,
        }
    }

    /// Stores tenants' registry credentials sealed with `sealer` (none: refuses them).
    pub fn with_sealer(mut self, sealer: Option<crate::secrets::Sealer>) -> Self {
        self.sealer = sealer.map(Arc::new);
        self
    }

    /// The replica's proposer: the raft transport hands it the writes followers forward,
    /// so one queue orders all of this replica's writes.
    pub fn proposer(&self) -> Proposer {
        self.proposer.clone()
    }

    /// Admits only functions within `admission` (the default: `[functions]`'s defaults).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = Arc::new(admission);
        self
    }

    /// The same service, whose rebalancer sees each function's load as a peak that halves
    /// every `half_life` (see [`crate::loads`]).
    pub fn with_load_half_life(mut self, half_life: Duration) -> Self {
        self.loads = Arc::new(Mutex::new(LoadTracker::new(half_life)));
        self
    }

    /// The cells that said in their last heartbeat that no worker of theirs runs container
    /// images.
    fn imageless_cells(&self) -> std::collections::BTreeSet<CellId> {
        let health = self.health.lock().expect("not poisoned");
        health.iter().filter(|(_, h)| h.image_workers == 0).map(|(id, _)| id.clone()).collect()
    }

    /// The cells that said in their last heartbeat that they cannot serve (no worker):
    /// placement and rebalancing give them nothing until they can.
    fn unable_cells(&self) -> std::collections::BTreeSet<CellId> {
        self.health
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, h)| !h.can_serve())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Milliseconds on this replica's clock (the load tracker's and the cooldowns').
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Commits `command`; with the caller's `request` ID, at most once (see [`Command::Once`]).
    async fn write(&self, request: Option<&str>, command: Command) -> Result<Written, Status> {
        let command = match request {
            Some(id) => Command::Once { request: id.to_string(), command: Box::new(command) },
            None => command,
        };
        match self.network.write(&self.proposer, command).await.map_err(write_status)? {
            Outcome::Applied { epoch, generation, created } => Ok(Written { epoch, generation, created }),
            Outcome::Rejected(rejection) => Err(rejected(&rejection)),
            // Only a batch command is answered with a batch; the service sends none.
            Outcome::Batch(_) => Err(Status::internal("a single write was answered as a batch")),
        }
    }

    /// What the write `request` names did, if it was applied already: a retry whose first
    /// attempt worked is answered from it, before the checks it could fail now (a delete
    /// of what it deleted, a pin of a function deleted since). `write` is the write the
    /// retry would make (only its subject counts); an ID that named another write is
    /// refused.
    async fn remembered(&self, request: Option<&str>, write: &Command) -> Result<Option<Written>, Status> {
        let Some(request) = request else { return Ok(None) };
        let Some(first) = self.sm.read(|state| state.request(request).cloned()).await else { return Ok(None) };
        match first.outcome {
            _ if first.subject != write.subject() => Err(rejected(&Rejection::RequestIdReused(request.to_string()))),
            Outcome::Applied { epoch, generation, created } => Ok(Some(Written { epoch, generation, created })),
            // Only applied writes are remembered.
            _ => Ok(None),
        }
    }

    /// Waits until this replica has applied `min_epoch` (0: no wait); UNAVAILABLE when it
    /// has not within [`CATCH_UP_WAIT`], so the caller asks another replica.
    async fn caught_up(&self, min_epoch: u64) -> Result<(), Status> {
        if min_epoch == 0 || self.sm.wait_for_epoch(Epoch(min_epoch), CATCH_UP_WAIT).await {
            return Ok(());
        }
        let epoch = self.sm.read(|state| state.epoch).await;
        Err(Status::unavailable(format!(
            "this replica has applied epoch {epoch}, behind the requested {min_epoch}; ask another"
        )))
    }

    fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.current_leader == Some(metrics.id)
    }

    /// The failure detector: while this replica leads, every `interval` it fails over the
    /// cells not heard from for longer than `timeout` (see [`failover`]). Runs until the
    /// raft node shuts down.
    pub async fn detect_failures(self, timeout: Duration, interval: Duration) {
        let origin = Instant::now();
        let ms = |t: Instant| t.duration_since(origin).as_millis() as u64;
        let mut leading = false;
        loop {
            tokio::time::sleep(interval).await;
            if self.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            let leader = self.is_leader();
            if leader && !leading {
                // A new leader has heard from nobody yet: start every known cell's clock.
                let now = Instant::now();
                let cells: Vec<CellId> = self.sm.read(|state| state.cells.keys().cloned().collect()).await;
                let mut heard = self.heard.lock().expect("not poisoned");
                // Every clock, not only unknown cells': what this replica heard in an
                // earlier term is stale (heartbeats went to the leader of the meantime).
                for id in cells {
                    heard.insert(id, now);
                }
            }
            leading = leader;
            if !leader {
                continue;
            }
            let last_seen: BTreeMap<CellId, u64> =
                self.heard.lock().expect("not poisoned").iter().map(|(id, t)| (id.clone(), ms(*t))).collect();
            let now = ms(Instant::now());
            let health = self.health.lock().expect("not poisoned").clone();
            let (commands, relief) = self
                .sm
                .read(|state| {
                    let commands = failover(state, &last_seen, now, timeout.as_millis() as u64);
                    if commands.is_empty() {
                        // Then the functions live cells cannot serve (a cell whose only
                        // worker died, or with no room): they move like a dead cell's.
                        (relieve(state, &health), true)
                    } else {
                        (commands, false)
                    }
                })
                .await;
            for command in commands {
                let assigned = match &command {
                    Command::Assign { function, cell } => Some((function.clone(), cell.clone())),
                    _ => None,
                };
                let marks_down = matches!(command, Command::SetCellState { state: CellState::Down, .. });
                match self.network.write(&self.proposer, command).await {
                    Err(e) => {
                        tracing::warn!(error = %e, "failover write failed; retrying next round");
                        break;
                    }
                    Ok(Outcome::Applied { .. }) if marks_down => crate::metrics::cell_failover(),
                    Ok(Outcome::Applied { .. }) if relief => {
                        if let Some((function, cell)) = &assigned {
                            tracing::info!(%function, to = %cell, "moved a function its cell could not serve");
                        }
                        crate::metrics::unservable_reassignment()
                    }
                    Ok(Outcome::Applied { .. }) if assigned.is_some() => crate::metrics::failover_reassignment(),
                    Ok(_) => {}
                }
                if let Some((function, cell)) = assigned {
                    // The new owner also fetches the spec when it sees the assignment; the
                    // push saves it that round trip.
                    tokio::spawn(self.clone().push_spec(function, cell));
                }
            }
        }
    }
}

impl Manager {
    /// Gives `cell` the spec of `function` (best effort: the cell reconciles by itself).
    async fn push_spec(self, function: String, cell: CellId) {
        let found = self
            .sm
            .read(|state| {
                let record = state.functions.get(&function)?;
                let control = &state.cells.get(&cell)?.control;
                Some((control.clone(), record.clone()))
            })
            .await;
        // As many sandboxes as the dead cell last reported.
        let running = self.loads.lock().expect("not poisoned").last(&function) as u32;
        if let Some((control, record)) = found
            && let Err(e) = self.prepare(&control, &record.tenant, &record.name, &record.spec_json, running).await
        {
            tracing::warn!(%function, %cell, error = %e.message(), "pushing a spec after failover failed");
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ShardMapEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ShardManager for Manager {
    async fn register_cell(&self, request: Request<RegisterCellRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        let r = request.into_inner();
        let cell = Cell {
            id: CellId(required("id", &r.id)?.to_string()),
            region: required("region", &r.region)?.to_string(),
            control: required("control", &r.control)?.to_string(),
            data_planes: r.data_planes,
            weight: r.weight.max(1),
            state: CellState::Active,
        };
        self.heard.lock().expect("not poisoned").insert(cell.id.clone(), Instant::now());
        let epoch = self.write(id.as_deref(), Command::PutCell(cell)).await?.epoch;
        Ok(Response::new(Ack { epoch: epoch.0 }))
    }

    async fn cell_heartbeat(
        &self,
        request: Request<CellHeartbeatRequest>,
    ) -> Result<Response<CellHeartbeatResponse>, Status> {
        let request = request.into_inner();
        let id = CellId(required("id", &request.id)?.to_string());
        let Some(cell_state) = self.sm.read(|state| state.cells.get(&id).map(|c| c.state)).await else {
            return Err(rejected(&Rejection::UnknownCell(id)));
        };
        if cell_state == CellState::Down {
            // Its functions went elsewhere: it must register again to take new ones.
            return Err(rejected(&Rejection::CellFailedOver(id)));
        }
        self.heard.lock().expect("not poisoned").insert(id.clone(), Instant::now());
        self.record_loads(request.loads.iter().map(|l| (l.function.clone(), l.load)));
        if let Some(h) = &request.health {
            let report = CellHealth {
                healthy_workers: h.healthy_workers,
                unservable: h.unservable.iter().cloned().collect(),
                failing: h.failing.iter().map(|f| (f.function.clone(), f.reason.clone())).collect(),
                image_workers: h.image_workers,
            };
            self.health.lock().expect("not poisoned").insert(id.clone(), report);
        }
        // The leader's failure detector and rebalancer are the ones that count: pass it on.
        if let Ok(Some(mut leader)) = self.leader_client() {
            leader.cell_heartbeat(request).await?;
        }
        Ok(Response::new(CellHeartbeatResponse {}))
    }

    async fn put_tenant(&self, request: Request<PutTenantRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.put_tenant_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn delete_tenant(&self, request: Request<DeleteTenantRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.delete_tenant_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn put_function(
        &self,
        request: Request<PutFunctionRequest>,
    ) -> Result<Response<PutFunctionResponse>, Status> {
        let id = request_id(&request)?;
        self.put_function_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn put_functions(
        &self,
        request: Request<PutFunctionsRequest>,
    ) -> Result<Response<PutFunctionsResponse>, Status> {
        let id = request_id(&request)?;
        self.put_functions_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn get_function(&self, request: Request<FunctionRef>) -> Result<Response<FunctionInfo>, Status> {
        self.get_function_inner(request.into_inner()).await.map(Response::new)
    }

    async fn list_functions(
        &self,
        request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        self.list_functions_inner(request.into_inner()).await.map(Response::new)
    }

    async fn delete_function(&self, request: Request<FunctionRef>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.delete_function_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn move_function(
        &self,
        request: Request<MoveFunctionRequest>,
    ) -> Result<Response<PutFunctionResponse>, Status> {
        self.move_function_inner(request.into_inner()).await.map(Response::new)
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        self.create_api_key_inner(request.into_inner()).await.map(Response::new)
    }

    async fn revoke_api_key(&self, request: Request<RevokeApiKeyRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.revoke_api_key_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn put_registry_credentials(
        &self,
        request: Request<PutRegistryCredentialsRequest>,
    ) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.put_registry_credentials_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn delete_registry_credentials(&self, request: Request<RegistryRef>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.delete_registry_credentials_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn list_registries(
        &self,
        request: Request<ListRegistriesRequest>,
    ) -> Result<Response<ListRegistriesResponse>, Status> {
        self.list_registries_inner(request.into_inner()).await.map(Response::new)
    }

    async fn get_registry_credentials(
        &self,
        request: Request<RegistryRef>,
    ) -> Result<Response<RegistryCredentialsResponse>, Status> {
        self.get_registry_credentials_inner(request.into_inner()).await.map(Response::new)
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        self.list_tenants_inner(request.into_inner()).await.map(Response::new)
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        self.list_api_keys_inner(request.into_inner()).await.map(Response::new)
    }

    async fn set_cell_state(&self, request: Request<SetCellStateRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        let r = request.into_inner();
        let cell = CellId(required("cell", &r.cell)?.to_string());
        let state = match r.state.as_str() {
            "active" => CellState::Active,
            "draining" => CellState::Draining,
            other => {
                return Err(Status::invalid_argument(format!("state: {other:?} must be \"active\" or \"draining\"")));
            }
        };
        let write = Command::SetCellState { cell: cell.clone(), state };
        if let Some(first) = self.remembered(id.as_deref(), &write).await? {
            return Ok(Response::new(Ack { epoch: first.epoch.0 }));
        }
        match self.sm.read(|s| s.cells.get(&cell).map(|c| c.state)).await {
            None => return Err(rejected(&Rejection::UnknownCell(cell))),
            Some(CellState::Down) => {
                return Err(rejected(&Rejection::CellFailedOver(cell)));
            }
            Some(_) => {}
        }
        let epoch = self.write(id.as_deref(), write).await?.epoch;
        Ok(Response::new(Ack { epoch: epoch.0 }))
    }

    async fn pin_function(&self, request: Request<PinFunctionRequest>) -> Result<Response<Ack>, Status> {
        let id = request_id(&request)?;
        self.pin_function_inner(request.into_inner(), id.as_deref()).await.map(Response::new)
    }

    async fn list_cells(&self, _request: Request<ListCellsRequest>) -> Result<Response<ListCellsResponse>, Status> {
        let cells = self
            .sm
            .read(|state| {
                state
                    .cells
                    .values()
                    .map(|c| CellInfo {
                        id: c.id.0.clone(),
                        region: c.region.clone(),
                        state: match c.state {
                            CellState::Active => "active",
                            CellState::Draining => "draining",
                            CellState::Down => "down",
                        }
                        .into(),
                        control: c.control.clone(),
                        data_planes: c.data_planes.clone(),
                        weight: c.weight,
                        functions: state.assignments.values().filter(|a| a.cell == c.id).count() as u64,
                    })
                    .collect()
            })
            .await;
        Ok(Response::new(ListCellsResponse { cells }))
    }

    type WatchShardMapStream = EventStream;

    async fn watch_shard_map(
        &self,
        _request: Request<WatchShardMapRequest>,
    ) -> Result<Response<Self::WatchShardMapStream>, Status> {
        let (snapshot, deltas) = self.sm.follow().await;
        let json = serde_json::to_string(&snapshot).map_err(|e| Status::internal(e.to_string()))?;
        let first = ShardMapEvent { event: Some(shard_map_event::Event::SnapshotJson(json)) };
        // Counted while the stream lives: the closure owns the guard.
        let follower = crate::metrics::map_follower();
        let rest = tokio_stream::wrappers::BroadcastStream::new(deltas).map(move |delta| {
            let _counted = &follower;
            match delta {
                Ok(delta) => serde_json::to_string(&delta)
                    .map(|json| ShardMapEvent { event: Some(shard_map_event::Event::DeltaJson(json)) })
                    .map_err(|e| Status::internal(e.to_string())),
                Err(_) => Err(Status::aborted("fell behind the shard-map feed: subscribe again")),
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(first)).chain(rest))))
    }

    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status().await))
    }

    async fn add_replica(&self, request: Request<AddReplicaRequest>) -> Result<Response<StatusResponse>, Status> {
        self.add_replica_inner(request.into_inner()).await.map(Response::new)
    }

    async fn change_voters(&self, request: Request<ChangeVotersRequest>) -> Result<Response<StatusResponse>, Status> {
        self.change_voters_inner(request.into_inner()).await.map(Response::new)
    }
}
