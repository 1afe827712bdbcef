//! The shared cell cluster harness.
pub use baton_testkit::*;
