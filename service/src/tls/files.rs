//! The `[tls]` section every daemon has, and the credentials it loads into.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Role, TlsError, client_config, peer_role, server_config};
use crate::ConfigError;

/// `[tls]`: the process's certificate, its key, and the federation's authority. With
/// them, every gRPC and HTTP connection between baton's processes is mutual TLS and each
/// server admits only the roles its API is for. Without them (`plaintext = true`) anyone
/// who can reach a port can call it: for tests and single-user machines only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The federation's certificate authority (PEM), which signed every peer's
    /// certificate. Default: `""` (none).
    pub ca: PathBuf,
    /// This process's certificate (PEM), made by `baton certs issue ROLE`. Its role must be
    /// this process's. Default: `""` (none).
    pub cert: PathBuf,
    /// Its private key (PEM); keep it mode 0600. Default: `""` (none).
    pub key: PathBuf,
    /// Run without TLS and without checking callers, when `ca`, `cert` and `key` are not
    /// set. A process refuses to start with neither. Default: `false`.
    pub plaintext: bool,
}

/// A command-line tool's credentials (`--ca`, `--cert`, `--key`, or `BATON_CA`,
/// `BATON_CERT`, `BATON_KEY`): an operator certificate for a federation that runs with
/// mutual TLS; none for one that runs plaintext.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ToolCredentials {
    /// The federation's certificate authority (PEM).
    #[cfg_attr(feature = "clap", arg(long, env = "BATON_CA"))]
    pub ca: Option<PathBuf>,
    /// An operator certificate the authority signed (PEM; `baton certs issue operator`).
    #[cfg_attr(feature = "clap", arg(long, env = "BATON_CERT"))]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[cfg_attr(feature = "clap", arg(long, env = "BATON_KEY"))]
    pub key: Option<PathBuf>,
}

impl ToolCredentials {
    /// The credentials to connect with, as an operator.
    pub fn tls(&self) -> Result<Tls, ConfigError> {
        Tls::for_tool(self.ca.as_deref(), self.cert.as_deref(), self.key.as_deref(), Role::Operator)
    }
}

/// What a process uses to accept and open connections to other baton processes: mutual
/// TLS with its own certificate, or plaintext. Cheap to clone.
#[derive(Clone)]
pub enum Tls {
    /// No encryption, no caller checked.
    Plaintext,
    /// Mutual TLS.
    Mutual {
        /// For its servers: clients must present a certificate the authority signed.
        server: Arc<rustls::ServerConfig>,
        /// For its clients: servers must present one too; it presents its own.
        client: Arc<rustls::ClientConfig>,
    },
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_mutual() { "Tls::Mutual" } else { "Tls::Plaintext" })
    }
}

impl Tls {
    /// Whether connections are mutual TLS.
    pub fn is_mutual(&self) -> bool {
        matches!(self, Tls::Mutual { .. })
    }

    /// Mutual TLS from PEM text: the authority's certificate, this process's certificate
    /// and its key.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, TlsError> {
        Ok(Tls::Mutual { server: server_config(ca, cert, key)?, client: client_config(ca, cert, key)? })
    }

    /// A command-line tool's credentials for `role`: all three files, or none at all for
    /// plaintext (against a federation that runs without TLS).
    pub fn for_tool(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        role: Role,
    ) -> Result<Self, ConfigError> {
        let config = match (ca, cert, key) {
            (None, None, None) => TlsConfig { plaintext: true, ..TlsConfig::default() },
            (Some(ca), Some(cert), Some(key)) => {
                TlsConfig { ca: ca.into(), cert: cert.into(), key: key.into(), plaintext: false }
            }
            _ => {
                return Err(ConfigError::field(
                    "--ca, --cert, --key",
                    "give all three (or BATON_CA, BATON_CERT and BATON_KEY), or none against a federation without TLS",
                ));
            }
        };
        Tls::load(&config, role)
    }

    /// Loads `config` for a process of `role`: the files it names, checked to hold a
    /// certificate for that role, or plaintext where the operator chose it.
    pub fn load(config: &TlsConfig, role: Role) -> Result<Self, ConfigError> {
        let named = [&config.ca, &config.cert, &config.key].iter().filter(|p| !p.as_os_str().is_empty()).count();
        match (named, config.plaintext) {
            (0, true) => return Ok(Tls::Plaintext),
            (0, false) => {
                return Err(ConfigError::field(
                    "tls",
                    format!(
                        "set tls.ca, tls.cert and tls.key (make them with `baton certs init` and `baton certs issue \
                         {}`), or tls.plaintext = true to let anyone who reaches this process's ports call it",
                        role.as_str()
                    ),
                ));
            }
            (3, false) => {}
            (3, true) => {
                return Err(ConfigError::field(
                    "tls.plaintext",
                    "is true while tls.ca, tls.cert and tls.key are set; choose one",
                ));
            }
            _ => return Err(ConfigError::field("tls", "set all three of tls.ca, tls.cert and tls.key, or none")),
        }
        let read = |field: &str, path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::field(format!("tls.{field}"), format!("reading {}: {e}", path.display())))
        };
        let (ca, cert, key) = (read("ca", &config.ca)?, read("cert", &config.cert)?, read("key", &config.key)?);
        let certs = super::certs("cert", &cert).map_err(|e| ConfigError::field("tls.cert", e.to_string()))?;
        match peer_role(&certs) {
            Some(found) if found == role => {}
            Some(found) => {
                return Err(ConfigError::field(
                    "tls.cert",
                    format!("is a certificate of role {}; this process's role is {}", found.as_str(), role.as_str()),
                ));
            }
            None => {
                return Err(ConfigError::field("tls.cert", "names no baton role; make it with `baton certs issue`"));
            }
        }
        Tls::from_pem(&ca, &cert, &key).map_err(|e| ConfigError::field("tls", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Authority;

    fn written(dir: &Path, role: Role) -> TlsConfig {
        let ca = Authority::generate("test").unwrap();
        let issued = ca.issue(role, &["127.0.0.1"]).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
        TlsConfig { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), plaintext: false }
    }

    #[test]
    fn a_process_needs_credentials_or_an_explicit_plaintext() {
        let err = Tls::load(&TlsConfig::default(), Role::Router).unwrap_err().to_string();
        assert!(err.contains("baton certs issue router") && err.contains("tls.plaintext"), "{err}");
        let plain = TlsConfig { plaintext: true, ..TlsConfig::default() };
        assert!(!Tls::load(&plain, Role::Router).unwrap().is_mutual());

        let dir = tempfile::tempdir().unwrap();
        let config = written(dir.path(), Role::Cell);
        assert!(Tls::load(&config, Role::Cell).unwrap().is_mutual());
        let err = Tls::load(&config, Role::Worker).unwrap_err().to_string();
        assert!(err.contains("tls.cert") && err.contains("of role cell; this process's role is worker"), "{err}");
        let both = TlsConfig { plaintext: true, ..config.clone() };
        assert!(Tls::load(&both, Role::Cell).unwrap_err().to_string().contains("choose one"));
        let partial = TlsConfig { key: PathBuf::new(), ..config.clone() };
        assert!(Tls::load(&partial, Role::Cell).unwrap_err().to_string().contains("all three"));
        let missing = TlsConfig { key: dir.path().join("nope.pem"), ..config };
        let err = Tls::load(&missing, Role::Cell).unwrap_err().to_string();
        assert!(err.contains("tls.key") && err.contains("nope.pem"), "{err}");
    }
}
