//! The router's configuration. Every field is documented with its default;
//! `router.example.toml` beside this crate lists them all, and a test keeps it equal to
//! these defaults.
//!
//! Layers: compiled defaults, then `--config FILE`, then `BATON_<SECTION>__<KEY>`
//! environment variables, then flags.

use std::net::SocketAddr;
use std::time::Duration;

use baton_service::LoggingConfig;
use baton_service::tls::TlsConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// The router itself.
    pub router: RouterSection,
    /// Resolving functions' images to digests when they are registered.
    pub images: ImagesSection,
    /// Mutual TLS to the shard managers and the cells' data planes (a certificate of role
    /// `router`). The tenant API itself is plain HTTP: put a TLS terminator in front.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LoggingConfig,
    /// Per-tenant and per-function series.
    pub metrics: MetricsSection,
    /// Spans of calls, exported over OTLP (off by default).
    pub traces: baton_service::TracesConfig,
    /// Asynchronous calls: where they are queued, how long their results are kept.
    #[serde(rename = "async")]
    pub async_calls: AsyncSection,
}

/// `[async]`: the queue of asynchronous calls (docs/async.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsyncSection {
    /// Redis URL (`redis://host:port/db`) of the queue every router shares; `""` keeps it in
    /// this router's own file (`path`): its calls are then delivered by this router only.
    /// Run that Redis with `appendonly yes` (and `appendfsync always` to lose nothing on a
    /// power cut). Default: `""`.
    pub redis_url: String,
    /// The hash tag of the queue's keys in Redis (`{baton-async}:stream`, …): federations
    /// sharing one Redis each need their own. Letters, digits, `-` and `_`. Default:
    /// `"baton-async"`.
    pub redis_prefix: String,
    /// The embedded queue's file, when `redis_url` is empty. Default:
    /// `/var/lib/baton/router/calls.redb`.
    pub path: std::path::PathBuf,
    /// How long a try's lease lasts without being extended (every third of it, while the
    /// try runs): a router that died leaves its calls to the others after this. Default:
    /// `"30s"`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long an ended call (`succeeded`, `failed`) and its result are kept for `GET
    /// /v1/calls/{id}`. Default: `"24h"`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How long a dead letter is kept (with its request) before it is deleted. Default:
    /// `"14d"`.
    #[serde(with = "humantime_serde")]
    pub dead_letter_retention: Duration,
    /// Most of a result's body kept (bytes); the rest is cut and the result marked
    /// `truncated`. Default: `262144` (256 KiB).
    pub max_result_bytes: usize,
    /// Most async tries this router runs at once. Default: `256`.
    pub concurrency: usize,
    /// Whether callbacks (`X-Callback-Url`) may reach loopback, private, link-local and
    /// other non-public addresses, baton's own processes among them. Off, such URLs are
    /// refused when the call is made and every name is resolved to public addresses only.
    /// Default: `false`.
    pub callback_private_networks: bool,
}

impl Default for AsyncSection {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            redis_prefix: "baton-async".into(),
            path: std::path::PathBuf::from("/var/lib/baton/router/calls.redb"),
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 3600),
            dead_letter_retention: Duration::from_secs(14 * 24 * 3600),
            max_result_bytes: 256 * 1024,
            concurrency: 256,
            callback_private_networks: false,
        }
    }
}

/// `[metrics]`: how many tenants and functions get series of their own (the rest are
/// counted together as `other`), so those metrics stay bounded (docs/metrics.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Tenants with the most calls in the last window that get a `tenant` label of their
    /// own. Default: `20`.
    pub top_tenants: usize,
    /// Functions with the most calls in the last window that get a `function` label of
    /// their own. Default: `50`.
    pub top_functions: usize,
    /// How often the busiest are chosen again. Default: `"1m"`.
    #[serde(with = "humantime_serde")]
    pub top_window: Duration,
    /// Whether the router records metrics at all; `false` leaves `/metrics` empty (for
    /// measuring what metrics cost). Default: `true`.
    pub enabled: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { top_tenants: 20, top_functions: 50, top_window: Duration::from_secs(60), enabled: true }
    }
}

/// The router itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSection {
    /// Tenant HTTP API and invocations (HTTP/1.1 and h2c). Default: `"127.0.0.1:8000"`.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`. Default: `"127.0.0.1:8001"`.
    pub admin_listen: SocketAddr,
    /// gRPC URLs of the shard-manager replicas; the router follows the shard map from one
    /// and sends the tenant API's writes to any. Default: `["http://127.0.0.1:7500"]`.
    pub shard_managers: Vec<String>,
    /// Largest invocation body accepted (bytes). Default: 6291456 (6 MiB).
    pub max_body_bytes: usize,
    /// Largest function spec accepted by the tenant API (bytes), alone or each of a batch;
    /// at most 65536, the most a spec may be anywhere. Default: 65536.
    pub max_spec_bytes: usize,
    /// Largest batch of specs (a JSON array posted to `/v1/functions`, up to 1,000
    /// functions) accepted (bytes). Default: 8388608 (8 MiB).
    pub max_batch_bytes: usize,
    /// Longest an invocation may take end to end through the router. Default: `"15m"`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long a call whose owning cell refuses connections (it is down) waits for the
    /// shard map to name a new owner (failover) and goes there; `"0s"` answers 502 at
    /// once. Default: `"5s"`.
    #[serde(with = "humantime_serde")]
    pub owner_wait: Duration,
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
    /// How calls travel to the cells' data planes: `http1`, a pool of connections with one
    /// call each, or `http2`, many calls at once on one connection per data plane (their
    /// writes and TLS records shared; cheaper under load, but a call sent in the first
    /// milliseconds after a data plane dies may fail with 502 instead of waiting for the
    /// failover, since the dead connection is noticed late). Default: `http1`.
    pub upstream_protocol: UpstreamProtocol,
}

/// `[images]`: how a function's image reference is resolved to the digest it runs, when
/// the function is registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// Registries (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    /// Default: `[]`.
    pub insecure_registries: Vec<String>,
    /// Largest image a function may run (config and compressed layers), bytes; larger
    /// ones are refused at registration. Default: `4294967296` (4 GiB).
    pub max_image_bytes: u64,
    /// Longest a registry may take to answer one request. Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub registry_timeout: Duration,
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self { insecure_registries: Vec::new(), max_image_bytes: 4 << 30, registry_timeout: Duration::from_secs(10) }
    }
}

impl ImagesSection {
    /// The resolver's settings.
    pub fn resolver(&self) -> baton_image::ResolverSettings {
        baton_image::ResolverSettings {
            insecure_registries: self.insecure_registries.clone(),
            max_image_bytes: self.max_image_bytes,
            timeout: self.registry_timeout,
        }
    }
}

/// The protocol between a router and the data planes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, a pool of keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 (h2c in plaintext), one multiplexed connection per data plane.
    Http2,
}

impl Default for RouterSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".parse().expect("a valid address"),
            admin_listen: "127.0.0.1:8001".parse().expect("a valid address"),
            shard_managers: vec!["http://127.0.0.1:7500".into()],
            max_body_bytes: 6 * 1024 * 1024,
            max_spec_bytes: 64 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            call_timeout: Duration::from_secs(15 * 60),
            owner_wait: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            upstream_protocol: UpstreamProtocol::Http1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_exactly_the_defaults() {
        baton_service::config::example_matches_defaults::<RouterConfig>(include_str!("../router.example.toml"))
            .unwrap();
    }
}
