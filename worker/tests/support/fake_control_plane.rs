//! A CellControl server that records what workers send it, for tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use baton_proto::cell::cell_control_server::{CellControl, CellControlServer};
use baton_proto::cell::{
    DeleteFunctionRequest, DeleteFunctionResponse, FunctionInfo, GetFunctionRequest, ListFunctionsRequest,
    ListFunctionsResponse, PutFunctionRequest, PutFunctionResponse, RegisterDataPlaneRequest,
    RegisterDataPlaneResponse, RegisterWorkerRequest, RegisterWorkerResponse, ReportLoadRequest, ReportLoadResponse,
    ReportSandboxEventsRequest, ReportSandboxEventsResponse, RoutingEvent, SandboxEvent, WatchRoutingRequest,
    WorkerHeartbeatRequest, WorkerHeartbeatResponse,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct Recorded {
    pub registrations: Vec<RegisterWorkerRequest>,
    pub heartbeats: HashMap<String, Vec<WorkerHeartbeatRequest>>,
    pub events: Vec<SandboxEvent>,
}

#[derive(Clone, Default)]
pub struct FakeControlPlane {
    pub recorded: Arc<Mutex<Recorded>>,
    /// Heartbeat interval to ask workers for (0: keep theirs).
    pub heartbeat_interval_ms: u32,
}

impl FakeControlPlane {
    /// Serves on `addr` until the returned sender is dropped.
    pub async fn serve(&self, addr: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let service = CellControlServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        (addr, tx)
    }

    pub fn registered_nodes(&self) -> usize {
        let r = self.recorded.lock().unwrap();
        r.registrations.iter().map(|x| x.node_id.clone()).collect::<std::collections::HashSet<_>>().len()
    }

    pub fn heartbeating_nodes(&self) -> usize {
        self.recorded.lock().unwrap().heartbeats.len()
    }

    pub fn events(&self) -> Vec<SandboxEvent> {
        self.recorded.lock().unwrap().events.clone()
    }
}

#[tonic::async_trait]
impl CellControl for FakeControlPlane {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        self.recorded.lock().unwrap().registrations.push(request.into_inner());
        Ok(Response::new(RegisterWorkerResponse { heartbeat_interval_ms: self.heartbeat_interval_ms }))
    }

    async fn worker_heartbeat(
        &self,
        request: Request<WorkerHeartbeatRequest>,
    ) -> Result<Response<WorkerHeartbeatResponse>, Status> {
        let hb = request.into_inner();
        let mut r = self.recorded.lock().unwrap();
        if !r.registrations.iter().any(|x| x.node_id == hb.node_id) {
            return Err(Status::not_found("unknown node"));
        }
        r.heartbeats.entry(hb.node_id.clone()).or_default().push(hb);
        Ok(Response::new(WorkerHeartbeatResponse {}))
    }

    async fn report_sandbox_events(
        &self,
        request: Request<ReportSandboxEventsRequest>,
    ) -> Result<Response<ReportSandboxEventsResponse>, Status> {
        self.recorded.lock().unwrap().events.extend(request.into_inner().events);
        Ok(Response::new(ReportSandboxEventsResponse {}))
    }

    // What workers never call: the fake refuses it.
    async fn put_function(&self, _: Request<PutFunctionRequest>) -> Result<Response<PutFunctionResponse>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    async fn get_function(&self, _: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    async fn delete_function(
        &self,
        _: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    async fn list_functions(
        &self,
        _: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    async fn register_data_plane(
        &self,
        _: Request<RegisterDataPlaneRequest>,
    ) -> Result<Response<RegisterDataPlaneResponse>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    type WatchRoutingStream = futures::stream::Empty<Result<RoutingEvent, Status>>;

    async fn watch_routing(
        &self,
        _: Request<WatchRoutingRequest>,
    ) -> Result<Response<Self::WatchRoutingStream>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }

    async fn report_load(&self, _: Request<ReportLoadRequest>) -> Result<Response<ReportLoadResponse>, Status> {
        Err(Status::unimplemented("fake control plane"))
    }
}
