//! `baton-cell`: one cell's control plane, data plane, or both (`--role`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_cell::config::CellConfig;
use clap::Parser;

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
    let config: CellConfig = baton_service::load_config(cli.config.as_deref(), &cli.overrides())
        .context("loading the cell configuration")?;
    baton_service::logging::init_logging(&config.log);
    let cell = baton_cell::daemon::start(config).await?;
    println!(
        "baton-cell serving control={} http={} admin={}",
        cell.control_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        cell.http_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        cell.admin_addr
    );
    baton_service::shutdown::shutdown_signal().await;
    cell.shutdown().await;
    Ok(())
}
