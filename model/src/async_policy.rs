//! A function's policy for asynchronous calls (`async` in its spec): how many tries a call
//! gets, how long it waits between them, how old it may grow, which outcomes are tried
//! again, and how much of the function's scale async calls may take. The decisions made
//! from it ([`AsyncPolicy::backoff`], [`AsyncPolicy::retries`]) are pure, so the delivery
//! loop and the tests share them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// Bounds of the policy's values, both ends included.
pub mod bounds {
    use std::time::Duration;

    /// `async.max_attempts`.
    pub const MAX_ATTEMPTS: (u32, u32) = (1, 100);
    /// `async.backoff.initial` and `async.backoff.max`.
    pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
    /// `async.max_age`: Lambda's longest is six hours; baton allows a day.
    pub const MAX_AGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(24 * 3600));
}

/// One kind of outcome an attempt can have, as `async.retry_on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    /// Any 5xx answer (the function's or baton's, timeouts included).
    #[serde(rename = "5xx")]
    ServerError,
    /// `429 Too Many Requests`.
    #[serde(rename = "429")]
    TooManyRequests,
    /// The call ran out of time: `504` or `408`.
    #[serde(rename = "timeout")]
    Timeout,
    /// Any 4xx answer (429 and 408 included).
    #[serde(rename = "4xx")]
    ClientError,
}

/// Waits between tries: exponential, with full jitter between half the step and the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// Wait before the first retry (before jitter). Default: `"1s"`.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest wait. Default: `"5m"`.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Each retry waits this many times the one before. Default: `2.0`.
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(300), multiplier: 2.0 }
    }
}

/// `async` in a function's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsyncPolicy {
    /// Tries a call gets, the first included (as Lambda: the first and two retries).
    /// Default: `3`.
    pub max_attempts: u32,
    /// Waits between tries.
    pub backoff: Backoff,
    /// A call still not done this long after it was accepted goes to the dead letters
    /// (`max_age_exceeded`). Default: `"6h"`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Outcomes tried again; any other is final (`succeeded` for 1xx-3xx, `failed` for the
    /// rest). Default: `["5xx", "429", "timeout"]`.
    pub retry_on: Vec<RetryOn>,
    /// Most of the function's capacity (`scaling.max_scale` × the calls one sandbox takes)
    /// async calls may hold at once, so a flood of them cannot starve sync callers; above
    /// it they wait in the queue. Default: `0.8`.
    pub max_share: f64,
}

impl Default for AsyncPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
            max_age: Duration::from_secs(6 * 3600),
            retry_on: vec![RetryOn::ServerError, RetryOn::TooManyRequests, RetryOn::Timeout],
            max_share: 0.8,
        }
    }
}

impl AsyncPolicy {
    /// Checks what the types cannot; refusals name the field under `async.`.
    pub fn validate(&self) -> Result<(), SpecError> {
        let (low, high) = bounds::MAX_ATTEMPTS;
        if !(low..=high).contains(&self.max_attempts) {
            return Err(SpecError::new(
                "async.max_attempts",
                format!("{} is outside {low}..={high}", self.max_attempts),
            ));
        }
        let show = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        let (low, high) = bounds::BACKOFF;
        for (field, value) in [("async.backoff.initial", self.backoff.initial), ("async.backoff.max", self.backoff.max)]
        {
            if value < low || value > high {
                return Err(SpecError::new(
                    field,
                    format!("{} is outside {}..={}", show(value), show(low), show(high)),
                ));
            }
        }
        if self.backoff.max < self.backoff.initial {
            return Err(SpecError::new("async.backoff.max", "is shorter than async.backoff.initial"));
        }
        let m = self.backoff.multiplier;
        if !(m.is_finite() && (1.0..=10.0).contains(&m)) {
            return Err(SpecError::new("async.backoff.multiplier", "must be a number from 1.0 to 10.0"));
        }
        let (low, high) = bounds::MAX_AGE;
        if self.max_age < low || self.max_age > high {
            let message = format!("{} is outside {}..={}", show(self.max_age), show(low), show(high));
            return Err(SpecError::new("async.max_age", message));
        }
        if !(self.max_share.is_finite() && self.max_share > 0.0 && self.max_share <= 1.0) {
            return Err(SpecError::new("async.max_share", "must be above 0 and at most 1"));
        }
        Ok(())
    }

    /// The wait before the try after `attempts` tries, for a `jitter` drawn from [0, 1):
    /// `initial × multiplier^(attempts-1)`, capped at `max`, then scaled into [½, 1] of
    /// itself so retries of calls that failed together spread out.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let b = &self.backoff;
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let step = (b.initial.as_secs_f64() * b.multiplier.powi(exponent)).min(b.max.as_secs_f64());
        Duration::from_secs_f64(step * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }

    /// Whether an attempt answered `status` is tried again (tries left permitting).
    pub fn retries(&self, status: u16) -> bool {
        self.retry_on.iter().any(|on| match on {
            RetryOn::ServerError => (500..600).contains(&status),
            RetryOn::TooManyRequests => status == 429,
            RetryOn::Timeout => status == 504 || status == 408,
            RetryOn::ClientError => (400..500).contains(&status),
        })
    }

    /// Most async calls of a function that may be in flight at once: `max_share` of
    /// `max_scale` sandboxes × the calls each takes (`container_concurrency`, or the
    /// autoscaler's target when that is unlimited), at least one.
    pub fn slots(&self, max_scale: u32, container_concurrency: u32, target_concurrency: f64) -> u32 {
        let per_sandbox = if container_concurrency > 0 {
            f64::from(container_concurrency)
        } else {
            target_concurrency.ceil().max(1.0)
        };
        let slots = (self.max_share * f64::from(max_scale) * per_sandbox).floor();
        slots.clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

/// Whether `policy` is the default (a spec without `async` reads back without it).
pub fn is_default(policy: &AsyncPolicy) -> bool {
    *policy == AsyncPolicy::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_lambdas() {
        let p = AsyncPolicy::default();
        assert_eq!(p.max_attempts, 3);
        assert!(p.retries(500) && p.retries(503) && p.retries(429) && p.retries(504) && p.retries(408));
        assert!(!p.retries(400) && !p.retries(404) && !p.retries(200) && !p.retries(302));
        assert_eq!(p.slots(10, 1, 1.0), 8);
        assert_eq!(p.slots(1, 1, 1.0), 1, "at least one");
        assert_eq!(p.slots(10, 0, 2.5), 24, "unlimited sandboxes count the target");
    }

    #[test]
    fn a_policy_may_retry_client_errors_or_nothing() {
        let p = AsyncPolicy { retry_on: vec![RetryOn::ClientError], ..AsyncPolicy::default() };
        assert!(p.retries(404) && p.retries(429) && !p.retries(500));
        let none = AsyncPolicy { retry_on: vec![], ..AsyncPolicy::default() };
        assert!(!none.retries(500) && !none.retries(429));
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |p: AsyncPolicy| p.validate().unwrap_err().field;
        let d = AsyncPolicy::default;
        assert_eq!(field(AsyncPolicy { max_attempts: 0, ..d() }), "async.max_attempts");
        assert_eq!(field(AsyncPolicy { max_attempts: 101, ..d() }), "async.max_attempts");
        assert_eq!(field(AsyncPolicy { max_share: 0.0, ..d() }), "async.max_share");
        assert_eq!(field(AsyncPolicy { max_share: f64::NAN, ..d() }), "async.max_share");
        assert_eq!(field(AsyncPolicy { max_age: Duration::ZERO, ..d() }), "async.max_age");
        let backoff = |initial: u64, max: u64, multiplier: f64| AsyncPolicy {
            backoff: Backoff { initial: Duration::from_millis(initial), max: Duration::from_millis(max), multiplier },
            ..d()
        };
        assert_eq!(field(backoff(0, 10, 2.0)), "async.backoff.initial");
        assert_eq!(field(backoff(10, 5, 2.0)), "async.backoff.max");
        assert_eq!(field(backoff(10, 50, 0.5)), "async.backoff.multiplier");
        assert_eq!(field(backoff(10, 50, f64::INFINITY)), "async.backoff.multiplier");
        assert!(d().validate().is_ok());
    }

    proptest! {
        #[test]
        fn waits_grow_stay_within_bounds_and_jitter_only_shortens(
            initial in 1u64..10_000, extra in 0u64..1_000_000, multiplier in 1.0f64..10.0,
            attempts in 1u32..200, jitter in 0.0f64..1.0,
        ) {
            let p = AsyncPolicy {
                backoff: Backoff {
                    initial: Duration::from_millis(initial),
                    max: Duration::from_millis(initial + extra),
                    multiplier,
                },
                ..AsyncPolicy::default()
            };
            let wait = p.backoff(attempts, jitter);
            prop_assert!(wait <= p.backoff.max + Duration::from_nanos(1));
            prop_assert!(wait >= p.backoff.initial / 2 - Duration::from_nanos(1));
            prop_assert!(wait <= p.backoff(attempts, 1.0) + Duration::from_nanos(1));
            prop_assert!(p.backoff(attempts, 1.0) <= p.backoff(attempts + 1, 1.0) + Duration::from_nanos(1));
        }
    }
}
