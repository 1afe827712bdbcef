//! A worker's image cache: layer blobs by digest, pulled once and verified against their
//! digests, and each image's rootfs unpacked once from them. Concurrent cold starts of one
//! image wait for one pull. Nothing partial is ever seen under its final name: blobs are
//! downloaded beside it and renamed once verified, a rootfs is renamed once every layer
//! applied ([`crate::unpack::unpack_image`]). The cache keeps to a size: past it, the
//! images no sandbox uses go, least recently used first, and the layers only they held.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oci_client::Reference;
use oci_client::manifest::OciDescriptor;

use crate::bundle::ImageConfig;
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
    /// The image's config blob is not an image config.
    #[error("the image config: {0}")]
    BadConfig(String),
    /// The cache's disk.
    #[error("the image cache: {0}")]
    Io(#[from] std::io::Error),
}

/// Tries per layer download before a pull fails.
const BLOB_ATTEMPTS: u64 = 3;

/// Images on one worker.
pub struct ImageCache {
    root: PathBuf,
    settings: ResolverSettings,
    max_bytes: u64,
    /// One lock per image digest: the first cold start pulls, the others wait for it.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    images: Arc<Mutex<Images>>,
    blobs_pulled: AtomicU64,
}

/// What the cache holds, by image digest.
#[derive(Default)]
struct Images {
    entries: HashMap<String, Entry>,
    /// A clock for recency: bumped at every use.
    tick: u64,
}

/// One image: its layers, its rootfs's size, when it was last used, and by how many.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    layers: Vec<String>,
    rootfs_bytes: u64,
    /// The image config blob (JSON), for how to run it.
    #[serde(default)]
    config: String,
    #[serde(skip)]
    last_used: u64,
    #[serde(skip)]
    in_use: usize,
}

/// An image's rootfs, kept while this lives: the cache evicts no image in use.
pub struct Lease {
    /// The rootfs.
    pub path: PathBuf,
    /// How the image says to run it.
    pub config: ImageConfig,
    /// Whether it was in the cache already (no pull).
    pub cached: bool,
    digest: String,
    images: Arc<Mutex<Images>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("path", &self.path).finish()
    }
}

impl Lease {
    /// The image's manifest digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(entry) = self.images.lock().expect("not poisoned").entries.get_mut(&self.digest) {
            entry.in_use = entry.in_use.saturating_sub(1);
        }
    }
}

impl ImageCache {
    /// The cache under `root` (created, mode 0700), kept to `max_bytes` (layers and
    /// unpacked images together); images already there are kept, downloads left by a
    /// process that died removed.
    pub fn open(root: &Path, settings: ResolverSettings, max_bytes: u64) -> std::io::Result<Self> {
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
        let mut images = Images::default();
        for entry in std::fs::read_dir(root.join("images"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(recorded) = serde_json::from_str::<Entry>(&text)
                && path.with_extension("").is_dir()
            {
                let name = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                images.entries.insert(digest_of(&name), recorded);
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            settings,
            max_bytes,
            pulling: Mutex::default(),
            images: Arc::new(Mutex::new(images)),
            blobs_pulled: AtomicU64::new(0),
        })
    }

    /// Takes a lease on image `digest`, if the cache has it (a sandbox re-adopted after a
    /// worker restart keeps its image this way).
    pub fn cached(&self, digest: &str) -> Option<Lease> {
        let mut images = self.images.lock().expect("not poisoned");
        images.tick += 1;
        let tick = images.tick;
        let entry = images.entries.get_mut(digest)?;
        entry.in_use += 1;
        entry.last_used = tick;
        let config = ImageConfig::parse(entry.config.as_bytes()).unwrap_or_default();
        Some(Lease {
            path: self.rootfs_path(digest),
            config,
            cached: true,
            digest: digest.to_string(),
            images: self.images.clone(),
        })
    }

    /// Whether image `digest` is in the cache.
    pub fn contains(&self, digest: &str) -> bool {
        self.images.lock().expect("not poisoned").entries.contains_key(digest)
    }

    /// Removes image `digest` now if no sandbox uses it (its function was deleted), with
    /// the layers no other image needs. Returns whether it went.
    pub fn remove_unused(&self, digest: &str) -> bool {
        let in_use = self.images.lock().expect("not poisoned").entries.get(digest).map(|e| e.in_use);
        if in_use != Some(0) {
            return false;
        }
        self.drop_image(digest);
        true
    }

    /// Bytes on disk: every layer blob and every rootfs.
    fn used_bytes(&self) -> u64 {
        let blobs = std::fs::read_dir(self.root.join("blobs"))
            .map(|dir| dir.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum::<u64>())
            .unwrap_or(0);
        blobs + self.images.lock().expect("not poisoned").entries.values().map(|e| e.rootfs_bytes).sum::<u64>()
    }

    /// Removes images no lease holds, least recently used first, and the layers no
    /// remaining image needs, until the cache is within its size (or only images in use
    /// are left).
    fn evict(&self) {
        while self.used_bytes() > self.max_bytes {
            let victim = {
                let images = self.images.lock().expect("not poisoned");
                images
                    .entries
                    .iter()
                    .filter(|(_, e)| e.in_use == 0)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(d, _)| d.clone())
            };
            let Some(digest) = victim else { return };
            self.drop_image(&digest);
        }
    }

    /// Removes image `digest` and the layers no remaining image needs.
    fn drop_image(&self, digest: &str) {
        let path = self.rootfs_path(digest);
        let _ = std::fs::remove_file(path.with_extension("json"));
        let _ = std::fs::remove_dir_all(&path);
        let mut images = self.images.lock().expect("not poisoned");
        images.entries.remove(digest);
        let needed: std::collections::HashSet<String> =
            images.entries.values().flat_map(|e| e.layers.iter().map(|l| file_name(l))).collect();
        drop(images);
        for blob in std::fs::read_dir(self.root.join("blobs")).into_iter().flatten().flatten() {
            let name = blob.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !needed.contains(&name) {
                let _ = std::fs::remove_file(blob.path());
            }
        }
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
    /// from `reference`'s repository with `credentials` and unpacked, unless it is here;
    /// kept while the lease lives.
    pub async fn rootfs(&self, reference: &str, digest: &str, credentials: &Credentials) -> Result<Lease, PullError> {
        match self.rootfs_once(reference, digest, credentials).await {
            // The disk is full: the images no sandbox uses make room, and it is tried again.
            Err(e) if is_disk_full(&e) && self.evict_unused() > 0 => {
                self.rootfs_once(reference, digest, credentials).await
            }
            other => other,
        }
    }

    /// Removes every image no lease holds (and the layers only they needed); how many went.
    fn evict_unused(&self) -> usize {
        let unused: Vec<String> = {
            let images = self.images.lock().expect("not poisoned");
            images.entries.iter().filter(|(_, e)| e.in_use == 0).map(|(d, _)| d.clone()).collect()
        };
        for digest in &unused {
            self.drop_image(digest);
        }
        unused.len()
    }

    async fn rootfs_once(&self, reference: &str, digest: &str, credentials: &Credentials) -> Result<Lease, PullError> {
        if let Some(lease) = self.cached(digest) {
            return Ok(lease);
        }
        let lock = self.pulling.lock().expect("not poisoned").entry(digest.to_string()).or_default().clone();
        let _pulling = lock.lock().await;
        if let Some(lease) = self.cached(digest) {
            return Ok(lease);
        }
        let path = self.rootfs_path(digest);
        let parsed: Reference = reference.parse().map_err(|_| ResolveError::BadReference(reference.to_string()))?;
        let by_digest = parsed.clone_with_digest(digest.to_string());
        let registry = parsed.resolve_registry().to_string();
        let client = client_for(&registry, &self.settings);
        let auth = credentials.auth();
        let (manifest, got, config) =
            client.pull_manifest_and_config(&by_digest, &auth).await.map_err(|e| classify(e, &registry, &by_digest))?;
        ImageConfig::parse(config.as_bytes()).map_err(|e| PullError::BadConfig(e.to_string()))?;
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
        let layer_digests: Vec<String> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        // A rootfs without its record (the process died between the two) is made again.
        let _ = std::fs::remove_dir_all(&path);
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
        let entry = Entry { layers: layer_digests, rootfs_bytes: tree_bytes(&path), config, last_used: 0, in_use: 0 };
        std::fs::write(path.with_extension("json"), serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
        self.images.lock().expect("not poisoned").entries.insert(digest.to_string(), entry);
        let mut lease = self.cached(digest).expect("just added");
        lease.cached = false;
        self.evict();
        Ok(lease)
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
        // A download cut off half way starts again from nothing, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let file = tokio::fs::File::create(&partial).await?;
            let pulled = client.pull_blob(image, layer, file).await;
            let Err(e) = pulled else { break };
            let _ = tokio::fs::remove_file(&partial).await;
            // Writing it failed (a full disk): the cache's, not the registry's.
            if let oci_client::errors::OciDistributionError::IoError(io) = e {
                return Err(PullError::Io(io));
            }
            let error = classify(e, registry, image);
            let transient = matches!(error, ResolveError::Unreachable { .. } | ResolveError::Registry { .. });
            if !transient || attempt >= BLOB_ATTEMPTS {
                return Err(error.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
        tokio::fs::rename(&partial, &path).await?;
        self.blobs_pulled.fetch_add(1, Ordering::Relaxed);
        Ok(path)
    }
}

/// Whether `e` says the disk (or the quota) is full, downloading or unpacking.
fn is_disk_full(e: &PullError) -> bool {
    let io = match e {
        PullError::Io(io) | PullError::Unpack(UnpackError::Io(io)) => io,
        _ => return false,
    };
    matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || io.raw_os_error() == Some(28)
}

/// Bytes of the files under `path` (symlinks not followed).
fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| tree_bytes(&e.path())).sum()
}

/// The digest a [`file_name`] came from.
fn digest_of(name: &str) -> String {
    name.replacen('-', ":", 1)
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
