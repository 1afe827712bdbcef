//! The cell's configuration. Every field is documented with its default; `cell.example.toml`
//! beside this crate lists them all, and a test keeps it equal to these defaults.
//!
//! Layers: compiled defaults, then `--config FILE`, then `BATON_<SECTION>__<KEY>`
//! environment variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_service::LoggingConfig;
use baton_service::tls::TlsConfig;
use serde::{Deserialize, Serialize};

use crate::data_plane::balancer::BalancePolicy;
use crate::placer::PlacementPolicy;

/// Which parts of a cell this process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The control plane only.
    Control,
    /// A data plane only.
    Data,
    /// Both, in one process (small deployments).
    #[default]
    All,
}

/// The whole cell configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CellConfig {
    /// Identity and role.
    pub cell: CellSection,
    /// The control plane.
    pub control_plane: ControlPlaneSection,
    /// The data plane.
    pub data_plane: DataPlaneSection,
    /// Persistence.
    pub store: StoreSection,
    /// Membership in a federation (a shard manager).
    pub federation: FederationSection,
    /// Mutual TLS with workers, data planes, the shard managers and routers (a
    /// certificate of role `cell`).
    pub tls: TlsConfig,
    /// Logging.
    pub log: LoggingConfig,
    /// Metrics.
    pub metrics: MetricsSection,
    /// Spans of calls through the data plane, exported over OTLP (off by default).
    pub traces: baton_service::TracesConfig,
}

/// `[cell]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CellSection {
    /// Cell ID (namespaces its Redis keys and sandbox IDs). Default: `cell-1`.
    pub id: String,
    /// `control`, `data` or `all`. Default: `all`.
    pub role: Role,
    /// `/metrics`, `/healthz`, `/readyz`. Default: `127.0.0.1:7102`.
    pub admin_listen: SocketAddr,
}

impl Default for CellSection {
    fn default() -> Self {
        Self { id: "cell-1".into(), role: Role::All, admin_listen: "127.0.0.1:7102".parse().expect("valid literal") }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// How many functions get series of their own in `baton_cell_function_sandboxes`
    /// (desired, ready and creating sandboxes): those with the most, chosen at each
    /// scrape; 0 exports none. Bounds that metric to three series per function. Default:
    /// `20`.
    pub top_functions: usize,
    /// Whether the process records metrics at all; `false` leaves `/metrics` empty (for
    /// measuring what metrics cost). Default: `true`.
    pub enabled: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { top_functions: 20, enabled: true }
    }
}

/// `[control_plane]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneSection {
    /// gRPC listen address of CellControl. Default: `127.0.0.1:7100`.
    pub listen: SocketAddr,
    /// A worker silent this long is down. Default: `"3s"`.
    #[serde(with = "humantime_serde")]
    pub worker_timeout: Duration,
    /// How often every function's autoscaler runs. Default: `"200ms"`.
    #[serde(with = "humantime_serde")]
    pub autoscale_interval: Duration,
    /// How often data planes report load. Default: `"200ms"`.
    #[serde(with = "humantime_serde")]
    pub load_report_interval: Duration,
    /// A load report older than this no longer counts. Default: `"2s"`.
    #[serde(with = "humantime_serde")]
    pub load_expiry: Duration,
    /// How long a scaled-down sandbox is out of the routing before it is deleted; while its
    /// function has calls in flight, the function's timeout if that is longer (so no call
    /// is cut off). Either way it stays while a data plane reports a call on it, up to the
    /// function's timeout. Default: `"2s"`.
    #[serde(with = "humantime_serde")]
    pub scale_down_drain: Duration,
    /// Wait after a failed creation before a function tries again; it doubles with each
    /// failure in a row, up to 60 s. Default: `"1s"`.
    #[serde(with = "humantime_serde")]
    pub create_retry: Duration,
    /// `least_allocated`, `random` or `round_robin`. Default: `least_allocated`.
    pub placement: PlacementPolicy,
    /// Most processes per sandbox. Default: `256`.
    pub sandbox_pids: u32,
    /// Timeout of each call to a worker. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub worker_call_timeout: Duration,
    /// Longest a worker may take to pull a function's image, on top of
    /// `worker_call_timeout` for a creation that pulls and for a pre-pull. Default: `"5m"`.
    #[serde(with = "humantime_serde")]
    pub image_pull_timeout: Duration,
}

impl Default for ControlPlaneSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7100".parse().expect("valid literal"),
            worker_timeout: Duration::from_secs(3),
            autoscale_interval: Duration::from_millis(200),
            load_report_interval: Duration::from_millis(200),
            load_expiry: Duration::from_secs(2),
            scale_down_drain: Duration::from_secs(2),
            create_retry: Duration::from_secs(1),
            placement: PlacementPolicy::LeastAllocated,
            sandbox_pids: 256,
            worker_call_timeout: Duration::from_secs(30),
            image_pull_timeout: Duration::from_secs(300),
        }
    }
}

/// `[data_plane]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataPlaneSection {
    /// Data plane ID. Default: `""`, meaning `<cell id>-dp`.
    pub id: String,
    /// HTTP listen address of the invocation ingress. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Control plane to follow (role `data`). Default: `""`, meaning this process's own
    /// control plane (role `all`).
    pub control_plane: String,
    /// Most requests queued per function. Default: `1000`.
    pub queue_capacity: usize,
    /// Longest a request waits for a sandbox. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Largest request body, in bytes. Default: `6291456` (6 MiB).
    pub max_body_bytes: usize,
    /// `least_loaded`, `round_robin` or `random`. Default: `least_loaded`.
    pub balance: BalancePolicy,
    /// How long in-flight requests may take to finish at shutdown. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Longest a client may take to send a request's headers; also how long a keep-alive
    /// connection may sit idle. The connection is closed after. Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's body once its headers arrived;
    /// `408 body_timeout` after. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

impl Default for DataPlaneSection {
    fn default() -> Self {
        Self {
            id: String::new(),
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            control_plane: String::new(),
            queue_capacity: 1000,
            queue_timeout: Duration::from_secs(30),
            max_body_bytes: 6 << 20,
            balance: BalancePolicy::LeastLoaded,
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Redis URL (`redis://host:port/db`); `""` uses the embedded store. Default: `""`.
    pub redis_url: String,
    /// File of the embedded store. Default: `/var/lib/baton/cell/cell.redb`.
    pub path: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { redis_url: String::new(), path: PathBuf::from("/var/lib/baton/cell/cell.redb") }
    }
}

/// Membership in a federation: the cell registers with a shard manager and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationSection {
    /// gRPC URLs of the shard-manager replicas, comma-separated (any replica answers; the
    /// next is tried when one is unreachable); empty: a standalone cell. Default: `""`.
    pub shard_manager: String,
    /// The cell's region. Default: `"local"`.
    pub region: String,
    /// Control-plane address announced to the federation; empty: `http://` and the address
    /// bound. Default: `""`.
    pub advertise_control: String,
    /// Data-plane URLs announced; empty: this process's own data plane (role `all`).
    /// Default: `[]`.
    pub data_planes: Vec<String>,
    /// Relative capacity (ring weight), at least 1. Default: 1.
    pub weight: u32,
    /// Heartbeat period. Default: `"1s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A function that has wanted a sandbox this long without one being created (no
    /// worker with room, creations failing) is reported unservable in the heartbeat, and
    /// the shard manager moves it to a cell that can serve it. Default: `"3s"`.
    #[serde(with = "humantime_serde")]
    pub unservable_after: Duration,
}

impl Default for FederationSection {
    fn default() -> Self {
        Self {
            shard_manager: String::new(),
            region: "local".into(),
            advertise_control: String::new(),
            data_planes: Vec::new(),
            weight: 1,
            heartbeat_interval: Duration::from_secs(1),
            unservable_after: Duration::from_secs(3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_exactly_the_defaults() {
        baton_service::config::example_matches_defaults::<CellConfig>(include_str!("../cell.example.toml")).unwrap();
    }
}
