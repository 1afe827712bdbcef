//! The scaffolding every baton process shares: layered configuration, logging, the admin
//! HTTP endpoints (`/metrics`, `/healthz`, `/readyz`) and graceful shutdown.
#![deny(unsafe_code)]

pub mod admin;
pub mod catalog;
pub mod config;
pub mod framing;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod logging;
pub mod shutdown;
pub mod spans;
pub mod throttle;
pub mod tls;

/// Every process linking this crate allocates with mimalloc when built for musl (the
/// static release): musl's own allocator serializes threads and cost the warm path 17%.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use admin::{AdminServer, Readiness};
pub use config::{ConfigError, load_config};
pub use listen::{BindError, bind};
pub use logging::{LogFormat, LoggingConfig};
pub use spans::{Span, Spans, TracesConfig};
pub use throttle::Throttle;
