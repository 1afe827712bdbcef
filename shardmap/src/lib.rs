//! The shard map: which cell owns each function, computed the same way by every router,
//! cell and shard-manager replica, with no I/O on the lookup path. See
//! `docs/shard-map.md`.

mod follow;
mod hash;
mod keys;
mod map;
mod replicas;
mod ring;

pub use baton_model::{CellId, Epoch, Generation};
pub use follow::{MapEvent, MapView, follow};

/// The metrics a process following the map exports (routers and cells).
pub use follow::CATALOG as METRICS;
pub use hash::function_hash;
pub use keys::key_hash;
pub use map::{Assignment, Cell, CellState, Change, Delta, MapError, MapSnapshot, Owner, ShardMap};
pub use replicas::{Replicas, ReplicasError};
pub use ring::{CellRing, VNODES_PER_WEIGHT};
