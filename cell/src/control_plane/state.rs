//! The control plane's state and decisions, with no I/O and no clock: events come in as
//! method calls (with the time), and what must happen comes out as [`Command`]s for the
//! glue in `mod.rs` to carry out. Intent (what functions want) and observation (what
//! workers report) meet here.
//!
//! Nothing here is persisted: functions, workers and data planes are written to the store
//! by the caller before they reach this state; sandboxes, loads and autoscaler windows live
//! only here and are rebuilt after a restart from the workers' listings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::calls::BusySandboxes;
use crate::autoscaler::Autoscaler;
use crate::placer::{Need, NodeLoad, PlacementPolicy, Placer, placer};
use crate::routing::{Creation, Endpoint, Routing, RoutingLog, RoutingSnapshot, RoutingUpdate};
use crate::store::WorkerRecord;
use baton_model::function::FunctionSpec;
use baton_proto::{MAX_ID_LEN, NodeId, SandboxId};

use super::sandboxes::{Phase, SandboxEntry, SandboxTable};

/// Settings of the decision logic.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// A worker silent this long is down.
    pub worker_timeout: Duration,
    /// A data plane's load report older than this no longer counts.
    pub load_expiry: Duration,
    /// How long a sandbox leaves the routing table before it is deleted, so in-flight
    /// requests finish; while its function has calls in flight, the function's timeout
    /// if that is longer.
    pub scale_down_drain: Duration,
    /// After a failed creation, how long a function waits before trying again.
    pub create_retry: Duration,
    /// Placement policy.
    pub placement: PlacementPolicy,
    /// Prefix making this control plane's sandbox IDs unique across restarts.
    pub id_prefix: String,
}

/// Something the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create a sandbox on a worker, then report back with [`ControlPlaneState::created`].
    Create {
        /// New sandbox ID.
        sandbox_id: SandboxId,
        /// Worker node.
        node_id: NodeId,
        /// Its Worker service address.
        address: String,
        /// The function's spec.
        spec: Box<FunctionSpec>,
    },
    /// Delete a sandbox on a worker after `after`.
    Delete {
        /// Sandbox ID.
        sandbox_id: SandboxId,
        /// Worker node.
        node_id: NodeId,
        /// Its Worker service address.
        address: String,
        /// Wait this long first (draining).
        after: Duration,
        /// Then, while a data plane reports a call in flight on it, wait up to this long
        /// in all (its function's timeout) before deleting it anyway.
        at_most: Duration,
    },
    /// Ask a worker for its sandboxes, then report back with [`ControlPlaneState::worker_listing`].
    List {
        /// Worker node.
        node_id: NodeId,
        /// Its Worker service address.
        address: String,
    },
    /// Send a routing change to every data plane.
    Publish(RoutingUpdate),
    /// Have a worker pull a function's image before its first sandbox needs it.
    Pull {
        /// Worker node.
        node_id: NodeId,
        /// Its Worker service address.
        address: String,
        /// The function (its image).
        spec: Box<FunctionSpec>,
    },
    /// Tell a worker no function of the cell runs image `digest` any more: its cache
    /// drops it once no sandbox uses it.
    DropImage {
        /// Worker node.
        node_id: NodeId,
        /// Its Worker service address.
        address: String,
        /// The image's manifest digest.
        digest: String,
    },
}

/// A sandbox as the worker listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSandbox {
    /// Sandbox ID.
    pub sandbox_id: SandboxId,
    /// Function it serves.
    pub function: String,
    /// host:port.
    pub endpoint: String,
    /// Still running (not exited).
    pub running: bool,
}

struct FunctionEntry {
    spec: FunctionSpec,
    autoscaler: Autoscaler,
    loads: BTreeMap<String, (u32, u32, Instant)>,
    desired: u32,
    retry_after: Option<Instant>,
    /// Since when it has wanted more sandboxes than it has ready with none created since
    /// (no worker with room, creations failing).
    starved_since: Option<Instant>,
    /// Creations that failed in a row (the back-off grows with them).
    failures: u32,
    /// Why the last creation failed, published to data planes (calls fail at once) while
    /// no sandbox is ready, until the back-off lets the next creation be tried.
    failing: Option<String>,
    /// Why the last creation failed, kept until a creation succeeds or the function is put
    /// again (its status, for tenants).
    last_failure: Option<String>,
}

struct WorkerEntry {
    record: WorkerRecord,
    last_seen: Instant,
    healthy: bool,
}

impl FunctionEntry {
    /// A function just registered or recovered: no load, no sandbox wanted yet.
    fn new(spec: FunctionSpec) -> Self {
        let autoscaler = Autoscaler::new(spec.scaling.clone());
        Self {
            spec,
            autoscaler,
            loads: BTreeMap::new(),
            desired: 0,
            retry_after: None,
            starved_since: None,
            failures: 0,
            failing: None,
            last_failure: None,
        }
    }
}

/// Counts of a function's sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scale {
    /// Ready and in the routing table.
    pub ready: u32,
    /// Being created.
    pub creating: u32,
    /// The autoscaler's last decision.
    pub desired: u32,
}

/// The control plane's state.
pub struct ControlPlaneState {
    config: StateConfig,
    functions: BTreeMap<String, FunctionEntry>,
    workers: BTreeMap<NodeId, WorkerEntry>,
    sandboxes: SandboxTable,
    routing: RoutingLog,
    placer: Box<dyn Placer>,
    next_seq: u64,
    /// Workers not yet listed since start: no function scales until they are (or are down),
    /// so recovered sandboxes are found before new ones are made.
    unlisted: BTreeSet<NodeId>,
    /// Sandboxes with calls in flight, as data planes report them.
    busy: BusySandboxes,
    /// Repeated warnings (a function finding no room every round) once per interval.
    warnings: baton_service::Throttle,
}

/// At most one line per warning cause this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl ControlPlaneState {
    /// An empty state.
    pub fn new(config: StateConfig) -> Self {
        let placer = placer(config.placement, 0x5eed);
        Self {
            config,
            functions: BTreeMap::new(),
            workers: BTreeMap::new(),
            sandboxes: SandboxTable::default(),
            routing: RoutingLog::new(4096),
            placer,
            next_seq: 0,
            unlisted: BTreeSet::new(),
            busy: BusySandboxes::default(),
            warnings: baton_service::Throttle::new(WARNING_INTERVAL),
        }
    }

    /// Loads what the store held at start: functions (their scale held for one stable
    /// window) and workers (given one timeout to heartbeat, and listed before anything
    /// scales).
    pub fn recover(&mut self, functions: Vec<FunctionSpec>, workers: Vec<WorkerRecord>, now: Instant) -> Vec<Command> {
        let mut commands = Vec::new();
        for spec in functions {
            let hold = now + spec.scaling.stable_window;
            let name = spec.name.clone();
            let mut entry = FunctionEntry::new(spec);
            entry.autoscaler.hold_until(hold);
            self.functions.insert(name.clone(), entry);
            commands.push(self.publish(&name));
        }
        for record in workers {
            self.unlisted.insert(record.node_id.clone());
            commands.push(Command::List { node_id: record.node_id.clone(), address: record.address.clone() });
            self.workers.insert(record.node_id.clone(), WorkerEntry { record, last_seen: now, healthy: true });
        }
        commands
    }

    fn routing_of(&self, name: &str) -> Option<Routing> {
        let f = self.functions.get(name)?;
        let endpoints: Vec<Endpoint> = self
            .sandboxes
            .of_function(name)
            .filter_map(|(id, s)| match &s.phase {
                Phase::Ready { endpoint, creation } => {
                    Some(Endpoint { sandbox_id: id.to_string(), address: endpoint.clone(), creation: *creation })
                }
                _ => None,
            })
            .collect();
        let creation_error = f.failing.clone().filter(|_| endpoints.is_empty());
        Some(Routing {
            container_concurrency: f.spec.scaling.container_concurrency,
            timeout: f.spec.timeout,
            async_slots: f.spec.async_policy.slots(
                f.spec.scaling.max_scale,
                f.spec.scaling.container_concurrency,
                f.spec.scaling.target_concurrency,
            ),
            reserved_concurrency: f.spec.reserved_concurrency,
            endpoints,
            creation_error,
        })
    }

    fn publish(&mut self, name: &str) -> Command {
        let routing = self.routing_of(name);
        Command::Publish(self.routing.set(name, routing))
    }

    /// The routing table now.
    pub fn snapshot(&self) -> RoutingSnapshot {
        self.routing.snapshot()
    }

    /// A function's spec and scale.
    pub fn function(&self, name: &str) -> Option<(FunctionSpec, Scale)> {
        let f = self.functions.get(name)?;
        Some((f.spec.clone(), self.scale(name)))
    }

    /// Every function's name.
    pub fn function_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    /// A function's sandbox counts.
    pub fn scale(&self, name: &str) -> Scale {
        let mut scale = Scale { desired: self.functions.get(name).map(|f| f.desired).unwrap_or(0), ..Scale::default() };
        for (_, s) in self.sandboxes.of_function(name) {
            match s.phase {
                Phase::Ready { .. } => scale.ready += 1,
                Phase::Creating => scale.creating += 1,
                Phase::Deleting => {}
            }
        }
        scale
    }

    /// The `k` functions with the most sandboxes wanted or held (the larger of desired and
    /// ready plus creating), most first, ties by name, with their counts: the functions
    /// that get series of their own in `baton_cell_function_sandboxes`.
    pub fn busiest(&self, k: usize) -> Vec<(String, Scale)> {
        if k == 0 {
            return Vec::new();
        }
        busiest(self.functions.keys().map(|name| (name.clone(), self.scale(name))).collect(), k)
    }

    /// Registers or replaces a function; returns whether it is new.
    pub fn put_function(&mut self, spec: FunctionSpec) -> (bool, Vec<Command>) {
        let name = spec.name.clone();
        let mut commands = Vec::new();
        let before = self.functions.get(&name).map(|f| f.spec.image_digest.clone());
        if before.as_deref() != Some(spec.image_digest.as_str()) {
            commands.extend(self.pulls(&spec, None));
        }
        // Sandboxes of an older build (another image digest, program, command, arguments,
        // environment or resources) are replaced: out of the routing at once, deleted once
        // their calls are done; new ones start as calls need them.
        let stale = self.functions.get(&name).is_some_and(|f| !same_build(&f.spec, &spec));
        if stale {
            let busy = self.functions[&name].loads.values().any(|(in_flight, queued, _)| in_flight + queued > 0);
            let (drain, timeout) = (self.drain(spec.timeout, busy), spec.timeout);
            let ids: Vec<SandboxId> = self.sandboxes.of_function(&name).map(|(id, _)| id.clone()).collect();
            for id in ids {
                commands.extend(self.retire(&id, drain, timeout));
            }
        }
        let created = match self.functions.get_mut(&name) {
            Some(f) => {
                f.autoscaler.set_scaling(spec.scaling.clone());
                f.spec = spec;
                // A new spec may fix what made creations fail: try it at once.
                (f.failures, f.failing, f.retry_after, f.last_failure) = (0, None, None, None);
                false
            }
            None => {
                self.functions.insert(name.clone(), FunctionEntry::new(spec));
                true
            }
        };
        if let Some(old) = before {
            commands.extend(self.drop_if_unused(&old));
        }
        commands.push(self.publish(&name));
        (created, commands)
    }

    /// Pulls of `spec`'s image on every healthy worker that runs images (or only on
    /// `only`); none for a function without one.
    fn pulls(&self, spec: &FunctionSpec, only: Option<&NodeId>) -> Vec<Command> {
        if spec.image.is_empty() || spec.runtime != baton_model::Runtime::Oci {
            return Vec::new();
        }
        self.workers
            .values()
            .filter(|w| w.healthy && w.record.offers(baton_model::Runtime::Oci))
            .filter(|w| only.is_none_or(|id| *id == w.record.node_id))
            .map(|w| Command::Pull {
                node_id: w.record.node_id.clone(),
                address: w.record.address.clone(),
                spec: Box::new(spec.clone()),
            })
            .collect()
    }

    /// When no function of the cell runs image `digest` any more, tells every worker that
    /// runs images to let it go.
    fn drop_if_unused(&self, digest: &str) -> Vec<Command> {
        if digest.is_empty() || self.functions.values().any(|f| f.spec.image_digest == digest) {
            return Vec::new();
        }
        self.workers
            .values()
            .filter(|w| w.record.offers(baton_model::Runtime::Oci))
            .map(|w| Command::DropImage {
                node_id: w.record.node_id.clone(),
                address: w.record.address.clone(),
                digest: digest.to_string(),
            })
            .collect()
    }

    /// Forgets a function and deletes its sandboxes; `None` when unknown.
    pub fn delete_function(&mut self, name: &str) -> Option<Vec<Command>> {
        let f = self.functions.remove(name)?;
        let busy = f.loads.values().any(|(in_flight, queued, _)| in_flight + queued > 0);
        let drain = self.drain(f.spec.timeout, busy);
        let mut commands = vec![Command::Publish(self.routing.set(name, None))];
        let ids: Vec<SandboxId> = self.sandboxes.of_function(name).map(|(id, _)| id.clone()).collect();
        for id in ids {
            commands.extend(self.retire(&id, drain, f.spec.timeout));
        }
        commands.extend(self.drop_if_unused(&f.spec.image_digest));
        Some(commands)
    }

    /// How long a retired sandbox stays before it is deleted. Out of the routing, it gets
    /// no new call; while its function has calls in flight (one may be on it), it stays
    /// until the function's timeout, by when the data plane has ended every call, so no
    /// call is cut off. An idle function's sandboxes go after `scale_down_drain`.
    fn drain(&self, timeout: Duration, busy: bool) -> Duration {
        if busy { self.config.scale_down_drain.max(timeout) } else { self.config.scale_down_drain }
    }

    /// Marks a sandbox deleting and returns the delete command (none while it is still
    /// being created: [`ControlPlaneState::created`] deletes it when the creation returns).
    fn retire(&mut self, id: &SandboxId, after: Duration, at_most: Duration) -> Option<Command> {
        let s = self.sandboxes.get_mut(id)?;
        if s.phase == Phase::Creating {
            s.phase = Phase::Deleting;
            return None;
        }
        s.phase = Phase::Deleting;
        let node_id = s.node_id.clone();
        let address = self.workers.get(&node_id).map(|w| w.record.address.clone())?;
        Some(Command::Delete { sandbox_id: id.clone(), node_id, address, after, at_most: at_most.max(after) })
    }

    /// A worker registered (new, restarted, or after this control plane restarted).
    pub fn register_worker(&mut self, record: WorkerRecord, now: Instant) -> Vec<Command> {
        let command = Command::List { node_id: record.node_id.clone(), address: record.address.clone() };
        self.unlisted.insert(record.node_id.clone());
        let node_id = record.node_id.clone();
        self.workers.insert(record.node_id.clone(), WorkerEntry { record, last_seen: now, healthy: true });
        let mut commands = vec![command];
        // A new (or restarted) worker gets the images of the cell's functions before their
        // sandboxes land on it.
        for f in self.functions.values() {
            commands.extend(self.pulls(&f.spec, Some(&node_id)));
        }
        commands
    }

    /// A worker's heartbeat; `None` when the worker is unknown (it should register).
    pub fn heartbeat(&mut self, node_id: &str, now: Instant) -> Option<Vec<Command>> {
        let node_id = self.workers.get_key_value(node_id)?.0.clone();
        let w = self.workers.get_mut(&node_id)?;
        w.last_seen = now;
        if w.healthy {
            return Some(Vec::new());
        }
        // Back from the dead: its old sandboxes were replaced; list it to clean them up.
        w.healthy = true;
        let command = Command::List { node_id: node_id.clone(), address: w.record.address.clone() };
        self.unlisted.insert(node_id);
        Some(vec![command])
    }

    /// Whether a worker is known (for the store: only new or changed records are written).
    pub fn worker_record(&self, node_id: &str) -> Option<&WorkerRecord> {
        self.workers.get(node_id).map(|w| &w.record)
    }

    /// Merges a worker's listing: sandboxes of known functions are adopted, the rest
    /// deleted; tracked sandboxes the worker no longer has are dropped.
    pub fn worker_listing(&mut self, node_id: &NodeId, listed: Vec<ListedSandbox>) -> Vec<Command> {
        self.unlisted.remove(node_id);
        let Some(address) = self.workers.get(node_id).map(|w| w.record.address.clone()) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        let mut touched = BTreeSet::new();
        let listed_ids: BTreeSet<SandboxId> = listed.iter().map(|s| s.sandbox_id.clone()).collect();
        for s in listed {
            if self.sandboxes.contains(&s.sandbox_id) {
                continue;
            }
            if let (true, Some(f)) = (s.running, self.functions.get(&s.function)) {
                self.next_seq += 1;
                touched.insert(s.function.clone());
                let entry = SandboxEntry {
                    cpu_millis: f.spec.resources.cpu_millis,
                    memory_mib: f.spec.resources.memory_mib,
                    function: s.function,
                    node_id: node_id.clone(),
                    phase: Phase::Ready { endpoint: s.endpoint, creation: Creation::default() },
                    seq: self.next_seq,
                };
                self.sandboxes.insert(s.sandbox_id, entry);
            } else {
                commands.push(Command::Delete {
                    sandbox_id: s.sandbox_id,
                    node_id: node_id.clone(),
                    address: address.clone(),
                    after: Duration::ZERO,
                    at_most: Duration::ZERO,
                });
            }
        }
        let gone: Vec<SandboxId> = self
            .sandboxes
            .on_node(node_id)
            .into_iter()
            .filter(|id| {
                !listed_ids.contains(id)
                    && self.sandboxes.get(id).is_some_and(|s| matches!(s.phase, Phase::Ready { .. }))
            })
            .collect();
        for id in gone {
            if let Some(s) = self.sandboxes.remove(&id) {
                touched.insert(s.function);
            }
        }
        for name in touched {
            commands.push(self.publish(&name));
        }
        commands
    }

    /// A worker could not be listed: stop waiting for it, so one unreachable worker does
    /// not hold up every function's scaling. It stays placeable while it heartbeats; what
    /// it holds untracked is adopted or deleted when it next registers.
    pub fn listing_failed(&mut self, node_id: &str) {
        self.unlisted.remove(node_id);
    }

    /// A sandbox ended on its own: drop it, reroute, and clean up its record on the worker.
    pub fn sandbox_exited(&mut self, node_id: &str, sandbox_id: &SandboxId) -> Vec<Command> {
        let Some(s) = self.sandboxes.remove(sandbox_id) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        if let Some((node_id, w)) = self.workers.get_key_value(node_id) {
            commands.push(Command::Delete {
                sandbox_id: sandbox_id.clone(),
                node_id: node_id.clone(),
                address: w.record.address.clone(),
                after: Duration::ZERO,
                at_most: Duration::ZERO,
            });
        }
        if matches!(s.phase, Phase::Ready { .. }) && self.functions.contains_key(&s.function) {
            commands.push(self.publish(&s.function));
        }
        commands
    }

    /// Records a data plane's load; returns the functions with queued requests, which
    /// should be evaluated at once.
    pub fn report_load(&mut self, data_plane: &str, loads: &[(String, u32, u32)], now: Instant) -> Vec<String> {
        let mut urgent = Vec::new();
        for (name, in_flight, queued) in loads {
            if let Some(f) = self.functions.get_mut(name) {
                f.loads.insert(data_plane.to_string(), (*in_flight, *queued, now));
                if *queued > 0 {
                    urgent.push(name.clone());
                }
            }
        }
        urgent
    }

    /// Takes a data plane's list of `function`'s sandboxes with calls in flight on it.
    pub fn report_busy(&mut self, data_plane: &str, function: &str, sandboxes: Vec<String>, now: Instant) {
        self.busy.report(data_plane, function, sandboxes, now, self.config.load_expiry);
    }

    /// Whether a data plane reported a call in flight on sandbox `id` within the load
    /// expiry: a retired sandbox is not deleted while it does.
    pub fn holds_calls(&self, id: &str, now: Instant) -> bool {
        self.sandboxes.get(id).is_some_and(|s| self.busy.holds_calls(&s.function, id, now, self.config.load_expiry))
    }

    /// Marks workers silent past the timeout as down and drops their sandboxes.
    pub fn check_workers(&mut self, now: Instant) -> Vec<Command> {
        let timeout = self.config.worker_timeout;
        let mut down = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            if w.healthy && now.duration_since(w.last_seen) > timeout {
                w.healthy = false;
                down.push(id.clone());
            }
        }
        let mut touched = BTreeSet::new();
        for node in &down {
            tracing::warn!(node = %node, "worker missed its heartbeats; its sandboxes are dropped and replaced");
            self.unlisted.remove(node);
            for id in self.sandboxes.on_node(node) {
                if let Some(s) = self.sandboxes.remove(&id) {
                    touched.insert(s.function);
                }
            }
        }
        touched.retain(|f| self.functions.contains_key(f));
        touched.into_iter().map(|f| self.publish(&f)).collect()
    }

    /// A creation returned: `Ok((endpoint, how it was created))` makes the sandbox ready and
    /// routes to it.
    pub fn created(
        &mut self,
        sandbox_id: &SandboxId,
        result: Result<(String, Creation), String>,
        now: Instant,
    ) -> Vec<Command> {
        let Some(s) = self.sandboxes.get_mut(sandbox_id) else {
            return Vec::new();
        };
        match (result, s.phase.clone()) {
            (Ok((endpoint, creation)), Phase::Creating) => {
                s.phase = Phase::Ready { endpoint, creation };
                let function = s.function.clone();
                if let Some(f) = self.functions.get_mut(&function) {
                    (f.starved_since, f.failures, f.failing, f.last_failure) = (None, 0, None, None);
                }
                vec![self.publish(&function)]
            }
            (Ok(_), _) => {
                // Retired while being created (function deleted or scaled down): delete it.
                let node_id = s.node_id.clone();
                self.workers
                    .get(&node_id)
                    .map(|w| Command::Delete {
                        sandbox_id: sandbox_id.clone(),
                        node_id: node_id.clone(),
                        address: w.record.address.clone(),
                        after: Duration::ZERO,
                        at_most: Duration::ZERO,
                    })
                    .into_iter()
                    .collect()
            }
            (Err(error), _) => {
                let function = s.function.clone();
                self.sandboxes.remove(sandbox_id);
                if let Some(held_back) = self.warnings.check(&format!("create {function}"), now.into_std()) {
                    tracing::warn!(%function, sandbox = %sandbox_id, %error, held_back, "sandbox creation failed");
                }
                let Some(f) = self.functions.get_mut(&function) else { return Vec::new() };
                f.failures += 1;
                f.retry_after = Some(now + creation_backoff(self.config.create_retry, f.failures));
                f.last_failure = Some(error.clone());
                f.failing = Some(error);
                // Data planes answer its calls at once meanwhile (if no sandbox is ready).
                vec![self.publish(&function)]
            }
        }
    }

    /// The functions that have wanted a sandbox for longer than `after` without one being
    /// created (no worker with room, creations failing), or at all while no worker is
    /// healthy: this cell cannot serve them.
    pub fn unservable(&self, now: Instant, after: Duration) -> Vec<String> {
        // Without any worker nothing can be created: no need to wait.
        let no_worker = self.healthy_workers() == 0;
        self.functions
            .iter()
            .filter(|(_, f)| f.starved_since.is_some_and(|t| no_worker || now.duration_since(t) > after))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The healthy workers that run images: (node, address).
    pub fn image_workers(&self) -> Vec<(NodeId, String)> {
        self.workers
            .values()
            .filter(|w| w.healthy && w.record.offers(baton_model::Runtime::Oci))
            .map(|w| (w.record.node_id.clone(), w.record.address.clone()))
            .collect()
    }

    /// The functions whose last creation failed, with why.
    pub fn last_failures(&self) -> Vec<(String, String)> {
        self.functions.iter().filter_map(|(name, f)| Some((name.clone(), f.last_failure.clone()?))).collect()
    }

    /// Workers that heartbeat.
    pub fn healthy_workers(&self) -> u32 {
        self.workers.values().filter(|w| w.healthy).count() as u32
    }

    /// Whether every worker known at start has been listed, so scaling may begin.
    pub fn recovered(&self) -> bool {
        self.unlisted.iter().all(|id| self.workers.get(id).is_none_or(|w| !w.healthy))
    }

    /// Runs the autoscaler of `name` and plans creations and deletions.
    pub fn evaluate(&mut self, name: &str, now: Instant) -> Vec<Command> {
        if !self.recovered() {
            return Vec::new();
        }
        let expiry = self.config.load_expiry;
        let scale = self.scale(name);
        let mut commands: Vec<Command> = self.end_backoff(name, now).into_iter().collect();
        let Some(f) = self.functions.get_mut(name) else {
            return commands;
        };
        f.loads.retain(|_, (_, _, at)| now.duration_since(*at) <= expiry);
        let concurrency: u32 = f.loads.values().map(|(in_flight, queued, _)| in_flight + queued).sum();
        // Most functions are idle most of the time: skip them at no cost.
        if concurrency == 0
            && scale.ready + scale.creating == 0
            && f.spec.scaling.min_scale == 0
            && f.autoscaler.is_idle(now)
        {
            f.desired = 0;
            f.starved_since = None;
            return commands;
        }
        f.autoscaler.record(now, f64::from(concurrency));
        let decision = f.autoscaler.decide(now, scale.ready);
        f.desired = decision.desired;
        let desired = decision.desired;
        if desired > scale.ready {
            f.starved_since.get_or_insert(now);
        } else {
            f.starved_since = None;
        }
        let retry_blocked = f.retry_after.is_some_and(|t| now < t);
        let spec = f.spec.clone();
        if desired > scale.ready + scale.creating && !retry_blocked {
            for _ in 0..desired - scale.ready - scale.creating {
                match self.place(&spec) {
                    Some(command) => commands.push(command),
                    None => {
                        if let Some(held_back) = self.warnings.check(&format!("room {name}"), now.into_std()) {
                            tracing::warn!(function = name, held_back, "no worker has room for another sandbox");
                        }
                        break;
                    }
                }
            }
        } else if desired < scale.ready {
            // Newest first: the oldest sandboxes are the warmest.
            let mut ready: Vec<(u64, SandboxId)> = self
                .sandboxes
                .of_function(name)
                .filter(|(_, s)| matches!(s.phase, Phase::Ready { .. }))
                .map(|(id, s)| (s.seq, id.clone()))
                .collect();
            ready.sort_unstable_by(|a, b| b.cmp(a));
            let drain = self.drain(spec.timeout, concurrency > 0);
            for (_, id) in ready.into_iter().take((scale.ready - desired) as usize) {
                commands.extend(self.retire(&id, drain, spec.timeout));
            }
            commands.push(self.publish(name));
        }
        commands
    }

    /// Withdraws a function's published creation failure once its back-off is over, so
    /// calls queue again and their demand brings the next try.
    fn end_backoff(&mut self, name: &str, now: Instant) -> Option<Command> {
        let f = self.functions.get_mut(name)?;
        if f.failing.is_none() || f.retry_after.is_some_and(|t| now < t) {
            return None;
        }
        f.failing = None;
        Some(self.publish(name))
    }

    fn place(&mut self, spec: &FunctionSpec) -> Option<Command> {
        let runtime = spec.runtime;
        let nodes: Vec<NodeLoad> = self
            .workers
            .values()
            .filter(|w| w.healthy && w.record.offers(runtime) && !self.unlisted.contains(&w.record.node_id))
            .map(|w| {
                let given = self.sandboxes.allocation(&w.record.node_id);
                NodeLoad {
                    id: w.record.node_id.clone(),
                    cpu_capacity: w.record.cpu_millis,
                    memory_capacity: w.record.memory_mib,
                    max_sandboxes: w.record.max_sandboxes,
                    cpu_allocated: given.cpu_millis,
                    memory_allocated: given.memory_mib,
                    sandboxes: given.sandboxes,
                }
            })
            .collect();
        let need = Need { cpu_millis: spec.resources.cpu_millis, memory_mib: spec.resources.memory_mib };
        let chosen = nodes.get(self.placer.place(&nodes, need)?)?.id.clone();
        self.next_seq += 1;
        let sandbox_id = sandbox_id(&spec.name, &self.config.id_prefix, self.next_seq);
        self.sandboxes.insert(
            sandbox_id.clone(),
            SandboxEntry {
                function: spec.name.clone(),
                node_id: chosen.clone(),
                phase: Phase::Creating,
                seq: self.next_seq,
                cpu_millis: spec.resources.cpu_millis,
                memory_mib: spec.resources.memory_mib,
            },
        );
        let address = self.workers[&chosen].record.address.clone();
        Some(Command::Create { sandbox_id, node_id: chosen, address, spec: Box::new(spec.clone()) })
    }

    /// Forgets a deleted sandbox (after its delete command ran).
    pub fn deleted(&mut self, sandbox_id: &str) {
        if self.sandboxes.get(sandbox_id).is_some_and(|s| s.phase == Phase::Deleting) {
            self.sandboxes.remove(sandbox_id);
        }
    }

    /// Totals for the gauges: (ready, desired, healthy workers, down workers).
    pub fn totals(&self) -> crate::metrics::Totals {
        let ready = self.sandboxes.ready() as u32;
        let desired = self.functions.values().map(|f| f.desired).sum();
        let mut totals = crate::metrics::Totals { ready, desired, ..Default::default() };
        for w in self.workers.values() {
            if !w.healthy {
                totals.down += 1;
                continue;
            }
            totals.healthy += 1;
            let given = self.sandboxes.allocation(&w.record.node_id);
            totals.cpu_millis.offered += u64::from(w.record.cpu_millis);
            totals.cpu_millis.allocated += u64::from(given.cpu_millis);
            totals.memory_mib.offered += w.record.memory_mib;
            totals.memory_mib.allocated += given.memory_mib;
            totals.sandboxes.offered += u64::from(w.record.max_sandboxes);
            totals.sandboxes.allocated += u64::from(given.sandboxes);
        }
        totals
    }

    /// Sandboxes tracked on a node (tests and listings).
    pub fn sandboxes_on(&self, node_id: &str) -> usize {
        self.sandboxes.on_node(node_id).len()
    }
}

/// Longest wait between creations of a function whose creations keep failing.
pub const MAX_CREATION_BACKOFF: Duration = Duration::from_secs(60);

/// How long a function waits after its `failures`-th creation failure in a row: `base`,
/// doubling with each further failure, at most [`MAX_CREATION_BACKOFF`] (Kubernetes's
/// crash-loop back-off, on a shorter scale).
pub fn creation_backoff(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(MAX_CREATION_BACKOFF.max(base))
}

/// A new sandbox's ID: its function's name (cut short where the whole would not fit) for
/// people reading listings and logs, then this control plane's prefix and a sequence
/// number, which alone make it unique.
fn sandbox_id(function: &str, prefix: &str, seq: u64) -> SandboxId {
    let suffix = format!("-{prefix}-{seq}");
    let room = MAX_ID_LEN.saturating_sub(suffix.len());
    // Function names are ASCII letters, digits, '-' and '.', as IDs are.
    let name = function.get(..function.len().min(room)).unwrap_or("sandbox");
    SandboxId::new(format!("{name}{suffix}"))
        .or_else(|_| SandboxId::new(format!("sandbox{suffix}")))
        .expect("a prefix of hex digits and a number make a valid ID")
}

/// Whether sandboxes made for `old` serve `new` as they are: the same thing runs with the
/// same limits (scaling and timeouts may differ).
fn same_build(old: &FunctionSpec, new: &FunctionSpec) -> bool {
    (old.runtime, &old.executable, &old.image_digest, &old.command, old.port, &old.args, &old.env, old.resources)
        == (new.runtime, &new.executable, &new.image_digest, &new.command, new.port, &new.args, &new.env, new.resources)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

/// The `k` of `all` with the most sandboxes wanted or held (the larger of desired and ready
/// plus creating), most first, ties by name. Pure.
pub fn busiest(mut all: Vec<(String, Scale)>, k: usize) -> Vec<(String, Scale)> {
    let size = |s: &Scale| s.desired.max(s.ready + s.creating);
    all.sort_unstable_by(|(a, x), (b, y)| size(y).cmp(&size(x)).then_with(|| a.cmp(b)));
    all.truncate(k);
    all
}
