//! The persistence suite, run against both backends: a real Redis server (started by
//! scripts/test.sh, found through `BATON_TEST_REDIS_URL`) and the embedded redb store, plus
//! what the embedded store promises across a SIGKILL.

use std::sync::Arc;
use std::time::Duration;

use baton_cell::store::{CellStore, DataPlaneRecord, EmbeddedStore, Kind, RedisStore, Store, WorkerRecord};
use baton_model::FunctionSpec;

/// Worker `w1` at `address`: 2 cores, 4 GiB, 100 sandboxes.
fn worker(address: &str) -> WorkerRecord {
    WorkerRecord {
        node_id: baton_proto::NodeId::new("w1").unwrap(),
        address: address.into(),
        runtime: baton_model::Runtime::Process,
        runtimes: vec![baton_model::Runtime::Oci],
        cpu_millis: 2000,
        memory_mib: 4096,
        max_sandboxes: 100,
    }
}

fn redis_url() -> String {
    std::env::var("BATON_TEST_REDIS_URL")
        .expect("BATON_TEST_REDIS_URL is not set: run the suite through scripts/test.sh, which starts Redis")
}

async fn redis(test: &str) -> RedisStore {
    let store = RedisStore::connect(&redis_url(), &format!("baton-test:{}:{test}", std::process::id())).await.unwrap();
    store.clear().await.unwrap();
    store
}

fn spec(name: &str, max_scale: u32) -> FunctionSpec {
    let mut spec =
        FunctionSpec::from_json(format!(r#"{{"name":"{name}","executable":"/bin/fn"}}"#).as_bytes()).unwrap();
    spec.scaling.max_scale = max_scale;
    spec
}

/// What every backend must do.
async fn conformance(backend: Arc<dyn Store>) {
    // Raw keyspaces: put, overwrite, list in key order, delete, kinds kept apart.
    assert!(backend.list(Kind::Functions).await.unwrap().is_empty());
    backend.put(Kind::Functions, "b", b"2").await.unwrap();
    backend.put(Kind::Functions, "a", b"1").await.unwrap();
    backend.put(Kind::Functions, "a", b"1 again").await.unwrap();
    backend.put(Kind::Workers, "a", b"worker").await.unwrap();
    assert_eq!(
        backend.list(Kind::Functions).await.unwrap(),
        vec![("a".to_string(), b"1 again".to_vec()), ("b".to_string(), b"2".to_vec())]
    );
    assert_eq!(backend.list(Kind::Workers).await.unwrap(), vec![("a".to_string(), b"worker".to_vec())]);
    assert!(backend.list(Kind::DataPlanes).await.unwrap().is_empty());
    assert!(backend.delete(Kind::Functions, "a").await.unwrap());
    assert!(!backend.delete(Kind::Functions, "a").await.unwrap(), "deleting twice reports absence");
    assert!(!backend.delete(Kind::DataPlanes, "never").await.unwrap());
    assert_eq!(backend.list(Kind::Functions).await.unwrap().len(), 1);
    // Binary-safe values and odd keys.
    let blob: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
    backend.put(Kind::DataPlanes, "dp:1/x y", &blob).await.unwrap();
    assert_eq!(backend.list(Kind::DataPlanes).await.unwrap(), vec![("dp:1/x y".to_string(), blob)]);
    backend.delete(Kind::Functions, "b").await.unwrap();
    backend.delete(Kind::Workers, "a").await.unwrap();
    backend.delete(Kind::DataPlanes, "dp:1/x y").await.unwrap();

    // Typed records through CellStore, with the write counter.
    let cell = CellStore::new(backend);
    cell.put_function(&spec("echo", 3)).await.unwrap();
    cell.put_function(&spec("spin", 5)).await.unwrap();
    cell.put_function(&spec("echo", 7)).await.unwrap();
    let worker = worker("127.0.0.1:7300");
    cell.put_worker(&worker).await.unwrap();
    let dp = DataPlaneRecord {
        id: "dp1".into(),
        control_address: "127.0.0.1:7400".into(),
        http_address: "127.0.0.1:8080".into(),
    };
    cell.put_data_plane(&dp).await.unwrap();
    assert_eq!(cell.writes(), 5);
    let functions = cell.functions().await.unwrap();
    assert_eq!(
        functions.iter().map(|f| (f.name.as_str(), f.scaling.max_scale)).collect::<Vec<_>>(),
        vec![("echo", 7), ("spin", 5)]
    );
    assert_eq!(cell.workers().await.unwrap(), vec![worker]);
    assert_eq!(cell.data_planes().await.unwrap(), vec![dp]);
    assert_eq!(cell.writes(), 5, "reads are not writes");
    assert!(cell.delete_function("echo").await.unwrap());
    assert!(cell.delete_worker("w1").await.unwrap());
    assert!(cell.delete_data_plane("dp1").await.unwrap());
    assert_eq!(cell.writes(), 8);
    assert_eq!(cell.functions().await.unwrap().len(), 1);
    assert!(cell.workers().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_store_conforms() {
    let store = redis("conformance").await;
    conformance(Arc::new(store.clone())).await;
    store.clear().await.unwrap();
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(EmbeddedStore::open(&dir.path().join("cell.redb")).unwrap())).await;
}

/// The records are in the Redis server itself (no embedded file is configured): read back
/// with a plain client, one hash per kind under the cell's namespace.
#[tokio::test]
async fn redis_records_are_in_the_redis_server() {
    let namespace = format!("baton-test:{}:raw", std::process::id());
    let store = RedisStore::connect(&redis_url(), &namespace).await.unwrap();
    store.clear().await.unwrap();
    let cell = CellStore::new(Arc::new(store.clone()));
    cell.put_function(&spec("echo", 3)).await.unwrap();
    let worker = worker("http://127.0.0.1:7300");
    cell.put_worker(&worker).await.unwrap();

    let client = redis::Client::open(redis_url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let functions: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("{namespace}:functions")).query_async(&mut raw).await.unwrap();
    let stored: FunctionSpec = serde_json::from_str(&functions["echo"]).unwrap();
    assert_eq!(stored, spec("echo", 3));
    let workers: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("{namespace}:workers")).query_async(&mut raw).await.unwrap();
    assert_eq!(serde_json::from_str::<WorkerRecord>(&workers["w1"]).unwrap(), worker);
    cell.delete_function("echo").await.unwrap();
    let exists: bool =
        redis::cmd("HEXISTS").arg(format!("{namespace}:functions")).arg("echo").query_async(&mut raw).await.unwrap();
    assert!(!exists, "a deleted function is gone from Redis");
    store.clear().await.unwrap();
}

#[tokio::test]
async fn redis_keys_of_two_cells_never_mix() {
    let a = redis("cell-a").await;
    let b = redis("cell-b").await;
    a.put(Kind::Functions, "f", b"a").await.unwrap();
    assert!(b.list(Kind::Functions).await.unwrap().is_empty());
    a.clear().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_record_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(EmbeddedStore::open(&dir.path().join("cell.redb")).unwrap());
    backend.put(Kind::Functions, "broken", b"{not json").await.unwrap();
    let err = CellStore::new(backend).functions().await.unwrap_err();
    assert!(err.to_string().contains("functions record \"broken\""), "{err}");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let result =
        tokio::time::timeout(Duration::from_secs(10), RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "x"))
            .await;
    let err = result.expect("connect gives up by itself").err().expect("nothing listens there");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// Writes 50 functions and deletes one: what the SIGKILL test's child does.
async fn write_sequence(cell: &CellStore) {
    for i in 0..50 {
        cell.put_function(&spec(&format!("fn-{i}"), 1 + i)).await.unwrap();
    }
    cell.delete_function("fn-7").await.unwrap();
}

fn assert_sequence_written(functions: &[FunctionSpec]) {
    assert_eq!(functions.len(), 49);
    assert!(functions.iter().all(|f| f.name != "fn-7"));
    assert!(functions.iter().any(|f| f.name == "fn-49" && f.scaling.max_scale == 50));
}

/// The writer half of the SIGKILL test. On its own it checks the sequence reads back; run
/// by the test below (with `BATON_SIGKILL_CHILD_DB`) it then says so and waits to be killed.
#[tokio::test]
async fn embedded_store_writer_reads_back_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("BATON_SIGKILL_CHILD_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("w.redb"));
    let cell = CellStore::new(Arc::new(EmbeddedStore::open(&path).unwrap()));
    write_sequence(&cell).await;
    assert_sequence_written(&cell.functions().await.unwrap());
    if std::env::var("BATON_SIGKILL_CHILD_DB").is_ok() {
        println!("WRITTEN");
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

#[tokio::test]
async fn embedded_store_keeps_every_acknowledged_write_across_sigkill() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cell.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "embedded_store_writer_reads_back_its_writes", "--nocapture"])
        .env("BATON_SIGKILL_CHILD_DB", &db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut written = false;
    for line in stdout.lines() {
        if line.unwrap().contains("WRITTEN") {
            written = true;
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(written, "the child never finished writing");
    let cell = CellStore::new(Arc::new(EmbeddedStore::open(&db).unwrap()));
    assert_sequence_written(&cell.functions().await.unwrap());
}

/// A Redis server of the test's own, killed when dropped.
struct OwnRedis(std::process::Child, tempfile::TempDir);

impl OwnRedis {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child, dir)
    }

    fn kill(mut self) -> tempfile::TempDir {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        std::mem::replace(&mut self.1, tempfile::tempdir().unwrap())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_redis_store_reconnects_after_a_redis_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = OwnRedis::start(port, tempfile::tempdir().unwrap());
    let cell =
        CellStore::new(Arc::new(RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "restart").await.unwrap()));
    cell.put_function(&spec("before", 1)).await.unwrap();

    // SIGKILL the server, start it again on the same port with the same data folder.
    let dir = redis.kill();
    assert!(cell.functions().await.is_err(), "Redis is down");
    let _redis = OwnRedis::start(port, dir);
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(functions) = cell.functions().await {
            recovered = Some(functions);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let functions = recovered.expect("the store reconnects by itself");
    assert_eq!(functions.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["before"], "the AOF kept the write");
    cell.put_function(&spec("after", 1)).await.unwrap();
    assert_eq!(cell.functions().await.unwrap().len(), 2);
}
