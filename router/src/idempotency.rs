//! `Idempotency-Key` on the tenant API's writes. A POST, PUT or DELETE sent again with the
//! same key, to the same path with the same body, is applied once and answered as the
//! first time (within the shard manager's memory of recent writes, `REQUESTS_KEPT`); a
//! different body under the same key is a different request. The key becomes the shard
//! manager's request ID, scoped to the tenant and hashed with the request, so one tenant's
//! keys can never meet another's.

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

/// The header.
pub const HEADER: &str = "idempotency-key";

/// Longest key taken.
pub const MAX_KEY_LEN: usize = 64;

/// A tenant's idempotency key, checked.
pub struct Key(String);

/// A malformed key.
#[derive(Debug, thiserror::Error)]
#[error("Idempotency-Key: must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces")]
pub struct BadKey;

/// The request's key, if it sent one.
pub fn key(headers: &HeaderMap) -> Result<Option<Key>, BadKey> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(Key(key.to_string())))
        }
        _ => Err(BadKey),
    }
}

impl Key {
    /// The shard manager's request ID for this key on `tenant`'s `method` of `path` with
    /// `body`.
    pub fn request_id(&self, tenant: &str, method: &Method, path: &str, body: &[u8]) -> String {
        let mut hash = Sha256::new();
        for part in [tenant.as_bytes(), self.0.as_bytes(), method.as_str().as_bytes(), path.as_bytes()] {
            // Lengths first: no two different requests hash the same bytes.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(body);
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("idem-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value.parse().unwrap());
        headers
    }

    #[test]
    fn ids_depend_on_tenant_key_method_path_and_body() {
        let key = |k: &str| key(&headers(k)).ok().flatten().unwrap();
        let id = key("k1").request_id("acme", &Method::POST, "/v1/functions", b"{}");
        assert!(id.starts_with("idem-") && id.len() == 37, "{id}");
        assert_eq!(id, key("k1").request_id("acme", &Method::POST, "/v1/functions", b"{}"), "a retry");
        for other in [
            key("k2").request_id("acme", &Method::POST, "/v1/functions", b"{}"),
            key("k1").request_id("other", &Method::POST, "/v1/functions", b"{}"),
            key("k1").request_id("acme", &Method::PUT, "/v1/functions", b"{}"),
            key("k1").request_id("acme", &Method::POST, "/v1/functions/f", b"{}"),
            key("k1").request_id("acme", &Method::POST, "/v1/functions", b"[]"),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(key(&HeaderMap::new()).unwrap().is_none());
        for bad in ["has space", &"k".repeat(MAX_KEY_LEN + 1)] {
            // (The router answers it 400 `invalid_idempotency_key`: `error.rs`, and
            // `tests/errors.rs` end to end.)
            assert!(key(&headers(bad)).is_err(), "{bad:?}");
        }
    }
}
