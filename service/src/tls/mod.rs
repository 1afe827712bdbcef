//! Mutual TLS between baton's processes: one private certificate authority per federation,
//! a certificate per process naming its role, and rustls configurations that accept only
//! peers the authority signed. A server learns its caller's role from the certificate
//! (a SAN URI `baton://role/<role>`), so each service can admit only the roles its API is
//! for: the shard manager's admin operations the operator, a worker its cell, a data plane
//! the routers.
//!
//! `baton up` and `baton certs` make the authority and the certificates ([`Authority`]);
//! a deployment given certificates by its operator only loads them ([`server_config`],
//! [`client_config`]).

use std::sync::Arc;

mod accept;
mod connect;
mod files;

pub use accept::host_of;
pub use accept::{Accepted, Caller, Guard, GuardLayer, HANDSHAKE_TIMEOUT, Peer, Policy, incoming, refused};
pub use files::{Tls, TlsConfig, ToolCredentials};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Prefix of the SAN URI that names a certificate's role.
const ROLE_URI: &str = "baton://role/";

/// What a process is to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A person or tool administering the federation (the CLI).
    Operator,
    /// A shard-manager replica.
    ShardManager,
    /// A cell (control plane and data planes).
    Cell,
    /// A worker.
    Worker,
    /// A router.
    Router,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [Role::Operator, Role::ShardManager, Role::Cell, Role::Worker, Role::Router];

    /// Its name in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::ShardManager => "shard-manager",
            Role::Cell => "cell",
            Role::Worker => "worker",
            Role::Router => "router",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Why TLS material could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making a key or certificate failed.
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held nothing usable.
    #[error("{what}: {message}")]
    Pem {
        /// Which file (`ca`, `cert`, `key`).
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key; keep it in a file of mode 0600.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<secret>").finish()
    }
}

/// A federation's certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Authority {
    /// A new authority named `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The authority saved earlier (its certificate and key, PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
    }

    /// Its certificate, which every process trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Its private key; keep it off the hosts that do not issue certificates.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for a process of `role`, valid as a server for `names` (host names or
    /// IP addresses its peers dial) and as a client.
    pub fn issue(&self, role: Role, names: &[&str]) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("baton {}", role.as_str()));
        params.subject_alt_names.push(SanType::URI(format!("{ROLE_URI}{}", role.as_str()).try_into()?));
        for name in names {
            params.subject_alt_names.push(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { what, message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, message: "holds no certificate".into() });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem { what: "key", message: e.to_string() })
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs("ca", ca_pem)? {
        roots.add(cert).map_err(|e| TlsError::Pem { what: "ca", message: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

/// A server that presents `cert_pem` and accepts only clients with a certificate the
/// authority `ca_pem` signed.
pub fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("cert", cert_pem)?, key(key_pem)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts only servers the authority `ca_pem` signed and presents
/// `cert_pem` as its own.
pub fn client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs("cert", cert_pem)?, key(key_pem)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The host names and IP addresses a peer's (verified) certificate is valid for.
pub fn peer_names(chain: &[CertificateDer<'_>]) -> Vec<String> {
    let Some(leaf) = chain.first() else { return Vec::new() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Vec::new() };
    let Ok(Some(sans)) = cert.subject_alternative_name() else { return Vec::new() };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The role a peer's (verified) certificate names, if it names exactly one.
pub fn peer_role(chain: &[CertificateDer<'_>]) -> Option<Role> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    let mut roles = sans.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI).and_then(Role::parse),
        _ => None,
    });
    let role = roles.next()?;
    roles.next().is_none().then_some(role)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A TLS connection over TCP between a server of `server` and a client of `client`;
    /// the role the server read, or the error either side met.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<Option<Role>, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
            let role = tls.get_ref().1.peer_certificates().and_then(peer_role);
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(role)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let sent = async {
            let mut tls =
                tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        }
        .await;
        let accepted = accept.await.unwrap();
        sent?;
        accepted
    }

    #[tokio::test]
    async fn peers_the_authority_signed_connect_and_name_their_role() {
        let ca = Authority::generate("test federation").unwrap();
        let server = ca.issue(Role::ShardManager, &["127.0.0.1", "localhost"]).unwrap();
        let operator = ca.issue(Role::Operator, &[]).unwrap();
        let server_config = server_config(ca.cert_pem(), &server.cert_pem, &server.key_pem).unwrap();
        let client = client_config(ca.cert_pem(), &operator.cert_pem, &operator.key_pem).unwrap();
        assert_eq!(handshake(server_config.clone(), client).await, Ok(Some(Role::Operator)));

        // Saved and loaded again, the authority issues certificates the same peers accept.
        let again = Authority::load(ca.cert_pem(), ca.key_pem()).unwrap();
        let router = again.issue(Role::Router, &[]).unwrap();
        let client = client_config(ca.cert_pem(), &router.cert_pem, &router.key_pem).unwrap();
        assert_eq!(handshake(server_config, client).await, Ok(Some(Role::Router)));
    }

    #[tokio::test]
    async fn a_stranger_is_refused_either_way() {
        let ca = Authority::generate("ours").unwrap();
        let other = Authority::generate("theirs").unwrap();
        let server = ca.issue(Role::Cell, &["127.0.0.1"]).unwrap();
        let ours = server_config(ca.cert_pem(), &server.cert_pem, &server.key_pem).unwrap();
        // A client certificate from another authority.
        let stranger = other.issue(Role::Operator, &[]).unwrap();
        let client = client_config(other.cert_pem(), &stranger.cert_pem, &stranger.key_pem).unwrap();
        assert!(handshake(ours.clone(), client).await.is_err(), "a client of another authority");
        // A client that trusts ours but presents another's certificate.
        let client = client_config(ca.cert_pem(), &stranger.cert_pem, &stranger.key_pem).unwrap();
        assert!(handshake(ours.clone(), client).await.is_err(), "a client certificate another authority signed");
        // A server of another authority, to a client of ours.
        let impostor = other.issue(Role::Cell, &["127.0.0.1"]).unwrap();
        let theirs = server_config(ca.cert_pem(), &impostor.cert_pem, &impostor.key_pem).unwrap();
        let operator = ca.issue(Role::Operator, &[]).unwrap();
        let client = client_config(ca.cert_pem(), &operator.cert_pem, &operator.key_pem).unwrap();
        assert!(handshake(theirs, client).await.is_err(), "a server another authority signed");
        // A client with no certificate at all.
        let anonymous = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots(ca.cert_pem()).unwrap())
                .with_no_client_auth(),
        );
        assert!(handshake(ours, anonymous).await.is_err(), "a client without a certificate");
    }

    #[test]
    fn a_certificate_names_its_hosts_and_a_url_its_host() {
        let ca = Authority::generate("x").unwrap();
        let issued = ca.issue(Role::Cell, &["Cell-A.internal", "10.0.0.7", "::1"]).unwrap();
        let chain = certs("cert", &issued.cert_pem).unwrap();
        assert_eq!(peer_names(&chain), ["cell-a.internal", "10.0.0.7", "::1"]);
        assert_eq!(host_of("http://Cell-A.internal:7100").as_deref(), Some("cell-a.internal"));
        assert_eq!(host_of("http://[::1]:7100").as_deref(), Some("::1"));
        assert_eq!(host_of("").as_deref(), None);
    }

    #[test]
    fn roles_round_trip_and_bad_pem_names_its_file() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        let ca = Authority::generate("x").unwrap();
        let issued = ca.issue(Role::Worker, &[]).unwrap();
        let err = server_config("not pem", &issued.cert_pem, &issued.key_pem).unwrap_err();
        assert!(err.to_string().starts_with("ca:"), "{err}");
        let err = client_config(ca.cert_pem(), &issued.cert_pem, "nothing").unwrap_err();
        assert!(err.to_string().starts_with("key:"), "{err}");
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"), "a key is never printed");
    }
}
