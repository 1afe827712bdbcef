//! Owner lookup in a map of 1,000,000 assigned functions over 16 cells (the router's hot
//! path), and on the ring alone (a function the map has not heard of yet): criterion's
//! mean per lookup, then the p50/p99/p99.9 of 1,000,000 lookups timed one by one (each
//! includes the ~20 ns of reading the clock twice).
//!
//!     cargo bench -p baton-shardmap --bench lookup

use std::hint::black_box;
use std::time::Instant;

use baton_shardmap::{Assignment, Cell, CellId, CellState, ShardMap};
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
        let assignment = Assignment { cell: CellId(format!("cell-{}", i % CELLS)), generation: 1 };
        (format!("tenant-{}/function-{i}", i % 100), assignment)
    });
    ShardMap::from_snapshot(1, cells, assignments)
}

fn lookup(c: &mut Criterion) {
    let map = map();
    assert!(map.owner("tenant-1/function-1", None).is_some());
    let names: Vec<String> =
        (0..4096).map(|i| format!("tenant-{}/function-{}", i % 100, i * 241 % FUNCTIONS)).collect();
    let unknown: Vec<String> = (0..4096).map(|i| format!("new-tenant/function-{i}")).collect();
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
    let names: Vec<String> =
        (0..FUNCTIONS).map(|i| format!("tenant-{}/function-{}", i % 100, i * 7919 % FUNCTIONS)).collect();
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
