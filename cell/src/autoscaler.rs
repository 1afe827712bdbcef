//! The per-function autoscaler, with Knative KPA semantics and no clock of its own: the
//! caller feeds it concurrency samples and the current time, and asks for a decision.
//!
//! - The *stable* scale is the average concurrency over `stable_window` divided by
//!   `target_concurrency`, rounded up; the *panic* scale is the same over `panic_window`.
//! - When the panic scale reaches `panic_threshold` times the ready sandboxes, the function
//!   panics: it follows the panic scale and never scales down, until `stable_window` has
//!   passed without the condition.
//! - Without traffic the last sandbox stays for `scale_to_zero_grace` after the last
//!   request was seen; then the scale may reach zero.
//! - Any traffic in the window asks for at least one sandbox, so scale-from-zero happens on
//!   the first sample (the data plane reports a queued request at once).
//! - After a control-plane restart the caller holds the scale for one stable window
//!   ([`Autoscaler::hold_until`]), so recovered sandboxes are not scaled down on thin data.
//! - The result is clamped to `[min_scale, max_scale]`.

use std::collections::VecDeque;

use tokio::time::Instant;

use baton_model::function::Scaling;

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Sandboxes wanted.
    pub desired: u32,
    /// Whether the function is in panic mode.
    pub panicking: bool,
}

/// The autoscaler state of one function.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    scaling: Scaling,
    samples: VecDeque<(Instant, f64)>,
    /// Sum of the values in `samples` (all within the stable window after pruning), so the
    /// stable average costs nothing per decision.
    samples_sum: f64,
    panic_since: Option<Instant>,
    panic_scale: u32,
    last_traffic: Option<Instant>,
    hold_until: Option<Instant>,
}

impl Autoscaler {
    /// A fresh autoscaler for a function with `scaling`.
    pub fn new(scaling: Scaling) -> Self {
        Self {
            scaling,
            samples: VecDeque::new(),
            samples_sum: 0.0,
            panic_since: None,
            panic_scale: 0,
            last_traffic: None,
            hold_until: None,
        }
    }

    /// Applies an updated scaling block; keeps the observed samples.
    pub fn set_scaling(&mut self, scaling: Scaling) {
        self.scaling = scaling;
    }

    /// Records the function's concurrency (in-flight plus queued requests) seen at `now`.
    pub fn record(&mut self, now: Instant, concurrency: f64) {
        let concurrency = concurrency.max(0.0);
        if concurrency > 0.0 {
            self.last_traffic = Some(now);
        }
        self.samples.push_back((now, concurrency));
        self.samples_sum += concurrency;
    }

    /// No traffic for a whole stable window and no panic: with no sandbox and no minimum
    /// scale, there is nothing to decide, and the caller may skip this function.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.panic_since.is_none()
            && self.last_traffic.is_none_or(|t| now.duration_since(t) >= self.scaling.stable_window)
    }

    /// Forbids scaling below the current ready count until `until`.
    pub fn hold_until(&mut self, until: Instant) {
        self.hold_until = Some(until);
    }

    /// Mean of the samples in the half-open window `(now - window, now]`, walking back from
    /// the newest (the panic window is short).
    fn recent_average(&self, now: Instant, window: std::time::Duration) -> f64 {
        let from = now.checked_sub(window).unwrap_or(now);
        let (sum, n) =
            self.samples.iter().rev().take_while(|(t, _)| *t > from).fold((0.0, 0u32), |(s, n), (_, c)| (s + c, n + 1));
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }

    fn scale_for(&self, concurrency: f64) -> u32 {
        let wanted = (concurrency / self.scaling.target_concurrency).ceil();
        if wanted >= f64::from(u32::MAX) { u32::MAX } else { wanted as u32 }
    }

    /// The scale wanted at `now` with `ready` sandboxes serving.
    pub fn decide(&mut self, now: Instant, ready: u32) -> Decision {
        let s = &self.scaling;
        if let Some(oldest) = now.checked_sub(s.stable_window) {
            while let Some(&(t, value)) = self.samples.front() {
                if t > oldest {
                    break;
                }
                self.samples.pop_front();
                self.samples_sum -= value;
            }
        }
        let stable_average =
            if self.samples.is_empty() { 0.0 } else { self.samples_sum.max(0.0) / self.samples.len() as f64 };
        let stable = self.scale_for(stable_average);
        let panic = self.scale_for(self.recent_average(now, s.panic_window));

        let over_threshold = f64::from(panic) / f64::from(ready.max(1)) >= s.panic_threshold;
        if over_threshold {
            if self.panic_since.is_none() {
                self.panic_scale = ready;
            }
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|since| now.duration_since(since) >= s.stable_window) {
            self.panic_since = None;
            self.panic_scale = 0;
        }
        let panicking = self.panic_since.is_some();

        let mut desired = if panicking {
            self.panic_scale = self.panic_scale.max(panic).max(stable);
            self.panic_scale
        } else {
            stable
        };
        let in_grace = self.last_traffic.is_some_and(|t| now.duration_since(t) < s.scale_to_zero_grace);
        if desired == 0 && ready > 0 && in_grace {
            desired = 1;
        }
        if self.hold_until.is_some_and(|until| now < until) {
            desired = desired.max(ready);
        }
        Decision { desired: desired.clamp(s.min_scale, s.max_scale), panicking }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The defaults (60 s stable window, 6 s panic window at 2×, 30 s grace before zero),
    /// at most 10 sandboxes.
    fn scaling() -> Scaling {
        Scaling { max_scale: 10, ..Scaling::default() }
    }

    /// Feeds `concurrency` once a second for `secs` seconds, starting at `*now`.
    fn feed(a: &mut Autoscaler, now: &mut Instant, secs: u64, concurrency: f64) {
        for _ in 0..secs {
            *now += Duration::from_secs(1);
            a.record(*now, concurrency);
        }
    }

    #[test]
    fn steady_load_asks_for_load_over_target() {
        let mut a = Autoscaler::new(Scaling { target_concurrency: 2.0, ..scaling() });
        let mut now = Instant::now();
        feed(&mut a, &mut now, 60, 8.0);
        assert_eq!(a.decide(now, 4), Decision { desired: 4, panicking: false });
    }

    #[test]
    fn the_first_queued_request_scales_from_zero_at_once() {
        let mut a = Autoscaler::new(scaling());
        let now = Instant::now();
        assert_eq!(a.decide(now, 0).desired, 0);
        a.record(now, 1.0);
        assert_eq!(a.decide(now, 0).desired, 1);
    }

    #[test]
    fn a_burst_panics_follows_the_panic_window_and_never_scales_down_while_panicking() {
        let mut a = Autoscaler::new(Scaling { max_scale: 100, ..scaling() });
        let mut now = Instant::now();
        feed(&mut a, &mut now, 54, 1.0);
        feed(&mut a, &mut now, 6, 20.0);
        let d = a.decide(now, 1);
        assert!(d.panicking);
        assert_eq!(d.desired, 20, "the panic window's average, not the stable one's (3)");
        // The burst ends; within the stable window the scale holds.
        feed(&mut a, &mut now, 30, 0.0);
        assert_eq!(a.decide(now, 20), Decision { desired: 20, panicking: true });
        // A stable window after the last over-threshold moment, panic ends.
        feed(&mut a, &mut now, 31, 0.0);
        let d = a.decide(now, 20);
        assert!(!d.panicking);
        assert!(d.desired < 20);
    }

    #[test]
    fn scale_reaches_zero_only_after_the_grace_period() {
        let mut a = Autoscaler::new(Scaling {
            stable_window: Duration::from_secs(10),
            panic_window: Duration::from_secs(1),
            ..scaling()
        });
        let mut now = Instant::now();
        feed(&mut a, &mut now, 5, 1.0);
        feed(&mut a, &mut now, 20, 0.0);
        assert_eq!(a.decide(now, 1).desired, 1, "20 s idle, grace is 30 s");
        feed(&mut a, &mut now, 11, 0.0);
        assert_eq!(a.decide(now, 1).desired, 0);
    }

    #[test]
    fn min_and_max_scale_bound_the_decision() {
        let mut a = Autoscaler::new(Scaling { min_scale: 2, max_scale: 5, ..scaling() });
        let mut now = Instant::now();
        assert_eq!(a.decide(now, 0).desired, 2);
        feed(&mut a, &mut now, 60, 50.0);
        assert_eq!(a.decide(now, 5).desired, 5);
    }

    #[test]
    fn a_hold_keeps_recovered_sandboxes_for_its_duration() {
        let mut a = Autoscaler::new(scaling());
        let now = Instant::now();
        a.hold_until(now + Duration::from_secs(60));
        assert_eq!(a.decide(now + Duration::from_secs(59), 7).desired, 7);
        assert_eq!(a.decide(now + Duration::from_secs(61), 7).desired, 0);
    }

    #[test]
    fn a_function_is_idle_a_stable_window_after_its_last_traffic() {
        let mut a = Autoscaler::new(scaling());
        let now = Instant::now();
        assert!(a.is_idle(now));
        a.record(now, 1.0);
        assert!(!a.is_idle(now + Duration::from_secs(59)));
        assert!(a.is_idle(now + Duration::from_secs(60)));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut a = Autoscaler::new(scaling());
        let mut now = Instant::now();
        feed(&mut a, &mut now, 60, 9.0);
        feed(&mut a, &mut now, 61, 2.0);
        assert_eq!(a.decide(now, 2).desired, 2);
    }
}
