//! The leader's rebalancer: every round it asks the pure planner ([`crate::planner`]) for
//! at most `move_budget` moves — functions off draining cells first, then from cells
//! above their region's mean onto the least loaded (a new or refilled cell) — and carries
//! them out one after another as graceful migrations. A function's load is 1 (it occupies
//! its cell) plus the sandboxes its cell reports for it, as a decaying peak
//! ([`crate::loads`]), so with no traffic the rebalancer evens out function counts. Each
//! move is logged with the imbalance it reduces and counted by reason
//! (`baton_shard_manager_moves_total{reason}`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_shardmap::{CellId, CellState};

use super::Manager;
use crate::loads::LoadTracker;
use crate::planner::{CellLoad, FunctionLoad, MoveReason, Problem, plan};
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
    /// Margin a move must leave between its source and target (fraction of the region's
    /// mean); see [`Problem::hysteresis`].
    pub hysteresis: f64,
    /// Least time between two moves of a function.
    pub cooldown: Duration,
}

fn problem(
    state: &FederationState,
    loads: &LoadTracker,
    moved: &BTreeMap<String, u64>,
    unable: &BTreeSet<CellId>,
    settings: &RebalanceSettings,
    now: u64,
) -> Problem {
    // A cell that cannot serve (no worker) takes nothing meanwhile: as if it were down.
    let cells = state
        .cells
        .values()
        .map(|c| {
            let cell_state = if unable.contains(&c.id) { CellState::Down } else { c.state };
            CellLoad { id: c.id.clone(), region: c.region.clone(), state: cell_state, weight: c.weight }
        })
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
                load: 1.0 + loads.smoothed(id, now),
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
        hysteresis: settings.hysteresis,
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
        let mut moved: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            tokio::time::sleep(settings.interval).await;
            if self.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            if !self.is_leader() {
                continue;
            }
            let now = self.now_ms();
            let unable = self.unable_cells();
            let moves = self
                .sm
                .read(|state| {
                    // Lock order: the state machine's read, then the loads (never the other
                    // way round; nothing awaits while holding them).
                    let mut loads = self.loads.lock().expect("not poisoned");
                    if loads.len() > state.functions.len() {
                        loads.retain(|f| state.functions.contains_key(f));
                    }
                    let moves = plan(&problem(state, &loads, &moved, &unable, &settings, now));
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
                match self.migrate(&m.function, &record, &control, &m.to, m.reason.label()).await {
                    Ok((_, generation)) => {
                        match m.reason {
                            MoveReason::Drain => {
                                tracing::info!(function = m.function, from = %m.from, to = %m.to, %generation, "moved off a draining cell");
                            }
                            MoveReason::Balance { source, target, mean } => tracing::info!(
                                function = m.function,
                                from = %m.from,
                                to = %m.to,
                                %generation,
                                "moved to even the load: {} had {source:.1} and {} {target:.1} against the region's mean of {mean:.1}",
                                m.from,
                                m.to,
                            ),
                        }
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
        let now = self.now_ms();
        let mut all = self.loads.lock().expect("not poisoned");
        for (function, load) in loads {
            all.record(&function, load, now);
        }
    }
}
