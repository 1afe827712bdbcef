//! The cell's control plane: function registry, worker membership and health, autoscaling
//! and placement, routing distribution to data planes, and recovery after a restart. The
//! decisions live in [`state`] (no I/O); this module carries out its commands.

mod runtime;
mod sandboxes;
mod service;
pub mod state;

pub use runtime::{ControlPlane, ControlPlaneSettings};

pub use state::{CellState, Command, ListedSandbox, Scale, StateConfig};
