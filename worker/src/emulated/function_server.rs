//! The emulated runtime's shared function server: serves `baton-fn-spin`'s handler (and its
//! readiness path) in-process for every emulated sandbox of this worker process.

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// A running function server; stops when dropped.
pub struct FunctionServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl FunctionServer {
    /// Binds `listen` and serves until dropped.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(baton_functions::serve(listener, baton_functions::spin::handle, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, _stop: stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
