//! Serving gRPC on an already-bound listener, the same way in every daemon.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::tls::{GuardLayer, Policy, Tls};

/// How long calls in flight may take to finish once a server is told to stop. Unary calls
/// take milliseconds; streams (shard-map watches, routing updates, worker links) never end
/// on their own and are cut when it is over, and their clients reconnect elsewhere.
pub const DRAIN: Duration = Duration::from_millis(500);

/// Serves `routes` on `listener` until `stop` turns true, then lets calls in flight finish
/// for [`DRAIN`] at most; `what` names the server in the error logged if it fails.
///
/// Connections are accepted with `tls` ([`crate::tls::incoming`]: mutual TLS, or
/// plaintext where the operator chose it), and each call is checked against `policy`
/// before it reaches a handler: a caller whose certificate's role the policy does not
/// allow for the method gets `PERMISSION_DENIED` ([`crate::tls::Guard`]).
///
/// Accepted sockets get TCP_NODELAY: with a listener of our own tonic does not set it, and
/// Nagle plus delayed ACKs would hold small gRPC frames (routing updates, creation
/// answers) for up to 40 ms.
pub fn spawn(
    what: &'static str,
    listener: TcpListener,
    routes: Routes,
    stop: watch::Receiver<bool>,
    tls: Tls,
    policy: Policy,
) -> JoinHandle<()> {
    spawn_guarded(listener, routes, stop, tls, GuardLayer { server: what, policy, host: None })
}

/// [`spawn`] with a guard of one's own (one that also checks the caller's host).
pub fn spawn_guarded(
    listener: TcpListener,
    routes: Routes,
    stop: watch::Receiver<bool>,
    tls: Tls,
    guard: GuardLayer,
) -> JoinHandle<()> {
    let what = guard.server;
    tokio::spawn(async move {
        let incoming = crate::tls::incoming(listener, tls, what);
        let mut graceful = stop.clone();
        let served = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(guard)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = graceful.wait_for(|s| *s).await;
            });
        let mut deadline = stop;
        tokio::select! {
            result = served => {
                if let Err(e) = result {
                    tracing::error!(server = what, error = %e, "the gRPC server failed");
                }
            }
            () = async move {
                let _ = deadline.wait_for(|s| *s).await;
                tokio::time::sleep(DRAIN).await;
            } => tracing::debug!(server = what, "streams still open after the drain; closing them"),
        }
    })
}
