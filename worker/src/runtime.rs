//! The `SandboxRuntime` trait every backend implements, and the domain types it speaks in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use baton_proto::SandboxId;
use baton_proto::cell::ExitReason;
use baton_proto::worker::RuntimeKind;

use crate::error::RuntimeError;

/// CPU, memory and pids limits of one sandbox, all non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    /// MiB.
    pub memory_mib: u64,
    /// Most processes and threads.
    pub pids: u32,
}

/// How the sandbox's port is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PortRequest {
    /// Any free port of the worker's range.
    Any,
    /// This port, which lies in the range.
    Fixed(u16),
}

/// A validated sandbox specification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    /// The function served (free text, for listings and logs).
    pub function_id: String,
    /// Absolute path of the executable.
    pub executable: PathBuf,
    /// Arguments after the executable.
    pub args: Vec<String>,
    /// Environment given to the sandbox, besides `PORT` and `HOST`.
    pub env: BTreeMap<String, String>,
    /// Port choice.
    pub port: PortRequest,
    /// Limits.
    pub resources: Resources,
    /// How long readiness may take.
    pub readiness_timeout: Duration,
    /// Path probed for readiness.
    pub readiness_path: String,
    /// The container image to run instead of `executable` (`args` then replace its `Cmd`).
    pub image: Option<ImageLaunch>,
}

/// A container image to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageLaunch {
    /// Where to pull it from.
    pub reference: String,
    /// The manifest digest that runs.
    pub digest: String,
    /// Replaces the image's entrypoint and `Cmd` when not empty.
    pub command: Vec<String>,
    /// The port the function listens on inside its sandbox; `None`: the image's one
    /// exposed TCP port, else [`DEFAULT_CONTAINER_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For the registry; never written anywhere.
    #[serde(skip, default = "anonymous")]
    pub credentials: baton_image::Credentials,
}

/// The port a container's function listens on when neither it nor its image says (as
/// Knative and Cloud Run).
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

fn anonymous() -> baton_image::Credentials {
    baton_image::Credentials::Anonymous
}

/// An image made ready on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// It was there already, or another creation pulled it meanwhile.
    pub cached: bool,
    /// How long getting it took (waiting for another's pull included).
    pub took: Duration,
}

/// What a sandbox actually got for isolation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    /// Own pid, mount, ipc and uts namespaces.
    pub namespaces: bool,
    /// `Some("v1")` or `Some("v2")` when in a cgroup with limits.
    pub cgroup: Option<String>,
    /// Runs as an unprivileged user.
    pub unprivileged_user: bool,
    /// Its connections go through the packet filter (`process.network`).
    #[serde(default)]
    pub network_filter: bool,
}

impl Isolation {
    /// `full`, `partial` or `none`.
    pub fn level(&self) -> &'static str {
        match (self.namespaces, self.cgroup.is_some(), self.unprivileged_user, self.network_filter) {
            (true, true, true, true) => "full",
            (false, false, false, false) => "none",
            _ => "partial",
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> baton_proto::worker::Isolation {
        baton_proto::worker::Isolation {
            level: self.level().into(),
            pid_namespace: self.namespaces,
            mount_namespace: self.namespaces,
            ipc_namespace: self.namespaces,
            uts_namespace: self.namespaces,
            cgroup: self.cgroup.clone().unwrap_or_default(),
            unprivileged_user: self.unprivileged_user,
            network_filter: self.network_filter,
        }
    }
}

/// Where a creation spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreationLatency {
    /// Getting the image's rootfs: pulling it, or waiting for a pull under way (near zero
    /// when cached; zero for executables).
    pub image: Duration,
    /// Making the cgroup and writing its limits.
    pub cgroup: Duration,
    /// fork/exec until the process runs.
    pub spawn: Duration,
    /// Until the readiness probe answered.
    pub readiness: Duration,
    /// The whole creation.
    pub total: Duration,
}

/// A sandbox that answered its readiness probe.
#[derive(Debug, Clone)]
pub struct Created {
    /// host:port it serves on.
    pub endpoint: String,
    /// Isolation applied.
    pub isolation: Isolation,
    /// Phase timings.
    pub latency: CreationLatency,
    /// Main process (0 when emulated).
    pub pid: u32,
    /// This creation pulled its image (it was not cached, and no other creation was
    /// pulling it).
    pub pulled_image: bool,
}

/// Whether a sandbox's process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Serving.
    Running,
    /// Gone; kept until deleted.
    Exited,
}

/// One row of a listing.
#[derive(Debug, Clone)]
pub struct SandboxSummary {
    /// Its ID.
    pub id: SandboxId,
    /// The function it serves.
    pub function_id: String,
    /// host:port.
    pub endpoint: String,
    /// Main process (0 when emulated).
    pub pid: u32,
    /// Running or exited.
    pub state: SandboxState,
    /// Isolation applied.
    pub isolation: Isolation,
    /// Its limits.
    pub resources: Resources,
    /// Creation time, Unix milliseconds.
    pub created_at_unix_ms: u64,
    /// Found running at start-up and taken over.
    pub adopted: bool,
}

/// How a sandbox's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Classified reason.
    pub reason: ExitReason,
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// Signal, when one ended it.
    pub signal: Option<i32>,
}

/// A sandbox that ended without being asked to, as reported to the control plane.
#[derive(Debug, Clone)]
pub struct SandboxExit {
    /// Which sandbox.
    pub id: SandboxId,
    /// How it ended.
    pub exit: ExitInfo,
    /// When, Unix milliseconds.
    pub at_unix_ms: u64,
}

/// The result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// SIGKILL was needed after the grace period.
    pub killed: bool,
}

/// A way of running sandboxes: create, delete, list. Exits are reported on the channel the
/// backend was built with.
#[async_trait::async_trait]
pub trait SandboxRuntime: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> RuntimeKind;

    /// Creates `id` and returns once it is ready. On error nothing is left behind.
    async fn create(&self, id: SandboxId, spec: SandboxSpec) -> Result<Created, RuntimeError>;

    /// Stops `id` (SIGTERM, `grace`, SIGKILL) and frees all it held.
    async fn delete(&self, id: &SandboxId, grace: Duration) -> Result<Deleted, RuntimeError>;

    /// What the runtime holds now.
    async fn list(&self) -> Vec<SandboxSummary>;

    /// Every kind of sandbox it runs (container images besides processes, for one).
    fn kinds(&self) -> Vec<RuntimeKind> {
        vec![self.kind()]
    }

    /// Lets image `digest` go once no sandbox uses it (no function runs it any more);
    /// whether it went now.
    async fn drop_image(&self, _digest: &str) -> bool {
        false
    }

    /// Makes `image` ready for sandboxes to start from, pulling it if needed.
    async fn pull(&self, image: &ImageLaunch) -> Result<Pulled, RuntimeError> {
        Err(RuntimeError::Image {
            reference: image.reference.clone(),
            message: "this node does not run container images".into(),
            retryable: false,
        })
    }

    /// Stops background work and, if `delete_all`, deletes every sandbox.
    async fn shutdown(&self, delete_all: bool, grace: Duration);
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
