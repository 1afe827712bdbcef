//! Function loads as the rebalancer sees them. Each cell's heartbeat reports how many
//! sandboxes each of its functions runs, a figure that swings with the autoscaler: a
//! function with most of the federation's traffic can read 2 between two bursts and 40
//! during one. Planning on such a sample moves a dominant function as if it were small,
//! and moves it back once it reads large again (a flap on every cooldown). The planner
//! therefore sees a decaying peak: it rises at once to a higher report and falls with a
//! half-life, so a function looks as heavy as it recently was.
//!
//! Pure: time comes in as milliseconds on the caller's clock.

use std::collections::HashMap;
use std::time::Duration;

/// One function's reports.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    /// The last report.
    last: f64,
    /// The decaying peak, as of `at`.
    peak: f64,
    /// When it was last reported.
    at: u64,
}

/// Each function's load: the last report and a peak that decays with a half-life.
#[derive(Debug, Clone)]
pub struct LoadTracker {
    half_life_ms: f64,
    entries: HashMap<String, Entry>,
}

impl LoadTracker {
    /// A tracker whose peaks halve every `half_life` without a higher report. A zero half-life
    /// keeps no peak: the planner sees the last report.
    pub fn new(half_life: Duration) -> Self {
        Self { half_life_ms: half_life.as_secs_f64() * 1_000.0, entries: HashMap::new() }
    }

    fn decayed(&self, entry: &Entry, now: u64) -> f64 {
        if self.half_life_ms <= 0.0 {
            return entry.last;
        }
        let elapsed = now.saturating_sub(entry.at) as f64;
        entry.peak * 0.5f64.powf(elapsed / self.half_life_ms)
    }

    /// Takes a report of `function`'s load (at least 0) at `now`.
    pub fn record(&mut self, function: &str, load: f64, now: u64) {
        let load = if load.is_finite() { load.max(0.0) } else { 0.0 };
        let peak = match self.entries.get(function) {
            Some(entry) => load.max(self.decayed(entry, now)),
            None => load,
        };
        self.entries.insert(function.to_string(), Entry { last: load, peak, at: now });
    }

    /// The last report of `function`'s load (how many sandboxes it runs now, for
    /// pre-warming), 0 when none came.
    pub fn last(&self, function: &str) -> f64 {
        self.entries.get(function).map_or(0.0, |e| e.last)
    }

    /// The load the planner uses: the peak decayed to `now`, 0 when no report came.
    pub fn smoothed(&self, function: &str, now: u64) -> f64 {
        self.entries.get(function).map_or(0.0, |e| self.decayed(e, now))
    }

    /// Drops the functions `keep` refuses (deleted ones), so the tracker holds no more
    /// entries than the catalog.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|function, _| keep(function));
    }

    /// How many functions it tracks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it tracks none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_peak_holds_through_a_dip_and_halves_each_half_life() {
        let mut t = LoadTracker::new(Duration::from_secs(10));
        t.record("f", 40.0, 0);
        t.record("f", 2.0, 1_000);
        assert_eq!(t.last("f"), 2.0, "the last report is kept for pre-warming");
        let held = t.smoothed("f", 1_000);
        assert!((held - 40.0 * 0.5f64.powf(0.1)).abs() < 1e-9, "{held}");
        assert!((t.smoothed("f", 11_000) - held / 2.0).abs() < 1e-9);
        t.record("f", 50.0, 11_000);
        assert_eq!(t.smoothed("f", 11_000), 50.0, "a higher report counts at once");
        assert_eq!(t.smoothed("unknown", 0), 0.0);
        assert_eq!(t.last("unknown"), 0.0);
    }

    #[test]
    fn without_a_half_life_the_last_report_counts() {
        let mut t = LoadTracker::new(Duration::ZERO);
        t.record("f", 40.0, 0);
        t.record("f", 2.0, 0);
        assert_eq!(t.smoothed("f", 0), 2.0);
    }

    #[test]
    fn bad_reports_count_as_zero_and_deleted_functions_are_dropped() {
        let mut t = LoadTracker::new(Duration::from_secs(1));
        t.record("nan", f64::NAN, 0);
        t.record("neg", -5.0, 0);
        assert_eq!((t.smoothed("nan", 0), t.smoothed("neg", 0)), (0.0, 0.0));
        t.retain(|f| f == "neg");
        assert_eq!(t.len(), 1);
    }

    proptest! {
        #[test]
        fn the_smoothed_load_is_never_below_the_last_report_nor_above_the_highest(
            reports in prop::collection::vec((0.0f64..1_000.0, 0u64..5_000), 1..40),
        ) {
            let mut t = LoadTracker::new(Duration::from_secs(30));
            let mut now = 0;
            let mut highest: f64 = 0.0;
            for (load, step) in reports {
                now += step;
                t.record("f", load, now);
                highest = highest.max(load);
                let smoothed = t.smoothed("f", now);
                prop_assert!(smoothed >= load - 1e-9 && smoothed <= highest + 1e-9);
            }
        }
    }
}
