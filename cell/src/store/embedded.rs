//! The embedded backend, used when no Redis URL is configured: a redb database file with
//! one table per kind.
//!
//! What it guarantees across a restart: every `put` or `delete` that returned `Ok` was
//! committed with redb's immediate durability (fsync before return), so it survives the
//! process being killed with SIGKILL — and a machine crash, as far as the disk honours
//! fsync. A write interrupted before it returned is either wholly there or wholly absent.
//! One process at a time may open the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Kind, Store, StoreError};

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(kind.name())
}

/// A cell's records in a local redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating) the database at `path`, making its folder if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |message: String| StoreError::Embedded { path: path.display().to_string(), message };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(format!("creating its folder: {e}")))?;
        }
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        // Create every table up front so reads never meet a missing one.
        let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
        for kind in Kind::ALL {
            tx.open_table(table(kind)).map_err(|e| err(e.to_string()))?;
        }
        tx.commit().map_err(|e| err(e.to_string()))?;
        Ok(Self { db: Arc::new(db), path: path.to_path_buf() })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Embedded { path: self.path.display().to_string(), message: e.to_string() }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| self.err(e))?.map_err(|e| self.err(e))
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn put(&self, kind: Kind, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            tx.open_table(table(kind))
                .map_err(|e| e.to_string())?
                .insert(key.as_str(), value.as_slice())
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())
        })
        .await
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            let existed = tx
                .open_table(table(kind))
                .map_err(|e| e.to_string())?
                .remove(key.as_str())
                .map_err(|e| e.to_string())?
                .is_some();
            tx.commit().map_err(|e| e.to_string())?;
            Ok(existed)
        })
        .await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let t = tx.open_table(table(kind)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }
}
