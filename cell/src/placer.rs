//! Choosing a worker node for a new sandbox. Policies sit behind [`Placer`], chosen by
//! config; none ever places over a node's capacity (CPU, memory or sandbox count).

use serde::{Deserialize, Serialize};

/// What a node has and has given out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    /// Node ID.
    pub id: baton_proto::NodeId,
    /// CPU offered, thousandths of a core.
    pub cpu_capacity: u32,
    /// Memory offered, MiB.
    pub memory_capacity: u64,
    /// Most sandboxes.
    pub max_sandboxes: u32,
    /// CPU given out.
    pub cpu_allocated: u32,
    /// Memory given out.
    pub memory_allocated: u64,
    /// Sandboxes placed.
    pub sandboxes: u32,
}

/// What a sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    /// MiB.
    pub memory_mib: u64,
}

impl NodeLoad {
    /// Whether `need` fits without passing any capacity.
    pub fn fits(&self, need: Need) -> bool {
        self.sandboxes < self.max_sandboxes
            && u64::from(self.cpu_allocated) + u64::from(need.cpu_millis) <= u64::from(self.cpu_capacity)
            && self.memory_allocated.saturating_add(need.memory_mib) <= self.memory_capacity
    }
}

/// The placement policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// The node left least allocated, preferring balanced CPU and memory use.
    #[default]
    LeastAllocated,
    /// A node chosen uniformly among those that fit.
    Random,
    /// The next node that fits, in turn.
    RoundRobin,
}

/// Picks a node for a sandbox.
pub trait Placer: Send {
    /// Index into `nodes` of the node chosen, or `None` when no node fits.
    fn place(&mut self, nodes: &[NodeLoad], need: Need) -> Option<usize>;
}

/// The placer for `policy`; `seed` drives the random policy.
pub fn placer(policy: PlacementPolicy, seed: u64) -> Box<dyn Placer> {
    match policy {
        PlacementPolicy::LeastAllocated => Box::new(LeastAllocated),
        PlacementPolicy::Random => Box::new(Random { state: seed }),
        PlacementPolicy::RoundRobin => Box::new(RoundRobin { next: 0 }),
    }
}

/// Kubernetes-style least-allocated plus balanced-allocation scoring.
pub struct LeastAllocated;

impl LeastAllocated {
    fn score(node: &NodeLoad, need: Need) -> f64 {
        let cpu_used = f64::from(node.cpu_allocated + need.cpu_millis) / f64::from(node.cpu_capacity.max(1));
        let mem_used = (node.memory_allocated + need.memory_mib) as f64 / node.memory_capacity.max(1) as f64;
        let least_allocated = 1.0 - (cpu_used + mem_used) / 2.0;
        let balance = 1.0 - (cpu_used - mem_used).abs();
        least_allocated + balance
    }
}

impl Placer for LeastAllocated {
    fn place(&mut self, nodes: &[NodeLoad], need: Need) -> Option<usize> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.fits(need))
            // Highest score; among equals the smallest ID, so the choice is deterministic.
            .max_by(|(_, a), (_, b)| {
                Self::score(a, need).total_cmp(&Self::score(b, need)).then_with(|| b.id.cmp(&a.id))
            })
            .map(|(i, _)| i)
    }
}

/// Uniform choice among the nodes that fit (SplitMix64).
pub struct Random {
    state: u64,
}

impl Random {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Placer for Random {
    fn place(&mut self, nodes: &[NodeLoad], need: Need) -> Option<usize> {
        let fitting: Vec<usize> = nodes.iter().enumerate().filter(|(_, n)| n.fits(need)).map(|(i, _)| i).collect();
        if fitting.is_empty() {
            return None;
        }
        Some(fitting[(self.next() % fitting.len() as u64) as usize])
    }
}

/// The next fitting node after the last one chosen.
pub struct RoundRobin {
    next: usize,
}

impl Placer for RoundRobin {
    fn place(&mut self, nodes: &[NodeLoad], need: Need) -> Option<usize> {
        let len = nodes.len();
        let chosen = (0..len).map(|step| (self.next + step) % len).find(|&i| nodes[i].fits(need))?;
        self.next = chosen + 1;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, cpu: (u32, u32), mem: (u64, u64)) -> NodeLoad {
        NodeLoad {
            id: baton_proto::NodeId::new(id).unwrap(),
            cpu_capacity: cpu.0,
            cpu_allocated: cpu.1,
            memory_capacity: mem.0,
            memory_allocated: mem.1,
            max_sandboxes: 100,
            sandboxes: 0,
        }
    }

    const NEED: Need = Need { cpu_millis: 250, memory_mib: 128 };

    #[test]
    fn least_allocated_prefers_the_emptier_and_more_balanced_node() {
        let nodes = vec![node("busy", (2000, 1500), (4096, 3000)), node("idle", (2000, 0), (4096, 0))];
        assert_eq!(LeastAllocated.place(&nodes, NEED), Some(1));
        // Same free share, but one would end lopsided (CPU full, memory empty).
        let nodes = vec![node("lopsided", (2000, 1500), (4096, 0)), node("balanced", (2000, 750), (4096, 1536))];
        assert_eq!(LeastAllocated.place(&nodes, NEED), Some(1));
    }

    #[test]
    fn round_robin_takes_turns_and_skips_full_nodes() {
        let mut rr = RoundRobin { next: 0 };
        let nodes =
            vec![node("a", (1000, 0), (1024, 0)), node("b", (1000, 1000), (1024, 0)), node("c", (1000, 0), (1024, 0))];
        let picks: Vec<_> = (0..4).map(|_| rr.place(&nodes, NEED).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn random_spreads_over_fitting_nodes() {
        let mut r = Random { state: 7 };
        let nodes =
            vec![node("a", (1000, 0), (1024, 0)), node("b", (1000, 900), (1024, 0)), node("c", (1000, 0), (1024, 0))];
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[r.place(&nodes, NEED).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 400 && counts[2] > 400, "{counts:?}");
    }

    #[test]
    fn the_sandbox_count_is_a_capacity_too() {
        let mut full = node("a", (1000, 0), (1024, 0));
        full.sandboxes = 100;
        assert_eq!(LeastAllocated.place(&[full], NEED), None);
    }

    fn arb_node() -> impl Strategy<Value = NodeLoad> {
        (1u32..4000, 0u32..4000, 1u64..8192, 0u64..8192, 0u32..4, 0u32..4).prop_map(|(cc, ca, mc, ma, max, n)| {
            NodeLoad {
                id: baton_proto::NodeId::new(format!("n{cc}-{ca}")).unwrap(),
                cpu_capacity: cc,
                cpu_allocated: ca.min(cc),
                memory_capacity: mc,
                memory_allocated: ma.min(mc),
                max_sandboxes: max,
                sandboxes: n.min(max),
            }
        })
    }

    proptest! {
        #[test]
        fn no_policy_ever_overcommits_and_each_finds_a_fit_when_one_exists(
            nodes in prop::collection::vec(arb_node(), 0..12),
            cpu in 1u32..2000,
            mem in 1u64..4096,
            seed in any::<u64>(),
        ) {
            let need = Need { cpu_millis: cpu, memory_mib: mem };
            let any_fits = nodes.iter().any(|n| n.fits(need));
            for policy in [PlacementPolicy::LeastAllocated, PlacementPolicy::Random, PlacementPolicy::RoundRobin] {
                let chosen = placer(policy, seed).place(&nodes, need);
                prop_assert_eq!(chosen.is_some(), any_fits);
                if let Some(i) = chosen {
                    prop_assert!(nodes[i].fits(need));
                }
            }
        }
    }
}
