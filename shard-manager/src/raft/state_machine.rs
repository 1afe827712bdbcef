//! The state machine: the federation state in memory, its snapshots in redb. After a
//! restart it starts from the last snapshot and openraft re-applies the committed log
//! after it (the log store keeps the committed index).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use baton_model::Epoch;
use baton_shardmap::{Delta, MapSnapshot};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError,
    StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast, watch};

use super::{StorageError, TypeConfig};
use crate::state::{FederationState, Outcome};

/// `current`: the latest snapshot (meta and data), as JSON.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

fn any(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

/// What a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: FederationState,
}

/// A snapshot as stored.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// Deltas a follower may fall behind by before it must take a fresh snapshot.
const FEED_CAPACITY: usize = 4096;

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The state machine. Clones share the state; [`StateMachine::state`] reads it and
/// [`StateMachine::follow`] follows its shard map.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// Every applied command's shard-map delta, in epoch order.
    feed: broadcast::Sender<Delta>,
    /// The applied epoch, for readers that need a state at least so new.
    epoch: Arc<watch::Sender<Epoch>>,
}

impl StateMachine {
    pub(super) fn new(db: Arc<Database>) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(SNAPSHOT).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        let sm = Self {
            db,
            applied: Arc::default(),
            feed: broadcast::channel(FEED_CAPACITY).0,
            epoch: Arc::new(watch::channel(Epoch(0)).0),
        };
        if let Some(stored) = sm.load_snapshot().map_err(|e| format!("reading the snapshot: {e}"))? {
            let mut applied: Applied =
                serde_json::from_slice(&stored.data).map_err(|e| format!("reading the snapshot: {e}"))?;
            applied.state.recount();
            crate::metrics::state(&applied.state);
            crate::metrics::snapshot(None, stored.data.len());
            sm.epoch.send_replace(applied.state.epoch);
            *sm.applied.try_write().expect("not shared yet") = applied;
        } else {
            crate::metrics::snapshot(None, 0);
        }
        Ok(sm)
    }

    /// A copy of the current federation state.
    pub async fn state(&self) -> FederationState {
        self.applied.read().await.state.clone()
    }

    /// Reads the federation state in place (no copy).
    pub async fn read<T>(&self, f: impl FnOnce(&FederationState) -> T) -> T {
        f(&self.applied.read().await.state)
    }

    /// Waits until the state has reached `epoch`, for at most `within`; whether it has.
    pub async fn wait_for_epoch(&self, epoch: Epoch, within: Duration) -> bool {
        let mut applied = self.epoch.subscribe();
        tokio::time::timeout(within, applied.wait_for(|e| *e >= epoch)).await.is_ok_and(|r| r.is_ok())
    }

    /// The shard map now and every delta after it, taken together so none is missed or
    /// doubled. A receiver that lags (`RecvError::Lagged`) or meets a gap (after a
    /// snapshot was installed) must call this again.
    pub async fn follow(&self) -> (MapSnapshot, broadcast::Receiver<Delta>) {
        let applied = self.applied.read().await;
        (applied.state.map_snapshot(), self.feed.subscribe())
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, AnyError> {
        let tx = self.db.begin_read().map_err(any)?;
        let table = tx.open_table(SNAPSHOT).map_err(any)?;
        match table.get("current").map_err(any)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value()).map_err(any)?)),
            None => Ok(None),
        }
    }

    fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(stored).map_err(any)?;
        let tx = self.db.begin_write().map_err(any)?;
        tx.open_table(SNAPSHOT).map_err(any)?.insert("current", bytes.as_slice()).map_err(any)?;
        tx.commit().map_err(any)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self.applied.read().await.clone();
        let data = serde_json::to_vec(&applied).map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        crate::metrics::snapshot(Some("built"), stored.data.len());
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => {
                    Outcome::Applied { epoch: applied.state.epoch, generation: None, created: false }
                }
                EntryPayload::Normal(command) => {
                    let (outcome, deltas) = applied.state.apply_entry(command);
                    let applied_at = unix_micros();
                    for mut delta in deltas {
                        // Stamped on the way out, for followers to measure propagation;
                        // the replicated state never sees the clock.
                        delta.applied_unix_micros = applied_at;
                        // No follower is fine.
                        let _ = self.feed.send(delta);
                    }
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Applied { epoch: applied.state.epoch, generation: None, created: false }
                }
            };
            outcomes.push(outcome);
        }
        let epoch = applied.state.epoch;
        crate::metrics::state(&applied.state);
        drop(applied);
        self.epoch.send_if_modified(|e| std::mem::replace(e, epoch) != epoch);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut incoming: Applied =
            serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        incoming.state.recount();
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        crate::metrics::snapshot(Some("installed"), stored.data.len());
        let epoch = incoming.state.epoch;
        crate::metrics::state(&incoming.state);
        *self.applied.write().await = incoming;
        self.epoch.send_replace(epoch);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self.load_snapshot().map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
