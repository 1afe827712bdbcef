//! What every request handler shares: the followed shard map, the shard manager, the
//! data-plane client, the settings and the newest epoch seen. It has a module of its own
//! so that the server, the tenant API and the invocation proxy each depend on it and none
//! of them on another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_service::tls::Tls;
use baton_shardmap::MapView;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::{RouterSection, UpstreamProtocol};

/// The pooled client to the cells' data planes.
pub type Upstream = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client with keep-alive connections and TCP_NODELAY; with mutual TLS it calls only
/// `https` data planes and presents the router's certificate, which is what lets a data
/// plane trust the `X-Baton-*` headers the router sets.
///
/// Over HTTP/2 every call to a data plane shares one connection: under load one write
/// (and one TLS record) carries several calls' frames, which costs less CPU per call than
/// a connection per call in flight (docs/BENCHMARKS.md, "Mutual TLS between processes").
/// Its windows adapt to the path; pings every 10 s drop a connection whose data plane
/// went silent; a header list may be as large as HTTP/1 allows ([`MAX_HEADER_LIST`]).
pub fn upstream(tls: &Tls, protocol: UpstreamProtocol) -> Upstream {
    let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(30)).timer(hyper_util::rt::TokioTimer::new());
    if protocol == UpstreamProtocol::Http2 {
        builder
            .http2_only(true)
            .http2_adaptive_window(true)
            .http2_max_header_list_size(baton_service::http::MAX_HEADER_LIST)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    builder.build(tls.http_connector())
}

/// Everything a request needs, shared by every connection.
#[derive(Clone)]
pub struct Router {
    /// The followed shard map.
    pub view: MapView,
    /// The shard manager, for the tenant API.
    pub manager: Arc<baton_shardmap::Replicas>,
    /// The data-plane client.
    pub upstream: Upstream,
    /// Settings.
    pub config: Arc<RouterSection>,
    /// The newest epoch a shard-manager answer through this router carried (a committed
    /// write, or the state a read was served from): reads and writes ask for a state at
    /// least this new (and as new as the followed map), so a tenant reads its own writes
    /// and never an older state than it has seen, whichever replica answers.
    pub seen: Arc<AtomicU64>,
    /// Resolves functions' images to digests at registration.
    pub images: Arc<baton_image::Resolver>,
    /// Records calls' spans (or nothing, when tracing is off).
    pub spans: baton_service::Spans,
    /// Gives each call its ID.
    pub call_ids: Arc<baton_service::http::CallIds>,
    /// The async calls' queue (`None`: async calls are refused with 503).
    pub calls: Option<Arc<dyn crate::calls::CallStore>>,
    /// Whether callbacks may reach non-public addresses (`async.callback_private_networks`).
    pub callback_private_networks: bool,
}

impl Router {
    /// The epoch requests through this router must see.
    pub fn read_epoch(&self) -> u64 {
        self.seen.load(Ordering::Relaxed).max(self.view.epoch().0)
    }

    /// Notes the epoch a shard-manager answer carried.
    pub fn saw(&self, epoch: u64) {
        self.seen.fetch_max(epoch, Ordering::Relaxed);
    }
}
