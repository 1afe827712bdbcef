//! One function's dispatcher in the data plane: hands each request a *lease* on a sandbox
//! with a free concurrency slot, or queues it (bounded, with a timeout) until a slot frees
//! or a new sandbox arrives. Queuing a request tells the control plane at once, through the
//! `on_queued` callback, so scale-from-zero does not wait for a metrics tick.
//!
//! One lock guards the function's state; it is held for a few field updates and never
//! across `.await`. A lease gives its slot back when dropped, so no error path can leak one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::balancer::{BalancePolicy, Balancer};

/// How a function's requests are dispatched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DispatchConfig {
    /// Most requests waiting at once; one more is refused.
    pub queue_capacity: usize,
    /// Longest a request waits for a slot.
    pub queue_timeout: Duration,
    /// Requests one sandbox takes at once; 0 is unlimited.
    pub container_concurrency: u32,
    /// Which free sandbox takes a request.
    pub policy: BalancePolicy,
}

/// Why a request got no sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The queue was full.
    #[error("the function's queue is full ({0} requests waiting)")]
    QueueFull(usize),
    /// No slot freed within the queue timeout.
    #[error("no sandbox became free within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No sandbox is ready and the function's last creation failed: the control plane
    /// says why, and waits before it tries again.
    #[error("the function's sandboxes fail to start: {0}")]
    Failing(String),
}

/// A sandbox the dispatcher may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Sandbox ID.
    pub id: String,
    /// host:port.
    pub endpoint: String,
    /// How the sandbox was created.
    pub creation: crate::routing::Creation,
}

struct Slot {
    target: Target,
    in_flight: u32,
    /// When it joined, on the state's event counter.
    added: u64,
}

struct Waiter {
    id: u64,
    /// When it queued, on the state's event counter: a slot of a sandbox added after that
    /// is a cold start for it.
    since: u64,
    tx: oneshot::Sender<(Target, bool)>,
}

struct State {
    sandboxes: Vec<Slot>,
    /// Sandboxes taken out of the routing while calls were in flight on them; each stays
    /// here, taking no new call, until its last lease ends.
    draining: Vec<Slot>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// Counts sandbox arrivals and queueings, to order them.
    events: u64,
    balancer: Balancer,
    /// Why the function's sandboxes fail to start, while none is ready.
    failing: Option<String>,
}

struct Shared {
    config: DispatchConfig,
    state: Mutex<State>,
    on_queued: Box<dyn Fn() + Send + Sync>,
}

/// A request's hold on one sandbox slot, given back on drop.
pub struct Lease {
    shared: Arc<Shared>,
    target: Target,
    waited: Option<Duration>,
    cold: bool,
}

impl Lease {
    /// The sandbox to send the request to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// How long the request queued, if it had to.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Whether the request waited for a sandbox that was created after it queued (a cold
    /// start), rather than for a busy one to free a slot (queueing).
    pub fn cold(&self) -> bool {
        self.cold
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().expect("dispatch lock");
        if let Some(slot) = state.sandboxes.iter_mut().find(|s| s.target.id == self.target.id) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        } else if let Some(i) = state.draining.iter().position(|s| s.target.id == self.target.id) {
            state.draining[i].in_flight = state.draining[i].in_flight.saturating_sub(1);
            if state.draining[i].in_flight == 0 {
                state.draining.swap_remove(i);
            }
        }
        hand_over(&self.shared.config, &mut state);
    }
}

/// One function's dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// A dispatcher with no sandboxes yet; `on_queued` runs each time a request queues.
    pub fn new(config: DispatchConfig, seed: u64, on_queued: impl Fn() + Send + Sync + 'static) -> Self {
        let state = State {
            sandboxes: Vec::new(),
            draining: Vec::new(),
            waiters: VecDeque::new(),
            next_waiter: 0,
            events: 0,
            balancer: Balancer::new(config.policy, seed),
            failing: None,
        };
        Self { shared: Arc::new(Shared { config, state: Mutex::new(state), on_queued: Box::new(on_queued) }) }
    }

    /// A lease on a free sandbox slot, waiting in the queue if none is free.
    pub async fn acquire(&self) -> Result<Lease, DispatchError> {
        self.acquire_within(self.shared.config.queue_timeout).await
    }

    /// As [`Dispatcher::acquire`], waiting in the queue at most `limit` (or the queue
    /// timeout, if shorter): what is left of the call's own time.
    pub async fn acquire_within(&self, limit: Duration) -> Result<Lease, DispatchError> {
        let config = self.shared.config;
        let wait = config.queue_timeout.min(limit);
        let (id, rx) = {
            let mut state = self.shared.state.lock().expect("dispatch lock");
            if let Some((target, _)) = take_slot(&config, &mut state) {
                return Ok(Lease { shared: self.shared.clone(), target, waited: None, cold: false });
            }
            if let Some(why) = state.failing.clone().filter(|_| state.sandboxes.is_empty()) {
                return Err(DispatchError::Failing(why));
            }
            if state.waiters.len() >= config.queue_capacity {
                return Err(DispatchError::QueueFull(state.waiters.len()));
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.events += 1;
            let since = state.events;
            state.waiters.push_back(Waiter { id, since, tx });
            (id, rx)
        };
        (self.shared.on_queued)();
        let queued_at = Instant::now();
        let mut rx = rx;
        let granted = match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(target)) => Some(target),
            // Given up on by the dispatcher: the function's sandboxes fail to start.
            Ok(Err(_)) => {
                let why = self.shared.state.lock().expect("dispatch lock").failing.clone();
                return Err(DispatchError::Failing(why.unwrap_or_else(|| "no sandbox is coming".into())));
            }
            Err(_) => {
                // Timed out, unless a slot was handed over in the same instant: take it then.
                let mut state = self.shared.state.lock().expect("dispatch lock");
                state.waiters.retain(|w| w.id != id);
                drop(state);
                rx.try_recv().ok()
            }
        };
        match granted {
            Some((target, cold)) => {
                Ok(Lease { shared: self.shared.clone(), target, waited: Some(queued_at.elapsed()), cold })
            }
            None => Err(DispatchError::Timeout(wait)),
        }
    }

    /// Replaces the set of sandboxes. Sandboxes that stay keep their in-flight counts; leases
    /// on removed ones finish where they are (the sandbox is listed as draining until they
    /// do); waiting requests go to new free slots at once.
    pub fn set_sandboxes(&self, targets: Vec<Target>) {
        let mut state = self.shared.state.lock().expect("dispatch lock");
        let mut old = std::mem::take(&mut state.sandboxes);
        // A draining sandbox routed to again takes calls again.
        old.append(&mut state.draining);
        state.events += 1;
        let now = state.events;
        state.sandboxes = targets
            .into_iter()
            .map(|target| match old.iter().position(|s| s.target == target) {
                Some(i) => old.swap_remove(i),
                None => Slot { target, in_flight: 0, added: now },
            })
            .collect();
        state.draining = old.into_iter().filter(|s| s.in_flight > 0).collect();
        hand_over(&self.shared.config, &mut state);
    }

    /// Records why the function's sandboxes fail to start (`None`: they no longer do).
    /// While it is set and no sandbox is ready, waiting requests are answered at once and
    /// new ones are not queued.
    pub fn set_failing(&self, why: Option<String>) {
        let mut state = self.shared.state.lock().expect("dispatch lock");
        state.failing = why;
        if state.failing.is_some() && state.sandboxes.is_empty() {
            // Dropping a waiter's sender wakes it with the failure.
            state.waiters.clear();
        }
    }

    /// Requests holding a lease now, on routed and draining sandboxes.
    pub fn in_flight(&self) -> u32 {
        let state = self.shared.state.lock().expect("dispatch lock");
        state.sandboxes.iter().chain(&state.draining).map(|s| s.in_flight).sum()
    }

    /// The sandboxes with a request in flight, routed or draining.
    pub fn busy_sandboxes(&self) -> Vec<String> {
        let state = self.shared.state.lock().expect("dispatch lock");
        state.sandboxes.iter().chain(&state.draining).filter(|s| s.in_flight > 0).map(|s| s.target.id.clone()).collect()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().expect("dispatch lock").waiters.len()
    }

    /// Sandboxes known now.
    pub fn sandboxes(&self) -> usize {
        self.shared.state.lock().expect("dispatch lock").sandboxes.len()
    }
}

fn has_room(config: &DispatchConfig, slot: &Slot) -> bool {
    config.container_concurrency == 0 || slot.in_flight < config.container_concurrency
}

/// A free slot, and when its sandbox joined.
fn take_slot(config: &DispatchConfig, state: &mut State) -> Option<(Target, u64)> {
    let in_flight: Vec<u32> = state.sandboxes.iter().map(|s| s.in_flight).collect();
    let sandboxes = &state.sandboxes;
    let chosen = state.balancer.pick(&in_flight, |i| has_room(config, &sandboxes[i]))?;
    let slot = &mut state.sandboxes[chosen];
    slot.in_flight += 1;
    Some((slot.target.clone(), slot.added))
}

/// Gives free slots to waiting requests, oldest first; skips waiters that gave up.
fn hand_over(config: &DispatchConfig, state: &mut State) {
    while !state.waiters.is_empty() {
        let Some((target, added)) = take_slot(config, state) else {
            return;
        };
        let mut target = Some(target);
        while let Some(waiter) = state.waiters.pop_front() {
            let cold = added > waiter.since;
            match waiter.tx.send((target.take().expect("a target to give"), cold)) {
                Ok(()) => break,
                Err((back, _)) => target = Some(back),
            }
        }
        if let Some(unused) = target {
            // Every waiter had gone: return the slot.
            if let Some(slot) = state.sandboxes.iter_mut().find(|s| s.target == unused) {
                slot.in_flight -= 1;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(cc: u32) -> DispatchConfig {
        DispatchConfig {
            queue_capacity: 3,
            queue_timeout: Duration::from_secs(2),
            container_concurrency: cc,
            policy: BalancePolicy::LeastLoaded,
        }
    }

    fn target(i: u32) -> Target {
        Target { id: format!("sb-{i}"), endpoint: format!("127.0.0.1:{}", 20000 + i), creation: Default::default() }
    }

    fn counting(cc: u32) -> (Dispatcher, Arc<AtomicUsize>) {
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        (
            Dispatcher::new(config(cc), 1, move || {
                q.fetch_add(1, Ordering::SeqCst);
            }),
            queued,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_is_granted_at_once_and_concurrency_is_respected() {
        let (d, queued) = counting(1);
        d.set_sandboxes(vec![target(1), target(2)]);
        let a = d.acquire().await.unwrap();
        let b = d.acquire().await.unwrap();
        assert_ne!(a.target(), b.target());
        assert!(a.waited().is_none());
        assert_eq!(d.in_flight(), 2);
        // Both sandboxes are full: the third request queues, and says so.
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((d.queued(), queued.load(Ordering::SeqCst)), (1, 1));
        let freed = a.target().clone();
        drop(a);
        let c = waiting.await.unwrap().unwrap();
        assert_eq!(c.target(), &freed);
        assert_eq!(c.waited(), Some(Duration::from_millis(100)));
        assert_eq!(d.in_flight(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        let (d, _) = counting(1);
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let d = d.clone();
            waiting.push(tokio::spawn(async move { d.acquire().await.err() }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(d.acquire().await.err(), Some(DispatchError::QueueFull(3)));
        let started = Instant::now();
        for w in waiting {
            assert_eq!(w.await.unwrap(), Some(DispatchError::Timeout(Duration::from_secs(2))));
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1999));
        assert_eq!(d.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_sandbox_serves_the_queue_in_order() {
        let (d, queued) = counting(1);
        let mut waiting = Vec::new();
        for i in 0..3 {
            let d = d.clone();
            waiting.push(tokio::spawn(async move { (i, d.acquire().await.unwrap()) }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(queued.load(Ordering::SeqCst), 3);
        d.set_sandboxes(vec![target(1)]);
        let (first, lease) = waiting.remove(0).await.unwrap();
        assert_eq!(first, 0);
        assert_eq!(d.queued(), 2, "one sandbox, concurrency 1: the others still wait");
        drop(lease);
        let (second, lease) = waiting.remove(0).await.unwrap();
        assert_eq!(second, 1);
        drop(lease);
        let (third, _lease) = waiting.remove(0).await.unwrap();
        assert_eq!(third, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_wait_for_a_sandbox_that_arrived_later_is_a_cold_start() {
        let (d, _) = counting(1);
        let wait = |d: &Dispatcher| {
            let d = d.clone();
            tokio::spawn(async move { d.acquire().await.unwrap() })
        };
        // No sandbox yet: the call waits for the first one, a cold start.
        let first = wait(&d);
        tokio::time::sleep(Duration::from_millis(40)).await;
        d.set_sandboxes(vec![target(1)]);
        let first = first.await.unwrap();
        assert!(first.cold() && first.waited().is_some());
        // Queued behind the busy sandbox, then given its slot: queued, not cold.
        let behind = wait(&d);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        let behind = behind.await.unwrap();
        assert!(!behind.cold() && behind.waited().is_some(), "queueing is not a cold start");
        // Queued while sb-1 is busy; sb-2 arrives and takes it: cold.
        let next = wait(&d);
        tokio::time::sleep(Duration::from_millis(10)).await;
        d.set_sandboxes(vec![target(1), target(2)]);
        let next = next.await.unwrap();
        assert_eq!(next.target(), &target(2));
        assert!(next.cold());
        // A free slot at once: neither.
        drop((behind, next));
        let warm = d.acquire().await.unwrap();
        assert!(!warm.cold() && warm.waited().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_sandbox_takes_no_new_requests_and_its_leases_finish() {
        let (d, _) = counting(0);
        d.set_sandboxes(vec![target(1), target(3)]);
        let old = d.acquire().await.unwrap();
        assert_eq!(old.target(), &target(1));
        d.set_sandboxes(vec![target(2)]);
        // The call on the removed sandbox still counts, and the sandbox is listed busy (its
        // control plane must not delete it yet); the idle removed one is not.
        assert_eq!((d.in_flight(), d.busy_sandboxes()), (1, vec!["sb-1".to_string()]));
        let new = d.acquire().await.unwrap();
        assert_eq!(new.target(), &target(2));
        assert_eq!(d.in_flight(), 2);
        let mut busy = d.busy_sandboxes();
        busy.sort();
        assert_eq!(busy, ["sb-1", "sb-2"]);
        drop(old);
        assert_eq!((d.in_flight(), d.busy_sandboxes()), (1, vec!["sb-2".to_string()]), "sb-1 drained");
        // Unlimited concurrency: many leases on one sandbox.
        let more: Vec<_> = acquire_many(&d, 10).await;
        assert_eq!(more.len(), 10);
        assert_eq!(d.in_flight(), 11);
        // Routed again while draining, a sandbox takes calls again with its count kept.
        let draining = d.acquire().await.unwrap();
        d.set_sandboxes(vec![]);
        assert_eq!(d.in_flight(), 12);
        d.set_sandboxes(vec![target(2)]);
        assert_eq!(d.in_flight(), 12);
        drop((more, new, draining));
        assert_eq!((d.in_flight(), d.busy_sandboxes()), (0, vec![]));
    }

    async fn acquire_many(d: &Dispatcher, n: usize) -> Vec<Lease> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(d.acquire().await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_does_not_keep_the_slot() {
        let (d, _) = counting(1);
        let gone = tokio::spawn({
            let d = d.clone();
            async move { d.acquire().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        gone.abort();
        let _ = gone.await;
        d.set_sandboxes(vec![target(1)]);
        assert_eq!(d.in_flight(), 0, "the aborted waiter's slot went back");
        assert!(d.acquire().await.unwrap().waited().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn while_sandboxes_fail_to_start_calls_are_answered_at_once_with_why() {
        let (d, _) = counting(1);
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        d.set_failing(Some("exec: no such file".into()));
        // The waiting call is woken with the reason, not left to the queue timeout.
        let woken = waiting.await.unwrap().err().unwrap();
        assert_eq!(woken, DispatchError::Failing("exec: no such file".into()));
        assert_eq!(d.queued(), 0);
        assert!(matches!(d.acquire().await, Err(DispatchError::Failing(_))), "a new call is not queued");
        // The back-off over (or a sandbox ready): calls queue and are served again.
        d.set_failing(None);
        d.set_sandboxes(vec![target(1)]);
        let _held = d.acquire().await.unwrap();
        // With a sandbox ready a failure elsewhere does not refuse calls: they queue for it.
        d.set_failing(Some("a later failure".into()));
        let queued = d.acquire_within(Duration::from_millis(10)).await.err().unwrap();
        assert_eq!(queued, DispatchError::Timeout(Duration::from_millis(10)));
    }
}
