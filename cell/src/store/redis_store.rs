//! The Redis backend: one hash per kind, `<namespace>:<kind>`, field = key, value = JSON.
//! The connection manager reconnects by itself after a Redis restart.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Kind, Store, StoreError};

/// Connection attempts (with back-off from 100 ms) before a connect or reconnect fails.
const CONNECT_RETRIES: usize = 3;
/// Longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A cell's records in a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    namespace: String,
    url: String,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`) and keeps the cell's keys under
    /// `namespace` (for example `baton:cell:<cell id>`).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let err = |source| StoreError::Redis { url: shown.clone(), source };
        let client = redis::Client::open(url).map_err(err)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = ConnectionManager::new_with_config(client, config).await.map_err(err)?;
        Ok(Self { connection, namespace: namespace.to_string(), url: shown })
    }

    fn key(&self, kind: Kind) -> String {
        format!("{}:{}", self.namespace, kind.name())
    }

    fn err(&self, source: redis::RedisError) -> StoreError {
        StoreError::Redis { url: self.url.clone(), source }
    }

    /// Deletes every key of this namespace (tests and decommissioning).
    pub async fn clear(&self) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        for kind in Kind::ALL {
            redis::cmd("DEL").arg(self.key(kind)).query_async::<()>(&mut con).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

/// `url` without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn put(&self, kind: Kind, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        redis::cmd("HSET")
            .arg(self.key(kind))
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| self.err(e))
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let mut con = self.connection.clone();
        let removed: u64 =
            redis::cmd("HDEL").arg(self.key(kind)).arg(key).query_async(&mut con).await.map_err(|e| self.err(e))?;
        Ok(removed > 0)
    }

    async fn list(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut con = self.connection.clone();
        let mut entries: Vec<(String, Vec<u8>)> =
            redis::cmd("HGETALL").arg(self.key(kind)).query_async(&mut con).await.map_err(|e| self.err(e))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords() {
        assert_eq!(redact("redis://:secret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
