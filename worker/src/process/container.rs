//! Sandboxes from container images (runtime `oci`). The image's rootfs comes from the
//! worker's cache ([`baton_image::cache`]: pulled once per digest, shared read-only by
//! every sandbox of it); each sandbox gets a bundle (`config.json` from
//! [`baton_image::bundle`]) in its own folder and is started by `runc run --detach`.
//! Everything else is the process runtime's: the port, the uid of its own, the packet
//! filter, the logs, readiness, exit reporting and re-adoption.
//!
//! runc is given the sandbox's cgroup as a path relative to its own cgroup, which is the
//! worker's, so the container lands in the very folder the process runtime would have made
//! (`<own cgroup>/<process.cgroup_parent>/<id>`): OOM counts, killing and removal work the
//! same. Once `runc run --detach` returns, the container's process is re-parented to the
//! worker (a child subreaper) and reaped like any sandbox.

use std::ffi::OsString;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_image::bundle::{Launch, runtime_spec};
use baton_image::cache::{ImageCache, Lease, PullError};
use baton_image::{ResolveError, ResolverSettings};
use baton_proto::SandboxId;

use super::container_net::{ContainerNet, Netns, iface_name};
use super::netfilter::{ContainerRules, NetFilter};
use super::reaper::{ChildExit, Reaper};
use crate::config::{ImagesChoice, ImagesSection};
use crate::error::RuntimeError;
use crate::metrics;
use crate::runtime::{ImageLaunch, Pulled};

/// Longest `runc run --detach` or `runc delete` may take before the worker gives up on it.
const RUNC_PATIENCE: Duration = Duration::from_secs(30);

/// What the worker needs to run images.
pub struct Containers {
    cache: Arc<ImageCache>,
    /// Images no function of the cell runs any more, removed once their last sandbox goes.
    unwanted: std::sync::Mutex<std::collections::HashSet<String>>,
    runc: PathBuf,
    /// runc's state folder (`--root`), the worker's alone.
    root: PathBuf,
    /// The containers' network namespaces: addresses and veths.
    net: ContainerNet,
    /// `process.host`: where the containers' ports are reached.
    host: Ipv4Addr,
    /// Each container's address and port, and its host port (held).
    attached: std::sync::Mutex<std::collections::HashMap<SandboxId, Attached>>,
    /// `images.run_as_image_user`.
    image_user: bool,
}

/// A container's place on the network.
struct Attached {
    inside: SocketAddrV4,
    host_port: u16,
    /// Holds the host port while the container lives.
    _reservation: Option<TcpListener>,
}

impl Containers {
    /// Sets up images as `config` says: `None` when they are off, or `auto` and this
    /// worker cannot run them (said once, with why). `isolated`: sandboxes get namespaces
    /// and an unprivileged user; no container runs without them.
    /// `host` is `process.host`, where the containers' ports are reached: IPv4 only.
    pub async fn start(
        config: &ImagesSection,
        state_dir: &Path,
        isolated: bool,
        host: IpAddr,
    ) -> Result<Option<Self>, RuntimeError> {
        if config.enabled == ImagesChoice::Off {
            return Ok(None);
        }
        let runc = PathBuf::from(&config.runc);
        let host4 = match host {
            IpAddr::V4(h) => Some(h),
            IpAddr::V6(_) => None,
        };
        let missing = if !nix::unistd::geteuid().is_root() {
            Some("the worker does not run as root".to_string())
        } else if !isolated {
            Some(
                "sandboxes would not get namespaces and a user of their own (process.namespaces, process.user)"
                    .to_string(),
            )
        } else if host4.is_none() {
            Some(format!("process.host {host} is IPv6, and containers' ports are mapped over IPv4 only"))
        } else if let Err(e) = forwarding() {
            Some(e)
        } else {
            // runc runs the containers; `ip` and `nsenter` wire their networks.
            let tools = [
                (runc.as_path(), "--version", "runc"),
                (Path::new("ip"), "-V", "iproute2"),
                (Path::new("nsenter"), "--version", "util-linux"),
            ];
            let mut missing = None;
            for (tool, version, package) in tools {
                let why = match run_tool(tool, &[OsString::from(version)], None).await {
                    Ok(ChildExit::Code(0)) => continue,
                    Ok(other) => format!("{} {version} ended with {other:?}", tool.display()),
                    Err(e) => format!("{} cannot be started ({e}); install Debian's {package} package", tool.display()),
                };
                missing = Some(why);
                break;
            }
            missing
        };
        if let Some(why) = missing {
            if config.enabled == ImagesChoice::On {
                return Err(RuntimeError::invalid("images.enabled", format!("is on, but {why}")));
            }
            tracing::warn!(
                "this worker runs no container images: {why}. Set images.enabled = \"off\" to silence this warning"
            );
            return Ok(None);
        }
        let cache_dir =
            if config.cache_dir.as_os_str().is_empty() { state_dir.join("images") } else { config.cache_dir.clone() };
        let settings = ResolverSettings {
            insecure_registries: config.insecure_registries.clone(),
            max_image_bytes: config.max_image_bytes,
            timeout: config.registry_timeout,
        };
        let cache = ImageCache::open(&cache_dir, settings, config.cache_max_bytes)
            .map_err(|e| RuntimeError::os(format!("opening the image cache {}", cache_dir.display()), e))?;
        if config.run_as_image_user {
            open_to_user_namespaces(&cache_dir)?;
        }
        let root = state_dir.join("runc");
        std::fs::create_dir_all(&root).map_err(|e| RuntimeError::os(format!("creating {}", root.display()), e))?;
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| RuntimeError::os(format!("restricting {}", root.display()), e))?;
        tracing::info!(cache = %cache_dir.display(), runc = %runc.display(), "container images enabled");
        let host = host4.expect("checked above");
        Ok(Some(Self {
            cache: Arc::new(cache),
            unwanted: Default::default(),
            runc,
            root,
            net: ContainerNet::new(config.subnet, host),
            host,
            attached: Default::default(),
            image_user: config.run_as_image_user,
        }))
    }

    /// The uid and gid `image`'s `User` names, when the operator lets containers run as
    /// their images' users (`images.run_as_image_user`) and it names one; names are looked
    /// up in the image's own `/etc/passwd` and `/etc/group`.
    pub fn image_user(&self, image: &Lease) -> Result<Option<(u32, u32)>, RuntimeError> {
        if !self.image_user || image.config.user.is_empty() {
            return Ok(None);
        }
        // Regular files only: a symlink in an image names a path of the image's, never
        // one of this host's.
        let read = |name: &str| {
            let path = image.path.join(name);
            std::fs::symlink_metadata(&path)
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|_| std::fs::read_to_string(&path).ok())
        };
        baton_image::bundle::resolve_user(
            &image.config.user,
            read("etc/passwd").as_deref(),
            read("etc/group").as_deref(),
        )
        .map_err(|e| RuntimeError::Image {
            reference: image.digest().to_string(),
            message: e.to_string(),
            retryable: false,
        })
    }

    /// What the worker's nftables table must do for containers.
    pub fn rules(&self) -> ContainerRules {
        ContainerRules { subnet: self.net.subnet(), host: self.host }
    }

    /// Gives container `id` a network namespace of its own in which its function listens
    /// on `port`, reached at `process.host:host_port` through `filter`'s mapping. Returns
    /// the namespace for runc to join; [`Containers::detach`] undoes the rest.
    pub async fn attach(
        &self,
        id: &SandboxId,
        filter: Option<&NetFilter>,
        host_port: u16,
        port: u16,
    ) -> Result<Netns, RuntimeError> {
        let filter = filter.ok_or_else(|| {
            RuntimeError::os("mapping a container's port", std::io::Error::other("no nftables table installed"))
        })?;
        let prepared = self.net.prepare(self.host, host_port, port).await?;
        let (netns, inside, reservation) = prepared.into_parts();
        if let Err(e) = filter.map_port(host_port, inside, &iface_name(*inside.ip())).await {
            self.net.release(*inside.ip());
            return Err(RuntimeError::os("mapping a container's port", std::io::Error::other(e)));
        }
        let attached = Attached { inside, host_port, _reservation: Some(reservation) };
        self.attached.lock().expect("attached lock").insert(id.clone(), attached);
        Ok(netns)
    }

    /// Container `id`'s address and port, when it has them.
    pub fn inside(&self, id: &SandboxId) -> Option<SocketAddrV4> {
        self.attached.lock().expect("attached lock").get(id).map(|a| a.inside)
    }

    /// Takes back a re-adopted container's place: its address, host port and mapping (the
    /// table is this worker's, new).
    pub async fn readopt(&self, id: &SandboxId, filter: Option<&NetFilter>, host_port: u16, inside: SocketAddrV4) {
        self.net.reserve(*inside.ip());
        let reservation = TcpListener::bind((self.host, host_port))
            .inspect_err(|e| tracing::warn!(sandbox = %id, port = host_port, "could not hold a container's port: {e}"))
            .ok();
        match filter {
            Some(filter) => {
                if let Err(e) = filter.map_port(host_port, inside, &iface_name(*inside.ip())).await {
                    tracing::error!(sandbox = %id, "could not map a re-adopted container's port: {e}");
                }
            }
            None => tracing::error!(sandbox = %id, "no table to map a re-adopted container's port in"),
        }
        let attached = Attached { inside, host_port, _reservation: reservation };
        self.attached.lock().expect("attached lock").insert(id.clone(), attached);
    }

    /// Container `id` is gone: its mapping, address and host port go too. Its namespace
    /// and veth went with its last process.
    pub async fn detach(&self, id: &SandboxId, filter: Option<&NetFilter>) {
        let Some(attached) = self.attached.lock().expect("attached lock").remove(id) else { return };
        if let Some(filter) = filter {
            filter.unmap_port(attached.host_port, &iface_name(*attached.inside.ip())).await;
        }
        self.net.release(*attached.inside.ip());
    }

    /// Addresses held (for leak checks).
    pub fn addresses_in_use(&self) -> usize {
        self.net.in_use()
    }

    /// The image cache.
    pub fn cache(&self) -> &Arc<ImageCache> {
        &self.cache
    }

    /// Image `digest` is no function's any more: removed now if no sandbox uses it, else
    /// when the last one goes ([`Containers::released`]). Returns whether it went now.
    pub fn unwanted(&self, digest: &str) -> bool {
        if self.cache.remove_unused(digest) {
            tracing::info!(%digest, "removed an image no function runs");
            return true;
        }
        if self.cache.contains(digest) {
            self.unwanted.lock().expect("unwanted lock").insert(digest.to_string());
        }
        false
    }

    /// A sandbox of image `digest` went: the image goes too if it was unwanted and that
    /// was its last sandbox.
    pub fn released(&self, digest: &str) {
        let unwanted = self.unwanted.lock().expect("unwanted lock").contains(digest);
        if unwanted && self.cache.remove_unused(digest) {
            self.unwanted.lock().expect("unwanted lock").remove(digest);
            tracing::info!(%digest, "removed an image no function runs, with its last sandbox");
        }
    }

    /// Makes `image`'s rootfs ready and holds it for a sandbox.
    pub async fn rootfs(&self, image: &ImageLaunch) -> Result<(Lease, Pulled), RuntimeError> {
        // Wanted again (deployed anew).
        self.unwanted.lock().expect("unwanted lock").remove(&image.digest);
        let started = Instant::now();
        let leased = self.cache.rootfs(&image.reference, &image.digest, &image.credentials).await;
        let took = started.elapsed();
        match leased {
            Ok(lease) => {
                let pulled = Pulled { cached: lease.cached, took };
                if pulled.cached {
                    metrics::image_pull("cached", None);
                } else {
                    metrics::image_pull("pulled", Some(took));
                }
                Ok((lease, pulled))
            }
            Err(e) => {
                metrics::image_pull("failed", None);
                tracing::warn!(image = %image.reference, digest = %image.digest, error = %e, "image pull failed");
                Err(pull_error(&image.reference, e))
            }
        }
    }

    /// Starts sandbox `id` from `launch` with its bundle in `bundle` (created), its output
    /// going to `stdout` and `stderr`. Returns the container's pid once runc has started
    /// it. On failure the container is gone.
    pub async fn run(
        &self,
        id: &str,
        bundle: &Path,
        image: &Lease,
        launch: &Launch,
        stdout: File,
        stderr: File,
    ) -> Result<i32, RuntimeError> {
        let spec = runtime_spec(&image.config, launch).map_err(|e| RuntimeError::Image {
            reference: launch.rootfs.display().to_string(),
            message: e.to_string(),
            retryable: false,
        })?;
        std::fs::create_dir_all(bundle).map_err(|e| RuntimeError::os(format!("creating {}", bundle.display()), e))?;
        baton_image::bundle::mount_points(&launch.rootfs)
            .map_err(|e| RuntimeError::os(format!("making mount points in {}", launch.rootfs.display()), e))?;
        spec.save(bundle.join("config.json")).map_err(|e| {
            RuntimeError::os(format!("writing {}/config.json", bundle.display()), std::io::Error::other(e))
        })?;
        let pid_file = bundle.join("pid");
        let args: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "run".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.clone().into(),
            "--bundle".into(),
            bundle.into(),
            id.into(),
        ];
        let ended = tokio::time::timeout(RUNC_PATIENCE, run_tool(&self.runc, &args, Some((stdout, stderr)))).await;
        let ok = matches!(ended, Ok(Ok(ChildExit::Code(0))));
        if !ok {
            self.delete(id).await;
            let how = match ended {
                Ok(Ok(ChildExit::Code(code))) => format!("runc exit status {code}"),
                Ok(Ok(ChildExit::Signal(signal))) => format!("runc ended by signal {signal}"),
                Ok(Err(e)) => format!("runc could not be started: {e}"),
                Err(_) => format!("runc did not finish within {RUNC_PATIENCE:?}"),
            };
            return Err(RuntimeError::ExitedDuringStartup {
                id: baton_proto::SandboxId::new(id).map_err(|e| RuntimeError::invalid("sandbox_id", e.to_string()))?,
                how,
                stderr_tail: String::new(),
            });
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 0);
        match pid {
            Some(pid) => Ok(pid),
            None => {
                self.delete(id).await;
                Err(RuntimeError::os(
                    format!("reading the pid runc wrote to {}", pid_file.display()),
                    std::io::Error::other("missing or not a pid"),
                ))
            }
        }
    }

    /// Removes container `id`'s runc state, killing whatever of it still runs.
    pub async fn delete(&self, id: &str) {
        let args: Vec<OsString> =
            vec!["--root".into(), self.root.clone().into(), "delete".into(), "--force".into(), id.into()];
        match tokio::time::timeout(RUNC_PATIENCE, run_tool(&self.runc, &args, None)).await {
            Ok(Ok(ChildExit::Code(0))) => {}
            outcome => tracing::debug!(container = id, ?outcome, "runc delete"),
        }
    }

    /// The containers runc knows of (its state folders), for start-up clean-up.
    pub fn known(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Lets runc reach an image's rootfs from inside a user namespace, where the host's root
/// is nobody: the cache's own folders become searchable by other users (not listable, so
/// no digest is learned from them), and every folder above them must already be.
fn open_to_user_namespaces(cache_dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| RuntimeError::os(format!("setting the mode of {}", path.display()), e))
    };
    set(cache_dir, 0o711)?;
    set(&cache_dir.join("images"), 0o711)?;
    set(&cache_dir.join("blobs"), 0o700)?;
    let absolute = std::fs::canonicalize(cache_dir)
        .map_err(|e| RuntimeError::os(format!("resolving {}", cache_dir.display()), e))?;
    for folder in absolute.ancestors().skip(1) {
        let mode = std::fs::metadata(folder).map(|m| m.mode()).unwrap_or(0);
        if mode & 0o001 == 0 {
            return Err(RuntimeError::invalid(
                "images.run_as_image_user",
                format!(
                    "runc cannot reach the image cache {} from a user namespace: {} is not searchable by other users \
                     (chmod o+x it, or move images.cache_dir)",
                    cache_dir.display(),
                    folder.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Turns on IPv4 forwarding, as Docker and Kubernetes' network plugins do: the
/// containers' own connections, and connections from other hosts to their ports, are
/// routed through this host.
fn forwarding() -> Result<(), String> {
    let knob = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(knob) {
        Ok(on) if on.trim() == "1" => Ok(()),
        _ => {
            std::fs::write(knob, "1").map_err(|e| format!("IPv4 forwarding cannot be turned on ({knob}: {e})"))?;
            tracing::info!("turned on IPv4 forwarding ({knob}) for the containers' networks");
            Ok(())
        }
    }
}

/// A failed pull as the worker's error: what a tenant can fix is final, a registry that is
/// down or a full disk may pass.
fn pull_error(reference: &str, error: PullError) -> RuntimeError {
    let retryable = matches!(
        &error,
        PullError::Registry(ResolveError::Unreachable { .. } | ResolveError::Registry { .. })
            | PullError::Io(_)
            | PullError::Unpack(baton_image::unpack::UnpackError::Io(_))
    );
    RuntimeError::Image { reference: reference.to_string(), message: error.to_string(), retryable }
}

/// Runs `program` with `args`, its output to `output` (or nowhere), and waits for it
/// through the reaper (the only waiter of this process's children).
async fn run_tool(program: &Path, args: &[OsString], output: Option<(File, File)>) -> std::io::Result<ChildExit> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    match output {
        Some((stdout, stderr)) => command.stdout(stdout).stderr(stderr),
        None => command.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    let child = command.spawn()?;
    let exit = Reaper::get().watch(child.id() as i32);
    Reaper::get().notify_spawned();
    exit.await.map_err(|_| std::io::Error::other("the reaper went away"))
}
