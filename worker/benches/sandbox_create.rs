//! Sandbox creation benchmark (not a test): create-to-ready latency of the process runtime,
//! sequential and 8 at a time, with full isolation and with none (the in-run baseline), and
//! the emulated runtime's creations per second through one worker process's gRPC API.
//!
//! Run as root after building the release binaries:
//!   cargo build --release --bins && cargo bench -p baton-worker --bench sandbox_create
//! Optional: `-- --n 300 --emulated 4000 --emulated-concurrency 256`.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::SandboxId;
use baton_proto::worker::worker_client::WorkerClient;
use baton_proto::worker::{CreateSandboxRequest, Resources as WireResources, SandboxSpec as WireSpec};
use baton_worker::SandboxRuntime;
use baton_worker::config::{NetworkSection, ProcessSection, RuntimeChoice, WorkerConfig};
use baton_worker::process::ProcessRuntime;
use baton_worker::runtime::{PortRequest, Resources, SandboxSpec};
use common::{arg, percentile, release_bin};

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Which isolation features a run turns on.
#[derive(Clone, Copy)]
struct Isolation {
    namespaces: bool,
    cgroups: bool,
    user: bool,
    /// The packet filter on sandbox uids (only with `user`).
    filter: bool,
}

const NONE: Isolation = Isolation { namespaces: false, cgroups: false, user: false, filter: false };
const FULL: Isolation = Isolation { namespaces: true, cgroups: true, user: true, filter: true };

async fn process_run(label: &str, iso: Isolation, n: usize, concurrency: usize) {
    let config = ProcessSection {
        port_range_start: 24000,
        port_range_end: 24999,
        cgroup_parent: format!("baton-bench-{}", std::process::id()),
        namespaces: iso.namespaces,
        cgroups: iso.cgroups,
        user: if iso.user { "nobody".into() } else { String::new() },
        network: NetworkSection { filter: iso.filter, ..NetworkSection::default() },
        ..ProcessSection::default()
    };
    let state = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = ProcessRuntime::start(config, &state, tx).await.unwrap();
    // In a folder everyone may enter, so `nobody` runs it wherever the checkout lives.
    let reachable = tempfile::Builder::new().prefix("baton-bench-fn-").tempdir_in("/tmp").unwrap();
    let echo = baton_worker::process::reachable_copy(&release_bin("baton-fn-echo"), reachable.path()).unwrap();
    let spec = SandboxSpec {
        function_id: "echo".into(),
        executable: echo,
        args: vec![],
        env: Default::default(),
        port: PortRequest::Any,
        resources: Resources { cpu_millis: 500, memory_mib: 64, pids: 64 },
        readiness_timeout: Duration::from_secs(10),
        readiness_path: "/healthz".into(),
        image: None,
    };
    // Warm-up: page cache, first fork.
    for i in 0..5 {
        let id = SandboxId::new(format!("warm-{i}")).unwrap();
        runtime.create(id.clone(), spec.clone()).await.unwrap();
        runtime.delete(&id, Duration::from_secs(2)).await.unwrap();
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let phases = Arc::new(std::sync::Mutex::new((Duration::ZERO, Duration::ZERO, Duration::ZERO)));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for lane in 0..concurrency {
        let (runtime, spec, samples, phases) = (runtime.clone(), spec.clone(), samples.clone(), phases.clone());
        lanes.push(tokio::spawn(async move {
            for i in (lane..n).step_by(concurrency) {
                let id = SandboxId::new(format!("b-{i}")).unwrap();
                let t = Instant::now();
                let created = runtime.create(id.clone(), spec.clone()).await.unwrap();
                samples.lock().unwrap().push(t.elapsed());
                {
                    let mut p = phases.lock().unwrap();
                    p.0 += created.latency.cgroup;
                    p.1 += created.latency.spawn;
                    p.2 += created.latency.readiness;
                }
                runtime.delete(&id, Duration::from_secs(2)).await.unwrap();
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    let wall = started.elapsed();
    runtime.shutdown(true, Duration::from_secs(1)).await;
    let mut s = samples.lock().unwrap().clone();
    s.sort();
    let p = *phases.lock().unwrap();
    let mean = |d: Duration| ms(d / n as u32);
    println!(
        "| {label} | {concurrency} | {n} | {} | {} | {} | {} / {} / {} | {:.0} |",
        ms(percentile(&s, 0.5)),
        ms(percentile(&s, 0.99)),
        ms(*s.last().unwrap()),
        mean(p.0),
        mean(p.1),
        mean(p.2),
        n as f64 / wall.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(state);
}

async fn emulated_run(n: usize, concurrency: usize) {
    let mut config = WorkerConfig::default();
    config.worker.runtime = RuntimeChoice::Emulated;
    config.worker.listen = "127.0.0.1:0".parse().unwrap();
    config.worker.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.worker.state_dir = std::env::temp_dir().join("baton-bench-emulated");
    config.worker.max_sandboxes = n as u32 + 10;
    config.worker.cpu_millis = u32::MAX / 2;
    config.worker.memory_mib = u64::MAX / 4;
    let worker = baton_worker::bind_and_start(config).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", worker.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for _ in 0..concurrency {
        let (mut client, next) = (WorkerClient::new(channel.clone()), next.clone());
        lanes.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                client
                    .create_sandbox(CreateSandboxRequest {
                        node_id: String::new(),
                        sandbox_id: format!("e-{i}"),
                        spec: Some(WireSpec {
                            function_id: "f".into(),
                            resources: Some(WireResources { cpu_millis: 1, memory_mib: 4, pids: 1 }),
                            ..WireSpec::default()
                        }),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    let wall = started.elapsed();
    println!(
        "| emulated (40 ms), gRPC | {concurrency} in flight | {n} | {:.0} creations/s | ideal {:.0}/s |",
        n as f64 / wall.as_secs_f64(),
        concurrency as f64 / 0.040
    );
    worker.shutdown().await;
}

#[tokio::main]
async fn main() {
    let n = arg("--n", 200);
    println!(
        "| runtime | concurrency | creations | p50 ms | p99 ms | max ms | mean cgroup / spawn / readiness ms | creations/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let namespaces_only = Isolation { namespaces: true, ..NONE };
    let cgroups_only = Isolation { cgroups: true, ..NONE };
    process_run("process, no isolation (baseline)", NONE, n, 1).await;
    process_run("process, namespaces only", namespaces_only, n, 1).await;
    process_run("process, cgroup only", cgroups_only, n, 1).await;
    process_run("process, full isolation but the packet filter", Isolation { filter: false, ..FULL }, n, 1).await;
    process_run("process, full isolation", FULL, n, 1).await;
    process_run("process, no isolation (baseline)", NONE, n, 8).await;
    process_run("process, full isolation", FULL, n, 8).await;
    println!();
    let emulated = arg("--emulated", 4000);
    for concurrency in [arg("--emulated-concurrency", 256), 1024] {
        emulated_run(emulated, concurrency).await;
    }
}
