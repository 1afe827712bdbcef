//! Which sandboxes have calls in flight, as the data planes report them. A sandbox taken
//! out of the routing can still be serving a call that a data plane sent it just before
//! the routing change reached it (the control plane decided from a load report up to one
//! report interval old). Such a sandbox is deleted only once no fresh report lists it, so
//! the call is not cut off; its function's timeout bounds the wait.
//!
//! Pure: time comes in as an `Instant`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The busy sandboxes each data plane last reported, by function.
#[derive(Debug, Default)]
pub struct BusySandboxes {
    /// (data plane, function) → the sandboxes it listed busy, and when.
    reports: HashMap<(String, String), (Vec<String>, Instant)>,
}

impl BusySandboxes {
    /// Takes a data plane's report for one function: `sandboxes` are those with a call in
    /// flight there now (none: the function went quiet on that data plane). Reports older
    /// than `expiry` are dropped on the way.
    pub fn report(&mut self, data_plane: &str, function: &str, sandboxes: Vec<String>, now: Instant, expiry: Duration) {
        let key = (data_plane.to_string(), function.to_string());
        if sandboxes.is_empty() {
            self.reports.remove(&key);
            return;
        }
        if !self.reports.contains_key(&key) {
            // A new key: a good moment to forget data planes that stopped reporting.
            self.reports.retain(|_, (_, at)| now.duration_since(*at) <= expiry);
        }
        self.reports.insert(key, (sandboxes, now));
    }

    /// Whether a report younger than `expiry` lists `sandbox` (of `function`) as busy.
    pub fn holds_calls(&self, function: &str, sandbox: &str, now: Instant, expiry: Duration) -> bool {
        self.reports.iter().any(|((_, f), (busy, at))| {
            f == function && now.duration_since(*at) <= expiry && busy.iter().any(|s| s == sandbox)
        })
    }

    /// How many (data plane, function) reports it keeps.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.reports.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn a_sandbox_holds_calls_while_a_fresh_report_lists_it() {
        let mut busy = BusySandboxes::default();
        let now = Instant::now();
        busy.report("dp1", "f", vec!["f-1".into()], now, EXPIRY);
        busy.report("dp2", "f", vec!["f-2".into()], now, EXPIRY);
        assert!(busy.holds_calls("f", "f-1", now, EXPIRY));
        assert!(busy.holds_calls("f", "f-2", now, EXPIRY), "any data plane counts");
        assert!(!busy.holds_calls("g", "f-1", now, EXPIRY), "by function");
        busy.report("dp1", "f", vec![], now, EXPIRY);
        assert!(!busy.holds_calls("f", "f-1", now, EXPIRY), "the function went quiet on dp1");
        assert!(!busy.holds_calls("f", "f-2", now + EXPIRY * 2, EXPIRY), "a data plane that stopped reporting");
        busy.report("dp3", "h", vec!["h-1".into()], now + EXPIRY * 2, EXPIRY);
        assert_eq!(busy.len(), 1, "stale reports are forgotten");
    }
}
