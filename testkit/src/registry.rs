//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry), on a free port, its storage in a folder of its own, killed on drop.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::Proc;

enum Auth<'a> {
    Basic(&'a str, &'a str),
    Token(&'a crate::TokenServer),
}

/// A running registry.
pub struct Registry {
    /// Where it listens (plain HTTP).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _proc: Proc,
}

impl Registry {
    /// Starts one listening on `host` (an address of this machine) at a free port, and
    /// waits until it answers.
    pub async fn start_on(host: &str) -> Self {
        Self::start_with(host, None).await
    }

    /// Starts one on 127.0.0.1 that takes only `user` with `password` (HTTP basic auth,
    /// an htpasswd file).
    pub async fn start_private(user: &str, password: &str) -> Self {
        Self::start_with("127.0.0.1", Some(Auth::Basic(user, password))).await
    }

    /// Starts one on 127.0.0.1 with token authentication: a client gets a bearer token
    /// from `token` (which takes `user` and its password) and presents it.
    pub async fn start_with_tokens(token: &crate::TokenServer) -> Self {
        Self::start_with("127.0.0.1", Some(Auth::Token(token))).await
    }

    async fn start_with(host: &str, user: Option<Auth<'_>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = match user {
            Some(Auth::Token(token)) => {
                let bundle = dir.path().join("token.pem");
                std::fs::write(&bundle, &token.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    token.addr,
                    crate::token::SERVICE,
                    crate::token::ISSUER,
                    bundle.display()
                )
            }
            Some(Auth::Basic(user, password)) => {
                let hash = bcrypt::hash(password, 5).unwrap();
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: baton-test\n    path: {}\n", file.display())
            }
            None => String::new(),
        };
        let port = crate::free_port();
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry; scripts/test.sh installs it)");
        let registry = Self { addr, _dir: dir, _proc: Proc(child) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the registry did not listen on {addr}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        registry
    }

    /// Starts one on 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// `HOST:PORT/{path}`, an image reference in it.
    pub fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.addr)
    }
}
