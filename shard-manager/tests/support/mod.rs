//! Shared by the shard manager's integration tests.

use baton_proto::shard::RegisterCellRequest;

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
