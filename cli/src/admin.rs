//! Operator commands, through the shard manager's gRPC API (`BATON_SHARD_MANAGER`; any
//! replica: writes reach the leader).

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{
    AddReplicaRequest, ChangeVotersRequest, CreateApiKeyRequest, DeleteTenantRequest, GetStatusRequest,
    ListApiKeysRequest, ListCellsRequest, ListTenantsRequest, MoveFunctionRequest, PutTenantRequest,
    RevokeApiKeyRequest, SetCellStateRequest, StatusResponse,
};
use baton_service::tls::ToolCredentials;
use clap::{Args, Subcommand};
use serde_json::json;
use tonic::transport::Channel;

use crate::output::{OutputArgs, Table, cell};

/// Which shard manager, and the operator's credentials for it.
#[derive(Args)]
pub struct ManagerArgs {
    /// gRPC URL of a shard-manager replica.
    #[arg(long, env = "BATON_SHARD_MANAGER", default_value = "http://127.0.0.1:7500")]
    shard_manager: String,
    #[command(flatten)]
    credentials: ToolCredentials,
}

impl ManagerArgs {
    async fn connect(&self) -> anyhow::Result<ShardManagerClient<Channel>> {
        let channel = self.credentials.tls()?.connect_url(&self.shard_manager).await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(ShardManagerClient::new(channel).max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES))
    }
}

/// A refusal in words: the server's message, and what the connection said where it
/// broke (a server that requires mutual TLS says so in its GOAWAY).
fn refused(status: tonic::Status) -> anyhow::Error {
    let mut message = status.message().to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    anyhow::anyhow!(message)
}

/// `baton tenants …`
#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create (or update) a tenant.
    Create {
        /// Its name: lowercase letters, digits and '-'.
        name: String,
        /// Region its functions live in unless they say otherwise.
        #[arg(long, default_value = "local")]
        region: String,
        /// Most functions it may have; 0: the federation's default
        /// (the shard manager's functions.max_per_tenant).
        #[arg(long, default_value_t = 0)]
        max_functions: u32,
        /// Let it register functions that run a host executable (the process runtime).
        /// Each create is whole: without this flag an update takes the permission away.
        #[arg(long)]
        executables: bool,
        /// Most sandboxes its functions may ever have at once (the sum of their
        /// scaling.max_scale); 0: the federation's default.
        #[arg(long, default_value_t = 0)]
        max_sandboxes: u64,
        /// Most CPU, thousandths of a core, its functions may hold even when idle (the sum
        /// of min_scale × cpu_millis); 0: the federation's default.
        #[arg(long, default_value_t = 0)]
        max_reserved_cpu: u64,
        /// Most memory, MiB, its functions may hold even when idle (the sum of min_scale ×
        /// memory_mib); 0: the federation's default.
        #[arg(long, default_value_t = 0)]
        max_reserved_memory: u64,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// Delete a tenant that has no functions left; its API keys are revoked with it.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// The tenants, their limits and how many functions each has.
    List {
        #[command(flatten)]
        manager: ManagerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `baton keys …`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant; prints it once (only its hash is stored).
    Create {
        /// The tenant.
        tenant: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// Revoke a key by its ID (printed when it was created).
    Revoke {
        /// The key's ID: 16 hex digits.
        key_id: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// The keys by ID and tenant (the keys themselves are stored nowhere).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        manager: ManagerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `baton cells …`
#[derive(Subcommand)]
pub enum CellsCommand {
    /// The cells, their state and how many functions each owns.
    List {
        #[command(flatten)]
        manager: ManagerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Drain a cell: it takes nothing new and its functions move away gracefully.
    Drain {
        /// The cell's ID.
        cell: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// Fill a drained cell: it takes functions again.
    Fill {
        /// The cell's ID.
        cell: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
}

/// `baton replicas …`
#[derive(Subcommand)]
pub enum ReplicasCommand {
    /// The replica's view: leader, voters, learners, epoch.
    Status {
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// Add a replica started with `--join` as a learner (waits until it has caught up).
    Add {
        /// Its raft ID.
        id: u64,
        /// Its gRPC address, HOST:PORT.
        address: String,
        #[command(flatten)]
        manager: ManagerArgs,
    },
    /// Make exactly these replicas the voters.
    Voters {
        /// Raft IDs, comma-separated.
        #[arg(value_delimiter = ',', required = true)]
        ids: Vec<u64>,
        #[command(flatten)]
        manager: ManagerArgs,
    },
}

/// Runs a `baton replicas` command.
pub async fn replicas(command: ReplicasCommand) -> anyhow::Result<()> {
    let status = match command {
        ReplicasCommand::Status { manager } => manager.connect().await?.get_status(GetStatusRequest {}).await,
        ReplicasCommand::Add { id, address, manager } => {
            manager.connect().await?.add_replica(AddReplicaRequest { id, address }).await
        }
        ReplicasCommand::Voters { ids, manager } => {
            manager.connect().await?.change_voters(ChangeVotersRequest { voters: ids }).await
        }
    };
    let StatusResponse { node_id, leader_id, epoch, voters, learners } = status.map_err(refused)?.into_inner();
    println!("replica {node_id}: leader {leader_id}, epoch {epoch}");
    println!("voters:   {}", voters.join(" "));
    println!("learners: {}", if learners.is_empty() { "-".to_string() } else { learners.join(" ") });
    Ok(())
}

/// `baton move`
#[derive(Args)]
pub struct MoveArgs {
    /// The function's name.
    name: String,
    /// Its tenant.
    #[arg(long)]
    tenant: String,
    /// The target cell.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    manager: ManagerArgs,
}

/// Runs a `baton tenants` command.
pub async fn tenants(command: TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create {
            name,
            region,
            max_functions,
            executables,
            max_sandboxes,
            max_reserved_cpu,
            max_reserved_memory,
            manager,
        } => {
            let request = PutTenantRequest {
                name: name.clone(),
                default_region: region,
                max_functions,
                executables,
                max_sandboxes,
                max_reserved_cpu_millis: max_reserved_cpu,
                max_reserved_memory_mib: max_reserved_memory,
            };
            manager.connect().await?.put_tenant(request).await.map_err(refused)?;
            println!("tenant {name} ready");
        }
        TenantsCommand::Delete { name, manager } => {
            let request = DeleteTenantRequest { name: name.clone() };
            manager.connect().await?.delete_tenant(request).await.map_err(refused)?;
            println!("tenant {name} deleted");
        }
        TenantsCommand::List { manager, output } => {
            let listed =
                manager.connect().await?.list_tenants(ListTenantsRequest { min_epoch: 0 }).await.map_err(refused)?;
            let tenants: Vec<serde_json::Value> = listed
                .into_inner()
                .tenants
                .into_iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "default_region": t.default_region,
                        "max_functions": t.max_functions,
                        "functions": t.functions,
                        "executables": t.executables,
                        "max_sandboxes": t.max_sandboxes,
                        "sandboxes": t.sandboxes,
                        "max_reserved_cpu_millis": t.max_reserved_cpu_millis,
                        "reserved_cpu_millis": t.reserved_cpu_millis,
                        "max_reserved_memory_mib": t.max_reserved_memory_mib,
                        "reserved_memory_mib": t.reserved_memory_mib,
                    })
                })
                .collect();
            crate::output::print(output.output, &json!({ "tenants": tenants }), |_| {
                let mut table = Table::new(&[
                    "TENANT",
                    "REGION",
                    "FUNCTIONS",
                    "LIMIT",
                    "EXECUTABLES",
                    "SANDBOXES",
                    "RESERVED_CPU",
                    "RESERVED_MIB",
                ]);
                // `used/limit`, or just `used` without a limit.
                let of = |t: &serde_json::Value, used: &str, limit: &str| match t[limit].as_u64() {
                    Some(0) | None => cell(&t[used]),
                    Some(n) => format!("{}/{n}", cell(&t[used])),
                };
                for t in &tenants {
                    let limit = match t["max_functions"].as_u64() {
                        Some(0) | None => "federation default".to_string(),
                        Some(n) => n.to_string(),
                    };
                    let executables = if t["executables"] == json!(true) { "allowed" } else { "no" };
                    table.row(vec![
                        cell(&t["name"]),
                        cell(&t["default_region"]),
                        cell(&t["functions"]),
                        limit,
                        executables.to_string(),
                        of(t, "sandboxes", "max_sandboxes"),
                        of(t, "reserved_cpu_millis", "max_reserved_cpu_millis"),
                        of(t, "reserved_memory_mib", "max_reserved_memory_mib"),
                    ]);
                }
                table
            });
        }
    }
    Ok(())
}

/// Runs a `baton keys` command.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { tenant, manager } => {
            let key = manager.connect().await?.create_api_key(CreateApiKeyRequest { tenant }).await.map_err(refused)?;
            let key = key.into_inner();
            println!("key:    {}\nkey_id: {}", key.key, key.key_id);
        }
        KeysCommand::Revoke { key_id, manager } => {
            let request = RevokeApiKeyRequest { key_id: key_id.clone() };
            manager.connect().await?.revoke_api_key(request).await.map_err(refused)?;
            println!("key {key_id} revoked");
        }
        KeysCommand::List { tenant, manager, output } => {
            let request = ListApiKeysRequest { tenant: tenant.unwrap_or_default(), min_epoch: 0 };
            let listed = manager.connect().await?.list_api_keys(request).await.map_err(refused)?;
            let keys: Vec<serde_json::Value> = listed
                .into_inner()
                .keys
                .into_iter()
                .map(|k| json!({ "key_id": k.key_id, "tenant": k.tenant }))
                .collect();
            crate::output::print(output.output, &json!({ "keys": keys }), |_| {
                let mut table = Table::new(&["KEY ID", "TENANT"]);
                for k in &keys {
                    table.row(vec![cell(&k["key_id"]), cell(&k["tenant"])]);
                }
                table
            });
        }
    }
    Ok(())
}

/// Runs a `baton cells` command.
pub async fn cells(command: CellsCommand) -> anyhow::Result<()> {
    let (manager, cell_id, state) = match command {
        CellsCommand::List { manager, output } => {
            let listed = manager.connect().await?.list_cells(ListCellsRequest {}).await.map_err(refused)?;
            let cells: Vec<serde_json::Value> = listed
                .into_inner()
                .cells
                .into_iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "region": c.region,
                        "state": c.state,
                        "functions": c.functions,
                        "weight": c.weight,
                        "control": c.control,
                        "data_planes": c.data_planes,
                    })
                })
                .collect();
            crate::output::print(output.output, &json!({ "cells": cells }), |_| {
                let mut table = Table::new(&["CELL", "REGION", "STATE", "FUNCTIONS", "DATA PLANES"]);
                for c in &cells {
                    let planes: Vec<String> = c["data_planes"].as_array().into_iter().flatten().map(cell).collect();
                    table.row(vec![
                        cell(&c["id"]),
                        cell(&c["region"]),
                        cell(&c["state"]),
                        cell(&c["functions"]),
                        planes.join(","),
                    ]);
                }
                table
            });
            return Ok(());
        }
        CellsCommand::Drain { cell, manager } => (manager, cell, "draining"),
        CellsCommand::Fill { cell, manager } => (manager, cell, "active"),
    };
    let request = SetCellStateRequest { cell: cell_id.clone(), state: state.into() };
    manager.connect().await?.set_cell_state(request).await.map_err(refused)?;
    println!("cell {cell_id} is {state}");
    Ok(())
}

/// Runs `baton move`.
pub async fn move_function(args: MoveArgs) -> anyhow::Result<()> {
    let request = MoveFunctionRequest { tenant: args.tenant, name: args.name.clone(), cell: args.to };
    let moved = args.manager.connect().await?.move_function(request).await.map_err(refused)?.into_inner();
    println!("{} is on {} (generation {})", args.name, moved.cell, moved.generation);
    Ok(())
}
