//! The sample functions as the worker runs them: a real process serving on `$PORT`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Function {
    child: Child,
    base: String,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(exe: &str) -> Function {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(exe).env("PORT", port.to_string()).stdin(Stdio::null()).spawn().unwrap();
    // Owned at once: a panic while it starts still kills it.
    let function = Function { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = format!("{}/healthz", function.base);
    while reqwest::get(&health).await.map(|r| r.status().is_success()).ok() != Some(true) {
        assert!(Instant::now() < deadline, "{exe} never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    function
}

#[tokio::test]
async fn echo_returns_the_request() {
    let f = start(env!("CARGO_BIN_EXE_baton-fn-echo")).await;
    let answer = reqwest::Client::new()
        .put(format!("{}/some/path?a=1&b=two", f.base))
        .header("x-call-id", "c-1")
        .header("authorization", "secret")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let reply: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(reply["method"], "PUT");
    assert_eq!(reply["path"], "/some/path");
    assert_eq!(reply["query"], "a=1&b=two");
    assert_eq!(reply["body"], "hello");
    assert_eq!(reply["headers"]["x-call-id"], "c-1");
    assert_eq!(reply["headers"]["content-type"], "text/plain");
    assert!(reply["headers"].get("authorization").is_none(), "only selected headers are echoed");
}

#[tokio::test]
async fn spin_runs_for_the_requested_time_by_spin_or_sleep() {
    let f = start(env!("CARGO_BIN_EXE_baton-fn-spin")).await;
    let client = reqwest::Client::new();
    for (url, header) in [
        (format!("{}/?ms=60", f.base), None),
        (format!("{}/?ms=60&mode=sleep", f.base), None),
        (format!("{}/", f.base), Some("60")),
    ] {
        let mut req = client.get(&url);
        if let Some(ms) = header {
            req = req.header("x-duration-ms", ms).header("x-duration-mode", "sleep");
        }
        let started = Instant::now();
        let reply = req.send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        let took: u64 = reply.headers()["x-execution-time-us"].to_str().unwrap().parse().unwrap();
        assert!((60_000..1_000_000).contains(&took), "{url}: {took}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["requested_ms"], 60);
    }
}

#[tokio::test]
async fn spin_refuses_bad_parameters() {
    let f = start(env!("CARGO_BIN_EXE_baton-fn-spin")).await;
    for query in ["ms=abc", "ms=-1", "ms=999999999", "mode=dance", "alloc_mb=x", "fail_percent=101", "fail_percent=x"] {
        let reply = reqwest::get(format!("{}/?{query}", f.base)).await.unwrap();
        assert_eq!(reply.status(), 400, "{query}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
}

#[tokio::test]
async fn spin_fails_the_share_of_calls_it_is_asked_to() {
    let f = start(env!("CARGO_BIN_EXE_baton-fn-spin")).await;
    let client = reqwest::Client::new();
    let mut failed = [0u32; 3];
    for (i, percent) in [0, 30, 100].into_iter().enumerate() {
        for _ in 0..400 {
            let reply = client.get(format!("{}/?fail_percent={percent}", f.base)).send().await.unwrap();
            match reply.status().as_u16() {
                200 => {}
                503 => failed[i] += 1,
                other => panic!("fail_percent={percent}: {other}"),
            }
        }
    }
    assert_eq!(failed[0], 0);
    assert!((80..=160).contains(&failed[1]), "30 % of 400 is 120: {}", failed[1]);
    assert_eq!(failed[2], 400);
}

#[test]
fn refuses_to_start_without_a_port() {
    let out = Command::new(env!("CARGO_BIN_EXE_baton-fn-echo")).env_remove("PORT").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT is not set"));
}
