//! Sealing tenants' registry credentials with the operator's key, so the raft log, its
//! snapshots and every replica's disk hold none in plaintext. ChaCha20-Poly1305 (ring)
//! with a random nonce per seal; the tenant and registry are the associated data, so a
//! sealed value copied under another tenant or registry does not open. The key is 32
//! random bytes, hex, in the file `secrets.key_file` names; every replica must have the
//! same one (`baton certs` makes none: `openssl rand -hex 32 > key` does).

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a key could not be loaded or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file is unreadable or not 64 hex digits.
    #[error("secrets.key_file {path}: {why}")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A sealed value that does not open with this key (another key, or altered).
    #[error("sealed credentials do not open with this replica's key (another secrets.key_file?)")]
    Unsealable,
}

/// The operator's key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// The key in `path` (64 hex digits, surrounding whitespace ignored).
    pub fn load(path: &std::path::Path) -> Result<Self, SecretError> {
        let bad = |why: String| SecretError::BadKey { path: path.display().to_string(), why };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("must hold 64 hex digits (32 random bytes: openssl rand -hex 32)".into()));
        }
        let bytes: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex")).collect();
        Self::from_bytes(&bytes).map_err(bad)
    }

    /// A sealer over `key` (32 bytes).
    pub fn from_bytes(key: &[u8]) -> Result<Self, String> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "not a 32-byte key".to_string())?;
        Ok(Self { key: LessSafeKey::new(key), rng: SystemRandom::new() })
    }

    /// Seals `plain` for `tenant`'s `registry`: base64 of nonce, ciphertext and tag.
    pub fn seal(&self, tenant: &str, registry: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source works");
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(tenant, registry), &mut sealed)
            .expect("a buffer of any length seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`Sealer::seal`] made for the same tenant and registry.
    pub fn open(&self, tenant: &str, registry: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| SecretError::Unsealable)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Unsealable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Unsealable)?;
        let mut buffer = ciphertext.to_vec();
        let plain =
            self.key.open_in_place(nonce, aad(tenant, registry), &mut buffer).map_err(|_| SecretError::Unsealable)?;
        Ok(plain.to_vec())
    }
}

fn aad(tenant: &str, registry: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("baton registry credentials\0{tenant}\0{registry}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_for_their_tenant_and_registry_with_the_same_key() {
        let sealer = Sealer::from_bytes(&[7; 32]).unwrap();
        let sealed = sealer.seal("acme", "ghcr.io", b"bot:hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, sealer.seal("acme", "ghcr.io", b"bot:hunter2"), "a fresh nonce each time");
        assert_eq!(sealer.open("acme", "ghcr.io", &sealed).unwrap(), b"bot:hunter2");
        assert!(sealer.open("other", "ghcr.io", &sealed).is_err(), "another tenant's");
        assert!(sealer.open("acme", "docker.io", &sealed).is_err(), "another registry's");
        assert!(Sealer::from_bytes(&[8; 32]).unwrap().open("acme", "ghcr.io", &sealed).is_err(), "another key");
        let mut altered = base64::engine::general_purpose::STANDARD.decode(&sealed).unwrap();
        *altered.last_mut().unwrap() ^= 1;
        let altered = base64::engine::general_purpose::STANDARD.encode(altered);
        assert!(sealer.open("acme", "ghcr.io", &altered).is_err(), "altered");
        assert!(sealer.open("acme", "ghcr.io", "not base64!").is_err());
    }

    #[test]
    fn a_key_file_holds_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(Sealer::load(&path).is_ok());
        for bad in ["ab", &"zz".repeat(32), &"ab".repeat(33)] {
            std::fs::write(&path, bad).unwrap();
            assert!(Sealer::load(&path).unwrap_err().to_string().contains("64 hex digits"), "{bad}");
        }
        assert!(Sealer::load(&dir.path().join("missing")).is_err());
    }
}
