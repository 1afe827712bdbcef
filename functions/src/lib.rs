//! A tiny HTTP server for sample functions: listens on `127.0.0.1:$PORT` (or `$HOST:$PORT`),
//! answers the readiness probe at `/healthz`, hands every other request to the function,
//! and exits cleanly on SIGTERM.
#![deny(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub mod hostile;
pub mod spin;

/// The path the worker probes for readiness.
pub const READINESS_PATH: &str = "/healthz";

/// A request as a function sees it: head plus the whole body.
pub struct Call {
    /// Method, URI, headers.
    pub head: hyper::http::request::Parts,
    /// The body, read in full.
    pub body: Bytes,
}

/// A response body.
pub type Body = Full<Bytes>;

/// Builds a JSON response with the given status.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static headers are valid")
}

/// Reads `$HOST` (default 127.0.0.1) and `$PORT` (required) into an address.
pub fn listen_addr() -> Result<SocketAddr, String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").map_err(|_| "PORT is not set; a sandbox gets it from the worker".to_string())?;
    format!("{host}:{port}").parse().map_err(|e| format!("bad HOST/PORT {host}:{port}: {e}"))
}

/// Serves `handler` until SIGTERM or SIGINT. Exits the process with status 2 on a start-up
/// error, printing it to stderr.
pub fn run<F, Fut>(handler: F)
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("building a single-threaded runtime");
    if let Err(message) = runtime.block_on(serve_until_signal(handler)) {
        eprintln!("{message}");
        std::process::exit(2);
    }
}

async fn serve_until_signal<F, Fut>(handler: F) -> Result<(), String>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let addr = listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    serve(listener, handler, stop).await;
    Ok(())
}

/// Serves `handler` on `listener` (plus the readiness path) until `stop` resolves.
/// Connections already open are left to finish on their own.
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F, stop: impl Future<Output = ()>)
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => { eprintln!("accept: {e}"); continue; }
            },
            _ = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(dispatch(&*handler, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn dispatch<F, Fut>(handler: &F, req: Request<Incoming>) -> Response<Body>
where
    F: Fn(Call) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    if req.uri().path() == READINESS_PATH {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let (head, body) = req.into_parts();
    match body.collect().await {
        Ok(body) => handler(Call { head, body: body.to_bytes() }).await,
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": {"code": "bad_body", "message": format!("reading the request body: {e}")}}),
        ),
    }
}

/// The value of query parameter `name`, if present (no percent-decoding: values are numbers
/// and words).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn finds_query_params() {
        assert_eq!(query_param(Some("a=1&ms=20&b"), "ms"), Some("20"));
        assert_eq!(query_param(Some("a=1&b"), "b"), Some(""));
        assert_eq!(query_param(Some("a=1"), "ms"), None);
        assert_eq!(query_param(None, "ms"), None);
    }
}
