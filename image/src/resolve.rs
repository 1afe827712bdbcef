//! Resolving a reference (`registry/repository:tag` or `@sha256:…`) to the manifest a
//! worker will pull: the registry's manifest, or from a multi-platform index its
//! linux/amd64 entry, checked against the image's own config and a size limit.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// How images are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverSettings {
    /// Registries (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Largest image accepted: its config and compressed layers together, bytes.
    pub max_image_bytes: u64,
    /// Longest a registry may take to answer one request.
    pub timeout: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self { insecure_registries: Vec::new(), max_image_bytes: 4 << 30, timeout: Duration::from_secs(10) }
    }
}

/// A tenant's credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None.
    Anonymous,
    /// A user name and password (basic auth, or exchanged for a bearer token where the
    /// registry asks for one).
    Basic {
        /// The user.
        username: String,
        /// The password or token.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <secret>)"),
        }
    }
}

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The reference as given, normalized (`docker.io/library/alpine:latest`).
    pub reference: String,
    /// The digest of the linux/amd64 image manifest: what the function runs.
    pub digest: String,
    /// Its config and compressed layers together, bytes.
    pub bytes: u64,
}

/// Why a reference did not resolve; each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not an image reference.
    #[error("{0:?} is not an image reference such as registry.example:5000/team/app:1.2")]
    BadReference(String),
    /// A registry not on loopback nor listed as insecure, and it does not speak HTTPS.
    #[error(
        "registry {0} did not answer over HTTPS; plain HTTP is only for loopback registries and those the operator lists as insecure"
    )]
    NotHttps(String),
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable {
        /// Its host.
        registry: String,
        /// Why.
        message: String,
    },
    /// No such repository there.
    #[error("repository {0} does not exist in its registry")]
    UnknownRepository(String),
    /// No such tag or digest in the repository.
    #[error("{0} is not in its repository (unknown tag or digest)")]
    UnknownTag(String),
    /// The registry refused the credentials given (or wants some).
    #[error("registry {0} refused the credentials given for this image (or needs some)")]
    RefusedCredentials(String),
    /// Neither the image nor any entry of its index is for linux/amd64.
    #[error("{reference} is not a linux/amd64 image ({found})")]
    NotLinuxAmd64 {
        /// The reference.
        reference: String,
        /// What it is for.
        found: String,
    },
    /// Over the size limit.
    #[error("{reference} is {bytes} bytes, over the limit of {limit}")]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Anything else the registry answered.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Its host.
        registry: String,
        /// What it said.
        message: String,
    },
}

impl ResolveError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadReference(_) => "bad_reference",
            Self::NotHttps(_) => "not_https",
            Self::Unreachable { .. } => "unreachable",
            Self::UnknownRepository(_) => "unknown_repository",
            Self::UnknownTag(_) => "unknown_tag",
            Self::RefusedCredentials(_) => "refused_credentials",
            Self::NotLinuxAmd64 { .. } => "not_linux_amd64",
            Self::TooLarge { .. } => "too_large",
            Self::Registry { .. } => "registry_error",
        }
    }
}

/// Whether a registry (`host` or `host:port`) may be reached over plain HTTP: on a
/// loopback address (as Docker allows), or listed by the operator.
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|r| r.eq_ignore_ascii_case(registry)) {
        return true;
    }
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A registry client for `registry`: plain HTTP where allowed, linux/amd64 from indexes,
/// the settings' timeouts.
pub(crate) fn client_for(registry: &str, settings: &ResolverSettings) -> Client {
    let protocol = if plain_http_allowed(registry, &settings.insecure_registries) {
        ClientProtocol::HttpsExcept(vec![registry.to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(settings.timeout),
        read_timeout: Some(settings.timeout),
        ..ClientConfig::default()
    })
}

impl Credentials {
    pub(crate) fn auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }
}

/// Resolves references against registries.
#[derive(Debug, Clone)]
pub struct Resolver {
    settings: ResolverSettings,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new(ResolverSettings::default())
    }
}

impl Resolver {
    /// A resolver with `settings`.
    pub fn new(settings: ResolverSettings) -> Self {
        // Registries are reached with rustls on ring, as every other TLS connection of
        // baton's; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { settings }
    }

    /// Resolves `reference` with `credentials`: the digest of the manifest a worker will
    /// pull for linux/amd64.
    pub async fn resolve(&self, reference: &str, credentials: &Credentials) -> Result<Resolved, ResolveError> {
        let parsed: Reference = reference.parse().map_err(|_| ResolveError::BadReference(reference.to_string()))?;
        let registry = parsed.resolve_registry().to_string();
        let client = client_for(&registry, &self.settings);
        let auth = credentials.auth();
        let whole = parsed.whole();
        let pulled = tokio::time::timeout(
            self.settings.timeout * 3,
            client.pull_manifest_and_config_and_list_digest(&parsed, &auth),
        )
        .await
        .map_err(|_| ResolveError::Unreachable { registry: registry.clone(), message: "timed out".into() })?;
        let (manifest, digest, config, _index) = match pulled.map_err(|e| classify(e, &registry, &parsed)) {
            Ok(pulled) => pulled,
            // Registries answer "manifest unknown" for a repository that does not exist
            // too: a repository without tags is the one the tenant got wrong.
            Err(ResolveError::UnknownTag(tag)) => {
                let tags = client.list_tags(&parsed, &auth, Some(1), None).await;
                return Err(match tags {
                    Ok(list) if !list.tags.is_empty() => ResolveError::UnknownTag(tag),
                    _ => ResolveError::UnknownRepository(format!("{registry}/{}", parsed.repository())),
                });
            }
            Err(other) => return Err(other),
        };
        let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| ResolveError::Registry {
            registry: registry.clone(),
            message: format!("image config: {e}"),
        })?;
        let (os, arch) = (config["os"].as_str().unwrap_or("?"), config["architecture"].as_str().unwrap_or("?"));
        if (os, arch) != ("linux", "amd64") {
            return Err(ResolveError::NotLinuxAmd64 { reference: whole, found: format!("{os}/{arch}") });
        }
        let bytes =
            manifest.config.size.max(0) as u64 + manifest.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
        if bytes > self.settings.max_image_bytes {
            return Err(ResolveError::TooLarge { reference: whole, bytes, limit: self.settings.max_image_bytes });
        }
        Ok(Resolved { reference: whole, digest, bytes })
    }
}

/// What an error of the registry client means for the tenant.
pub(crate) fn classify(error: OciDistributionError, registry: &str, reference: &Reference) -> ResolveError {
    let registry = registry.to_string();
    match error {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::NameUnknown)) {
                ResolveError::UnknownRepository(format!("{registry}/{}", reference.repository()))
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NotFound)) {
                ResolveError::UnknownTag(reference.whole())
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                ResolveError::RefusedCredentials(registry)
            } else {
                ResolveError::Registry { registry, message: envelope.to_string() }
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => ResolveError::UnknownTag(reference.whole()),
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            ResolveError::RefusedCredentials(registry)
        }
        OciDistributionError::RequestError(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if message.contains("InvalidContentType")
                || message.contains("invalid peer certificate")
                || message.to_ascii_lowercase().contains("corrupt message")
            {
                ResolveError::NotHttps(registry)
            } else {
                ResolveError::Unreachable { registry, message }
            }
        }
        other => ResolveError::Registry { registry, message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let none: Vec<String> = Vec::new();
        for loopback in ["127.0.0.1:5000", "127.0.0.1", "localhost:5000", "LOCALHOST", "[::1]:5000", "127.8.9.10:1"] {
            assert!(plain_http_allowed(loopback, &none), "{loopback}");
        }
        for remote in ["registry.example:5000", "10.0.0.1:5000", "docker.io", "index.docker.io", "localhost.evil.com"] {
            assert!(!plain_http_allowed(remote, &none), "{remote}");
        }
        let listed = vec!["registry.internal:5000".to_string()];
        assert!(plain_http_allowed("registry.internal:5000", &listed));
        assert!(!plain_http_allowed("registry.internal:5001", &listed), "a listing names its port");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials::Basic { username: "acme".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_malformed_reference_is_refused_before_any_request() {
        let err = Resolver::default().resolve("UPPER/Case:tag", &Credentials::Anonymous).await.unwrap_err();
        assert!(matches!(err, ResolveError::BadReference(_)), "{err}");
    }
}
