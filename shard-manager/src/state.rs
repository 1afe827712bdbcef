//! The replicated federation state and the commands that change it.
//!
//! What do we store (through raft, on every replica)? Tenants and their default region;
//! API keys, as hashes only; the function catalog (tenant, name, home region, spec);
//! cells; each function's assignment with its generation; and the epoch, bumped by every
//! change so routers and cells can follow the map by deltas. Loads, heartbeats and
//! sandboxes are not stored: the leader rebuilds them from the cells' reports.
//!
//! `apply` is deterministic: it reads nothing but the state and the command (no clock, no
//! randomness), so every replica reaches the same state from the same log. Choices that
//! need more (which cell a new function goes to) are made by the leader before it
//! proposes, and travel in the command.

use std::collections::{BTreeMap, BTreeSet};

use baton_model::{Epoch, FunctionId, Generation};
use baton_shardmap::{Assignment, Cell, CellId, CellState, Change, Delta, MapSnapshot, ShardMap};
use serde::{Deserialize, Serialize};

mod limits;
mod rejection;
mod requests;

pub use limits::{TenantLimits, Usage};
pub use rejection::{Rejection, RejectionClass};
pub use requests::{REQUESTS_KEPT, Remembered, RequestLog};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// Region its functions live in unless they say otherwise.
    pub default_region: String,
    /// Most functions it may have; 0: no limit (tenants stored before limits existed).
    #[serde(default)]
    pub max_functions: u32,
    /// What its functions may run and hold.
    #[serde(default)]
    pub limits: TenantLimits,
}

/// A registered function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Owning tenant.
    pub tenant: String,
    /// Name within the tenant.
    pub name: String,
    /// Region placement and failover prefer.
    pub home_region: String,
    /// The cell's function spec, as JSON.
    pub spec_json: String,
    /// What it takes of its tenant's limits, worked out from the spec when registered.
    #[serde(default)]
    pub usage: Usage,
}

/// A change to the federation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates or updates a tenant.
    PutTenant(Tenant),
    /// Deletes a tenant without functions, with its API keys and registry credentials.
    DeleteTenant {
        /// The tenant.
        name: String,
    },
    /// Adds an API key (its hash) for a tenant.
    PutApiKey {
        /// Hash of the key.
        key_hash: String,
        /// Its tenant.
        tenant: String,
    },
    /// Revokes an API key.
    RevokeApiKey {
        /// Hash of the key.
        key_hash: String,
    },
    /// Stores a tenant's credentials for a registry, sealed (the replica that took the
    /// request sealed them: the log holds no plaintext).
    PutRegistryCredentials {
        /// The tenant.
        tenant: String,
        /// The registry (normalized).
        registry: String,
        /// The sealed credentials.
        sealed: String,
    },
    /// Forgets a tenant's credentials for a registry.
    DeleteRegistryCredentials {
        /// The tenant.
        tenant: String,
        /// The registry (normalized).
        registry: String,
    },
    /// Adds or updates a cell.
    PutCell(Cell),
    /// Changes a cell's state.
    SetCellState {
        /// The cell.
        cell: CellId,
        /// Its new state.
        state: CellState,
    },
    /// Registers or updates a function; a new one is assigned to `cell`.
    PutFunction {
        /// The function.
        record: FunctionRecord,
        /// Its cell if it is new (an existing function keeps its owner).
        cell: CellId,
    },
    /// Registers or updates many functions at once (all or none); new ones go to the cell
    /// given with each.
    PutFunctions(Vec<(FunctionRecord, CellId)>),
    /// Deletes a function and its assignment.
    DeleteFunction {
        /// Function ID (`tenant/name`).
        id: String,
    },
    /// Pins a function to its cell (the rebalancer leaves it), or unpins it.
    Pin {
        /// Function ID.
        function: String,
        /// Pinned or not.
        pinned: bool,
    },
    /// Gives a function a new owner, with the next generation.
    Assign {
        /// Function ID.
        function: String,
        /// Its new owner.
        cell: CellId,
    },
    /// Independent commands in one raft entry (the proposer's batches): each applied or
    /// rejected on its own, in order, each applied one with its own epoch and delta.
    Batch(Vec<Command>),
    /// `command` sent with the caller's request ID: applied once; the same ID again is
    /// answered with the first outcome and changes nothing (a retried write).
    Once {
        /// The caller's request ID.
        request: String,
        /// The write.
        command: Box<Command>,
    },
}

impl Command {
    /// The write itself, without its request ID.
    pub fn inner(&self) -> &Command {
        match self {
            Command::Once { command, .. } => command.inner(),
            other => other,
        }
    }

    /// What the write is about (its kind and target, not the choices a leader makes for
    /// it, such as a new function's cell), hashed: kept with its request ID, so a retry
    /// matches and the same ID on another write does not.
    pub fn subject(&self) -> u64 {
        let text = match self.inner() {
            Command::PutTenant(tenant) => format!("put-tenant {}", tenant.name),
            Command::DeleteTenant { name } => format!("delete-tenant {name}"),
            Command::PutApiKey { key_hash, .. } => format!("put-api-key {key_hash}"),
            // By the key's ID (its hash's first 16 digits), which is what callers name.
            Command::RevokeApiKey { key_hash } => format!("revoke-api-key {}", &key_hash[..key_hash.len().min(16)]),
            Command::PutRegistryCredentials { tenant, registry, .. } => {
                format!("put-registry-credentials {tenant} {registry}")
            }
            Command::DeleteRegistryCredentials { tenant, registry } => {
                format!("delete-registry-credentials {tenant} {registry}")
            }
            Command::PutCell(cell) => format!("put-cell {}", cell.id),
            Command::SetCellState { cell, state } => format!("set-cell-state {cell} {state:?}"),
            Command::PutFunction { record, .. } => {
                format!("put-function {}", FunctionId::key_of(&record.tenant, &record.name))
            }
            Command::PutFunctions(functions) => {
                let ids = functions.iter().map(|(r, _)| FunctionId::key_of(&r.tenant, &r.name));
                format!("put-functions {}", ids.collect::<Vec<_>>().join(" "))
            }
            Command::DeleteFunction { id } => format!("delete-function {id}"),
            Command::Pin { function, pinned } => format!("pin {function} {pinned}"),
            Command::Assign { function, cell } => format!("assign {function} {cell}"),
            Command::Batch(_) | Command::Once { .. } => "batch".to_string(),
        };
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; the state is now at `epoch`. `generation` is the function's, for
    /// function commands.
    Applied {
        /// Epoch after the change.
        epoch: Epoch,
        /// The function's generation, for function commands.
        generation: Option<Generation>,
        /// For a `PutFunction`: it added the function (not an update).
        #[serde(default)]
        created: bool,
    },
    /// Refused, with the reason; nothing changed.
    Rejected(Rejection),
    /// A batch's outcomes, one per command, in order.
    Batch(Vec<Outcome>),
}

/// The federation state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationState {
    /// Bumped by every applied command.
    pub epoch: Epoch,
    /// Tenants by name.
    pub tenants: BTreeMap<String, Tenant>,
    /// API key hash -> tenant.
    pub api_keys: BTreeMap<String, String>,
    /// Functions by ID (`tenant/name`).
    pub functions: BTreeMap<String, FunctionRecord>,
    /// Cells by ID.
    pub cells: BTreeMap<CellId, Cell>,
    /// Function ID -> owner and generation.
    pub assignments: BTreeMap<String, Assignment>,
    /// Functions the rebalancer must not move.
    #[serde(default)]
    pub pinned: std::collections::BTreeSet<String>,
    /// Tenants' registry credentials, sealed with the operator's key (`crate::secrets`):
    /// tenant -> registry -> sealed. Never in the shard map.
    #[serde(default)]
    pub registry_credentials: BTreeMap<String, BTreeMap<String, String>>,
    /// Functions per tenant and what they take, derived from `functions` (kept by every
    /// change; rebuilt by [`FederationState::recount`] after the state is read back).
    #[serde(skip)]
    holdings: BTreeMap<String, (usize, Usage)>,
    /// Recent writes by request ID.
    #[serde(default)]
    requests: RequestLog,
}

impl FederationState {
    /// Applies `command`; a rejected command changes nothing. An applied one bumps the
    /// epoch and returns the shard-map delta for the new epoch (empty for tenant and key
    /// commands: followers still need it to keep their epoch without a gap).
    pub fn apply(&mut self, command: Command) -> (Outcome, Option<Delta>) {
        if let Command::Once { request, command } = command {
            let subject = command.subject();
            if let Some(first) = self.requests.get(&request) {
                if first.subject != subject {
                    return (Outcome::Rejected(Rejection::RequestIdReused(request)), None);
                }
                return (first.outcome.clone(), None);
            }
            let (outcome, delta) = self.apply(*command);
            // A refusal changed nothing: trying it again is harmless.
            if matches!(outcome, Outcome::Applied { .. }) {
                self.requests.record(&request, Remembered { subject, outcome: outcome.clone() });
            }
            return (outcome, delta);
        }
        if let Err(reason) = self.check(&command) {
            return (Outcome::Rejected(reason), None);
        }
        let created = match &command {
            Command::PutFunction { record, .. } => {
                !self.functions.contains_key(&FunctionId::key_of(&record.tenant, &record.name))
            }
            _ => false,
        };
        let (generation, changes) = self.change(command);
        self.epoch = self.epoch.next();
        (
            Outcome::Applied { epoch: self.epoch, generation, created },
            Some(Delta { epoch: self.epoch, changes, applied_unix_micros: 0 }),
        )
    }

    /// The write with request ID `request`, if it was applied recently (see
    /// [`REQUESTS_KEPT`]).
    pub fn request(&self, request: &str) -> Option<&Remembered> {
        self.requests.get(request)
    }

    /// How many functions `tenant` has.
    pub fn function_count(&self, tenant: &str) -> usize {
        self.holdings.get(tenant).map_or(0, |(count, _)| *count)
    }

    /// What `tenant`'s functions take of its limits.
    pub fn usage(&self, tenant: &str) -> Usage {
        self.holdings.get(tenant).map(|(_, usage)| *usage).unwrap_or_default()
    }

    /// Rebuilds what is derived from the replicated fields (after deserializing).
    pub fn recount(&mut self) {
        self.holdings.clear();
        for record in self.functions.values() {
            let (count, usage) = self.holdings.entry(record.tenant.clone()).or_default();
            *count += 1;
            *usage = usage.plus(record.usage);
        }
    }

    /// Applies one raft entry's command: a batch command by command. Returns the outcome
    /// and the deltas, one per applied command, in epoch order.
    pub fn apply_entry(&mut self, command: Command) -> (Outcome, Vec<Delta>) {
        let Command::Batch(commands) = command else {
            let (outcome, delta) = self.apply(command);
            return (outcome, delta.into_iter().collect());
        };
        let mut deltas = Vec::new();
        let outcomes = commands
            .into_iter()
            .map(|command| {
                let (outcome, delta) = self.apply(command);
                deltas.extend(delta);
                outcome
            })
            .collect();
        (Outcome::Batch(outcomes), deltas)
    }

    fn check(&self, command: &Command) -> Result<(), Rejection> {
        let cell_known = |id: &CellId| {
            if self.cells.contains_key(id) { Ok(()) } else { Err(Rejection::UnknownCell(id.clone())) }
        };
        match command {
            Command::PutApiKey { tenant, .. } | Command::PutRegistryCredentials { tenant, .. }
                if !self.tenants.contains_key(tenant) =>
            {
                Err(Rejection::UnknownTenant(tenant.clone()))
            }
            Command::DeleteRegistryCredentials { tenant, registry }
                if !self.registry_credentials.get(tenant).is_some_and(|r| r.contains_key(registry)) =>
            {
                Err(Rejection::UnknownRegistry { tenant: tenant.clone(), registry: registry.clone() })
            }
            Command::DeleteTenant { name } => {
                if !self.tenants.contains_key(name) {
                    return Err(Rejection::UnknownTenant(name.clone()));
                }
                match self.function_count(name) {
                    0 => Ok(()),
                    functions => Err(Rejection::TenantHasFunctions { tenant: name.clone(), functions }),
                }
            }
            Command::SetCellState { cell, .. } => cell_known(cell),
            Command::PutFunction { record, cell } => {
                if self.put_is_new(record, cell)? {
                    self.within_limit(&record.tenant, 1)?;
                }
                self.within_holdings(&record.tenant, std::iter::once(record))
            }
            Command::PutFunctions(functions) => {
                // The limits are counted once per tenant, not once per function.
                let mut new: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
                let mut by_tenant: BTreeMap<&str, Vec<&FunctionRecord>> = BTreeMap::new();
                for (record, cell) in functions {
                    if self.put_is_new(record, cell)? {
                        new.entry(&record.tenant).or_default().insert(&record.name);
                    }
                    by_tenant.entry(&record.tenant).or_default().push(record);
                }
                new.iter().try_for_each(|(tenant, names)| self.within_limit(tenant, names.len()))?;
                by_tenant.into_iter().try_for_each(|(tenant, records)| self.within_holdings(tenant, records))
            }
            Command::Assign { function, cell } => {
                if !self.functions.contains_key(function) {
                    return Err(Rejection::UnknownFunction(function.clone()));
                }
                cell_known(cell)?;
                // Planned from an earlier state (a move prepares the target first): the
                // target may have been drained or failed over meanwhile.
                if self.cells[cell].state != CellState::Active {
                    return Err(Rejection::CellNotActive(cell.clone()));
                }
                Ok(())
            }
            Command::Pin { function, .. } if !self.functions.contains_key(function) => {
                Err(Rejection::UnknownFunction(function.clone()))
            }
            // Batches are entries, taken apart by `apply_entry`; they do not nest.
            Command::Batch(_) => Err(Rejection::NestedBatch),
            _ => Ok(()),
        }
    }

    /// Checks a registration but for the tenant's limit; whether it adds a function.
    fn put_is_new(&self, record: &FunctionRecord, cell: &CellId) -> Result<bool, Rejection> {
        if !self.tenants.contains_key(&record.tenant) {
            return Err(Rejection::UnknownTenant(record.tenant.clone()));
        }
        if self.functions.contains_key(&FunctionId::key_of(&record.tenant, &record.name)) {
            return Ok(false);
        }
        if !self.cells.contains_key(cell) {
            return Err(Rejection::UnknownCell(cell.clone()));
        }
        Ok(true)
    }

    /// Whether `tenant` may have `more` functions than it has.
    fn within_limit(&self, tenant: &str, more: usize) -> Result<(), Rejection> {
        let limit = self.tenants.get(tenant).map_or(0, |t| t.max_functions) as usize;
        if limit == 0 {
            return Ok(());
        }
        let have = self.function_count(tenant);
        if have + more > limit {
            return Err(Rejection::OverLimit { tenant: tenant.to_string(), would_have: have + more, limit });
        }
        Ok(())
    }

    /// Whether `tenant` may run what `records` run and hold what it would hold with them
    /// registered (replacing its functions of the same names).
    fn within_holdings<'a>(
        &self,
        tenant: &str,
        records: impl IntoIterator<Item = &'a FunctionRecord>,
    ) -> Result<(), Rejection> {
        let limits = self.tenants.get(tenant).map(|t| t.limits).unwrap_or_default();
        let now = self.usage(tenant);
        let mut after = now;
        for record in records {
            if record.usage.executable && !limits.executables {
                return Err(Rejection::ExecutablesNotAllowed(tenant.to_string()));
            }
            if let Some(old) = self.functions.get(&FunctionId::key_of(&record.tenant, &record.name)) {
                after = after.minus(old.usage);
            }
            after = after.plus(record.usage);
        }
        limits::check(tenant, &limits, now, after)
    }

    /// Carries out a checked command; returns the function's generation (function
    /// commands) and the shard-map changes it made, read back after the change.
    fn change(&mut self, command: Command) -> (Option<Generation>, Vec<Change>) {
        match command {
            Command::PutTenant(tenant) => {
                self.tenants.insert(tenant.name.clone(), tenant);
            }
            Command::DeleteTenant { name } => {
                self.tenants.remove(&name);
                self.registry_credentials.remove(&name);
                let keys: Vec<String> =
                    self.api_keys.iter().filter(|(_, tenant)| **tenant == name).map(|(hash, _)| hash.clone()).collect();
                let mut changes = Vec::with_capacity(keys.len());
                for key_hash in keys {
                    self.api_keys.remove(&key_hash);
                    changes.push(Change::RevokeApiKey { key_hash });
                }
                return (None, changes);
            }
            Command::PutApiKey { key_hash, tenant } => {
                self.api_keys.insert(key_hash.clone(), tenant.clone());
                return (None, vec![Change::PutApiKey { key_hash, tenant }]);
            }
            Command::RevokeApiKey { key_hash } => {
                if self.api_keys.remove(&key_hash).is_some() {
                    return (None, vec![Change::RevokeApiKey { key_hash }]);
                }
            }
            Command::PutRegistryCredentials { tenant, registry, sealed } => {
                self.registry_credentials.entry(tenant).or_default().insert(registry, sealed);
            }
            Command::DeleteRegistryCredentials { tenant, registry } => {
                if let Some(registries) = self.registry_credentials.get_mut(&tenant) {
                    registries.remove(&registry);
                    if registries.is_empty() {
                        self.registry_credentials.remove(&tenant);
                    }
                }
            }
            Command::PutCell(cell) => {
                self.cells.insert(cell.id.clone(), cell.clone());
                return (None, vec![Change::PutCell(cell)]);
            }
            Command::SetCellState { cell, state } => {
                if let Some(c) = self.cells.get_mut(&cell) {
                    c.state = state;
                    return (None, vec![Change::PutCell(c.clone())]);
                }
            }
            Command::PutFunction { record, cell } => {
                let id = FunctionId::key_of(&record.tenant, &record.name);
                let (tenant, usage) = (record.tenant.clone(), record.usage);
                let replaced = self.functions.insert(id.clone(), record);
                let (count, held) = self.holdings.entry(tenant).or_default();
                match replaced {
                    Some(old) => *held = held.minus(old.usage),
                    None => *count += 1,
                }
                *held = held.plus(usage);
                let assignment =
                    self.assignments.entry(id.clone()).or_insert(Assignment { cell, generation: Generation(1) });
                let generation = Some(assignment.generation);
                // An update keeps its owner and generation; the owner sees the assignment
                // again and fetches the new spec.
                return (generation, vec![Change::Assign { function: id, assignment: assignment.clone() }]);
            }
            Command::PutFunctions(functions) => {
                let mut changes = Vec::new();
                for (record, cell) in functions {
                    changes.extend(self.change(Command::PutFunction { record, cell }).1);
                }
                return (None, changes);
            }
            Command::Pin { function, pinned } => {
                if pinned {
                    self.pinned.insert(function);
                } else {
                    self.pinned.remove(&function);
                }
            }
            Command::DeleteFunction { id } => {
                if let Some(record) = self.functions.remove(&id)
                    && let Some((count, held)) = self.holdings.get_mut(&record.tenant)
                {
                    *count -= 1;
                    *held = held.minus(record.usage);
                    if *count == 0 {
                        self.holdings.remove(&record.tenant);
                    }
                }
                self.pinned.remove(&id);
                if self.assignments.remove(&id).is_some() {
                    return (None, vec![Change::Forget { function: id }]);
                }
            }
            Command::Assign { function, cell } => {
                let assignment = self
                    .assignments
                    .entry(function.clone())
                    .or_insert(Assignment { cell: cell.clone(), generation: Generation(0) });
                assignment.cell = cell;
                assignment.generation = assignment.generation.next();
                let (generation, assignment) = (Some(assignment.generation), assignment.clone());
                return (generation, vec![Change::Assign { function, assignment }]);
            }
            // Refused by `check`: `apply_entry` takes batches apart; `apply` unwraps `Once`.
            Command::Batch(_) | Command::Once { .. } => {}
        }
        (None, Vec::new())
    }

    /// The shard map this state describes, as sent to followers.
    pub fn map_snapshot(&self) -> MapSnapshot {
        MapSnapshot {
            epoch: self.epoch,
            cells: self.cells.values().cloned().collect(),
            assignments: self.assignments.iter().map(|(f, a)| (f.clone(), a.clone())).collect(),
            api_keys: self.api_keys.iter().map(|(h, t)| (h.clone(), t.clone())).collect(),
        }
    }

    /// The shard map this state describes.
    pub fn shard_map(&self) -> ShardMap {
        ShardMap::from(self.map_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: &str) -> Cell {
        Cell::active(id, "local")
    }

    fn function(tenant: &str, name: &str) -> FunctionRecord {
        FunctionRecord {
            tenant: tenant.into(),
            name: name.into(),
            home_region: "local".into(),
            spec_json: "{}".into(),
            usage: Default::default(),
        }
    }

    /// A write sent with a request ID is applied once: the same ID again is answered with
    /// the first outcome, changes nothing and makes no delta, also after the state is read
    /// back from a snapshot (a leader's choice, such as the cell, may differ on a retry);
    /// the same ID on another write is refused; a refused write is not remembered (trying
    /// again is harmless).
    #[test]
    fn a_write_with_a_request_id_is_applied_once() {
        let once =
            |request: &str, command: Command| Command::Once { request: request.into(), command: Box::new(command) };
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        s.apply(Command::PutCell(cell("c1")));
        let put = Command::PutFunction { record: function("dev", "echo"), cell: CellId("c1".into()) };
        let (first, delta) = s.apply(once("r1", put.clone()));
        assert_eq!(first, Outcome::Applied { epoch: Epoch(3), generation: Some(Generation(1)), created: true });
        assert!(delta.is_some());
        let retry = Command::PutFunction { record: function("dev", "echo"), cell: CellId("c2".into()) };
        let (again, delta) = s.apply(once("r1", retry));
        assert_eq!((again, delta, s.epoch), (first.clone(), None, Epoch(3)), "the retry is the first answer");
        // Another ID is another write: an update now.
        assert_eq!(
            s.apply(once("r2", put)).0,
            Outcome::Applied { epoch: Epoch(4), generation: Some(Generation(1)), created: false }
        );

        let delete = || once("r3", Command::DeleteFunction { id: "dev/echo".into() });
        let (deleted, _) = s.apply(delete());
        let mut read_back: FederationState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        read_back.recount();
        assert_eq!(read_back.apply(delete()), (deleted, None), "remembered through a snapshot");
        assert_eq!(read_back.request("r1").map(|r| &r.outcome), Some(&first));

        let refused = || once("r4", Command::SetCellState { cell: CellId("nope".into()), state: CellState::Draining });
        assert!(matches!(s.apply(refused()).0, Outcome::Rejected(_)));
        assert_eq!(s.request("r4"), None, "a refusal is not remembered");
        let repeated = once("r1", Command::PutFunction { record: function("dev", "echo"), cell: CellId("c1".into()) });
        let reused = once("r1", Command::PutCell(cell("c9")));
        let (outcomes, deltas) = s.apply_entry(Command::Batch(vec![repeated, reused]));
        let Outcome::Batch(outcomes) = outcomes else { panic!("a batch's outcomes") };
        assert_eq!((&outcomes[0], deltas.len()), (&first, 0), "a batch's repeated write is not applied either");
        assert_eq!(outcomes[1], Outcome::Rejected(Rejection::RequestIdReused("r1".into())));
        assert!(!s.cells.contains_key(&CellId("c9".into())));
    }

    #[test]
    fn functions_keep_their_owner_on_update_and_moves_bump_the_generation() {
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        s.apply(Command::PutCell(cell("c1")));
        s.apply(Command::PutCell(cell("c2")));
        let put = |cell: &str| Command::PutFunction { record: function("dev", "echo"), cell: CellId(cell.into()) };
        assert_eq!(
            s.apply(put("c1")).0,
            Outcome::Applied { epoch: Epoch(4), generation: Some(Generation(1)), created: true }
        );
        // Updating the spec keeps the owner, whatever the leader would pick now.
        assert_eq!(
            s.apply(put("c2")).0,
            Outcome::Applied { epoch: Epoch(5), generation: Some(Generation(1)), created: false }
        );
        assert_eq!(s.assignments["dev/echo"].cell, CellId("c1".into()));
        s.apply(Command::Pin { function: "dev/echo".into(), pinned: true });
        assert!(s.pinned.contains("dev/echo"));
        s.apply(Command::Pin { function: "dev/echo".into(), pinned: false });
        assert!(s.pinned.is_empty());
        s.apply(Command::Pin { function: "dev/echo".into(), pinned: true });
        let moved = s.apply(Command::Assign { function: "dev/echo".into(), cell: CellId("c2".into()) }).0;
        assert_eq!(moved, Outcome::Applied { epoch: Epoch(9), generation: Some(Generation(2)), created: false });
        let map = s.shard_map();
        assert_eq!(map.owner("dev/echo", None).unwrap().cell.id.0, "c2");
        assert_eq!(map.epoch(), Epoch(9));
        // A deleted function is no longer pinned.
        s.apply(Command::DeleteFunction { id: "dev/echo".into() });
        assert!(s.pinned.is_empty());
    }

    #[test]
    fn registry_credentials_are_kept_per_tenant_and_never_reach_the_map() {
        let mut s = FederationState::default();
        let put = |tenant: &str, registry: &str, sealed: &str| Command::PutRegistryCredentials {
            tenant: tenant.into(),
            registry: registry.into(),
            sealed: sealed.into(),
        };
        assert_eq!(
            s.apply(put("nobody", "ghcr.io", "x")).0,
            Outcome::Rejected(Rejection::UnknownTenant("nobody".into()))
        );
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        let (outcome, delta) = s.apply(put("dev", "ghcr.io", "sealed-1"));
        assert!(matches!(outcome, Outcome::Applied { .. }));
        assert!(delta.unwrap().changes.is_empty(), "nothing of it in the shard map");
        s.apply(put("dev", "ghcr.io", "sealed-2"));
        s.apply(put("dev", "docker.io", "sealed-3"));
        assert_eq!(s.registry_credentials["dev"]["ghcr.io"], "sealed-2", "replaced");
        let delete =
            |registry: &str| Command::DeleteRegistryCredentials { tenant: "dev".into(), registry: registry.into() };
        assert!(matches!(s.apply(delete("ghcr.io")).0, Outcome::Applied { .. }));
        assert_eq!(
            s.apply(delete("ghcr.io")).0,
            Outcome::Rejected(Rejection::UnknownRegistry { tenant: "dev".into(), registry: "ghcr.io".into() })
        );
        s.apply(delete("docker.io"));
        assert!(s.registry_credentials.is_empty(), "a tenant without credentials has no entry");
    }

    /// A follower that starts from a snapshot and applies every delta has the same map
    /// as the state: same epoch, same owners and generations.
    #[test]
    fn deltas_replayed_on_a_snapshot_reproduce_the_map() {
        let mut s = FederationState::default();
        s.apply(Command::PutCell(cell("c1")));
        let mut follower = s.shard_map();
        let commands = vec![
            Command::PutTenant(Tenant {
                name: "dev".into(),
                default_region: "local".into(),
                max_functions: 0,
                limits: Default::default(),
            }),
            Command::PutCell(cell("c2")),
            Command::PutFunction { record: function("dev", "a"), cell: CellId("c1".into()) },
            Command::PutFunction { record: function("dev", "b"), cell: CellId("c2".into()) },
            Command::PutFunction { record: function("dev", "a"), cell: CellId("c2".into()) },
            Command::Assign { function: "dev/b".into(), cell: CellId("c1".into()) },
            Command::SetCellState { cell: CellId("c2".into()), state: CellState::Draining },
            Command::PutApiKey { key_hash: "h".into(), tenant: "dev".into() },
            Command::DeleteFunction { id: "dev/a".into() },
            Command::PutApiKey { key_hash: "gone".into(), tenant: "dev".into() },
            Command::RevokeApiKey { key_hash: "gone".into() },
            Command::Assign { function: "dev/none".into(), cell: CellId("c1".into()) },
        ];
        for command in commands {
            if let (_, Some(delta)) = s.apply(command) {
                follower.apply(delta).unwrap();
            }
        }
        let leader = s.shard_map();
        assert_eq!(follower.epoch(), leader.epoch());
        for f in ["dev/a", "dev/b", "dev/c"] {
            assert_eq!(follower.assignment(f), leader.assignment(f), "{f}");
        }
        assert_eq!(follower.assignment("dev/b").unwrap().generation, Generation(2));
        assert_eq!(follower.tenant_of_key("h"), Some("dev"));
        assert_eq!(follower.tenant_of_key("gone"), None);
        assert_eq!(follower.cell(&CellId("c2".into())).unwrap().state, CellState::Draining);
    }

    #[test]
    fn a_batch_is_all_or_nothing_and_one_delta() {
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        s.apply(Command::PutCell(cell("c1")));
        let put = |name: &str, tenant: &str| (function(tenant, name), CellId("c1".into()));
        let before = s.clone();
        let refused = s.apply(Command::PutFunctions(vec![put("a", "dev"), put("b", "nobody")]));
        assert!(matches!(refused, (Outcome::Rejected(_), None)));
        assert_eq!(s, before);
        let (outcome, delta) = s.apply(Command::PutFunctions(vec![put("a", "dev"), put("b", "dev")]));
        assert_eq!(outcome, Outcome::Applied { epoch: Epoch(3), generation: None, created: false });
        assert_eq!(delta.unwrap().changes.len(), 2);
        assert_eq!(s.assignments.len(), 2);
    }

    #[test]
    fn bad_commands_are_rejected_and_change_nothing() {
        let mut s = FederationState::default();
        let before = s.clone();
        for command in [
            Command::PutApiKey { key_hash: "h".into(), tenant: "nobody".into() },
            Command::SetCellState { cell: CellId("c9".into()), state: CellState::Down },
            Command::PutFunction { record: function("nobody", "f"), cell: CellId("c1".into()) },
            Command::Assign { function: "dev/none".into(), cell: CellId("c1".into()) },
            Command::Pin { function: "dev/none".into(), pinned: true },
        ] {
            assert!(matches!(s.apply(command), (Outcome::Rejected(_), None)));
        }
        assert_eq!(s, before);
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        let unknown_cell = s.apply(Command::PutFunction { record: function("dev", "f"), cell: CellId("c1".into()) }).0;
        assert_eq!(unknown_cell, Outcome::Rejected(Rejection::UnknownCell(CellId("c1".into()))));
    }

    /// A tenant is deleted only once it has no functions, and takes its API keys (each
    /// revoked in the map, so routers stop admitting it) and registry credentials with it;
    /// another tenant's keys stay.
    #[test]
    fn a_tenant_goes_with_its_keys_once_its_functions_are_gone() {
        let mut s = FederationState::default();
        for name in ["dev", "other"] {
            s.apply(Command::PutTenant(Tenant {
                name: name.into(),
                default_region: "local".into(),
                max_functions: 0,
                limits: Default::default(),
            }));
        }
        s.apply(Command::PutCell(cell("c1")));
        s.apply(Command::PutApiKey { key_hash: "aa".repeat(32), tenant: "dev".into() });
        s.apply(Command::PutApiKey { key_hash: "bb".repeat(32), tenant: "other".into() });
        s.apply(Command::PutRegistryCredentials {
            tenant: "dev".into(),
            registry: "ghcr.io".into(),
            sealed: "sealed".into(),
        });
        s.apply(Command::PutFunction { record: function("dev", "f"), cell: CellId("c1".into()) });
        let delete = || Command::DeleteTenant { name: "dev".into() };
        assert_eq!(
            s.apply(delete()).0,
            Outcome::Rejected(Rejection::TenantHasFunctions { tenant: "dev".into(), functions: 1 })
        );
        assert!(s.tenants.contains_key("dev") && s.api_keys.contains_key(&"aa".repeat(32)));
        s.apply(Command::DeleteFunction { id: "dev/f".into() });
        let (outcome, delta) = s.apply(delete());
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        assert_eq!(delta.expect("a delta").changes, vec![Change::RevokeApiKey { key_hash: "aa".repeat(32) }]);
        assert!(!s.tenants.contains_key("dev"));
        assert!(!s.registry_credentials.contains_key("dev"));
        assert_eq!(s.api_keys.values().collect::<Vec<_>>(), ["other"], "only its own keys go");
        assert_eq!(s.apply(delete()).0, Outcome::Rejected(Rejection::UnknownTenant("dev".into())));
    }

    /// A tenant's function limit holds for single and batch registrations (a batch over it
    /// is refused whole), updates do not count, and another tenant's functions (even one
    /// whose name extends this one's) are not counted.
    #[test]
    fn a_tenant_has_at_most_its_limit_of_functions() {
        let mut s = FederationState::default();
        let tenant = |name: &str, max_functions| Tenant {
            name: name.into(),
            default_region: "local".into(),
            max_functions,
            limits: Default::default(),
        };
        s.apply(Command::PutTenant(tenant("dev", 3)));
        s.apply(Command::PutTenant(tenant("dev-2", 0)));
        s.apply(Command::PutCell(cell("c1")));
        let c1 = || CellId("c1".into());
        let put = |t: &str, n: &str| Command::PutFunction { record: function(t, n), cell: c1() };
        for name in ["a", "b"] {
            assert!(matches!(s.apply(put("dev", name)).0, Outcome::Applied { .. }));
        }
        for name in ["x", "y", "z", "w"] {
            assert!(matches!(s.apply(put("dev-2", name)).0, Outcome::Applied { .. }), "no limit, not counted");
        }
        let batch = |names: &[&str]| Command::PutFunctions(names.iter().map(|n| (function("dev", n), c1())).collect());
        let refused = s.apply(batch(&["a", "c", "d"])).0;
        assert_eq!(refused, Outcome::Rejected(Rejection::OverLimit { tenant: "dev".into(), would_have: 4, limit: 3 }));
        assert!(!s.functions.contains_key("dev/c"), "a refused batch stores nothing");
        assert!(matches!(s.apply(batch(&["a", "b", "c"])).0, Outcome::Applied { .. }), "updates do not count");
        assert_eq!(
            s.apply(put("dev", "d")).0,
            Outcome::Rejected(Rejection::OverLimit { tenant: "dev".into(), would_have: 4, limit: 3 })
        );
        assert!(matches!(s.apply(put("dev", "a")).0, Outcome::Applied { .. }), "an update at the limit");
        s.apply(Command::DeleteFunction { id: "dev/a".into() });
        assert!(matches!(s.apply(put("dev", "d")).0, Outcome::Applied { .. }), "room again after a delete");
    }

    /// Sandboxes and reserved capacity are counted from what each function takes: an update
    /// replaces its function's share, a delete frees it at once, a snapshot rebuilds it, and
    /// a tenant without the permission registers no host executable.
    #[test]
    fn tenant_limits_count_each_functions_share_once() {
        let mut s = FederationState::default();
        let limits = TenantLimits { executables: true, max_sandboxes: 150, ..TenantLimits::default() };
        let tenant =
            |name: &str, limits| Tenant { name: name.into(), default_region: "l".into(), max_functions: 0, limits };
        s.apply(Command::PutTenant(tenant("dev", limits)));
        s.apply(Command::PutTenant(tenant("plain", TenantLimits::default())));
        s.apply(Command::PutCell(cell("c1")));
        let put = |t: &str, n: &str, sandboxes: u64| {
            let usage = Usage { executable: true, sandboxes, ..Usage::default() };
            Command::PutFunction { record: FunctionRecord { usage, ..function(t, n) }, cell: CellId("c1".into()) }
        };
        let over = |would_have| {
            Outcome::Rejected(Rejection::OverTenantLimit {
                tenant: "dev".into(),
                what: "sandboxes (sum of scaling.max_scale)".into(),
                would_have,
                limit: 150,
            })
        };
        assert!(matches!(s.apply(put("dev", "a", 100)).0, Outcome::Applied { .. }));
        assert_eq!(s.apply(put("dev", "b", 100)).0, over(200));
        assert!(matches!(s.apply(put("dev", "a", 50)).0, Outcome::Applied { .. }), "an update replaces its share");
        assert!(matches!(s.apply(put("dev", "b", 100)).0, Outcome::Applied { .. }));
        assert_eq!(s.usage("dev").sandboxes, 150);
        let mut copy: FederationState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        copy.recount();
        assert_eq!(copy.usage("dev"), s.usage("dev"), "rebuilt from a snapshot");
        s.apply(Command::DeleteFunction { id: "dev/b".into() });
        assert!(matches!(s.apply(put("dev", "c", 100)).0, Outcome::Applied { .. }), "freed at once by a delete");
        assert_eq!(
            s.apply(put("plain", "sh", 1)).0,
            Outcome::Rejected(Rejection::ExecutablesNotAllowed("plain".into()))
        );
        assert!(!s.functions.contains_key("plain/sh"));
    }

    /// A batch entry applies its commands one by one: a rejected one changes nothing and
    /// takes no epoch, the others each get the next epoch and their own delta; batches do
    /// not nest.
    #[test]
    fn a_batch_applies_each_command_on_its_own() {
        let mut s = FederationState::default();
        let tenant = |name: &str| Tenant {
            name: name.into(),
            default_region: "local".into(),
            max_functions: 0,
            limits: Default::default(),
        };
        let (outcome, deltas) = s.apply_entry(Command::Batch(vec![
            Command::PutTenant(tenant("a")),
            Command::PutApiKey { key_hash: "h".into(), tenant: "nobody".into() },
            Command::PutApiKey { key_hash: "h".into(), tenant: "a".into() },
            Command::Batch(vec![Command::PutTenant(tenant("b"))]),
        ]));
        let Outcome::Batch(outcomes) = outcome else { panic!("{outcome:?}") };
        assert_eq!(outcomes[0], Outcome::Applied { epoch: Epoch(1), generation: None, created: false });
        assert_eq!(outcomes[1], Outcome::Rejected(Rejection::UnknownTenant("nobody".into())));
        assert_eq!(outcomes[2], Outcome::Applied { epoch: Epoch(2), generation: None, created: false });
        assert_eq!(outcomes[3], Outcome::Rejected(Rejection::NestedBatch));
        assert_eq!(deltas.iter().map(|d| d.epoch).collect::<Vec<_>>(), [Epoch(1), Epoch(2)]);
        assert_eq!((s.epoch, s.tenants.len(), s.api_keys.len()), (Epoch(2), 1, 1));
    }

    /// The per-tenant counts the limit uses are derived: a state read back (a snapshot)
    /// recounts to the same limits as the one that was written.
    #[test]
    fn function_counts_survive_a_snapshot() {
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant {
            name: "dev".into(),
            default_region: "local".into(),
            max_functions: 2,
            limits: Default::default(),
        }));
        s.apply(Command::PutCell(cell("c1")));
        let put = |n: &str| Command::PutFunction { record: function("dev", n), cell: CellId("c1".into()) };
        s.apply(put("a"));
        s.apply(put("b"));
        let mut read_back: FederationState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        read_back.recount();
        assert_eq!(read_back, s);
        assert!(matches!(read_back.apply(put("c")).0, Outcome::Rejected(_)), "still at its limit");
        read_back.apply(Command::DeleteFunction { id: "dev/a".into() });
        assert!(matches!(read_back.apply(put("c")).0, Outcome::Applied { .. }));
    }
}
