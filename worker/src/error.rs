//! The worker's error type, classified once into a gRPC status and a metric label.

use baton_proto::SandboxId;

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A request field is wrong; nothing was created.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Dotted path of the field, as in the `.proto`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A sandbox with this ID exists already on the node. Mapped to `INVALID_ARGUMENT`
    /// naming `sandbox_id`, as the worker's contract asks of duplicate IDs.
    #[error("sandbox_id: sandbox {0} already exists on this node; delete it first or pick another ID")]
    AlreadyExists(SandboxId),
    /// No sandbox with this ID.
    #[error("sandbox {0} does not exist on this node")]
    NotFound(SandboxId),
    /// The node has no room (capacity, sandbox count or free ports).
    #[error("{0}")]
    Exhausted(String),
    /// The executable is missing or not executable on this node.
    #[error("spec.executable {path}: {reason}")]
    Executable {
        /// The path asked for.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The sandbox did not answer its readiness probe in time; it was removed.
    #[error(
        "sandbox {id} did not answer GET {path} on {endpoint} within {timeout_ms} ms; it was removed (see its stderr log for why)"
    )]
    ReadinessTimeout {
        /// Which sandbox.
        id: SandboxId,
        /// Probe path.
        path: String,
        /// Where it was probed.
        endpoint: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The sandbox's process ended before it became ready; it was removed.
    #[error("sandbox {id} exited before it became ready ({how}); last stderr: {stderr_tail:?}")]
    ExitedDuringStartup {
        /// Which sandbox.
        id: SandboxId,
        /// Exit status or signal, in words.
        how: String,
        /// The end of its stderr log.
        stderr_tail: String,
    },
    /// The sandbox's image could not be made ready or run.
    #[error("image {reference}: {message}")]
    Image {
        /// The image, as the function names it.
        reference: String,
        /// What went wrong.
        message: String,
        /// Whether trying again later may work (a registry down, a full disk).
        retryable: bool,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Os {
        /// What was being done, on what.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Shorthand for [`RuntimeError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), message: message.into() }
    }

    /// Shorthand for [`RuntimeError::Os`].
    pub fn os(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Os { context: context.into(), source }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid",
            Self::AlreadyExists(_) => "exists",
            Self::NotFound(_) => "not_found",
            Self::Exhausted(_) => "exhausted",
            Self::Executable { .. } => "executable",
            Self::ReadinessTimeout { .. } => "readiness_timeout",
            Self::ExitedDuringStartup { .. } => "exited",
            Self::Image { .. } => "image",
            Self::Os { .. } => "os_error",
        }
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(err: RuntimeError) -> Self {
        let message = err.to_string();
        match err {
            RuntimeError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            RuntimeError::AlreadyExists(_) => tonic::Status::invalid_argument(message),
            RuntimeError::NotFound(_) => tonic::Status::not_found(message),
            RuntimeError::Exhausted(_) => tonic::Status::resource_exhausted(message),
            RuntimeError::Executable { .. } => tonic::Status::failed_precondition(message),
            RuntimeError::ReadinessTimeout { .. } => tonic::Status::deadline_exceeded(message),
            RuntimeError::ExitedDuringStartup { .. } => tonic::Status::aborted(message),
            RuntimeError::Image { retryable: true, .. } => tonic::Status::unavailable(message),
            RuntimeError::Image { retryable: false, .. } => tonic::Status::failed_precondition(message),
            RuntimeError::Os { .. } => tonic::Status::internal(message),
        }
    }
}
