//! A worker node: one identity with a runtime, its capacity and what is allocated of it.
//! The gRPC service and the control-plane link both work through this type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::worker::{CreateSandboxRequest, RuntimeKind};
use baton_proto::{NodeId, SandboxId};
use tokio::sync::mpsc;

use crate::error::RuntimeError;
use crate::metrics;
use crate::runtime::{Created, Deleted, Resources, SandboxExit, SandboxRuntime, SandboxSummary};
use crate::validate::{self, Limits};

/// What a node offers in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    /// MiB.
    pub memory_mib: u64,
    /// Most sandboxes.
    pub sandboxes: u32,
}

/// The sum of the limits of a node's sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    /// MiB.
    pub memory_mib: u64,
    /// Sandboxes.
    pub sandboxes: u32,
}

/// One worker node.
pub struct WorkerNode {
    id: NodeId,
    runtime: Arc<dyn SandboxRuntime>,
    capacity: Capacity,
    limits: Limits,
    delete_grace: Duration,
    allocated: Mutex<HashMap<SandboxId, Resources>>,
    /// Set when the worker stops: no creation starts after it.
    closed: std::sync::atomic::AtomicBool,
}

impl WorkerNode {
    /// A node over `runtime`. Exits the runtime reports on `exits` free the sandbox's
    /// allocation and are passed on to `report` (the control-plane link), if any.
    pub fn new(
        id: NodeId,
        runtime: Arc<dyn SandboxRuntime>,
        capacity: Capacity,
        limits: Limits,
        delete_grace: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            runtime,
            capacity,
            limits,
            delete_grace,
            allocated: Mutex::default(),
            closed: false.into(),
        })
    }

    /// Refuses every creation from now on (the worker is stopping).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forwards the runtime's exits, after accounting for them, to `report`.
    pub fn pump_exits(
        self: &Arc<Self>,
        mut exits: mpsc::UnboundedReceiver<SandboxExit>,
        report: Option<mpsc::UnboundedSender<SandboxExit>>,
    ) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(exit) = exits.recv().await {
                metrics::exit(exit.exit.reason);
                if let Some(node) = node.upgrade() {
                    node.allocated.lock().expect("allocation lock").remove(&exit.id);
                    node.publish_gauge();
                }
                if let Some(report) = &report {
                    let _ = report.send(exit);
                }
            }
        });
    }

    /// The node's ID.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The runtime kind.
    pub fn runtime_kind(&self) -> RuntimeKind {
        self.runtime.kind()
    }

    /// The node's capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// What is allocated now.
    pub fn allocation(&self) -> Allocation {
        let allocated = self.allocated.lock().expect("allocation lock");
        allocated.values().fold(Allocation::default(), |mut sum, r| {
            sum.cpu_millis += r.cpu_millis;
            sum.memory_mib += r.memory_mib;
            sum.sandboxes += 1;
            sum
        })
    }

    fn runtime_label(&self) -> &'static str {
        match self.runtime.kind() {
            RuntimeKind::Emulated => "emulated",
            _ => "process",
        }
    }

    fn publish_gauge(&self) {
        let count = self.allocated.lock().expect("allocation lock").len();
        metrics::gauge_sandboxes(self.runtime_label(), &self.id, count);
    }

    /// Validates and creates a sandbox. The creation runs to its end in its own task even if
    /// the caller goes away, so a cancelled call never leaves half a sandbox behind.
    pub async fn create(self: &Arc<Self>, req: CreateSandboxRequest) -> Result<Created, RuntimeError> {
        let oci = req.spec.as_ref().is_some_and(|s| s.image.is_some());
        let label = if oci { "oci" } else { self.runtime_label() };
        let result = async {
            let (id, spec) = validate::create_request(req, &self.limits)?;
            if self.is_closed() {
                return Err(RuntimeError::Exhausted("the worker is stopping; it creates no sandbox".into()));
            }
            self.reserve(&id, spec.resources)?;
            let node = self.clone();
            let task_id = id.clone();
            let created = tokio::spawn(async move { node.runtime.create(task_id, spec).await })
                .await
                .unwrap_or_else(|e| Err(RuntimeError::os("creating a sandbox", std::io::Error::other(e))));
            if created.is_err() {
                self.allocated.lock().expect("allocation lock").remove(&id);
            }
            self.publish_gauge();
            created
        }
        .await;
        match &result {
            Ok(created) => metrics::creation(label, "ok", Some(&created.latency)),
            Err(e) => metrics::creation(label, e.label(), None),
        }
        result
    }

    fn reserve(&self, id: &SandboxId, resources: Resources) -> Result<(), RuntimeError> {
        let mut allocated = self.allocated.lock().expect("allocation lock");
        if allocated.contains_key(id) {
            return Err(RuntimeError::AlreadyExists(id.clone()));
        }
        let (cpu, mem) =
            allocated.values().fold((0u64, 0u64), |(c, m), r| (c + u64::from(r.cpu_millis), m + r.memory_mib));
        if allocated.len() >= self.capacity.sandboxes as usize {
            return Err(RuntimeError::Exhausted(format!(
                "node {} holds its maximum of {} sandboxes",
                self.id, self.capacity.sandboxes
            )));
        }
        if cpu + u64::from(resources.cpu_millis) > u64::from(self.capacity.cpu_millis)
            || mem + resources.memory_mib > self.capacity.memory_mib
        {
            return Err(RuntimeError::Exhausted(format!(
                "node {} has {} CPU millis and {} MiB free; the sandbox asks for {} and {}",
                self.id,
                u64::from(self.capacity.cpu_millis) - cpu,
                self.capacity.memory_mib - mem,
                resources.cpu_millis,
                resources.memory_mib
            )));
        }
        allocated.insert(id.clone(), resources);
        Ok(())
    }

    /// Deletes a sandbox; `grace` zero takes the node's default.
    pub async fn delete(self: &Arc<Self>, id: &SandboxId, grace: Duration) -> Result<Deleted, RuntimeError> {
        let grace = if grace.is_zero() { self.delete_grace } else { grace };
        let node = self.clone();
        let task_id = id.clone();
        let result = tokio::spawn(async move { node.runtime.delete(&task_id, grace).await })
            .await
            .unwrap_or_else(|e| Err(RuntimeError::os("deleting a sandbox", std::io::Error::other(e))));
        let outcome = match &result {
            Ok(Deleted { killed: true }) => "killed",
            Ok(Deleted { killed: false }) => "graceful",
            Err(e) => e.label(),
        };
        metrics::deletion(self.runtime_label(), outcome);
        if result.is_ok() {
            self.allocated.lock().expect("allocation lock").remove(id);
            self.publish_gauge();
        }
        result
    }

    /// The sandboxes held now.
    pub async fn list(&self) -> Vec<SandboxSummary> {
        self.runtime.list().await
    }

    /// Makes `image` ready on this node (the control plane pre-pulls a function's image).
    pub async fn pull(&self, image: baton_proto::worker::Image) -> Result<crate::runtime::Pulled, RuntimeError> {
        let launch = validate::image(image)?;
        self.runtime.pull(&launch).await
    }

    /// Lets image `digest` go from the node's cache once no sandbox uses it; whether it
    /// went now.
    pub async fn drop_image(&self, digest: &str) -> bool {
        self.runtime.drop_image(digest).await
    }

    /// Every kind of sandbox the node runs.
    pub fn runtime_kinds(&self) -> Vec<RuntimeKind> {
        self.runtime.kinds()
    }

    /// Takes over sandboxes the runtime re-adopted at start (their allocation counts).
    pub async fn account_existing(&self) {
        let existing = self.runtime.list().await;
        let mut allocated = self.allocated.lock().expect("allocation lock");
        for s in existing {
            allocated.insert(s.id, s.resources);
        }
        drop(allocated);
        self.publish_gauge();
    }

    /// Stops the runtime, deleting every sandbox if `delete_all`.
    pub async fn shutdown(&self, delete_all: bool) {
        self.close();
        self.runtime.shutdown(delete_all, self.delete_grace).await;
        if delete_all {
            self.allocated.lock().expect("allocation lock").clear();
        }
        self.publish_gauge();
    }
}

#[cfg(test)]
mod tests {
    use baton_proto::worker::{Resources as WireResources, SandboxSpec as WireSpec};

    use super::*;

    fn request(id: &str) -> CreateSandboxRequest {
        CreateSandboxRequest {
            node_id: String::new(),
            sandbox_id: id.into(),
            spec: Some(WireSpec {
                function_id: "f".into(),
                resources: Some(WireResources { cpu_millis: 100, memory_mib: 64, pids: 16 }),
                ..Default::default()
            }),
        }
    }

    /// A stopping worker starts no sandbox: a creation the control plane sends during a
    /// shutdown would otherwise outlive the shutdown's delete of every sandbox.
    #[tokio::test]
    async fn a_closed_node_creates_nothing() {
        let runtime = Arc::new(crate::emulated::EmulatedRuntime::new(Duration::ZERO, "127.0.0.1:9".parse().unwrap()));
        let limits = Limits {
            ports: 20000..=20010,
            cpu_millis: 1000,
            memory_mib: 1024,
            default_readiness_timeout: Duration::from_secs(1),
            max_readiness_timeout: Duration::from_secs(1),
            needs_executable: false,
        };
        let capacity = Capacity { cpu_millis: 1000, memory_mib: 1024, sandboxes: 10 };
        let node = WorkerNode::new(NodeId::new("n").unwrap(), runtime, capacity, limits, Duration::ZERO);
        node.create(request("before")).await.unwrap();
        node.close();
        let refused = node.create(request("after")).await.unwrap_err();
        assert!(refused.to_string().contains("stopping"), "{refused}");
        let listed: Vec<String> = node.list().await.into_iter().map(|s| s.id.to_string()).collect();
        assert_eq!(listed, vec!["before".to_string()]);
    }
}
