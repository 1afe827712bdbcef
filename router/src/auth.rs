//! `Authorization: Bearer <key>` → tenant, from the shard map in memory (keys travel in
//! it as SHA-256 hashes), so a revoked key stops working on a router as soon as the
//! revocation's delta arrives. No I/O.

use baton_shardmap::{MapView, key_hash};
use http::HeaderMap;

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("an API key is required: send Authorization: Bearer <key>")]
    Missing,
    /// The key is not known (never issued, or revoked).
    #[error("the API key is not valid")]
    Invalid,
}

/// The tenant the request's API key belongs to.
pub fn tenant(headers: &HeaderMap, map: &MapView) -> Result<String, AuthError> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid)?;
    let (scheme, key) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    map.read().tenant_of_key(&key_hash(key.trim())).map(str::to_string).ok_or(AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use baton_shardmap::{Change, Delta, MapSnapshot, ShardMap};
    use http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn keys_map_to_their_tenant_and_everything_else_is_refused() {
        let mut map = ShardMap::from(MapSnapshot {
            epoch: baton_model::Epoch(1),
            cells: vec![],
            assignments: vec![],
            api_keys: vec![(key_hash("bk_a"), "acme".into())],
        });
        map.apply(Delta {
            epoch: baton_model::Epoch(2),
            changes: vec![Change::PutApiKey { key_hash: key_hash("bk_b"), tenant: "b".into() }],
            applied_unix_micros: 0,
        })
        .unwrap();
        let view = MapView::fixed(map);
        assert_eq!(tenant(&headers("Bearer bk_a"), &view), Ok("acme".into()));
        assert_eq!(tenant(&headers("bearer  bk_b "), &view), Ok("b".into()));
        assert_eq!(tenant(&headers("Bearer bk_c"), &view), Err(AuthError::Invalid));
        assert_eq!(tenant(&headers("Basic bk_a"), &view), Err(AuthError::Missing));
        assert_eq!(tenant(&headers("Bearer "), &view), Err(AuthError::Missing));
        assert_eq!(tenant(&HeaderMap::new(), &view), Err(AuthError::Missing));
    }
}
