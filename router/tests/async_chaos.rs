//! 10,000 async calls to functions that fail 30 % of the time at random, while one process
//! after another is killed with SIGKILL under load (real processes): a router, a cell's data
//! plane, that cell's control plane, a worker, the shard-manager leader; and a function is
//! moved. Every call ends `succeeded`, or dead with its reason; none is lost. The queue is
//! Redis, shared by the routers. The tries above one per call are reported: retries of the
//! 30 % failures, and tries cut short by a kill and run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_proto::shard::GetStatusRequest;
use baton_testkit::{Federation, FederationApi, spin_spec};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const CALLS: usize = 10_000;
const FUNCTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_async_calls_survive_a_kill_of_each_process_and_a_move() {
    let redis =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    let prefix = format!("chaos-{:x}", std::process::id());
    let env = [("BATON_CELLS__HEARTBEAT_TIMEOUT", "1s"), ("BATON_CELLS__MOVE_BUDGET", "0")];
    let mut federation = Federation::start_replicated(3, 0, 36400, &env).await;
    federation.add_split_cell(36400).await;
    federation.add_cell(36600).await;
    let key = federation.tenant("acme").await;
    let router_env = [
        ("BATON_ASYNC__REDIS_URL", redis.as_str()),
        ("BATON_ASYNC__REDIS_PREFIX", prefix.as_str()),
        ("BATON_ASYNC__LEASE", "2s"),
    ];
    for _ in 0..2 {
        federation.start_router_with(None, &key, &router_env).await;
    }
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(16).timeout(Duration::from_secs(10)).build().unwrap();
    let small = json!({"cpu_millis": 20, "memory_mib": 32});
    let policy = json!({"max_attempts": 10, "backoff": {"initial": "50ms", "max": "1s"}, "max_age": "10m"});
    let mut owners = Vec::new();
    for i in 0..FUNCTIONS {
        let spec =
            spin_spec(&format!("f{i}"), json!({"resources": small, "scaling": {"max_scale": 8}, "async": policy}));
        let answer =
            client.post(federation.routers[0].url("/v1/functions")).bearer_auth(&key).json(&spec).send().await.unwrap();
        assert_eq!(answer.status(), 201);
        owners.push(answer.json::<Value>().await.unwrap()["cell"].as_str().unwrap().to_string());
    }

    // Load: 10,000 calls through whichever routers are alive, eight senders at a time.
    let routers: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(federation.routers.iter().map(|r| r.url("")).collect()));
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..8 {
        let (client, key, routers, ids, sent) =
            (client.clone(), key.clone(), routers.clone(), ids.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let mut turn = s;
            while sent.fetch_add(1, Ordering::Relaxed) < CALLS {
                let path = format!("/async-function/f{}?ms=20&mode=sleep&fail_percent=30", turn % FUNCTIONS);
                loop {
                    turn += 1;
                    let live = routers.lock().await.clone();
                    let url = format!("{}{path}", live[turn % live.len()]);
                    // A router killed mid-request answers nothing: the call goes to another.
                    if let Ok(answer) = client.post(&url).bearer_auth(&key).send().await
                        && answer.status() == 202
                    {
                        ids.lock().await.push(answer.headers()["x-call-id"].to_str().unwrap().to_string());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let load = {
        let done = done.clone();
        tokio::spawn(async move {
            for sender in senders {
                sender.await.unwrap();
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // One kill after another, each under load.
    let pause = Duration::from_secs(3);
    tokio::time::sleep(pause).await;
    println!("killing router 1 of 2, starting another");
    federation.routers[0].proc.sigkill();
    let replacement = federation.start_router_with(None, &key, &router_env).await;
    *routers.lock().await = vec![federation.routers[1].url(""), federation.routers[replacement].url("")];

    tokio::time::sleep(pause).await;
    println!("killing cell-1's data plane, restarting it a second later");
    let split = &mut federation.cells[0];
    let data_plane_port = split.data_planes[0].http_port;
    split.data_planes[0].proc.sigkill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    split.start_data_plane("cell-1-dp-1", data_plane_port).await;

    tokio::time::sleep(pause).await;
    println!("killing cell-1's control plane, restarting it a second later");
    split.cell.as_mut().unwrap().sigkill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    split.start_control().await;

    tokio::time::sleep(pause).await;
    println!("killing cell-2's worker, restarting it (it adopts its sandboxes again)");
    let other = &mut federation.cells[1];
    other.workers[0].sigkill();
    other.workers.clear();
    // Back once the cell has noticed it gone (`worker_timeout`, 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    other.start_worker("cell-2-w1", 100, 36600).await;

    tokio::time::sleep(pause).await;
    let leader = federation.client().await.get_status(GetStatusRequest {}).await.unwrap().into_inner().leader_id;
    println!("killing the shard-manager leader (replica {leader})");
    let replica = federation.replicas.iter_mut().find(|(id, _, _)| *id == leader).unwrap();
    replica.2.sigkill();

    tokio::time::sleep(pause).await;
    let target = if owners[0] == "cell-1" { "cell-2" } else { "cell-1" };
    println!("moving f0 from {} to {target}", owners[0]);
    federation.move_function("acme", "f0", target).await;

    load.await.unwrap();
    assert!(done.load(Ordering::Relaxed));
    let ids = ids.lock().await.clone();
    assert_eq!(ids.len(), CALLS);

    // Every call ends: succeeded, or dead with its reason; none lost.
    let reader = routers.lock().await[0].clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut succeeded, mut dead, mut tries) = (0usize, 0usize, 0u64);
    for id in &ids {
        loop {
            let answer = client.get(format!("{reader}/v1/calls/{id}")).bearer_auth(&key).send().await;
            let Ok(answer) = answer else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            assert_eq!(answer.status(), 200, "call {id} is not lost");
            let call: Value = answer.json().await.unwrap();
            match call["state"].as_str().unwrap() {
                "succeeded" => succeeded += 1,
                "dead" => {
                    assert!(call["dead_reason"].is_string(), "a dead call says why: {call}");
                    dead += 1;
                }
                "failed" => panic!("nothing here fails for good: {call}"),
                _ => {
                    assert!(Instant::now() < deadline, "call {id} never ended: {call}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            tries += call["attempts"].as_u64().unwrap();
            break;
        }
    }
    println!(
        "{CALLS} calls: {succeeded} succeeded, {dead} dead; {tries} tries, {} above one per call (30 % failures alone \
         would make about {})",
        tries - CALLS as u64,
        (CALLS as f64 * (1.0 / 0.7 - 1.0)).round()
    );
    assert_eq!(succeeded + dead, CALLS);
    assert!(dead <= 5, "ten tries at 30 % failures leave almost none dead: {dead}");
}
