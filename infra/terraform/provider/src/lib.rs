//! terraform-provider-baton: a federation's tenants, API keys, functions and cells as
//! Terraform resources, and its cells and shard map as data sources (docs/terraform.md).
#![forbid(unsafe_code)]

mod api;
mod api_key;
mod cell;
mod data;
mod function;
mod plan;
mod provider;
mod schema;
mod tenant;

pub use provider::BatonProvider;
