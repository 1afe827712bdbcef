//! `baton-cell`: one cell's control plane, data plane, or both (`--role`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_cell::config::CellConfig;
use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::cell::{DeleteFunctionRequest, GetFunctionRequest, ListFunctionsRequest, PutFunctionRequest};
use baton_service::tls::{Tls, ToolCredentials};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton-cell", version, about = "A baton cell: control plane and/or data plane")]
struct Cli {
    /// TOML config file (see cell/cell.example.toml for every field and its default).
    #[arg(long, short = 'c', env = "BATON_CELL_CONFIG")]
    config: Option<PathBuf>,
    /// control, data or all (cell.role).
    #[arg(long)]
    role: Option<String>,
    /// Cell ID (cell.id).
    #[arg(long)]
    id: Option<String>,
    /// CellControl gRPC listen address (control_plane.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Invocation ingress listen address (data_plane.listen).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Admin listen address (cell.admin_listen).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Control plane a data plane follows (data_plane.control_plane).
    #[arg(long)]
    control_plane: Option<String>,
    /// Redis URL for the store (store.redis_url); without it the embedded store is used.
    #[arg(long)]
    redis: Option<String>,
    /// Embedded store file (store.path).
    #[arg(long)]
    store_path: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage a running cell's functions (until the `baton` CLI arrives).
    Functions {
        /// gRPC URL of the cell's control plane.
        #[arg(long, default_value = "http://127.0.0.1:7100")]
        control_plane: String,
        #[command(flatten)]
        credentials: ToolCredentials,
        #[command(subcommand)]
        action: FunctionAction,
    },
}

#[derive(Subcommand)]
enum FunctionAction {
    /// Register or update a function from a JSON spec file (`-` reads standard input).
    Put { file: PathBuf },
    /// Show one function's spec and scale.
    Get { name: String },
    /// List functions.
    List,
    /// Delete a function and its sandboxes.
    Delete { name: String },
}

async fn functions(control_plane: String, tls: Tls, action: FunctionAction) -> anyhow::Result<()> {
    let channel = tls.connect_url(&control_plane).await.map_err(|e| anyhow::anyhow!("the control plane: {e}"))?;
    let mut api = CellControlClient::new(channel);
    let show = |info: baton_proto::cell::FunctionInfo| {
        println!("{}  ready={} creating={} desired={}", info.spec_json, info.ready, info.creating, info.desired);
    };
    match action {
        FunctionAction::Put { file } => {
            let spec_json = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let created = api
                .put_function(PutFunctionRequest { spec_json, pull_first: false })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!("{}", if created.into_inner().created { "created" } else { "updated" });
        }
        FunctionAction::Get { name } => show(
            api.get_function(GetFunctionRequest { name })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner(),
        ),
        FunctionAction::List => {
            for info in api.list_functions(ListFunctionsRequest {}).await?.into_inner().functions {
                show(info);
            }
        }
        FunctionAction::Delete { name } => {
            api.delete_function(DeleteFunctionRequest { name })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!("deleted");
        }
    }
    Ok(())
}

impl Cli {
    fn overrides(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        let mut set = |section: &str, key: &str, value: Option<serde_json::Value>| {
            if let Some(v) = value {
                let entry = root.entry(section.to_string()).or_insert_with(|| serde_json::json!({}));
                entry.as_object_mut().expect("sections are objects").insert(key.to_string(), v);
            }
        };
        set("cell", "role", self.role.clone().map(Into::into));
        set("cell", "id", self.id.clone().map(Into::into));
        set("cell", "admin_listen", self.admin_listen.map(|a| a.to_string().into()));
        set("control_plane", "listen", self.listen.map(|a| a.to_string().into()));
        set("data_plane", "listen", self.http_listen.map(|a| a.to_string().into()));
        set("data_plane", "control_plane", self.control_plane.clone().map(Into::into));
        set("store", "redis_url", self.redis.clone().map(Into::into));
        set("store", "path", self.store_path.as_ref().map(|p| p.display().to_string().into()));
        serde_json::Value::Object(root)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Functions { control_plane, credentials, action }) = cli.command {
        return functions(control_plane, credentials.tls()?, action).await;
    }
    let config: CellConfig = baton_service::load_config(cli.config.as_deref(), &cli.overrides())
        .context("loading the cell configuration")?;
    baton_service::logging::init_logging(&config.log);
    let signal = baton_service::shutdown::ShutdownSignal::install();
    let listeners = baton_cell::daemon::Listeners::bind(&config).await?;
    let cell = baton_cell::daemon::start(config, listeners).await?;
    println!(
        "baton-cell serving control={} http={} admin={}",
        cell.control_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        cell.http_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        cell.admin_addr
    );
    signal.wait().await;
    cell.shutdown().await;
    Ok(())
}
