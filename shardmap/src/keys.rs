//! API keys are stored and distributed as hashes only. Keys are long random strings (not
//! passwords), so one SHA-256 is enough: nothing to brute-force, and a router checks a
//! key with one hash and one map lookup.

use sha2::{Digest, Sha256};

/// The stored form of an API key: SHA-256 of its bytes, lowercase hex.
pub fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_their_sha256() {
        // Values from `printf %s KEY | sha256sum`.
        assert_eq!(key_hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(key_hash("bk_test"), GOLDEN_BK_TEST);
    }

    const GOLDEN_BK_TEST: &str = "b9ea9a069e1c3d119069883debdf80af44b84dda0c2311afc2728aea4a9a3a88";
}
