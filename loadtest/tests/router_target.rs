//! `--target router`: the run's functions are registered through a federation router's
//! tenant API, called with the API key, and removed after; the CSV names the cell that
//! served each call. A missing key is refused naming the option.

use std::process::Command;

use baton_testkit::{Federation, bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_through_a_router_register_call_and_clean_up() {
    let mut federation = Federation::start(1, 31400, "3s").await;
    let (key, r) = federation.open_to("lt").await;
    let router_url = federation.routers[r].url("");
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(bin("baton-loadtest"))
        .args(["burst", "--count", "6", "--execution", "sleep", "--quiet", "--target", "router", "--url", &router_url])
        // The map reaches the router and the cell asynchronously; leave a loaded machine time.
        .args(["--settle", "2s"])
        .arg("--out")
        .arg(out.path())
        .env("BATON_API_KEY", &key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["phases"][0]["ok"].as_u64(), Some(6), "{summary:#}");
    let mut calls = csv::Reader::from_path(out.path().join("calls.csv")).unwrap();
    let cell_column = calls.headers().unwrap().iter().position(|h| h == "cell").unwrap();
    for row in calls.records() {
        assert_eq!(&row.unwrap()[cell_column], "cell-1");
    }
    // Removed after the run.
    let listed = reqwest::Client::new().get(federation.routers[r].url("/v1/functions")).bearer_auth(&key).send();
    let listed = listed.await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(listed["functions"], serde_json::json!([]));

    let refused = Command::new(bin("baton-loadtest"))
        .args(["burst", "--count", "1", "--target", "router", "--url", &router_url])
        .env_remove("BATON_API_KEY")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--api-key"));
}
