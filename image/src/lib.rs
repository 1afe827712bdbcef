//! Container images for functions (issue 12). What is here: resolving an image reference
//! to the digest of its linux/amd64 manifest against any registry that speaks the OCI
//! distribution API ([`Resolver`]), so a function runs that digest until it is deployed
//! again; and unpacking layers into a rootfs, refusing any layer that would write outside
//! it ([`unpack`]); and a worker's cache of layers and rootfs, each image pulled once
//! however many cold starts wait for it ([`cache`]); the runtime spec a sandbox runs with
//! under runc ([`bundle`]); and small images made without a container engine ([`build`]).
#![deny(unsafe_code)]

pub mod build;
pub mod bundle;
pub mod cache;
mod resolve;
pub mod unpack;

pub use resolve::{Credentials, ResolveError, Resolved, Resolver, ResolverSettings, plain_http_allowed};
