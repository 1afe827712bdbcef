//! The rebalancing planner: `plan(problem) -> moves`, pure (no I/O, no clock: time comes in
//! as a number). It empties draining cells first, then, within each region, moves load
//! from cells above the region's mean by more than a threshold to the least-loaded cell,
//! one function at a time, under a move budget and a per-function cooldown. A move is made
//! only if the source stays more loaded than the target after it by a margin (the
//! hysteresis, a fraction of the region's mean), so every move strictly lowers
//! `Σ load² / weight`, repeated planning converges, and no move merely swaps which of two
//! cells is the heavier: a function whose load alone is larger than the imbalance (the
//! dominant function of a skewed workload) stays where it is, and load that wobbles by less
//! than the margin cannot undo a move.

use std::collections::BTreeMap;

use baton_shardmap::{CellId, CellState};

/// A cell as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellLoad {
    /// Its ID.
    pub id: CellId,
    /// Its region.
    pub region: String,
    /// Its state: only active cells receive functions; draining cells are emptied.
    pub state: CellState,
    /// Relative capacity, at least 1.
    pub weight: u32,
}

/// A function as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionLoad {
    /// Function ID.
    pub id: String,
    /// The cell that owns it now.
    pub cell: CellId,
    /// Its home region.
    pub region: String,
    /// Its load (calls per second, or any additive measure), at least 0.
    pub load: f64,
    /// When it last moved (same clock as `Problem::now`), if ever.
    pub last_moved: Option<u64>,
    /// Pinned functions never move.
    pub pinned: bool,
}

/// What the planner is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Every cell.
    pub cells: Vec<CellLoad>,
    /// Every function.
    pub functions: Vec<FunctionLoad>,
    /// Most moves in one plan.
    pub budget: usize,
    /// A cell is overloaded above `mean × (1 + threshold)` of its region.
    pub threshold: f64,
    /// After a balancing move its source must still be above its target by more than
    /// `hysteresis × mean` (normalised loads, the region's mean), at least 0.
    pub hysteresis: f64,
    /// A function that moved less than this long ago stays.
    pub cooldown: u64,
    /// Now, on the clock of `last_moved`.
    pub now: u64,
}

/// One planned move.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The function.
    pub function: String,
    /// Its owner now.
    pub from: CellId,
    /// Its new owner.
    pub to: CellId,
    /// Why it moves.
    pub reason: MoveReason,
}

/// Why the planner moves a function.
#[derive(Debug, Clone, PartialEq)]
pub enum MoveReason {
    /// Its cell is draining.
    Drain,
    /// Its cell is above its region's mean by more than the threshold. The normalised
    /// loads of both cells before the move, and the region's mean: the imbalance the move
    /// reduces.
    Balance {
        /// The source's load before the move.
        source: f64,
        /// The target's load before the move.
        target: f64,
        /// The region's mean.
        mean: f64,
    },
}

impl MoveReason {
    /// The metric label of the reason.
    pub fn label(&self) -> &'static str {
        match self {
            MoveReason::Drain => "drain",
            MoveReason::Balance { .. } => "balance",
        }
    }
}

struct Cells<'a> {
    info: BTreeMap<&'a CellId, &'a CellLoad>,
    load: BTreeMap<&'a CellId, f64>,
}

impl<'a> Cells<'a> {
    fn normalised(&self, id: &CellId) -> f64 {
        self.load[id] / f64::from(self.info[id].weight.max(1))
    }

    /// The least-loaded active cell of `region` (or of any region if `anywhere`), ties
    /// broken by ID.
    fn least_loaded(&self, region: &str, anywhere: bool) -> Option<&'a CellId> {
        self.info
            .values()
            .filter(|c| c.state == CellState::Active && (anywhere || c.region == region))
            .min_by(|a, b| self.normalised(&a.id).total_cmp(&self.normalised(&b.id)).then(a.id.cmp(&b.id)))
            .map(|c| &c.id)
    }

    fn shift(&mut self, from: &CellId, to: &'a CellId, load: f64) {
        *self.load.get_mut(from).expect("known cell") -= load;
        *self.load.get_mut(to).expect("known cell") += load;
    }
}

/// Plans at most `problem.budget` moves.
pub fn plan(problem: &Problem) -> Vec<Move> {
    let mut cells = Cells {
        info: problem.cells.iter().map(|c| (&c.id, c)).collect(),
        load: problem.cells.iter().map(|c| (&c.id, 0.0)).collect(),
    };
    for f in &problem.functions {
        if let Some(load) = cells.load.get_mut(&f.cell) {
            *load += f.load.max(0.0);
        }
    }
    let movable =
        |f: &FunctionLoad| !f.pinned && f.last_moved.is_none_or(|t| problem.now.saturating_sub(t) >= problem.cooldown);
    let mut moves = Vec::new();
    let mut moved: Vec<bool> = vec![false; problem.functions.len()];

    // 1. Drains: heaviest first, to the least-loaded active cell of the home region, else
    //    of any region.
    let mut draining: Vec<usize> = (0..problem.functions.len())
        .filter(|&i| {
            let f = &problem.functions[i];
            cells.info.get(&f.cell).is_some_and(|c| c.state == CellState::Draining) && movable(f)
        })
        .collect();
    draining.sort_by(|&a, &b| problem.functions[b].load.total_cmp(&problem.functions[a].load));
    for i in draining {
        if moves.len() >= problem.budget {
            return moves;
        }
        let f = &problem.functions[i];
        let Some(to) = cells.least_loaded(&f.region, false).or_else(|| cells.least_loaded(&f.region, true)) else {
            continue;
        };
        cells.shift(&f.cell, to, f.load.max(0.0));
        moves.push(Move { function: f.id.clone(), from: f.cell.clone(), to: to.clone(), reason: MoveReason::Drain });
        moved[i] = true;
    }

    // 2. Balance each region's active cells.
    let regions: std::collections::BTreeSet<&str> =
        problem.cells.iter().filter(|c| c.state == CellState::Active).map(|c| c.region.as_str()).collect();
    for region in regions {
        let members: Vec<&CellId> = problem
            .cells
            .iter()
            .filter(|c| c.state == CellState::Active && c.region == region)
            .map(|c| &c.id)
            .collect();
        let total_weight: f64 = members.iter().map(|id| f64::from(cells.info[*id].weight.max(1))).sum();
        let mean = members.iter().map(|id| cells.load[*id]).sum::<f64>() / total_weight;
        'plan: while moves.len() < problem.budget {
            let mut sources: Vec<&CellId> = members
                .iter()
                .copied()
                .filter(|id| cells.normalised(id) > mean * (1.0 + problem.threshold) + 1e-9)
                .collect();
            sources.sort_by(|a, b| cells.normalised(b).total_cmp(&cells.normalised(a)).then(a.cmp(b)));
            let Some(target) = cells.least_loaded(region, false) else { break };
            for source in sources {
                let (ws, wt) =
                    (f64::from(cells.info[source].weight.max(1)), f64::from(cells.info[target].weight.max(1)));
                let (s, t) = (cells.load[source], cells.load[target]);
                let margin = problem.hysteresis.max(0.0) * mean;
                // The heaviest movable function whose move leaves the source more loaded
                // than the target by the margin.
                let candidate = (0..problem.functions.len())
                    .filter(|&i| {
                        let f = &problem.functions[i];
                        !moved[i]
                            && &f.cell == source
                            && f.region == region
                            && f.load > 0.0
                            && movable(f)
                            && (s - f.load) / ws - (t + f.load) / wt > margin
                    })
                    .max_by(|&a, &b| {
                        let (fa, fb) = (&problem.functions[a], &problem.functions[b]);
                        fa.load.total_cmp(&fb.load).then(fb.id.cmp(&fa.id))
                    });
                if let Some(i) = candidate {
                    let f = &problem.functions[i];
                    let reason = MoveReason::Balance { source: s / ws, target: t / wt, mean };
                    cells.shift(source, target, f.load);
                    moves.push(Move { function: f.id.clone(), from: source.clone(), to: target.clone(), reason });
                    moved[i] = true;
                    continue 'plan;
                }
            }
            break;
        }
    }
    moves
}

#[cfg(test)]
mod tests;
