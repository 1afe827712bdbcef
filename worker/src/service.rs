//! The gRPC `Worker` service: routes each call to the node it names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::worker::worker_server::Worker;
use baton_proto::worker::{
    CreateSandboxRequest, CreateSandboxResponse, DeleteSandboxRequest, DeleteSandboxResponse, DropImageRequest,
    DropImageResponse, ListSandboxesRequest, ListSandboxesResponse, PullImageRequest, PullImageResponse, SandboxInfo,
    SandboxState,
};
use baton_proto::{NodeId, SandboxId};
use tonic::{Request, Response, Status};

use crate::node::WorkerNode;
use crate::runtime::{self, SandboxSummary};

/// The Worker service over this process's nodes.
#[derive(Clone)]
pub struct WorkerService {
    nodes: Arc<HashMap<NodeId, Arc<WorkerNode>>>,
}

impl WorkerService {
    /// A service over `nodes` (at least one).
    pub fn new(nodes: Vec<Arc<WorkerNode>>) -> Self {
        Self { nodes: Arc::new(nodes.into_iter().map(|n| (n.id().clone(), n)).collect()) }
    }

    fn node(&self, node_id: &str) -> Result<&Arc<WorkerNode>, Status> {
        if node_id.is_empty() {
            if self.nodes.len() == 1 {
                return Ok(self.nodes.values().next().expect("one node"));
            }
            return Err(Status::invalid_argument(format!(
                "node_id: is required, this process hosts {} nodes",
                self.nodes.len()
            )));
        }
        self.nodes
            .get(node_id)
            .ok_or_else(|| Status::not_found(format!("node_id: node {node_id:?} is not hosted by this worker process")))
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn info(s: SandboxSummary) -> SandboxInfo {
    SandboxInfo {
        sandbox_id: s.id.to_string(),
        function_id: s.function_id,
        endpoint: s.endpoint,
        pid: s.pid,
        state: match s.state {
            runtime::SandboxState::Running => SandboxState::Running,
            runtime::SandboxState::Exited => SandboxState::Exited,
        } as i32,
        isolation: Some(s.isolation.to_proto()),
        resources: Some(baton_proto::worker::Resources {
            cpu_millis: s.resources.cpu_millis,
            memory_mib: s.resources.memory_mib,
            pids: s.resources.pids,
        }),
        created_at_unix_ms: s.created_at_unix_ms,
        adopted: s.adopted,
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn create_sandbox(
        &self,
        request: Request<CreateSandboxRequest>,
    ) -> Result<Response<CreateSandboxResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(&req.node_id)?.clone();
        let created = node.create(req).await?;
        Ok(Response::new(CreateSandboxResponse {
            endpoint: created.endpoint,
            isolation: Some(created.isolation.to_proto()),
            latency: Some(baton_proto::worker::CreationLatency {
                cgroup_us: micros(created.latency.cgroup),
                spawn_us: micros(created.latency.spawn),
                readiness_us: micros(created.latency.readiness),
                total_us: micros(created.latency.total),
                image_us: micros(created.latency.image),
            }),
            pid: created.pid,
        }))
    }

    async fn delete_sandbox(
        &self,
        request: Request<DeleteSandboxRequest>,
    ) -> Result<Response<DeleteSandboxResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(&req.node_id)?.clone();
        let id = SandboxId::new(req.sandbox_id).map_err(|e| Status::invalid_argument(format!("sandbox_id: {e}")))?;
        let deleted = node.delete(&id, Duration::from_millis(u64::from(req.grace_period_ms))).await?;
        Ok(Response::new(DeleteSandboxResponse { killed: deleted.killed }))
    }

    async fn list_sandboxes(
        &self,
        request: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(&req.node_id)?;
        let sandboxes = node.list().await.into_iter().map(info).collect();
        Ok(Response::new(ListSandboxesResponse { node_id: node.id().to_string(), sandboxes }))
    }

    async fn drop_image(&self, request: Request<DropImageRequest>) -> Result<Response<DropImageResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(&req.node_id)?.clone();
        baton_model::image::check_digest(&req.digest)
            .map_err(|e| Status::invalid_argument(format!("digest: {}", e.message)))?;
        let removed = node.drop_image(&req.digest).await;
        Ok(Response::new(DropImageResponse { removed }))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(&req.node_id)?.clone();
        let image = req.image.ok_or_else(|| Status::invalid_argument("image: is required"))?;
        let pulled = node.pull(image).await?;
        Ok(Response::new(PullImageResponse { cached: pulled.cached, pull_us: micros(pulled.took) }))
    }
}
