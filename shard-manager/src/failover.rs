//! Failure detection and failover, as a pure decision: given the federation state, when
//! each cell was last heard from and the time now, which commands mark silent cells down
//! and give their functions new owners. The leader runs it on a timer and proposes the
//! commands through raft, so every ownership change is committed (with its generation)
//! before any cell is told; pushing specs to the new owners follows the commit.

use std::collections::{BTreeMap, BTreeSet};

use baton_shardmap::{Cell, CellId, CellState, ShardMap};

use crate::state::{Command, FederationState};

/// The commands that fail over cells silent for longer than `timeout`.
///
/// `last_seen` holds when each cell last heard from (any clock, same unit as `now` and
/// `timeout`); a cell missing from it is not judged: a new leader starts every known
/// cell's clock when it takes over, so a leader change does not look like an outage.
/// Functions of a down cell go to the ring's choice among the active cells of their home
/// region, else among all active cells; with no active cell anywhere they stay (nothing
/// can serve them). Functions of live cells never move. Idempotent: once applied, the
/// same inputs give no commands.
pub fn failover(state: &FederationState, last_seen: &BTreeMap<CellId, u64>, now: u64, timeout: u64) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut cells_after: Vec<Cell> = Vec::with_capacity(state.cells.len());
    for cell in state.cells.values() {
        let silent = last_seen.get(&cell.id).is_some_and(|&seen| now.saturating_sub(seen) > timeout);
        let mut after = cell.clone();
        if silent && cell.state != CellState::Down {
            commands.push(Command::SetCellState { cell: cell.id.clone(), state: CellState::Down });
            after.state = CellState::Down;
        }
        cells_after.push(after);
    }
    // The usual round: every cell alive, nothing to scan.
    if cells_after.iter().all(|c| c.state != CellState::Down) {
        return commands;
    }
    let down: BTreeSet<&CellId> = cells_after.iter().filter(|c| c.state == CellState::Down).map(|c| &c.id).collect();
    // The ring over the cells alone (no copy of the assignments).
    let ring = ShardMap::from_snapshot(state.epoch, cells_after.iter().cloned(), []);
    for (function, assignment) in &state.assignments {
        let on_down_cell = down.contains(&assignment.cell) || !state.cells.contains_key(&assignment.cell);
        if !on_down_cell {
            continue;
        }
        let region = state.functions.get(function).map(|f| f.home_region.as_str());
        if let Some(target) = ring.ring_owner(function, region) {
            commands.push(Command::Assign { function: function.clone(), cell: target.id.clone() });
        }
    }
    commands
}

/// What a live cell last said it can serve (its heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellHealth {
    /// Its workers that heartbeat.
    pub healthy_workers: u32,
    /// Its functions (IDs) that have wanted a sandbox without getting one.
    pub unservable: BTreeSet<String>,
    /// Its functions (IDs) whose last sandbox creation failed, with why.
    pub failing: std::collections::BTreeMap<String, String>,
    /// Its workers that heartbeat and run container images.
    pub image_workers: u32,
}

impl CellHealth {
    /// Whether it can take functions: it has a worker.
    pub fn can_serve(&self) -> bool {
        self.healthy_workers > 0
    }
}

/// The commands that move the functions live cells report they cannot serve (no worker,
/// no room, creations failing) to a cell that can: the ring's choice among the other
/// active cells of the home region, else any region, leaving out cells without a worker
/// and cells that report the same function unservable. A function stays where it is when
/// no such cell exists, and only the cell that owns a function can have it moved.
/// Idempotent: once applied, the same inputs give no commands (the functions are no longer
/// on the reporting cells).
pub fn relieve(state: &FederationState, health: &BTreeMap<CellId, CellHealth>) -> Vec<Command> {
    let mut commands = Vec::new();
    for (sick, report) in health.iter().filter(|(_, h)| !h.unservable.is_empty()) {
        let able = state.cells.values().filter(|c| {
            c.state == CellState::Active && &c.id != sick && health.get(&c.id).is_none_or(CellHealth::can_serve)
        });
        let ring = ShardMap::from_snapshot(state.epoch, able.cloned(), []);
        for function in &report.unservable {
            if state.assignments.get(function).is_none_or(|a| &a.cell != sick) {
                continue;
            }
            let region = state.functions.get(function).map(|f| f.home_region.as_str());
            let Some(target) = ring.ring_owner(function, region) else { continue };
            if health.get(&target.id).is_some_and(|h| h.unservable.contains(function)) {
                continue;
            }
            commands.push(Command::Assign { function: function.clone(), cell: target.id.clone() });
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::{FunctionRecord, Tenant};

    fn cell(id: &str, region: &str, state: CellState) -> Cell {
        Cell { state, ..Cell::active(id, region) }
    }

    /// A federation of `cells`, with `functions` (name, home region, cell) assigned.
    fn federation(cells: &[Cell], functions: &[(String, String, String)]) -> FederationState {
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant {
            name: "t".into(),
            default_region: "eu".into(),
            max_functions: 0,
            limits: Default::default(),
        }));
        for c in cells {
            s.apply(Command::PutCell(c.clone()));
        }
        for (name, region, on) in functions {
            let record = FunctionRecord {
                tenant: "t".into(),
                name: name.clone(),
                home_region: region.clone(),
                spec_json: "{}".into(),
                usage: Default::default(),
            };
            let (outcome, _) = s.apply(Command::PutFunction { record, cell: CellId(on.clone()) });
            assert!(matches!(outcome, crate::state::Outcome::Applied { .. }), "{outcome:?}");
        }
        s
    }

    fn seen(ids: &[&str], at: u64) -> BTreeMap<CellId, u64> {
        ids.iter().map(|id| (CellId(id.to_string()), at)).collect()
    }

    fn apply(state: &mut FederationState, commands: Vec<Command>) {
        for c in commands {
            state.apply(c);
        }
    }

    #[test]
    fn a_silent_cell_goes_down_and_its_functions_move_within_their_region() {
        let cells = [
            cell("eu-1", "eu", CellState::Active),
            cell("eu-2", "eu", CellState::Active),
            cell("us-1", "us", CellState::Active),
        ];
        let functions: Vec<(String, String, String)> = (0..30)
            .map(|i| (format!("f{i}"), "eu".to_string(), if i % 2 == 0 { "eu-1" } else { "eu-2" }.to_string()))
            .collect();
        let mut s = federation(&cells, &functions);
        let mut last = seen(&["eu-1", "eu-2", "us-1"], 2_000);
        last.insert(CellId("eu-1".into()), 0);
        assert!(failover(&s, &last, 1_000, 1_000).is_empty(), "at the timeout, not past it: nothing happens");
        let commands = failover(&s, &last, 2_500, 1_000);
        assert_eq!(commands[0], Command::SetCellState { cell: CellId("eu-1".into()), state: CellState::Down });
        assert_eq!(commands.len(), 1 + 15);
        let before = s.clone();
        apply(&mut s, commands);
        for (f, a) in &s.assignments {
            let was = &before.assignments[f];
            if was.cell.0 == "eu-1" {
                assert_eq!(
                    (a.cell.0.as_str(), a.generation),
                    ("eu-2", was.generation.next()),
                    "{f}: same region first"
                );
            } else {
                assert_eq!(a, was, "{f} was on a live cell and must not move");
            }
        }
        assert!(failover(&s, &last, 2_500, 1_000).is_empty(), "applied: nothing more to do");
    }

    #[test]
    fn with_no_live_cell_in_the_region_functions_cross_regions_and_with_none_at_all_they_stay() {
        let cells = [cell("eu-1", "eu", CellState::Active), cell("us-1", "us", CellState::Active)];
        let functions = [("f".to_string(), "eu".to_string(), "eu-1".to_string())];
        let mut s = federation(&cells, &functions);
        let commands = failover(&s, &seen(&["eu-1"], 0), 10, 5);
        assert_eq!(commands.last(), Some(&Command::Assign { function: "t/f".into(), cell: CellId("us-1".into()) }));
        apply(&mut s, commands);
        let commands = failover(&s, &seen(&["us-1"], 0), 10, 5);
        assert_eq!(commands, vec![Command::SetCellState { cell: CellId("us-1".into()), state: CellState::Down }]);
    }

    fn health(workers: u32, unservable: &[&str]) -> CellHealth {
        CellHealth {
            healthy_workers: workers,
            unservable: unservable.iter().map(|f| f.to_string()).collect(),
            failing: Default::default(),
            image_workers: 0,
        }
    }

    #[test]
    fn functions_a_live_cell_cannot_serve_move_to_a_cell_that_can() {
        let cells = [
            cell("eu-1", "eu", CellState::Active),
            cell("eu-2", "eu", CellState::Active),
            cell("eu-3", "eu", CellState::Active),
            cell("us-1", "us", CellState::Active),
        ];
        let functions: Vec<(String, String, String)> =
            (0..12).map(|i| (format!("f{i}"), "eu".to_string(), "eu-1".to_string())).collect();
        let mut s = federation(&cells, &functions);
        // eu-1 lost its worker: it reports what wants sandboxes. eu-2 has no worker either.
        let reports = BTreeMap::from([
            (CellId("eu-1".into()), health(0, &["t/f0", "t/f1", "t/f2", "t/f3"])),
            (CellId("eu-2".into()), health(0, &[])),
        ]);
        let commands = relieve(&s, &reports);
        assert_eq!(commands.len(), 4);
        for c in &commands {
            assert!(
                matches!(c, Command::Assign { cell, .. } if cell.0 == "eu-3"),
                "the one cell of the home region that can serve: {c:?}"
            );
        }
        let before = s.clone();
        apply(&mut s, commands);
        assert_eq!(s.assignments["t/f0"].generation, before.assignments["t/f0"].generation.next());
        assert_eq!(s.assignments["t/f4"], before.assignments["t/f4"], "what it did not report stays");
        assert!(relieve(&s, &reports).is_empty(), "applied: nothing more to do");
        // A cell only speaks for what it owns; a function nobody else can serve stays.
        let others = BTreeMap::from([(CellId("eu-3".into()), health(1, &["t/f5"]))]);
        assert!(relieve(&s, &others).is_empty(), "f5 is on eu-1, not eu-3");
        let everyone_sick = BTreeMap::from([
            (CellId("eu-1".into()), health(0, &["t/f5"])),
            (CellId("eu-2".into()), health(0, &[])),
            (CellId("eu-3".into()), health(0, &[])),
            (CellId("us-1".into()), health(0, &[])),
        ]);
        assert!(relieve(&s, &everyone_sick).is_empty());
        let also_sick_there = BTreeMap::from([
            (CellId("eu-1".into()), health(1, &["t/f5"])),
            (CellId("eu-2".into()), health(0, &[])),
            (CellId("eu-3".into()), health(1, &["t/f5"])),
        ]);
        let moves = relieve(&s, &also_sick_there);
        assert!(
            moves.iter().all(|c| !matches!(c, Command::Assign { cell, .. } if cell.0 == "eu-3")),
            "not to a cell that cannot serve it either: {moves:?}"
        );
    }

    proptest! {
        /// After failover, no function sits on a down cell while an active cell exists,
        /// functions on live cells keep their owner and generation, and a second run with
        /// the same inputs does nothing.
        #[test]
        fn failover_moves_exactly_what_is_on_dead_cells(
            cells in prop::collection::vec((0usize..2, any::<bool>(), prop::bool::weighted(0.2)), 1..6),
            functions in prop::collection::vec((0usize..6, 0usize..2), 0..40),
        ) {
            let cells: Vec<Cell> = cells
                .iter()
                .enumerate()
                .map(|(i, (region, _, draining))| {
                    cell(&format!("c{i}"), &format!("r{region}"), if *draining { CellState::Draining } else { CellState::Active })
                })
                .collect();
            let n = cells.len();
            let functions: Vec<(String, String, String)> = functions
                .iter()
                .enumerate()
                .map(|(i, (on, region))| (format!("f{i}"), format!("r{region}"), format!("c{}", on % n)))
                .collect();
            let alive: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
            let mut s = federation(&cells, &functions);
            let last: BTreeMap<CellId, u64> =
                (0..n).map(|i| (CellId(format!("c{i}")), if alive[i] { 100 } else { 0 })).collect();
            let before = s.clone();
            let commands = failover(&s, &last, 100, 50);
            apply(&mut s, commands);
            let any_active = s.cells.values().any(|c| c.state == CellState::Active);
            for (f, a) in &s.assignments {
                let owner = &s.cells[&a.cell];
                let was = &before.assignments[f];
                let was_alive = alive[was.cell.0[1..].parse::<usize>().unwrap()];
                if was_alive {
                    prop_assert_eq!(a, was);
                } else if any_active {
                    prop_assert_eq!(owner.state, CellState::Active, "{} left on {}", f, owner.id);
                    prop_assert_eq!(a.generation, was.generation.next());
                }
            }
            prop_assert!(failover(&s, &last, 100, 50).is_empty());
        }
    }
}
