//! Certificates for tests: a federation's authority and a certificate per role, as files
//! (for processes and configs) and as loaded credentials (for clients in the test).

use std::path::{Path, PathBuf};
use std::process::Command;

use baton_service::tls::{Authority, Role, Tls, TlsConfig};

/// Runs a baton daemon (`baton-cell`, `baton-worker`, `baton-router`,
/// `baton-shard-manager`) without TLS, as most tests do; a test of TLS gives it
/// [`Pki::env`] instead.
pub fn daemon(name: &str) -> Command {
    let mut command = Command::new(crate::bin(name));
    command.env("BATON_TLS__PLAINTEXT", "true");
    command
}

/// A private authority in a folder of its own, removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
    authority: Authority,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A new authority.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::generate("baton test federation").unwrap();
        std::fs::write(dir.path().join("ca.pem"), authority.cert_pem()).unwrap();
        Self { dir, authority }
    }

    /// The authority's certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[tls]` section of a process of `role` (its certificate, valid for 127.0.0.1
    /// and localhost, written on first use).
    pub fn config(&self, role: Role) -> TlsConfig {
        let (cert, key) = self.files(role);
        TlsConfig { ca: self.ca(), cert, key, plaintext: false }
    }

    /// The same as environment variables, for a daemon process.
    pub fn env(&self, role: Role) -> Vec<(String, String)> {
        let config = self.config(role);
        vec![
            ("BATON_TLS__PLAINTEXT".into(), "false".into()),
            ("BATON_TLS__CA".into(), path(&config.ca)),
            ("BATON_TLS__CERT".into(), path(&config.cert)),
            ("BATON_TLS__KEY".into(), path(&config.key)),
        ]
    }

    /// Loaded credentials of `role`, for a client in the test.
    pub fn tls(&self, role: Role) -> Tls {
        Tls::load(&self.config(role), role).unwrap()
    }

    /// Credentials of `role` with a certificate valid for `names` only (a process on
    /// another host, say).
    pub fn tls_for(&self, role: Role, names: &[&str]) -> Tls {
        let issued = self.authority.issue(role, names).unwrap();
        Tls::from_pem(self.authority.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap()
    }

    /// The certificate and key files of `role`.
    pub fn files(&self, role: Role) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{}.pem", role.as_str()));
        let key = self.dir.path().join(format!("{}.key", role.as_str()));
        if !cert.exists() {
            let issued = self.authority.issue(role, &["127.0.0.1", "localhost"]).unwrap();
            std::fs::write(&cert, issued.cert_pem).unwrap();
            std::fs::write(&key, issued.key_pem).unwrap();
        }
        (cert, key)
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
