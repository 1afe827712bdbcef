//! The raft log, vote and committed index in redb. Every write commits with redb's
//! immediate durability (fsync) before it returns, so an entry openraft was told is
//! flushed survives SIGKILL.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StorageError, TypeConfig};

/// Log entries by index, as JSON.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `vote`, `committed` and `last_purged`, as JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

fn any(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

/// The log store. Clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(LOGS).map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let tx = self.db.begin_read().map_err(any)?;
        let table = tx.open_table(META).map_err(any)?;
        match table.get(key).map_err(any)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value()).map_err(any)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(any)?;
        let tx = self.db.begin_write().map_err(any)?;
        tx.open_table(META).map_err(any)?.insert(key, bytes.as_slice()).map_err(any)?;
        tx.commit().map_err(any)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, AnyError> {
        let tx = self.db.begin_read().map_err(any)?;
        let table = tx.open_table(LOGS).map_err(any)?;
        match table.last().map_err(any)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = serde_json::from_slice(bytes.value()).map_err(any)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    /// Removes entries with index in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), AnyError> {
        let tx = self.db.begin_write().map_err(any)?;
        {
            let mut table = tx.open_table(LOGS).map_err(any)?;
            table.retain_in(range, |_, _| false).map_err(any)?;
        }
        tx.commit().map_err(any)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let tx = self.db.begin_read().map_err(any)?;
            let table = tx.open_table(LOGS).map_err(any)?;
            let mut entries = Vec::new();
            for item in table.range(range).map_err(any)? {
                let (_, bytes) = item.map_err(any)?;
                entries.push(serde_json::from_slice(bytes.value()).map_err(any)?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<u64>> =
            self.read_meta("last_purged").map_err(StorageIOError::read_logs)?.flatten();
        let last = self.last_entry_id().map_err(StorageIOError::read_logs)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_meta("vote", vote).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta("vote").map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        self.write_meta("committed", &committed).map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        let committed: Option<Option<LogId<u64>>> = self.read_meta("committed").map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> Result<(), AnyError> {
            let tx = self.db.begin_write().map_err(any)?;
            {
                let mut table = tx.open_table(LOGS).map_err(any)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(any)?;
                    table.insert(entry.log_id.index, bytes.as_slice()).map_err(any)?;
                }
            }
            tx.commit().map_err(any)
        };
        let result = write();
        // Told only once the commit (and its fsync) returned.
        callback.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        result.map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.remove(log_id.index..).map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries,
        // never a gap.
        self.write_meta("last_purged", &Some(log_id)).map_err(StorageIOError::write_logs)?;
        self.remove(..=log_id.index).map_err(|e| StorageIOError::write_logs(e).into())
    }
}
