//! The `emulated` runtime, for scale tests: a creation waits a configured delay (40 ms by
//! default, Firecracker's snapshot-restore time that Dirigent emulates) and every sandbox's
//! calls are served by one in-process function server per worker process, which honours the
//! requested duration like `baton-fn-spin`. Many emulated nodes share that server.

mod function_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_proto::SandboxId;
use baton_proto::worker::RuntimeKind;

pub use self::function_server::FunctionServer;
use crate::error::RuntimeError;
use crate::runtime::{
    Created, CreationLatency, Deleted, Isolation, SandboxRuntime, SandboxSpec, SandboxState, SandboxSummary, unix_ms,
};

/// One emulated node's sandboxes.
pub struct EmulatedRuntime {
    delay: Duration,
    endpoint: SocketAddr,
    table: Mutex<HashMap<SandboxId, Option<SandboxSummary>>>,
}

impl EmulatedRuntime {
    /// A node whose creations take `delay` and whose sandboxes are served at `endpoint`.
    pub fn new(delay: Duration, endpoint: SocketAddr) -> Self {
        Self { delay, endpoint, table: Mutex::default() }
    }
}

#[async_trait::async_trait]
impl SandboxRuntime for EmulatedRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Emulated
    }

    async fn create(&self, id: SandboxId, spec: SandboxSpec) -> Result<Created, RuntimeError> {
        let started = Instant::now();
        {
            let mut table = self.table.lock().expect("table lock");
            if table.contains_key(&id) {
                return Err(RuntimeError::AlreadyExists(id));
            }
            table.insert(id.clone(), None);
        }
        tokio::time::sleep(self.delay).await;
        let summary = SandboxSummary {
            id: id.clone(),
            function_id: spec.function_id,
            endpoint: self.endpoint.to_string(),
            pid: 0,
            state: SandboxState::Running,
            isolation: Isolation::default(),
            resources: spec.resources,
            created_at_unix_ms: unix_ms(),
            adopted: false,
        };
        self.table.lock().expect("table lock").insert(id, Some(summary));
        let total = started.elapsed();
        Ok(Created {
            pulled_image: false,
            endpoint: self.endpoint.to_string(),
            isolation: Isolation::default(),
            latency: CreationLatency { readiness: total, total, ..CreationLatency::default() },
            pid: 0,
        })
    }

    async fn delete(&self, id: &SandboxId, _grace: Duration) -> Result<Deleted, RuntimeError> {
        let mut table = self.table.lock().expect("table lock");
        match table.get(id) {
            Some(Some(_)) => {
                table.remove(id);
                Ok(Deleted { killed: false })
            }
            _ => Err(RuntimeError::NotFound(id.clone())),
        }
    }

    async fn list(&self) -> Vec<SandboxSummary> {
        let mut rows: Vec<_> = self.table.lock().expect("table lock").values().flatten().cloned().collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    async fn shutdown(&self, _delete_all: bool, _grace: Duration) {
        self.table.lock().expect("table lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PortRequest, Resources};

    fn spec() -> SandboxSpec {
        SandboxSpec {
            function_id: "f".into(),
            executable: "".into(),
            args: vec![],
            env: Default::default(),
            port: PortRequest::Any,
            resources: Resources { cpu_millis: 100, memory_mib: 64, pids: 8 },
            readiness_timeout: Duration::from_secs(1),
            readiness_path: "/healthz".into(),
            image: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn creation_takes_the_delay_and_ids_are_unique() {
        let rt = EmulatedRuntime::new(Duration::from_millis(40), "127.0.0.1:9".parse().unwrap());
        let id = SandboxId::new("a").unwrap();
        let started = tokio::time::Instant::now();
        let created = rt.create(id.clone(), spec()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(40));
        assert_eq!(created.endpoint, "127.0.0.1:9");
        assert!(matches!(rt.create(id.clone(), spec()).await, Err(RuntimeError::AlreadyExists(_))));
        assert_eq!(rt.list().await.len(), 1);
        rt.delete(&id, Duration::ZERO).await.unwrap();
        assert!(matches!(rt.delete(&id, Duration::ZERO).await, Err(RuntimeError::NotFound(_))));
        assert!(rt.list().await.is_empty());
    }
}
