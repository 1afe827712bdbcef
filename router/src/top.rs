//! Which tenants and functions get series of their own: the `n` most called over the last
//! window, the rest counted together as `other`. So per-tenant and per-function metrics
//! stay at most `n + 1` label values whatever the federation holds (docs/metrics.md).
//!
//! A window's calls are counted per key (at most [`TopKeys::MAX_TRACKED`] keys; a key
//! first seen past that is `other` until the next window); when the window ends, its `n`
//! most called keys are the labelled ones for the next. Until the first window ends, keys
//! are labelled first come, first served, so a small federation has its series at once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The label of everything outside the top.
pub const OTHER: &str = "other";

/// The top `n` keys by calls, recomputed every `window`.
#[derive(Debug)]
pub struct TopKeys {
    n: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    counts: HashMap<String, u64>,
    top: HashSet<String>,
    started: Instant,
    /// Whether a window has ended (before that, keys join the top as they come).
    ranked: bool,
}

impl TopKeys {
    /// Keys counted per window at most.
    pub const MAX_TRACKED: usize = 10_000;

    /// The top `n` over windows of `window`, starting `now`.
    pub fn new(n: usize, window: Duration, now: Instant) -> Self {
        let state = State { counts: HashMap::new(), top: HashSet::new(), started: now, ranked: false };
        Self { n, window, state: Mutex::new(state) }
    }

    /// Counts a call of `key` at `now`; returns whether `key` has a label of its own.
    pub fn call(&self, key: &str, now: Instant) -> bool {
        let mut state = self.state.lock().expect("top keys lock");
        if now.duration_since(state.started) >= self.window {
            let counts = std::mem::take(&mut state.counts);
            state.top = top_n(&counts, self.n);
            state.started = now;
            state.ranked = true;
        }
        let tracked = state.counts.len();
        match state.counts.get_mut(key) {
            Some(count) => *count += 1,
            None if tracked < Self::MAX_TRACKED => {
                state.counts.insert(key.to_string(), 1);
            }
            None => {}
        }
        if !state.ranked && state.top.len() < self.n && !state.top.contains(key) {
            state.top.insert(key.to_string());
        }
        state.top.contains(key)
    }
}

/// The `n` keys of `counts` with the most calls (ties broken by key, so the choice does
/// not depend on the map's order). Pure.
pub fn top_n(counts: &HashMap<String, u64>, n: usize) -> HashSet<String> {
    let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    ranked.into_iter().take(n).map(|(key, _)| key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_busiest_keys_of_a_window_are_labelled_in_the_next_and_the_rest_are_other() {
        let t0 = Instant::now();
        let top = TopKeys::new(2, Duration::from_secs(60), t0);
        // First window: first come, first served.
        assert!(top.call("a", t0));
        assert!(top.call("b", t0));
        assert!(!top.call("c", t0), "the top is full");
        for _ in 0..10 {
            top.call("c", t0);
            top.call("b", t0);
        }
        // Next window: c and b were busiest; a is other now.
        let t1 = t0 + Duration::from_secs(60);
        assert!(top.call("c", t1));
        assert!(top.call("b", t1));
        assert!(!top.call("a", t1));
    }

    proptest! {
        #[test]
        fn never_more_than_n_keys_are_labelled_in_a_window(
            n in 1usize..5,
            mut calls in proptest::collection::vec((0u8..12, 0u64..60), 1..400),
        ) {
            calls.sort_by_key(|(_, at)| *at);
            let t0 = Instant::now();
            let top = TopKeys::new(n, Duration::from_secs(10), t0);
            // Windows as the tracker sees them: one ends at the first call 10 s after it began.
            let (mut started, mut window) = (0, 0);
            let mut labelled: HashMap<u64, HashSet<String>> = HashMap::new();
            for (key, at) in calls {
                if at - started >= 10 {
                    (started, window) = (at, window + 1);
                }
                let key = format!("k{key}");
                if top.call(&key, t0 + Duration::from_secs(at)) {
                    labelled.entry(window).or_default().insert(key);
                }
            }
            for (window, keys) in labelled {
                prop_assert!(keys.len() <= n, "window {window}: {keys:?}");
            }
        }

        #[test]
        fn the_top_holds_the_most_called_keys(
            n in 0usize..6,
            counts in proptest::collection::hash_map("[a-e]{1,2}", 0u64..50, 0..20),
        ) {
            let top = top_n(&counts, n);
            prop_assert_eq!(top.len(), n.min(counts.len()));
            let least_in = top.iter().map(|k| counts[k]).min();
            let most_out = counts.iter().filter(|(k, _)| !top.contains(*k)).map(|(_, c)| *c).max();
            if let (Some(least_in), Some(most_out)) = (least_in, most_out) {
                prop_assert!(least_in >= most_out, "{top:?} of {counts:?}");
            }
        }
    }
}
