//! Every error the router answers has one status, one code and the same JSON body, through
//! a federation (in the test's process): the table in docs/router.md, row by row (all but
//! `500 internal`, which no shard manager in working order answers; the unit test of
//! `router/src/error.rs` covers its classification).

use baton_proto::shard::{MoveFunctionRequest, PutTenantRequest, SetCellStateRequest};
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

/// Status and error code of the answer to a raw HTTP/1.1 request `head` (method line and
/// headers, then whatever body), sent with `key` and `Connection: close`.
async fn raw_refusal(addr: std::net::SocketAddr, key: &str, request: &str) -> (u16, String) {
    let (line, rest) = request.split_once("\r\n").unwrap();
    let request = format!("{line}\r\nHost: router\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n{rest}");
    let (answer, _) = baton_testkit::raw_http(addr, &request).await;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    let body: Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_status_and_code_and_one_body() {
    let mut federation = inproc::Builder::new(15000).cells(2).start().await;
    // A tenant allowed one function, of at most 150 sandboxes and 1 reserved core.
    let mut sm = federation.client().await;
    sm.put_tenant(PutTenantRequest {
        name: "small".into(),
        default_region: "local".into(),
        max_functions: 1,
        executables: true,
        max_sandboxes: 150,
        max_reserved_cpu_millis: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let key = federation.key("small").await;
    // A router that waits for a new owner of an unreachable cell only briefly.
    let r = federation.start_router_with(&key, json!({"owner_wait": "300ms"})).await;
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

    // A body that cannot be read: chunked encoding that is not.
    let (status, code) =
        raw_refusal(router.addr, &key, "PUT /v1/functions/f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .await;
    assert_eq!((status, code.as_str()), (400, "bad_body"));

    // No active cell to place a function on (both drain): 409 conflict.
    let set = |cell: &str, state: &str| SetCellStateRequest { cell: cell.into(), state: state.into() };
    for cell in ["cell-1", "cell-2"] {
        sm.set_cell_state(set(cell, "draining")).await.unwrap();
    }
    let (status, code, message) =
        refusal(client.post(&functions).bearer_auth(&key).json(&echo_spec("one", json!({})))).await;
    assert_eq!((status, code.as_str()), (409, "conflict"), "{message}");
    for cell in ["cell-1", "cell-2"] {
        sm.set_cell_state(set(cell, "active")).await.unwrap();
    }

    // Past the tenant's sandboxes and reserved capacity, and nothing stored.
    let (status, code, message) = refusal(
        client.post(&functions).bearer_auth(&key).json(&echo_spec("wide", json!({"scaling": {"max_scale": 151}}))),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"), "{message}");
    assert!(message.contains("151 sandboxes") && message.contains("limit of 150"), "{message}");
    let reserved = json!({"scaling": {"min_scale": 3}, "resources": {"cpu_millis": 500, "memory_mib": 64}});
    let (status, code, message) =
        refusal(client.post(&functions).bearer_auth(&key).json(&echo_spec("held", reserved))).await;
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"), "{message}");
    assert!(message.contains("1500 reserved CPU") && message.contains("limit of 1000"), "{message}");
    // A tenant the operator did not let run host executables.
    sm.put_tenant(PutTenantRequest { name: "imagesonly".into(), default_region: "local".into(), ..Default::default() })
        .await
        .unwrap();
    let images_only = federation.key("imagesonly").await;
    federation.wait_router_accepts(r, &images_only).await;
    let (status, code, message) =
        refusal(client.post(&functions).bearer_auth(&images_only).json(&echo_spec("sh", json!({})))).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    assert!(message.starts_with("executable:"), "{message}");
    let listed: Value = client.get(&functions).bearer_auth(&images_only).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["functions"], json!([]), "nothing stored");

    // Over the tenant's limit of one function.
    let first = client.post(&functions).bearer_auth(&key).json(&echo_spec("one", json!({}))).send().await.unwrap();
    assert_eq!(first.status(), 201);
    let owner = first.json::<Value>().await.unwrap()["cell"].as_str().unwrap().to_string();
    let (status, code, message) =
        refusal(client.post(&functions).bearer_auth(&key).json(&echo_spec("two", json!({})))).await;
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"));
    assert!(message.contains("over its limit of 1"), "{message}");

    // The shard manager refuses a move to a cell that is not active as it refuses a
    // placement: FAILED_PRECONDITION, which the router would answer 409.
    let other = if owner == "cell-1" { "cell-2" } else { "cell-1" };
    sm.set_cell_state(set(other, "draining")).await.unwrap();
    let moved =
        sm.move_function(MoveFunctionRequest { tenant: "small".into(), name: "one".into(), cell: other.into() });
    let refused = moved.await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "a move to a draining cell: {refused:?}");

    // The owning cell is gone and no new owner comes within owner_wait: 502.
    let owner_index = federation.cells.iter().position(|c| c.id == owner).unwrap();
    federation.stop_cell(owner_index).await;
    let router = &federation.routers[r];
    let (status, code, _) = refusal(client.post(router.url("/function/one")).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (502, "cell_unreachable"));

    // No shard manager to ask: 503.
    federation.stop_replica(0).await;
    let (status, code, _) = refusal(client.get(&functions).bearer_auth(&key)).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    federation.shutdown().await;
}
