//! baton's gRPC contracts (one module per `.proto` package) and the ID newtypes they carry.
#![deny(unsafe_code)]

pub mod ids;

/// Generated code, nested as the `.proto` packages are (see `build.rs`).
#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/packages.rs"));
}

/// The Worker service and the sandbox types it speaks in (`baton.worker.v1`).
pub use generated::baton::worker::v1 as worker;

/// The CellControl service, the part workers call (`baton.cell.v1`).
pub use generated::baton::cell::v1 as cell;

/// The raft transport between shard-manager replicas (`baton.raft.v1`).
pub use generated::baton::raft::v1 as raft;

/// The ShardManager service: cells, tenants, functions and the shard-map stream
/// (`baton.shard.v1`).
pub use generated::baton::shard::v1 as shard;

impl std::fmt::Debug for worker::RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for shard::PutRegistryCredentialsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutRegistryCredentialsRequest")
            .field("tenant", &self.tenant)
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for shard::RegistryCredentialsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentialsResponse")
            .field("found", &self.found)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

pub use ids::{IdError, MAX_ID_LEN, NodeId, SandboxId};

/// Largest gRPC message baton's services take and its clients accept. tonic's default of
/// 4 MiB is far below what a large federation sends: a shard-map snapshot of 100,000
/// functions is about 7 MB, a cell's list of its functions with their specs more, and a
/// raft snapshot chunk travels as JSON. Every server and client of the shard-map,
/// catalog, raft and cell-routing streams sets this limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The `.proto` sources, as compiled: (package, text).
const PROTOS: [(&str, &str); 4] = [
    ("baton.worker.v1", include_str!("../proto/worker.proto")),
    ("baton.cell.v1", include_str!("../proto/cell_control.proto")),
    ("baton.raft.v1", include_str!("../proto/raft.proto")),
    ("baton.shard.v1", include_str!("../proto/shard_manager.proto")),
];

/// The gRPC paths (`/package.Service/Method`) of every method of `service` (a full name
/// such as `baton.worker.v1.Worker`), read from the `.proto` files: what a server's access
/// policy must cover.
pub fn methods(service: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (package, text) in PROTOS {
        let mut current = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                current = rest.split_whitespace().next().map(|name| format!("{package}.{name}"));
            } else if let Some(rest) = line.strip_prefix("rpc ")
                && current.as_deref() == Some(service)
            {
                let name = rest.split('(').next().unwrap_or_default().trim();
                paths.push(format!("/{service}/{name}"));
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_are_read_from_the_protos() {
        let worker = super::methods("baton.worker.v1.Worker");
        assert_eq!(
            worker,
            [
                "/baton.worker.v1.Worker/CreateSandbox",
                "/baton.worker.v1.Worker/DeleteSandbox",
                "/baton.worker.v1.Worker/ListSandboxes",
                "/baton.worker.v1.Worker/PullImage",
                "/baton.worker.v1.Worker/DropImage"
            ]
        );
        assert_eq!(super::methods("baton.shard.v1.ShardManager").len(), 25);
        assert!(
            super::methods("baton.raft.v1.RaftTransport").contains(&"/baton.raft.v1.RaftTransport/Vote".to_string())
        );
        assert!(super::methods("nope").is_empty());
    }

    #[test]
    fn registry_credentials_never_print_their_password() {
        let credentials =
            super::worker::RegistryCredentials { username: "acme".into(), password: "hunter2-secret".into() };
        let image = super::worker::Image { credentials: Some(credentials), ..Default::default() };
        let printed = format!("{image:?} {image:#?}");
        assert!(printed.contains("acme") && !printed.contains("hunter2"), "{printed}");
        let put = super::shard::PutRegistryCredentialsRequest {
            tenant: "acme".into(),
            registry: "ghcr.io".into(),
            username: "bot".into(),
            password: "hunter2-secret".into(),
        };
        let got = super::shard::RegistryCredentialsResponse {
            found: true,
            username: "bot".into(),
            password: "hunter2-secret".into(),
        };
        let printed = format!("{put:?} {got:#?}");
        assert!(printed.contains("bot") && !printed.contains("hunter2"), "{printed}");
    }
}
