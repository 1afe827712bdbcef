//! The data plane's HTTP ingress: `ANY /function/{name}[/rest]`. Finds the function's
//! dispatcher, waits for a sandbox slot, and proxies method, path, query, headers and body
//! over pooled keep-alive connections. Every answer carries `X-Call-Id` (the router's,
//! or this data plane's own when called directly; the function receives it too),
//! `X-Baton-Cold-Start` (true when the request waited in the queue for a sandbox)
//! and `Server-Timing` (queue; for a cold call, create: the sandbox's creation on its
//! worker; proxy); in a federation, `X-Baton-Cell` names the cell that served the call.
//! Every error is `{"error":{"code","message"}}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::dispatch::{DispatchError, Dispatcher};
use super::fence::{Fence, Verdict};

use baton_model::{Generation, headers};
pub use baton_service::http::{Body, error_response};
use baton_service::http::{
    BodyError, CallIds, client_headers, copy_end_to_end, given_call_id, read_body, remove_prefixed,
};
use baton_service::spans::{Kind, Span, Spans};

use crate::routing::Creation;

/// What the ingress knows of one function.
#[derive(Clone)]
pub struct FunctionSlot {
    /// Its dispatcher.
    pub dispatcher: Dispatcher,
    /// Longest one call may take.
    pub timeout: Duration,
    /// Requests per sandbox (0: unlimited), to notice when the dispatcher must change.
    pub container_concurrency: u32,
    /// Most async calls in flight at once (0: no limit).
    pub async_slots: u32,
    /// Async calls in flight now; kept when the slot is rebuilt.
    pub async_in_flight: Arc<AtomicU32>,
    /// Most calls in flight at once (reserved concurrency; `None`: no cap).
    pub reserved_concurrency: Option<u32>,
    /// Calls in flight now (queued here or running); kept when the slot is rebuilt.
    pub calls_in_flight: Arc<AtomicU32>,
    /// Gone from the routing while calls were still in flight: it takes no new call and
    /// stays (reporting its busy sandboxes) until they end.
    pub removed: bool,
}

/// The functions this data plane routes, shared with the routing follower.
pub type Functions = Arc<RwLock<HashMap<String, FunctionSlot>>>;

/// How often a queued call checks whether its function moved to another cell.
const MOVE_CHECK: Duration = Duration::from_millis(50);

/// The ingress.
#[derive(Clone)]
pub struct Ingress {
    functions: Functions,
    client: Client<HttpConnector, Full<Bytes>>,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    call_ids: Arc<CallIds>,
    fence: Option<Fence>,
    spans: Spans,
}

/// How long a call for a function this cell owns by the map waits for the function to
/// reach the data plane's routing (it just moved here, or was failed over).
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

impl Ingress {
    /// An ingress over `functions`, refusing bodies over `max_body_bytes` or slower to
    /// arrive than `body_read_timeout`; in a federation, `fence` refuses calls for
    /// functions another cell owns.
    pub fn new(
        functions: Functions,
        (max_body_bytes, body_read_timeout): (usize, Duration),
        fence: Option<Fence>,
        spans: Spans,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { functions, client, max_body_bytes, body_read_timeout, call_ids: Arc::new(CallIds::new()), fence, spans }
    }

    /// Handles one request. Its call ID is the router's (`X-Baton-Call-Id`), or this data
    /// plane's own when called directly (a client's `X-Call-Id` reaches the function as
    /// `X-Client-Call-Id`).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let call_id = given_call_id(req.headers()).unwrap_or_else(|| self.call_ids.next());
        let span = self.spans.server("call", req.headers());
        let id = call_id.to_str().unwrap_or_default();
        let mut response = match self.route(req, &call_id, &span).await {
            Ok(response) => response,
            Err(refusal) => {
                tracing::debug!(call_id = id, ?refusal, "call refused");
                refusal.response()
            }
        };
        let outcome = outcome_label(response.status());
        span.status(response.status().as_u16(), outcome);
        crate::metrics::invocation(outcome, started.elapsed());
        response.headers_mut().insert(headers::CALL_ID, call_id);
        response
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        call_id: &HeaderValue,
        span: &Span,
    ) -> Result<Response<Body>, Refusal> {
        let arrived = Instant::now();
        let (parts, body) = req.into_parts();
        let (name, rest) = baton_service::http::function_path(parts.uri.path()).ok_or(Refusal::NoRoute)?;
        if span.is_recording() {
            span.set("baton.call_id", call_id.to_str().unwrap_or_default().to_string());
            span.set("baton.function", name.to_string());
        }
        let mut owned = false;
        let generation =
            parts.headers.get(headers::GENERATION).and_then(|v| v.to_str().ok()?.parse().ok().map(Generation));
        if let Some(fence) = &self.fence {
            match fence.check(name, generation) {
                Verdict::Serve => {}
                Verdict::Owned => owned = true,
                Verdict::Elsewhere { cell, generation, data_plane } => {
                    return Err(Refusal::Misdirected { cell, generation, data_plane });
                }
            }
        }
        let slot = self.slot(name, owned).await.ok_or_else(|| Refusal::UnknownFunction(name.to_string()))?;
        // The function's timeout bounds the whole call in baton: what a router already
        // spent on it (holding it through a failover, a 421), the queue, a cold start and
        // the sandbox's answer. The deadline counts from the call's arrival here.
        let spent = parts.headers.get(headers::SPENT_MS).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let deadline = arrived + slot.timeout.saturating_sub(Duration::from_millis(spent.unwrap_or(0)));
        let left = || deadline.saturating_duration_since(Instant::now());
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        if let Some(len) =
            parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            && len > self.max_body_bytes
        {
            return Err(Refusal::TooLarge(self.max_body_bytes));
        }
        let body = read_body(body, self.max_body_bytes, self.body_read_timeout).await.map_err(Refusal::Body)?;
        let asynchronous = parts.headers.contains_key(headers::ASYNC);
        // The function's reserved concurrency caps all its calls: over it a sync call is
        // told to come back, an async one waits in its queue (the router's).
        let reserved_slot = match slot.reserved_concurrency {
            Some(cap) => {
                Some(Slot::take(&slot.calls_in_flight, cap).ok_or(Refusal::OverReserved { cap, asynchronous })?)
            }
            None => None,
        };
        // An async call's attempt takes one of the function's async slots, or waits in its
        // queue for one: sync callers keep the rest of the capacity.
        let async_cap = if slot.async_slots == 0 { u32::MAX } else { slot.async_slots };
        let async_slot = match asynchronous {
            true => Some(Slot::take(&slot.async_in_flight, async_cap).ok_or(Refusal::AsyncDeferred(slot.async_slots))?),
            false => None,
        };

        let queue = span.child("queue", Kind::Internal);
        let lease = match self.acquire(&slot, name, generation, left()).await? {
            Ok(lease) => lease,
            // The call's own time ran out first (not the queue timeout).
            Err(DispatchError::Timeout(_)) if left().is_zero() => return Err(Refusal::CallTimeout(slot.timeout)),
            Err(e) => return Err(Refusal::Dispatch(e)),
        };
        let queued = lease.waited();
        if queue.is_recording() {
            queue.set("baton.cold_start", lease.cold());
            queue.set("baton.sandbox_id", lease.target().id.clone());
            if lease.cold() {
                creation_spans(&queue, &lease.target().creation);
            }
        }
        drop(queue);
        let uri: Uri =
            format!("http://{}{path_and_query}", lease.target().endpoint).parse().map_err(|_| Refusal::NoRoute)?;
        let mut out = Request::builder().method(parts.method).uri(uri).body(Full::new(body)).expect("parts are valid");
        // No `X-Baton-*` header reaches the function: the routing headers are between
        // router and cell, and any other is a client's forgery.
        client_headers(&parts.headers, out.headers_mut());
        out.headers_mut().insert(headers::CALL_ID, call_id.clone());
        let proxy = span.child("proxy", Kind::Client);
        proxy.propagate(out.headers_mut());
        let proxy_started = Instant::now();
        let answer = tokio::time::timeout(left(), self.client.request(out)).await;
        let response = match answer {
            Err(_) => return Err(Refusal::CallTimeout(slot.timeout)),
            Ok(Err(e)) => return Err(Refusal::Sandbox(e.to_string())),
            Ok(Ok(response)) => response,
        };
        let proxy_time = proxy_started.elapsed();
        proxy.status(response.status().as_u16(), "the function answered with an error");
        drop(proxy);
        let (mut head, body) = response.into_parts();
        let mut headers = HeaderMap::new();
        copy_end_to_end(&head.headers, &mut headers);
        // `X-Baton-*` answers are the data plane's own: a function cannot forge a 421's
        // owner (which a router would resend the call to) or any other.
        remove_prefixed(&mut headers, headers::PREFIX);
        head.headers = headers;
        // Cold: it waited for a sandbox that arrived after it queued. A call that queued
        // behind busy sandboxes only queued (Server-Timing's `queue` says how long).
        let cold = lease.cold();
        if let Some(wait) = queued {
            crate::metrics::queued(wait, cold);
        }
        if cold {
            crate::metrics::cold_start();
        }
        head.headers.insert(headers::COLD_START, HeaderValue::from_static(if cold { "true" } else { "false" }));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut timing = format!("queue;dur={:.3}", ms(queued.unwrap_or_default()));
        let creation = lease.target().creation.took;
        if cold && !creation.is_zero() {
            // The sandbox this cold call waited for: how long its worker took to make it.
            timing.push_str(&format!(", create;dur={:.3}", ms(creation)));
        }
        timing.push_str(&format!(", proxy;dur={:.3}", ms(proxy_time)));
        head.headers.insert("server-timing", HeaderValue::from_str(&timing).expect("ASCII"));
        if let Some(cell) = self.fence.as_ref().and_then(|f| HeaderValue::from_str(f.cell()).ok()) {
            // Which cell served a federated call (operators, and the tests of routing).
            head.headers.insert(headers::CELL, cell);
        }
        // The lease is held until the sandbox's body has been streamed out.
        let body = LeaseBody { inner: body, _lease: lease, _slots: [async_slot, reserved_slot] };
        Ok(Response::from_parts(head, body.boxed()))
    }
}

impl Ingress {
    /// A slot on one of the function's sandboxes, waiting at most `limit`. While the call
    /// waits with no sandbox here to wait for, the function may move to another cell (this
    /// one could not create a sandbox for it): the call is then refused with 421 naming the
    /// owner, and the router sends it there, as it holds calls for a dead cell. A call
    /// queued behind sandboxes this cell still has (a graceful move) is served here.
    async fn acquire(
        &self,
        slot: &FunctionSlot,
        name: &str,
        generation: Option<Generation>,
        limit: Duration,
    ) -> Result<Result<super::dispatch::Lease, DispatchError>, Refusal> {
        let acquire = slot.dispatcher.acquire_within(limit);
        let Some(fence) = &self.fence else { return Ok(acquire.await) };
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                lease = &mut acquire => return Ok(lease),
                _ = tokio::time::sleep(MOVE_CHECK) => {
                    if slot.dispatcher.sandboxes() > 0 {
                        continue;
                    }
                    if let Verdict::Elsewhere { cell, generation, data_plane } = fence.check(name, generation) {
                        return Err(Refusal::Misdirected { cell, generation, data_plane });
                    }
                }
            }
        }
    }

    /// The function's slot; for a function this cell owns by the map, waits a little for
    /// it to arrive in the routing table.
    async fn slot(&self, name: &str, owned: bool) -> Option<FunctionSlot> {
        let deadline = Instant::now() + if owned { ARRIVAL_WAIT } else { Duration::ZERO };
        loop {
            if let Some(slot) = self.functions.read().expect("functions lock").get(name).filter(|s| !s.removed) {
                return Some(slot.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The creation of the sandbox a cold call waited for, as spans under `parent`: `cold
/// start` from the control plane's request to the worker's answer, and within it the
/// worker's phases (image, cgroup, spawn, readiness), back to back, ending with it.
fn creation_spans(parent: &Span, creation: &Creation) {
    if creation.requested_unix_us == 0 || creation.answered_unix_us < creation.requested_unix_us {
        return;
    }
    let at = |us: u64| std::time::UNIX_EPOCH + Duration::from_micros(us);
    let (start, end) = (at(creation.requested_unix_us), at(creation.answered_unix_us));
    let cold = parent.child_at("cold start", start);
    let phases: Duration = creation.phases.iter().sum();
    let mut t = end.checked_sub(phases).filter(|t| *t >= start).unwrap_or(start);
    for (name, took) in Creation::PHASES.into_iter().zip(creation.phases) {
        if took.is_zero() {
            continue;
        }
        let phase = cold.child_at(name, t);
        t = (t + took).min(end);
        phase.end_at(t);
    }
    cold.end_at(end);
}

/// The sandbox's body, holding the request's slot (and its async and reserved ones) until
/// it ends.
struct LeaseBody {
    inner: Incoming,
    _lease: super::dispatch::Lease,
    _slots: [Option<Slot>; 2],
}

/// One of a function's counted slots (async, or reserved concurrency), given back when
/// dropped (on every path).
struct Slot(Arc<AtomicU32>);

impl Slot {
    /// A slot of `counter`'s, if fewer than `cap` are taken.
    fn take(counter: &Arc<AtomicU32>, cap: u32) -> Option<Self> {
        counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).ok()?;
        Some(Self(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for LeaseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn outcome_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        404 => "not_found",
        421 => "misdirected",
        413 => "too_large",
        503 => "queue_full",
        504 => "timeout",
        502 => "sandbox_error",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// Why the ingress answered itself.
#[derive(Debug)]
enum Refusal {
    NoRoute,
    UnknownFunction(String),
    TooLarge(usize),
    Body(BodyError),
    Dispatch(DispatchError),
    CallTimeout(Duration),
    Sandbox(String),
    /// An async call's attempt over the function's async slots (how many).
    AsyncDeferred(u32),
    /// A call over the function's reserved concurrency.
    OverReserved {
        cap: u32,
        asynchronous: bool,
    },
    Misdirected {
        cell: String,
        generation: Generation,
        data_plane: Option<String>,
    },
}

impl Refusal {
    fn response(self) -> Response<Body> {
        let (status, code, message) = match self {
            Refusal::Misdirected { cell, generation, data_plane } => {
                let message = format!("the function is owned by cell {cell} at generation {generation}");
                let mut response = error_response(StatusCode::MISDIRECTED_REQUEST, "misdirected", &message);
                let headers = response.headers_mut();
                for (name, value) in [
                    (headers::OWNER, Some(cell)),
                    (headers::GENERATION, Some(generation.to_string())),
                    (headers::OWNER_DATA_PLANE, data_plane),
                ] {
                    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        headers.insert(name, value);
                    }
                }
                return response;
            }
            Refusal::OverReserved { cap, asynchronous } => {
                let message = match cap {
                    0 => "the function is stopped (its reserved concurrency is 0)".to_string(),
                    cap => format!("the function has its reserved concurrency of {cap} calls in flight"),
                };
                let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "reserved_concurrency", &message);
                response.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                if asynchronous {
                    response.headers_mut().insert(headers::ASYNC_DEFERRED, HeaderValue::from_static("true"));
                }
                return response;
            }
            Refusal::AsyncDeferred(slots) => {
                let message = format!("the function's {slots} async slots are taken; the call waits in its queue");
                let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "async_share_taken", &message);
                response.headers_mut().insert(headers::ASYNC_DEFERRED, HeaderValue::from_static("true"));
                return response;
            }
            Refusal::NoRoute => {
                (StatusCode::NOT_FOUND, "no_route", "invocations go to /function/{name}[/path]".to_string())
            }
            Refusal::UnknownFunction(name) => {
                (StatusCode::NOT_FOUND, "function_not_found", format!("function {name:?} does not exist"))
            }
            Refusal::TooLarge(max) | Refusal::Body(BodyError::TooLarge(max)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over the limit of {max} bytes"),
            ),
            Refusal::Body(e @ BodyError::Timeout(_)) => (StatusCode::REQUEST_TIMEOUT, "body_timeout", e.to_string()),
            Refusal::Body(e @ BodyError::Broken(_)) => (StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
            Refusal::Dispatch(DispatchError::QueueFull(n)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("the function's queue is full ({n} waiting); retry later"),
            ),
            Refusal::Dispatch(e @ DispatchError::Failing(_)) => {
                (StatusCode::BAD_GATEWAY, "sandbox_failing", e.to_string())
            }
            Refusal::Dispatch(DispatchError::Timeout(t)) => (
                StatusCode::GATEWAY_TIMEOUT,
                "queue_timeout",
                format!("no sandbox became free within {} ms", t.as_millis()),
            ),
            Refusal::CallTimeout(t) => (
                StatusCode::GATEWAY_TIMEOUT,
                "call_timeout",
                format!(
                    "the call did not complete within the function's timeout of {} ms (queue, sandbox start and the function's answer together)",
                    t.as_millis()
                ),
            ),
            Refusal::Sandbox(e) => {
                (StatusCode::BAD_GATEWAY, "sandbox_error", format!("the sandbox failed during the call: {e}"))
            }
        };
        error_response(status, code, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_an_outcome_the_metrics_keep_handles_for() {
        for code in 100..=599 {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = outcome_label(status);
            assert!(crate::metrics::INVOCATION_OUTCOMES.contains(&outcome), "{code}: {outcome}");
        }
        let catalog = crate::metrics::CATALOG.iter().find(|m| m.name == crate::metrics::INVOCATIONS).unwrap();
        let listed = catalog.labels[0].trim_start_matches("outcome: ").replace(' ', "");
        assert_eq!(listed, crate::metrics::INVOCATION_OUTCOMES.join(","));
    }
}
