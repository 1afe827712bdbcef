//! The membership records a cell persists besides function specs.

use baton_model::Runtime;
use baton_proto::NodeId;
use serde::{Deserialize, Serialize};

/// A worker node as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Node ID.
    pub node_id: NodeId,
    /// gRPC address of its Worker service.
    pub address: String,
    /// The runtime of its sandboxes (stored as `process` or `emulated`).
    pub runtime: Runtime,
    /// The other runtimes it offers (`oci` beside `process`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<Runtime>,
    /// CPU offered, thousandths of a core.
    pub cpu_millis: u32,
    /// Memory offered, MiB.
    pub memory_mib: u64,
    /// Most sandboxes.
    pub max_sandboxes: u32,
}

impl WorkerRecord {
    /// Whether the node runs sandboxes of `runtime`.
    pub fn offers(&self, runtime: Runtime) -> bool {
        self.runtime == runtime || self.runtimes.contains(&runtime)
    }
}

/// A data plane as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneRecord {
    /// Its ID.
    pub id: String,
    /// Address of its gRPC service (endpoint updates).
    pub control_address: String,
    /// Address of its HTTP ingress.
    pub http_address: String,
}
