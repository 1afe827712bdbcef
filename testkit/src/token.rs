//! A token server for a registry with token authentication (the distribution spec's
//! bearer-token flow): it takes one user's basic credentials and answers a JWT (ES256,
//! with its certificate in `x5c`) granting the scopes asked for, which the registry checks
//! against the certificate it was given.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The issuer and service names the registry is configured with.
pub const ISSUER: &str = "baton-test-issuer";
/// See [`ISSUER`].
pub const SERVICE: &str = "baton-test-registry";

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    cert_der_b64: String,
    user: String,
    password: String,
}

/// A running token server.
pub struct TokenServer {
    /// Where it answers `GET /token`.
    pub addr: SocketAddr,
    /// The certificate whose key signs tokens (PEM), the registry's `rootcertbundle`.
    pub cert_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Starts one that grants `user` with `password` whatever it asks for.
    pub async fn start(user: &str, password: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "baton test token signer");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let signer = Arc::new(Signer {
            key: signing,
            cert_der_b64: STANDARD.encode(cert.der()),
            user: user.into(),
            password: password.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/token", axum::routing::get(token)).with_state(signer);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, cert_pem: cert.pem(), task }
    }
}

async fn token(
    axum::extract::State(signer): axum::extract::State<Arc<Signer>>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if given.as_deref() != Some(&format!("{}:{}", signer.user, signer.password)) {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let access: Vec<serde_json::Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [signer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": signer.user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = signer.key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap();
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
