//! A Dirigent-style cell: the per-function autoscaler (Knative KPA semantics), the placer, and the persistence of the few records a cell keeps
//! (functions, worker nodes, data planes). The control-plane service, the data plane and the
//! `baton-cell` binary build on these.
#![deny(unsafe_code)]

pub mod access;
pub mod autoscaler;
pub mod config;
pub mod control_plane;
pub mod daemon;
pub mod data_plane;
pub mod federation;
pub mod metrics;
pub mod placer;
pub mod routing;
pub mod store;
