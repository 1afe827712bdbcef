//! The gRPC `CellControl` service over the [`ControlPlane`].

use std::pin::Pin;

use baton_proto::cell::cell_control_server::CellControl;
use baton_proto::cell::{
    DeleteFunctionRequest, DeleteFunctionResponse, FunctionInfo, GetFunctionRequest, ListFunctionsRequest,
    ListFunctionsResponse, PutFunctionRequest, PutFunctionResponse, RegisterDataPlaneRequest,
    RegisterDataPlaneResponse, RegisterWorkerRequest, RegisterWorkerResponse, ReportLoadRequest, ReportLoadResponse,
    ReportSandboxEventsRequest, ReportSandboxEventsResponse, RoutingEvent, WatchRoutingRequest, WorkerHeartbeatRequest,
    WorkerHeartbeatResponse,
};
use baton_proto::worker::RuntimeKind;
use baton_proto::{NodeId, SandboxId};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::runtime::ControlPlane;
use crate::routing::wire;
use crate::store::{DataPlaneRecord, StoreError, WorkerRecord};
use baton_model::function::{FunctionSpec, Runtime};

fn unavailable(e: StoreError) -> Status {
    Status::unavailable(format!("the cell's store failed; retry: {e}"))
}

fn info(spec: &FunctionSpec, scale: super::Scale) -> FunctionInfo {
    FunctionInfo {
        spec_json: serde_json::to_string(spec).expect("specs serialize"),
        ready: scale.ready,
        creating: scale.creating,
        desired: scale.desired,
    }
}

#[tonic::async_trait]
impl CellControl for ControlPlane {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        let node_id = NodeId::new(req.node_id).map_err(|e| Status::invalid_argument(format!("node_id: {e}")))?;
        if req.address.is_empty() {
            return Err(Status::invalid_argument("address: the worker's gRPC address is required"));
        }
        let runtime_of = |kind: i32, field: &str| match RuntimeKind::try_from(kind) {
            Ok(RuntimeKind::Process) => Ok(Runtime::Process),
            Ok(RuntimeKind::Emulated) => Ok(Runtime::Emulated),
            Ok(RuntimeKind::Oci) => Ok(Runtime::Oci),
            _ => Err(Status::invalid_argument(format!("{field}: must be PROCESS, EMULATED or OCI"))),
        };
        let runtime = runtime_of(req.runtime, "runtime")?;
        let mut runtimes = Vec::new();
        for (i, kind) in req.runtimes.iter().enumerate() {
            let other = runtime_of(*kind, &format!("runtimes[{i}]"))?;
            if other != runtime && !runtimes.contains(&other) {
                runtimes.push(other);
            }
        }
        let capacity = req.capacity.ok_or_else(|| Status::invalid_argument("capacity: is required"))?;
        let record = WorkerRecord {
            node_id,
            address: req.address,
            runtime,
            runtimes,
            cpu_millis: capacity.cpu_millis,
            memory_mib: capacity.memory_mib,
            max_sandboxes: capacity.sandboxes,
        };
        // Membership is persisted; only a new or changed record is written.
        if self.read(|st| st.worker_record(record.node_id.as_str()) != Some(&record)) {
            self.inner.store.put_worker(&record).await.map_err(unavailable)?;
        }
        tracing::info!(node = %record.node_id, address = %record.address, "worker registered");
        self.apply(|st| st.register_worker(record, Instant::now()));
        Ok(Response::new(RegisterWorkerResponse { heartbeat_interval_ms: 0 }))
    }

    async fn worker_heartbeat(
        &self,
        request: Request<WorkerHeartbeatRequest>,
    ) -> Result<Response<WorkerHeartbeatResponse>, Status> {
        let node_id = request.into_inner().node_id;
        match self.apply(|st| st.heartbeat(&node_id, Instant::now())) {
            Some(_) => Ok(Response::new(WorkerHeartbeatResponse {})),
            None => Err(Status::not_found(format!("worker {node_id:?} is not registered; register first"))),
        }
    }

    async fn report_sandbox_events(
        &self,
        request: Request<ReportSandboxEventsRequest>,
    ) -> Result<Response<ReportSandboxEventsResponse>, Status> {
        let req = request.into_inner();
        for event in req.events {
            let sandbox_id = SandboxId::new(event.sandbox_id.as_str())
                .map_err(|e| Status::invalid_argument(format!("events.sandbox_id: {e}")))?;
            tracing::info!(node = %req.node_id, sandbox = %event.sandbox_id, reason = event.reason, "sandbox exited");
            self.apply(|st| st.sandbox_exited(&req.node_id, &sandbox_id));
        }
        Ok(Response::new(ReportSandboxEventsResponse {}))
    }

    async fn put_function(
        &self,
        request: Request<PutFunctionRequest>,
    ) -> Result<Response<PutFunctionResponse>, Status> {
        let request = request.into_inner();
        let spec = FunctionSpec::from_json(request.spec_json.as_bytes())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let image = request.pull_first.then(|| spec.clone());
        let created = self.put_function_spec(spec).await?;
        if let Some(spec) = image {
            self.pull_everywhere(&spec)
                .await
                .map_err(|e| Status::failed_precondition(format!("pulling {}: {e}", spec.image)))?;
        }
        Ok(Response::new(PutFunctionResponse { created }))
    }

    async fn get_function(&self, request: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        let (spec, scale) = self.function_spec(&request.into_inner().name)?;
        Ok(Response::new(info(&spec, scale)))
    }

    async fn delete_function(
        &self,
        request: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        self.delete_function_spec(&request.into_inner().name).await?;
        Ok(Response::new(DeleteFunctionResponse {}))
    }

    async fn list_functions(
        &self,
        _: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let functions = self.function_specs().into_iter().map(|(spec, scale)| info(&spec, scale)).collect();
        Ok(Response::new(ListFunctionsResponse { functions }))
    }

    async fn register_data_plane(
        &self,
        request: Request<RegisterDataPlaneRequest>,
    ) -> Result<Response<RegisterDataPlaneResponse>, Status> {
        let req = request.into_inner();
        NodeId::new(req.data_plane_id.as_str()).map_err(|e| Status::invalid_argument(format!("data_plane_id: {e}")))?;
        let record =
            DataPlaneRecord { id: req.data_plane_id, control_address: String::new(), http_address: req.http_address };
        let known = self.inner.store.data_planes().await.map_err(unavailable)?;
        if !known.contains(&record) {
            self.inner.store.put_data_plane(&record).await.map_err(unavailable)?;
        }
        tracing::info!(data_plane = %record.id, http = %record.http_address, "data plane registered");
        Ok(Response::new(RegisterDataPlaneResponse { load_report_interval_ms: self.load_report_interval_ms() }))
    }

    type WatchRoutingStream = Pin<Box<dyn Stream<Item = Result<RoutingEvent, Status>> + Send>>;

    async fn watch_routing(
        &self,
        request: Request<WatchRoutingRequest>,
    ) -> Result<Response<Self::WatchRoutingStream>, Status> {
        let data_plane = request.into_inner().data_plane_id;
        let (snapshot, mut updates) = self.watch_routing();
        let stream = async_stream(move |tx| async move {
            if tx.send(Ok(wire::snapshot_event(&snapshot))).await.is_err() {
                return;
            }
            loop {
                match updates.recv().await {
                    Ok(update) => {
                        if tx.send(Ok(wire::update_event(&update))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(%data_plane, missed, "a data plane fell behind the routing stream; it will resync");
                        let _ = tx.send(Err(Status::data_loss("fell behind; reconnect for a snapshot"))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn report_load(&self, request: Request<ReportLoadRequest>) -> Result<Response<ReportLoadResponse>, Status> {
        let req = request.into_inner();
        let now = Instant::now();
        let mut loads: Vec<(String, u32, u32)> = Vec::with_capacity(req.functions.len());
        let urgent = self.read_mut(|st| {
            for f in req.functions {
                st.report_busy(&req.data_plane_id, &f.function, f.busy_sandboxes, now);
                loads.push((f.function, f.in_flight, f.queued));
            }
            st.report_load(&req.data_plane_id, &loads, now)
        });
        for name in urgent {
            self.urge(name);
        }
        Ok(Response::new(ReportLoadResponse {}))
    }
}

/// A stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(body: F) -> Pin<Box<dyn Stream<Item = Result<RoutingEvent, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<RoutingEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
