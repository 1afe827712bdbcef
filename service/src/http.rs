//! HTTP pieces the proxies share (the cell's data plane and the router): hop-by-hop header
//! handling and the JSON error body every baton endpoint answers with.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::tls::{Role, Tls};

/// A response body: an upstream's streamed through, or one of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that apply to one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Copies headers except hop-by-hop ones, those the `Connection` header names, and `Host`.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<HeaderName> = from
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for (name, value) in from {
        if HOP_BY_HOP.contains(&name.as_str()) || named.contains(name) || name == http::header::HOST {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// A client's headers as a function may see them: [`copy_end_to_end`], then without any
/// `x-baton-*` header (only baton's own processes set those, after this), and with a
/// client's `X-Call-Id` passed on as `X-Client-Call-Id` (the call ID is baton's own). The
/// trace context is the call's span's to set (`Span::propagate`).
pub fn client_headers(from: &HeaderMap, to: &mut HeaderMap) {
    copy_end_to_end(from, to);
    remove_prefixed(to, "x-baton-");
    if let Some(given) = to.remove("x-call-id") {
        to.insert(HeaderName::from_static("x-client-call-id"), given);
    }
}

/// `traceparent` (W3C trace context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C trace context).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The fields of a `traceparent` a trace can be continued from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace's ID.
    pub trace: [u8; 16],
    /// The caller's span.
    pub parent: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent`: version `00` (exactly its four fields), or a later version
    /// (not `ff`) whose first four fields read as `00`'s (what follows a dash after them is
    /// ignored); lowercase hex; neither ID all zeros. Reads the bytes in place: it runs on
    /// every call, so no split, no allocation.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex_byte(value[0], value[1])?;
        let exact = value.len() == 55;
        if version == 0xff || (!exact && (version == 0 || value[55] != b'-')) {
            return None;
        }
        let mut trace = [0u8; 16];
        for (i, b) in trace.iter_mut().enumerate() {
            *b = hex_byte(value[3 + 2 * i], value[4 + 2 * i])?;
        }
        let mut parent = [0u8; 8];
        for (i, b) in parent.iter_mut().enumerate() {
            *b = hex_byte(value[36 + 2 * i], value[37 + 2 * i])?;
        }
        let flags = hex_byte(value[53], value[54])?;
        if trace == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(Self { trace, parent, flags })
    }

    /// A new trace: random IDs, neither all zeros, not sampled.
    pub fn new_trace() -> Self {
        let ids: [u8; 24] = random_bytes();
        let mut trace: [u8; 16] = ids[..16].try_into().expect("16 bytes");
        let mut parent: [u8; 8] = ids[16..].try_into().expect("8 bytes");
        trace[15] |= 1;
        parent[7] |= 1;
        Self { trace, parent, flags: 0 }
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// The value of one lowercase hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    Some(hex_digit(high)? << 4 | hex_digit(low)?)
}

/// The one `traceparent` of `headers` a trace can be continued from, with its value: none
/// when it is missing, malformed or repeated.
pub fn caller_traceparent(headers: &HeaderMap) -> Option<(&HeaderValue, TraceParent)> {
    let mut given = headers.get_all(&TRACEPARENT).iter();
    let (Some(one), None) = (given.next(), given.next()) else { return None };
    TraceParent::parse(one.as_bytes()).map(|parsed| (one, parsed))
}

/// Whether `value` is a `traceparent` a trace can be continued from ([`TraceParent::parse`]).
pub fn valid_traceparent(value: &str) -> bool {
    TraceParent::parse(value.as_bytes()).is_some()
}

/// `N` random bytes, from the thread's generator (seeded by the OS; no system call per
/// draw).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `00-{trace}-{span}-{01|00}`, written without a formatter.
pub fn traceparent_value(trace: [u8; 16], span: [u8; 8], sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 55];
    text[..2].copy_from_slice(b"00");
    for (i, b) in trace.iter().enumerate() {
        text[3 + 2 * i] = HEX[usize::from(b >> 4)];
        text[4 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    for (i, b) in span.iter().enumerate() {
        text[36 + 2 * i] = HEX[usize::from(b >> 4)];
        text[37 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    text[53..].copy_from_slice(if sampled { b"01" } else { b"00" });
    HeaderValue::from_bytes(&text).expect("hex and dashes are a valid header value")
}

/// Makes call IDs: `{prefix}-{n}` in hex, the prefix random per process (so IDs differ
/// between processes and restarts), `n` counting its calls.
#[derive(Debug)]
pub struct CallIds {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Default for CallIds {
    fn default() -> Self {
        Self::new()
    }
}

impl CallIds {
    /// A new sequence with a random prefix.
    pub fn new() -> Self {
        let mut random = [0u8; 8];
        let prefix = match getrandom::fill(&mut random) {
            Ok(()) => u64::from_le_bytes(random),
            Err(_) => {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
            }
        };
        Self { prefix, next: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The next ID.
    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        call_id(self.prefix, n)
    }
}

/// `{prefix:016x}-{n:x}`, written without a formatter (it runs on every call).
fn call_id(prefix: u64, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digit = |word: u64, at: u32| HEX[((word >> (4 * at)) & 0xf) as usize];
    let mut text = [b'-'; 33];
    for (i, b) in text[..16].iter_mut().enumerate() {
        *b = digit(prefix, 15 - i as u32);
    }
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for (i, b) in text[17..17 + digits as usize].iter_mut().enumerate() {
        *b = digit(n, digits - 1 - i as u32);
    }
    HeaderValue::from_bytes(&text[..17 + digits as usize]).expect("hex is a valid header value")
}

/// The call ID a router gave (`X-Baton-Call-Id`), when it has the shape of one: 1 to 64
/// letters, digits, `-`, `_` or `.` (so it can be logged and echoed as it is).
pub fn given_call_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(baton_model::headers::ROUTER_CALL_ID)?;
    let ok = (1..=64).contains(&value.len())
        && value.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| value.clone())
}

/// Removes every header whose (lowercase) name starts with `prefix`.
pub fn remove_prefixed(headers: &mut HeaderMap, prefix: &str) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with(prefix)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit.
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// Not all of it arrived in time.
    #[error("the request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection broke or the framing was wrong.
    #[error("reading the request body: {0}")]
    Broken(String),
}

/// Reads a whole request body of at most `max` bytes, all of it within `within`.
pub async fn read_body(
    body: hyper::body::Incoming,
    max: usize,
    within: std::time::Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(within, http_body_util::Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyError::Timeout(within)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}

/// A body of bytes we wrote.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A JSON error answer: `{"error":{"code","message"}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .expect("static parts are valid")
}

/// `/function/{name}[/rest]` into (name, rest), rest defaulting to `/`.
pub fn function_path(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/function/")?;
    let (name, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    (!name.is_empty()).then_some((name, rest))
}

/// Who may use an HTTP server and how connections are accepted.
#[derive(Debug, Clone)]
pub struct Access {
    /// The server's name, in metrics and logs.
    pub what: &'static str,
    /// Mutual TLS, or plaintext.
    pub tls: Tls,
    /// The roles whose certificates it serves (with mutual TLS); everyone else's requests
    /// are answered `403 forbidden_caller`.
    pub allowed: &'static [Role],
    /// Most calls one HTTP/2 connection may carry at once.
    pub http2_streams: u32,
}

/// Largest header list (bytes) an HTTP/2 peer may send: about what HTTP/1 takes (hyper's
/// read buffer), so a call that passes the router's HTTP/1 edge passes its HTTP/2 hop too.
pub const MAX_HEADER_LIST: u32 = 400 * 1024;

impl Access {
    /// A server open to anyone who reaches it, plaintext (the router's tenant API, which
    /// checks API keys itself), with hyper's default of 200 calls per HTTP/2 connection.
    pub fn public(what: &'static str) -> Self {
        Self { what, tls: Tls::Plaintext, allowed: &[], http2_streams: 200 }
    }
}

/// Serves HTTP/1.1 and h2c (h2 over TLS) on `listener` with `handler` until `stop` turns
/// true, then gives in-flight requests up to `drain` to finish. Connections are accepted
/// as `access` says ([`crate::tls::incoming`]): with mutual TLS, a caller whose role is not
/// allowed gets `403 forbidden_caller` for every request and the handler never sees them.
/// Accepted sockets get TCP_NODELAY. A connection whose request headers do not all arrive
/// within `header_read` is closed, and so is a keep-alive connection idle that long
/// (hyper's header-read timer starts again after each answer). A request line ending in a
/// bare LF is refused with `400 bad_framing` and the connection closed ([`crate::framing`]).
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    access: Access,
    handler: H,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: std::time::Duration,
    header_read: std::time::Duration,
) where
    H: Fn(http::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_stream::StreamExt;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_read);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .adaptive_window(true)
        .max_concurrent_streams(access.http2_streams)
        .max_header_list_size(MAX_HEADER_LIST);
    let (what, allowed) = (access.what, access.allowed);
    let mut incoming = crate::tls::incoming(listener, access.tls, what);
    loop {
        let accepted = tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(accepted)) => accepted,
                Some(Err(_)) => continue,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let (caller, remote) = (accepted.peer.caller, accepted.peer.remote);
        let handler = handler.clone();
        let admitted = caller.may(allowed);
        if !admitted && let Some(remote) = remote {
            crate::tls::refused(what, "role", remote, "http");
        }
        let service = hyper::service::service_fn(move |req| {
            let answer = admitted.then(|| handler(req));
            async move {
                Ok::<_, std::convert::Infallible>(match answer {
                    Some(answer) => answer.await,
                    None => forbidden(what, allowed, caller),
                })
            }
        });
        let stream = crate::framing::StrictFraming::new(accepted);
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    drop(incoming);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {drain:?}; closing them");
    }
}

fn forbidden(what: &str, allowed: &[Role], caller: crate::tls::Caller) -> Response<Body> {
    let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
    let message =
        format!("the {what} serves only callers of role {}; this caller is {}", roles.join(" or "), caller.describe());
    error_response(StatusCode::FORBIDDEN, "forbidden_caller", &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_to_continue_is_read_and_anything_else_is_refused() {
        let read = TraceParent::parse(PARENT.as_bytes()).expect("valid");
        assert_eq!(traceparent_value(read.trace, read.parent, read.sampled()), PARENT);
        assert!(valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"), "a later version");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
        let mut twice = HeaderMap::new();
        twice.append("traceparent", HeaderValue::from_static(PARENT));
        assert_eq!(caller_traceparent(&twice).map(|(_, p)| p), Some(read));
        twice.append("traceparent", HeaderValue::from_static(PARENT));
        assert!(caller_traceparent(&twice).is_none(), "a repeated traceparent is not continued");
        assert_eq!(call_id(0, 0), "0000000000000000-0");
        assert_eq!(call_id(u64::MAX, u64::MAX), "ffffffffffffffff-ffffffffffffffff");
        let (a, b) = (TraceParent::new_trace(), TraceParent::new_trace());
        assert_ne!(a, b, "each new trace is its own");
        assert!(valid_traceparent(traceparent_value(a.trace, a.parent, false).to_str().unwrap()));
    }

    /// The rule as W3C trace context words it, field by field: the reference the parser
    /// on the call path must agree with.
    fn by_fields(value: &str) -> bool {
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let zeros = |s: &str| s.bytes().all(|b| b == b'0');
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let rest_ok = version != "00" || parts.next().is_none();
        version.len() == 2
            && hex(version)
            && version != "ff"
            && trace.len() == 32
            && hex(trace)
            && !zeros(trace)
            && parent.len() == 16
            && hex(parent)
            && !zeros(parent)
            && flags.len() == 2
            && hex(flags)
            && rest_ok
    }

    proptest::proptest! {
        #[test]
        fn the_parser_agrees_with_the_rule_field_by_field(
            value in "[0-9a-fA-F]{2}-[0-9a-fx]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[a-z0-9-]{0,4}|[a-z0-9]{0,2})?",
            zeros in proptest::option::of(0usize..2),
        ) {
            let value = match zeros {
                Some(0) => format!("{}{}{}", &value[..3], "0".repeat(32), &value[35..]),
                Some(_) => format!("{}{}{}", &value[..36], "0".repeat(16), &value[52..]),
                None => value,
            };
            proptest::prop_assert_eq!(valid_traceparent(&value), by_fields(&value), "{}", value);
        }

        #[test]
        fn a_call_id_is_the_prefix_and_the_count_in_hex(prefix: u64, n: u64) {
            proptest::prop_assert_eq!(call_id(prefix, n), format!("{prefix:016x}-{n:x}"));
        }

        #[test]
        fn what_is_written_reads_back(trace: [u8; 16], parent: [u8; 8], sampled: bool) {
            let value = traceparent_value(trace, parent, sampled);
            let read = TraceParent::parse(value.as_bytes());
            let valid = trace != [0; 16] && parent != [0; 8];
            proptest::prop_assert_eq!(read, valid.then_some(TraceParent { trace, parent, flags: u8::from(sampled) }));
        }
    }

    #[test]
    fn function_paths_split_into_function_and_rest() {
        assert_eq!(function_path("/function/echo"), Some(("echo", "/")));
        assert_eq!(function_path("/function/echo/a/b"), Some(("echo", "/a/b")));
        assert_eq!(function_path("/function/"), None);
        assert_eq!(function_path("/other"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut from = HeaderMap::new();
        from.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        from.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        from.insert("x-private", HeaderValue::from_static("1"));
        from.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        from.insert("host", HeaderValue::from_static("router"));
        from.insert("x-call-id", HeaderValue::from_static("c"));
        from.append("accept", HeaderValue::from_static("a"));
        from.append("accept", HeaderValue::from_static("b"));
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        assert_eq!(to.len(), 3);
        assert_eq!(to.get_all("accept").iter().count(), 2);
        assert!(to.get("x-private").is_none() && to.get("host").is_none());
    }
}
