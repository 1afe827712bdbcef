//! The map itself: cells, explicit assignments with their generations, and the epoch.
//!
//! A function's owner is its assignment when it has one (every registered function does:
//! the shard manager assigns it on registration and reassigns it on moves, drains and
//! failover, bumping its generation each time); otherwise (a function this copy of the
//! map has not heard of yet) the ring over the active cells of its home region, then over
//! all active cells. Changes arrive as deltas numbered by epoch; a gap is an error and the
//! follower takes a fresh snapshot.

use std::collections::{BTreeMap, HashMap};

use baton_model::{CellId, Epoch, Generation};
use serde::{Deserialize, Serialize};

use crate::hash::function_hash;
use crate::ring::CellRing;

/// Whether a cell takes functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    /// On the ring; takes functions.
    Active,
    /// Being emptied: keeps serving what it owns, takes nothing new, not on the ring.
    Draining,
    /// Silent past the heartbeat timeout: owns nothing once failover ran.
    Down,
}

/// A cell as the federation knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Its ID.
    pub id: CellId,
    /// Region it runs in.
    pub region: String,
    /// Control-plane gRPC address.
    pub control: String,
    /// Data-plane HTTP addresses; a function goes to the one its hash picks.
    pub data_planes: Vec<String>,
    /// Relative capacity (ring weight), at least 1.
    pub weight: u32,
    /// Its state.
    pub state: CellState,
}

impl Cell {
    /// An active cell of weight 1 in `region`, with no addresses yet.
    pub fn active(id: &str, region: &str) -> Self {
        Self {
            id: CellId(id.into()),
            region: region.into(),
            control: String::new(),
            data_planes: Vec::new(),
            weight: 1,
            state: CellState::Active,
        }
    }

    /// The data plane serving the function with hash `hash`; `None` when it has none.
    pub fn data_plane(&self, hash: u64) -> Option<&str> {
        let n = self.data_planes.len() as u64;
        (n > 0).then(|| self.data_planes[(hash % n) as usize].as_str())
    }
}

/// A function's owner and the generation of that ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Owning cell.
    pub cell: CellId,
    /// Bumped on every ownership change; a cell serves a function only at the generation
    /// it was given (fencing).
    pub generation: Generation,
}

/// One change to the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A cell joined or changed (state, addresses, weight).
    PutCell(Cell),
    /// A cell left the federation.
    RemoveCell(CellId),
    /// A function's owner and generation.
    Assign {
        /// Function ID (`tenant/name`).
        function: String,
        /// Its new assignment.
        assignment: Assignment,
    },
    /// A function was deleted.
    Forget {
        /// Function ID.
        function: String,
    },
    /// An API key (its hash, see [`crate::key_hash`]) now authenticates `tenant`.
    PutApiKey {
        /// SHA-256 of the key, hex.
        key_hash: String,
        /// Its tenant.
        tenant: String,
    },
    /// An API key was revoked.
    RevokeApiKey {
        /// SHA-256 of the key, hex.
        key_hash: String,
    },
}

/// The changes that take the map from `epoch - 1` to `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The epoch after the changes.
    pub epoch: Epoch,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
    /// When the shard-manager replica that sent it applied it (committed it): its clock,
    /// microseconds since the Unix epoch; 0 when unknown. Not part of the replicated
    /// state: stamped as the delta leaves the replica, so a follower can tell how long it
    /// took to arrive (`baton_shard_map_propagation_seconds`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub applied_unix_micros: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A whole map, as sent to a follower before the deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSnapshot {
    /// Its epoch.
    pub epoch: Epoch,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// Every assignment, by function ID.
    pub assignments: Vec<(String, Assignment)>,
    /// Every API key's hash and its tenant.
    #[serde(default)]
    pub api_keys: Vec<(String, String)>,
}

impl From<MapSnapshot> for ShardMap {
    fn from(snapshot: MapSnapshot) -> Self {
        let mut map = ShardMap::from_snapshot(snapshot.epoch, snapshot.cells, snapshot.assignments);
        map.api_keys = snapshot.api_keys.into_iter().collect();
        map
    }
}

/// Why a delta was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The delta does not follow the map's epoch: take a snapshot.
    #[error("delta for epoch {got} does not follow epoch {have}")]
    Gap {
        /// The map's epoch.
        have: Epoch,
        /// The delta's epoch.
        got: Epoch,
    },
}

/// Where a function goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The owning cell.
    pub cell: &'a Cell,
    /// The generation, when the function is assigned (not when found on the ring).
    pub generation: Option<Generation>,
    /// The data plane within the cell, by function hash.
    pub data_plane: Option<&'a str>,
}

/// An assignment as stored: the cell by index, so a lookup touches no string.
#[derive(Debug, Clone, Copy)]
struct Slot {
    cell: u32,
    generation: Generation,
}

/// The key of a function in the assignment table: XXH3-128 of its ID. Two IDs share a
/// key with probability about 2^-128 per pair, so the ID itself need not be stored or
/// compared (one memory access per lookup instead of two).
fn key(function: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(function.as_bytes())
}

/// Hashes the already-uniform 128-bit keys by folding them (no second hashing).
#[derive(Default, Clone, Copy)]
struct Folded(u64);

impl std::hash::Hasher for Folded {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 ^= (value as u64) ^ ((value >> 64) as u64);
    }
}

type Assignments = HashMap<u128, Slot, std::hash::BuildHasherDefault<Folded>>;

/// The shard map.
#[derive(Debug, Clone, Default)]
pub struct ShardMap {
    epoch: Epoch,
    /// Cells by index; a removed cell leaves `None` (its index is reused if it returns).
    cells: Vec<Option<Cell>>,
    index: BTreeMap<CellId, u32>,
    assignments: Assignments,
    /// Derived from `cells`: a ring per region over its active cells, and one over all.
    rings: HashMap<String, CellRing>,
    all: Option<CellRing>,
    /// API key hash -> tenant.
    api_keys: HashMap<String, String>,
}

impl ShardMap {
    /// A map at `epoch` with these cells and assignments (a snapshot). Assignments to
    /// cells not among `cells` are dropped.
    pub fn from_snapshot(
        epoch: Epoch,
        cells: impl IntoIterator<Item = Cell>,
        assignments: impl IntoIterator<Item = (String, Assignment)>,
    ) -> Self {
        let mut map = Self { epoch, ..Self::default() };
        for cell in cells {
            map.put_cell(cell);
        }
        for (function, assignment) in assignments {
            map.assign(&function, assignment);
        }
        map.rebuild_rings();
        map
    }

    fn put_cell(&mut self, cell: Cell) {
        match self.index.get(&cell.id) {
            Some(&i) => self.cells[i as usize] = Some(cell),
            None => {
                self.index.insert(cell.id.clone(), self.cells.len() as u32);
                self.cells.push(Some(cell));
            }
        }
    }

    fn assign(&mut self, function: &str, assignment: Assignment) {
        if let Some(&cell) = self.index.get(&assignment.cell) {
            self.assignments.insert(key(function), Slot { cell, generation: assignment.generation });
        }
    }

    /// The map's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Every cell.
    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.cells.iter().flatten()
    }

    /// A cell by ID.
    pub fn cell(&self, id: &CellId) -> Option<&Cell> {
        self.cells[*self.index.get(id)? as usize].as_ref()
    }

    /// A function's assignment.
    pub fn assignment(&self, function: &str) -> Option<Assignment> {
        let slot = self.assignments.get(&key(function))?;
        let cell = self.cells[slot.cell as usize].as_ref()?;
        Some(Assignment { cell: cell.id.clone(), generation: slot.generation })
    }

    /// Functions with an assignment.
    pub fn assigned(&self) -> usize {
        self.assignments.len()
    }

    /// The ring's choice for `function` in `region` (active cells of the region, else all
    /// active cells), ignoring assignments: where a new function is placed.
    pub fn ring_owner(&self, function: &str, region: Option<&str>) -> Option<&Cell> {
        let ring = region.and_then(|r| self.rings.get(r)).or(self.all.as_ref())?;
        self.cell(ring.owner(function_hash(function))?)
    }

    /// Where calls to `function` go: its assignment, else the ring. No I/O, no allocation.
    pub fn owner(&self, function: &str, region: Option<&str>) -> Option<Owner<'_>> {
        let hash = function_hash(function);
        let (cell, generation) = match self.assignments.get(&key(function)) {
            Some(slot) => (self.cells[slot.cell as usize].as_ref()?, Some(slot.generation)),
            None => {
                let ring = region.and_then(|r| self.rings.get(r)).or(self.all.as_ref())?;
                (self.cell(ring.owner(hash)?)?, None)
            }
        };
        Some(Owner { cell, generation, data_plane: cell.data_plane(hash) })
    }

    /// Where calls to `function` go when it is registered (has an assignment); `None` for
    /// a function this map has not heard of. No I/O, no allocation.
    pub fn assigned_owner(&self, function: &str) -> Option<Owner<'_>> {
        let slot = self.assignments.get(&key(function))?;
        let cell = self.cells[slot.cell as usize].as_ref()?;
        Some(Owner { cell, generation: Some(slot.generation), data_plane: cell.data_plane(function_hash(function)) })
    }

    /// The tenant an API key hash authenticates.
    pub fn tenant_of_key(&self, key_hash: &str) -> Option<&str> {
        self.api_keys.get(key_hash).map(String::as_str)
    }

    /// Applies `delta`, which must be for the next epoch.
    pub fn apply(&mut self, delta: Delta) -> Result<(), MapError> {
        if delta.epoch != self.epoch.next() {
            return Err(MapError::Gap { have: self.epoch, got: delta.epoch });
        }
        let mut cells_changed = false;
        for change in delta.changes {
            match change {
                Change::PutCell(cell) => {
                    cells_changed = true;
                    self.put_cell(cell);
                }
                Change::RemoveCell(id) => {
                    cells_changed = true;
                    if let Some(&i) = self.index.get(&id) {
                        self.cells[i as usize] = None;
                    }
                }
                Change::Assign { function, assignment } => self.assign(&function, assignment),
                Change::Forget { function } => {
                    self.assignments.remove(&key(&function));
                }
                Change::PutApiKey { key_hash, tenant } => {
                    self.api_keys.insert(key_hash, tenant);
                }
                Change::RevokeApiKey { key_hash } => {
                    self.api_keys.remove(&key_hash);
                }
            }
        }
        self.epoch = delta.epoch;
        if cells_changed {
            self.rebuild_rings();
        }
        Ok(())
    }

    fn rebuild_rings(&mut self) {
        let active: Vec<&Cell> = self.cells.iter().flatten().filter(|c| c.state == CellState::Active).collect();
        let mut regions: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
        for cell in &active {
            regions.entry(cell.region.as_str()).or_default().push(cell);
        }
        self.rings = regions
            .into_iter()
            .map(|(region, cells)| (region.to_string(), CellRing::new(cells.iter().map(|c| (&c.id, c.weight)))))
            .collect();
        self.all = (!active.is_empty()).then(|| CellRing::new(active.iter().map(|c| (&c.id, c.weight))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cell(id: &str, region: &str, state: CellState) -> Cell {
        Cell {
            control: format!("http://{id}:7100"),
            data_planes: vec![format!("http://{id}-dp0:8080"), format!("http://{id}-dp1:8080")],
            state,
            ..Cell::active(id, region)
        }
    }

    fn assign(function: &str, cell: &str, generation: u64) -> Change {
        Change::Assign {
            function: function.into(),
            assignment: Assignment { cell: CellId(cell.into()), generation: Generation(generation) },
        }
    }

    #[test]
    fn assignments_override_the_ring_and_carry_their_generation() {
        let mut map = ShardMap::from_snapshot(
            Epoch(1),
            [cell("eu-1", "eu", CellState::Active), cell("eu-2", "eu", CellState::Active)],
            [],
        );
        let ring_cell = map.owner("acme/echo", Some("eu")).unwrap().cell.id.clone();
        let other = if ring_cell.0 == "eu-1" { "eu-2" } else { "eu-1" };
        assert_eq!(map.owner("acme/echo", Some("eu")).unwrap().generation, None);
        map.apply(Delta { epoch: Epoch(2), changes: vec![assign("acme/echo", other, 3)], applied_unix_micros: 0 })
            .unwrap();
        let owner = map.owner("acme/echo", Some("eu")).unwrap();
        assert_eq!((owner.cell.id.0.as_str(), owner.generation), (other, Some(Generation(3))));
        assert!(owner.data_plane.unwrap().starts_with(&format!("http://{other}-dp")));
        assert_eq!(
            map.assignment("acme/echo"),
            Some(Assignment { cell: CellId(other.into()), generation: Generation(3) })
        );
        // An assignment to a cell the map does not know is dropped.
        map.apply(Delta { epoch: Epoch(3), changes: vec![assign("acme/other", "nowhere", 1)], applied_unix_micros: 0 })
            .unwrap();
        assert_eq!((map.assignment("acme/other"), map.assigned()), (None, 1));

        map.apply(Delta {
            epoch: Epoch(4),
            changes: vec![Change::Forget { function: "acme/echo".into() }],
            applied_unix_micros: 0,
        })
        .unwrap();
        assert_eq!(map.owner("acme/echo", Some("eu")).unwrap().cell.id, ring_cell);
    }

    #[test]
    fn the_ring_prefers_the_home_region_and_skips_cells_that_are_not_active() {
        let map = ShardMap::from_snapshot(
            Epoch(1),
            [
                cell("eu-1", "eu", CellState::Active),
                cell("eu-2", "eu", CellState::Draining),
                cell("us-1", "us", CellState::Active),
                cell("us-2", "us", CellState::Down),
            ],
            [],
        );
        for i in 0..1000 {
            let f = format!("t/f{i}");
            assert_eq!(map.owner(&f, Some("eu")).unwrap().cell.id.0, "eu-1");
            assert_eq!(map.owner(&f, Some("us")).unwrap().cell.id.0, "us-1");
            // An unknown region falls back to every active cell.
            let any = &map.owner(&f, Some("ap")).unwrap().cell.id.0;
            assert!(any == "eu-1" || any == "us-1");
        }
    }

    #[test]
    fn deltas_must_follow_the_epoch_and_cell_changes_rebuild_the_ring() {
        let mut map = ShardMap::from_snapshot(Epoch(5), [cell("a", "r", CellState::Active)], []);
        let err = map.apply(Delta { epoch: Epoch(7), changes: vec![], applied_unix_micros: 0 }).unwrap_err();
        assert_eq!(err, MapError::Gap { have: Epoch(5), got: Epoch(7) });
        assert_eq!(map.epoch(), Epoch(5));
        map.apply(Delta {
            epoch: Epoch(6),
            changes: vec![Change::PutCell(cell("b", "r", CellState::Active))],
            applied_unix_micros: 0,
        })
        .unwrap();
        let owners: std::collections::BTreeSet<String> =
            (0..200).map(|i| map.owner(&format!("t/{i}"), Some("r")).unwrap().cell.id.0.clone()).collect();
        assert_eq!(owners.len(), 2, "both cells take functions");
        map.apply(Delta {
            epoch: Epoch(7),
            changes: vec![Change::RemoveCell(CellId("a".into()))],
            applied_unix_micros: 0,
        })
        .unwrap();
        assert!((0..200).all(|i| map.owner(&format!("t/{i}"), Some("r")).unwrap().cell.id.0 == "b"));
        let empty = ShardMap::default();
        assert!(empty.owner("t/x", None).is_none());
    }

    /// Golden values: which of three cells owns a few functions on the ring. Changing
    /// them (the hash, the ring crate's hashing or the vnode count) re-shards every
    /// deployment.
    #[test]
    fn ring_placement_never_changes() {
        let map = ShardMap::from_snapshot(
            Epoch(1),
            [
                cell("cell-1", "local", CellState::Active),
                cell("cell-2", "local", CellState::Active),
                cell("cell-3", "local", CellState::Active),
            ],
            [],
        );
        let owners: Vec<(String, String)> = ["dev/echo", "dev/spin", "acme/resize", "acme/thumbnail", "t/f0"]
            .iter()
            .map(|f| {
                let owner = map.owner(f, Some("local")).unwrap();
                (owner.cell.id.0.clone(), owner.data_plane.unwrap().to_string())
            })
            .collect();
        assert_eq!(owners, GOLDEN_OWNERS.iter().map(|(c, d)| (c.to_string(), d.to_string())).collect::<Vec<_>>());
    }

    const GOLDEN_OWNERS: [(&str, &str); 5] = [
        ("cell-2", "http://cell-2-dp1:8080"),
        ("cell-2", "http://cell-2-dp0:8080"),
        ("cell-1", "http://cell-1-dp0:8080"),
        ("cell-1", "http://cell-1-dp0:8080"),
        ("cell-1", "http://cell-1-dp1:8080"),
    ];
}
