//! Why the state refused a command: one enum, so the service maps each kind to a gRPC
//! code in one place ([`Rejection::code`]) and callers can tell a missing tenant from a
//! full one without reading the message. Refusals are never stored (only applied writes
//! are remembered by request ID); they travel from the leader to the replica that took
//! the write.

use baton_shardmap::CellId;
use serde::{Deserialize, Serialize};

/// A command the state refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The tenant does not exist.
    #[error("tenant {0} does not exist")]
    UnknownTenant(String),
    /// The tenant still has functions: delete them first.
    #[error("tenant {tenant} still has {functions} function(s); delete them first")]
    TenantHasFunctions {
        /// The tenant.
        tenant: String,
        /// How many it has.
        functions: usize,
    },
    /// The cell is not registered.
    #[error("cell {0} is not registered")]
    UnknownCell(CellId),
    /// The function does not exist.
    #[error("function {0} does not exist")]
    UnknownFunction(String),
    /// The cell does not take functions now (draining or down).
    #[error("cell {0} is not active")]
    CellNotActive(CellId),
    /// The tenant would have more functions than its limit.
    #[error("tenant {tenant} would have {would_have} functions, over its limit of {limit}")]
    OverLimit {
        /// The tenant.
        tenant: String,
        /// How many it would have.
        would_have: usize,
        /// Its limit.
        limit: usize,
    },
    /// The tenant would hold more than one of its limits allows.
    #[error("tenant {tenant} would hold {would_have} {what}, over its limit of {limit}")]
    OverTenantLimit {
        /// The tenant.
        tenant: String,
        /// Which limit, in words naming the spec fields it sums.
        what: String,
        /// How much it would hold.
        would_have: u64,
        /// Its limit.
        limit: u64,
    },
    /// The tenant may not run host executables.
    #[error(
        "executable: tenant {0} may not run host executables (the process runtime); the operator allows it per \
         tenant (`baton tenants put NAME --executables`)"
    )]
    ExecutablesNotAllowed(String),
    /// The request ID named another write.
    #[error("request ID {0} was used for another write")]
    RequestIdReused(String),
    /// A batch inside a batch.
    #[error("a batch inside a batch")]
    NestedBatch,
    /// No API key has this ID.
    #[error("key_id: no key {0}")]
    UnknownKey(String),
    /// The tenant has no credentials for the registry.
    #[error("tenant {tenant} has no credentials for registry {registry}")]
    UnknownRegistry {
        /// The tenant.
        tenant: String,
        /// The registry.
        registry: String,
    },
    /// No active cell can take a new function.
    #[error("no active cell can take the function")]
    NoActiveCell,
    /// The function runs a container image and no active cell's workers run images.
    #[error(
        "image: no active cell of this federation runs container images (their workers need root and runc; see \
         [images] in worker.example.toml)"
    )]
    NoCellRunsImages,
    /// The cell was failed over: it must register again before it takes anything.
    #[error("cell {0} was failed over; register again")]
    CellFailedOver(CellId),
    /// A home region no cell of the federation is in.
    #[error("home_region: no cell of this federation is in region {0:?}")]
    UnknownRegion(String),
}

/// How a refusal is answered, independent of the transport: the service maps each to a
/// gRPC code, the router each code to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionClass {
    /// Something named does not exist.
    NotFound,
    /// The request conflicts with what exists (an ID already used).
    AlreadyExists,
    /// A limit would be passed.
    OverLimit,
    /// The state does not allow it now (a cell that takes nothing).
    FailedPrecondition,
    /// The request itself is malformed.
    Invalid,
    /// The caller may not do this.
    Forbidden,
}

impl Rejection {
    /// Its class.
    pub fn class(&self) -> RejectionClass {
        match self {
            Rejection::UnknownTenant(_)
            | Rejection::UnknownCell(_)
            | Rejection::UnknownFunction(_)
            | Rejection::UnknownKey(_)
            | Rejection::UnknownRegistry { .. } => RejectionClass::NotFound,
            Rejection::RequestIdReused(_) => RejectionClass::AlreadyExists,
            Rejection::OverLimit { .. } | Rejection::OverTenantLimit { .. } => RejectionClass::OverLimit,
            Rejection::ExecutablesNotAllowed(_) => RejectionClass::Forbidden,
            Rejection::CellNotActive(_)
            | Rejection::NoActiveCell
            | Rejection::NoCellRunsImages
            | Rejection::CellFailedOver(_)
            | Rejection::TenantHasFunctions { .. } => RejectionClass::FailedPrecondition,
            Rejection::NestedBatch | Rejection::UnknownRegion(_) => RejectionClass::Invalid,
        }
    }
}
