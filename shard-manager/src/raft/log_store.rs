//! The raft log, vote and committed index in redb, with group commit. `append` only
//! queues the entries (serialized) and returns; a flusher thread writes everything queued
//! in one durable redb transaction (one fsync) and only then tells openraft the entries
//! are flushed, so under concurrent writes many entries share one transaction and one
//! fsync, and an entry openraft was told is flushed survives SIGKILL. Reads, truncation
//! and purging first wait until the queue is written. The vote commits durably at once.
//! The committed index goes through the same queue, so on disk it never runs ahead of the
//! entries it covers.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
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

/// Entries appended and not yet written, with their callbacks.
#[derive(Default)]
struct Queue {
    entries: Vec<(u64, Vec<u8>)>,
    callbacks: Vec<LogFlushed<TypeConfig>>,
    /// The committed index to save with the entries queued before it (never ahead of them
    /// on disk: a committed index past the log's end would stop the replica's restart).
    committed: Option<Vec<u8>>,
    /// A batch taken by the flusher and being written.
    writing: bool,
}

/// The queue and the flusher's signals.
#[derive(Default)]
struct Pending {
    queue: Mutex<Queue>,
    /// Something was queued.
    wake: Condvar,
    /// A batch was written.
    written: Condvar,
}

/// The log store. Clones share the database and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Pending>,
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(LOGS).map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        let pending = Arc::new(Pending::default());
        let (weak, db_for_flusher) = (Arc::downgrade(&pending), db.clone());
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(weak, db_for_flusher))
            .map_err(|e| format!("starting the log flusher: {e}"))?;
        Ok(Self { db, pending })
    }

    /// Waits until every queued entry is written.
    fn drain(&self) {
        let mut queue = self.pending.queue.lock().expect("not poisoned");
        while queue.writing || !queue.entries.is_empty() || queue.committed.is_some() {
            self.pending.wake.notify_one();
            queue = self.pending.written.wait(queue).expect("not poisoned");
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let tx = self.db.begin_read().map_err(any)?;
        let table = tx.open_table(META).map_err(any)?;
        match table.get(key).map_err(any)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value()).map_err(any)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T, durability: Durability) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(any)?;
        let mut tx = self.db.begin_write().map_err(any)?;
        tx.set_durability(durability).map_err(any)?;
        tx.open_table(META).map_err(any)?.insert(key, bytes.as_slice()).map_err(any)?;
        tx.commit().map_err(any)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, AnyError> {
        self.drain();
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
        self.drain();
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
        self.drain();
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
        self.write_meta("vote", vote, Durability::Immediate).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta("vote").map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(any(e)))?;
        let mut queue = self.pending.queue.lock().expect("not poisoned");
        queue.committed = Some(bytes);
        self.pending.wake.notify_one();
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        self.drain();
        let committed: Option<Option<LogId<u64>>> = self.read_meta("committed").map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut serialized = Vec::new();
        for entry in entries {
            match serde_json::to_vec(&entry) {
                Ok(bytes) => serialized.push((entry.log_id.index, bytes)),
                Err(e) => {
                    callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                    return Err(StorageIOError::write_logs(any(e)).into());
                }
            }
        }
        let mut queue = self.pending.queue.lock().expect("not poisoned");
        queue.entries.extend(serialized);
        // Told once the flusher has written these entries durably.
        queue.callbacks.push(callback);
        self.pending.wake.notify_one();
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.remove(log_id.index..).map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries,
        // never a gap.
        self.write_meta("last_purged", &Some(log_id), Durability::Immediate).map_err(StorageIOError::write_logs)?;
        self.remove(..=log_id.index).map_err(|e| StorageIOError::write_logs(e).into())
    }
}

/// The flusher: whenever entries are queued, one durable transaction (one fsync) writes
/// them all, then each append is reported flushed. Ends when the last handle is gone.
fn flush_loop(pending: Weak<Pending>, db: Arc<Database>) {
    loop {
        let Some(shared) = pending.upgrade() else { return };
        let (entries, callbacks, committed) = {
            let guard = shared.queue.lock().expect("not poisoned");
            let (mut queue, _) = shared
                .wake
                .wait_timeout_while(guard, Duration::from_millis(100), |q| {
                    q.callbacks.is_empty() && q.committed.is_none()
                })
                .expect("not poisoned");
            if queue.callbacks.is_empty() && queue.committed.is_none() {
                continue;
            }
            queue.writing = true;
            (std::mem::take(&mut queue.entries), std::mem::take(&mut queue.callbacks), queue.committed.take())
        };
        let written = (|| -> Result<(), AnyError> {
            let tx = db.begin_write().map_err(any)?;
            {
                let mut table = tx.open_table(LOGS).map_err(any)?;
                for (index, bytes) in &entries {
                    table.insert(*index, bytes.as_slice()).map_err(any)?;
                }
            }
            if let Some(committed) = &committed {
                tx.open_table(META).map_err(any)?.insert("committed", committed.as_slice()).map_err(any)?;
            }
            tx.commit().map_err(any)
        })();
        if let Err(e) = &written {
            tracing::error!(error = %e, "writing raft log entries failed");
        }
        // openraft hears of the flush before anyone waiting in `drain` (a truncation)
        // goes on.
        for callback in callbacks {
            callback.log_io_completed(written.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        }
        shared.queue.lock().expect("not poisoned").writing = false;
        shared.written.notify_all();
    }
}
