//! `baton-worker demo`: the quickest way to see a real sandbox. Starts a standalone worker
//! on free ports, creates a sandbox for `baton-fn-echo` through the gRPC API, calls it, and
//! keeps it serving until Ctrl-C, then deletes it.

use std::path::PathBuf;

use anyhow::Context;
use baton_proto::worker::worker_client::WorkerClient;
use baton_proto::worker::{CreateSandboxRequest, DeleteSandboxRequest, Resources, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use baton_worker::config::{RuntimeChoice, WorkerConfig};

/// Runs the demo.
pub async fn run(mut config: WorkerConfig, function: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        function.exists(),
        "{} does not exist; build the sample functions first: cargo build --release --bins",
        function.display()
    );
    config.worker.runtime = RuntimeChoice::Process;
    config.worker.listen = "127.0.0.1:0".parse()?;
    config.worker.admin_listen = "127.0.0.1:0".parse()?;
    let state_dir = std::env::temp_dir().join("baton-worker-demo");
    config.worker.state_dir = state_dir.clone();
    config.control_plane.address.clear();
    // Standalone on loopback, called only by the demo itself.
    config.tls = baton_worker::config::TlsConfig { plaintext: true, ..Default::default() };
    // A copy in a folder everyone may enter: the checkout (under /root, say) may be out of
    // the sandbox user's reach, and the demo shows the full isolation.
    let copies = std::env::temp_dir().join("baton-worker-demo-fn");
    let reachable = baton_worker::process::reachable_copy(&function, &copies)
        .with_context(|| format!("copying {} to {}", function.display(), copies.display()))?;
    let worker = baton_worker::bind_and_start(config).await?;
    let mut client = WorkerClient::connect(format!("http://{}", worker.grpc_addr)).await?;
    let created = client
        .create_sandbox(CreateSandboxRequest {
            node_id: String::new(),
            sandbox_id: "demo-echo".into(),
            spec: Some(SandboxSpec {
                function_id: "echo".into(),
                executable: reachable.display().to_string(),
                resources: Some(Resources { cpu_millis: 500, memory_mib: 128, pids: 64 }),
                ..SandboxSpec::default()
            }),
        })
        .await
        .context("creating the demo sandbox")?
        .into_inner();
    let latency = created.latency.unwrap_or_default();
    let isolation = created.isolation.unwrap_or_default();
    println!("sandbox demo-echo ready at http://{} (pid {})", created.endpoint, created.pid);
    println!(
        "  isolation: {} (namespaces: {}, cgroup: {}, unprivileged user: {})",
        isolation.level,
        isolation.pid_namespace,
        if isolation.cgroup.is_empty() { "none" } else { &isolation.cgroup },
        isolation.unprivileged_user
    );
    println!(
        "  created in {} µs (cgroup {} µs, spawn {} µs, readiness {} µs)",
        latency.total_us, latency.cgroup_us, latency.spawn_us, latency.readiness_us
    );
    let answer = post(&created.endpoint, "/hello?from=demo", "hi sandbox").await?;
    println!("POST /hello?from=demo answered:\n  {answer}");
    println!("metrics: http://{}/metrics", worker.admin_addr);
    println!("try: curl -s -d hello http://{}/any/path", created.endpoint);
    // Handlers first: a Ctrl-C right after the prompt must stop the demo cleanly.
    let stop = baton_service::shutdown::ShutdownSignal::install();
    println!("Ctrl-C stops the demo and deletes the sandbox.");
    stop.wait().await;
    client
        .delete_sandbox(DeleteSandboxRequest { sandbox_id: "demo-echo".into(), ..Default::default() })
        .await
        .context("deleting the demo sandbox")?;
    worker.shutdown().await;
    std::fs::remove_dir_all(&copies).with_context(|| format!("removing {}", copies.display()))?;
    std::fs::remove_dir_all(&state_dir).with_context(|| format!("removing {}", state_dir.display()))?;
    println!("sandbox deleted; nothing left behind.");
    Ok(())
}

/// A minimal HTTP/1.1 POST, returning the response body.
async fn post(endpoint: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(endpoint).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: text/plain\r\nX-Demo: yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response.split_once("\r\n\r\n").context("a malformed HTTP response")?;
    Ok(body.to_string())
}
