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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::{FunctionRecord, Tenant};

    fn cell(id: &str, region: &str, state: CellState) -> Cell {
        Cell {
            id: CellId(id.into()),
            region: region.into(),
            control: String::new(),
            data_planes: vec![],
            weight: 1,
            state,
        }
    }

    /// A federation of `cells`, with `functions` (name, home region, cell) assigned.
    fn federation(cells: &[Cell], functions: &[(String, String, String)]) -> FederationState {
        let mut s = FederationState::default();
        s.apply(Command::PutTenant(Tenant { name: "t".into(), default_region: "eu".into(), max_functions: 0 }));
        for c in cells {
            s.apply(Command::PutCell(c.clone()));
        }
        for (name, region, on) in functions {
            let record = FunctionRecord {
                tenant: "t".into(),
                name: name.clone(),
                home_region: region.clone(),
                spec_json: "{}".into(),
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
                assert_eq!((a.cell.0.as_str(), a.generation), ("eu-2", was.generation + 1), "{f}: same region first");
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
                    prop_assert_eq!(a.generation, was.generation + 1);
                }
            }
            prop_assert!(failover(&s, &last, 100, 50).is_empty());
        }
    }
}
