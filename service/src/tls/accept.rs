//! The server side: accepting connections (TLS handshakes off the accept loop), learning
//! who called, and refusing gRPC calls from roles a method is not for.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Role, Tls, peer_names, peer_role};

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes one server runs at once; a connection beyond them is closed at once
/// (`baton_tls_refused_total{reason="busy"}`), so a flood of silent connections costs a
/// bounded number of tasks.
pub const MAX_HANDSHAKES: usize = 1024;

/// Who called, as far as the connection tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A plaintext server: nobody is checked.
    Unchecked,
    /// A certificate the federation's authority signed, for this role.
    Role(Role),
    /// A certificate the authority signed that names no single baton role.
    Unnamed,
}

impl Caller {
    /// Whether a caller may use something open to `allowed`.
    pub fn may(self, allowed: &[Role]) -> bool {
        match self {
            Caller::Unchecked => true,
            Caller::Role(role) => allowed.contains(&role),
            Caller::Unnamed => false,
        }
    }

    /// The caller in words, for refusals.
    pub fn describe(self) -> String {
        match self {
            Caller::Unchecked => "an unchecked caller".into(),
            Caller::Role(role) => format!("a {}", role.as_str()),
            Caller::Unnamed => "a certificate that names no baton role".into(),
        }
    }
}

/// What a server knows of the other end of a connection; gRPC handlers find it in the
/// request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// Who it is.
    pub caller: Caller,
    /// The host names and addresses its certificate is valid for (none in plaintext).
    pub names: Arc<[String]>,
}

/// An accepted connection, plaintext or TLS.
pub struct Accepted {
    io: Io,
    /// Who is on the other end.
    pub peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Accepted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    /// Never: told writes are not vectored, hyper gathers an answer's head and body into one
    /// buffer, so it leaves in one write, and over TLS as one record (rustls seals each slice
    /// of a vectored write as a record of its own).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// Accepts connections on `listener` for the server `what` until the returned stream is
/// dropped. Sockets get TCP_NODELAY. With mutual TLS each handshake runs in a task of its
/// own (a slow or silent client holds up nobody) and must finish within
/// [`HANDSHAKE_TIMEOUT`], at most [`MAX_HANDSHAKES`] at once; a client without a
/// certificate the authority signed never gets through
/// (`baton_tls_refused_total{server,reason="handshake"}`).
pub fn incoming(listener: TcpListener, tls: Tls, what: &'static str) -> ReceiverStream<io::Result<Accepted>> {
    incoming_bounded(listener, tls, what, MAX_HANDSHAKES)
}

fn incoming_bounded(
    listener: TcpListener,
    tls: Tls,
    what: &'static str,
    max_handshakes: usize,
) -> ReceiverStream<io::Result<Accepted>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(max_handshakes));
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(server = what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                Tls::Plaintext => {
                    let peer = Peer { remote: Some(remote), caller: Caller::Unchecked, names: Arc::new([]) };
                    if tx.send(Ok(Accepted { io: Io::Plain(tcp), peer })).await.is_err() {
                        return;
                    }
                }
                Tls::Mutual { server, .. } => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        refused(what, "busy", remote, "too many handshakes at once");
                        continue;
                    };
                    let (acceptor, tx) = (tokio_rustls::TlsAcceptor::from(server.clone()), tx.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        let handshake = async {
                            if !starts_tls(&tcp).await? {
                                refuse_plaintext(tcp, what).await;
                                return Err(io::Error::other("a plaintext client"));
                            }
                            acceptor.accept(tcp).await
                        };
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(stream)) => {
                                let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
                                let caller = match peer_role(chain) {
                                    Some(role) => Caller::Role(role),
                                    None => Caller::Unnamed,
                                };
                                let names = peer_names(chain).into();
                                let peer = Peer { remote: Some(remote), caller, names };
                                let _ = tx.send(Ok(Accepted { io: Io::Tls(Box::new(stream)), peer })).await;
                            }
                            Ok(Err(e)) => refused(what, "handshake", remote, &e.to_string()),
                            Err(_) => refused(what, "handshake", remote, "timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Whether the client's first byte opens a TLS handshake record (a ClientHello).
async fn starts_tls(tcp: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    Ok(n == 0 || first[0] == 0x16)
}

/// Answers a plaintext client of a TLS server in its own protocol, so that what it
/// reports says why: an HTTP/2 client (gRPC) gets a GOAWAY `INADEQUATE_SECURITY` whose
/// debug data says so, an HTTP/1 client a `400 tls_required`. Then closes.
async fn refuse_plaintext(mut tcp: TcpStream, what: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WHY: &str = "mutual TLS required: this baton server accepts only TLS connections with a certificate \
                       its federation's authority signed";
    let mut start = [0u8; 4];
    let mut read = 0;
    while read < start.len() {
        match tcp.read(&mut start[read..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
    let answer = if &start == b"PRI " {
        // The rest of the preface, our (empty) SETTINGS, and the client's frames up to its
        // first request: a GOAWAY before it would fail the call without its text.
        let mut rest = [0u8; 20];
        if tcp.read_exact(&mut rest).await.is_err() || tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.is_err() {
            return;
        }
        loop {
            let mut header = [0u8; 9];
            if tcp.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as u64;
            let mut payload = (&mut tcp).take(length);
            if tokio::io::copy(&mut payload, &mut tokio::io::sink()).await.ok() != Some(length) {
                return;
            }
            if header[3] == 1 {
                break; // HEADERS: a request
            }
        }
        let mut frames = Vec::new();
        let payload_len = 8 + WHY.len();
        frames.extend_from_slice(&(payload_len as u32).to_be_bytes()[1..]);
        frames.extend_from_slice(&[7, 0, 0, 0, 0, 0]); // GOAWAY on stream 0
        frames.extend_from_slice(&0u32.to_be_bytes()); // no stream processed
        frames.extend_from_slice(&0xcu32.to_be_bytes()); // INADEQUATE_SECURITY
        frames.extend_from_slice(WHY.as_bytes());
        frames
    } else {
        let body = serde_json::json!({"error": {"code": "tls_required", "message": format!("the {what}: {WHY}")}});
        let body = body.to_string();
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let _ = tcp.write_all(&answer).await;
    let _ = tcp.shutdown().await;
    // Closing with the client's bytes unread would reset the connection, and the reset can
    // overtake the answer: read what it sends until it closes, briefly.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Counts and logs (at debug: anyone can cause it) a refused caller.
pub fn refused(what: &'static str, reason: &'static str, remote: SocketAddr, detail: &str) {
    metrics::counter!("baton_tls_refused_total", "server" => what, "reason" => reason).increment(1);
    tracing::debug!(server = what, reason, %remote, detail, "refused a caller");
}

/// Which roles may call a gRPC method, given its path (`/package.Service/Method`).
pub type Policy = fn(&str) -> &'static [Role];

/// Makes [`Guard`]s: put it on a tonic server so that each call is checked against the
/// server's [`Policy`] before it reaches a handler.
#[derive(Clone)]
pub struct GuardLayer {
    /// The server's name, in metrics and refusals.
    pub server: &'static str,
    /// Who may call what.
    pub policy: Policy,
    /// A host name or address every caller's certificate must be valid for (with mutual
    /// TLS): a worker's is its control plane's host, so only its own cell drives it.
    pub host: Option<Arc<str>>,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, layer: self.clone() }
    }
}

/// The host of a URL such as `http://cell-a.internal:7100` (lowercase, no brackets), for
/// [`GuardLayer::host`].
pub fn host_of(url: &str) -> Option<Arc<str>> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    Some(host.into())
}

/// Refuses with `PERMISSION_DENIED` a call whose caller's role the policy does not allow
/// for its method; nothing of the call reaches the handler.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let allowed = (self.layer.policy)(path);
        let peer = request.extensions().get::<Peer>();
        let caller = peer.map_or(Caller::Unnamed, |p| p.caller);
        let foreign = match (&self.layer.host, caller) {
            (Some(host), Caller::Role(_)) => !peer.is_some_and(|p| p.names.iter().any(|n| **n == **host)),
            _ => false,
        };
        if caller.may(allowed) && !foreign {
            return Either::Right(self.inner.call(request));
        }
        if let Some(remote) = peer.and_then(|p| p.remote) {
            refused(self.layer.server, "role", remote, path);
        }
        let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        let message = if roles.is_empty() {
            format!("{path} is not served here")
        } else if foreign {
            let host = self.layer.host.as_deref().unwrap_or_default();
            let names = peer.map(|p| p.names.join(", ")).unwrap_or_default();
            format!(
                "{path} serves only its own cell's control plane, at {host}; this caller's certificate is for {names}"
            )
        } else {
            format!("{path} serves only callers of role {}; this caller is {}", roles.join(" or "), caller.describe())
        };
        Either::Left(ready(Ok(tonic::Status::permission_denied(message).into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Silent clients hold handshake slots until their timeout; once all are taken, the
    /// next connection is closed at once, and a slot freed serves the next.
    #[tokio::test]
    async fn handshakes_at_once_are_bounded() {
        use tokio::io::AsyncReadExt;
        let ca = crate::tls::Authority::generate("t").unwrap();
        let issued = ca.issue(Role::Cell, &["127.0.0.1"]).unwrap();
        let tls = Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _incoming = incoming_bounded(listener, tls, "test", 2);
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection over the bound is closed: {read:?}");
        // One silent client leaves: its slot serves a new connection, which is kept open.
        drop(silent.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = TcpStream::connect(addr).await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(300), next.read(&mut byte)).await;
        assert!(read.is_err(), "a connection within the bound waits for its handshake: {read:?}");
    }

    #[test]
    fn plaintext_callers_pass_and_certificates_need_an_allowed_role() {
        assert!(Caller::Unchecked.may(&[]));
        assert!(Caller::Role(Role::Router).may(&[Role::Cell, Role::Router]));
        assert!(!Caller::Role(Role::Worker).may(&[Role::Cell, Role::Router]));
        assert!(!Caller::Unnamed.may(&Role::ALL));
    }
}
