//! The control plane in process with a real (emulated) worker and a data plane played by
//! the test: registration, scale-from-zero on a queued request, routing updates, bad specs,
//! a worker going silent, and recovery after a control-plane restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_cell::control_plane::{ControlPlane, ControlPlaneSettings, StateConfig};
use baton_cell::placer::PlacementPolicy;
use baton_cell::routing::{RoutingSnapshot, RoutingUpdate, wire};
use baton_cell::store::{CellStore, EmbeddedStore};
use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::cell::cell_control_server::CellControlServer;
use baton_proto::cell::{
    DeleteFunctionRequest, FunctionLoad, GetFunctionRequest, PutFunctionRequest, ReportLoadRequest, WatchRoutingRequest,
};
use tokio::sync::watch;
use tonic::transport::Channel;

fn settings() -> ControlPlaneSettings {
    ControlPlaneSettings {
        state: StateConfig {
            worker_timeout: Duration::from_millis(600),
            load_expiry: Duration::from_secs(2),
            scale_down_drain: Duration::from_millis(100),
            create_retry: Duration::from_millis(200),
            placement: PlacementPolicy::LeastAllocated,
            id_prefix: format!("p{}", std::process::id()),
        },
        autoscale_interval: Duration::from_millis(100),
        sandbox_pids: 64,
        image_pull_timeout: Duration::from_secs(300),
        worker_call_timeout: Duration::from_secs(5),
        load_report_interval: Duration::from_millis(100),
        tls: baton_service::tls::Tls::Plaintext,
    }
}

struct Cp {
    plane: ControlPlane,
    stop: watch::Sender<bool>,
    store: CellStore,
}

async fn start_cp(addr: SocketAddr, store: CellStore) -> (Cp, SocketAddr) {
    let (stop, stopped) = watch::channel(false);
    let plane = ControlPlane::start(settings(), store.clone(), stopped.clone()).await.unwrap();
    let listener = bind_retrying(addr).await;
    let addr = listener.local_addr().unwrap();
    let service = CellControlServer::new(plane.clone());
    let mut server_stop = stopped;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            )
            .await
            .unwrap();
    });
    (Cp { plane, stop, store }, addr)
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not bind {addr}");
}

async fn start_worker(cp: SocketAddr, state: &std::path::Path) -> baton_worker::RunningWorker {
    let mut config = baton_worker::WorkerConfig::default();
    config.tls.plaintext = true;
    config.worker.node_id = "emu".into();
    config.worker.runtime = baton_worker::config::RuntimeChoice::Emulated;
    config.worker.listen = "127.0.0.1:0".parse().unwrap();
    config.worker.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.worker.state_dir = state.to_path_buf();
    config.emulated.create_delay = Duration::from_millis(40);
    config.control_plane.address = format!("http://{cp}");
    config.control_plane.heartbeat_interval = Duration::from_millis(100);
    config.control_plane.retry_initial = Duration::from_millis(50);
    config.control_plane.retry_max = Duration::from_millis(200);
    baton_worker::bind_and_start(config).await.unwrap()
}

async fn client(addr: SocketAddr) -> CellControlClient<Channel> {
    CellControlClient::connect(format!("http://{addr}")).await.unwrap()
}

/// A data plane's view: the first snapshot, then a receiver of updates.
async fn watch(addr: SocketAddr) -> (RoutingSnapshot, tokio::sync::mpsc::UnboundedReceiver<RoutingUpdate>) {
    let mut stream = client(addr)
        .await
        .watch_routing(WatchRoutingRequest { data_plane_id: "dp1".into() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let snapshot = wire::from_event(first).unwrap().expect("a snapshot comes first");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            let update = wire::from_event(event).unwrap().expect_err("updates after the snapshot");
            if tx.send(update).is_err() {
                return;
            }
        }
    });
    (snapshot, rx)
}

async fn next_with(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<RoutingUpdate>,
    pred: impl Fn(&RoutingUpdate) -> bool,
) -> RoutingUpdate {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let u = rx.recv().await.expect("stream open");
            if pred(&u) {
                return u;
            }
        }
    })
    .await
    .expect("the expected routing update arrived")
}

async fn report(addr: SocketAddr, function: &str, in_flight: u32, queued: u32) {
    send_load(addr, FunctionLoad { function: function.into(), in_flight, queued, busy_sandboxes: vec![] }).await;
}

/// Sends one load report as data plane `dp1`.
async fn send_load(addr: SocketAddr, load: FunctionLoad) {
    client(addr)
        .await
        .report_load(ReportLoadRequest { data_plane_id: "dp1".into(), functions: vec![load] })
        .await
        .unwrap();
}

const SPEC: &str = r#"{"name":"spin","runtime":"emulated","scaling":{"max_scale":3}}"#;

#[tokio::test]
async fn scales_from_zero_on_a_queued_request_and_recovers_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = CellStore::new(Arc::new(EmbeddedStore::open(&dir.path().join("cell.redb")).unwrap()));
    let (cp, addr) = start_cp("127.0.0.1:0".parse().unwrap(), store).await;
    let worker = start_worker(addr, dir.path()).await;
    let mut api = client(addr).await;

    let created = api
        .put_function(PutFunctionRequest { spec_json: SPEC.into(), pull_first: false })
        .await
        .unwrap()
        .into_inner()
        .created;
    assert!(created);
    let (snapshot, mut updates) = watch(addr).await;
    assert_eq!(snapshot.functions["spin"].endpoints, vec![], "known, no sandbox yet");

    // The worker registers in the background: the clock starts once it is known.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cp.plane.read(|state| state.worker_record("emu").is_some()) {
        assert!(std::time::Instant::now() < deadline, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A queued request: a sandbox is created (40 ms emulated) and routed to.
    let asked = std::time::Instant::now();
    report(addr, "spin", 0, 1).await;
    let update = next_with(&mut updates, |u| u.routing.as_ref().is_some_and(|r| r.endpoints.len() == 1)).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(500), "event-driven scale-from-zero took {took:?}");
    let endpoint = update.routing.unwrap().endpoints[0].clone();
    assert_eq!(worker.nodes[0].list().await.len(), 1);

    // Bad specs are refused naming the field, and nothing is stored.
    let writes = cp.store.writes();
    for (spec, field) in [
        (r#"{"name":"x"}"#, "executable"),
        (r#"{"name":"x","executable":"/x","scaling":{"min_scale":-1}}"#, "scaling.min_scale"),
        (r#"{"name":"x","executable":"/x","scaling":{"min_scale":4,"max_scale":2}}"#, "scaling.min_scale"),
        (r#"{"name":"x","executable":"/x","surprise":true}"#, "surprise"),
    ] {
        let status =
            api.put_function(PutFunctionRequest { spec_json: spec.into(), pull_first: false }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{field}: {}", status.message());
    }
    assert_eq!(cp.store.writes(), writes);

    // Restart the control plane on the same address with the same store. Traffic goes on
    // (the test keeps reporting load); the recovered sandbox is adopted, none is created.
    let _ = cp.stop.send(true);
    drop(cp.plane);
    let store = cp.store.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cp2, addr2) = start_cp(addr, store).await;
    assert_eq!(addr2, addr);
    let (snapshot, _updates) = watch(addr).await;
    assert!(snapshot.functions.contains_key("spin"), "functions survive the restart");
    for _ in 0..10 {
        report(addr, "spin", 1, 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = client(addr).await.get_function(GetFunctionRequest { name: "spin".into() }).await.unwrap().into_inner();
    assert_eq!((info.ready, info.creating), (1, 0), "{info:?}");
    assert_eq!(worker.nodes[0].list().await.len(), 1, "no sandbox created twice");
    let (snapshot, _) = watch(addr).await;
    // The same sandbox at the same address (its creation time is not known after a restart).
    let recovered: Vec<_> = snapshot.functions["spin"].endpoints.iter().map(|e| (&e.sandbox_id, &e.address)).collect();
    assert_eq!(recovered, vec![(&endpoint.sandbox_id, &endpoint.address)]);

    // The worker goes silent: after the timeout its sandbox leaves the routing.
    let (_, mut updates) = watch(addr).await;
    worker.shutdown().await;
    next_with(&mut updates, |u| u.routing.as_ref().is_some_and(|r| r.endpoints.is_empty())).await;
    let _ = cp2.stop.send(true);
}

/// Reports, as data plane `dp1`, that `busy` of `function`'s sandboxes have calls in flight.
async fn report_busy(addr: SocketAddr, function: &str, busy: Vec<String>) {
    let in_flight = busy.len() as u32;
    send_load(addr, FunctionLoad { function: function.into(), in_flight, queued: 0, busy_sandboxes: busy }).await;
}

/// The race behind a call cut off at about two seconds: the control plane retires a
/// sandbox on a load report that showed no call, and a data plane sends it a call before
/// the routing change reaches it. The sandbox must stay until no data plane reports a call
/// on it, not go after the short idle drain.
#[tokio::test]
async fn a_retired_sandbox_that_a_data_plane_reports_busy_is_kept_until_its_call_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = CellStore::new(Arc::new(EmbeddedStore::open(&dir.path().join("cell.redb")).unwrap()));
    let (cp, addr) = start_cp("127.0.0.1:0".parse().unwrap(), store).await;
    let worker = start_worker(addr, dir.path()).await;
    let mut api = client(addr).await;
    let (_, mut updates) = watch(addr).await;
    let spec = r#"{"name":"busy","runtime":"emulated","timeout":"20s","scaling":{"min_scale":1,"max_scale":1}}"#;
    api.put_function(PutFunctionRequest { spec_json: spec.into(), pull_first: false }).await.unwrap();
    let update = next_with(&mut updates, |u| u.routing.as_ref().is_some_and(|r| r.endpoints.len() == 1)).await;
    let sandbox = update.routing.unwrap().endpoints[0].sandbox_id.clone();
    let on_worker = |worker: &baton_worker::RunningWorker| {
        let node = worker.nodes[0].clone();
        async move { node.list().await.len() }
    };
    assert_eq!(on_worker(&worker).await, 1);

    // Deleted while the control plane knows of no call (drain: 100 ms); a call is already
    // on its way to the sandbox, and the data plane says so.
    api.delete_function(DeleteFunctionRequest { name: "busy".into() }).await.unwrap();
    report_busy(addr, "busy", vec![sandbox.clone()]).await;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        report_busy(addr, "busy", vec![sandbox.clone()]).await;
    }
    assert_eq!(on_worker(&worker).await, 1, "a sandbox with a call in flight was deleted under it");

    // The call ends: the data plane reports the function quiet, and the sandbox goes.
    report_busy(addr, "busy", vec![]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while on_worker(&worker).await != 0 {
        assert!(std::time::Instant::now() < deadline, "the drained sandbox was never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = cp.stop.send(true);
}
