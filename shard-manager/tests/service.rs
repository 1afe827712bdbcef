//! The ShardManager service on one replica over real gRPC: cells register, functions are
//! placed on the ring, followers of the shard map get a snapshot then deltas, and a cell
//! that stops heartbeating is failed over within the timeout, its functions moved to the
//! other cell with a new generation; bad input is refused naming the field.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{
    CellHealth, CellHeartbeatRequest, PutFunctionRequest, PutTenantRequest, RegisterCellRequest, WatchShardMapRequest,
    shard_map_event,
};
use baton_shard_manager::admission::Admission;
use baton_shard_manager::config::FunctionsSection;
use baton_shard_manager::raft::network::Network;
use baton_shard_manager::raft::{self};
use baton_shard_manager::service::{Manager, grpc_services};
use baton_shardmap::{Delta, MapSnapshot, ShardMap};
use openraft::{BasicNode, Raft};
use support::{cell, heartbeats};
use tonic::transport::Channel;

/// Long enough that a live cell (heartbeats every 50 ms) is never failed over when a
/// loaded machine stalls the test for a moment.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// One replica whose failure detector fails over a cell silent for [`TIMEOUT`].
async fn start() -> (ShardManagerClient<Channel>, Raft<raft::TypeConfig>, tempfile::TempDir) {
    let (client, node, dir, _) = start_with(Admission::default(), TIMEOUT).await;
    (client, node, dir)
}

/// One replica admitting `admission`, whose failure detector never fires during a test
/// (nothing changes the state but the test's own commands).
async fn start_admitting(
    admission: Admission,
) -> (ShardManagerClient<Channel>, Raft<raft::TypeConfig>, tempfile::TempDir) {
    let (client, node, dir, _) = start_with(admission, Duration::from_secs(3600)).await;
    (client, node, dir)
}

/// As [`start_admitting`], with the failure detector's timeout, and the replica's URL.
async fn start_with(
    admission: Admission,
    failover_after: Duration,
) -> (ShardManagerClient<Channel>, Raft<raft::TypeConfig>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (log, sm) = raft::open(&dir.path().join("raft.redb")).unwrap();
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let network = Network::new(baton_service::tls::Tls::Plaintext);
    let node = Raft::new(1, config, network.clone(), log, sm.clone()).await.unwrap();
    node.initialize(BTreeMap::from([(1, BasicNode::new(addr.to_string()))])).await.unwrap();
    node.wait(Some(Duration::from_secs(5))).current_leader(1, "leader").await.unwrap();
    let manager = Manager::new(node.clone(), sm, network).with_admission(admission);
    tokio::spawn(manager.clone().detect_failures(failover_after, Duration::from_millis(50)));
    let (transport, api) = grpc_services(node.clone(), manager);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder().add_service(transport).add_service(api).serve_with_incoming(incoming),
    );
    let url = format!("http://{addr}");
    let client = ShardManagerClient::connect(url.clone()).await.unwrap();
    (client, node, dir, url)
}

/// Tenant `dev`'s function `f{i}`, running `/bin/true`, in its default region.
fn function(i: u32) -> PutFunctionRequest {
    PutFunctionRequest {
        tenant: "dev".into(),
        name: format!("f{i}"),
        spec_json: format!(r#"{{"name":"f{i}","executable":"/bin/true"}}"#),
        home_region: String::new(),
        min_epoch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_functions_the_map_stream_and_failover() {
    let (mut api, node, _dir) = start().await;
    api.register_cell(cell("c1")).await.unwrap();
    api.register_cell(cell("c2")).await.unwrap();
    let (c1_beating, c2_beating) = (heartbeats(api.clone(), "c1"), heartbeats(api.clone(), "c2"));
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();

    // A follower of the map, from before the functions exist.
    let mut stream = api.watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    let Some(shard_map_event::Event::SnapshotJson(json)) = stream.message().await.unwrap().unwrap().event else {
        panic!("the stream starts with a snapshot");
    };
    let mut map = ShardMap::from(serde_json::from_str::<MapSnapshot>(&json).unwrap());
    assert_eq!(map.cells().count(), 2);

    let mut placed = BTreeMap::new();
    for i in 0..20 {
        let response = api.put_function(function(i)).await.unwrap().into_inner();
        assert_eq!(response.generation, 1);
        placed.insert(format!("dev/f{i}"), response.cell);
    }
    let on_c1: Vec<&String> = placed.iter().filter(|(_, c)| *c == "c1").map(|(f, _)| f).collect();
    assert!(!on_c1.is_empty() && on_c1.len() < 20, "the ring spreads functions over both cells: {placed:?}");

    // Apply the 20 registrations' deltas.
    for _ in 0..20 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
        let Some(shard_map_event::Event::DeltaJson(json)) = event.event else { panic!("deltas follow the snapshot") };
        map.apply(serde_json::from_str::<Delta>(&json).unwrap()).unwrap();
    }
    for (f, c) in &placed {
        assert_eq!(&map.owner(f, Some("local")).unwrap().cell.id.0, c);
    }

    // c2 keeps heartbeating, c1 goes silent.
    c1_beating.abort();
    let silent_since = Instant::now();
    // Failover: c1 down, then one assignment per function it had.
    let deadline = silent_since + TIMEOUT + Duration::from_secs(1);
    while on_c1.iter().any(|f| map.owner(f, Some("local")).unwrap().cell.id.0 != "c2") {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.message()).await.expect("failover within timeout + 1 s");
        let Some(shard_map_event::Event::DeltaJson(json)) = event.unwrap().unwrap().event else { panic!("a delta") };
        map.apply(serde_json::from_str::<Delta>(&json).unwrap()).unwrap();
    }
    eprintln!("c1's {} functions served by c2 {:?} after it went silent", on_c1.len(), silent_since.elapsed());
    for (f, c) in &placed {
        let owner = map.owner(f, Some("local")).unwrap();
        assert_eq!(owner.cell.id.0, "c2", "{f}");
        assert_eq!(
            owner.generation,
            Some(baton_model::Generation(if c == "c1" { 2 } else { 1 })),
            "{f}: moved functions get a new generation"
        );
    }
    // The failed-over cell is told to register again rather than carry on.
    let refused =
        api.cell_heartbeat(CellHeartbeatRequest { id: "c1".into(), loads: vec![], health: None }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Bad input names the field; nothing is stored.
    let epoch = map.epoch();
    let err = api.register_cell(RegisterCellRequest { region: String::new(), ..cell("c3") }).await.unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with("region"), "{err:?}");
    let err = api
        .put_function(PutFunctionRequest {
            tenant: "nobody".into(),
            name: "f".into(),
            spec_json: r#"{"executable":"/bin/true"}"#.into(),
            home_region: String::new(),
            min_epoch: 0,
        })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::NotFound && err.message().starts_with("tenant"), "{err:?}");
    for (spec, field) in [("{}", "executable"), (r#"{"executable":"/bin/true","scaling":{"max_scale":-1}}"#, "scaling")]
    {
        let request = PutFunctionRequest {
            tenant: "dev".into(),
            name: "g".into(),
            spec_json: spec.into(),
            home_region: "".into(),
            min_epoch: 0,
        };
        let err = api.put_function(request).await.unwrap_err();
        assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with(field), "{err:?}");
    }
    let mut fresh = api.watch_shard_map(WatchShardMapRequest {}).await.unwrap().into_inner();
    let Some(shard_map_event::Event::SnapshotJson(json)) = fresh.message().await.unwrap().unwrap().event else {
        panic!("a snapshot");
    };
    assert_eq!(serde_json::from_str::<MapSnapshot>(&json).unwrap().epoch, epoch, "refusals store nothing");
    c2_beating.abort();
    node.shutdown().await.unwrap();
}

fn put(tenant: &str, name: &str, home_region: &str) -> PutFunctionRequest {
    PutFunctionRequest {
        tenant: tenant.into(),
        name: name.into(),
        spec_json: r#"{"executable":"/bin/true"}"#.into(),
        home_region: home_region.into(),
        min_epoch: 0,
    }
}

/// Regions end to end: a function is placed in its home region (the tenant's default
/// unless it names one), and when its cell dies it fails over within the region while a
/// cell there is alive, else anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_and_failover_prefer_the_home_region() {
    let (mut api, _node, _dir) = start().await;
    let in_region = |id: &str, region: &str| RegisterCellRequest { region: region.into(), ..cell(id) };
    for (id, region) in [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")] {
        api.register_cell(in_region(id, region)).await.unwrap();
    }
    let beating: Arc<std::sync::Mutex<Vec<&'static str>>> =
        Arc::new(std::sync::Mutex::new(vec!["eu-1", "eu-2", "us-1"]));
    let (mut beat_api, alive) = (api.clone(), beating.clone());
    let beats = tokio::spawn(async move {
        loop {
            let ids = alive.lock().unwrap().clone();
            for id in ids {
                let _ =
                    beat_api.cell_heartbeat(CellHeartbeatRequest { id: id.into(), loads: vec![], health: None }).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    api.put_tenant(baton_testkit::tenant_request("acme", "eu", 0)).await.unwrap();
    let mut placed = BTreeMap::new();
    for i in 0..12 {
        let r = api.put_function(put("acme", &format!("e{i}"), "")).await.unwrap().into_inner();
        assert!(r.cell.starts_with("eu-"), "the tenant's default region: {r:?}");
        placed.insert(format!("e{i}"), r.cell);
        let r = api.put_function(put("acme", &format!("u{i}"), "us")).await.unwrap().into_inner();
        assert_eq!(r.cell, "us-1", "the function's own home region");
    }
    // eu-1 dies: its functions go to eu-2, not to us-1.
    beating.lock().unwrap().retain(|id| *id != "eu-1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = api.list_functions(baton_proto::shard::ListFunctionsRequest {
            tenant: "acme".into(),
            cell: "eu-1".into(),
            min_epoch: 0,
        });
        if listed.await.unwrap().into_inner().functions.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "eu-1 was not failed over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let eu2 = baton_proto::shard::ListFunctionsRequest { tenant: "acme".into(), cell: "eu-2".into(), min_epoch: 0 };
    assert_eq!(api.list_functions(eu2).await.unwrap().into_inner().functions.len(), 12, "all eu functions on eu-2");
    // us-1 dies too, with no other cell in us: its functions go anywhere alive.
    beating.lock().unwrap().retain(|id| *id != "us-1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let eu2 = baton_proto::shard::ListFunctionsRequest { tenant: "acme".into(), cell: "eu-2".into(), min_epoch: 0 };
        if api.list_functions(eu2).await.unwrap().into_inner().functions.len() == 24 {
            break;
        }
        assert!(Instant::now() < deadline, "us-1's functions did not fail over to another region");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    beats.abort();
}

/// Every admin endpoint refuses bad input with a clear 4xx-class status naming what is
/// wrong, and stores nothing (the epoch does not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_bad_input_and_store_nothing() {
    use baton_proto::shard::{
        CreateApiKeyRequest, FunctionRef, GetStatusRequest, MoveFunctionRequest, PinFunctionRequest,
        PutFunctionsRequest, RevokeApiKeyRequest, SetCellStateRequest,
    };
    use tonic::Code::{FailedPrecondition, InvalidArgument, NotFound};
    let (mut api, _node, _dir) = start_admitting(Admission::default()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    api.put_function(put("dev", "f", "")).await.unwrap();
    let epoch = || {
        let mut api = api.clone();
        async move { api.get_status(GetStatusRequest {}).await.unwrap().into_inner().epoch }
    };
    let before = epoch().await;
    let mut a = api.clone();
    let check = |result: Result<tonic::Status, ()>, code: tonic::Code, needle: &str| {
        let status = result.unwrap();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{status:?} should name {needle:?}");
    };
    let err = |r: Result<tonic::Response<baton_proto::shard::Ack>, tonic::Status>| r.map(|_| ()).err().ok_or(());
    check(err(a.put_tenant(baton_testkit::tenant_request("Bad Name", "x", 0)).await), InvalidArgument, "name");
    check(
        err(a
            .put_tenant(PutTenantRequest {
                name: "ok".into(),
                default_region: String::new(),
                max_functions: 0,
                executables: true,
                ..Default::default()
            })
            .await),
        InvalidArgument,
        "default_region",
    );
    check(a.create_api_key(CreateApiKeyRequest { tenant: "nobody".into() }).await.err().ok_or(()), NotFound, "tenant");
    check(err(a.revoke_api_key(RevokeApiKeyRequest { key_id: "xyz".into() }).await), InvalidArgument, "key_id");
    check(err(a.revoke_api_key(RevokeApiKeyRequest { key_id: "0123456789abcdef".into() }).await), NotFound, "key_id");
    check(a.put_function(put("dev", "", "")).await.err().ok_or(()), InvalidArgument, "name");
    check(a.put_function(put("dev", "Bad", "")).await.err().ok_or(()), InvalidArgument, "name");
    check(
        a.put_functions(PutFunctionsRequest { functions: vec![], min_epoch: 0 }).await.err().ok_or(()),
        InvalidArgument,
        "functions",
    );
    let twice = PutFunctionsRequest { functions: vec![put("dev", "g", ""), put("dev", "g", "")], min_epoch: 0 };
    check(a.put_functions(twice).await.err().ok_or(()), InvalidArgument, "twice");
    let one_bad = PutFunctionsRequest { functions: vec![put("dev", "g", ""), put("nobody", "h", "")], min_epoch: 0 };
    check(a.put_functions(one_bad).await.err().ok_or(()), NotFound, "functions[1]");
    let missing = FunctionRef { tenant: "dev".into(), name: "nope".into(), min_epoch: 0 };
    check(a.get_function(missing.clone()).await.err().ok_or(()), NotFound, "dev/nope");
    check(err(a.delete_function(missing).await), NotFound, "dev/nope");
    let moving =
        |name: &str, cell: &str| MoveFunctionRequest { tenant: "dev".into(), name: name.into(), cell: cell.into() };
    check(a.move_function(moving("nope", "c1")).await.err().ok_or(()), NotFound, "dev/nope");
    check(a.move_function(moving("f", "c9")).await.err().ok_or(()), NotFound, "cell");
    check(a.move_function(moving("f", "")).await.err().ok_or(()), InvalidArgument, "cell");
    check(
        err(a.set_cell_state(SetCellStateRequest { cell: "c1".into(), state: "sleepy".into() }).await),
        InvalidArgument,
        "state",
    );
    check(
        err(a.set_cell_state(SetCellStateRequest { cell: "c9".into(), state: "draining".into() }).await),
        NotFound,
        "cell",
    );
    let pin = PinFunctionRequest { tenant: "dev".into(), name: "nope".into(), pinned: true };
    check(err(a.pin_function(pin).await), NotFound, "dev/nope");
    check(err(a.register_cell(RegisterCellRequest { id: String::new(), ..cell("c3") }).await), InvalidArgument, "id");
    check(
        a.cell_heartbeat(CellHeartbeatRequest { id: "c9".into(), loads: vec![], health: None })
            .await
            .map(|_| ())
            .err()
            .ok_or(()),
        NotFound,
        "c9",
    );
    // A draining cell takes no move.
    a.set_cell_state(SetCellStateRequest { cell: "c1".into(), state: "draining".into() }).await.unwrap();
    check(a.move_function(moving("f", "c1")).await.err().ok_or(()), FailedPrecondition, "not active");
    assert_eq!(epoch().await, before + 1, "only the drain was stored");
}

/// `message` sent with request ID `id`.
fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(baton_model::headers::REQUEST_ID, id.parse().unwrap());
    request
}

/// A write sent again with its request ID (a client retrying at another replica after
/// losing the answer) is answered as the first attempt was and applied once: a
/// registration still says it created the function, a delete does not turn into a 404.
/// Without an ID, a write is a new write. A malformed ID is refused naming the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_answered_as_the_first_and_applied_once() {
    use baton_proto::shard::{FunctionRef, ListFunctionsRequest};
    let (mut api, _node, _dir) = start_admitting(Admission::default()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    let epoch = |mut api: ShardManagerClient<Channel>| async move {
        api.list_functions(ListFunctionsRequest::default()).await.unwrap().into_inner().epoch
    };

    let first = api.put_function(with_id(put("dev", "f", ""), "put-1")).await.unwrap().into_inner();
    assert!(first.created);
    let again = api.put_function(with_id(put("dev", "f", ""), "put-1")).await.unwrap().into_inner();
    assert_eq!(again, first, "the retry gets the first answer");
    assert_eq!(epoch(api.clone()).await, first.epoch, "and changes nothing");
    let update = api.put_function(put("dev", "f", "")).await.unwrap().into_inner();
    assert_eq!((update.created, update.epoch), (false, first.epoch + 1), "no ID: a new write");

    let f = || FunctionRef { tenant: "dev".into(), name: "f".into(), min_epoch: 0 };
    let deleted = api.delete_function(with_id(f(), "delete-1")).await.unwrap().into_inner();
    let again = api.delete_function(with_id(f(), "delete-1")).await.unwrap().into_inner();
    assert_eq!(again, deleted, "a retried delete is not told the function is gone");
    assert_eq!(api.delete_function(f()).await.unwrap_err().code(), tonic::Code::NotFound);
    // An ID names one write: sent on another, it is refused and nothing changes.
    let reused = api.put_function(with_id(put("dev", "g", ""), "delete-1")).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains("was used for another write"), "{reused:?}");
    let reused = api.delete_function(with_id(f(), "put-1")).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");

    for bad in ["has space", &"x".repeat(baton_model::headers::MAX_REQUEST_ID_LEN + 1)] {
        let err = api.put_function(with_id(put("dev", "g", ""), bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(err.message().starts_with(baton_model::headers::REQUEST_ID), "{err:?}");
    }
    assert_eq!(epoch(api.clone()).await, deleted.epoch, "refusals store nothing");
}

/// A read that asks for an epoch this replica has not applied waits for it (and then sees
/// the write that made it), or answers UNAVAILABLE after a second so the caller asks
/// another replica: a reader that saw epoch N never gets an older state. Writes plan from
/// a state at least as new in the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_the_epoch_they_ask_for() {
    use baton_proto::shard::{FunctionRef, ListFunctionsRequest};
    let (mut api, _node, _dir) = start_admitting(Admission::default()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    let first = api.put_function(put("dev", "f", "")).await.unwrap().into_inner().epoch;
    let f = |min_epoch| FunctionRef { tenant: "dev".into(), name: "f".into(), min_epoch };

    // Asked for the next epoch, the read waits for the update that makes it.
    let mut reader = api.clone();
    let read = tokio::spawn(async move { reader.get_function(f(first + 1)).await.map(|r| r.into_inner()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!read.is_finished(), "a read for an epoch not applied yet waits");
    let update = PutFunctionRequest { spec_json: r#"{"executable":"/bin/false"}"#.into(), ..put("dev", "f", "") };
    assert_eq!(api.put_function(update).await.unwrap().into_inner().epoch, first + 1);
    let info = read.await.unwrap().unwrap();
    assert!(info.spec_json.contains("/bin/false"), "the read sees the update it waited for: {}", info.spec_json);
    assert_eq!(info.epoch, first + 1, "an answer carries the epoch it was read at");
    let listed = api.list_functions(ListFunctionsRequest::default()).await.unwrap().into_inner();
    assert_eq!((listed.functions.len(), listed.epoch), (1, first + 1));

    // An epoch nobody has reached: UNAVAILABLE (ask another replica) after about a second.
    for (what, answer) in [
        ("get", api.get_function(f(first + 100)).await.map(|_| ())),
        ("delete", api.delete_function(f(first + 100)).await.map(|_| ())),
        (
            "list",
            api.list_functions(ListFunctionsRequest { min_epoch: first + 100, ..Default::default() }).await.map(|_| ()),
        ),
        (
            "put",
            api.put_function(PutFunctionRequest { min_epoch: first + 100, ..put("dev", "h", "") }).await.map(|_| ()),
        ),
        (
            "batch",
            api.put_functions(baton_proto::shard::PutFunctionsRequest {
                functions: vec![put("dev", "h", "")],
                min_epoch: first + 100,
            })
            .await
            .map(|_| ()),
        ),
    ] {
        let status = answer.expect_err(what);
        assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
        assert!(status.message().contains("behind the requested"), "{what}: {}", status.message());
    }
    assert!(api.get_function(f(0)).await.is_ok(), "the delete asked for a future epoch did nothing");
    let h = FunctionRef { tenant: "dev".into(), name: "h".into(), min_epoch: 0 };
    assert_eq!(api.get_function(h).await.unwrap_err().code(), tonic::Code::NotFound, "nor did the puts");
}

/// With `[functions]` set, a registration naming another program (or asking for more than
/// a limit) is refused naming the field, a batch holding one is refused whole, and nothing
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_executables_are_registered() {
    use baton_proto::shard::{GetStatusRequest, PutFunctionsRequest};
    let section = FunctionsSection {
        executables: vec!["/opt/fns/".into(), "/bin/true".into()],
        max_scale: 100,
        ..Default::default()
    };
    let (mut api, _node, _dir) = start_admitting(Admission::new(&section).unwrap()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    let with = |name: &str, executable: &str| PutFunctionRequest {
        spec_json: format!(r#"{{"executable":"{executable}"}}"#),
        ..put("dev", name, "")
    };
    api.put_function(with("a", "/bin/true")).await.unwrap();
    api.put_function(with("b", "/opt/fns/resize")).await.unwrap();
    let epoch = api.get_status(GetStatusRequest {}).await.unwrap().into_inner().epoch;
    for executable in ["/bin/sh", "/opt/fns/../../bin/sh", "/opt/fnsx/evil"] {
        let refused = api.put_function(with("c", executable)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{executable}");
        assert!(refused.message().starts_with("executable: "), "{executable}: {}", refused.message());
    }
    let batch =
        PutFunctionsRequest { functions: vec![with("d", "/opt/fns/d"), with("e", "/usr/bin/python3")], min_epoch: 0 };
    let refused = api.put_functions(batch).await.unwrap_err();
    assert!(refused.message().starts_with("functions[1].executable: "), "{}", refused.message());
    let greedy = PutFunctionRequest {
        spec_json: r#"{"executable":"/bin/true","scaling":{"max_scale":101}}"#.into(),
        ..put("dev", "g", "")
    };
    let refused = api.put_function(greedy).await.unwrap_err();
    assert!(refused.message().starts_with("scaling.max_scale: is over"), "{}", refused.message());
    assert_eq!(api.get_status(GetStatusRequest {}).await.unwrap().into_inner().epoch, epoch, "nothing stored");
}

/// A tenant created without a limit of its own gets the federation's `max_per_tenant`,
/// stored with it; one created with a limit keeps its own. Past it a registration is
/// refused (RESOURCE_EXHAUSTED, `409 limit_exceeded` through the router).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_have_at_most_their_limit_of_functions() {
    let section = FunctionsSection { max_per_tenant: 2, ..Default::default() };
    let (mut api, _node, _dir) = start_admitting(Admission::new(&section).unwrap()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("big", "local", 3)).await.unwrap();
    for name in ["a", "b"] {
        api.put_function(put("dev", name, "")).await.unwrap();
        api.put_function(put("big", name, "")).await.unwrap();
    }
    let refused = api.put_function(put("dev", "c", "")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("over its limit of 2"), "{}", refused.message());
    api.put_function(put("big", "c", "")).await.expect("its own limit is 3");
    assert!(api.put_function(put("big", "d", "")).await.is_err());
}

/// A large federation: a map of 100,000 functions (about 7 MB as JSON, past gRPC's usual
/// 4 MiB message limit) reaches a new follower in one snapshot, a cell's list of its
/// functions with their specs comes back whole, and a batch of specs past 4 MiB is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_map_and_catalog_reach_their_readers() {
    use baton_proto::shard::{ListFunctionsRequest, PutFunctionsRequest};
    const FUNCTIONS: usize = 100_000;
    let section = FunctionsSection {
        max_per_tenant: FUNCTIONS as u32 + 1000,
        max_sandboxes_per_tenant: 1000 * FUNCTIONS as u64,
        ..Default::default()
    };
    let (mut api, _node, _dir, url) = start_with(Admission::new(&section).unwrap(), Duration::from_secs(3600)).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    for chunk in (0..FUNCTIONS).collect::<Vec<_>>().chunks(1000) {
        let functions = chunk.iter().map(|i| put("dev", &format!("a-function-with-a-long-name-{i:06}"), "")).collect();
        api.put_functions(PutFunctionsRequest { functions, min_epoch: 0 }).await.unwrap();
    }
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let view = baton_shardmap::follow(vec![url.clone()], baton_service::tls::Tls::Plaintext, None, stop);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !view.synced() {
        assert!(Instant::now() < deadline, "no snapshot of the large map arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view.read().assigned(), FUNCTIONS);
    let replicas = baton_shardmap::Replicas::new(&[url], &baton_service::tls::Tls::Plaintext).unwrap();
    let request = ListFunctionsRequest { tenant: String::new(), cell: "c1".into(), min_epoch: 0 };
    let listed = replicas.call(request, |mut c, r| async move { c.list_functions(r).await }).await.unwrap();
    assert_eq!(listed.functions.len(), FUNCTIONS);
    // A batch of specs past 4 MiB (the router takes up to 8 MiB) is taken whole.
    let padded = |i: usize| PutFunctionRequest {
        spec_json: format!(r#"{{"executable":"/bin/true","env":{{"PAD":"{}"}}}}"#, "x".repeat(6000)),
        ..put("dev", &format!("padded-{i}"), "")
    };
    let batch = PutFunctionsRequest { functions: (0..1000).map(padded).collect(), min_epoch: 0 };
    api.put_functions(batch).await.expect("a 6 MB batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_without_workers_is_given_no_function_until_it_has_one_again() {
    let (mut api, _node, _dir) = start_admitting(Admission::default()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.register_cell(cell("c2")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    let beat = |workers: u32| CellHeartbeatRequest {
        id: "c1".into(),
        loads: vec![],
        health: Some(CellHealth { healthy_workers: workers, unservable: vec![], failing: vec![], image_workers: 0 }),
    };
    let place = async |api: &mut ShardManagerClient<Channel>, names: std::ops::Range<u32>| {
        let mut cells = BTreeMap::<String, u32>::new();
        for i in names {
            *cells.entry(api.put_function(function(i)).await.unwrap().into_inner().cell).or_default() += 1;
        }
        cells
    };

    // c1 says it has no worker: every new function goes to c2.
    api.cell_heartbeat(beat(0)).await.unwrap();
    assert_eq!(place(&mut api, 0..20).await, BTreeMap::from([("c2".to_string(), 20)]));
    // A worker again: c1 takes its share of new functions.
    api.cell_heartbeat(beat(1)).await.unwrap();
    let placed = place(&mut api, 20..40).await;
    assert!(placed.get("c1").is_some_and(|&n| n > 0), "c1 is placeable again: {placed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_of_images_go_to_cells_whose_workers_run_images_or_are_refused() {
    let (mut api, _node, _dir) = start_admitting(Admission::default()).await;
    api.register_cell(cell("c1")).await.unwrap();
    api.register_cell(cell("c2")).await.unwrap();
    api.put_tenant(baton_testkit::tenant_request("dev", "local", 0)).await.unwrap();
    let beat = |id: &str, image_workers: u32| CellHeartbeatRequest {
        id: id.into(),
        loads: vec![],
        health: Some(CellHealth { healthy_workers: 1, unservable: vec![], failing: vec![], image_workers }),
    };
    let image = |i: u32| PutFunctionRequest {
        spec_json: format!(r#"{{"image":"r.example/acme/f:1","image_digest":"sha256:{}"}}"#, "a".repeat(64)),
        ..put("dev", &format!("img-{i}"), "")
    };

    // Only c2's workers run images: every image function goes there, processes anywhere.
    api.cell_heartbeat(beat("c1", 0)).await.unwrap();
    api.cell_heartbeat(beat("c2", 1)).await.unwrap();
    let mut cells = BTreeMap::<String, u32>::new();
    for i in 0..20 {
        *cells.entry(api.put_function(image(i)).await.unwrap().into_inner().cell).or_default() += 1;
    }
    assert_eq!(cells, BTreeMap::from([("c2".to_string(), 20)]));
    let mut processes = BTreeMap::<String, u32>::new();
    for i in 0..20 {
        *processes.entry(api.put_function(function(i)).await.unwrap().into_inner().cell).or_default() += 1;
    }
    assert!(processes.get("c1").is_some_and(|&n| n > 0), "{processes:?}");

    // No cell runs images any more: a new image function is refused, saying why.
    api.cell_heartbeat(beat("c2", 0)).await.unwrap();
    let refused = api.put_function(image(99)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("runs container images"), "{}", refused.message());
}
