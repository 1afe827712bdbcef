//! A cell's membership in a federation: it registers with the shard manager (region,
//! addresses, weight) and heartbeats. A refused heartbeat (the cell was failed over, or
//! the shard manager lost it) registers again; an unreachable shard manager is retried
//! with back-off while the cell keeps serving (static stability).

use std::time::Duration;

pub mod reconcile;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{CellHeartbeatRequest, FunctionLoad, RegisterCellRequest};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// What the cell announces.
#[derive(Clone)]
pub struct Membership {
    /// gRPC URL of a shard-manager replica.
    pub shard_manager: String,
    /// The registration sent.
    pub registration: RegisterCellRequest,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// The cell's control plane, whose sandboxes per function are reported as load.
    pub plane: crate::control_plane::ControlPlane,
}

/// Each federated function's sandboxes (ready or being created) on this cell.
fn loads(plane: &crate::control_plane::ControlPlane) -> Vec<FunctionLoad> {
    plane.read(|st| {
        st.function_names()
            .into_iter()
            .filter(|name| name.contains('.'))
            .filter_map(|name| {
                let (_, scale) = st.function(&name)?;
                let load = f64::from(scale.ready + scale.creating);
                Some(FunctionLoad { function: name.replacen('.', "/", 1), load })
            })
            .collect()
    })
}

/// A client of the shard manager at `url` (connected lazily).
pub fn shard_manager_client(url: &str) -> Result<ShardManagerClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let channel = endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(ShardManagerClient::new(channel))
}

/// Registers and heartbeats until `stopped` turns true.
pub async fn run(membership: Membership, mut stopped: watch::Receiver<bool>) {
    let mut client = match shard_manager_client(&membership.shard_manager) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "federation.shard_manager");
            return;
        }
    };
    let id = membership.registration.id.clone();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = if registered {
            let beat =
                client.cell_heartbeat(CellHeartbeatRequest { id: id.clone(), loads: loads(&membership.plane) }).await;
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
