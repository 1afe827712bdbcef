//! The leader's rebalancer: every round it asks the pure planner ([`crate::planner`]) for
//! at most `move_budget` moves — functions off draining cells first, then from cells
//! above their region's mean onto the least loaded (a new or refilled cell) — and carries
//! them out one after another as graceful migrations. A function's load is 1 (it occupies
//! its cell) plus the calls per second its cell reported in the last heartbeat, so with no
//! traffic the rebalancer evens out function counts.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Manager;
use crate::planner::{CellLoad, FunctionLoad, Problem, plan};
use crate::state::FederationState;

/// How the rebalancer runs.
#[derive(Debug, Clone, Copy)]
pub struct RebalanceSettings {
    /// Time between rounds.
    pub interval: Duration,
    /// Most moves per round; 0 turns it off.
    pub budget: usize,
    /// Overload threshold (fraction above the region's mean).
    pub threshold: f64,
    /// Least time between two moves of a function.
    pub cooldown: Duration,
}

fn problem(
    state: &FederationState,
    loads: &BTreeMap<String, f64>,
    moved: &BTreeMap<String, u64>,
    settings: &RebalanceSettings,
    now: u64,
) -> Problem {
    let cells = state
        .cells
        .values()
        .map(|c| CellLoad { id: c.id.clone(), region: c.region.clone(), state: c.state, weight: c.weight })
        .collect();
    let functions = state
        .assignments
        .iter()
        .filter_map(|(id, a)| {
            let record = state.functions.get(id)?;
            Some(FunctionLoad {
                id: id.clone(),
                cell: a.cell.clone(),
                region: record.home_region.clone(),
                load: 1.0 + loads.get(id).copied().unwrap_or(0.0),
                last_moved: moved.get(id).copied(),
                pinned: state.pinned.contains(id),
            })
        })
        .collect();
    Problem {
        cells,
        functions,
        budget: settings.budget,
        threshold: settings.threshold,
        cooldown: settings.cooldown.as_millis() as u64,
        now,
    }
}

impl Manager {
    /// Runs rounds while this replica leads, until the raft node shuts down.
    pub async fn rebalance(self, settings: RebalanceSettings) {
        if settings.budget == 0 {
            return;
        }
        let origin = Instant::now();
        let mut moved: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            tokio::time::sleep(settings.interval).await;
            if self.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            if !self.is_leader() {
                continue;
            }
            let now = origin.elapsed().as_millis() as u64;
            let loads = self.loads.lock().expect("not poisoned").clone();
            let moves = self
                .sm
                .read(|state| {
                    let moves = plan(&problem(state, &loads, &moved, &settings, now));
                    moves
                        .into_iter()
                        .filter_map(|m| {
                            let record = state.functions.get(&m.function)?.clone();
                            let control = state.cells.get(&m.to)?.control.clone();
                            Some((m, record, control))
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            for (m, record, control) in moves {
                match self.migrate(&m.function, &record, &control, &m.to).await {
                    Ok((_, generation)) => {
                        tracing::info!(function = m.function, from = %m.from, to = %m.to, generation, "moved");
                        moved.insert(m.function, now);
                    }
                    Err(e) => {
                        tracing::warn!(function = m.function, to = %m.to, error = e.message(), "move failed");
                        break;
                    }
                }
            }
        }
    }

    /// Records a cell's reported loads (by function ID).
    pub(crate) fn record_loads(&self, loads: impl IntoIterator<Item = (String, f64)>) {
        let mut all = self.loads.lock().expect("not poisoned");
        for (function, load) in loads {
            all.insert(function, load.max(0.0));
        }
    }
}
