//! The `process` runtime: each sandbox is the function's executable, serving HTTP on
//! `$PORT`, in its own pid, mount, ipc and uts namespaces and its own cgroup, as an
//! unprivileged user where it can. Where the worker lacks a privilege it says so once at
//! start and in every sandbox's reported isolation, and still runs sandboxes.

mod cgroup;
mod container;
mod container_net;
mod logs;
mod netfilter;
mod ports;
mod reaper;
mod record;
mod recovery;
mod seccomp;
mod spawn;
mod table;
mod tool;
mod uids;

pub mod readiness;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::SandboxId;
use baton_proto::cell::ExitReason;
use baton_proto::worker::RuntimeKind;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::cgroup::Cgroups;
pub use self::ports::PortPool;
use self::reaper::{ChildExit, Reaper};
use self::record::SandboxRecord;
use self::table::{Entry, Phase};
use crate::config::{ImagesSection, ProcessSection, UserFallback};
use crate::error::RuntimeError;
use crate::runtime::{
    Created, CreationLatency, DEFAULT_CONTAINER_PORT, Deleted, ExitInfo, Isolation, PortRequest, SandboxExit,
    SandboxRuntime, SandboxSpec, SandboxState, SandboxSummary, unix_ms,
};

/// How long a SIGKILLed sandbox may take to be gone before the worker gives up waiting.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// The process runtime. Cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessSection,
    host: IpAddr,
    /// `<state_dir>/sandboxes`.
    dir: PathBuf,
    ports: PortPool,
    /// A uid per sandbox, when the worker switches users and a range is configured.
    uids: Option<uids::UidPool>,
    cgroups: Option<Cgroups>,
    namespaces: bool,
    user: Option<(Uid, Gid)>,
    /// The packet filter on the sandboxes' uids, when installed.
    netfilter: Option<netfilter::NetFilter>,
    /// The seccomp filter every sandbox runs under.
    seccomp: seccomp::Filters,
    /// Executables already warned about running as the worker's user.
    warned: Mutex<std::collections::HashSet<PathBuf>>,
    table: Mutex<table::Table>,
    /// Container images, when this worker runs them.
    containers: Option<container::Containers>,
    /// The image each container sandbox runs, held (never evicted) while it exists.
    images: Mutex<std::collections::HashMap<SandboxId, Option<baton_image::cache::Lease>>>,
    events: mpsc::UnboundedSender<SandboxExit>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// What the process runtime could set up on this machine, decided at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// New namespaces work.
    pub namespaces: bool,
    /// "v1"/"v2" when sandbox cgroups can be made.
    pub cgroup: Option<&'static str>,
    /// The user sandboxes run as, when one is switched to.
    pub user: Option<String>,
    /// The nftables table filtering the sandboxes' connections, when installed.
    pub network_filter: Option<String>,
}

impl ProcessRuntime {
    /// Starts the runtime without container images; see [`ProcessRuntime::start_with`].
    pub async fn start(
        config: ProcessSection,
        state_dir: &Path,
        events: mpsc::UnboundedSender<SandboxExit>,
    ) -> Result<Self, RuntimeError> {
        let off = ImagesSection { enabled: crate::config::ImagesChoice::Off, ..ImagesSection::default() };
        Self::start_with(config, off, state_dir, events).await
    }

    /// Starts the runtime: detects what isolation is possible and whether it runs container
    /// images (`images`), re-adopts sandboxes a previous worker process left running in
    /// `state_dir`, cleans up what it cannot adopt, and reports exits on `events`.
    pub async fn start_with(
        config: ProcessSection,
        images: ImagesSection,
        state_dir: &Path,
        events: mpsc::UnboundedSender<SandboxExit>,
    ) -> Result<Self, RuntimeError> {
        let host: IpAddr = config.host.parse().map_err(|e| {
            RuntimeError::invalid("process.host", format!("{:?} is not an IP address: {e}", config.host))
        })?;
        let dir = state_dir.join("sandboxes");
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::os(format!("creating state folder {}", dir.display()), e))?;
        // The worker's alone: a sandbox cannot even list which others run here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| RuntimeError::os(format!("restricting {}", dir.display()), e))?;
        let (capabilities, cgroups, user) = detect(&config).await;
        let root = nix::unistd::geteuid().is_root();
        if root && user.is_none() && !config.user.is_empty() && config.user_fallback == UserFallback::Refuse {
            // Every sandbox would run as root: say so now rather than at each creation.
            return Err(RuntimeError::invalid(
                "process.user",
                format!(
                    "no user {:?} on this machine: create it, set process.user = \"\" or process.user_fallback = \
                     \"worker\" to run sandboxes as the worker's user",
                    config.user
                ),
            ));
        }
        let uid_range =
            (user.is_some() && config.uid_range_start > 0).then_some(config.uid_range_start..=config.uid_range_end);
        let containers =
            container::Containers::start(&images, state_dir, capabilities.namespaces && user.is_some(), host).await?;
        let uids = match (user, &uid_range) {
            (Some(_), Some(range)) => Some(netfilter::SandboxUids::Range(range.clone())),
            (Some((uid, _)), None) => Some(netfilter::SandboxUids::Single(uid.as_raw())),
            (None, _) => {
                if config.network.filter {
                    tracing::warn!(
                        "sandboxes run as the worker's user, so their connections cannot be filtered: they can \
                         reach this host's ports. Run the worker as root with a sandbox user for the packet filter"
                    );
                }
                None
            }
        };
        // One table: the filter on the sandboxes' uids, and the containers' port mapping.
        let rules = containers.as_ref().map(container::Containers::rules);
        let netfilter = if (uids.is_some() && config.network.filter) || rules.is_some() {
            Some(netfilter::NetFilter::install(uids.as_ref(), &config.network, rules.as_ref())?)
        } else {
            None
        };
        let seccomp = seccomp::compile().map_err(|e| RuntimeError::invalid("process", e))?;
        let inner = Arc::new(Inner {
            containers,
            images: Mutex::default(),
            ports: PortPool::new(config.port_range_start..=config.port_range_end),
            uids: uid_range.map(uids::UidPool::new),
            netfilter,
            seccomp,
            host,
            dir,
            namespaces: capabilities.namespaces,
            cgroups,
            user,
            warned: Mutex::default(),
            table: Mutex::default(),
            events,
            background: Mutex::default(),
            config,
        });
        tracing::info!(?capabilities, "process runtime ready");
        let runtime = Self { inner };
        recovery::recover(&runtime).await;
        // Only now: a previous worker's table kept its sandboxes filtered and its
        // containers' ports mapped until this one took them over.
        if runtime.inner.netfilter.is_some() {
            netfilter::sweep_stale();
        }
        runtime.start_log_janitor();
        Ok(runtime)
    }

    /// What isolation this runtime applies.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            namespaces: self.inner.namespaces,
            cgroup: self.inner.cgroups.as_ref().map(Cgroups::version),
            user: self.inner.user.map(|(uid, _)| uid.to_string()),
            network_filter: self.inner.netfilter.as_ref().filter(|f| f.filters()).map(|f| f.table().to_string()),
        }
    }

    /// The port pool (for leak checks and metrics).
    pub fn ports(&self) -> &PortPool {
        &self.inner.ports
    }

    /// How many sandbox uids are held (for leak checks).
    pub fn uids_in_use(&self) -> usize {
        self.inner.uids.as_ref().map_or(0, uids::UidPool::in_use)
    }

    /// How many addresses containers hold in `images.subnet` (for leak checks).
    pub fn container_addresses(&self) -> usize {
        self.inner.containers.as_ref().map_or(0, container::Containers::addresses_in_use)
    }

    /// The cgroup manager, when cgroups are in use.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.inner.cgroups.as_ref()
    }

    fn start_log_janitor(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.log_check_interval;
        let max = self.inner.config.log_max_bytes;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let dirs: Vec<PathBuf> = inner.table.lock().expect("table lock").dirs();
                drop(inner);
                for dir in dirs {
                    logs::enforce_cap(&dir, max);
                }
            }
        });
        self.inner.background.lock().expect("background lock").push(task);
    }

    /// Whether the sandboxes' connections are filtered.
    fn filters(&self) -> bool {
        self.inner.netfilter.as_ref().is_some_and(netfilter::NetFilter::filters)
    }

    /// The isolation and user a sandbox of `executable` gets; refused when the sandbox user
    /// cannot reach it and `process.user_fallback` is `refuse`.
    fn isolation_for(&self, executable: &Path) -> Result<(Isolation, Option<(Uid, Gid)>), RuntimeError> {
        // With a uid per sandbox, the one it gets owns no file: "others" permissions apply.
        let candidate = match &self.inner.uids {
            Some(pool) => self.inner.user.map(|_| (Uid::from_raw(pool.any()), Gid::from_raw(pool.any()))),
            None => self.inner.user,
        };
        let user = candidate.filter(|(uid, gid)| reachable_by(executable, *uid, *gid));
        if self.inner.user.is_some() && user.is_none() {
            let why = format!(
                "the sandbox user {:?} cannot reach it (every folder on its path, and the file, must be executable \
                 by it)",
                self.inner.config.user
            );
            if self.inner.config.user_fallback == UserFallback::Refuse {
                return Err(RuntimeError::Executable {
                    path: executable.display().to_string(),
                    reason: format!("{why}; make it reachable, or set process.user_fallback = \"worker\""),
                });
            }
            if self.inner.warned.lock().expect("warned lock").insert(executable.to_path_buf()) {
                tracing::warn!(executable = %executable.display(), "{why}; running it as the worker's user");
            }
        }
        let isolation = Isolation {
            namespaces: self.inner.namespaces,
            cgroup: self.inner.cgroups.as_ref().map(|c| c.version().to_string()),
            unprivileged_user: user.is_some(),
            network_filter: user.is_some() && self.filters(),
        };
        Ok((isolation, user))
    }

    /// The isolation and user of a container sandbox: always its namespaces and an
    /// unprivileged user (the runtime runs no images without them).
    fn container_isolation(
        &self,
        image: &crate::runtime::ImageLaunch,
    ) -> Result<(Isolation, Option<(Uid, Gid)>), RuntimeError> {
        let (Some(_), Some(user)) = (&self.inner.containers, self.inner.user) else {
            return Err(RuntimeError::Image {
                reference: image.reference.clone(),
                message: "this node does not run container images (see the worker's images.enabled)".into(),
                retryable: false,
            });
        };
        let isolation = Isolation {
            namespaces: true,
            cgroup: self.inner.cgroups.as_ref().map(|c| c.version().to_string()),
            unprivileged_user: true,
            network_filter: self.filters(),
        };
        Ok((isolation, Some(user)))
    }

    async fn create_inner(&self, id: &SandboxId, spec: &SandboxSpec, slot: &mut Slot) -> Result<Created, RuntimeError> {
        let started = Instant::now();
        // Decided before anything is taken, so a refusal leaves nothing behind.
        let (isolation, mut user) = match &spec.image {
            Some(image) => self.container_isolation(image)?,
            None => {
                check_executable(&spec.executable, &self.inner.config.executables)?;
                self.isolation_for(&spec.executable)?
            }
        };
        let image = match (&spec.image, &self.inner.containers) {
            (Some(image), Some(containers)) => Some(containers.rootfs(image).await?),
            _ => None,
        };
        let image_time = image.as_ref().map(|(_, pulled)| pulled.took).unwrap_or_default();
        let pulled_image = image.as_ref().is_some_and(|(_, pulled)| !pulled.cached);
        if let (Some(_), Some(pool)) = (user, &self.inner.uids) {
            let uid = pool.take(id.as_str()).map_err(|e| RuntimeError::Exhausted(e.to_string()))?;
            slot.uid_of = Some(id.clone());
            user = Some((Uid::from_raw(uid), Gid::from_raw(uid)));
        }
        let port = match spec.port {
            PortRequest::Any => self.inner.ports.take_any(),
            PortRequest::Fixed(p) => self.inner.ports.take(p),
        }
        .map_err(|e| RuntimeError::Exhausted(e.to_string()))?;
        slot.port = Some(port);
        let dir = self.inner.dir.join(id.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::os(format!("creating {}", dir.display()), e))?;
        // The worker's alone: no sandbox lists or reads another's logs (it runs in `/`).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| RuntimeError::os(format!("restricting {}", dir.display()), e))?;
        slot.dir = Some(dir.clone());
        let (stdout, stderr) =
            logs::open(&dir).map_err(|e| RuntimeError::os(format!("opening logs in {}", dir.display()), e))?;

        let cgroup_started = Instant::now();
        let (cgroup, cgroup_procs) = match (&self.inner.cgroups, &image) {
            // runc makes a container's cgroup itself, at the same place (`container`).
            (Some(cgroups), Some(_)) => (Some(cgroups.sandbox(id.as_str())), Vec::new()),
            (Some(cgroups), None) => {
                let (cg, fds) = cgroups
                    .create(id.as_str(), &spec.resources)
                    .map_err(|e| RuntimeError::os(format!("creating cgroup for sandbox {id}"), e))?;
                (Some(cg), fds)
            }
            (None, _) => (None, Vec::new()),
        };
        slot.cgroup = cgroup.clone();
        let cgroup_time = cgroup_started.elapsed();

        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("PORT".into(), port.to_string()),
            ("HOST".into(), self.inner.host.to_string()),
            ("BATON_SANDBOX_ID".into(), id.to_string()),
            ("BATON_FUNCTION_ID".into(), spec.function_id.clone()),
        ];
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spawn_started = Instant::now();
        let spawned = match (image, &self.inner.containers, &spec.image) {
            (Some((lease, _)), Some(containers), Some(launch)) => {
                // The image's PATH stands unless the function sets one.
                env.retain(|(name, _)| name != "PATH" || spec.env.contains_key("PATH"));
                let (uid, gid) = user.map(|(u, g)| (u.as_raw(), g.as_raw())).ok_or_else(|| {
                    RuntimeError::os("starting a container", std::io::Error::other("no sandbox user"))
                })?;
                // Its own network: it listens on the port it chooses, on every address.
                let inside_port = launch.port.unwrap_or_else(|| lease.config.default_port(DEFAULT_CONTAINER_PORT));
                slot.container = Some(id.clone());
                let netns = containers.attach(id, self.inner.netfilter.as_ref(), port, inside_port).await?;
                for (name, value) in &mut env {
                    match name.as_str() {
                        "PORT" => *value = inside_port.to_string(),
                        "HOST" => *value = "0.0.0.0".into(),
                        _ => {}
                    }
                }
                // The image's user, where the operator allows it: in a user namespace, as the
                // sandbox's uid on the host (and root as a second one of the pool's).
                let (uid, gid, id_maps) = match containers.image_user(&lease)? {
                    None => (uid, gid, None),
                    Some((inside_uid, inside_gid)) => {
                        let pool = self.inner.uids.as_ref().ok_or_else(|| {
                            RuntimeError::invalid("images.run_as_image_user", "needs process.uid_range_*")
                        })?;
                        let mut uids = vec![(inside_uid, uid)];
                        let mut gids = vec![(inside_gid, gid)];
                        if inside_uid != 0 || inside_gid != 0 {
                            let root = pool.take(&root_key(id)).map_err(|e| RuntimeError::Exhausted(e.to_string()))?;
                            if inside_uid != 0 {
                                uids.insert(0, (0, root));
                            }
                            if inside_gid != 0 {
                                gids.insert(0, (0, root));
                            }
                        }
                        (inside_uid, inside_gid, Some(baton_image::bundle::IdMaps { uids, gids }))
                    }
                };
                let launch = baton_image::bundle::Launch {
                    command: (!launch.command.is_empty()).then(|| launch.command.clone()),
                    args: (!spec.args.is_empty()).then(|| spec.args.clone()),
                    env: env.into_iter().collect(),
                    uid,
                    gid,
                    id_maps,
                    rootfs: lease.path.clone(),
                    hostname: format!("sandbox-{id}"),
                    netns: Some(netns.path()),
                    cgroups_path: format!("{}/{id}", self.inner.config.cgroup_parent),
                    cpu_millis: spec.resources.cpu_millis,
                    memory_mib: spec.resources.memory_mib,
                    pids: spec.resources.pids,
                };
                let bundle = dir.join("bundle");
                let run = containers.run(id.as_str(), &bundle, &lease, &launch, stdout, stderr).await;
                // The container is in its namespace now (or gone): the worker lets go of it.
                drop(netns);
                self.inner.images.lock().expect("images lock").insert(id.clone(), Some(lease));
                let pid = run.map_err(|e| match e {
                    RuntimeError::ExitedDuringStartup { id, how, .. } => {
                        RuntimeError::ExitedDuringStartup { id, how, stderr_tail: logs::stderr_tail(&dir, 512) }
                    }
                    other => other,
                })?;
                spawn::Spawned { main_pid: pid, waited_pid: pid }
            }
            _ => {
                let plan = spawn::SpawnPlan {
                    executable: spec.executable.clone(),
                    args: spec.args.clone(),
                    env,
                    stdout,
                    stderr,
                    cgroup_procs,
                    namespaces: self.inner.namespaces,
                    hostname: format!("sandbox-{id}"),
                    user,
                    seccomp: Some(self.inner.seccomp.clone()),
                };
                spawn::spawn(plan).map_err(|e| RuntimeError::Executable {
                    path: spec.executable.display().to_string(),
                    reason: format!("could not start it: {e}"),
                })?
            }
        };
        let exited = self.watch_exit(id.clone(), spawned, cgroup.clone());
        slot.pid = Some(spawned.main_pid);
        slot.exit = Some(exited.clone());
        let spawn_time = spawn_started.elapsed();

        let readiness_started = Instant::now();
        let endpoint = SocketAddr::new(self.inner.host, port);
        let mut exit_rx = exited.clone();
        let exit_seen = async move {
            let _ = exit_rx.wait_for(Option::is_some).await;
        };
        if let Err(why) = readiness::wait_ready(endpoint, &spec.readiness_path, spec.readiness_timeout, exit_seen).await
        {
            return Err(match why {
                readiness::NotReady::TimedOut => RuntimeError::ReadinessTimeout {
                    id: id.clone(),
                    path: spec.readiness_path.clone(),
                    endpoint: endpoint.to_string(),
                    timeout_ms: spec.readiness_timeout.as_millis() as u64,
                },
                readiness::NotReady::Exited => RuntimeError::ExitedDuringStartup {
                    id: id.clone(),
                    how: describe_exit(exited.borrow().as_ref()),
                    stderr_tail: logs::stderr_tail(&dir, 512),
                },
            });
        }
        let readiness_time = readiness_started.elapsed();

        let created_at_unix_ms = unix_ms();
        let record = SandboxRecord {
            id: id.to_string(),
            function_id: spec.function_id.clone(),
            port,
            main_pid: spawned.main_pid,
            start_ticks: record::start_ticks(spawned.main_pid).unwrap_or(0),
            isolation: isolation.clone(),
            resources: spec.resources,
            created_at_unix_ms,
            uid: user.filter(|_| self.inner.uids.is_some()).map(|(uid, _)| uid.as_raw()),
            image: spec.image.as_ref().map(|i| i.digest.clone()),
            network: self.inner.containers.as_ref().and_then(|c| c.inside(id)),
            root_uid: self.inner.uids.as_ref().and_then(|pool| pool.of(&root_key(id))),
        };
        record::write(&dir, &record).map_err(|e| RuntimeError::os(format!("writing the record of sandbox {id}"), e))?;
        let entry = Entry {
            summary: SandboxSummary {
                id: id.clone(),
                function_id: spec.function_id.clone(),
                endpoint: endpoint.to_string(),
                pid: spawned.main_pid as u32,
                state: SandboxState::Running,
                isolation: isolation.clone(),
                resources: spec.resources,
                created_at_unix_ms,
                adopted: false,
            },
            phase: Phase::Running,
            port: Some(port),
            main_pid: spawned.main_pid,
            group_kill: !self.inner.namespaces,
            cgroup,
            exit: exited.clone(),
            dir,
        };
        self.inner.table.lock().expect("table lock").insert_running(entry);
        slot.disarm();
        // An exit between readiness and here found the row still `Creating` and was not
        // handled; handle it now (`on_exit` acts once, on a running row only).
        let exited_meanwhile = *exited.borrow();
        if let Some(exit) = exited_meanwhile {
            self.on_exit(id, exit).await;
        }
        Ok(Created {
            pulled_image,
            endpoint: endpoint.to_string(),
            isolation,
            latency: CreationLatency {
                image: image_time,
                cgroup: cgroup_time,
                spawn: spawn_time,
                readiness: readiness_time,
                total: started.elapsed(),
            },
            pid: spawned.main_pid as u32,
        })
    }

    /// Starts the task that waits for `spawned` to end, records how, frees what the process
    /// held and reports the exit unless the sandbox is being deleted.
    fn watch_exit(
        &self,
        id: SandboxId,
        spawned: spawn::Spawned,
        cgroup: Option<cgroup::SandboxCgroup>,
    ) -> watch::Receiver<Option<ExitInfo>> {
        let (tx, rx) = watch::channel(None);
        let child = Reaper::get().watch(spawned.waited_pid);
        Reaper::get().notify_spawned();
        let runtime = self.clone();
        tokio::spawn(async move {
            let status = child.await.ok();
            let oom = cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or(0);
            let exit = classify(status, oom);
            let _ = tx.send(Some(exit));
            runtime.on_exit(&id, exit).await;
        });
        rx
    }

    /// Called once a sandbox's process is gone, whoever ended it.
    async fn on_exit(&self, id: &SandboxId, exit: ExitInfo) {
        let freed = self.inner.table.lock().expect("table lock").mark_exited(id);
        let Some((port, cgroup)) = freed else { return };
        // A running sandbox ended on its own: free what it held, keep its logs and record
        // (state exited) until the control plane deletes it, and report the exit.
        if let Some(containers) = &self.inner.containers {
            containers.detach(id, self.inner.netfilter.as_ref()).await;
        }
        release(&self.inner, port, cgroup).await;
        release_uid(&self.inner, id);
        tracing::warn!(sandbox = %id, reason = ?exit.reason, code = ?exit.code, signal = ?exit.signal, "sandbox exited");
        let _ = self.inner.events.send(SandboxExit { id: id.clone(), exit, at_unix_ms: unix_ms() });
    }

    async fn delete_inner(&self, id: &SandboxId, grace: Duration) -> Result<Deleted, RuntimeError> {
        let entry = self.inner.table.lock().expect("table lock").begin_delete(id)?;
        let killed = stop(entry.main_pid, entry.group_kill, entry.cgroup.as_ref(), entry.exit.clone(), grace).await;
        forget_container(&self.inner, id).await;
        release(&self.inner, entry.port, entry.cgroup.clone()).await;
        release_uid(&self.inner, id);
        let _ = std::fs::remove_dir_all(&entry.dir);
        self.inner.table.lock().expect("table lock").remove(id);
        Ok(Deleted { killed })
    }
}

/// Releases a creation's partial work if it fails or is cancelled.
#[derive(Default)]
struct Slot {
    armed: bool,
    port: Option<u16>,
    /// The sandbox, once it holds a uid of its own.
    uid_of: Option<SandboxId>,
    dir: Option<PathBuf>,
    cgroup: Option<cgroup::SandboxCgroup>,
    pid: Option<i32>,
    exit: Option<watch::Receiver<Option<ExitInfo>>>,
    /// The sandbox, once runc was asked to start it as a container.
    container: Option<SandboxId>,
}

impl Slot {
    fn disarm(&mut self) {
        self.armed = false;
    }

    async fn undo(self, inner: &Arc<Inner>, group_kill: bool) {
        if !self.armed {
            return;
        }
        if let (Some(pid), Some(exit)) = (self.pid, self.exit.clone()) {
            stop(pid, group_kill, self.cgroup.as_ref(), exit, Duration::ZERO).await;
        }
        if let Some(id) = &self.container {
            forget_container(inner, id).await;
        }
        release(inner, self.port, self.cgroup).await;
        if let Some(id) = &self.uid_of {
            release_uid(inner, id);
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[async_trait::async_trait]
impl SandboxRuntime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    async fn create(&self, id: SandboxId, spec: SandboxSpec) -> Result<Created, RuntimeError> {
        self.inner.table.lock().expect("table lock").reserve(&id)?;
        let mut slot = Slot { armed: true, ..Slot::default() };
        let result = self.create_inner(&id, &spec, &mut slot).await;
        if result.is_err() {
            // The row is still `Creating`, so the process's exit (if any) is not reported.
            slot.undo(&self.inner, !self.inner.namespaces).await;
            self.inner.table.lock().expect("table lock").remove(&id);
        }
        result
    }

    async fn delete(&self, id: &SandboxId, grace: Duration) -> Result<Deleted, RuntimeError> {
        self.delete_inner(id, grace).await
    }

    async fn list(&self) -> Vec<SandboxSummary> {
        self.inner.table.lock().expect("table lock").summaries()
    }

    fn kinds(&self) -> Vec<RuntimeKind> {
        match self.inner.containers {
            Some(_) => vec![RuntimeKind::Process, RuntimeKind::Oci],
            None => vec![RuntimeKind::Process],
        }
    }

    async fn drop_image(&self, digest: &str) -> bool {
        let Some(containers) = &self.inner.containers else { return false };
        containers.unwanted(digest)
    }

    async fn pull(&self, image: &crate::runtime::ImageLaunch) -> Result<crate::runtime::Pulled, RuntimeError> {
        let Some(containers) = &self.inner.containers else {
            return Err(RuntimeError::Image {
                reference: image.reference.clone(),
                message: "this node does not run container images (see the worker's images.enabled)".into(),
                retryable: false,
            });
        };
        containers.rootfs(image).await.map(|(_, pulled)| pulled)
    }

    async fn shutdown(&self, delete_all: bool, grace: Duration) {
        for task in self.inner.background.lock().expect("background lock").drain(..) {
            task.abort();
        }
        if delete_all {
            let ids: Vec<SandboxId> = self.list().await.into_iter().map(|s| s.id).collect();
            futures::future::join_all(ids.iter().map(|id| self.delete(id, grace))).await;
            if let Some(cgroups) = &self.inner.cgroups {
                cgroups.remove_parent();
            }
        } else if let Some(filter) = &self.inner.netfilter {
            // The sandboxes left running stay filtered until the next worker installs its own.
            filter.keep();
        }
    }
}

/// Detects namespaces, cgroups and the sandbox user, warning once about what is missing.
async fn detect(config: &ProcessSection) -> (Capabilities, Option<Cgroups>, Option<(Uid, Gid)>) {
    let root = nix::unistd::geteuid().is_root();
    let mut missing = Vec::new();
    let cgroups = if !config.cgroups {
        None
    } else {
        match Cgroups::detect(&config.cgroup_parent) {
            Ok(c) => Some(c),
            Err(e) => {
                missing.push(format!("cgroups ({e})"));
                None
            }
        }
    };
    let namespaces = config.namespaces && {
        let works = namespaces_work().await;
        if !works {
            missing.push("namespaces (unshare was refused; the worker needs CAP_SYS_ADMIN)".to_string());
        }
        works
    };
    let user = if config.user.is_empty() || !root {
        None
    } else {
        match nix::unistd::User::from_name(&config.user) {
            Ok(Some(u)) => Some((u.uid, u.gid)),
            _ => {
                missing.push(format!("the sandbox user {:?} (no such user)", config.user));
                None
            }
        }
    };
    if !missing.is_empty() {
        tracing::warn!(
            "sandboxes will run with reduced isolation: no {}. Run the worker as root for full isolation, or turn \
             the feature off in [process] to silence this warning",
            missing.join(", no ")
        );
    }
    let capabilities = Capabilities {
        namespaces,
        cgroup: cgroups.as_ref().map(Cgroups::version),
        user: user.map(|_| config.user.clone()),
        network_filter: None,
    };
    (capabilities, cgroups, user)
}

/// Starts `/bin/true` in new namespaces to see whether this process may create them.
async fn namespaces_work() -> bool {
    let Ok(null) = std::fs::File::options().write(true).open("/dev/null") else {
        return false;
    };
    let (Ok(out), Ok(err)) = (null.try_clone(), null.try_clone()) else {
        return false;
    };
    let plan = spawn::SpawnPlan {
        executable: "/bin/true".into(),
        args: Vec::new(),
        env: Vec::new(),
        stdout: out,
        stderr: err,
        cgroup_procs: Vec::new(),
        namespaces: true,
        hostname: "baton-probe".into(),
        user: None,
        seccomp: None,
    };
    match spawn::spawn(plan) {
        Ok(spawned) => {
            let exit = Reaper::get().watch(spawned.waited_pid);
            Reaper::get().notify_spawned();
            matches!(tokio::time::timeout(Duration::from_secs(5), exit).await, Ok(Ok(ChildExit::Code(0))))
        }
        Err(_) => false,
    }
}

/// Stops a sandbox's process: SIGTERM, up to `grace`, then SIGKILL to everything it holds.
/// Returns whether SIGKILL was needed.
async fn stop(
    main_pid: i32,
    group_kill: bool,
    cgroup: Option<&cgroup::SandboxCgroup>,
    mut exit: watch::Receiver<Option<ExitInfo>>,
    grace: Duration,
) -> bool {
    if exit.borrow().is_some() {
        if let Some(cg) = cgroup {
            cg.kill_all();
        }
        return false;
    }
    // Without namespaces the sandbox leads its own process group: signal the group.
    let target = Pid::from_raw(if group_kill { -main_pid } else { main_pid });
    let _ = kill(target, Signal::SIGTERM);
    if !grace.is_zero() && tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.is_ok() {
        if let Some(cg) = cgroup {
            cg.kill_all();
        }
        return false;
    }
    let _ = kill(target, Signal::SIGKILL);
    if let Some(cg) = cgroup {
        cg.kill_all();
    }
    if tokio::time::timeout(KILL_PATIENCE, exit.wait_for(Option::is_some)).await.is_err() {
        tracing::error!(pid = main_pid, "sandbox process still there {KILL_PATIENCE:?} after SIGKILL");
    }
    true
}

/// Removes container sandbox `id`'s runc state and lets go of its image and its place on
/// the network (a process sandbox has none of these; a re-adopted container may have lost
/// its image).
async fn forget_container(inner: &Arc<Inner>, id: &SandboxId) {
    if let Some(containers) = &inner.containers {
        containers.detach(id, inner.netfilter.as_ref()).await;
    }
    let lease = inner.images.lock().expect("images lock").remove(id);
    if let (Some(lease), Some(containers)) = (lease, &inner.containers) {
        let digest = lease.as_ref().map(|l| l.digest().to_string());
        drop(lease);
        containers.delete(id.as_str()).await;
        if let Some(digest) = digest {
            containers.released(&digest);
        }
    }
}

/// Gives back the uid sandbox `id` ran as, if it had one of its own.
fn release_uid(inner: &Arc<Inner>, id: &SandboxId) {
    if let Some(pool) = &inner.uids {
        pool.release(id.as_str());
        pool.release(&root_key(id));
    }
}

/// The uid pool's key for the uid root is mapped to in sandbox `id`'s user namespace.
fn root_key(id: &SandboxId) -> String {
    format!("{id}/root")
}

/// Frees a sandbox's port and removes its cgroup.
async fn release(inner: &Arc<Inner>, port: Option<u16>, cgroup: Option<cgroup::SandboxCgroup>) {
    if let Some(cg) = cgroup {
        let removed = tokio::task::spawn_blocking(move || cg.remove(Duration::from_secs(2))).await;
        if let Ok(Err(e)) = removed {
            tracing::error!(error = %e, "cgroup left behind");
        }
    }
    if let Some(port) = port {
        inner.ports.release(port);
    }
}

/// Classifies a wait status (None: unknown, for re-adopted sandboxes) and the cgroup's OOM
/// kill count.
fn classify(status: Option<ChildExit>, oom_kills: u64) -> ExitInfo {
    let sigkill = Signal::SIGKILL as i32;
    match status {
        Some(ChildExit::Code(0)) => ExitInfo { reason: ExitReason::Exited, code: Some(0), signal: None },
        Some(ChildExit::Code(code)) => ExitInfo { reason: ExitReason::Crashed, code: Some(code), signal: None },
        Some(ChildExit::Signal(s)) if s == sigkill && oom_kills > 0 => {
            ExitInfo { reason: ExitReason::OomKilled, code: None, signal: Some(s) }
        }
        Some(ChildExit::Signal(s)) if s == sigkill => {
            ExitInfo { reason: ExitReason::Killed, code: None, signal: Some(s) }
        }
        Some(ChildExit::Signal(s)) => ExitInfo { reason: ExitReason::Crashed, code: None, signal: Some(s) },
        None if oom_kills > 0 => ExitInfo { reason: ExitReason::OomKilled, code: None, signal: None },
        None => ExitInfo { reason: ExitReason::Unknown, code: None, signal: None },
    }
}

fn describe_exit(exit: Option<&ExitInfo>) -> String {
    match exit {
        Some(ExitInfo { code: Some(code), .. }) => format!("exit status {code}"),
        Some(ExitInfo { signal: Some(signal), reason, .. }) => format!("signal {signal}, {reason:?}"),
        Some(ExitInfo { reason, .. }) => format!("{reason:?}"),
        None => "unknown".into(),
    }
}

/// Fails at once, clearly, when the executable is missing or not executable, or, once
/// symlinks are followed, is one of baton's own programs (by name, or the very file this
/// worker runs from) or outside the operator's `allowed` programs and folders.
fn check_executable(path: &Path, allowed: &[String]) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let err = |reason: &str| RuntimeError::Executable { path: path.display().to_string(), reason: reason.into() };
    let resolved = std::fs::canonicalize(path).map_err(|e| err(&format!("cannot be read on this node: {e}")))?;
    let meta = std::fs::metadata(&resolved).map_err(|e| err(&format!("cannot be read on this node: {e}")))?;
    let own = std::env::current_exe().and_then(std::fs::metadata).ok();
    let is_own = own.is_some_and(|o| (o.dev(), o.ino()) == (meta.dev(), meta.ino()));
    let named_as_ours = resolved.to_str().is_some_and(baton_model::sandbox::is_platform_program);
    if is_own || named_as_ours {
        return Err(err(&format!(
            "resolves to {}, one of baton's own programs, which never run as functions",
            resolved.display()
        )));
    }
    if !allowed.is_empty() && !allowed.iter().any(|entry| admits(entry, &resolved)) {
        return Err(err(&format!(
            "resolves to {}, outside process.executables ({})",
            resolved.display(),
            allowed.join(", ")
        )));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(err("is not executable (no x permission bit)"));
    }
    Ok(())
}

/// Whether `entry` of `process.executables` (a program, or a folder ending in `/`, each
/// compared with symlinks followed) admits the resolved program `resolved`.
fn admits(entry: &str, resolved: &Path) -> bool {
    let Ok(target) = std::fs::canonicalize(entry) else { return false };
    if entry.ends_with('/') { resolved.starts_with(&target) && resolved != target } else { resolved == target }
}

/// Copies `function` into `dir` (created if needed), both readable and enterable by
/// everyone, so the sandbox user can run the copy wherever the original lives (a checkout
/// under `/root` is out of its reach). Returns the copy's path.
pub fn reachable_copy(function: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let everyone = || std::fs::Permissions::from_mode(0o755);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, everyone())?;
    let name = function.file_name().ok_or_else(|| std::io::Error::other("the function path has no file name"))?;
    let copy = dir.join(name);
    std::fs::copy(function, &copy)?;
    std::fs::set_permissions(&copy, everyone())?;
    Ok(copy)
}

/// Whether `uid`/`gid` may traverse every folder up to `path` and execute it.
fn reachable_by(path: &Path, uid: Uid, gid: Gid) -> bool {
    use std::os::unix::fs::MetadataExt;
    let allowed = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            (m.uid() == uid.as_raw() && mode & 0o100 != 0)
                || (m.gid() == gid.as_raw() && mode & 0o010 != 0)
                || mode & 0o001 != 0
        })
    };
    path.ancestors().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_exits() {
        assert_eq!(classify(Some(ChildExit::Code(0)), 0).reason, ExitReason::Exited);
        assert_eq!(
            classify(Some(ChildExit::Code(3)), 0),
            ExitInfo { reason: ExitReason::Crashed, code: Some(3), signal: None }
        );
        assert_eq!(classify(Some(ChildExit::Signal(9)), 1).reason, ExitReason::OomKilled);
        assert_eq!(classify(Some(ChildExit::Signal(9)), 0).reason, ExitReason::Killed);
        assert_eq!(classify(Some(ChildExit::Signal(11)), 0).reason, ExitReason::Crashed);
        assert_eq!(classify(None, 0).reason, ExitReason::Unknown);
        assert_eq!(classify(None, 2).reason, ExitReason::OomKilled);
    }

    #[test]
    fn reachability_follows_permission_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("f");
        std::fs::write(&exe, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by(&exe, nobody.0, nobody.1));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // /tmp and its parents are world-traversable on any sane machine.
        assert!(reachable_by(&exe, nobody.0, nobody.1));
    }
}
