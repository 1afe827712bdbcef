//! The provider's two ways into a federation: the shard manager's gRPC API as an operator
//! (tenants, keys, cells, the shard map) and a router's tenant API with an API key
//! (functions). Every failure is an [`ApiError`], turned into a Terraform diagnostic once.

use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_service::tls::Tls;
use reqwest::{Method, StatusCode};
use tonic::transport::Channel;

/// How long a refused API key is tried again: one just created reaches every router
/// within milliseconds, a wrong one never.
const NEW_KEY_GRACE: Duration = Duration::from_secs(5);

/// Why a call to the federation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The provider block (or its environment variables) does not say where to go.
    #[error("{0}")]
    NotConfigured(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The federation refused the request; its words.
    #[error("{0}")]
    Refused(String),
    /// Nothing answered.
    #[error("{0}")]
    Unreachable(String),
}

/// A configured provider's clients.
pub struct Api {
    /// Shard-manager replicas' gRPC URLs, tried in order.
    pub manager_urls: Vec<String>,
    /// The operator's credentials for them.
    pub tls: Tls,
    /// The router's base URL.
    pub router_url: Option<String>,
    /// The API key functions are managed with unless a resource names its own.
    pub api_key: Option<String>,
    http: reqwest::Client,
    /// The replica first reached, kept for the provider's run (one channel, as for every
    /// peer of a baton process).
    manager: tokio::sync::OnceCell<ShardManagerClient<Channel>>,
}

/// A router's answer: its status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, parsed (`null` when it was not JSON).
    pub body: serde_json::Value,
}

impl Api {
    /// Clients for these endpoints; connects lazily.
    pub fn new(manager_urls: Vec<String>, tls: Tls, router_url: Option<String>, api_key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client without TLS settings always builds");
        Self { manager_urls, tls, router_url, api_key, http, manager: tokio::sync::OnceCell::new() }
    }

    /// A client of the first replica that answers (any replica takes writes and passes them
    /// to the leader), connected once.
    pub async fn manager(&self) -> Result<ShardManagerClient<Channel>, ApiError> {
        self.manager.get_or_try_init(|| self.connect()).await.cloned()
    }

    async fn connect(&self) -> Result<ShardManagerClient<Channel>, ApiError> {
        if self.manager_urls.is_empty() {
            return Err(ApiError::NotConfigured(
                "no shard manager: set `shard_manager` in the provider block or BATON_SHARD_MANAGER".into(),
            ));
        }
        let mut failures = Vec::new();
        for url in &self.manager_urls {
            match self.tls.connect_url(url).await {
                Ok(channel) => {
                    return Ok(
                        ShardManagerClient::new(channel).max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
                    );
                }
                Err(e) => failures.push(e),
            }
        }
        Err(ApiError::Unreachable(format!("no shard-manager replica answered: {}", failures.join("; "))))
    }

    /// Sends `method path` with `body` to the router as the holder of `key` (the provider's
    /// own when `None`); any status comes back as an [`Answer`], a failure to connect as
    /// an error.
    pub async fn router(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ApiError> {
        let Some(base) = &self.router_url else {
            return Err(ApiError::NotConfigured("no router: set `url` in the provider block or BATON_URL".into()));
        };
        let Some(key) = key.or(self.api_key.as_deref()) else {
            return Err(ApiError::NotConfigured(
                "no API key: set `api_key` on the function, or in the provider block, or BATON_API_KEY".into(),
            ));
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        // A key created a moment ago (by this same apply) reaches the routers with the next
        // shard-map delta, milliseconds later: a 401 is asked again for a little while.
        let deadline = tokio::time::Instant::now() + NEW_KEY_GRACE;
        loop {
            let mut request = self.http.request(method.clone(), &url).bearer_auth(key);
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = request.send().await.map_err(|e| ApiError::Unreachable(format!("{url}: {e}")))?;
            let status = answer.status();
            let text =
                answer.text().await.map_err(|e| ApiError::Unreachable(format!("{url}: reading the answer: {e}")))?;
            if status == StatusCode::UNAUTHORIZED && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            return Ok(Answer { status, body });
        }
    }
}

impl Answer {
    /// The API's error message (`{"error": {"message": …}}`), or the status.
    pub fn message(&self) -> String {
        match self.body["error"]["message"].as_str() {
            Some(message) => format!("{}: {message}", self.status),
            None => self.status.to_string(),
        }
    }

    /// An error for an answer that is not a success.
    pub fn refused(&self, what: &str) -> ApiError {
        let message = format!("{what}: {}", self.message());
        if self.status == StatusCode::NOT_FOUND { ApiError::NotFound(message) } else { ApiError::Refused(message) }
    }
}

/// A shard-manager refusal in words.
pub fn refused(what: &str, status: tonic::Status) -> ApiError {
    let message = format!("{what}: {}", status.message());
    match status.code() {
        tonic::Code::NotFound => ApiError::NotFound(message),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ApiError::Unreachable(message),
        _ => ApiError::Refused(message),
    }
}
