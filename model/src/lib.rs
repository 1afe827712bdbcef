//! baton's shared vocabulary: the function spec a tenant registers and its validation, the
//! IDs of functions and cells, generations and epochs, and the `x-baton-*` header names.
//! Every other crate may use it; it uses none of them.
#![forbid(unsafe_code)]

pub mod async_policy;
pub mod cell;
pub mod function;
pub mod headers;
pub mod id;
pub mod image;
pub mod sandbox;

pub use async_policy::AsyncPolicy;
pub use cell::{CellId, Epoch, Generation};
pub use function::{FunctionResources, FunctionSpec, Runtime, Scaling, SpecError};
pub use id::FunctionId;
