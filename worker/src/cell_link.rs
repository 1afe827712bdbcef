//! The link to the cell's control plane, one per node: register (retrying with back-off
//! while the control plane is absent), heartbeat with capacity and allocation, re-register
//! when the control plane has forgotten the node, and report sandbox exits in order as they
//! happen (kept and retried while the control plane is unreachable).

use std::sync::Arc;
use std::time::Duration;

use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::cell::{
    Capacity, RegisterWorkerRequest, ReportSandboxEventsRequest, SandboxEvent, WorkerHeartbeatRequest,
};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::config::ControlPlaneSection;
use crate::metrics;
use crate::node::WorkerNode;
use crate::runtime::SandboxExit;

/// Most exits sent in one report.
const MAX_BATCH: usize = 256;

/// Exponential back-off with jitter, from `initial` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The next delay: the current one with up to 25% jitter either way; then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = jitter_fraction();
        base.mul_f64(0.75 + 0.5 * jitter)
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A number in [0, 1) from the standard library's random hasher keys.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs one node's link until `stop` turns true. `exits` are the node's sandbox exits to
/// report; `advertise` is the Worker service address given to the control plane.
pub async fn run_link(
    node: Arc<WorkerNode>,
    channel: Channel,
    advertise: String,
    config: ControlPlaneSection,
    exits: mpsc::UnboundedReceiver<SandboxExit>,
    mut stop: watch::Receiver<bool>,
) {
    let client = CellControlClient::new(channel);
    let reporter = tokio::spawn(report_exits(node.clone(), client.clone(), config.clone(), exits, stop.clone()));
    tokio::select! {
        () = register_and_heartbeat(&node, client, &advertise, &config) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    reporter.abort();
}

async fn register_and_heartbeat(
    node: &WorkerNode,
    mut client: CellControlClient<Channel>,
    advertise: &str,
    config: &ControlPlaneSection,
) {
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    loop {
        // Register, retrying until the control plane answers.
        let mut interval = config.heartbeat_interval;
        loop {
            let request = RegisterWorkerRequest {
                node_id: node.id().to_string(),
                address: advertise.to_string(),
                runtime: node.runtime_kind() as i32,
                runtimes: node.runtime_kinds().into_iter().map(|k| k as i32).collect(),
                capacity: Some(wire_capacity(node)),
                sandboxes: node.allocation().sandboxes,
            };
            let mut request = tonic::Request::new(request);
            request.set_timeout(config.call_timeout);
            match client.register_worker(request).await {
                Ok(response) => {
                    let asked = response.into_inner().heartbeat_interval_ms;
                    if asked > 0 {
                        interval = Duration::from_millis(u64::from(asked));
                    }
                    tracing::info!(node = %node.id(), "registered with the control plane");
                    ::metrics::gauge!(metrics::NODES_REGISTERED).increment(1.0);
                    backoff.reset();
                    break;
                }
                Err(status) => {
                    ::metrics::counter!(metrics::CONTROL_PLANE_ERRORS, "call" => "register").increment(1);
                    let delay = backoff.next_delay();
                    tracing::debug!(node = %node.id(), %status, ?delay, "control plane unreachable; retrying registration");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        // Heartbeat until the control plane says it no longer knows this node.
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let allocation = node.allocation();
            let mut request = tonic::Request::new(WorkerHeartbeatRequest {
                node_id: node.id().to_string(),
                capacity: Some(wire_capacity(node)),
                allocated_cpu_millis: allocation.cpu_millis,
                allocated_memory_mib: allocation.memory_mib,
                sandboxes: allocation.sandboxes,
            });
            request.set_timeout(config.call_timeout);
            match client.worker_heartbeat(request).await {
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {
                    tracing::info!(node = %node.id(), "the control plane forgot this node; registering again");
                    ::metrics::gauge!(metrics::NODES_REGISTERED).decrement(1.0);
                    break;
                }
                Err(status) => {
                    ::metrics::counter!(metrics::CONTROL_PLANE_ERRORS, "call" => "heartbeat").increment(1);
                    tracing::debug!(node = %node.id(), %status, "heartbeat failed");
                }
            }
        }
    }
}

async fn report_exits(
    node: Arc<WorkerNode>,
    mut client: CellControlClient<Channel>,
    config: ControlPlaneSection,
    mut exits: mpsc::UnboundedReceiver<SandboxExit>,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    let mut batch: Vec<SandboxEvent> = Vec::new();
    loop {
        if batch.is_empty() {
            let Some(first) = exits.recv().await else {
                return;
            };
            batch.push(event(first));
        }
        while batch.len() < MAX_BATCH {
            match exits.try_recv() {
                Ok(exit) => batch.push(event(exit)),
                Err(_) => break,
            }
        }
        let mut request =
            tonic::Request::new(ReportSandboxEventsRequest { node_id: node.id().to_string(), events: batch.clone() });
        request.set_timeout(config.call_timeout);
        match client.report_sandbox_events(request).await {
            Ok(_) => {
                batch.clear();
                backoff.reset();
            }
            Err(status) => {
                ::metrics::counter!(metrics::CONTROL_PLANE_ERRORS, "call" => "report_events").increment(1);
                tracing::debug!(node = %node.id(), %status, pending = batch.len(), "could not report sandbox exits; retrying");
                if *stop.borrow() {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn wire_capacity(node: &WorkerNode) -> Capacity {
    let capacity = node.capacity();
    Capacity { cpu_millis: capacity.cpu_millis, memory_mib: capacity.memory_mib, sandboxes: capacity.sandboxes }
}

fn event(exit: SandboxExit) -> SandboxEvent {
    SandboxEvent {
        sandbox_id: exit.id.to_string(),
        reason: exit.exit.reason as i32,
        exit_code: exit.exit.code,
        signal: exit.exit.signal,
        at_unix_ms: exit.at_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let bases = [100, 200, 400, 400, 400];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base.mul_f64(0.75) && *d <= base.mul_f64(1.25), "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
