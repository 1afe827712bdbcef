//! What do we store? Only what a cell cannot rebuild from its nodes: function specs, the
//! worker-node records and the data-plane records. Never sandboxes, never load, never
//! anything on the invocation path: sandboxes are rebuilt from the workers' `ListSandboxes`
//! and load from the data planes' reports after a restart.
//!
//! Two backends sit behind [`Store`]: [`RedisStore`] (a real Redis server; production and
//! CI) and [`EmbeddedStore`] (redb, used when no Redis URL is configured). [`CellStore`]
//! gives them typed records and counts every write, so tests can prove the invocation path
//! writes nothing.

mod embedded;
mod records;
mod redis_store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use self::embedded::EmbeddedStore;
pub use self::records::{DataPlaneRecord, WorkerRecord};
pub use self::redis_store::RedisStore;
use baton_model::function::FunctionSpec;

/// The kinds of record a cell keeps; each is its own keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Function specs, keyed by name.
    Functions,
    /// Worker nodes, keyed by node ID.
    Workers,
    /// Data planes, keyed by ID.
    DataPlanes,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Functions, Kind::Workers, Kind::DataPlanes];

    /// The keyspace name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Functions => "functions",
            Kind::Workers => "workers",
            Kind::DataPlanes => "data_planes",
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or was unreachable.
    #[error("redis at {url}: {source}")]
    Redis {
        /// The server (without credentials).
        url: String,
        /// Redis's error.
        source: redis::RedisError,
    },
    /// The embedded database failed.
    #[error("embedded store {path}: {message}")]
    Embedded {
        /// Its file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be decoded (written by an incompatible version?).
    #[error("stored {kind} record {key:?} is unreadable: {message}")]
    Corrupt {
        /// Keyspace.
        kind: &'static str,
        /// Key.
        key: String,
        /// Decoder's message.
        message: String,
    },
}

/// A keyspace-per-kind byte store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes `value` under `key`, replacing what was there.
    async fn put(&self, kind: Kind, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; returns whether it existed.
    async fn delete(&self, kind: Kind, key: &str) -> Result<bool, StoreError>;
    /// Every key and value of `kind`, in key order.
    async fn list(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// Typed access to a cell's records, counting writes.
#[derive(Clone)]
pub struct CellStore {
    store: Arc<dyn Store>,
    writes: Arc<AtomicU64>,
}

impl CellStore {
    /// Wraps a backend.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, writes: Arc::default() }
    }

    /// Writes (puts and deletes) made through this handle and its clones.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn count_write(&self, kind: Kind) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::STORE_WRITES, "kind" => kind.name()).increment(1);
    }

    async fn put_json<T: serde::Serialize>(&self, kind: Kind, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records always serialize");
        self.count_write(kind);
        self.store.put(kind, key, &bytes).await
    }

    async fn delete_key(&self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        self.count_write(kind);
        self.store.delete(kind, key).await
    }

    async fn list_json<T: serde::de::DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        self.store
            .list(kind)
            .await?
            .into_iter()
            .map(|(key, bytes)| {
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    kind: kind.name(),
                    key,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Stores a function spec (register or update).
    pub async fn put_function(&self, spec: &FunctionSpec) -> Result<(), StoreError> {
        self.put_json(Kind::Functions, &spec.name, spec).await
    }

    /// Removes a function; returns whether it existed.
    pub async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_key(Kind::Functions, name).await
    }

    /// Every stored function.
    pub async fn functions(&self) -> Result<Vec<FunctionSpec>, StoreError> {
        self.list_json(Kind::Functions).await
    }

    /// Stores a worker node.
    pub async fn put_worker(&self, worker: &WorkerRecord) -> Result<(), StoreError> {
        self.put_json(Kind::Workers, worker.node_id.as_str(), worker).await
    }

    /// Removes a worker node.
    pub async fn delete_worker(&self, node_id: &str) -> Result<bool, StoreError> {
        self.delete_key(Kind::Workers, node_id).await
    }

    /// Every stored worker node.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        self.list_json(Kind::Workers).await
    }

    /// Stores a data plane.
    pub async fn put_data_plane(&self, data_plane: &DataPlaneRecord) -> Result<(), StoreError> {
        self.put_json(Kind::DataPlanes, &data_plane.id, data_plane).await
    }

    /// Removes a data plane.
    pub async fn delete_data_plane(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_key(Kind::DataPlanes, id).await
    }

    /// Every stored data plane.
    pub async fn data_planes(&self) -> Result<Vec<DataPlaneRecord>, StoreError> {
        self.list_json(Kind::DataPlanes).await
    }
}
