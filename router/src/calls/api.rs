//! The tenant's async endpoints:
//!
//! - `ANY /async-function/{name}[/rest]`: `202` with `X-Call-Id` and `{"call_id": …}` once
//!   the call is stored; `404` for a function the tenant does not have and `413` for a body
//!   over `router.max_body_bytes`, as a synchronous call; `X-Callback-Url` names where the
//!   result goes.
//! - `GET /v1/calls/{id}`: where the call stands, with its result once it has one.
//!   Another tenant's call is a `404`, as one that never was.
//! - `GET /v1/functions/{name}/dead-letters[?limit=N]`, `POST
//!   /v1/functions/{name}/dead-letters/redrive`, `DELETE /v1/functions/{name}/dead-letters`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use baton_model::FunctionId;
use baton_service::http::{Body, read_body};
#[cfg(test)]
use http::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::record::{self, CallRecord};
use crate::api::json_response;
use crate::context::Router;
use crate::error::ApiError;
use crate::proxy::{self, Call};

/// Longest `X-Callback-Url`.
pub const MAX_CALLBACK_URL: usize = 2048;
/// The header naming where a call's result is POSTed.
pub const CALLBACK_URL: &str = "x-callback-url";
/// Most dead letters one listing shows.
pub const MAX_LIST: usize = 1000;

/// Accepts an async call of `tenant`'s function `name`.
pub async fn accept(
    router: &Router,
    tenant: &str,
    name: &str,
    rest: &str,
    req: Request<Incoming>,
    call: &Call,
) -> Response<Body> {
    let Some(store) = &router.calls else {
        return ApiError::AsyncUnavailable("no queue is configured".into()).response();
    };
    let not_found = || ApiError::FunctionNotFound(name.to_string()).response();
    let Ok(id) = FunctionId::new(tenant, name) else { return not_found() };
    if proxy::target_of(router, &id).is_none() {
        return not_found();
    }
    let callback = match callback_url(req.headers(), router.callback_private_networks) {
        Ok(callback) => callback,
        Err(message) => return ApiError::InvalidRequest(message).response(),
    };
    let path = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body, router.config.max_body_bytes, router.config.body_read_timeout).await {
        Ok(body) => body,
        Err(e) => return ApiError::body(e, "request body").response(),
    };
    let mut given = parts.headers;
    given.remove(CALLBACK_URL);
    let headers = proxy::function_headers(&given, call)
        .iter()
        .filter(|(name, _)| *name != baton_model::headers::ROUTER_CALL_ID)
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let now = super::now_ms();
    let call_id = call.id.to_str().unwrap_or_default().to_string();
    let request = record::Request {
        id: call_id.clone(),
        tenant: tenant.to_string(),
        function: name.to_string(),
        method: parts.method.to_string(),
        path,
        headers,
        callback,
    };
    let record = CallRecord::accepted(request, now, router.view.epoch().0);
    if let Err(e) = store.accept(&record, &body).await {
        crate::metrics::async_store_error();
        tracing::warn!(call_id, error = %e, "async queue: storing a call failed");
        return ApiError::AsyncUnavailable(e.to_string()).response();
    }
    crate::metrics::async_accepted();
    json_response(StatusCode::ACCEPTED, &json!({ "call_id": call_id }))
}

/// `X-Callback-Url`, checked: an absolute `http` or `https` URL with a host, at most
/// [`MAX_CALLBACK_URL`] bytes, without credentials; one header at most. Unless
/// `private_allowed`, a host given as an address must be a public one (a name is checked
/// when the callback is sent, against every address it resolves to).
pub fn callback_url(headers: &HeaderMap, private_allowed: bool) -> Result<Option<String>, String> {
    let mut given = headers.get_all(CALLBACK_URL).iter();
    let Some(value) = given.next() else { return Ok(None) };
    if given.next().is_some() {
        return Err("X-Callback-Url: give it once".into());
    }
    let text = value.to_str().map_err(|_| "X-Callback-Url: must be printable ASCII".to_string())?;
    if text.len() > MAX_CALLBACK_URL {
        return Err(format!("X-Callback-Url: is over {MAX_CALLBACK_URL} bytes"));
    }
    let uri: http::Uri = text.parse().map_err(|e| format!("X-Callback-Url: not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("X-Callback-Url: must be an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("X-Callback-Url: names no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("X-Callback-Url: must not carry credentials".into());
    }
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>()
        && !private_allowed
        && !super::callback::is_public(ip)
    {
        return Err(format!(
            "X-Callback-Url: {ip} is not a public address (the operator's async.callback_private_networks allows it)"
        ));
    }
    Ok(Some(text.to_string()))
}

/// `GET /v1/calls/{id}` for `tenant`.
pub async fn get(router: &Router, tenant: &str, method: &Method, id: &str) -> Response<Body> {
    if method != Method::GET {
        return ApiError::MethodNotAllowed("GET").response();
    }
    let Some(store) = &router.calls else {
        return ApiError::AsyncUnavailable("no queue is configured".into()).response();
    };
    let not_found = || ApiError::CallNotFound(id.to_string()).response();
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return not_found();
    }
    match store.get(id).await {
        Ok(Some(record)) if record.tenant == tenant => json_response(StatusCode::OK, &describe(&record)),
        Ok(_) => not_found(),
        Err(e) => {
            crate::metrics::async_store_error();
            ApiError::AsyncUnavailable(e.to_string()).response()
        }
    }
}

/// `/v1/functions/{name}/dead-letters[/redrive]` for `tenant`.
pub async fn dead_letters(
    router: &Router,
    tenant: &str,
    method: &Method,
    name: &str,
    redrive: bool,
    query: Option<&str>,
) -> Response<Body> {
    let Some(store) = &router.calls else {
        return ApiError::AsyncUnavailable("no queue is configured".into()).response();
    };
    let Ok(id) = FunctionId::new(tenant, name) else { return ApiError::FunctionNotFound(name.to_string()).response() };
    let key = id.key();
    let answer = match (method, redrive) {
        (&Method::GET, false) => {
            let limit = match limit(query) {
                Ok(limit) => limit,
                Err(message) => return ApiError::InvalidRequest(message).response(),
            };
            store.dead_letters(&key, limit).await.map(|letters| {
                let letters: Vec<Value> = letters
                    .iter()
                    .map(|(record, body)| {
                        let mut shown = describe(record);
                        shown["request"]["body"] = Value::String(STANDARD.encode(body));
                        shown
                    })
                    .collect();
                json_response(StatusCode::OK, &json!({ "dead_letters": letters }))
            })
        }
        (&Method::DELETE, false) => {
            store.purge(&key).await.map(|purged| json_response(StatusCode::OK, &json!({ "purged": purged })))
        }
        (&Method::POST, true) => store
            .redrive(&key, super::now_ms())
            .await
            .map(|sent| json_response(StatusCode::OK, &json!({ "redriven": sent }))),
        (_, false) => return ApiError::MethodNotAllowed("GET, DELETE").response(),
        (_, true) => return ApiError::MethodNotAllowed("POST").response(),
    };
    answer.unwrap_or_else(|e| {
        crate::metrics::async_store_error();
        ApiError::AsyncUnavailable(e.to_string()).response()
    })
}

/// `?limit=N` (1 to [`MAX_LIST`], default 100).
fn limit(query: Option<&str>) -> Result<usize, String> {
    let Some(query) = query else { return Ok(100) };
    let mut limit = 100;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", n)) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_LIST).contains(&n) => limit = n,
                _ => return Err(format!("limit: must be a number from 1 to {MAX_LIST}")),
            },
            _ => return Err(format!("{pair}: unknown parameter (only limit is taken)")),
        }
    }
    Ok(limit)
}

/// A call as the API shows it.
pub fn describe(record: &CallRecord) -> Value {
    let result = record.result.as_ref().map(|r| {
        let headers: serde_json::Map<String, Value> =
            r.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        json!({
            "status": r.status,
            "headers": headers,
            "body": STANDARD.encode(&r.body),
            "truncated": r.truncated,
        })
    });
    let headers: serde_json::Map<String, Value> =
        record.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "call_id": record.id,
        "function": record.function,
        "state": record.state,
        "attempts": record.attempts,
        "accepted_at_ms": record.accepted_ms,
        "updated_at_ms": record.updated_ms,
        "ended_at_ms": record.ended_ms,
        "last_error": record.last_error,
        "dead_reason": record.dead_reason,
        "callback": record.callback.as_ref().map(|url| json!({
            "url": url,
            "attempts": record.callback_attempts,
            "delivered": record.callback_done && record.callback_error.is_none(),
            "last_error": record.callback_error,
        })),
        "request": { "method": record.method, "path": record.path, "headers": headers },
        "result": result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CALLBACK_URL, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn callback_urls_are_checked() {
        assert_eq!(callback_url(&headers(&[]), false), Ok(None));
        let good = "https://hooks.example/x?y=1";
        assert_eq!(callback_url(&headers(&[good]), false), Ok(Some(good.into())));
        for bad in ["ftp://x/", "/relative", "http://", "not a url", "http://user:pw@host/", "file:///etc/passwd"] {
            let refused = callback_url(&headers(&[bad]), true).unwrap_err();
            assert!(refused.starts_with("X-Callback-Url:"), "{bad}: {refused}");
        }
        assert!(callback_url(&headers(&["http://a/", "http://b/"]), false).is_err());
        assert!(callback_url(&headers(&[&format!("http://a/{}", "x".repeat(MAX_CALLBACK_URL))]), false).is_err());
        // The federation's own addresses, and the cloud's metadata service, only by leave.
        for internal in
            ["http://127.0.0.1:8000/v1/functions", "http://169.254.169.254/latest", "http://[::1]/", "http://10.0.0.5/"]
        {
            assert!(callback_url(&headers(&[internal]), false).is_err(), "{internal}");
            assert!(callback_url(&headers(&[internal]), true).is_ok(), "{internal}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit(None), Ok(100));
        assert_eq!(limit(Some("limit=5")), Ok(5));
        assert!(limit(Some("limit=0")).is_err());
        assert!(limit(Some("limit=1001")).is_err());
        assert!(limit(Some("offset=1")).is_err());
    }
}
