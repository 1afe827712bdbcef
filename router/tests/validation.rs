//! Hostile and careless specs are refused at the door, through a federation (in the test's
//! process): each with a 400 that names the field (or a 413), on every write path (PUT,
//! POST, a batch's each), and nothing is stored.

use baton_testkit::{FederationApi, inproc};
use serde_json::{Value, json};

/// A spec running `/opt/fns/f` with `extra` merged in.
fn spec(name: &str, extra: Value) -> Value {
    let mut spec = json!({"name": name, "executable": "/opt/fns/f"});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// `body` (function `f`) registered each way: PUT, POST, and second in a batch after a
/// good spec.
fn every_path(
    client: &reqwest::Client,
    router: &str,
    key: &str,
    body: Value,
) -> [(&'static str, reqwest::RequestBuilder); 3] {
    let put = client.put(format!("{router}/v1/functions/f")).bearer_auth(key).json(&body);
    let post = client.post(format!("{router}/v1/functions")).bearer_auth(key).json(&body);
    let batch =
        client.post(format!("{router}/v1/functions")).bearer_auth(key).json(&json!([spec("ok", json!({})), body]));
    [("PUT", put), ("POST", post), ("batch", batch)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_naming_the_field_on_every_write_path_and_nothing_is_stored() {
    let mut federation = inproc::Builder::new(15800).emulated("10ms").start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    let client = reqwest::Client::new();
    let functions = federation.router_url(r, "/v1/functions");

    let cases = [
        (json!({"executable": "/bin/../etc/shadow"}), "executable"),
        (json!({"env": {"LD_PRELOAD": "/tmp/evil.so"}}), "env.LD_PRELOAD"),
        (json!({"env": {"LD_AUDIT": "/tmp/evil.so"}}), "env.LD_AUDIT"),
        (json!({"env": {"GLIBC_TUNABLES": "glibc.malloc.check=3"}}), "env.GLIBC_TUNABLES"),
        (json!({"env": {"PORT": "80"}}), "env.PORT"),
        (json!({"env": {"BATON_URL": "http://elsewhere"}}), "env.BATON_URL"),
        (json!({"env": {"MODE": "a\u{0}b"}}), "env.MODE"),
        (json!({"args": ["a\u{0}b"]}), "args[0]"),
        (json!({"timeout": "1ns"}), "timeout"),
        (json!({"scaling": {"stable_window": "1000000000y"}}), "scaling.stable_window"),
        (json!({"scaling": {"scale_to_zero_grace": "100y"}}), "scaling.scale_to_zero_grace"),
        (json!({"home_region": "nowhere"}), "home_region"),
    ];
    for (extra, field) in cases {
        for (how, request) in every_path(&client, &federation.router_url(r, ""), &key, spec("f", extra.clone())) {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 400, "{how} {extra}");
            let error: Value = answer.json().await.unwrap();
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("{field}:")), "{how} {extra}: {message}");
        }
    }

    // One spec limit on every path: a spec just over it, alone or in a small batch.
    let huge = spec("f", json!({"args": ["a".repeat(64 * 1024)]}));
    for (how, request) in every_path(&client, &federation.router_url(r, ""), &key, huge) {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 413, "{how}");
    }

    // Nothing of the above was stored, not even the batches' good first specs.
    let listed: Value = client.get(&functions).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["functions"], json!([]), "{listed}");
    // And a good spec at the bounds goes through.
    let good = spec("f", json!({"timeout": "10ms", "env": {"MODE": "x"}, "runtime": "emulated"}));
    let answer = client.post(&functions).bearer_auth(&key).json(&good).send().await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
    federation.shutdown().await;
}
