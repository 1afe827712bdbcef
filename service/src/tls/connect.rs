//! The client side: gRPC channels and HTTP connections to other baton processes, over
//! mutual TLS where the process has credentials.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::Tls;

type Connecting =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>> + Send>>;

/// Opens a TCP connection (TCP_NODELAY) to `uri`'s host and port and completes a TLS
/// handshake, checking the server's certificate against the host name or IP address.
fn tls_connector(
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = io::Error,
    Future = Connecting,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| -> Connecting {
        let config = config.clone();
        Box::pin(async move {
            let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let name =
                rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| invalid("not a host name"))?;
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    })
}

impl Tls {
    /// A channel to `endpoint` that connects when first used (and again after a failure).
    pub fn channel(&self, endpoint: &Endpoint) -> Channel {
        match self {
            Tls::Plaintext => endpoint.connect_lazy(),
            Tls::Mutual { client, .. } => endpoint.connect_with_connector_lazy(tls_connector(client.clone())),
        }
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Tls::Plaintext => endpoint.connect().await,
            Tls::Mutual { client, .. } => endpoint.connect_with_connector(tls_connector(client.clone())).await,
        }
    }

    /// A connected channel to the gRPC server at `url`, or why not, in words.
    pub async fn connect_url(&self, url: &str) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|_| format!("{url:?} is not a URL"))?;
        self.connect(&endpoint.tcp_nodelay(true)).await.map_err(|e| {
            let mut message = format!("connecting to {url}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        })
    }

    /// An HTTP connector (TCP_NODELAY) for a hyper client: with mutual TLS it speaks only
    /// `https` and presents this process's certificate; plaintext, only `http`.
    pub fn http_connector(&self) -> hyper_rustls::HttpsConnector<HttpConnector> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        match self {
            Tls::Mutual { client, .. } => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((**client).clone())
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http),
            Tls::Plaintext => {
                let nothing_trusted = rustls::ClientConfig::builder_with_provider(super::provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(nothing_trusted)
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(http)
            }
        }
    }

    /// The scheme of this process's HTTP endpoints: `https` with mutual TLS.
    pub fn scheme(&self) -> &'static str {
        if self.is_mutual() { "https" } else { "http" }
    }
}
