//! The worker's configuration. Every field is documented with its default; `worker.example.toml`
//! beside this crate lists them all and a test keeps it equal to these defaults.
//!
//! Layers: compiled defaults, then `--config FILE`, then `BATON_<SECTION>__<KEY>` environment
//! variables (`BATON_PROCESS__PORT_RANGE_START=30000`), then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use baton_service::tls::TlsConfig;
use baton_service::{ConfigError, LoggingConfig};
use serde::{Deserialize, Serialize};

/// Which sandbox runtime the worker's nodes use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Each sandbox is a process in its own namespaces and cgroup.
    #[default]
    Process,
    /// Creation waits a fixed delay; calls go to one in-process function server.
    Emulated,
}

/// What a graceful shutdown (SIGTERM) does with running sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownPolicy {
    /// Delete every sandbox, leaving nothing behind.
    #[default]
    Delete,
    /// Leave sandboxes running for the next worker process to re-adopt (upgrades).
    Keep,
}

/// The whole worker configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Identity, addresses and capacity.
    pub worker: NodeSection,
    /// The process runtime.
    pub process: ProcessSection,
    /// Container images (the `oci` runtime, beside `process`).
    pub images: ImagesSection,
    /// The emulated runtime.
    pub emulated: EmulatedSection,
    /// Where the cell's control plane is and how to talk to it.
    pub control_plane: ControlPlaneSection,
    /// Mutual TLS with the cell's control plane (a certificate of role `worker`): only
    /// control planes (role `cell`) may create, delete or list sandboxes.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LoggingConfig,
}

/// `[worker]`: identity, addresses and capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Node ID reported to the control plane. Default: `""`, meaning the host name.
    pub node_id: String,
    /// `process` or `emulated`. Default: `process`.
    pub runtime: RuntimeChoice,
    /// gRPC listen address of the Worker service. Default: `127.0.0.1:7300`.
    pub listen: SocketAddr,
    /// Address given to the control plane for reaching this worker. Default: `""`, meaning the
    /// address actually bound.
    pub advertise: String,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`. Default: `127.0.0.1:7301`.
    pub admin_listen: SocketAddr,
    /// Folder for sandbox records and logs; it must survive a worker restart for re-adoption.
    /// Default: `/var/lib/baton/worker`.
    pub state_dir: PathBuf,
    /// CPU the node offers, in thousandths of a core. Default: `0`, meaning all cores.
    pub cpu_millis: u32,
    /// Memory the node offers, in MiB. Default: `0`, meaning the machine's memory.
    pub memory_mib: u64,
    /// Most sandboxes at once. Default: `1000`.
    pub max_sandboxes: u32,
    /// Readiness timeout when a spec gives none. Default: `"5s"`.
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
    /// Longest readiness timeout a spec may ask for. Default: `"5m"`.
    #[serde(with = "humantime_serde")]
    pub max_readiness_timeout: Duration,
    /// SIGTERM-to-SIGKILL grace when a delete gives none. Default: `"2s"`.
    #[serde(with = "humantime_serde")]
    pub delete_grace: Duration,
    /// What SIGTERM does with running sandboxes: `delete` or `keep`. Default: `delete`.
    pub on_shutdown: ShutdownPolicy,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            runtime: RuntimeChoice::Process,
            listen: "127.0.0.1:7300".parse().expect("valid literal"),
            advertise: String::new(),
            admin_listen: "127.0.0.1:7301".parse().expect("valid literal"),
            state_dir: PathBuf::from("/var/lib/baton/worker"),
            cpu_millis: 0,
            memory_mib: 0,
            max_sandboxes: 1000,
            readiness_timeout: Duration::from_secs(5),
            max_readiness_timeout: Duration::from_secs(300),
            delete_grace: Duration::from_secs(2),
            on_shutdown: ShutdownPolicy::Delete,
        }
    }
}

/// `[process]`: the process runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSection {
    /// First port handed to sandboxes. Default: `20000`.
    pub port_range_start: u16,
    /// Last port handed to sandboxes (inclusive). Default: `29999`.
    pub port_range_end: u16,
    /// Host the sandboxes listen on and the endpoint names (`$HOST`). Default: `127.0.0.1`.
    pub host: String,
    /// Name of the cgroup, under the worker's own, that holds one cgroup per sandbox.
    /// Default: `baton-sandboxes`.
    pub cgroup_parent: String,
    /// Put sandboxes in their own pid, mount, ipc and uts namespaces when privileged.
    /// Default: `true`.
    pub namespaces: bool,
    /// Put sandboxes in a cgroup with CPU, memory and pids limits when privileged.
    /// Default: `true`.
    pub cgroups: bool,
    /// Unprivileged user sandboxes run as when the worker is root; `""` keeps the worker's
    /// user. Default: `nobody`.
    pub user: String,
    /// First of the user IDs a root worker gives its sandboxes, one each (with a group ID
    /// of the same number), so no sandbox can read another's `/proc` files, environment
    /// included; `0` runs every sandbox as `user`. The range must be free of other users
    /// on the machine. Default: `2000000000`.
    pub uid_range_start: u32,
    /// Last of those user IDs (inclusive). Default: `2000099999`.
    pub uid_range_end: u32,
    /// What a root worker does when `user` cannot reach a spec's executable (a folder on
    /// its path, or the file, is not executable by others): `refuse` the creation
    /// (FAILED_PRECONDITION naming the path), or run the sandbox as the worker's own user
    /// (`worker`: no user isolation; for development checkouts under `/root`).
    /// Default: `refuse`.
    pub user_fallback: UserFallback,
    /// Programs sandboxes may run, checked after symlinks are followed: absolute paths, or
    /// folders ending in `/` (any program under them). Give the shard manager's
    /// `functions.executables` here too, so a symlink in an allowed folder cannot lead out
    /// of it. Empty: any program (but baton's own). Default: `[]`.
    pub executables: Vec<String>,
    /// Size at which a sandbox's stdout or stderr log is rotated (one old file is kept).
    /// Default: `10485760` (10 MiB).
    pub log_max_bytes: u64,
    /// How often log sizes are checked. Default: `"5s"`.
    #[serde(with = "humantime_serde")]
    pub log_check_interval: Duration,
    /// How often re-adopted sandboxes (not children of this process) are checked for exit.
    /// Default: `"500ms"`.
    #[serde(with = "humantime_serde")]
    pub adopted_poll_interval: Duration,
    /// `[process.network]`: where sandboxes may open connections.
    pub network: NetworkSection,
}

/// `[process.network]`: the packet filter a root worker puts on its sandboxes' uids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Filter the connections sandboxes open, by their uid, with nftables (needs root and the
    /// `nft` program; the worker refuses to start when it cannot install the filter). A
    /// sandbox then never reaches this host's own addresses: baton's ports, other sandboxes,
    /// anything on loopback. `false` lets sandboxes reach all of them. Default: `true`.
    pub filter: bool,
    /// Where else sandboxes may connect: `public` (anything but loopback, private, shared,
    /// link-local — cloud metadata —, multicast and reserved ranges), `any` (anything but
    /// this host), or `none`. Default: `public`.
    pub outbound: Outbound,
    /// Networks (CIDR, e.g. `"10.2.0.0/16"`) sandboxes may reach although `outbound` forbids
    /// them; never this host's own addresses. Default: `[]`.
    pub allow: Vec<ipnet::IpNet>,
    /// Let sandboxes send DNS (TCP and UDP port 53) to any address, this host's included, so
    /// a resolver on `127.0.0.53` or in the private network answers them. Default: `true`.
    pub dns: bool,
    /// TCP ports on this host's addresses sandboxes may connect to: a router's tenant port,
    /// so functions can call functions through it (with an API key, as any client). Never
    /// list an internal port (shard manager, cell, worker, data plane, admin). Default: `[]`.
    pub local_ports: Vec<u16>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self { filter: true, outbound: Outbound::Public, allow: Vec::new(), dns: true, local_ports: Vec::new() }
    }
}

/// `process.network.outbound`: where sandboxes may connect besides the allowed networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outbound {
    /// Public addresses only.
    Public,
    /// Anything but this host.
    Any,
    /// Nothing.
    None,
}

impl Default for ProcessSection {
    fn default() -> Self {
        Self {
            port_range_start: 20000,
            port_range_end: 29999,
            host: "127.0.0.1".into(),
            cgroup_parent: "baton-sandboxes".into(),
            namespaces: true,
            cgroups: true,
            user: "nobody".into(),
            uid_range_start: 2_000_000_000,
            uid_range_end: 2_000_099_999,
            user_fallback: UserFallback::Refuse,
            executables: Vec::new(),
            log_max_bytes: 10 << 20,
            log_check_interval: Duration::from_secs(5),
            adopted_poll_interval: Duration::from_millis(500),
            network: NetworkSection::default(),
        }
    }
}

/// `process.user_fallback`: when the sandbox user cannot reach an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFallback {
    /// Refuse the creation.
    Refuse,
    /// Run the sandbox as the worker's own user.
    Worker,
}

/// Whether a worker runs container images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagesChoice {
    /// When the worker runs as root and `images.runc` runs; otherwise said once at start.
    #[default]
    Auto,
    /// Always: the worker refuses to start without root and runc.
    On,
    /// Never.
    Off,
}

/// `[images]`: container images, run by runc with the process runtime's isolation (the
/// sandbox's own uid, cgroup, packet filter and seccomp filter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// `auto`, `on` or `off`. Default: `auto`.
    pub enabled: ImagesChoice,
    /// The runc program, a path or a name looked up in `PATH`. Default: `"runc"`.
    pub runc: String,
    /// Folder of the image cache (layers and unpacked images). Default: `""`, meaning
    /// `<state_dir>/images`.
    pub cache_dir: PathBuf,
    /// Most bytes the cache keeps; past it, images no sandbox uses go, least recently used
    /// first. Default: `10737418240` (10 GiB).
    pub cache_max_bytes: u64,
    /// Largest image pulled (config and compressed layers). Default: `4294967296` (4 GiB).
    pub max_image_bytes: u64,
    /// Registries (`host` or `host:port`) pulled from over plain HTTP besides loopback
    /// ones. Default: `[]`.
    pub insecure_registries: Vec<String>,
    /// Longest a registry may take to answer one request. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub registry_timeout: Duration,
    /// IPv4 subnet the containers' addresses come from, each in a network namespace of its
    /// own (one address per container; at most a /30). Must not overlap a network this host
    /// reaches. Workers on one host may share it. Default: `"10.222.0.0/16"`.
    pub subnet: ipnet::Ipv4Net,
    /// Run a container as the user its image names (`User`: `root`, `1000`, `app:staff`)
    /// inside a user namespace of its own, where that user and root are unprivileged uids
    /// of the host's from `process.uid_range_*` (two per such sandbox). Off: every container
    /// runs as its sandbox's own uid, whatever its image says. Needs the uid range, and
    /// makes the image cache's folders searchable (not listable) by other users. Default:
    /// `false`.
    pub run_as_image_user: bool,
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self {
            enabled: ImagesChoice::Auto,
            runc: "runc".into(),
            cache_dir: PathBuf::new(),
            cache_max_bytes: 10 << 30,
            max_image_bytes: 4 << 30,
            insecure_registries: Vec::new(),
            registry_timeout: Duration::from_secs(30),
            subnet: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 222, 0, 0), 16).expect("valid literal"),
            run_as_image_user: false,
        }
    }
}

/// `[emulated]`: the emulated runtime, for scale tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatedSection {
    /// How long a creation takes (Firecracker snapshot restore in Dirigent). Default: `"40ms"`.
    #[serde(with = "humantime_serde")]
    pub create_delay: Duration,
    /// Worker nodes this process registers, each with its own ID (`<node_id>-<i>`) and
    /// heartbeats. Default: `1`.
    pub nodes: u32,
    /// Listen address of the shared in-process function server. Default: `127.0.0.1:0`.
    pub function_listen: SocketAddr,
}

impl Default for EmulatedSection {
    fn default() -> Self {
        Self {
            create_delay: Duration::from_millis(40),
            nodes: 1,
            function_listen: "127.0.0.1:0".parse().expect("valid literal"),
        }
    }
}

/// `[control_plane]`: registration and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneSection {
    /// gRPC URL of the cell's control plane, e.g. `http://127.0.0.1:7100`; `""` runs the
    /// worker standalone (no registration). Default: `""`.
    pub address: String,
    /// Heartbeat interval (the control plane may ask for another). Default: `"1s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// First retry delay while the control plane is unreachable. Default: `"100ms"`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay. Default: `"5s"`.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Timeout of each call to the control plane. Default: `"2s"`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
}

impl Default for ControlPlaneSection {
    fn default() -> Self {
        Self {
            address: String::new(),
            heartbeat_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(2),
        }
    }
}

impl WorkerConfig {
    /// Checks the values the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.process;
        if p.port_range_start == 0 || p.port_range_start > p.port_range_end {
            return Err(ConfigError::Field {
                field: "process.port_range_start".into(),
                message: format!(
                    "port range {}-{} is empty or starts at 0; give 1 <= start <= end",
                    p.port_range_start, p.port_range_end
                ),
            });
        }
        if baton_proto::SandboxId::new(p.cgroup_parent.as_str()).is_err() {
            return Err(ConfigError::Field {
                field: "process.cgroup_parent".into(),
                message: format!("{:?} must be a plain folder name ([A-Za-z0-9._-])", p.cgroup_parent),
            });
        }
        if let Some((i, bad)) = p
            .executables
            .iter()
            .enumerate()
            .find(|(_, e)| !e.starts_with('/') || e.contains("/../") || e.ends_with("/.."))
        {
            return Err(ConfigError::Field {
                field: format!("process.executables[{i}]"),
                message: format!("{bad:?} must be an absolute path without .. parts"),
            });
        }
        if p.network.local_ports.contains(&0) {
            return Err(ConfigError::Field {
                field: "process.network.local_ports".into(),
                message: "0 is not a port".into(),
            });
        }
        if self.images.runc.is_empty() {
            return Err(ConfigError::Field {
                field: "images.runc".into(),
                message: "must name the runc program".into(),
            });
        }
        if self.images.cache_max_bytes == 0 {
            return Err(ConfigError::Field {
                field: "images.cache_max_bytes".into(),
                message: "must be above zero".into(),
            });
        }
        if self.images.run_as_image_user && self.process.uid_range_start == 0 {
            return Err(ConfigError::Field {
                field: "images.run_as_image_user".into(),
                message: "needs a uid per sandbox (process.uid_range_start above 0): the image's user and root are \
                          two of them"
                    .into(),
            });
        }
        if self.images.subnet.prefix_len() > 30 {
            return Err(ConfigError::Field {
                field: "images.subnet".into(),
                message: format!("{} holds too few addresses; give at least a /30", self.images.subnet),
            });
        }
        if self.images.subnet.network().is_loopback() || self.images.subnet.network().is_unspecified() {
            return Err(ConfigError::Field {
                field: "images.subnet".into(),
                message: format!("{} is not a subnet containers can have addresses in", self.images.subnet),
            });
        }
        if self.emulated.nodes == 0 {
            return Err(ConfigError::Field { field: "emulated.nodes".into(), message: "must be at least 1".into() });
        }
        if self.worker.max_sandboxes == 0 {
            return Err(ConfigError::Field {
                field: "worker.max_sandboxes".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_exactly_the_defaults() {
        baton_service::config::example_matches_defaults::<WorkerConfig>(include_str!("../worker.example.toml"))
            .unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = WorkerConfig::default();
        c.process.port_range_start = 3000;
        c.process.port_range_end = 2000;
        let field = |c: &WorkerConfig| match c.validate() {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("not a field error: {other:?}"),
        };
        assert_eq!(field(&c), "process.port_range_start");
        let mut c = WorkerConfig::default();
        c.process.cgroup_parent = "../etc".into();
        assert_eq!(field(&c), "process.cgroup_parent");
        let mut c = WorkerConfig::default();
        c.process.executables = vec!["/opt/fns/".into(), "fns/".into()];
        assert_eq!(field(&c), "process.executables[1]");
        c.process.executables = vec!["/opt/fns/../../bin/".into()];
        assert_eq!(field(&c), "process.executables[0]");
        let mut c = WorkerConfig::default();
        c.images.subnet = "10.9.0.0/31".parse().unwrap();
        assert_eq!(field(&c), "images.subnet");
        c.images.subnet = "127.0.0.0/8".parse().unwrap();
        assert_eq!(field(&c), "images.subnet");
        let mut c = WorkerConfig::default();
        c.images.run_as_image_user = true;
        assert!(c.validate().is_ok());
        c.process.uid_range_start = 0;
        assert_eq!(field(&c), "images.run_as_image_user");
    }
}
