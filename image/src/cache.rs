//! A worker's image cache: layer blobs by digest, pulled once and verified against their
//! digests, and each image's rootfs unpacked once from them. Concurrent cold starts of one
//! image wait for one pull. Nothing partial is ever seen under its final name: blobs are
//! downloaded beside it and renamed once verified, a rootfs is renamed once every layer
//! applied ([`crate::unpack::unpack_image`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oci_client::Reference;
use oci_client::manifest::OciDescriptor;

use crate::resolve::{Credentials, ResolveError, ResolverSettings, classify, client_for};
use crate::unpack::{Compression, UnpackError, unpack_image};

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry refused or failed (as at registration).
    #[error(transparent)]
    Registry(#[from] ResolveError),
    /// The registry answered another manifest than the digest asked for.
    #[error("the registry answered manifest {got} for {asked}")]
    WrongManifest {
        /// The digest asked for.
        asked: String,
        /// What came back.
        got: String,
    },
    /// A layer of a kind baton does not unpack.
    #[error("layer {digest} has media type {media_type}, not a tar layer (plain, gzip or zstd)")]
    UnsupportedLayer {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A layer was refused or could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The cache's disk.
    #[error("the image cache: {0}")]
    Io(#[from] std::io::Error),
}

/// Images on one worker.
pub struct ImageCache {
    root: PathBuf,
    settings: ResolverSettings,
    /// One lock per image digest: the first cold start pulls, the others wait for it.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    blobs_pulled: AtomicU64,
}

impl ImageCache {
    /// The cache under `root` (created, mode 0700); downloads left by a process that died
    /// are removed.
    pub fn open(root: &Path, settings: ResolverSettings) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        for folder in [root.join("blobs"), root.join("images")] {
            std::fs::create_dir_all(&folder)?;
            for entry in std::fs::read_dir(&folder)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self { root: root.to_path_buf(), settings, pulling: Mutex::default(), blobs_pulled: AtomicU64::new(0) })
    }

    /// Layer blobs downloaded so far by this cache.
    pub fn blobs_pulled(&self) -> u64 {
        self.blobs_pulled.load(Ordering::Relaxed)
    }

    /// Where image `digest`'s rootfs is (or will be).
    pub fn rootfs_path(&self, digest: &str) -> PathBuf {
        self.root.join("images").join(file_name(digest))
    }

    /// The rootfs of image `digest` (the manifest digest its reference resolved to), pulled
    /// from `reference`'s repository with `credentials` and unpacked, unless it is here.
    pub async fn rootfs(&self, reference: &str, digest: &str, credentials: &Credentials) -> Result<PathBuf, PullError> {
        let path = self.rootfs_path(digest);
        if path.is_dir() {
            return Ok(path);
        }
        let lock = self.pulling.lock().expect("not poisoned").entry(digest.to_string()).or_default().clone();
        let _pulling = lock.lock().await;
        if path.is_dir() {
            return Ok(path);
        }
        let parsed: Reference = reference.parse().map_err(|_| ResolveError::BadReference(reference.to_string()))?;
        let by_digest = parsed.clone_with_digest(digest.to_string());
        let registry = parsed.resolve_registry().to_string();
        let client = client_for(&registry, &self.settings);
        let auth = credentials.auth();
        let (manifest, got) =
            client.pull_image_manifest(&by_digest, &auth).await.map_err(|e| classify(e, &registry, &by_digest))?;
        if got != digest {
            return Err(PullError::WrongManifest { asked: digest.to_string(), got });
        }
        let mut layers = Vec::new();
        for layer in &manifest.layers {
            let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
                PullError::UnsupportedLayer { digest: layer.digest.clone(), media_type: layer.media_type.clone() }
            })?;
            let blob = self.blob(&client, &by_digest, layer, &registry).await?;
            layers.push((blob, compression));
        }
        let dest = path.clone();
        tokio::task::spawn_blocking(move || {
            let opened = layers
                .into_iter()
                .map(|(blob, compression)| Ok((std::fs::File::open(blob)?, compression)))
                .collect::<std::io::Result<Vec<_>>>()?;
            unpack_image(opened, &dest).map(|_| ()).map_err(PullError::from)
        })
        .await
        .map_err(|e| PullError::Io(std::io::Error::other(e)))??;
        Ok(path)
    }

    /// Layer `layer`'s blob on disk: downloaded (its digest checked by the client) beside
    /// its name and renamed into place, unless it is here.
    async fn blob(
        &self,
        client: &oci_client::Client,
        image: &Reference,
        layer: &OciDescriptor,
        registry: &str,
    ) -> Result<PathBuf, PullError> {
        let path = self.root.join("blobs").join(file_name(&layer.digest));
        if path.is_file() {
            return Ok(path);
        }
        let partial = self.root.join("blobs").join(format!(".{}.partial", file_name(&layer.digest)));
        let file = tokio::fs::File::create(&partial).await?;
        let pulled = client.pull_blob(image, layer, file).await;
        if let Err(e) = pulled {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(classify(e, registry, image).into());
        }
        tokio::fs::rename(&partial, &path).await?;
        self.blobs_pulled.fetch_add(1, Ordering::Relaxed);
        Ok(path)
    }
}

/// A digest (`sha256:abc…`) as a file name (`sha256-abc…`); anything but `[a-z0-9]` in the
/// algorithm or hex becomes `_`, so no digest names a path elsewhere.
fn file_name(digest: &str) -> String {
    digest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else if c == ':' {
                '-'
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_digest_names_one_file_and_no_path() {
        assert_eq!(super::file_name("sha256:abc123"), "sha256-abc123");
        assert_eq!(super::file_name("sha256:../../etc"), "sha256-______etc");
        assert!(!super::file_name("a/b:c").contains('/'));
    }
}
