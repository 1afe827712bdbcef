//! Which tenants and functions get series of their own: the `n` most called over the last
//! window, the rest counted together as `other`. So per-tenant and per-function metrics
//! stay at most `n + 1` label values whatever the federation holds (docs/metrics.md).
//!
//! A window's calls are counted per tenant and per function of a tenant (at most
//! [`Top::MAX_TRACKED`] of each; one first seen past that is `other` until the next
//! window); when the window ends, its most called are the labelled ones for the next.
//! Until the first window ends, they are labelled first come, first served, so a small
//! federation has its series at once.
//!
//! It runs on every call: one lookup of the tenant, one of its function, no allocation
//! once they are known. Each entry holds what its caller keeps with it (the router's
//! metric handles), so that nothing is looked up twice.

use std::time::{Duration, Instant};

use foldhash::HashMap;

/// The label of everything outside the top.
pub const OTHER: &str = "other";

/// The top `tenants` tenants and `functions` functions by calls, ranked every `window`;
/// each labelled tenant holds a `T`, each labelled function an `F`.
#[derive(Debug)]
pub struct Top<T, F> {
    most_tenants: usize,
    most_functions: usize,
    window: Duration,
    started: Instant,
    /// Whether a window has ended (before that, entries are labelled as they come).
    ranked: bool,
    tenants: HashMap<String, Tenant<T, F>>,
    /// Function entries, all tenants together.
    functions: usize,
    labelled_tenants: usize,
    labelled_functions: usize,
}

#[derive(Debug)]
struct Tenant<T, F> {
    calls: u64,
    labelled: bool,
    data: T,
    functions: HashMap<String, Function<F>>,
}

#[derive(Debug)]
struct Function<F> {
    calls: u64,
    labelled: bool,
    data: F,
}

impl<T: Default, F: Default> Top<T, F> {
    /// Tenants, and functions, counted per window at most.
    pub const MAX_TRACKED: usize = 10_000;

    /// The top `tenants` and `functions` over windows of `window`, starting `now`.
    pub fn new(tenants: usize, functions: usize, window: Duration, now: Instant) -> Self {
        Self {
            most_tenants: tenants,
            most_functions: functions,
            window,
            started: now,
            ranked: false,
            tenants: HashMap::default(),
            functions: 0,
            labelled_tenants: 0,
            labelled_functions: 0,
        }
    }

    /// Counts a call of `tenant` at `now` and, when `function` is given, of that function
    /// of the tenant. Returns the tenant's data when it has a label of its own, and the
    /// function's when it has.
    pub fn call(&mut self, tenant: &str, function: Option<&str>, now: Instant) -> (Option<&mut T>, Option<&mut F>) {
        if now.duration_since(self.started) >= self.window {
            self.rank(now);
        }
        let first_come = !self.ranked;
        if !self.tenants.contains_key(tenant) {
            if self.tenants.len() >= Self::MAX_TRACKED {
                return (None, None);
            }
            let labelled = first_come && self.labelled_tenants < self.most_tenants;
            self.labelled_tenants += usize::from(labelled);
            let entry = Tenant { calls: 0, labelled, data: T::default(), functions: HashMap::default() };
            self.tenants.insert(tenant.to_string(), entry);
        }
        let entry = self.tenants.get_mut(tenant).expect("present");
        entry.calls += 1;
        let function = match function {
            None => None,
            Some(name) => {
                if !entry.functions.contains_key(name) && self.functions < Self::MAX_TRACKED {
                    let labelled = first_come && self.labelled_functions < self.most_functions;
                    self.labelled_functions += usize::from(labelled);
                    self.functions += 1;
                    entry.functions.insert(name.to_string(), Function { calls: 0, labelled, data: F::default() });
                }
                entry.functions.get_mut(name).and_then(|f| {
                    f.calls += 1;
                    f.labelled.then_some(&mut f.data)
                })
            }
        };
        (entry.labelled.then_some(&mut entry.data), function)
    }

    /// Ends the window: its most called tenants and functions are labelled in the next,
    /// the counts start again, and entries neither labelled nor holding a labelled
    /// function go (their data with them).
    fn rank(&mut self, now: Instant) {
        let tenants = top_n(self.tenants.iter().map(|(name, t)| (name.as_str(), t.calls)), self.most_tenants);
        let functions = top_n(
            self.tenants.iter().flat_map(|(tenant, t)| {
                t.functions.iter().map(move |(name, f)| ((tenant.as_str(), name.as_str()), f.calls))
            }),
            self.most_functions,
        );
        let tenants: Vec<String> = tenants.into_iter().map(str::to_string).collect();
        let functions: Vec<(String, String)> =
            functions.into_iter().map(|(t, f)| (t.to_string(), f.to_string())).collect();
        for t in self.tenants.values_mut() {
            t.labelled = false;
            t.calls = 0;
            for f in t.functions.values_mut() {
                f.labelled = false;
                f.calls = 0;
            }
        }
        for name in &tenants {
            self.tenants.get_mut(name).expect("ranked from the map").labelled = true;
        }
        for (tenant, name) in &functions {
            let f = self.tenants.get_mut(tenant).and_then(|t| t.functions.get_mut(name)).expect("ranked from the map");
            f.labelled = true;
        }
        self.tenants.retain(|_, t| {
            t.functions.retain(|_, f| f.labelled);
            t.labelled || !t.functions.is_empty()
        });
        self.functions = self.tenants.values().map(|t| t.functions.len()).sum();
        self.labelled_tenants = tenants.len();
        self.labelled_functions = functions.len();
        self.started = now;
        self.ranked = true;
    }
}

/// The `n` keys with the most calls (ties broken by key, so the choice does not depend
/// on the order they come in). Pure.
pub fn top_n<K: Ord + Copy>(counts: impl Iterator<Item = (K, u64)>, n: usize) -> Vec<K> {
    let mut ranked: Vec<(K, u64)> = counts.collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(n).map(|(key, _)| key).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    type Plain = Top<(), ()>;

    /// Which of the tenant and the function have labels, for a call at `at`.
    fn labels(top: &mut Plain, tenant: &str, function: &str, at: Instant) -> (bool, bool) {
        let (t, f) = top.call(tenant, Some(function), at);
        (t.is_some(), f.is_some())
    }

    #[test]
    fn the_busiest_of_a_window_are_labelled_in_the_next_and_the_rest_are_other() {
        let t0 = Instant::now();
        let mut top = Plain::new(2, 2, Duration::from_secs(60), t0);
        // First window: first come, first served.
        assert_eq!(labels(&mut top, "a", "f", t0), (true, true));
        assert_eq!(labels(&mut top, "b", "f", t0), (true, true));
        assert_eq!(labels(&mut top, "c", "f", t0), (false, false), "the tops are full");
        for _ in 0..10 {
            top.call("c", Some("g"), t0);
            top.call("b", Some("g"), t0);
        }
        // Next window: c and b were busiest, c/g and b/g too; a is other now.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(labels(&mut top, "c", "g", t1), (true, true));
        assert_eq!(labels(&mut top, "b", "g", t1), (true, true));
        assert_eq!(labels(&mut top, "a", "f", t1), (false, false));
        assert_eq!(labels(&mut top, "b", "f", t1), (true, false), "b's other function");
        // A tenant's calls count without a function (a 404 names none).
        let mut top = Plain::new(1, 1, Duration::from_secs(60), t0);
        assert_eq!(top.call("a", None, t0).1, None);
        assert!(top.call("a", None, t0).0.is_some());
    }

    #[test]
    fn what_a_labelled_entry_holds_stays_while_it_is_labelled() {
        let t0 = Instant::now();
        let mut top: Top<u32, u32> = Top::new(1, 1, Duration::from_secs(10), t0);
        *top.call("a", Some("f"), t0).0.unwrap() += 1;
        *top.call("a", Some("f"), t0).1.unwrap() += 5;
        let t1 = t0 + Duration::from_secs(10);
        let (tenant, function) = top.call("a", Some("f"), t1);
        assert_eq!((tenant.copied(), function.copied()), (Some(1), Some(5)));
        // b takes the top; a's entry and what it held go.
        for _ in 0..5 {
            top.call("b", Some("g"), t1);
        }
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(top.call("a", Some("f"), t2), (None, None));
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(top.call("a", Some("f"), t3), (Some(&mut 0), Some(&mut 0)), "made again");
    }

    proptest! {
        #[test]
        fn never_more_than_n_are_labelled_in_a_window_and_entries_stay_bounded(
            n in 1usize..5,
            mut calls in proptest::collection::vec((0u8..6, 0u8..4, 0u64..60), 1..400),
        ) {
            calls.sort_by_key(|(_, _, at)| *at);
            let t0 = Instant::now();
            let mut top = Plain::new(n, n + 1, Duration::from_secs(10), t0);
            // Windows as the tracker sees them: one ends at the first call 10 s after it began.
            let (mut started, mut window) = (0, 0);
            let mut tenants: HashMap<u64, HashSet<String>> = HashMap::new();
            let mut functions: HashMap<u64, HashSet<(String, String)>> = HashMap::new();
            for (tenant, function, at) in calls {
                if at - started >= 10 {
                    (started, window) = (at, window + 1);
                }
                let (tenant, function) = (format!("t{tenant}"), format!("f{function}"));
                let (t, f) = labels(&mut top, &tenant, &function, t0 + Duration::from_secs(at));
                if t {
                    tenants.entry(window).or_default().insert(tenant.clone());
                }
                if f {
                    functions.entry(window).or_default().insert((tenant, function));
                }
                prop_assert!(top.functions == top.tenants.values().map(|t| t.functions.len()).sum::<usize>());
            }
            for (window, keys) in tenants {
                prop_assert!(keys.len() <= n, "window {window}: {keys:?}");
            }
            for (window, keys) in functions {
                prop_assert!(keys.len() <= n + 1, "window {window}: {keys:?}");
            }
        }

        #[test]
        fn the_top_holds_the_most_called(
            n in 0usize..6,
            counts in proptest::collection::hash_map("[a-e]{1,2}", 0u64..50, 0..20),
        ) {
            let top: HashSet<&str> = top_n(counts.iter().map(|(k, c)| (k.as_str(), *c)), n).into_iter().collect();
            prop_assert_eq!(top.len(), n.min(counts.len()));
            let least_in = top.iter().map(|k| counts[*k]).min();
            let most_out = counts.iter().filter(|(k, _)| !top.contains(k.as_str())).map(|(_, c)| *c).max();
            if let (Some(least_in), Some(most_out)) = (least_in, most_out) {
                prop_assert!(least_in >= most_out, "{top:?} of {counts:?}");
            }
        }

        #[test]
        fn a_window_labels_exactly_its_most_called(
            calls in proptest::collection::vec((0u8..6, 0u8..3), 1..200),
        ) {
            let t0 = Instant::now();
            let mut top = Plain::new(2, 3, Duration::from_secs(10), t0);
            let mut counts: HashMap<(String, String), u64> = HashMap::new();
            for (tenant, function) in &calls {
                let key = (format!("t{tenant}"), format!("f{function}"));
                top.call(&key.0, Some(&key.1), t0);
                *counts.entry(key).or_default() += 1;
            }
            let t1 = t0 + Duration::from_secs(10);
            let expected: HashSet<(String, String)> =
                top_n(counts.iter().map(|(k, c)| ((k.0.as_str(), k.1.as_str()), *c)), 3)
                    .into_iter().map(|(t, f)| (t.to_string(), f.to_string())).collect();
            // The first call of the next window ranks the last; what it labels is the top.
            top.call("x", None, t1);
            for (tenant, function) in counts.keys() {
                let labelled = top.tenants.get(tenant).and_then(|t| t.functions.get(function)).is_some_and(|f| f.labelled);
                prop_assert_eq!(labelled, expected.contains(&(tenant.clone(), function.clone())), "{}/{}", tenant, function);
            }
        }
    }
}
