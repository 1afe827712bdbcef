//! A real `baton-shard-manager`'s `/metrics` follows the federation: its raft role and
//! term, the epoch, tenants, functions and cells by state, writes by outcome, a cell's
//! failover, and the shard-map streams open on it.

mod support;

use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{PutFunctionRequest, WatchShardMapRequest};
use baton_testkit::{free_port, metric_at, start_shard_manager_with_admin};
use support::{cell, heartbeats};

/// Waits until the series `name` reads `want`.
async fn until(admin: u16, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric_at(admin, name).await;
        if value == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_raft_the_state_writes_failover_and_followers() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let env = [("BATON_CELLS__HEARTBEAT_TIMEOUT", "2s"), ("BATON_CELLS__MOVE_BUDGET", "0")];
    let _replica = start_shard_manager_with_admin(port, admin, dir.path(), &env).await;
    until(admin, "baton_shard_manager_is_leader", 1.0).await;
    assert!(metric_at(admin, "baton_shard_manager_raft_term").await >= 1.0);
    assert!(metric_at(admin, "baton_shard_manager_raft_applied_index").await >= 1.0);

    let mut api = ShardManagerClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 1)).await.unwrap();
    api.register_cell(cell("c1")).await.unwrap();
    api.register_cell(cell("c2")).await.unwrap();
    // Both cells heartbeat until the checks before the failover are done.
    let (c1_beats, c2_beats) = (heartbeats(api.clone(), "c1"), heartbeats(api.clone(), "c2"));
    let put = |name: &str| PutFunctionRequest {
        tenant: "dev".into(),
        name: name.into(),
        spec_json: r#"{"executable":"/bin/true"}"#.into(),
        home_region: String::new(),
        min_epoch: 0,
    };
    let placed = api.put_function(put("f1")).await.unwrap().into_inner();
    // Over the tenant's limit of one: refused by the state machine, nothing changes.
    let refused = api.put_function(put("f2")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");

    until(admin, "baton_shard_manager_epoch", placed.epoch as f64).await;
    until(admin, "baton_shard_manager_tenants", 1.0).await;
    until(admin, "baton_shard_manager_functions", 1.0).await;
    until(admin, r#"baton_shard_manager_cells{state="active"}"#, 2.0).await;
    until(admin, r#"baton_shard_manager_writes_total{outcome="applied"}"#, 4.0).await;
    until(admin, r#"baton_shard_manager_writes_total{outcome="rejected"}"#, 1.0).await;
    assert!(metric_at(admin, "baton_shard_manager_write_seconds_count").await >= 5.0);
    assert!(metric_at(admin, "baton_shard_manager_entry_commands_count").await >= 5.0);
    assert!(metric_at(admin, r#"baton_shard_manager_entry_commands_bucket{le="1"}"#).await >= 1.0, "a histogram");

    // Shard-map streams are counted while open.
    let stream = api.clone().watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    until(admin, "baton_shard_manager_map_followers", 1.0).await;
    drop(stream);
    until(admin, "baton_shard_manager_map_followers", 0.0).await;

    // c1 goes silent: it is failed over once past the timeout; f1 moves if it was there.
    c1_beats.abort();
    until(admin, r#"baton_shard_manager_cells{state="down"}"#, 1.0).await;
    until(admin, r#"baton_shard_manager_cells{state="active"}"#, 1.0).await;
    until(admin, "baton_shard_manager_cell_failovers_total", 1.0).await;
    let moved = if placed.cell == "c1" { 1.0 } else { 0.0 };
    until(admin, "baton_shard_manager_failover_reassignments_total", moved).await;
    c2_beats.abort();
}
