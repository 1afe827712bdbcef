//! A worker's image cache against a real registry: concurrent cold starts of one image
//! pull each layer once, images share layers, a hostile layer leaves nothing behind, and a
//! cached image needs no registry.

use std::sync::Arc;

use baton_image::cache::{ImageCache, PullError};
use baton_image::unpack::UnpackError;
use baton_image::{Credentials, ResolveError, Resolver, ResolverSettings};
use baton_testkit::Registry;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// A gzip layer of `(path, contents)` files, names written raw (a hostile layer's too).
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    baton_testkit::raw_layer(files, &[])
}

async fn push(registry: &Registry, reference: &str, layers: Vec<Vec<u8>>) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.addr.to_string()]),
        ..ClientConfig::default()
    });
    let parsed: Reference = reference.parse().unwrap();
    let config =
        serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    let layers: Vec<ImageLayer> = layers.into_iter().map(|l| ImageLayer::oci_v1_gzip(l, None)).collect();
    let config = Config::oci_v1(serde_json::to_vec(&config).unwrap(), None);
    client.push(&parsed, &layers, config, &RegistryAuth::Anonymous, None).await.unwrap();
    Resolver::default().resolve(reference, &Credentials::Anonymous).await.unwrap().digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_image_is_pulled_once_and_a_cached_one_needs_no_registry() {
    let registry = Registry::start().await;
    let base = layer(&[("bin/app", b"app v1"), ("etc/old", b"old")]);
    let top = layer(&[("etc/.wh.old", b""), ("etc/new", b"new")]);
    let app = registry.image("acme/app:1.0");
    let digest = push(&registry, &app, vec![base.clone(), top]).await;

    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ImageCache::open(dir.path(), ResolverSettings::default(), 1 << 30).unwrap());
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (cache, app, digest) = (cache.clone(), app.clone(), digest.clone());
        starts.spawn(async move {
            cache
                .rootfs(&app, &digest, &Credentials::Anonymous)
                .await
                .map(|l| l.path.clone())
                .map_err(|e| e.to_string())
        });
    }
    let roots: Vec<_> = starts.join_all().await.into_iter().map(Result::unwrap).collect();
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    assert_eq!(cache.blobs_pulled(), 2, "eight cold starts, each layer pulled once");
    let root = &roots[0];
    assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), b"app v1");
    assert_eq!(std::fs::read(root.join("etc/new")).unwrap(), b"new");
    assert!(!root.join("etc/old").exists(), "the upper layer's whiteout applied");

    // Another image with the same base layer pulls only its own.
    let v2 = registry.image("acme/app:2.0");
    let digest2 = push(&registry, &v2, vec![base, layer(&[("bin/app", b"app v2")])]).await;
    let root2 = cache.rootfs(&v2, &digest2, &Credentials::Anonymous).await.unwrap().path.clone();
    assert_eq!(std::fs::read(root2.join("bin/app")).unwrap(), b"app v2");
    assert_eq!(cache.blobs_pulled(), 3);

    // A hostile layer: refused, and neither a rootfs nor a partial folder remains.
    let evil = registry.image("acme/evil:1.0");
    let evil_digest = push(&registry, &evil, vec![layer(&[("../../evil", b"pwned")])]).await;
    let err = cache.rootfs(&evil, &evil_digest, &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(err, PullError::Unpack(UnpackError::Escapes(_))), "{err}");
    assert!(!cache.rootfs_path(&evil_digest).exists());
    let images: Vec<String> = std::fs::read_dir(dir.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(images.len(), 4, "two images (each a rootfs and its record), nothing partial: {images:?}");
    assert!(!dir.path().parent().unwrap().join("evil").exists());

    // The registry goes away: cached images still start, others say why not.
    let unpulled = registry.image("acme/app:3.0");
    let digest3 = push(&registry, &unpulled, vec![layer(&[("bin/app", b"app v3")])]).await;
    drop(registry);
    let again = cache.rootfs(&app, &digest, &Credentials::Anonymous).await.unwrap().path.clone();
    assert_eq!(&again, root);
    let err = cache.rootfs(&unpulled, &digest3, &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(err, PullError::Registry(ResolveError::Unreachable { .. })), "{err}");

    // A new cache over the same folder keeps what was pulled.
    let reopened = ImageCache::open(dir.path(), ResolverSettings::default(), 1 << 30).unwrap();
    assert!(reopened.rootfs(&app, &digest, &Credentials::Anonymous).await.is_ok());
}

/// Past its size, the cache drops the least recently used image no sandbox uses, and the
/// layers only it held; an image in use stays whatever the size.
#[tokio::test]
async fn past_its_size_the_cache_evicts_unused_images_least_recently_used_first() {
    let registry = Registry::start().await;
    let shared = layer(&[("lib/shared", &[1u8; 20_000])]);
    let mut images = Vec::new();
    for name in ["a", "b", "c"] {
        let own = layer(&[("bin/app", name.repeat(20_000).as_bytes())]);
        let reference = registry.image(&format!("acme/{name}:1.0"));
        let digest = push(&registry, &reference, vec![shared.clone(), own]).await;
        images.push((reference, digest));
    }
    let dir = tempfile::tempdir().unwrap();
    // Room for about two images (each ~40 kB unpacked plus its small compressed layers).
    let cache = ImageCache::open(dir.path(), ResolverSettings::default(), 100_000).unwrap();
    let pull = |i: usize| cache.rootfs(&images[i].0, &images[i].1, &Credentials::Anonymous);
    let a = pull(0).await.unwrap();
    drop(pull(1).await.unwrap());
    // a is in use, b is not: c's arrival evicts b, not a.
    let c = pull(2).await.unwrap();
    assert!(cache.rootfs_path(&images[0].1).is_dir(), "an image in use stays");
    assert!(!cache.rootfs_path(&images[1].1).exists(), "the unused one goes");
    assert!(c.path.is_dir());
    let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
    assert_eq!(blobs, 3, "b's own layer went; the shared one stayed");
    // Used again, b is pulled again (its own layer only).
    let pulled = cache.blobs_pulled();
    drop(a);
    drop(c);
    let b = pull(1).await.unwrap();
    assert_eq!(cache.blobs_pulled(), pulled + 1);
    assert_eq!(std::fs::read(b.path.join("lib/shared")).unwrap(), vec![1u8; 20_000]);
}

/// A tmpfs of `bytes` at a fresh folder, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount (tests run as root)");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Incompressible bytes, so a gzip layer is as large as its content.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_pull_cleanly_and_unused_images_make_room() {
    let registry = Registry::start().await;
    let small = registry.image("acme/small:1");
    let small_digest = push(&registry, &small, vec![layer(&[("bin/app", &noise(600 << 10, 1))])]).await;
    let large = registry.image("acme/large:1");
    let large_digest = push(&registry, &large, vec![layer(&[("bin/app", &noise(3 << 20, 2))])]).await;
    let other = registry.image("acme/other:1");
    let other_digest = push(&registry, &other, vec![layer(&[("bin/app", &noise(600 << 10, 3))])]).await;

    // 2 MiB of disk, and a cache bound far above it: only the disk stops it.
    let disk = SmallDisk::new(2 << 20);
    let cache = ImageCache::open(disk.dir.path(), ResolverSettings::default(), 1 << 40).unwrap();
    let entries = || -> Vec<String> {
        ["blobs", "images"]
            .iter()
            .flat_map(|d| std::fs::read_dir(disk.dir.path().join(d)).unwrap().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let kept = cache.rootfs(&small, &small_digest, &Credentials::Anonymous).await.unwrap();

    // Too large for the disk even when empty: a clear error, nothing partial left, and what
    // was there is still there and usable.
    let before = entries();
    let err = cache.rootfs(&large, &large_digest, &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(err, PullError::Io(_) | PullError::Unpack(UnpackError::Io(_))), "{err}");
    assert!(err.to_string().to_lowercase().contains("no space"), "{err}");
    assert_eq!(entries(), before, "nothing partial left");
    assert_eq!(std::fs::read(kept.path.join("bin/app")).unwrap().len(), 600 << 10);

    // An image that fits once an unused one goes: the disk being full evicts it.
    drop(kept);
    let filler = cache.rootfs(&other, &other_digest, &Credentials::Anonymous).await;
    assert!(filler.is_ok(), "{:?}", filler.err());
    let third = registry.image("acme/third:1");
    let third_digest = push(&registry, &third, vec![layer(&[("bin/app", &noise(700 << 10, 4))])]).await;
    drop(filler);
    let made_room = cache.rootfs(&third, &third_digest, &Credentials::Anonymous).await;
    assert!(made_room.is_ok(), "{:?}", made_room.err());
}

/// A TCP proxy in front of a registry that cuts off the answers to the first `cuts` blob
/// downloads of `blob` after 64 KiB, as a network that fails half way would.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    blob_requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(upstream: std::net::SocketAddr, blob: String, cuts: usize) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blob_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = blob_requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (seen, blob) = (seen.clone(), blob.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    // Bytes the client may still get before the cut, once a blob is asked for.
                    let budget = Arc::new(std::sync::Mutex::new(None::<usize>));
                    let up_budget = budget.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 << 10];
                        while let Ok(n) = client_read.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if text.starts_with("GET ") && text.contains(&format!("/blobs/{blob}")) {
                                let nth = seen.fetch_add(1, Ordering::SeqCst);
                                if nth < cuts {
                                    *up_budget.lock().unwrap() = Some(64 << 10);
                                }
                            }
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16 << 10];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let allowed = match *budget.lock().unwrap() {
                            Some(left) => n.min(left),
                            None => n,
                        };
                        if client_write.write_all(&buf[..allowed]).await.is_err() {
                            break;
                        }
                        let mut b = budget.lock().unwrap();
                        if let Some(left) = b.as_mut() {
                            *left -= allowed;
                            if *left == 0 {
                                break;
                            }
                        }
                    }
                    // Cut: both directions end here.
                    up.abort();
                });
            }
        });
        Self { addr, blob_requests, task }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_off_half_way_is_tried_again_and_never_leaves_half_an_image() {
    use std::sync::atomic::Ordering;
    let registry = Registry::start().await;
    let data = noise(1 << 20, 5);
    let blob = layer(&[("bin/app", &data)]);
    let blob_digest = format!("sha256:{}", sha256_hex(&blob));
    push(&registry, &registry.image("acme/app:1"), vec![blob.clone()]).await;

    // Cut once: the second try gets it whole.
    let proxy = CuttingProxy::start(registry.addr, blob_digest.clone(), 1).await;
    let through = format!("{}/acme/app:1", proxy.addr);
    let digest = Resolver::default().resolve(&through, &Credentials::Anonymous).await.unwrap().digest;
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), ResolverSettings::default(), 1 << 30).unwrap();
    let lease = cache.rootfs(&through, &digest, &Credentials::Anonymous).await.unwrap();
    assert_eq!(proxy.blob_requests.load(Ordering::SeqCst), 2, "cut off once, asked again");
    assert_eq!(std::fs::read(lease.path.join("bin/app")).unwrap(), data);

    // Cut every time: the pull fails after its tries, and nothing partial is left.
    let proxy = CuttingProxy::start(registry.addr, blob_digest, usize::MAX).await;
    let through = format!("{}/acme/app:1", proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(dir.path(), ResolverSettings::default(), 1 << 30).unwrap();
    let err = cache.rootfs(&through, &digest, &Credentials::Anonymous).await.unwrap_err();
    assert!(proxy.blob_requests.load(Ordering::SeqCst) >= 2, "tried more than once: {err}");
    let left: Vec<_> = ["blobs", "images"]
        .iter()
        .flat_map(|d| std::fs::read_dir(dir.path().join(d)).unwrap().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({err})");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
