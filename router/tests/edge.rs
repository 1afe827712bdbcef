//! The HTTP edge of router and data plane, through a federation in the test's process: a
//! client's `X-Baton-*` headers never reach a function and a client's `X-Call-Id` is not
//! taken as the call's; slow headers, idle keep-alive connections and slow bodies are cut
//! off at the configured timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use baton_testkit::{FederationApi, inproc, raw_http as raw};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_millis(300);

/// The edge of a server at `addr` (router or data plane) calling `path` with `key`.
async fn cuts_off_slow_clients(addr: SocketAddr, what: &str, path: &str, key: &str) {
    // Headers that never end: closed once the header timeout passes, not before.
    let (_, took) = raw(addr, &format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n")).await;
    assert!(
        took >= TIMEOUT - Duration::from_millis(50) && took < TIMEOUT * 4,
        "{what}: slow headers cut after {took:?}"
    );
    // A keep-alive connection left idle after an answer: closed as well.
    let request = format!("GET /nothing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    let (answer, took) = raw(addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{what}: {answer}");
    assert!(took < TIMEOUT * 4, "{what}: an idle connection closed after {took:?}");
    // A body that stops short: 408 once the body timeout passes.
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100\r\n\r\nonly ten.."
    );
    let (answer, took) = raw(addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"), "{what}: {answer}");
    assert!(took < TIMEOUT * 4, "{what}: a slow body answered after {took:?}");
}

/// A header line ended by a bare LF (two headers to hyper, one to a CRLF-only proxy) is
/// refused before anything reads it, and the connection closed; so is a second request,
/// after a body, that hides one.
async fn refuses_bare_lf(addr: SocketAddr, what: &str, path: &str, key: &str) {
    let auth = format!("Host: x\r\nAuthorization: Bearer {key}");
    for request in [
        format!("POST {path} HTTP/1.1\r\n{auth}\r\nX-A: 1\nX-Baton-Owner: evil\r\nContent-Length: 0\r\n\r\n"),
        format!(
            "POST {path} HTTP/1.1\r\n{auth}\r\nContent-Length: 2\r\n\r\nok\
             POST {path} HTTP/1.1\r\n{auth}\nX-A: 1\r\n\r\n"
        ),
    ] {
        let (answer, took) = raw(addr, &request).await;
        assert!(answer.contains("HTTP/1.1 400") && answer.contains("bad_framing"), "{what}: {answer}");
        assert!(took < TIMEOUT, "{what}: the connection stayed open {took:?}");
    }
    // The same request with CRLF is served.
    let request = format!("POST {path} HTTP/1.1\r\n{auth}\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
    let (answer, _) = raw(addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_never_reach_a_function_and_slow_clients_are_cut_off() {
    let timeouts = json!({"header_read_timeout": "300ms", "body_read_timeout": "300ms"});
    let mut federation = inproc::Builder::new(16000).cell(json!({"data_plane": timeouts.clone()})).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router_with(&key, timeouts).await;
    federation.deploy_echoes(r, &key, 1, json!({})).await;
    let client = reqwest::Client::new();

    // Through the router, and straight to the data plane (its own edge).
    let data_plane = federation.cells[0].cell.http_addr.expect("role all");
    for (what, url) in [
        ("router", federation.router_url(r, "/function/f0")),
        ("data plane", format!("http://{data_plane}/function/acme.f0")),
    ] {
        let answer = client
            .post(&url)
            .bearer_auth(&key)
            .header("x-baton-owner", "evil")
            .header("x-baton-tenant", "other")
            .header("x-baton-request-id", "forged")
            .header("x-baton-generation", "99")
            .header("x-call-id", "mine")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{what}");
        assert_ne!(answer.headers()["x-call-id"], "mine", "{what}: the call ID is baton's own");
        let echoed: Value = answer.json().await.unwrap();
        let seen = echoed["headers"].as_object().unwrap();
        let forged: Vec<&String> = seen.keys().filter(|k| k.starts_with("x-baton-")).collect();
        assert!(forged.is_empty(), "{what}: the function saw {forged:?}");
        assert_eq!(seen.get("x-client-call-id"), Some(&json!("mine")), "{what}: {seen:?}");
    }

    let router = federation.routers[r].addr;
    cuts_off_slow_clients(router, "router", "/function/f0", &key).await;
    cuts_off_slow_clients(data_plane, "data plane", "/function/acme.f0", &key).await;
    refuses_bare_lf(router, "router", "/function/f0", &key).await;
    refuses_bare_lf(data_plane, "data plane", "/function/acme.f0", &key).await;
    // A slow spec is cut off the same way.
    let request = format!(
        "PUT /v1/functions/f1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n{{"
    );
    let (answer, _) = raw(router, &request).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    federation.shutdown().await;
}
