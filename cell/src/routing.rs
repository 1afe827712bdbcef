//! The routing table the control plane distributes to data planes: per function, its
//! dispatch settings and its ready sandboxes, versioned.
//!
//! The control plane keeps a [`RoutingLog`]: the current table and a short history of
//! changes, each stamped with the next version. A data plane keeps a [`RoutingView`] and
//! applies updates strictly in order: an update whose version is not the next one is a
//! *gap*, and the data plane asks for a snapshot instead (as it does on every reconnect).
//! An update carries a function's whole routing, so applying one needs no merge.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// What a data plane needs of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Requests one sandbox takes at once; 0 is unlimited.
    pub container_concurrency: u32,
    /// Longest one call may take.
    pub timeout: Duration,
    /// Most asynchronous calls in flight at once (`async.max_share` of the function's
    /// capacity); 0 is no limit.
    pub async_slots: u32,
    /// Most calls in flight at once (the function's reserved concurrency); `None`: no cap.
    pub reserved_concurrency: Option<u32>,
    /// Ready sandboxes.
    pub endpoints: Vec<Endpoint>,
    /// Set while there is no ready sandbox and the last creation failed: why (calls then
    /// fail at once instead of queueing for one that is not coming).
    pub creation_error: Option<String>,
}

/// One ready sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its ID.
    pub sandbox_id: String,
    /// host:port.
    pub address: String,
    /// How it was created.
    pub creation: Creation,
}

/// How a sandbox was created: what a cold call's `Server-Timing` and trace show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creation {
    /// The worker's time (its phases together); zero when unknown (a sandbox adopted
    /// after a restart).
    pub took: Duration,
    /// When the control plane asked a worker for it, Unix microseconds (0: unknown).
    pub requested_unix_us: u64,
    /// When the worker answered, Unix microseconds (0: unknown).
    pub answered_unix_us: u64,
    /// The worker's phases, in [`Creation::PHASES`]' order.
    pub phases: [Duration; 4],
}

impl Creation {
    /// The worker's phases of a creation, in the order they run.
    pub const PHASES: [&'static str; 4] = ["image", "cgroup", "spawn", "readiness"];

    /// A creation that took `took`, with no more known of it.
    pub fn took(took: Duration) -> Self {
        Self { took, ..Self::default() }
    }
}

/// One function's routing after a change; `None` when the function was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingUpdate {
    /// Version of this change (1, 2, 3, … per control-plane lifetime).
    pub version: u64,
    /// The function.
    pub function: String,
    /// Its routing now.
    pub routing: Option<Routing>,
}

/// The whole table at a version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingSnapshot {
    /// Version of the last change included.
    pub version: u64,
    /// Every function.
    pub functions: BTreeMap<String, Routing>,
}

/// The control plane's side: the current table and recent changes.
#[derive(Debug, Clone)]
pub struct RoutingLog {
    current: RoutingSnapshot,
    recent: VecDeque<RoutingUpdate>,
    keep: usize,
}

impl RoutingLog {
    /// An empty log keeping the last `keep` changes for catch-up.
    pub fn new(keep: usize) -> Self {
        Self { current: RoutingSnapshot::default(), recent: VecDeque::new(), keep: keep.max(1) }
    }

    /// Records `function`'s new routing (`None`: deleted) and returns the update to send.
    pub fn set(&mut self, function: &str, routing: Option<Routing>) -> RoutingUpdate {
        self.current.version += 1;
        match &routing {
            Some(r) => self.current.functions.insert(function.to_string(), r.clone()),
            None => self.current.functions.remove(function),
        };
        let update = RoutingUpdate { version: self.current.version, function: function.to_string(), routing };
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        self.recent.push_back(update.clone());
        update
    }

    /// A function's routing now.
    pub fn get(&self, function: &str) -> Option<&Routing> {
        self.current.functions.get(function)
    }

    /// Everything now.
    pub fn snapshot(&self) -> RoutingSnapshot {
        self.current.clone()
    }

    /// The changes after `version`, if the log still holds all of them; `None` means the
    /// caller needs a snapshot.
    pub fn since(&self, version: u64) -> Option<Vec<RoutingUpdate>> {
        if version == self.current.version {
            return Some(Vec::new());
        }
        let first = self.recent.front()?.version;
        if version + 1 < first || version > self.current.version {
            return None;
        }
        Some(self.recent.iter().filter(|u| u.version > version).cloned().collect())
    }
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The update was the next one and is applied.
    Changed,
    /// Already seen; nothing changed.
    Stale,
    /// Versions were skipped: the view needs a snapshot.
    Gap {
        /// The version the view has.
        have: u64,
        /// The version that arrived.
        got: u64,
    },
}

/// A data plane's side: the table it routes by.
#[derive(Debug, Clone, Default)]
pub struct RoutingView {
    current: RoutingSnapshot,
}

impl RoutingView {
    /// Replaces everything with `snapshot` (on connect and after a gap).
    pub fn reset(&mut self, snapshot: RoutingSnapshot) {
        self.current = snapshot;
    }

    /// Applies one update if it is the next version.
    pub fn apply(&mut self, update: &RoutingUpdate) -> Applied {
        if update.version <= self.current.version {
            return Applied::Stale;
        }
        if update.version != self.current.version + 1 {
            return Applied::Gap { have: self.current.version, got: update.version };
        }
        self.current.version = update.version;
        match &update.routing {
            Some(r) => self.current.functions.insert(update.function.clone(), r.clone()),
            None => self.current.functions.remove(&update.function),
        };
        Applied::Changed
    }

    /// The version the view is at.
    pub fn version(&self) -> u64 {
        self.current.version
    }

    /// A function's routing, if it exists.
    pub fn get(&self, function: &str) -> Option<&Routing> {
        self.current.functions.get(function)
    }

    /// Every function.
    pub fn functions(&self) -> &BTreeMap<String, Routing> {
        &self.current.functions
    }
}

/// Conversions to and from the wire (`baton.cell.v1` routing messages).
pub mod wire {
    use std::time::Duration;

    use baton_proto::cell::{
        Endpoint as WireEndpoint, FunctionRouting, RoutingEvent, RoutingSnapshot as WireSnapshot,
        RoutingUpdate as WireUpdate, routing_event,
    };

    use super::{Endpoint, Routing, RoutingSnapshot, RoutingUpdate};

    fn routing_to(name: &str, r: &Routing) -> FunctionRouting {
        FunctionRouting {
            name: name.to_string(),
            container_concurrency: r.container_concurrency,
            timeout_ms: r.timeout.as_millis() as u64,
            async_slots: r.async_slots,
            reserved_concurrency: r.reserved_concurrency,
            endpoints: r
                .endpoints
                .iter()
                .map(|e| WireEndpoint {
                    sandbox_id: e.sandbox_id.clone(),
                    address: e.address.clone(),
                    creation_us: e.creation.took.as_micros() as u64,
                    requested_unix_us: e.creation.requested_unix_us,
                    answered_unix_us: e.creation.answered_unix_us,
                    image_us: e.creation.phases[0].as_micros() as u64,
                    cgroup_us: e.creation.phases[1].as_micros() as u64,
                    spawn_us: e.creation.phases[2].as_micros() as u64,
                    readiness_us: e.creation.phases[3].as_micros() as u64,
                })
                .collect(),
            creation_error: r.creation_error.clone().unwrap_or_default(),
        }
    }

    fn routing_from(r: FunctionRouting) -> (String, Routing) {
        let routing = Routing {
            container_concurrency: r.container_concurrency,
            timeout: Duration::from_millis(r.timeout_ms),
            async_slots: r.async_slots,
            reserved_concurrency: r.reserved_concurrency,
            endpoints: r
                .endpoints
                .into_iter()
                .map(|e| Endpoint {
                    sandbox_id: e.sandbox_id,
                    address: e.address,
                    creation: super::Creation {
                        took: Duration::from_micros(e.creation_us),
                        requested_unix_us: e.requested_unix_us,
                        answered_unix_us: e.answered_unix_us,
                        phases: [e.image_us, e.cgroup_us, e.spawn_us, e.readiness_us].map(Duration::from_micros),
                    },
                })
                .collect(),
            creation_error: Some(r.creation_error).filter(|e| !e.is_empty()),
        };
        (r.name, routing)
    }

    /// A snapshot as a stream event.
    pub fn snapshot_event(s: &RoutingSnapshot) -> RoutingEvent {
        RoutingEvent {
            event: Some(routing_event::Event::Snapshot(WireSnapshot {
                version: s.version,
                functions: s.functions.iter().map(|(name, r)| routing_to(name, r)).collect(),
            })),
        }
    }

    /// An update as a stream event.
    pub fn update_event(u: &RoutingUpdate) -> RoutingEvent {
        RoutingEvent {
            event: Some(routing_event::Event::Update(WireUpdate {
                version: u.version,
                function: u.function.clone(),
                routing: u.routing.as_ref().map(|r| routing_to(&u.function, r)),
            })),
        }
    }

    /// A received event: `Ok(snapshot)` or `Err(update)`; `None` for an empty event.
    pub fn from_event(event: RoutingEvent) -> Option<Result<RoutingSnapshot, RoutingUpdate>> {
        match event.event? {
            routing_event::Event::Snapshot(s) => Some(Ok(RoutingSnapshot {
                version: s.version,
                functions: s.functions.into_iter().map(routing_from).collect(),
            })),
            routing_event::Event::Update(u) => Some(Err(RoutingUpdate {
                version: u.version,
                function: u.function,
                routing: u.routing.map(|r| routing_from(r).1),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(eps: &[u32]) -> Option<Routing> {
        Some(Routing {
            container_concurrency: 1,
            timeout: Duration::from_secs(60),
            async_slots: 0,
            reserved_concurrency: None,
            endpoints: eps
                .iter()
                .map(|i| Endpoint {
                    sandbox_id: format!("sb-{i}"),
                    address: format!("127.0.0.1:{}", 20000 + i),
                    creation: Creation {
                        took: Duration::from_micros(u64::from(*i) * 1000),
                        requested_unix_us: 1_700_000_000_000_000 + u64::from(*i),
                        answered_unix_us: 1_700_000_000_001_000 + u64::from(*i),
                        phases: [0, 1, 2, 3].map(|p| Duration::from_micros(p * 100 + u64::from(*i))),
                    },
                })
                .collect(),
            creation_error: eps.is_empty().then(|| "exec: no such file".to_string()),
        })
    }

    #[test]
    fn in_order_updates_apply_and_duplicates_are_stale() {
        let mut log = RoutingLog::new(16);
        let mut view = RoutingView::default();
        let u1 = log.set("echo", routing(&[]));
        let u2 = log.set("echo", routing(&[1, 2]));
        assert_eq!(view.apply(&u1), Applied::Changed);
        assert_eq!(view.get("echo"), routing(&[]).as_ref(), "known, no sandbox yet");
        assert_eq!(view.apply(&u2), Applied::Changed);
        assert_eq!(view.apply(&u1), Applied::Stale);
        assert_eq!(view.get("echo"), routing(&[1, 2]).as_ref());
        assert_eq!(view.apply(&log.set("echo", None)), Applied::Changed);
        assert!(view.get("echo").is_none());
        assert_eq!(view.version(), 3);
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_which_catches_up() {
        let mut log = RoutingLog::new(16);
        let mut view = RoutingView::default();
        let _lost = log.set("a", routing(&[1]));
        let u2 = log.set("b", routing(&[2]));
        assert_eq!(view.apply(&u2), Applied::Gap { have: 0, got: 2 });
        assert!(view.get("b").is_none(), "nothing applied past a gap");
        view.reset(log.snapshot());
        assert_eq!((view.get("a"), view.get("b")), (routing(&[1]).as_ref(), routing(&[2]).as_ref()));
        assert_eq!(view.apply(&log.set("a", None)), Applied::Changed);
    }

    #[test]
    fn wire_round_trip_keeps_everything() {
        let mut log = RoutingLog::new(4);
        log.set("a", routing(&[1, 2]));
        let u = log.set("b", routing(&[]));
        let d = log.set("a", None);
        assert_eq!(wire::from_event(wire::snapshot_event(&log.snapshot())), Some(Ok(log.snapshot())));
        assert_eq!(wire::from_event(wire::update_event(&u)), Some(Err(u)));
        assert_eq!(wire::from_event(wire::update_event(&d)), Some(Err(d)));
    }

    #[test]
    fn catch_up_comes_from_the_log_while_it_holds_the_versions() {
        let mut log = RoutingLog::new(2);
        for i in 1..=4 {
            log.set("f", routing(&[i]));
        }
        assert_eq!(log.since(4), Some(vec![]));
        assert_eq!(log.since(2).unwrap().iter().map(|u| u.version).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(log.since(1), None, "version 2 has left the log: snapshot");
        assert_eq!(log.since(9), None, "a view ahead of the log (control plane restarted): snapshot");
    }
}
