//! Invocations: `ANY /function/{name}[/rest]`. The owner comes from the shard map in
//! memory (no I/O): the function's assignment, and the data plane within the owning cell
//! by function hash. The call goes there as `/function/{tenant}.{name}[/rest]` with the
//! generation routed by. A cell that no longer owns the function answers 421 with the
//! owner it knows; the router retries there once (its own map catches up by the stream).
//! A cell that refuses the connection (it is down) makes the call wait, up to
//! `router.owner_wait`, for the map to name a new owner (failover), and go there.

use baton_model::{FunctionId, Generation, headers};
use baton_service::http::{Body, client_headers, copy_end_to_end, read_body};
use baton_service::spans::{Kind, Span};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::context::Router;
use crate::error::ApiError;

/// One call as the router handles it: its ID and its span.
pub struct Call {
    /// `X-Call-Id`, sent on to the cell as `X-Baton-Call-Id` and named in every log line.
    pub id: HeaderValue,
    /// The router's span of it.
    pub span: Span,
}

/// Where one attempt goes.
pub struct Target {
    data_plane: String,
    generation: Generation,
}

/// Proxies one invocation of `tenant`'s function `name`.
pub async fn invoke(
    router: &Router,
    tenant: &str,
    name: &str,
    rest: &str,
    req: Request<Incoming>,
    call: &Call,
) -> Response<Body> {
    let not_found = || ApiError::FunctionNotFound(name.to_string()).response();
    // A malformed name cannot name a function: no lookup, no upstream path built from it.
    let arrived = std::time::Instant::now();
    let Ok(id) = FunctionId::new(tenant, name) else { return not_found() };
    let Some(target) = target_of(router, &id) else { return not_found() };
    if call.span.is_recording() {
        call.span.set("baton.call_id", call.id.to_str().unwrap_or_default().to_string());
        call.span.set("baton.tenant", tenant.to_string());
        call.span.set("baton.function", name.to_string());
    }
    let path = cell_path(&id, rest, req.uri().query());
    let max = router.config.max_body_bytes;
    let (parts, body) = req.into_parts();
    let body = match read_body(body, max, router.config.body_read_timeout).await {
        Ok(body) => body,
        Err(e) => return ApiError::body(e, "request body").response(),
    };
    let headers = function_headers(&parts.headers, call);
    let out = Outgoing { method: parts.method, headers, path, body };
    forward(router, &id, target, &out, call, arrived).await.response
}

/// The path a call takes to the owning cell: `/function/{tenant}.{name}{rest}[?query]`.
pub fn cell_path(id: &FunctionId, rest: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("/function/{}{rest}?{q}", id.cell_name()),
        None => format!("/function/{}{rest}", id.cell_name()),
    }
}

/// The headers a call carries to its function: the client's end-to-end ones but
/// `Authorization` and any `X-Baton-*` (the function sees no client's call ID as its own),
/// and the call's ID.
pub fn function_headers(given: &HeaderMap, call: &Call) -> HeaderMap {
    let mut headers = HeaderMap::new();
    client_headers(given, &mut headers);
    headers.remove(http::header::AUTHORIZATION);
    headers.insert(headers::ROUTER_CALL_ID, call.id.clone());
    headers
}

/// Where a function's calls go now, by the map; `None` when the map has no such function.
pub fn target_of(router: &Router, id: &FunctionId) -> Option<Target> {
    let map = router.view.read();
    map.assigned_owner(&id.key()).and_then(|owner| {
        Some(Target { data_plane: owner.data_plane?.to_string(), generation: owner.generation.unwrap_or_default() })
    })
}

/// A call as it leaves for the cell.
pub struct Outgoing {
    /// Its method.
    pub method: http::Method,
    /// Its headers (see [`function_headers`]).
    pub headers: HeaderMap,
    /// Its path on the cell (see [`cell_path`]).
    pub path: String,
    /// Its body.
    pub body: Bytes,
}

/// What became of a forwarded call.
pub struct Forwarded {
    /// The answer: the cell's, or the router's own error.
    pub response: Response<Body>,
    /// No cell was reached (each refused the connection, and no new owner came within
    /// `router.owner_wait`): the function did not run.
    pub unreached: bool,
}

/// Sends `out` to `target`, then where a `421` or a failover sends it.
pub async fn forward(
    router: &Router,
    id: &FunctionId,
    mut target: Target,
    out: &Outgoing,
    call: &Call,
    arrived: std::time::Instant,
) -> Forwarded {
    let mut headers = out.headers.clone();
    let call_id = call.id.to_str().unwrap_or_default();
    let reached = |response| Forwarded { response, unreached: false };
    let (mut redirected, mut waited) = (false, false);
    loop {
        let attempt = call.span.child("route", Kind::Client);
        if attempt.is_recording() {
            attempt.set("server.address", target.data_plane.clone());
        }
        attempt.propagate(&mut headers);
        let sent = send(router, &out.method, &headers, &target, &out.path, out.body.clone(), arrived.elapsed()).await;
        attempt.status(sent.as_ref().map_or(502, |r| r.status().as_u16()), "the cell did not answer");
        drop(attempt);
        let response = match sent {
            Ok(response) => response,
            Err(Failure { unreachable: true, .. }) if !waited && !router.config.owner_wait.is_zero() => {
                // The owner is down (nothing reached it, so resending is safe): wait for the
                // map to name a new owner (failover) and send the call there.
                waited = true;
                if let Some(next) = new_owner(router, &id.key(), &target).await {
                    crate::metrics::failover_retry();
                    tracing::debug!(call_id, function = %id, from = target.data_plane, to = next.data_plane, "owner unreachable: retrying at the new owner");
                    target = next;
                    continue;
                }
                tracing::debug!(call_id, function = %id, cell = target.data_plane, "owner unreachable and no new owner came");
                let response = ApiError::CellUnreachable(format!(
                    "the owning cell cannot be reached and no new owner came within {:?}",
                    router.config.owner_wait
                ))
                .response();
                return Forwarded { response, unreached: true };
            }
            Err(failure) => {
                tracing::debug!(call_id, function = %id, cell = target.data_plane, status = %failure.response.status(), "the cell did not answer");
                return Forwarded { response: failure.response, unreached: failure.unreachable };
            }
        };
        if response.status() != StatusCode::MISDIRECTED_REQUEST || redirected {
            return reached(answer(response));
        }
        // The cell says the function moved: retry at the owner it names.
        let Some(next) = redirect(router, response.headers()) else {
            return reached(answer(response));
        };
        redirected = true;
        crate::metrics::misdirected_retry();
        tracing::debug!(call_id, function = %id, from = target.data_plane, to = next.data_plane, "421: retrying at the owner");
        target = next;
    }
}

/// Waits up to `router.owner_wait` for the map to give `function` another data plane
/// than `current`'s.
async fn new_owner(router: &Router, function: &str, current: &Target) -> Option<Target> {
    let deadline = tokio::time::Instant::now() + router.config.owner_wait;
    loop {
        let next = {
            let map = router.view.read();
            map.assigned_owner(function).and_then(|owner| {
                let data_plane = owner.data_plane?;
                (data_plane != current.data_plane).then(|| Target {
                    data_plane: data_plane.to_string(),
                    generation: owner.generation.unwrap_or_default(),
                })
            })
        };
        if next.is_some() || tokio::time::Instant::now() >= deadline {
            return next;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A call that got no answer from the cell.
struct Failure {
    /// What the client gets.
    response: Response<Body>,
    /// Nothing reached the cell (the connection was refused): safe to resend.
    unreachable: bool,
}

async fn send(
    router: &Router,
    method: &http::Method,
    headers: &HeaderMap,
    target: &Target,
    path: &str,
    body: Bytes,
    spent: std::time::Duration,
) -> Result<Response<Incoming>, Failure> {
    let uri: Uri = format!("{}{path}", target.data_plane.trim_end_matches('/')).parse().map_err(|_| Failure {
        response: ApiError::BadOwner(target.data_plane.clone()).response(),
        unreachable: false,
    })?;
    let mut out = Request::builder().method(method.clone()).uri(uri).body(Full::new(body)).expect("parts are valid");
    *out.headers_mut() = headers.clone();
    out.headers_mut().insert(headers::GENERATION, HeaderValue::from(target.generation.0));
    // Always set (a client's own value is replaced): the cell takes it off the function's
    // timeout.
    out.headers_mut().insert(headers::SPENT_MS, HeaderValue::from(spent.as_millis() as u64));
    match tokio::time::timeout(router.config.call_timeout, router.upstream.request(out)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(Failure {
            unreachable: e.is_connect(),
            response: ApiError::CellUnreachable(format!("the owning cell: {e}")).response(),
        }),
        Err(_) => {
            Err(Failure { response: ApiError::CallTimeout(router.config.call_timeout).response(), unreachable: false })
        }
    }
}

/// The owner a 421 names: its data plane if given, else the cell's from our map.
fn redirect(router: &Router, headers: &HeaderMap) -> Option<Target> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let generation = Generation(text(headers::GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0));
    if let Some(data_plane) = text(headers::OWNER_DATA_PLANE) {
        return Some(Target { data_plane, generation });
    }
    let cell = baton_shardmap::CellId(text(headers::OWNER)?);
    let map = router.view.read();
    let data_plane = map.cell(&cell)?.data_planes.first()?.clone();
    Some(Target { data_plane, generation })
}

/// The cell's answer, streamed back without hop-by-hop headers.
fn answer(response: Response<Incoming>) -> Response<Body> {
    let (mut head, body) = response.into_parts();
    let mut headers = HeaderMap::new();
    copy_end_to_end(&head.headers, &mut headers);
    head.headers = headers;
    Response::from_parts(head, body.boxed())
}
