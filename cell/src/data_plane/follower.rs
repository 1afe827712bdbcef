//! Keeps a data plane's functions in step with the control plane: registers, follows the
//! routing stream (a snapshot, then versioned updates; a gap or a broken stream means
//! reconnect for a new snapshot), and reports load — periodically, and at once when a
//! request queues. While the control plane is unreachable the data plane keeps routing by
//! the last table it had (static stability).

use std::collections::HashMap;
use std::time::Duration;

use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::cell::{FunctionLoad, RegisterDataPlaneRequest, ReportLoadRequest, WatchRoutingRequest};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::balancer::BalancePolicy;
use super::dispatch::{DispatchConfig, Dispatcher, Target};
use super::ingress::{FunctionSlot, Functions};
use crate::routing::{Applied, Routing, RoutingView, wire};

/// What the follower needs to know.
#[derive(Debug, Clone)]
pub struct FollowerSettings {
    /// This data plane's ID.
    pub id: String,
    /// Where its ingress listens (told to the control plane).
    pub http_address: String,
    /// Most requests queued per function.
    pub queue_capacity: usize,
    /// Longest a request queues.
    pub queue_timeout: Duration,
    /// Balancing policy.
    pub policy: BalancePolicy,
}

/// Follows the control plane on `channel` until `stop`.
pub async fn follow(
    channel: Channel,
    settings: FollowerSettings,
    functions: Functions,
    mut stop: watch::Receiver<bool>,
) {
    let (urgent_tx, urgent_rx) = mpsc::unbounded_channel::<String>();
    let (interval_tx, interval_rx) = watch::channel(Duration::from_millis(500));
    let reporter = tokio::spawn(report_load(
        CellControlClient::new(channel.clone()),
        settings.id.clone(),
        functions.clone(),
        urgent_rx,
        interval_rx,
    ));
    // A cell's routing snapshot grows with its functions: past tonic's 4 MiB default.
    let mut client = CellControlClient::new(channel).max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES);
    let mut backoff = Duration::from_millis(50);
    loop {
        let session = async {
            let registered = client
                .register_data_plane(RegisterDataPlaneRequest {
                    data_plane_id: settings.id.clone(),
                    http_address: settings.http_address.clone(),
                })
                .await?
                .into_inner();
            if registered.load_report_interval_ms > 0 {
                let _ = interval_tx.send(Duration::from_millis(u64::from(registered.load_report_interval_ms)));
            }
            let mut stream =
                client.watch_routing(WatchRoutingRequest { data_plane_id: settings.id.clone() }).await?.into_inner();
            let mut view = RoutingView::default();
            while let Some(event) = stream.message().await? {
                match wire::from_event(event) {
                    Some(Ok(snapshot)) => {
                        view.reset(snapshot);
                        sync_all(&view, &functions, &settings, &urgent_tx);
                        tracing::info!(
                            version = view.version(),
                            functions = view.functions().len(),
                            "routing snapshot applied"
                        );
                    }
                    Some(Err(update)) => match view.apply(&update) {
                        Applied::Changed => {
                            sync_one(&update.function, update.routing.as_ref(), &functions, &settings, &urgent_tx)
                        }
                        Applied::Stale => {}
                        Applied::Gap { have, got } => {
                            tracing::warn!(have, got, "routing gap; reconnecting for a snapshot");
                            return Ok(());
                        }
                    },
                    None => {}
                }
                metrics::gauge!(crate::metrics::DATA_PLANE_ROUTING_VERSION).set(view.version() as f64);
            }
            Ok::<(), tonic::Status>(())
        };
        tokio::select! {
            result = session => {
                match result {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(status) => tracing::debug!(%status, "control plane unreachable; routing by the last table"),
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    reporter.abort();
}

fn sync_all(
    view: &RoutingView,
    functions: &Functions,
    settings: &FollowerSettings,
    urgent: &mpsc::UnboundedSender<String>,
) {
    let gone: Vec<String> = {
        let map = functions.read().expect("functions lock");
        map.keys().filter(|name| view.get(name).is_none()).cloned().collect()
    };
    for name in gone {
        sync_one(&name, None, functions, settings, urgent);
    }
    for (name, routing) in view.functions() {
        sync_one(name, Some(routing), functions, settings, urgent);
    }
}

fn sync_one(
    name: &str,
    routing: Option<&Routing>,
    functions: &Functions,
    settings: &FollowerSettings,
    urgent: &mpsc::UnboundedSender<String>,
) {
    let mut map = functions.write().expect("functions lock");
    let Some(routing) = routing else {
        // Calls still in flight keep the function reported (with their sandboxes) until
        // they end, so the control plane does not delete a sandbox under one.
        match map.get_mut(name) {
            Some(slot) if slot.dispatcher.in_flight() > 0 => {
                slot.removed = true;
                slot.dispatcher.set_sandboxes(Vec::new());
            }
            _ => {
                map.remove(name);
            }
        }
        return;
    };
    let targets: Vec<Target> = routing
        .endpoints
        .iter()
        .map(|e| Target { id: e.sandbox_id.clone(), endpoint: e.address.clone(), creation: e.creation })
        .collect();
    match map.get_mut(name) {
        Some(slot) if slot.container_concurrency == routing.container_concurrency => {
            slot.removed = false;
            slot.timeout = routing.timeout;
            slot.async_slots = routing.async_slots;
            slot.reserved_concurrency = routing.reserved_concurrency;
            slot.dispatcher.set_sandboxes(targets);
            slot.dispatcher.set_failing(routing.creation_error.clone());
        }
        _ => {
            let config = DispatchConfig {
                queue_capacity: settings.queue_capacity,
                queue_timeout: settings.queue_timeout,
                container_concurrency: routing.container_concurrency,
                policy: settings.policy,
            };
            let urgent = urgent.clone();
            let function = name.to_string();
            let dispatcher = Dispatcher::new(config, seed(name), move || {
                let _ = urgent.send(function.clone());
            });
            dispatcher.set_sandboxes(targets);
            dispatcher.set_failing(routing.creation_error.clone());
            // Calls in flight on the slot being replaced still hold their slots.
            let async_in_flight = map.get(name).map(|s| s.async_in_flight.clone()).unwrap_or_default();
            let calls_in_flight = map.get(name).map(|s| s.calls_in_flight.clone()).unwrap_or_default();
            map.insert(
                name.to_string(),
                FunctionSlot {
                    dispatcher,
                    timeout: routing.timeout,
                    container_concurrency: routing.container_concurrency,
                    async_slots: routing.async_slots,
                    async_in_flight,
                    reserved_concurrency: routing.reserved_concurrency,
                    calls_in_flight,
                    removed: false,
                },
            );
        }
    }
}

fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn loads(functions: &Functions, only: Option<&str>) -> Vec<FunctionLoad> {
    let map = functions.read().expect("functions lock");
    map.iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .map(|(name, slot)| FunctionLoad {
            function: name.clone(),
            in_flight: slot.dispatcher.in_flight(),
            queued: slot.dispatcher.queued() as u32,
            busy_sandboxes: slot.dispatcher.busy_sandboxes(),
        })
        .collect()
}

/// Drops the functions that left the routing once their last call ended (after the report
/// that says they went quiet was made).
fn forget_drained(functions: &Functions) {
    let drained = |slot: &FunctionSlot| slot.removed && slot.dispatcher.in_flight() == 0;
    if functions.read().expect("functions lock").values().any(drained) {
        functions.write().expect("functions lock").retain(|_, slot| !drained(slot));
    }
}

async fn report_load(
    mut client: CellControlClient<Channel>,
    id: String,
    functions: Functions,
    mut urgent: mpsc::UnboundedReceiver<String>,
    interval: watch::Receiver<Duration>,
) {
    let mut tick = tokio::time::interval(*interval.borrow());
    let mut period = *interval.borrow();
    let mut was_busy: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let report: Vec<FunctionLoad> = tokio::select! {
            _ = tick.tick() => {
                let all = loads(&functions, None);
                let (in_flight, queued) = all.iter().fold((0, 0), |(i, q), l| (i + l.in_flight, q + l.queued));
                metrics::gauge!(crate::metrics::IN_FLIGHT).set(f64::from(in_flight));
                metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(f64::from(queued));
                // Only busy functions, and those that just went quiet (so their zero is
                // seen): an idle cell with thousands of functions sends almost nothing.
                let (busy, quiet): (Vec<_>, Vec<_>) = all.into_iter().partition(|l| l.in_flight + l.queued > 0);
                let went_quiet: Vec<FunctionLoad> = quiet.into_iter().filter(|l| was_busy.contains(&l.function)).collect();
                was_busy = busy.iter().map(|l| l.function.clone()).collect();
                forget_drained(&functions);
                busy.into_iter().chain(went_quiet).collect()
            }
            Some(name) = urgent.recv() => {
                // Several requests may have queued at once: one report covers them.
                let mut names: HashMap<String, ()> = HashMap::from([(name, ())]);
                while let Ok(more) = urgent.try_recv() {
                    names.insert(more, ());
                }
                names.keys().flat_map(|n| loads(&functions, Some(n))).collect()
            }
        };
        if report.is_empty() {
            continue;
        }
        if let Err(status) =
            client.report_load(ReportLoadRequest { data_plane_id: id.clone(), functions: report }).await
        {
            tracing::debug!(%status, "could not report load");
        }
        let wanted = *interval.borrow();
        if wanted != period {
            period = wanted;
            tick = tokio::time::interval(period);
        }
    }
}
