//! The delivery loop every router runs: it takes due calls from the queue (up to
//! `async.concurrency` at once), runs each try through the same path a synchronous call
//! takes ([`crate::proxy::forward`]: the owner by the map, a `421`'s owner, the new owner
//! after a failover), and settles the call by [`super::decide`]. While a try runs, its
//! lease is extended every third of `async.lease`; a try whose lease was lost (this router
//! was cut off from Redis long enough for another to take the call) is abandoned without
//! writing anything, so the call is never settled twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_model::{FunctionId, headers};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::callback::Callbacks;
use super::decide::{self, Outcome, Retention};
use super::policies::{Missing, Policies};
use super::record::{CallRecord, CallResult};
use super::store::{CallStore, Next, Taken};
use crate::context::Router;
use crate::proxy::{self, Call, Outgoing};

/// The loop's settings, from `[async]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a lease lasts unextended.
    pub lease: Duration,
    /// How long ended calls and dead letters are kept.
    pub retention: Retention,
    /// Most of a result's body kept.
    pub max_result_bytes: usize,
    /// Most tries at once.
    pub concurrency: usize,
    /// Callbacks may reach non-public addresses.
    pub callback_private_networks: bool,
}

/// The delivery loop's shared parts.
pub struct Delivery {
    router: Router,
    store: Arc<dyn CallStore>,
    policies: Policies,
    settings: Settings,
    /// Tries running now, by lease.
    running: Mutex<HashMap<String, AbortHandle>>,
    /// POSTs ended calls to their callbacks.
    callbacks: Callbacks,
}

impl Delivery {
    /// A loop over `store` for `router`.
    pub fn new(router: Router, store: Arc<dyn CallStore>, settings: Settings) -> Arc<Self> {
        let callbacks = Callbacks::new(settings.callback_private_networks);
        Arc::new(Self { router, store, policies: Policies::default(), settings, running: Mutex::default(), callbacks })
    }

    /// Runs until `stopped`: takes and runs tries, extends their leases, moves due
    /// retries back into the queue and reports the queue's depth. At stop it takes no
    /// more and waits up to `drain` for the running tries (the rest are left to their
    /// leases).
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>, drain: Duration) {
        let keeper = tokio::spawn(self.clone().keep_leases(stopped.clone()));
        let housekeeper = tokio::spawn(self.clone().housekeeping(stopped.clone()));
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tries = JoinSet::new();
        loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("never closed"),
                _ = stopped.wait_for(|s| *s) => break,
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let taken = tokio::select! {
                taken = self.store.take(permits.len()) => taken,
                _ = stopped.wait_for(|s| *s) => break,
            };
            let taken = match taken {
                Ok(taken) => taken,
                Err(e) => {
                    crate::metrics::async_store_error();
                    tracing::warn!(error = %e, "async queue: taking calls failed; trying again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for (call, permit) in taken.into_iter().zip(permits) {
                let lease = call.lease.clone();
                let this = self.clone();
                let handle = tries.spawn(async move {
                    let lease = call.lease.clone();
                    this.deliver(call).await;
                    this.running.lock().expect("running lock").remove(&lease);
                    drop(permit);
                });
                self.running.lock().expect("running lock").insert(lease, handle);
            }
            while tries.try_join_next().is_some() {}
            crate::metrics::async_running(self.running.lock().expect("running lock").len());
        }
        let _ = tokio::time::timeout(drain, async { while tries.join_next().await.is_some() {} }).await;
        tries.abort_all();
        keeper.abort();
        housekeeper.abort();
    }

    /// Extends the running tries' leases every third of `async.lease`; a try whose lease
    /// was lost is stopped.
    async fn keep_leases(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let leases: Vec<String> = self.running.lock().expect("running lock").keys().cloned().collect();
            match self.store.extend(&leases).await {
                Ok(lost) => {
                    let mut running = self.running.lock().expect("running lock");
                    for lease in lost {
                        // A try that settled its call since the list was made gave its
                        // lease back itself; only one still running lost it.
                        if let Some(handle) = running.remove(&lease)
                            && !handle.is_finished()
                        {
                            tracing::warn!(lease, "async queue: a try's lease was lost; another router has the call");
                            crate::metrics::async_event("lease_lost");
                            handle.abort();
                        }
                    }
                }
                Err(e) => {
                    crate::metrics::async_store_error();
                    tracing::warn!(error = %e, "async queue: extending leases failed");
                }
            }
        }
    }

    /// Moves due retries back into the queue (every 50 ms) and reports its depth (every
    /// second).
    async fn housekeeping(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut last_depth = Instant::now() - Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.store.promote(super::now_ms()).await {
                crate::metrics::async_store_error();
                tracing::warn!(error = %e, "async queue: moving due retries failed");
            }
            if last_depth.elapsed() >= Duration::from_secs(1) {
                last_depth = Instant::now();
                if let Ok(depth) = self.store.depth().await {
                    let age = match depth.oldest_ms {
                        0 => Duration::ZERO,
                        at => Duration::from_millis(super::now_ms().saturating_sub(at)),
                    };
                    crate::metrics::async_depth(depth.pending, depth.delayed, age);
                }
            }
        }
    }

    /// Runs one try of `call` (or settles it without one) and settles it.
    async fn deliver(&self, call: Taken) {
        let Taken { lease, record, body } = call;
        if record.state.is_final() {
            return self.call_back(&lease, record).await;
        }
        let retention = self.settings.retention;
        let Ok(id) = FunctionId::new(&record.tenant, &record.function) else {
            // Only valid names are ever accepted; a record naming another is not ours to run.
            return self.settle(&lease, decide::deleted(&record, super::now_ms(), retention)).await;
        };
        let target = proxy::target_of(&self.router, &id);
        if target.is_none() && self.map_knows(&record) {
            // The map that accepted the call had the function; one at least as new has not.
            return self.settle(&lease, decide::deleted(&record, super::now_ms(), retention)).await;
        }
        let policy = match self.policies.get(&self.router, &record.tenant, &record.function).await {
            Ok(policy) => policy,
            Err(why) => {
                let why = match why {
                    Missing::Deleted => "the shard map does not name the function's cell yet".to_string(),
                    Missing::Unavailable(why) => format!("the shard manager could not be asked: {why}"),
                };
                return self.settle_after(&lease, &record, &Default::default(), Outcome::NotDelivered(why)).await;
            }
        };
        if let Some(settled) = decide::before(&record, &policy, super::now_ms(), retention) {
            return self.settle(&lease, settled).await;
        }
        let Some(target) = target else {
            let outcome = Outcome::NotDelivered("the shard map does not name the function's cell".into());
            return self.settle_after(&lease, &record, &policy, outcome).await;
        };
        let running = decide::running(&record, super::now_ms());
        match self.store.update(&lease, &running).await {
            Ok(true) => {}
            Ok(false) => return crate::metrics::async_event("lease_lost"),
            Err(e) => {
                crate::metrics::async_store_error();
                // The lease lapses and the call is taken again.
                return tracing::warn!(call_id = record.id, error = %e, "async queue: starting a try failed");
            }
        }
        let outcome = self.attempt(&running, &id, target, body).await;
        self.settle_after(&lease, &running, &policy, outcome).await;
    }

    /// One try of an ended call's callback; the call is settled for good once it is
    /// delivered or out of tries.
    async fn call_back(&self, lease: &str, mut record: CallRecord) {
        let Some(url) = record.callback.clone().filter(|_| !record.callback_done) else {
            let next = self.final_next(&record);
            return self.settle(lease, (record, next)).await;
        };
        record.callback_attempts += 1;
        let sent = self.callbacks.send(&url, &record).await;
        record.updated_ms = super::now_ms();
        crate::metrics::async_callback(if sent.is_ok() { "delivered" } else { "failed" });
        match sent {
            Ok(()) => {
                record.callback_done = true;
                record.callback_error = None;
            }
            Err(why) => {
                tracing::debug!(call_id = record.id, url, why, "async callback failed");
                record.callback_error = Some(why);
                if record.callback_attempts >= super::callback::MAX_ATTEMPTS {
                    record.callback_done = true;
                } else {
                    let due_ms =
                        super::now_ms() + super::callback::backoff(record.callback_attempts).as_millis() as u64;
                    return self.settle_as(lease, (record, Next::Later { due_ms }), Some("callback")).await;
                }
            }
        }
        let next = self.final_next(&record);
        self.settle_as(lease, (record, next), Some("callback")).await;
    }

    /// Where an ended call goes: its function's dead letters, or kept for its retention.
    fn final_next(&self, record: &CallRecord) -> Next {
        let retention = self.settings.retention;
        match record.state {
            super::State::Dead => Next::Dead { keep_secs: retention.dead.as_secs() },
            _ => Next::Done { keep_secs: retention.done.as_secs() },
        }
    }

    /// Whether this router's map is at least as new as the one that accepted `record`, so
    /// a function missing from it was deleted (not yet unknown to a lagging map).
    fn map_knows(&self, record: &CallRecord) -> bool {
        self.router.view.synced() && self.router.view.epoch().0 >= record.epoch
    }

    /// Sends one try and reads its answer.
    async fn attempt(&self, record: &CallRecord, id: &FunctionId, target: proxy::Target, body: Bytes) -> Outcome {
        let call_id = HeaderValue::from_str(&record.id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let mut given = HeaderMap::new();
        for (name, value) in &record.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            {
                given.append(name, value);
            }
        }
        let call = Call { id: call_id, span: self.router.spans.server("async", &given) };
        let mut headers = proxy::function_headers(&given, &call);
        headers.insert(headers::ASYNC, HeaderValue::from_static("true"));
        let method = Method::from_bytes(record.method.as_bytes()).unwrap_or(Method::POST);
        let path = format!("/function/{}{}", id.cell_name(), record.path);
        let out = Outgoing { method, headers, path, body };
        let forwarded = proxy::forward(&self.router, id, target, &out, &call, Instant::now()).await;
        if forwarded.unreached {
            return Outcome::NotDelivered("no cell owning the function could be reached".into());
        }
        let response = forwarded.response;
        let status = response.status().as_u16();
        call.span.status(status, "the async try failed");
        if status == 429 && response.headers().contains_key(headers::ASYNC_DEFERRED) {
            // A stopped or capped function says when to come back.
            let wait = response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
            return Outcome::Deferred(wait.map(Duration::from_secs));
        }
        let (head, mut body) = response.into_parts();
        let headers = head
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let (mut kept, mut truncated) = (Vec::new(), false);
        let most = self.settings.max_result_bytes;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                let room = most.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
                if data.len() > room {
                    truncated = true;
                    break;
                }
            }
        }
        Outcome::Answered(CallResult { status, headers, body: kept, truncated })
    }

    /// Writes `record` and gives the lease back as `next` says; counts what happened
    /// (`later` names why a call goes back to the queue without a retried outcome).
    async fn settle_as(&self, lease: &str, (record, next): (CallRecord, Next), later: Option<&'static str>) {
        // The lease is given back here: no extension may race this write.
        self.running.lock().expect("running lock").remove(lease);
        // An ended call that owes its callback stays in the queue for it, at once.
        let queued = match next {
            Next::Done { .. } | Next::Dead { .. } if record.owes_callback() => Next::Later { due_ms: super::now_ms() },
            _ => next,
        };
        match self.store.settle(lease, &record, queued).await {
            Ok(true) => {}
            Ok(false) => return crate::metrics::async_event("lease_lost"),
            Err(e) => {
                crate::metrics::async_store_error();
                // The lease lapses and the call is taken again (its try counted).
                return tracing::warn!(call_id = record.id, error = %e, "async queue: settling a call failed");
            }
        }
        if later == Some("callback") {
            return;
        }
        let event = match (next, record.state) {
            (Next::Later { .. }, _) => later.unwrap_or("retried"),
            (Next::Dead { .. }, _) => "dead",
            (Next::Done { .. }, super::State::Succeeded) => "succeeded",
            (Next::Done { .. }, _) => "failed",
        };
        crate::metrics::async_event(event);
        if let Some(reason) = record.dead_reason {
            crate::metrics::async_dead(reason.label());
        }
        if record.state.is_final() {
            crate::metrics::async_completed(Duration::from_millis(super::now_ms().saturating_sub(record.accepted_ms)));
        }
        tracing::debug!(call_id = record.id, state = ?record.state, attempts = record.attempts, "async call settled");
    }
}

impl Delivery {
    async fn settle(&self, lease: &str, settled: (CallRecord, Next)) {
        self.settle_as(lease, settled, None).await;
    }

    /// Settles after a try that ended in `outcome`.
    async fn settle_after(
        &self,
        lease: &str,
        record: &CallRecord,
        policy: &baton_model::AsyncPolicy,
        outcome: Outcome,
    ) {
        let later = match &outcome {
            Outcome::Deferred(_) => Some("deferred"),
            Outcome::NotDelivered(_) => Some("undelivered"),
            Outcome::Answered(_) => None,
        };
        let settled = decide::after(record, policy, outcome, super::now_ms(), jitter(), self.settings.retention);
        self.settle_as(lease, settled, later).await;
    }
}

/// A draw from [0, 1) for back-off jitter.
fn jitter() -> f64 {
    rand::random::<f64>()
}
