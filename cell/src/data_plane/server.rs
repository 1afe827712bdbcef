//! Assembles a data plane: the HTTP ingress listener and the control-plane follower.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_service::http::Access;
use baton_service::tls::{Role, Tls};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use super::fence::Fence;
use super::follower::{FollowerSettings, follow};
use super::ingress::{Functions, Ingress};

/// Everything a data plane is started with.
#[derive(Debug, Clone)]
pub struct DataPlaneSettings {
    /// Follower settings (ID, queue, balancing).
    pub follower: FollowerSettings,
    /// gRPC URL of the control plane.
    pub control_plane: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain_timeout: Duration,
    /// Longest a client may take to send a request's headers (and idle between requests).
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// In a federation: refuses calls for functions another cell owns.
    pub fence: Option<Fence>,
    /// Mutual TLS: serves routers only, and connects to the control plane as a cell.
    pub tls: Tls,
    /// Records calls' spans (or nothing, when tracing is off).
    pub spans: baton_service::Spans,
}

/// A started data plane.
pub struct RunningDataPlane {
    /// Where the ingress listens.
    pub http_addr: SocketAddr,
    /// The functions it routes (for tests and metrics).
    pub functions: Functions,
    server: tokio::task::JoinHandle<()>,
}

impl RunningDataPlane {
    /// Waits until the ingress has drained after `stop`.
    pub async fn stopped(self) {
        let _ = self.server.await;
    }
}

/// Why a data plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// `data_plane.control_plane` is not a URL.
    #[error("data_plane.control_plane {0:?} is not a URL such as http://127.0.0.1:7100")]
    ControlPlaneUrl(String),
    /// The listener's address could not be read.
    #[error("data_plane.listen: reading the bound address: {0}")]
    Listener(std::io::Error),
}

/// Serves the ingress on `listener` and starts following the control plane; runs until
/// `stop`.
pub async fn start(
    mut settings: DataPlaneSettings,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<RunningDataPlane, DataPlaneError> {
    let http_addr = listener.local_addr().map_err(DataPlaneError::Listener)?;
    if settings.follower.http_address.is_empty() {
        settings.follower.http_address = http_addr.to_string();
    }
    let endpoint = Endpoint::from_shared(settings.control_plane.clone())
        .map_err(|_| DataPlaneError::ControlPlaneUrl(settings.control_plane.clone()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1));
    let channel = settings.tls.channel(&endpoint);
    let functions: Functions = Arc::default();
    tokio::spawn(follow(channel, settings.follower.clone(), functions.clone(), stop.clone()));
    let body = (settings.max_body_bytes, settings.body_read_timeout);
    let ingress = Ingress::new(functions.clone(), body, settings.fence.clone(), settings.spans.clone());
    // A router sends all its calls to this data plane on one HTTP/2 connection; how many
    // wait here is bounded by the queues, not by the connection.
    let access =
        Access { what: "data plane", tls: settings.tls.clone(), allowed: &[Role::Router], http2_streams: 100_000 };
    let server =
        tokio::spawn(serve(listener, access, ingress, stop, settings.drain_timeout, settings.header_read_timeout));
    tracing::info!(%http_addr, control_plane = %settings.control_plane, "data plane started");
    Ok(RunningDataPlane { http_addr, functions, server })
}

async fn serve(
    listener: tokio::net::TcpListener,
    access: Access,
    ingress: Ingress,
    stop: watch::Receiver<bool>,
    drain: Duration,
    header_read: Duration,
) {
    let handler = move |req| {
        let ingress = ingress.clone();
        async move { ingress.handle(req).await }
    };
    baton_service::http::serve(listener, access, handler, stop, drain, header_read).await;
}
