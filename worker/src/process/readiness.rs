//! The readiness probe: `GET <path>` on the sandbox's port, retried with exponential
//! back-off until a 2xx answer, the process's exit, or the timeout.
//!
//! A small function is up within a millisecond or two, below the tokio timer's 1 ms
//! resolution, so the first [`PRECISE_PHASE`] probes from a blocking thread with
//! microsecond sleeps; after that the probe goes on with tokio timers and also watches for
//! the process's exit.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// First wait between probes.
const FIRST_BACKOFF: Duration = Duration::from_micros(50);
/// Longest wait between probes.
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// Longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the precise, blocking-thread phase lasts at most.
const PRECISE_PHASE: Duration = Duration::from_millis(10);

/// How probing ended without success.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The deadline passed.
    TimedOut,
    /// `exited` resolved first.
    Exited,
}

/// Probes `addr` until ready, `timeout`, or `exited` resolves.
pub async fn wait_ready(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    exited: impl std::future::Future<Output = ()>,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: baton-worker-probe\r\nConnection: close\r\n\r\n");
    let precise = {
        let request = request.clone();
        tokio::task::spawn_blocking(move || precise_phase(addr, &request, timeout.min(PRECISE_PHASE)))
    };
    let probe_loop = async {
        if precise.await.unwrap_or(false) {
            return Ok(());
        }
        // Past the precise phase: the tokio timer's resolution is fine.
        let mut backoff = Duration::from_millis(1);
        loop {
            if tokio::time::timeout(PROBE_TIMEOUT, probe(addr, &request)).await == Ok(true) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    tokio::select! {
        ready = probe_loop => ready,
        () = exited => Err(NotReady::Exited),
    }
}

/// Probes with microsecond sleeps (×1.5 from [`FIRST_BACKOFF`]) for up to `budget`.
fn precise_phase(addr: SocketAddr, request: &str, budget: Duration) -> bool {
    let started = std::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    while started.elapsed() < budget {
        if probe_blocking(addr, request) {
            return true;
        }
        std::thread::sleep(backoff);
        backoff = backoff.mul_f64(1.5).min(Duration::from_millis(1));
    }
    false
}

/// One blocking probe: true on a 2xx status line.
fn probe_blocking(addr: SocketAddr, request: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    status_is_2xx(&head)
}

fn status_is_2xx(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

/// One probe: true on a 2xx status line.
async fn probe(addr: SocketAddr, request: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    status_is_2xx(&head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn ready_when_the_server_answers_2xx() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        assert_eq!(wait_ready(addr, "/healthz", Duration::from_secs(2), std::future::pending()).await, Ok(()));
    }

    #[tokio::test]
    async fn times_out_on_a_non_2xx_server_and_stops_on_exit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
            }
        });
        let started = Instant::now();
        assert_eq!(
            wait_ready(addr, "/", Duration::from_millis(200), std::future::pending()).await,
            Err(NotReady::TimedOut)
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(wait_ready(addr, "/", Duration::from_secs(10), async {}).await, Err(NotReady::Exited));
    }
}
