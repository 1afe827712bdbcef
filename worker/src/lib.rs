//! baton's worker node: sandbox runtimes (real processes in namespaces and cgroups, or
//! emulated ones for scale tests), the gRPC Worker service a cell's control plane drives,
//! and the link that registers the node and reports sandbox exits.
#![deny(unsafe_code)]

pub mod access;
pub mod cell_link;
pub mod config;
pub mod daemon;
pub mod emulated;
pub mod error;
pub mod metrics;
pub mod node;
pub mod process;
pub mod runtime;
pub mod service;
pub mod validate;

pub use baton_service::shutdown::shutdown_signal;
pub use config::WorkerConfig;
pub use daemon::{Listeners, RunningWorker, StartError, bind_and_start, start};
pub use error::RuntimeError;
pub use runtime::SandboxRuntime;
