//! `baton-router`: the federation's front door.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_router::config::RouterConfig;
use clap::Parser;

#[derive(Parser)]
#[command(name = "baton-router", version, about = "baton's front door: tenant API and invocation routing")]
struct Cli {
    /// TOML config file (see router/router.example.toml for every field and its default).
    #[arg(long, short = 'c', env = "BATON_ROUTER_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (router.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address (router.admin_listen).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Shard-manager gRPC URLs, comma-separated (router.shard_managers).
    #[arg(long, value_delimiter = ',')]
    shard_managers: Option<Vec<String>>,
}

impl Cli {
    fn overrides(&self) -> serde_json::Value {
        let mut router = serde_json::Map::new();
        if let Some(listen) = self.listen {
            router.insert("listen".into(), listen.to_string().into());
        }
        if let Some(admin) = self.admin_listen {
            router.insert("admin_listen".into(), admin.to_string().into());
        }
        if let Some(managers) = &self.shard_managers {
            router.insert("shard_managers".into(), managers.clone().into());
        }
        serde_json::json!({ "router": router })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: RouterConfig =
        baton_service::load_config(cli.config.as_deref(), &cli.overrides()).context("loading the configuration")?;
    baton_service::logging::init_logging(&config.log);
    let signal = baton_service::shutdown::ShutdownSignal::install();
    let listeners = baton_router::daemon::Listeners::bind(&config).await?;
    let router = baton_router::daemon::start(config, listeners).await.context("starting the router")?;
    println!("baton-router listening on http://{} (admin http://{})", router.addr, router.admin_addr);
    signal.wait().await;
    tracing::info!("shutting down");
    router.shutdown().await;
    Ok(())
}
