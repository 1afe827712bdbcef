//! Every log line about a call names it: the call's ID (`X-Call-Id`) is the router's, the
//! cell uses the same, and each line the router's proxy or the data plane writes about a
//! call carries it as `call_id`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use baton_testkit::{FederationApi, inproc};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_about_a_call_names_its_call_id() {
    let lines = Lines::default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("baton_router=debug,baton_cell=debug")
        .with_writer(lines.clone())
        .init();
    // The data plane takes smaller bodies than the router: a call the router passes on is
    // refused in the cell, which logs it.
    let mut federation = inproc::Builder::new(9100).cell(json!({"data_plane": {"max_body_bytes": 16}})).start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    federation.deploy_echoes(r, &key, 1, json!({})).await;
    let client = reqwest::Client::new();
    let answer = client
        .post(federation.router_url(r, "/function/f0"))
        .bearer_auth(&key)
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let call_id = answer.headers()["x-call-id"].to_str().unwrap().to_string();
    let ok = client.post(federation.router_url(r, "/function/f0")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let other = ok.headers()["x-call-id"].to_str().unwrap().to_string();
    assert_ne!(call_id, other, "each call has its own ID");
    federation.shutdown().await;

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let about_calls: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let target = e["target"].as_str().unwrap_or_default();
            target.starts_with("baton_router::proxy") || target.starts_with("baton_cell::data_plane::ingress")
        })
        .collect();
    assert!(!about_calls.is_empty(), "the refusal is logged: {text}");
    for event in &about_calls {
        assert!(event["fields"]["call_id"].is_string(), "names its call: {event}");
    }
    assert!(
        about_calls.iter().any(|e| e["fields"]["call_id"] == call_id.as_str()),
        "the refused call's line names the ID its caller got ({call_id}): {about_calls:#?}"
    );
}
