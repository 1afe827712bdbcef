//! `baton`: run a local federation (`baton up`), manage functions and call them (through
//! a router: `BATON_URL`, `BATON_API_KEY`), and operate the federation (through the shard
//! manager: `BATON_SHARD_MANAGER`).

mod admin;
mod calls;
mod certs;
mod observe;
mod output;
mod ports;
mod tenant;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton", version, about = "baton: a sharded FaaS federation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a complete local federation (1 shard manager, 2 cells with a process-runtime
    /// worker each, 1 router), create a dev tenant and key, deploy `echo` and `spin`, and
    /// write `$BATON_HOME/env`. Ctrl-C stops everything.
    Up(up::UpArgs),
    /// Deploy, list, read and delete functions (tenant API, through the router).
    #[command(subcommand)]
    Functions(tenant::FunctionsCommand),
    /// Call a function through the router; prints the answer's body.
    Invoke(tenant::InvokeArgs),
    /// Async calls: how one went (through the router).
    #[command(subcommand)]
    Calls(calls::CallsCommand),
    /// A function's dead letters: list, send again, purge (through the router).
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(calls::DeadLettersCommand),
    /// The tenant's credentials for private image registries (through the router).
    #[command(subcommand)]
    Registries(tenant::RegistriesCommand),
    /// Tenants (shard manager).
    #[command(subcommand)]
    Tenants(admin::TenantsCommand),
    /// API keys (shard manager).
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Cells: list, drain, fill (shard manager).
    #[command(subcommand)]
    Cells(admin::CellsCommand),
    /// Move a function to another cell, gracefully (shard manager).
    Move(admin::MoveArgs),
    /// Shard-manager replicas: status, add, change voters.
    #[command(subcommand)]
    Replicas(admin::ReplicasCommand),
    /// A federation's certificate authority and its processes' certificates (mutual TLS).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// Where `baton up` keeps its files: `$BATON_HOME`, else `~/.baton`.
fn baton_home() -> PathBuf {
    match std::env::var_os("BATON_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".baton"),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args, baton_home()).await,
        Command::Functions(command) => tenant::functions(command).await,
        Command::Invoke(args) => tenant::invoke(args).await,
        Command::Registries(command) => tenant::registries(command).await,
        Command::Calls(command) => calls::calls(command).await,
        Command::DeadLetters(command) => calls::dead_letters(command).await,
        Command::Tenants(command) => admin::tenants(command).await,
        Command::Keys(command) => admin::keys(command).await,
        Command::Cells(command) => admin::cells(command).await,
        Command::Move(args) => admin::move_function(args).await,
        Command::Replicas(command) => admin::replicas(command).await,
        Command::Certs(command) => certs::certs(command),
    };
    if let Err(e) = result {
        eprintln!("baton: {e:#}");
        std::process::exit(1);
    }
}
