//! `/v1/registries` (GET: the registries the tenant has credentials for) and
//! `/v1/registries/{registry}` (PUT `{"username": …, "password": …}`, DELETE): a tenant's
//! credentials for private registries, used to resolve its images here and to pull them on
//! the workers. They are never answered back: no read returns a password, and the router
//! logs none.

use baton_proto::shard::{ListRegistriesRequest, PutRegistryCredentialsRequest, RegistryRef};
use baton_service::http::{Body, full, read_body};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::context::Router;
use crate::error::ApiError;
use crate::idempotency::Key;

/// Largest credentials body accepted, bytes (a user name and a token of up to 16 KiB each).
const MAX_BODY: usize = 40 * 1024;

/// Handles `/v1/registries[/{registry}]` for `tenant`.
pub async fn registries(
    router: &Router,
    tenant: String,
    method: Method,
    registry: Option<&str>,
    key: Option<Key>,
    body: Incoming,
) -> Response<Body> {
    let manager = &router.manager;
    let answer = match (method, registry) {
        (Method::GET, None) => {
            let request = ListRegistriesRequest { tenant, min_epoch: router.read_epoch() };
            let listed = manager.call(request, |mut c, r| async move { c.list_registries(r).await }).await;
            listed.map(|list| {
                router.saw(list.epoch);
                let body = json!({ "registries": list.registries });
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .expect("static parts are valid")
            })
        }
        (Method::PUT, Some(registry)) => {
            let bytes = match read_body(body, MAX_BODY, router.config.body_read_timeout).await {
                Ok(bytes) => bytes,
                Err(e) => return ApiError::body(e, "request body").response(),
            };
            let parsed: Value = match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                Err(_) => {
                    return ApiError::InvalidSpec("body: must be JSON: {\"username\": …, \"password\": …}".into())
                        .response();
                }
            };
            let field = |name: &str| parsed.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
            let id = key.map(|k| k.request_id(&tenant, &Method::PUT, &format!("/v1/registries/{registry}"), &bytes));
            let request = PutRegistryCredentialsRequest {
                tenant,
                registry: registry.to_string(),
                username: field("username"),
                password: field("password"),
            };
            let write = |mut c: baton_proto::shard::shard_manager_client::ShardManagerClient<_>, r| async move {
                c.put_registry_credentials(r).await
            };
            let done = match id {
                Some(id) => manager.call_as(&id, request, write).await,
                None => manager.call(request, write).await,
            };
            done.map(|ack| {
                router.saw(ack.epoch);
                no_content()
            })
        }
        (Method::DELETE, Some(registry)) => {
            let request = RegistryRef { tenant, registry: registry.to_string(), min_epoch: 0 };
            let done = manager.call(request, |mut c, r| async move { c.delete_registry_credentials(r).await }).await;
            done.map(|ack| {
                router.saw(ack.epoch);
                no_content()
            })
        }
        (_, None) => return ApiError::MethodNotAllowed("GET").response(),
        (_, Some(_)) => return ApiError::MethodNotAllowed("PUT, DELETE").response(),
    };
    answer.unwrap_or_else(|status| ApiError::from(status).response())
}

fn no_content() -> Response<Body> {
    Response::builder().status(StatusCode::NO_CONTENT).body(full(Bytes::new())).expect("valid")
}

/// The tenant's credentials for the registry `reference` pulls from (anonymous when it has
/// none).
pub async fn credentials_for(
    router: &Router,
    tenant: &str,
    reference: &str,
) -> Result<baton_image::Credentials, tonic::Status> {
    let request = RegistryRef {
        tenant: tenant.to_string(),
        registry: baton_model::image::registry_of(reference),
        min_epoch: router.read_epoch(),
    };
    let got = router.manager.call(request, |mut c, r| async move { c.get_registry_credentials(r).await }).await?;
    Ok(match got.found {
        true => baton_image::Credentials::Basic { username: got.username, password: got.password },
        false => baton_image::Credentials::Anonymous,
    })
}
