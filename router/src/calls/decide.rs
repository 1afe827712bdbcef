//! What happens to a call, decided without I/O: before a try ([`before`]) and after one
//! ([`after`]), from its record, its function's policy, the time and a jitter draw. Both
//! return the record to write and where the call goes next.

use std::time::Duration;

use baton_model::AsyncPolicy;

use super::record::{CallRecord, CallResult, DeadReason, State};
use super::store::Next;

/// How long calls are kept, from the router's `[async]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// An ended call (`succeeded`, `failed`).
    pub done: Duration,
    /// A dead letter.
    pub dead: Duration,
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An answer (the function's, or baton's own error for it).
    Answered(CallResult),
    /// The function's async slots (or its reserved concurrency) were all taken: the try
    /// did not run. It may be tried again after the wait given (the cell's `Retry-After`),
    /// else after 50 ms.
    Deferred(Option<Duration>),
    /// No cell could take it (none reachable, the map not naming an owner): it did not
    /// run.
    NotDelivered(String),
}

/// Before a try: `None` to go ahead (the record is then marked running with one more
/// try), or the record and where it goes instead.
pub fn before(
    record: &CallRecord,
    policy: &AsyncPolicy,
    now_ms: u64,
    retention: Retention,
) -> Option<(CallRecord, Next)> {
    let age = Duration::from_millis(now_ms.saturating_sub(record.accepted_ms));
    if age > policy.max_age {
        let why = format!(
            "not done within async.max_age ({})",
            humantime_serde::re::humantime::format_duration(policy.max_age)
        );
        return Some(dead(record, DeadReason::MaxAgeExceeded, why, now_ms, retention));
    }
    // Its last try was cut short (its router died) and it was the last one allowed.
    if record.attempts >= policy.max_attempts {
        let why = record.last_error.clone().unwrap_or_else(|| "its last try did not finish".into());
        return Some(dead(record, DeadReason::RetriesExhausted, why, now_ms, retention));
    }
    None
}

/// The record as a try starts.
pub fn running(record: &CallRecord, now_ms: u64) -> CallRecord {
    CallRecord { state: State::Running, attempts: record.attempts + 1, updated_ms: now_ms, ..record.clone() }
}

/// The call's function was deleted.
pub fn deleted(record: &CallRecord, now_ms: u64, retention: Retention) -> (CallRecord, Next) {
    dead(record, DeadReason::FunctionDeleted, "its function was deleted".into(), now_ms, retention)
}

/// After a try of `record` (already counted in it) that ended in `outcome`.
pub fn after(
    record: &CallRecord,
    policy: &AsyncPolicy,
    outcome: Outcome,
    now_ms: u64,
    jitter: f64,
    retention: Retention,
) -> (CallRecord, Next) {
    let mut next = CallRecord { updated_ms: now_ms, ..record.clone() };
    let result = match outcome {
        // Neither ran the function: not a try. It waits a little (with jitter, so the calls
        // deferred together do not all come back at once) and goes back to the queue.
        Outcome::Deferred(_) | Outcome::NotDelivered(_) => {
            let wait = match &outcome {
                Outcome::Deferred(wait) => wait.unwrap_or(Duration::from_millis(50)),
                _ => Duration::from_secs(1),
            };
            if let Outcome::NotDelivered(why) = outcome {
                next.last_error = Some(why);
            }
            next.attempts = next.attempts.saturating_sub(1);
            next.state = State::Queued;
            let wait = wait.mul_f64(1.0 + jitter.clamp(0.0, 1.0));
            return (next, Next::Later { due_ms: now_ms + wait.as_millis() as u64 });
        }
        Outcome::Answered(result) => result,
    };
    let status = result.status;
    if policy.retries(status) {
        let why = format!("the try answered {status}");
        next.result = Some(result);
        if record.attempts >= policy.max_attempts {
            return dead(&next, DeadReason::RetriesExhausted, why, now_ms, retention);
        }
        let due_ms = now_ms + policy.backoff(record.attempts, jitter).as_millis() as u64;
        let age_at_retry = Duration::from_millis(due_ms.saturating_sub(record.accepted_ms));
        if age_at_retry > policy.max_age {
            return dead(&next, DeadReason::MaxAgeExceeded, why, now_ms, retention);
        }
        next.state = State::Queued;
        next.last_error = Some(why);
        return (next, Next::Later { due_ms });
    }
    next.state = if status < 400 { State::Succeeded } else { State::Failed };
    if status >= 400 {
        next.last_error = Some(format!("the try answered {status}, which async.retry_on does not retry"));
    }
    next.result = Some(result);
    next.ended_ms = Some(now_ms);
    (next, Next::Done { keep_secs: retention.done.as_secs() })
}

fn dead(record: &CallRecord, reason: DeadReason, why: String, now_ms: u64, retention: Retention) -> (CallRecord, Next) {
    let next = CallRecord {
        state: State::Dead,
        dead_reason: Some(reason),
        last_error: Some(why),
        updated_ms: now_ms,
        ended_ms: Some(now_ms),
        ..record.clone()
    };
    (next, Next::Dead { keep_secs: retention.dead.as_secs() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::record::Request;
    use proptest::prelude::*;

    const RETENTION: Retention = Retention { done: Duration::from_secs(60), dead: Duration::from_secs(600) };

    fn record(attempts: u32, accepted_ms: u64) -> CallRecord {
        let request = Request { id: "c".into(), tenant: "acme".into(), function: "f".into(), ..Request::default() };
        CallRecord { state: State::Running, attempts, ..CallRecord::accepted(request, accepted_ms, 1) }
    }

    fn answered(status: u16) -> Outcome {
        Outcome::Answered(CallResult { status, headers: vec![], body: b"x".to_vec(), truncated: false })
    }

    #[test]
    fn a_success_ends_the_call_and_a_client_error_fails_it() {
        let p = AsyncPolicy::default();
        let (r, next) = after(&record(1, 0), &p, answered(200), 10, 0.5, RETENTION);
        assert_eq!((r.state, r.ended_ms, next), (State::Succeeded, Some(10), Next::Done { keep_secs: 60 }));
        let (r, next) = after(&record(1, 0), &p, answered(404), 10, 0.5, RETENTION);
        assert_eq!((r.state, next), (State::Failed, Next::Done { keep_secs: 60 }));
        assert_eq!(r.result.unwrap().status, 404);
    }

    #[test]
    fn retried_outcomes_wait_then_die_with_the_last_answer() {
        let p = AsyncPolicy::default();
        let (r, next) = after(&record(1, 0), &p, answered(503), 1000, 0.0, RETENTION);
        assert_eq!((r.state, r.attempts), (State::Queued, 1));
        assert_eq!(next, Next::Later { due_ms: 1000 + 500 }, "1 s, jitter 0 halves it");
        let (r, next) = after(&record(3, 0), &p, answered(503), 1000, 0.0, RETENTION);
        assert_eq!(
            (r.state, r.dead_reason, next),
            (State::Dead, Some(DeadReason::RetriesExhausted), Next::Dead { keep_secs: 600 })
        );
        assert_eq!(r.result.unwrap().status, 503, "the dead letter keeps the last answer");
    }

    #[test]
    fn a_deferred_try_is_not_counted() {
        let p = AsyncPolicy::default();
        let (r, next) = after(&record(3, 0), &p, Outcome::Deferred(None), 1000, 0.0, RETENTION);
        assert_eq!((r.state, r.attempts, next), (State::Queued, 2, Next::Later { due_ms: 1050 }));
        let stopped = Outcome::Deferred(Some(Duration::from_secs(1)));
        assert_eq!(after(&record(1, 0), &p, stopped, 1000, 0.0, RETENTION).1, Next::Later { due_ms: 2000 });
        let (r, _) = after(&record(1, 0), &p, Outcome::NotDelivered("no cell".into()), 1000, 0.0, RETENTION);
        assert_eq!((r.attempts, r.last_error.as_deref()), (0, Some("no cell")));
    }

    #[test]
    fn old_calls_and_cut_short_last_tries_die_before_running() {
        let p = AsyncPolicy { max_age: Duration::from_secs(10), ..AsyncPolicy::default() };
        assert!(before(&record(0, 0), &p, 10_000, RETENTION).is_none());
        let (r, _) = before(&record(0, 0), &p, 10_001, RETENTION).unwrap();
        assert_eq!(r.dead_reason, Some(DeadReason::MaxAgeExceeded));
        let (r, _) = before(&record(3, 0), &p, 5, RETENTION).unwrap();
        assert_eq!(r.dead_reason, Some(DeadReason::RetriesExhausted));
        // A retry that would come after max_age is not waited for.
        let (r, _) = after(&record(1, 0), &p, answered(500), 9_800, 1.0, RETENTION);
        assert_eq!(r.dead_reason, Some(DeadReason::MaxAgeExceeded));
        assert_eq!(deleted(&record(0, 0), 1, RETENTION).0.dead_reason, Some(DeadReason::FunctionDeleted));
    }

    proptest! {
        #[test]
        fn every_try_ends_final_or_later_and_never_exceeds_the_attempts(
            attempts in 1u32..6, max_attempts in 1u32..6, status in 100u16..600, jitter in 0.0f64..1.0,
        ) {
            let p = AsyncPolicy { max_attempts, ..AsyncPolicy::default() };
            let (r, next) = after(&record(attempts, 0), &p, answered(status), 1000, jitter, RETENTION);
            match next {
                Next::Later { due_ms } => {
                    prop_assert!(attempts < max_attempts && p.retries(status) && due_ms > 1000);
                    prop_assert_eq!(r.state, State::Queued);
                }
                Next::Dead { .. } => prop_assert!(p.retries(status) && r.state == State::Dead),
                Next::Done { .. } => prop_assert!(!p.retries(status) && r.state.is_final()),
            }
            prop_assert_eq!(r.attempts, attempts);
        }
    }
}
