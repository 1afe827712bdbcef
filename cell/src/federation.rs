//! A cell's membership in a federation: it registers with the shard manager (region,
//! addresses, weight) and heartbeats. A refused heartbeat (the cell was failed over, or
//! the shard manager lost it) registers again; an unreachable shard manager is retried
//! with back-off while the cell keeps serving (static stability).

use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{CellHeartbeatRequest, RegisterCellRequest};
use tokio::sync::watch;
use tonic::transport::Endpoint;

/// What the cell announces.
#[derive(Debug, Clone)]
pub struct Membership {
    /// gRPC URL of a shard-manager replica.
    pub shard_manager: String,
    /// The registration sent.
    pub registration: RegisterCellRequest,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
}

/// Registers and heartbeats until `stopped` turns true.
pub async fn run(membership: Membership, mut stopped: watch::Receiver<bool>) {
    let channel = match Endpoint::from_shared(membership.shard_manager.clone()) {
        Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5)).connect_lazy(),
        Err(e) => {
            tracing::error!(error = %e, url = membership.shard_manager, "federation.shard_manager is not a URL");
            return;
        }
    };
    let mut client = ShardManagerClient::new(channel);
    let id = membership.registration.id.clone();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = if registered {
            let beat = client.cell_heartbeat(CellHeartbeatRequest { id: id.clone() }).await;
            match beat {
                Ok(_) => membership.heartbeat_interval,
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "heartbeat refused");
                    if matches!(status.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) {
                        registered = false;
                    }
                    membership.heartbeat_interval.min(backoff)
                }
            }
        } else {
            match client.register_cell(membership.registration.clone()).await {
                Ok(ack) => {
                    tracing::info!(cell = id, epoch = ack.into_inner().epoch, "registered with the shard manager");
                    registered = true;
                    backoff = Duration::from_millis(100);
                    membership.heartbeat_interval
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "registration failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    backoff
                }
            }
        };
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
