//! Load-balancing policies over a function's sandboxes that have a free slot.

use serde::{Deserialize, Serialize};

/// The balancing policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// The sandbox with the fewest requests in flight (ties: the first).
    #[default]
    LeastLoaded,
    /// Each sandbox in turn.
    RoundRobin,
    /// A sandbox chosen uniformly.
    Random,
}

/// Picks among candidates; keeps the state round-robin and random need.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: BalancePolicy,
    cursor: usize,
    rng: u64,
}

impl Balancer {
    /// A balancer for `policy`; `seed` drives the random policy.
    pub fn new(policy: BalancePolicy, seed: u64) -> Self {
        Self { policy, cursor: 0, rng: seed | 1 }
    }

    /// Index of the chosen sandbox among `in_flight.len()` sandboxes, considering only those
    /// for which `free(i)` holds; `None` when none is free.
    pub fn pick(&mut self, in_flight: &[u32], free: impl Fn(usize) -> bool) -> Option<usize> {
        let n = in_flight.len();
        match self.policy {
            BalancePolicy::LeastLoaded => (0..n).filter(|&i| free(i)).min_by_key(|&i| in_flight[i]),
            BalancePolicy::RoundRobin => {
                let chosen = (0..n).map(|step| (self.cursor + step) % n).find(|&i| free(i))?;
                self.cursor = chosen + 1;
                Some(chosen)
            }
            BalancePolicy::Random => {
                let candidates: Vec<usize> = (0..n).filter(|&i| free(i)).collect();
                if candidates.is_empty() {
                    return None;
                }
                // xorshift64: cheap, good enough to spread load.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                Some(candidates[(self.rng % candidates.len() as u64) as usize])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_picks_the_idlest_free_sandbox() {
        let mut b = Balancer::new(BalancePolicy::LeastLoaded, 1);
        assert_eq!(b.pick(&[3, 1, 2], |_| true), Some(1));
        assert_eq!(b.pick(&[3, 1, 2], |i| i != 1), Some(2));
        assert_eq!(b.pick(&[3, 1, 2], |_| false), None);
        assert_eq!(b.pick(&[], |_| true), None);
    }

    #[test]
    fn round_robin_cycles_over_free_sandboxes() {
        let mut b = Balancer::new(BalancePolicy::RoundRobin, 1);
        let picks: Vec<_> = (0..5).map(|_| b.pick(&[0, 0, 0], |i| i != 1).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2, 0]);
    }

    #[test]
    fn random_reaches_every_free_sandbox() {
        let mut b = Balancer::new(BalancePolicy::Random, 42);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[b.pick(&[0; 4], |i| i != 3).unwrap()] += 1;
        }
        assert_eq!(seen[3], 0);
        assert!(seen[..3].iter().all(|&c| c > 80), "{seen:?}");
    }
}
