//! The planner's contract, as properties over random federations.

use proptest::prelude::*;

use super::*;

fn cell_id(i: usize) -> CellId {
    CellId(format!("cell-{i}"))
}

fn problem() -> impl Strategy<Value = Problem> {
    let cells = prop::collection::vec(
        (
            0usize..2,
            prop_oneof![6 => Just(CellState::Active), 1 => Just(CellState::Draining), 1 => Just(CellState::Down)],
            1u32..4,
        ),
        1..7,
    );
    (cells, 0usize..60, 0usize..8, 0.0f64..0.5, any::<u64>())
        .prop_flat_map(|(cells, n, budget, threshold, seed)| {
            let cells: Vec<CellLoad> = cells
                .into_iter()
                .enumerate()
                .map(|(i, (region, state, weight))| CellLoad {
                    id: cell_id(i),
                    region: format!("r{region}"),
                    state,
                    weight,
                })
                .collect();
            let count = cells.len();
            let functions = prop::collection::vec(
                (
                    0..count,
                    0usize..2,
                    prop_oneof![1 => Just(0.0), 5 => 0.0f64..100.0],
                    prop::option::of(0u64..100),
                    prop::bool::weighted(0.1),
                ),
                n,
            );
            (Just(cells), functions, Just(budget), Just(threshold), Just(seed))
        })
        .prop_map(|(cells, functions, budget, threshold, _)| Problem {
            functions: functions
                .into_iter()
                .enumerate()
                .map(|(i, (cell, region, load, last_moved, pinned))| FunctionLoad {
                    id: format!("t/f{i}"),
                    cell: cells[cell].id.clone(),
                    region: format!("r{region}"),
                    load,
                    last_moved,
                    pinned,
                })
                .collect(),
            cells,
            budget,
            threshold,
            cooldown: 30,
            now: 100,
        })
}

fn normalised_loads(p: &Problem) -> BTreeMap<CellId, f64> {
    let mut loads: BTreeMap<CellId, f64> = p.cells.iter().map(|c| (c.id.clone(), 0.0)).collect();
    for f in &p.functions {
        *loads.get_mut(&f.cell).unwrap() += f.load;
    }
    for c in &p.cells {
        *loads.get_mut(&c.id).unwrap() /= f64::from(c.weight);
    }
    loads
}

/// Whether no active cell is over its region's mean by more than the threshold.
fn balanced(p: &Problem) -> bool {
    let loads = normalised_loads(p);
    let regions: std::collections::BTreeSet<&str> = p.cells.iter().map(|c| c.region.as_str()).collect();
    regions.into_iter().all(|r| {
        let active: Vec<&CellLoad> = p.cells.iter().filter(|c| c.region == r && c.state == CellState::Active).collect();
        let weight: f64 = active.iter().map(|c| f64::from(c.weight)).sum();
        let mean = active.iter().map(|c| loads[&c.id] * f64::from(c.weight)).sum::<f64>() / weight;
        active.iter().all(|c| loads[&c.id] <= mean * (1.0 + p.threshold) + 1e-9)
    })
}

fn apply(p: &mut Problem, moves: &[Move]) {
    for m in moves {
        let f = p.functions.iter_mut().find(|f| f.id == m.function).unwrap();
        f.cell = m.to.clone();
        f.last_moved = Some(p.now);
    }
}

proptest! {
    #[test]
    fn moves_respect_the_budget_cooldown_pins_and_cell_states(p in problem()) {
        let moves = plan(&p);
        prop_assert!(moves.len() <= p.budget);
        let mut seen = std::collections::BTreeSet::new();
        for m in &moves {
            prop_assert!(seen.insert(m.function.clone()), "{} moved twice", m.function);
            let f = p.functions.iter().find(|f| f.id == m.function).unwrap();
            prop_assert_eq!(&m.from, &f.cell);
            prop_assert!(m.from != m.to);
            prop_assert!(!f.pinned, "a pinned function moved");
            prop_assert!(f.last_moved.is_none_or(|t| p.now - t >= p.cooldown), "a function in its cooldown moved");
            let to = p.cells.iter().find(|c| c.id == m.to).unwrap();
            prop_assert_eq!(to.state, CellState::Active, "a move onto a cell that is not active");
        }
    }

    #[test]
    fn a_balanced_federation_with_nothing_to_drain_plans_no_moves(p in problem()) {
        let draining = p.cells.iter().any(|c| c.state == CellState::Draining);
        prop_assume!(!draining && balanced(&p));
        prop_assert_eq!(plan(&p), vec![]);
    }

    #[test]
    fn repeated_planning_converges(mut p in problem()) {
        p.budget = p.budget.max(1);
        // Past every initial cooldown (the first property covers cooldowns); each round
        // then waits out the cooldown of the moves it made.
        p.now = 1_000;
        let rounds = p.functions.len() * 2 + 2;
        let mut settled = false;
        for _ in 0..rounds {
            let moves = plan(&p);
            if moves.is_empty() {
                settled = true;
                break;
            }
            apply(&mut p, &moves);
            p.now += p.cooldown;
        }
        prop_assert!(settled, "still moving after {} rounds", rounds);
        // Settled: nothing movable is left on a draining cell while some cell can take it.
        let any_active = p.cells.iter().any(|c| c.state == CellState::Active);
        for f in &p.functions {
            let on = p.cells.iter().find(|c| c.id == f.cell).unwrap();
            prop_assert!(!(any_active && on.state == CellState::Draining && !f.pinned), "{} left on draining {}", f.id, on.id);
        }
    }
}

#[test]
fn an_overloaded_cell_sheds_its_heaviest_movable_function_to_the_lightest() {
    let cells =
        (0..3).map(|i| CellLoad { id: cell_id(i), region: "eu".into(), state: CellState::Active, weight: 1 }).collect();
    let f = |id: &str, cell: usize, load: f64| FunctionLoad {
        id: id.into(),
        cell: cell_id(cell),
        region: "eu".into(),
        load,
        last_moved: None,
        pinned: false,
    };
    let problem = Problem {
        cells,
        functions: vec![f("a", 0, 50.0), f("b", 0, 30.0), f("c", 0, 20.0), f("d", 1, 40.0), f("e", 2, 10.0)],
        budget: 1,
        threshold: 0.1,
        cooldown: 30,
        now: 0,
    };
    // Loads 100 / 40 / 10, mean 50: moving "a" (50) to cell-2 would leave 50 < 60, so the
    // heaviest that keeps cell-0 above cell-2 is "b" (70 > 40).
    assert_eq!(plan(&problem), vec![Move { function: "b".into(), from: cell_id(0), to: cell_id(2) }]);
    let drained = Problem {
        cells: problem
            .cells
            .iter()
            .cloned()
            .map(|mut c| {
                if c.id == cell_id(0) {
                    c.state = CellState::Draining;
                }
                c
            })
            .collect(),
        budget: 10,
        ..problem.clone()
    };
    let moves = plan(&drained);
    let off_cell_0: Vec<&str> = moves.iter().filter(|m| m.from == cell_id(0)).map(|m| m.function.as_str()).collect();
    assert_eq!(off_cell_0, ["a", "b", "c"], "a drain moves everything, heaviest first");
    assert!(moves.iter().all(|m| m.to != cell_id(0)));
}
