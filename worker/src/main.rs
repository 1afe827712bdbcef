//! `baton-worker`: the worker-node daemon. `baton-worker demo` creates a real sandbox for
//! `baton-fn-echo`, calls it, and keeps it serving until Ctrl-C.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_worker::config::{RuntimeChoice, WorkerConfig};
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "baton-worker", version, about = "baton's worker-node daemon")]
struct Cli {
    /// TOML config file (see worker/worker.example.toml for every field and its default).
    #[arg(long, short = 'c', env = "BATON_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (worker.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address for /metrics, /healthz, /readyz (worker.admin_listen).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Node ID (worker.node_id).
    #[arg(long)]
    node_id: Option<String>,
    /// Sandbox runtime (worker.runtime).
    #[arg(long, value_enum)]
    runtime: Option<Runtime>,
    /// State folder (worker.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Register N emulated worker nodes (implies --runtime emulated; emulated.nodes).
    #[arg(long)]
    emulate_nodes: Option<u32>,
    /// gRPC URL of the control plane (control_plane.address).
    #[arg(long)]
    control_plane: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a worker, create a sandbox for baton-fn-echo, call it, and serve until Ctrl-C.
    Demo {
        /// Path of the function executable (default: baton-fn-echo next to this binary).
        #[arg(long)]
        function: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Runtime {
    Process,
    Emulated,
}

/// The flags that were given, shaped like the config so they layer on top of it.
#[derive(Serialize, Default)]
struct Overrides {
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    worker: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    emulated: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    control_plane: serde_json::Map<String, serde_json::Value>,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        let set = |map: &mut serde_json::Map<_, _>, key: &str, value: Option<serde_json::Value>| {
            if let Some(v) = value {
                map.insert(key.to_string(), v);
            }
        };
        set(&mut o.worker, "listen", self.listen.map(|a| a.to_string().into()));
        set(&mut o.worker, "admin_listen", self.admin_listen.map(|a| a.to_string().into()));
        set(&mut o.worker, "node_id", self.node_id.clone().map(Into::into));
        set(&mut o.worker, "state_dir", self.state_dir.as_ref().map(|p| p.display().to_string().into()));
        let runtime = match (self.runtime, self.emulate_nodes) {
            (_, Some(_)) | (Some(Runtime::Emulated), _) => Some("emulated"),
            (Some(Runtime::Process), None) => Some("process"),
            (None, None) => None,
        };
        set(&mut o.worker, "runtime", runtime.map(Into::into));
        set(&mut o.emulated, "nodes", self.emulate_nodes.map(Into::into));
        set(&mut o.control_plane, "address", self.control_plane.clone().map(Into::into));
        o
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config: WorkerConfig = baton_service::load_config(cli.config.as_deref(), &cli.overrides())
        .context("loading the worker configuration")?;
    baton_service::logging::init_logging(&config.log);
    match cli.command {
        Some(Command::Demo { function }) => {
            let function = match function {
                Some(f) => f,
                None => std::env::current_exe()?.with_file_name("baton-fn-echo"),
            };
            demo::run(config, function).await
        }
        None => {
            if config.worker.runtime == RuntimeChoice::Process && cli.state_dir.is_none() {
                config.worker.state_dir = usable_state_dir(config.worker.state_dir);
            }
            let worker = baton_worker::bind_and_start(config).await?;
            println!("baton-worker serving gRPC on {} and /metrics on {}", worker.grpc_addr, worker.admin_addr);
            baton_service::shutdown::shutdown_signal().await;
            worker.shutdown().await;
            Ok(())
        }
    }
}

/// The configured state folder if it can be created, else a temporary one (with a warning).
fn usable_state_dir(configured: PathBuf) -> PathBuf {
    if std::fs::create_dir_all(&configured).is_ok() {
        return configured;
    }
    let fallback = baton_worker::daemon::fallback_state_dir();
    tracing::warn!(
        configured = %configured.display(),
        using = %fallback.display(),
        "cannot create worker.state_dir; using a temporary folder (sandboxes will not be re-adopted across reboots)"
    );
    fallback
}
