//! Every error the router answers has one status, one code and the same JSON body, through
//! a federation (in the test's process): the table in docs/router.md, row by row.

use baton_proto::shard::PutTenantRequest;
use baton_testkit::{FederationApi, echo_spec, inproc};
use serde_json::{Value, json};

/// Status, error code and message of an answer; the body must be exactly
/// `{"error": {"code", "message"}}`.
async fn refusal(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    let error = body["error"].as_object().unwrap_or_else(|| panic!("no error object: {body}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert_eq!(error.len(), 2, "{body}");
    (status, error["code"].as_str().unwrap().into(), error["message"].as_str().unwrap().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_status_and_code_and_one_body() {
    let mut federation = inproc::Builder::new(27200).start().await;
    // A tenant allowed one function.
    let mut sm = federation.client().await;
    sm.put_tenant(PutTenantRequest { name: "small".into(), default_region: "local".into(), max_functions: 1 })
        .await
        .unwrap();
    let key = federation.key("small").await;
    let r = federation.start_router(&key).await;
    let router = &federation.routers[r];
    let client = reqwest::Client::new();
    let functions = router.url("/v1/functions");

    let (status, code, _) = refusal(client.get(&functions)).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let (status, code, _) = refusal(client.get(&functions).bearer_auth("bk_not-a-key")).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let (status, code, _) = refusal(client.get(router.url("/elsewhere")).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (404, "no_route"));
    let (status, code, _) = refusal(client.get(router.url("/v1/functions/nothing")).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = refusal(client.post(router.url("/function/nothing")).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (404, "function_not_found"));
    let (status, code, message) =
        refusal(client.put(router.url("/v1/functions/f")).bearer_auth(&key).json(&json!({"executable": "x"}))).await;
    assert_eq!((status, code.as_str()), (400, "invalid_spec"));
    assert!(message.starts_with("executable"), "{message}");
    let (status, code, _) = refusal(client.patch(router.url("/v1/functions/f")).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let huge = vec![b' '; 100 * 1024];
    let (status, code, _) = refusal(client.put(router.url("/v1/functions/f")).bearer_auth(&key).body(huge)).await;
    assert_eq!((status, code.as_str()), (413, "body_too_large"));
    let bad_key = client.put(router.url("/v1/functions/f")).bearer_auth(&key).header("idempotency-key", "has space");
    let (status, code, _) = refusal(bad_key.json(&echo_spec("f", json!({})))).await;
    assert_eq!((status, code.as_str()), (400, "invalid_idempotency_key"));

    // Over the tenant's limit of one function.
    let first = client.post(&functions).bearer_auth(&key).json(&echo_spec("one", json!({}))).send().await.unwrap();
    assert_eq!(first.status(), 201);
    let (status, code, message) =
        refusal(client.post(&functions).bearer_auth(&key).json(&echo_spec("two", json!({})))).await;
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"));
    assert!(message.contains("over its limit of 1"), "{message}");

    // No shard manager to ask: 503.
    federation.stop_replica(0).await;
    let (status, code, _) = refusal(client.get(&functions).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    federation.shutdown().await;
}
