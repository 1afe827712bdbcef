//! Cells and the numbers that order the federation's changes.

use serde::{Deserialize, Serialize};

/// A cell's ID, as it registers with the shard manager.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CellId(pub String);

impl CellId {
    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CellId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A function's ownership generation: bumped (through raft) on every change of its owning
/// cell, before any cell is told; a cell serves a function only at the generation it was
/// given (fencing). Sent between processes as a plain integer (`X-Baton-Generation`, the
/// gRPC messages, the map's JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(pub u64);

/// The federation state's epoch: bumped on every committed change of the shard map, so a
/// follower applies deltas in order and a read can ask for "at least this epoch". Sent
/// between processes as a plain integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

macro_rules! counter {
    ($name:ident) => {
        impl $name {
            /// The one after this.
            pub fn next(self) -> Self {
                Self(self.0 + 1)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(n: u64) -> Self {
                Self(n)
            }
        }

        impl From<$name> for u64 {
            fn from(n: $name) -> u64 {
                n.0
            }
        }
    };
}

counter!(Generation);
counter!(Epoch);
