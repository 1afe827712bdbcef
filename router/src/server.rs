//! The router's HTTP server: HTTP/1.1 and h2c on one port, requests dispatched by path to
//! the tenant API or the invocation proxy after authentication, graceful shutdown.

use std::time::Instant;

use baton_service::http::Body;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth;
use crate::context::Router;
use crate::error::ApiError;
use crate::proxy;

impl Router {
    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let (route, response) = self.route(&path, req).await;
        crate::metrics::request(route, response.status().as_u16(), started.elapsed());
        response
    }

    async fn route(&self, path: &str, req: Request<Incoming>) -> (&'static str, Response<Body>) {
        let route = if path.starts_with("/function/") {
            "invoke"
        } else if path.starts_with("/async-function/") {
            "async"
        } else if path.starts_with("/v1/calls/") {
            "calls"
        } else if path == "/v1/functions" || path.starts_with("/v1/functions/") {
            "functions"
        } else if path == "/v1/registries" || path.starts_with("/v1/registries/") {
            "registries"
        } else {
            let message = "the router serves /v1/functions[/{name}], /v1/registries[/{registry}], /v1/calls/{id}, \
                 /function/{name}[/path] and /async-function/{name}[/path]";
            return ("other", ApiError::NoRoute(message).response());
        };
        let tenant = match auth::tenant(req.headers(), &self.view) {
            Ok(tenant) => tenant,
            Err(e) => return (route, ApiError::from(e).response()),
        };
        if route == "invoke" || route == "async" {
            // `/async-function/{name}[/rest]` names its function as `/function/…` does.
            let function_path = match path.strip_prefix("/async-function/") {
                Some(after) => format!("/function/{after}"),
                None => path.to_string(),
            };
            let Some((name, rest)) = baton_service::http::function_path(&function_path) else {
                return (
                    route,
                    ApiError::NoRoute("invocations go to /function/{name} or /async-function/{name}").response(),
                );
            };
            let started = Instant::now();
            let call = proxy::Call { id: self.call_ids.next(), span: self.spans.server(route, req.headers()) };
            let mut response = if route == "async" {
                crate::calls::api::accept(self, &tenant, name, rest, req, &call).await
            } else {
                proxy::invoke(self, &tenant, name, rest, req, &call).await
            };
            let status = response.status().as_u16();
            call.span.status(status, "the call failed in baton");
            crate::metrics::tenant_call(&tenant, name, status, started.elapsed());
            // Every answer names the call, the router's own refusals too.
            response.headers_mut().insert(baton_model::headers::CALL_ID, call.id);
            return (route, response);
        }
        if route == "calls" {
            let id = path.trim_start_matches("/v1/calls/");
            return (route, crate::calls::api::get(self, &tenant, req.method(), id).await);
        }
        if let Some((name, redrive)) = dead_letters_path(path) {
            let query = req.uri().query().map(str::to_string);
            let answer = crate::calls::api::dead_letters(self, &tenant, req.method(), name, redrive, query.as_deref());
            return (route, answer.await);
        }
        let prefix = if route == "registries" { "/v1/registries/" } else { "/v1/functions/" };
        let name = path.strip_prefix(prefix).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.contains('/')) {
            return (route, ApiError::NoRoute("no such resource").response());
        }
        let (parts, body) = req.into_parts();
        // Only writes take a key; a read or another method ignores it.
        let writes = matches!(parts.method, Method::POST | Method::PUT | Method::DELETE);
        let key = match crate::idempotency::key(&parts.headers) {
            Ok(key) => key.filter(|_| writes),
            Err(_) if !writes => None,
            Err(bad) => return (route, ApiError::from(bad).response()),
        };
        if route == "registries" {
            return (route, crate::registries::registries(self, tenant, parts.method, name, key, body).await);
        }
        (route, crate::api::functions(self, tenant, parts.method, name, key, body).await)
    }
}

/// `/v1/functions/{name}/dead-letters` (`false`) or `…/dead-letters/redrive` (`true`).
fn dead_letters_path(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/v1/functions/")?;
    let (name, tail) = rest.split_once('/')?;
    match tail {
        "dead-letters" => Some((name, false)),
        "dead-letters/redrive" => Some((name, true)),
        _ => None,
    }
}
