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
    /// Serves on `listener` until dropped.
    pub fn on(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
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
