//! The data plane's per-function request path: which sandbox takes a request
//! ([`balancer`]), and the bounded queue with per-sandbox concurrency limits that holds
//! requests until a sandbox has a free slot ([`dispatch`]).

pub mod balancer;
pub mod dispatch;
