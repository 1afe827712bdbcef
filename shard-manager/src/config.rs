//! The shard manager's configuration. Every field is documented with its default;
//! `shard-manager.example.toml` beside this crate lists them all, and a test keeps it equal
//! to these defaults.
//!
//! Layers: compiled defaults, then `--config FILE`, then `BATON_<SECTION>__<KEY>`
//! environment variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_service::tls::TlsConfig;
use baton_service::{ConfigError, LoggingConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardManagerConfig {
    /// This replica.
    pub node: NodeSection,
    /// Raft timing.
    pub raft: RaftSection,
    /// Failure detection of cells.
    pub cells: CellsSection,
    /// What tenants' functions may run.
    pub functions: FunctionsSection,
    /// The key tenants' registry credentials are sealed with.
    pub secrets: SecretsSection,
    /// Mutual TLS with every caller and peer (a certificate of role `shard-manager`).
    pub tls: TlsConfig,
    /// Logging.
    pub log: LoggingConfig,
}

/// `[secrets]`: tenants' registry credentials are stored sealed with this key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSection {
    /// File holding 32 random bytes as 64 hex digits (`openssl rand -hex 32`), the same on
    /// every replica. Default: `""`: no key, and tenants cannot store registry credentials
    /// (images from public registries still work).
    pub key_file: std::path::PathBuf,
}

/// This replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Raft node ID, unique in the cluster, at least 1. Default: 1.
    pub id: u64,
    /// gRPC listen address: the ShardManager API and the raft transport. Default:
    /// `"127.0.0.1:7500"`.
    pub listen: SocketAddr,
    /// Address peers reach this replica at; empty: the address actually bound. Default: `""`.
    pub advertise: String,
    /// `/metrics`, `/healthz`, `/readyz`. Default: `"127.0.0.1:7501"`.
    pub admin_listen: SocketAddr,
    /// Raft log and snapshots (`raft.redb`). Default: `"/var/lib/baton/shard-manager"`.
    pub data_dir: PathBuf,
    /// The cluster to form on first start, as `"ID=HOST:PORT"`; the replica with the
    /// lowest ID initializes it. Empty: a single replica of its own. Ignored once the
    /// replica has state. Default: `[]`.
    pub initial_members: Vec<String>,
    /// Join an existing cluster: form none, wait to be added with `AddReplica` (then made
    /// a voter with `ChangeVoters`). Default: `false`.
    pub join: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: 1,
            listen: "127.0.0.1:7500".parse().expect("a valid address"),
            advertise: String::new(),
            admin_listen: "127.0.0.1:7501".parse().expect("a valid address"),
            data_dir: PathBuf::from("/var/lib/baton/shard-manager"),
            initial_members: Vec::new(),
            join: false,
        }
    }
}

/// Raft timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Leader heartbeat period. Default: `"50ms"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A follower without heartbeats for a random time in this range starts an election.
    /// Default: `"150ms"` to `"300ms"`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`. Default: `"300ms"`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
        }
    }
}

/// Failure detection of cells (on the leader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CellsSection {
    /// A cell not heard from for longer is failed over. Default: `"3s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often the leader checks. Default: `"250ms"`.
    #[serde(with = "humantime_serde")]
    pub failover_interval: Duration,
    /// How often the leader plans rebalancing moves (drains, fills, new cells). Default:
    /// `"1s"`.
    #[serde(with = "humantime_serde")]
    pub rebalance_interval: Duration,
    /// Most functions moved per rebalancing round (moves run one after another). 0
    /// turns rebalancing off; drains then need `MoveFunction`. Default: 8.
    pub move_budget: usize,
    /// A cell is rebalanced when above its region's mean load by more than this
    /// fraction. Default: 0.05.
    pub rebalance_threshold: f64,
    /// After a rebalancing move its source must still be more loaded than its target by
    /// this fraction of the region's mean, so that no move merely swaps which cell is the
    /// heavier (a function larger than the imbalance stays) and load that wobbles by less
    /// cannot undo a move. Default: 0.03.
    pub rebalance_hysteresis: f64,
    /// A function moved less than this long ago is not moved again. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub move_cooldown: Duration,
    /// The rebalancer sees a function's load (its sandboxes, as heartbeats report them)
    /// as a peak that rises at once and halves over this time, so a busy function that
    /// scales down between bursts still looks busy. `"0s"`: the last report. Default:
    /// `"60s"`.
    #[serde(with = "humantime_serde")]
    pub load_half_life: Duration,
}

impl Default for CellsSection {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(3),
            failover_interval: Duration::from_millis(250),
            rebalance_interval: Duration::from_secs(1),
            move_budget: 8,
            rebalance_threshold: 0.05,
            rebalance_hysteresis: 0.03,
            move_cooldown: Duration::from_secs(30),
            load_half_life: crate::service::DEFAULT_LOAD_HALF_LIFE,
        }
    }
}

/// What tenants may register (admission). A registration outside these bounds is refused
/// naming the field (`400` through the router); functions registered before a change keep
/// running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsSection {
    /// Executables functions may run on the workers: absolute paths, or folders ending in
    /// `/` (any program under them, by path). Only tenants allowed executables (`PutTenant`'s
    /// `executables`) register any; baton's own programs never run. Empty: any absolute
    /// path, for development only. Every replica must have the same section. Default: `[]`.
    pub executables: Vec<String>,
    /// Most sandboxes one function may ask for (`scaling.max_scale`). Default: 1000.
    pub max_scale: u32,
    /// Most CPU one sandbox may ask for, in thousandths of a core. Default: 8000.
    pub max_cpu_millis: u32,
    /// Most memory one sandbox may ask for, MiB. Default: 16384.
    pub max_memory_mib: u64,
    /// Longest call timeout a function may ask for. Default: `"15m"` (the router's
    /// `call_timeout`).
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// Most functions a tenant may have, unless it was created with a limit of its own
    /// (`PutTenant`'s `max_functions`); the limit is stored with the tenant when it is
    /// created or updated. Default: 10000.
    pub max_per_tenant: u32,
    /// Most sandboxes a tenant's functions may ever have at once (the sum of their
    /// `scaling.max_scale`), unless it was created with a limit of its own. Default: 100000.
    pub max_sandboxes_per_tenant: u64,
    /// Most CPU a tenant's functions may hold even when idle (the sum of `min_scale` ×
    /// `resources.cpu_millis`), in thousandths of a core, unless it was created with a limit
    /// of its own. Default: 16000 (16 cores).
    pub max_reserved_cpu_millis_per_tenant: u64,
    /// Most memory a tenant's functions may hold even when idle (the sum of `min_scale` ×
    /// `resources.memory_mib`), MiB, unless it was created with a limit of its own.
    /// Default: 32768.
    pub max_reserved_memory_mib_per_tenant: u64,
}

impl Default for FunctionsSection {
    fn default() -> Self {
        Self {
            executables: Vec::new(),
            max_scale: 1000,
            max_cpu_millis: 8000,
            max_memory_mib: 16384,
            max_timeout: Duration::from_secs(15 * 60),
            max_per_tenant: 10_000,
            max_sandboxes_per_tenant: 100_000,
            max_reserved_cpu_millis_per_tenant: 16_000,
            max_reserved_memory_mib_per_tenant: 32_768,
        }
    }
}

/// Parses `initial_members` entries (`"ID=HOST:PORT"`).
pub fn parse_members(entries: &[String]) -> Result<Vec<(u64, String)>, ConfigError> {
    let bad = |entry: &str, why: &str| ConfigError::field("node.initial_members", format!("{entry:?} {why}"));
    entries
        .iter()
        .map(|entry| {
            let (id, addr) = entry.split_once('=').ok_or_else(|| bad(entry, "is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| bad(entry, "needs a numeric ID of at least 1"))?;
            if addr.trim().is_empty() {
                return Err(bad(entry, "has no address"));
            }
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_exactly_the_defaults() {
        let text = include_str!("../shard-manager.example.toml");
        baton_service::config::example_matches_defaults::<ShardManagerConfig>(text).unwrap();
    }

    #[test]
    fn members_parse_and_bad_ones_name_the_option() {
        assert_eq!(
            parse_members(&["1=127.0.0.1:7500".into(), "2 = h:1".into()]).unwrap(),
            vec![(1, "127.0.0.1:7500".into()), (2, "h:1".into())]
        );
        for bad in ["1", "x=h:1", "0=h:1", "3="] {
            let error = parse_members(&[bad.into()]).unwrap_err().to_string();
            assert!(error.starts_with("invalid configuration: node.initial_members"), "{bad}: {error}");
        }
    }
}
