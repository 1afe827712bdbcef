//! Binding a daemon's listeners, with an error that names which listener and where, the
//! same in every daemon.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener that could not bind (or whose address could not be read).
#[derive(Debug, thiserror::Error)]
#[error("binding {what} on {addr}: {source}")]
pub struct BindError {
    /// Which listener (its config field, or its role).
    pub what: &'static str,
    /// Where.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds `addr` for the listener `what` (port 0 picks a free port); returns the listener
/// and the address it got.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let error = |source| BindError { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_refused_naming_the_listener_and_address() {
        let (taken, addr) = bind("first", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let err = bind("node.listen", addr).await.unwrap_err();
        assert!(err.to_string().starts_with(&format!("binding node.listen on {addr}: ")), "{err}");
        drop(taken);
    }
}
