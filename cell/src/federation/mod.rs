//! A cell's membership in a federation: it registers with the shard manager (region,
//! addresses, weight) and heartbeats. A refused heartbeat (the cell was failed over, or
//! the shard manager lost it) registers again; an unreachable shard manager is retried
//! with back-off while the cell keeps serving (static stability).

use std::time::Duration;

pub mod credentials;
pub mod reconcile;

use baton_proto::shard::{CellHealth, CellHeartbeatRequest, FunctionFailure, FunctionLoad, RegisterCellRequest};

/// Longest failure reason a heartbeat carries, bytes.
const MAX_REASON: usize = 2048;
/// Most failing functions a heartbeat names.
const MAX_FAILING: usize = 1000;
use tokio::sync::watch;

/// What the cell announces.
#[derive(Clone)]
pub struct Membership {
    /// The shard-manager replicas.
    pub shard_managers: baton_shardmap::Replicas,
    /// The registration sent.
    pub registration: RegisterCellRequest,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// A function wanting a sandbox this long without one is reported unservable.
    pub unservable_after: Duration,
    /// The cell's control plane, whose sandboxes per function are reported as load.
    pub plane: crate::control_plane::ControlPlane,
}

/// Each federated function's sandboxes (ready or being created) on this cell.
fn loads(plane: &crate::control_plane::ControlPlane) -> Vec<FunctionLoad> {
    plane.read(|st| {
        st.function_names()
            .into_iter()
            .filter_map(|name| {
                let function = baton_model::FunctionId::key_of_cell_name(&name)?;
                let (_, scale) = st.function(&name)?;
                let load = f64::from(scale.ready + scale.creating);
                Some(FunctionLoad { function, load })
            })
            .collect()
    })
}

/// What the cell can serve: its healthy workers, and the federated functions it has not
/// been able to create a sandbox for within `after`.
fn health(plane: &crate::control_plane::ControlPlane, after: Duration) -> CellHealth {
    let now = tokio::time::Instant::now();
    plane.read(|st| CellHealth {
        healthy_workers: st.healthy_workers(),
        image_workers: st.image_workers().len() as u32,
        unservable: st
            .unservable(now, after)
            .iter()
            .filter_map(|name| baton_model::FunctionId::key_of_cell_name(name))
            .collect(),
        failing: st
            .last_failures()
            .into_iter()
            .filter_map(|(name, reason)| {
                let function = baton_model::FunctionId::key_of_cell_name(&name)?;
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                Some(FunctionFailure { function, reason: reason[..end].to_string() })
            })
            .take(MAX_FAILING)
            .collect(),
    })
}

/// Registers and heartbeats until `stopped` turns true.
pub async fn run(membership: Membership, mut stopped: watch::Receiver<bool>) {
    let replicas = &membership.shard_managers;
    let id = membership.registration.id.clone();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    // What the last heartbeat said the cell cannot serve: a change is sent at once rather
    // than at the next period, so those functions move sooner.
    let mut told: Vec<String> = Vec::new();
    loop {
        let wait = if registered {
            let health = health(&membership.plane, membership.unservable_after);
            if !health.unservable.is_empty() && health.unservable != told {
                tracing::warn!(functions = ?health.unservable, healthy_workers = health.healthy_workers, "functions this cell cannot serve; asking the shard manager to move them");
            }
            told = health.unservable.clone();
            let beat = CellHeartbeatRequest { id: id.clone(), loads: loads(&membership.plane), health: Some(health) };
            let beat = replicas.call(beat, |mut c, r| async move { c.cell_heartbeat(r).await }).await;
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
            let registration = membership.registration.clone();
            let registered_now = replicas.call(registration, |mut c, r| async move { c.register_cell(r).await }).await;
            match registered_now {
                Ok(ack) => {
                    tracing::info!(cell = id, epoch = ack.epoch, "registered with the shard manager");
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
        let until = tokio::time::Instant::now() + wait;
        loop {
            let step = until.saturating_duration_since(tokio::time::Instant::now()).min(HEALTH_CHECK);
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(step) => {}
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
            if registered && health(&membership.plane, membership.unservable_after).unservable != told {
                break;
            }
        }
    }
}

/// How often, between heartbeats, the cell checks whether what it cannot serve changed.
const HEALTH_CHECK: Duration = Duration::from_millis(100);
