//! A hostile tenant's function, deployed through the router like any other, attacks from
//! inside its sandbox: it connects to every port of the federation and to another tenant's
//! sandbox, reads other processes' environments, the worker's state and the other
//! sandbox's logs, fork-bombs, exhausts its memory and makes a user namespace. Every attempt must fail, and the
//! other tenant's function and the platform must go on answering.

use std::os::unix::fs::PermissionsExt;

use baton_proto::worker::ListSandboxesRequest;
use baton_proto::worker::worker_client::WorkerClient;
use baton_testkit::{FederationApi, bin, inproc};
use serde_json::{Value, json};

/// What a connection stopped by the packet filter reports (EHOSTUNREACH, from its reject).
const FILTERED: &str = "No route to host";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_function_cannot_reach_the_platform_other_sandboxes_or_their_secrets() {
    // Sandboxes run as uids of this test's own, and only as sandbox users (never as root);
    // one port of this host is opened to them (as an operator opens a router's), which
    // shows that what the filter refuses below, it refuses by rule.
    let opened = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opened_port = opened.local_addr().unwrap().port();
    let worker = json!({"process": {
        "uid_range_start": 2_000_600_000u32, "uid_range_end": 2_000_600_099u32, "user_fallback": "refuse",
        "network": {"local_ports": [opened_port]},
    }});
    let mut federation = inproc::Builder::new(16200).worker(worker).start().await;
    // Only baton's own modes protect its files: open the test's folder as /var/lib is.
    std::fs::set_permissions(federation.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin_dir = federation.dir.path().join("bin");
    let hostile_exe = baton_worker::process::reachable_copy(&bin("baton-fn-hostile"), &bin_dir).unwrap();
    let echo_exe = baton_worker::process::reachable_copy(&bin("baton-fn-echo"), &bin_dir).unwrap();

    let mallory = federation.tenant("mallory").await;
    let alice = federation.tenant("alice").await;
    let r = federation.start_router(&alice).await;
    federation.wait_router_accepts(r, &mallory).await;
    let client = reqwest::Client::new();
    let deploy = |key: &str, spec: Value| {
        client.post(federation.router_url(r, "/v1/functions")).bearer_auth(key).json(&spec).send()
    };
    let hostile =
        json!({"name": "probe", "executable": hostile_exe, "resources": {"cpu_millis": 200, "memory_mib": 256}});
    assert_eq!(deploy(&mallory, hostile).await.unwrap().status(), 201);
    let victim = json!({
        "name": "vault", "executable": echo_exe, "resources": {"cpu_millis": 100, "memory_mib": 64},
        "env": {"ALICE_SECRET": "s3cr3t"},
    });
    assert_eq!(deploy(&alice, victim).await.unwrap().status(), 201);
    let call = |key: &str, name: &str, body: Value| {
        client.post(federation.router_url(r, &format!("/function/{name}"))).bearer_auth(key).json(&body)
    };
    let (answer, _) = baton_testkit::send_when_known(call(&alice, "vault", json!({}))).await;
    assert_eq!(answer.status(), 200, "alice's function answers");

    // Where everything is: every baton port, and alice's sandbox with its files.
    let cell = &federation.cells[0];
    let worker = &cell.workers[0];
    let sandboxes = WorkerClient::connect(format!("http://{}", worker.grpc_addr))
        .await
        .unwrap()
        .list_sandboxes(ListSandboxesRequest { node_id: String::new() })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    let vault = sandboxes.iter().find(|s| s.function_id.contains("vault")).expect("alice's sandbox is listed");
    for s in &sandboxes {
        let isolation = s.isolation.as_ref().expect("isolation is reported");
        assert!(isolation.level == "full" && isolation.network_filter, "{}: {isolation:?}", s.sandbox_id);
    }
    let replica = federation.replicas[0].as_ref().unwrap();
    let router = &federation.routers[r];
    let mut ports: Vec<String> = [
        replica.addr,
        replica.admin_addr,
        cell.cell.control_addr.unwrap(),
        cell.cell.http_addr.unwrap(),
        cell.cell.admin_addr,
        worker.grpc_addr,
        worker.admin_addr,
        router.addr,
        router.admin_addr,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    ports.push(vault.endpoint.trim_start_matches("http://").to_string());
    // A private network (the other hosts of a federation) and cloud metadata.
    let mut targets = ports.clone();
    targets.extend(["10.255.255.1:80".to_string(), "169.254.169.254:80".to_string()]);
    let allowed = format!("127.0.0.1:{opened_port}");
    let state = federation.dir.path().join("cell-1-w1");
    let vault_dir = state.join("sandboxes").join(&vault.sandbox_id);
    let reads = [
        state.join("sandboxes"),
        vault_dir.clone(),
        vault_dir.join("stdout.log"),
        vault_dir.join("stderr.log"),
        format!("/proc/{}/environ", vault.pid).into(),
    ];
    let plan = json!({
        "connect": targets.iter().chain([&allowed]).collect::<Vec<_>>(),
        "read": reads,
        "environ": true,
        "fork": 100_000,
        "memory_mib": 512,
        "user_namespace": true,
    });
    let (answer, _) = baton_testkit::send_when_known(call(&mallory, "probe", plan)).await;
    let status = answer.status();
    let report: Value = answer.json().await.unwrap();
    assert_eq!(status, 200, "{report}");

    for target in &targets {
        let got = report["connect"][target.as_str()].as_str().unwrap_or_default();
        assert!(got.contains(FILTERED), "connecting to {target} was not stopped by the filter: {got:?}");
    }
    assert_eq!(report["connect"][&allowed], json!("connected"), "the opened port is reachable: {report}");
    for path in &reads {
        let got = report["read"][path.to_str().unwrap()].as_str().unwrap_or_default();
        assert!(got.starts_with("error:"), "{} was readable from the sandbox: {got:?}", path.display());
    }
    let environ = &report["environ"];
    assert_eq!(environ["seen"].as_array().map(Vec::len), Some(1), "the sandbox sees other processes: {environ}");
    assert_eq!(environ["readable"], json!([]), "{environ}");
    let fork = &report["fork"];
    let started = fork["started"].as_u64().unwrap();
    assert!(started < 256 && !fork["error"].as_str().unwrap().is_empty(), "the fork bomb was not stopped: {fork}");
    assert_eq!(report["memory"]["signal"], json!(9), "a child over the memory limit is OOM-killed: {report}");
    let userns = &report["user_namespace"];
    assert_ne!(userns["status"], json!(0), "the sandbox made a user namespace: {userns}");
    assert!(userns["stderr"].as_str().unwrap_or_default().contains("Operation not permitted"), "{userns}");

    // The platform and the other tenant go on; the attacker's own function too.
    let answer = call(&alice, "vault", json!({"after": "attack"})).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer = call(&mallory, "probe", json!({"environ": true})).send().await.unwrap();
    assert_eq!(answer.status(), 200, "the probe survives its own attacks");
    federation.shutdown().await;
}
