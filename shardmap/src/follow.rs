//! Following the shard map: a task subscribes to a shard-manager replica's
//! `WatchShardMap` (a snapshot, then one delta per epoch), keeps the map in memory for
//! lock-cheap lookups, and moves on to the next replica when one fails. While no replica
//! answers it keeps the last map it had (static stability): routers and cells go on
//! serving what they knew.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{WatchShardMapRequest, shard_map_event};
use baton_service::tls::Tls;
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use crate::map::{Delta, MapSnapshot, ShardMap};
use baton_model::Epoch;

/// Histogram: seconds from a shard-manager replica's commit of a delta (its stamp) to this
/// process's map having applied it. Each router and cell exports its own.
pub const PROPAGATION: &str = "baton_shard_map_propagation_seconds";

/// Every metric a process following the shard map exports (routers and cells).
pub const CATALOG: &[baton_service::catalog::Metric] = &[baton_service::catalog::Metric {
    name: PROPAGATION,
    kind: baton_service::catalog::Kind::Histogram,
    labels: &[],
    help: "Time from a shard-manager replica's commit of a change to this process having applied it.",
}];

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What changed, for followers that act on changes (a cell reconciling its functions).
#[derive(Debug, Clone)]
pub enum MapEvent {
    /// The whole map was replaced by a snapshot (first sync, or after a gap).
    Snapshot,
    /// A delta was applied.
    Delta(Delta),
}

/// A followed map, shared by every clone.
#[derive(Clone)]
pub struct MapView {
    map: Arc<RwLock<ShardMap>>,
    /// `None` until the first snapshot.
    epoch: watch::Receiver<Option<Epoch>>,
}

impl MapView {
    /// A view of a fixed map (tests, or a router given no shard manager).
    pub fn fixed(map: ShardMap) -> Self {
        let (tx, epoch) = watch::channel(Some(map.epoch()));
        drop(tx);
        Self { map: Arc::new(RwLock::new(map)), epoch }
    }

    /// The map, for a lookup. Hold the guard briefly: deltas wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, ShardMap> {
        self.map.read().expect("shard map lock")
    }

    /// The epoch applied; 0 before the first snapshot.
    pub fn epoch(&self) -> Epoch {
        self.epoch.borrow().unwrap_or_default()
    }

    /// Whether a snapshot has arrived since start.
    pub fn synced(&self) -> bool {
        self.epoch.borrow().is_some()
    }

    /// Waits until the map has reached `epoch`; false if `timeout` passed first.
    pub async fn wait_for_epoch(&self, epoch: Epoch, timeout: Duration) -> bool {
        let mut rx = self.epoch.clone();
        tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some_and(|e| e >= epoch))).await.is_ok_and(|r| r.is_ok())
    }
}

/// Starts following the map served by `replicas` (gRPC URLs, tried in turn, connected
/// with `tls`) until `stop` turns true. `events`, when given, receives every snapshot and
/// delta after it is applied.
pub fn follow(
    replicas: Vec<String>,
    tls: Tls,
    events: Option<mpsc::UnboundedSender<MapEvent>>,
    stop: watch::Receiver<bool>,
) -> MapView {
    let (tx, epoch) = watch::channel(None);
    let view = MapView { map: Arc::default(), epoch };
    tokio::spawn(run(replicas, tls, view.map.clone(), tx, events, stop));
    view
}

async fn run(
    replicas: Vec<String>,
    tls: Tls,
    map: Arc<RwLock<ShardMap>>,
    epoch: watch::Sender<Option<Epoch>>,
    events: Option<mpsc::UnboundedSender<MapEvent>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    for replica in replicas.iter().cycle() {
        let subscription = subscribe(replica, &tls, &map, &epoch, events.as_ref());
        let ended = tokio::select! {
            ended = subscription => ended,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ended {
            // A stream that had delivered a snapshot was healthy: retry soon.
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(replica, error = %e, "shard-map subscription failed; trying the next replica");
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Follows one replica until its stream ends or breaks. `Ok` if a snapshot was applied.
async fn subscribe(
    replica: &str,
    tls: &Tls,
    map: &RwLock<ShardMap>,
    epoch: &watch::Sender<Option<Epoch>>,
    events: Option<&mpsc::UnboundedSender<MapEvent>>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(replica.to_string())
        .map_err(|e| format!("{replica:?} is not a URL: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        // A replica that hangs without closing the connection is noticed and left.
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    let channel = tls.connect(&endpoint).await.map_err(|e| match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    })?;
    let mut stream = ShardManagerClient::new(channel)
        .max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
        .watch_shard_map(WatchShardMapRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut synced = false;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return if synced { Ok(()) } else { Err("stream ended before a snapshot".into()) },
            Err(status) if synced => {
                tracing::info!(replica, message = status.message(), "shard-map stream ended; resubscribing");
                return Ok(());
            }
            Err(status) => return Err(status.message().to_string()),
        };
        let applied = match event.event {
            Some(shard_map_event::Event::SnapshotJson(json)) => {
                let snapshot: MapSnapshot = serde_json::from_str(&json).map_err(|e| format!("bad snapshot: {e}"))?;
                let fresh = ShardMap::from(snapshot);
                let at = fresh.epoch();
                synced = true;
                let mut current = map.write().expect("shard map lock");
                if *epoch.borrow() >= Some(at) {
                    // A replica behind the map we have: keep ours, skip its deltas until
                    // they pass our epoch.
                    tracing::info!(replica, %at, have = %current.epoch(), "a replica behind our map; keeping ours");
                    continue;
                }
                *current = fresh;
                (at, MapEvent::Snapshot)
            }
            Some(shard_map_event::Event::DeltaJson(json)) if synced => {
                let delta: Delta = serde_json::from_str(&json).map_err(|e| format!("bad delta: {e}"))?;
                let at = delta.epoch;
                if *epoch.borrow() >= Some(at) {
                    continue;
                }
                // A gap means a delta was lost: resubscribe for a fresh snapshot.
                map.write().expect("shard map lock").apply(delta.clone()).map_err(|e| e.to_string())?;
                if delta.applied_unix_micros > 0 {
                    // From the replica's commit to this map having it (clocks of one
                    // machine, or synchronised ones).
                    let lag_us = unix_micros().saturating_sub(delta.applied_unix_micros);
                    metrics::histogram!(PROPAGATION).record(lag_us as f64 / 1e6);
                }
                (at, MapEvent::Delta(delta))
            }
            _ => return Err("a delta came before the snapshot".into()),
        };
        epoch.send_replace(Some(applied.0));
        if let Some(events) = events {
            let _ = events.send(applied.1);
        }
    }
}
