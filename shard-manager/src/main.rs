//! `baton-shard-manager`: one replica of the federation's shard manager.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_shard_manager::config::ShardManagerConfig;
use clap::Parser;

#[derive(Parser, serde::Serialize)]
#[command(name = "baton-shard-manager", version, about = "One replica of baton's shard manager")]
struct Cli {
    /// TOML config file (see shard-manager/shard-manager.example.toml for every field and its
    /// default).
    #[arg(long, short = 'c', env = "BATON_SHARD_MANAGER_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Raft node ID (node.id).
    #[arg(long)]
    #[serde(skip)]
    id: Option<u64>,
    /// gRPC listen address (node.listen).
    #[arg(long)]
    #[serde(skip)]
    listen: Option<SocketAddr>,
    /// Admin listen address (node.admin_listen).
    #[arg(long)]
    #[serde(skip)]
    admin_listen: Option<SocketAddr>,
    /// Raft data folder (node.data_dir).
    #[arg(long)]
    #[serde(skip)]
    data_dir: Option<PathBuf>,
    /// The initial cluster, "ID=HOST:PORT" comma-separated (node.initial_members).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip)]
    initial_members: Option<Vec<String>>,
    /// Join an existing cluster instead of forming one (node.join).
    #[arg(long)]
    #[serde(skip)]
    join: bool,
}

impl Cli {
    fn overrides(&self) -> serde_json::Value {
        let mut node = serde_json::Map::new();
        if let Some(id) = self.id {
            node.insert("id".into(), id.into());
        }
        if let Some(listen) = self.listen {
            node.insert("listen".into(), listen.to_string().into());
        }
        if let Some(admin) = self.admin_listen {
            node.insert("admin_listen".into(), admin.to_string().into());
        }
        if let Some(dir) = &self.data_dir {
            node.insert("data_dir".into(), dir.display().to_string().into());
        }
        if let Some(members) = &self.initial_members {
            node.insert("initial_members".into(), members.clone().into());
        }
        if self.join {
            node.insert("join".into(), true.into());
        }
        serde_json::json!({ "node": node })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: ShardManagerConfig =
        baton_service::load_config(cli.config.as_deref(), &cli.overrides()).context("loading the configuration")?;
    baton_service::logging::init_logging(&config.log);
    let _metrics = baton_service::admin::metrics_handle();
    baton_shard_manager::daemon::run(config).await?;
    Ok(())
}
