//! The consistent-hash ring over a set of cells. Virtual-node positions derive from the
//! cell ID alone (the `consistent_hash_ring` crate chains FNV-1a-64 from the ID's hash), so
//! every replica and router builds the same ring from the same cells; a function's point
//! on the ring is FNV-1a-64 of the little-endian bytes of its [`function_hash`].
//!
//! [`function_hash`]: crate::function_hash

use consistent_hash_ring::{Ring, RingBuilder};

use baton_model::CellId;

/// Virtual nodes per unit of cell weight: enough that three equal cells each get a third
/// of the functions within a few percent.
pub const VNODES_PER_WEIGHT: usize = 256;

/// A ring over cells.
#[derive(Clone)]
pub struct CellRing {
    ring: Ring<CellId>,
}

impl std::fmt::Debug for CellRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellRing").field("cells", &self.ring.len()).field("vnodes", &self.ring.vnodes()).finish()
    }
}

impl CellRing {
    /// A ring over `cells`, each with `weight × VNODES_PER_WEIGHT` virtual nodes.
    pub fn new<'a>(cells: impl IntoIterator<Item = (&'a CellId, u32)>) -> Self {
        let weighted = cells.into_iter().map(|(id, weight)| (id.clone(), weight.max(1) as usize * VNODES_PER_WEIGHT));
        Self { ring: RingBuilder::default().weighted_nodes_iter(weighted).build() }
    }

    /// The cell owning the point of `hash`; `None` for an empty ring.
    pub fn owner(&self, hash: u64) -> Option<&CellId> {
        self.ring.try_get(hash)
    }

    /// Cells on the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring has no cell.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::function_hash;

    fn cells(names: &[&str]) -> Vec<CellId> {
        names.iter().map(|n| CellId(n.to_string())).collect()
    }

    fn shares(ring: &CellRing, ids: &[CellId], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; ids.len()];
        for i in 0..n {
            let owner = ring.owner(function_hash(&format!("tenant/f{i}"))).unwrap();
            counts[ids.iter().position(|c| c == owner).unwrap()] += 1;
        }
        counts.into_iter().map(|c| c as f64 / n as f64).collect()
    }

    #[test]
    fn rings_built_in_any_order_agree() {
        let ids = cells(&["eu-1", "eu-2", "us-1"]);
        let a = CellRing::new(ids.iter().map(|c| (c, 1)));
        let b = CellRing::new(ids.iter().rev().map(|c| (c, 1)));
        for i in 0..10_000 {
            let h = function_hash(&format!("t/{i}"));
            assert_eq!(a.owner(h), b.owner(h));
        }
    }

    #[test]
    fn equal_cells_get_equal_shares() {
        let ids = cells(&["cell-a", "cell-b", "cell-c"]);
        let ring = CellRing::new(ids.iter().map(|c| (c, 1)));
        for share in shares(&ring, &ids, 30_000) {
            assert!((share - 1.0 / 3.0).abs() < 0.05, "{share}");
        }
    }

    #[test]
    fn a_third_cell_takes_about_a_third() {
        let ids = cells(&["cell-1", "cell-2", "cell-3"]);
        let before = CellRing::new(ids[..2].iter().map(|c| (c, 1)));
        let after = CellRing::new(ids.iter().map(|c| (c, 1)));
        let total = 30_000;
        let moved = (0..total)
            .map(|i| function_hash(&format!("dev/f{i}")))
            .filter(|&h| before.owner(h) != after.owner(h))
            .count();
        let fraction = moved as f64 / total as f64;
        assert!((fraction - 1.0 / 3.0).abs() < 0.1 / 3.0, "{fraction}");
    }

    proptest! {
        /// Adding a cell moves functions only onto it, and about its share of them.
        #[test]
        fn adding_a_cell_moves_only_its_share(n in 2usize..6, seed in 0u32..1000) {
            let ids: Vec<CellId> = (0..=n).map(|i| CellId(format!("cell-{seed}-{i}"))).collect();
            let before = CellRing::new(ids[..n].iter().map(|c| (c, 1)));
            let after = CellRing::new(ids.iter().map(|c| (c, 1)));
            let total = 5_000;
            let mut moved = 0;
            for i in 0..total {
                let h = function_hash(&format!("t/{seed}/{i}"));
                let (b, a) = (before.owner(h).unwrap(), after.owner(h).unwrap());
                if a != b {
                    prop_assert_eq!(a, &ids[n], "a function moved between two old cells");
                    moved += 1;
                }
            }
            let expected = 1.0 / (n + 1) as f64;
            let fraction = moved as f64 / total as f64;
            // Random cell IDs: within 30% of the share (three equal cells: see below).
            prop_assert!((fraction - expected).abs() < 0.3 * expected, "moved {} expected {}", fraction, expected);
        }
    }
}
