//! The tenant API: `/v1/functions` (GET list, POST create or update) and
//! `/v1/functions/{name}` (GET, PUT, DELETE), for the tenant the API key names. A POST of
//! a JSON array registers up to 1,000 functions in one commit, all or none. Specs are
//! the cell's function spec (see `docs/cell.md`) plus an optional `home_region`; the shard
//! manager validates them, so every refusal names the field. Another tenant's function is
//! never visible: IDs are namespaced by the caller's tenant. Writes may carry an
//! `Idempotency-Key` (see [`crate::idempotency`]).

use std::future::Future;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{FunctionInfo, FunctionRef, ListFunctionsRequest, PutFunctionRequest, PutFunctionsRequest};
use baton_service::http::{Body, full, read_body};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tonic::Status;
use tonic::transport::Channel;

use crate::context::Router;
use crate::error::ApiError;
use crate::idempotency::Key;

/// Handles `/v1/functions[/{name}]` for `tenant`.
pub async fn functions(
    router: &Router,
    tenant: String,
    method: Method,
    name: Option<&str>,
    key: Option<Key>,
    body: Incoming,
) -> Response<Body> {
    let manager = &router.manager;
    let answer = match (method, name) {
        (Method::GET, None) => {
            let request = ListFunctionsRequest { tenant, cell: String::new(), min_epoch: router.read_epoch() };
            let listed = manager.call(request, |mut c, r| async move { c.list_functions(r).await }).await;
            listed.map(|list| {
                router.saw(list.epoch);
                let functions: Vec<Value> = list.functions.iter().map(describe).collect();
                json_response(StatusCode::OK, &json!({ "functions": functions }))
            })
        }
        (Method::POST, None) => return put(router, tenant, None, key, body).await,
        (Method::PUT, Some(name)) => return put(router, tenant, Some(name.to_string()), key, body).await,
        (Method::GET, Some(name)) => {
            let request = FunctionRef { tenant, name: name.into(), min_epoch: router.read_epoch() };
            manager.call(request, |mut c, r| async move { c.get_function(r).await }).await.map(|f| {
                router.saw(f.epoch);
                json_response(StatusCode::OK, &describe(&f))
            })
        }
        (Method::DELETE, Some(name)) => {
            let id = key.map(|k| k.request_id(&tenant, &Method::DELETE, &format!("/v1/functions/{name}"), &[]));
            let request = FunctionRef { tenant, name: name.into(), min_epoch: router.read_epoch() };
            write(router, id, request, |mut c, r| async move { c.delete_function(r).await })
                .await
                .map(|ack| router.saw(ack.epoch))
                .map(|()| Response::builder().status(StatusCode::NO_CONTENT).body(full(Bytes::new())).expect("valid"))
        }
        (_, None) => return not_allowed("GET, POST"),
        (_, Some(_)) => return not_allowed("GET, PUT, DELETE"),
    };
    answer.unwrap_or_else(|status| ApiError::from(status).response())
}

/// Sends a write to the shard manager: with the request ID made from the tenant's
/// idempotency key when it gave one, else a fresh one (the router's own retries).
async fn write<R, T, F, Fut>(router: &Router, id: Option<String>, request: R, call: F) -> Result<T, Status>
where
    R: Clone,
    F: Fn(ShardManagerClient<Channel>, tonic::Request<R>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    match id {
        Some(id) => router.manager.call_as(&id, request, call).await,
        None => router.manager.call(request, call).await,
    }
}

async fn put(
    router: &Router,
    tenant: String,
    path_name: Option<String>,
    key: Option<Key>,
    body: Incoming,
) -> Response<Body> {
    // A POST may carry a batch (a JSON array), so it may be larger than one spec.
    let max = if path_name.is_none() { router.config.max_batch_bytes } else { router.config.max_spec_bytes };
    let bytes = match read_body(body, max, router.config.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(e) => return ApiError::body(e, "spec").response(),
    };
    let id = key.map(|k| match &path_name {
        None => k.request_id(&tenant, &Method::POST, "/v1/functions", &bytes),
        Some(name) => k.request_id(&tenant, &Method::PUT, &format!("/v1/functions/{name}"), &bytes),
    });
    let bad = |message: &str| ApiError::InvalidSpec(message.to_string()).response();
    // Every spec, alone or in a batch, is held to the one spec limit.
    let max_spec = router.config.max_spec_bytes;
    let too_large = || ApiError::TooLarge { what: "spec", max: max_spec }.response();
    let request = match serde_json::from_slice(&bytes) {
        Ok(Value::Array(specs)) if path_name.is_none() => {
            let mut functions = Vec::with_capacity(specs.len());
            for (i, spec) in specs.into_iter().enumerate() {
                match registration(&tenant, None, spec) {
                    Ok(request) if request.spec_json.len() > max_spec => return too_large(),
                    Ok(request) => functions.push(request),
                    Err(message) => return bad(&format!("functions[{i}].{message}")),
                }
            }
            let resolved = futures::future::join_all(functions.iter_mut().map(|f| resolve_image(router, f))).await;
            if let Some((i, e)) = resolved.into_iter().enumerate().find_map(|(i, r)| r.err().map(|e| (i, e))) {
                return match e {
                    ApiError::Image(message) => ApiError::Image(format!("functions[{i}].{message}")),
                    other => other,
                }
                .response();
            }
            return put_batch(router, functions, id).await;
        }
        Ok(spec @ Value::Object(_)) => match registration(&tenant, path_name, spec) {
            Ok(request) if request.spec_json.len() > max_spec => return too_large(),
            Ok(mut request) => match resolve_image(router, &mut request).await {
                Ok(()) => request,
                Err(e) => return e.response(),
            },
            Err(message) => return bad(&message),
        },
        Ok(_) if path_name.is_none() => return bad("body: must be a JSON object (a spec) or an array of specs"),
        Ok(_) => return bad("body: must be a JSON object"),
        Err(e) => return bad(&format!("body: not JSON: {e}")),
    };
    let name = request.name.clone();
    let request = PutFunctionRequest { min_epoch: router.read_epoch(), ..request };
    let answer = write(router, id, request, |mut c, r| async move { c.put_function(r).await }).await;
    match answer {
        Ok(put) => {
            router.saw(put.epoch);
            let status = if put.created { StatusCode::CREATED } else { StatusCode::OK };
            let body = json!({ "name": name, "cell": put.cell, "generation": put.generation, "epoch": put.epoch });
            json_response(status, &body)
        }
        Err(status) => ApiError::from(status).response(),
    }
}

/// A registration from one spec: `home_region` taken out of it, the name from the path
/// or the spec. Refusals name the field.
fn registration(tenant: &str, path_name: Option<String>, mut spec: Value) -> Result<PutFunctionRequest, String> {
    let Some(object) = spec.as_object_mut() else { return Err("body: must be a JSON object".into()) };
    let home_region = match object.remove("home_region") {
        None => String::new(),
        Some(Value::String(region)) => region,
        Some(_) => return Err("home_region: must be a string".into()),
    };
    let name = match (path_name, object.get("name")) {
        (Some(name), _) => name,
        (None, Some(Value::String(name))) => name.clone(),
        (None, _) => return Err("name: is required".into()),
    };
    Ok(PutFunctionRequest { tenant: tenant.to_string(), name, spec_json: spec.to_string(), home_region, min_epoch: 0 })
}

/// Resolves the image a registration names (if any) to the digest its sandboxes will run,
/// writing it into the spec as `image_digest`. A reference that does not resolve is
/// refused saying why (`image: …`), before anything is stored.
async fn resolve_image(router: &Router, request: &mut PutFunctionRequest) -> Result<(), ApiError> {
    let Ok(Value::Object(mut spec)) = serde_json::from_str::<Value>(&request.spec_json) else { return Ok(()) };
    let reference = match spec.get("image") {
        Some(Value::String(reference)) if !reference.is_empty() => reference.clone(),
        // Not an image, or not a string: the spec's own validation says what is wrong.
        _ => return Ok(()),
    };
    baton_model::image::check_reference(&reference).map_err(|e| ApiError::Image(e.to_string()))?;
    let tenant = request.tenant.clone();
    let credentials = crate::registries::credentials_for(router, &tenant, &reference).await?;
    let resolved = router.images.resolve(&reference, &credentials).await;
    crate::metrics::image_resolution(resolved.as_ref().map_or_else(baton_image::ResolveError::label, |_| "ok"));
    let resolved = resolved.map_err(|e| ApiError::Image(format!("image: {e}")))?;
    spec.insert("image_digest".into(), Value::String(resolved.digest));
    request.spec_json = Value::Object(spec).to_string();
    Ok(())
}

async fn put_batch(router: &Router, functions: Vec<PutFunctionRequest>, id: Option<String>) -> Response<Body> {
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    let request = PutFunctionsRequest { functions, min_epoch: router.read_epoch() };
    let answer = write(router, id, request, |mut c, r| async move { c.put_functions(r).await }).await;
    match answer {
        Ok(put) => {
            router.saw(put.functions.iter().map(|p| p.epoch).max().unwrap_or(0));
            let functions: Vec<Value> = names
                .iter()
                .zip(put.functions)
                .map(
                    |(name, p)| json!({"name": name, "cell": p.cell, "generation": p.generation, "created": p.created}),
                )
                .collect();
            json_response(StatusCode::OK, &json!({ "functions": functions }))
        }
        Err(status) => ApiError::from(status).response(),
    }
}

/// A function as the API shows it (its cell-internal name is not shown).
fn describe(f: &FunctionInfo) -> Value {
    let spec: Value = serde_json::from_str(&f.spec_json).unwrap_or(Value::Null);
    json!({
        "name": f.name,
        "home_region": f.home_region,
        "cell": f.cell,
        "generation": f.generation,
        "spec": spec,
        // Why its sandboxes could not start (the owning cell's last creation failure), or null.
        "last_failure": (!f.last_failure.is_empty()).then_some(&f.last_failure),
    })
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .expect("static parts are valid")
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    ApiError::MethodNotAllowed(allow).response()
}
