//! Owner lookup in a map of 1,000,000 assigned functions over 16 cells (the router's hot
//! path), and on the ring alone (a function the map has not heard of yet): criterion's
//! mean per lookup, then the p50/p99/p99.9 of 1,000,000 lookups timed one by one (each
//! includes the ~20 ns of reading the clock twice). Every "assigned" lookup is checked to
//! hit an assignment and every "unknown" one to fall to the ring, so neither figure can
//! silently measure the other path.
//!
//!     cargo bench -p baton-shardmap --bench lookup

use std::hint::black_box;
use std::time::Instant;

use baton_shardmap::{Assignment, Cell, CellId, CellState, Epoch, Generation, ShardMap};
use criterion::Criterion;

const FUNCTIONS: usize = 1_000_000;
const CELLS: usize = 16;

fn map() -> ShardMap {
    let cells: Vec<Cell> = (0..CELLS)
        .map(|i| Cell {
            id: CellId(format!("cell-{i}")),
            region: if i % 2 == 0 { "eu".into() } else { "us".into() },
            control: format!("http://10.0.0.{i}:7100"),
            data_planes: vec![format!("http://10.0.0.{i}:8080"), format!("http://10.0.1.{i}:8080")],
            weight: 1,
            state: CellState::Active,
        })
        .collect();
    let assignments = (0..FUNCTIONS).map(|i| {
        let assignment = Assignment { cell: CellId(format!("cell-{}", i % CELLS)), generation: Generation(1) };
        (assigned(i), assignment)
    });
    ShardMap::from_snapshot(Epoch(1), cells, assignments)
}

/// The ID of the `i`-th assigned function: its tenant follows from its number, so any
/// `i` below `FUNCTIONS` names a function in the map.
fn assigned(i: usize) -> String {
    format!("tenant-{}/function-{i}", i % 100)
}

/// `names`, after checking that each is assigned (`true`) or on the ring only (`false`).
fn checked(map: &ShardMap, names: Vec<String>, assigned: bool) -> Vec<String> {
    let hits = names.iter().filter(|n| map.owner(n, Some("eu")).is_some_and(|o| o.generation.is_some())).count();
    assert_eq!(hits, if assigned { names.len() } else { 0 }, "lookups that hit an assignment");
    names
}

fn lookup(c: &mut Criterion) {
    let map = map();
    let names = checked(&map, (0..4096).map(|i| assigned(i * 241 % FUNCTIONS)).collect(), true);
    let unknown = checked(&map, (0..4096).map(|i| format!("new-tenant/function-{i}")).collect(), false);
    let mut i = 0;
    c.bench_function("owner: assigned function, 1M in map", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(map.owner(black_box(&names[i]), Some("eu")).map(|o| o.generation))
        })
    });
    c.bench_function("owner: unknown function, ring", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(map.owner(black_box(&unknown[i]), Some("eu")).map(|o| o.generation))
        })
    });
}

fn percentiles(map: &ShardMap) {
    let names = checked(map, (0..FUNCTIONS).map(|i| assigned(i * 7919 % FUNCTIONS)).collect(), true);
    let mut ns: Vec<u64> = names
        .iter()
        .map(|name| {
            let start = Instant::now();
            black_box(map.owner(black_box(name), Some("eu")).map(|o| o.generation));
            start.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    let at = |p: f64| ns[((p * ns.len() as f64) as usize).min(ns.len() - 1)];
    println!(
        "owner, 1,000,000 lookups timed one by one: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        at(0.5),
        at(0.99),
        at(0.999),
        ns[ns.len() - 1]
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    lookup(&mut criterion);
    criterion.final_summary();
    percentiles(&map());
}
