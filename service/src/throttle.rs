//! Rate-limited warnings: a cause that repeats (the same function finding no worker with
//! room, every autoscaler round) is logged once per interval, with how many times it
//! happened since, instead of filling the log. Pure: time comes in as an `Instant`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most causes remembered; past it the oldest are forgotten (and may log again early).
const MAX_CAUSES: usize = 10_000;

/// Decides, per cause, whether a warning is logged now.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// Cause → when it was last logged, and how often it happened since.
    causes: HashMap<String, (Instant, u64)>,
}

impl Throttle {
    /// At most one line per cause every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, causes: HashMap::new() }
    }

    /// Notes one occurrence of `cause` at `now`. `Some(n)` means log it now, `n` being how
    /// many occurrences were held back since the last line; `None` means stay quiet.
    pub fn check(&mut self, cause: &str, now: Instant) -> Option<u64> {
        if let Some((logged, held)) = self.causes.get_mut(cause) {
            if now.duration_since(*logged) < self.interval {
                *held += 1;
                return None;
            }
            let since = *held;
            *logged = now;
            *held = 0;
            return Some(since);
        }
        if self.causes.len() >= MAX_CAUSES {
            let interval = self.interval;
            self.causes.retain(|_, (logged, _)| now.duration_since(*logged) < interval);
            if self.causes.len() >= MAX_CAUSES {
                self.causes.clear();
            }
        }
        self.causes.insert(cause.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_per_interval_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.check("f", start), Some(0), "the first occurrence is logged");
        for i in 1..=19 {
            assert_eq!(t.check("f", start + Duration::from_millis(200 * i)), None);
        }
        assert_eq!(t.check("g", start + Duration::from_secs(1)), Some(0), "causes are apart");
        assert_eq!(t.check("f", start + Duration::from_secs(10)), Some(19), "then once, with what was held back");
        assert_eq!(t.check("f", start + Duration::from_secs(11)), None);
    }

    #[test]
    fn the_number_of_causes_is_bounded() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..MAX_CAUSES + 5 {
            t.check(&format!("cause-{i}"), now);
        }
        assert!(t.causes.len() <= MAX_CAUSES);
    }
}
