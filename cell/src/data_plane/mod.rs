//! The data plane: the HTTP ingress ([`ingress`]) that proxies invocations to sandboxes,
//! the per-function queue with per-sandbox concurrency limits ([`dispatch`]) and balancing
//! ([`balancer`]), and the follower that keeps its routing table in step with the control
//! plane and reports load ([`follower`]).

pub mod balancer;
pub mod dispatch;
pub mod fence;
pub mod follower;
pub mod ingress;
pub mod server;
