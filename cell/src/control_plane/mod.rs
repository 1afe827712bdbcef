//! The cell's control plane: function registry, worker membership and health, autoscaling
//! and placement, routing distribution to data planes, and recovery after a restart. The
//! decisions live in [`state`] (no I/O); this module carries out its commands.

mod calls;
mod credentials;
mod functions;
mod runtime;
mod sandboxes;
mod service;
pub mod state;

pub use credentials::{CredentialSource, RegistryLogin};
pub use functions::FunctionError;
pub use runtime::{ControlPlane, ControlPlaneSettings};

pub use state::{Command, ControlPlaneState, ListedSandbox, Scale, StateConfig};
