//! Shared by the shard manager's integration tests.

use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{CellHeartbeatRequest, RegisterCellRequest};
use tonic::transport::Channel;

/// A registration for cell `id` in region `local`.
pub fn cell(id: &str) -> RegisterCellRequest {
    RegisterCellRequest {
        id: id.into(),
        region: "local".into(),
        control: format!("http://{id}:7100"),
        data_planes: vec![format!("http://{id}:8080")],
        weight: 1,
    }
}

/// Heartbeats for cell `id` every 50 ms until the task is aborted.
#[allow(dead_code)] // not every test binary has cells beating
pub fn heartbeats(mut api: ShardManagerClient<Channel>, id: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = api.cell_heartbeat(CellHeartbeatRequest { id: id.into(), loads: vec![], health: None }).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
