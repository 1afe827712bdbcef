//! Waiting for the signal that asks a process to stop.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT handlers, installed when this is made: a signal that arrives
/// between installing and waiting is not lost (nor does it kill the process, as an
/// unhandled SIGINT would). Install before telling anyone the process can be stopped.
pub struct ShutdownSignal {
    term: Signal,
    int: Signal,
}

impl ShutdownSignal {
    /// Installs the handlers.
    pub fn install() -> Self {
        Self {
            term: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        }
    }

    /// Resolves on the first SIGTERM or SIGINT since [`ShutdownSignal::install`].
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT from now on.
pub async fn shutdown_signal() {
    ShutdownSignal::install().wait().await
}

/// Spawns `task`, dropped (cancelled at its next await) once `stop` turns true: for the
/// loops a daemon runs until it is shut down.
pub fn spawn_until<F>(mut stop: tokio::sync::watch::Receiver<bool>, task: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
}
