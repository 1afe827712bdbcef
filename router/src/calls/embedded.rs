//! The queue in a redb file, when no Redis is configured (`baton up`'s default): one
//! router's own queue. Every accepted call is committed with redb's immediate durability
//! (fsync before the `202`), so it survives the router being killed; the calls of a router
//! that is down wait until it is back (no other router can take them), which is the
//! embedded store's limit (docs/async.md).
//!
//! Leases live in memory: one process holds the file, so a lease lapses only when that
//! process dies, and then every call it was running is queued again when it restarts.
//!
//! Tables: `calls` (ID → record JSON), `bodies` (ID → body), `queue` ((due ms, ID)),
//! `dead` ((function key, ms, ID)), `expires` (ID → ms) with its index `expiry` ((ms, ID)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use super::record::CallRecord;
use super::store::{CallStore, Depth, Next, StoreError, Taken, redriven};

const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
const QUEUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("queue");
const DEAD: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("dead");
const EXPIRES: TableDefinition<&str, u64> = TableDefinition::new("expires");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// How long a take waits for a call when none is due.
const WAIT: Duration = Duration::from_millis(200);

/// The queue in a local redb file.
#[derive(Clone)]
pub struct EmbeddedCalls {
    db: Arc<Database>,
    path: PathBuf,
    /// Calls leased now: ID → the due time of their queue entry.
    leased: Arc<Mutex<HashMap<String, u64>>>,
    /// Woken when a call is queued.
    queued: Arc<Notify>,
}

type Failure = String;

impl EmbeddedCalls {
    /// Opens (creating) the queue at `path`, making its folder if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |message: String| StoreError::Embedded { path: path.display().to_string(), message };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(format!("creating its folder: {e}")))?;
        }
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            tx.open_table(CALLS).map_err(|e| err(e.to_string()))?;
            tx.open_table(BODIES).map_err(|e| err(e.to_string()))?;
            tx.open_table(QUEUE).map_err(|e| err(e.to_string()))?;
            tx.open_table(DEAD).map_err(|e| err(e.to_string()))?;
            tx.open_table(EXPIRES).map_err(|e| err(e.to_string()))?;
            tx.open_table(EXPIRY).map_err(|e| err(e.to_string()))?;
        }
        tx.commit().map_err(|e| err(e.to_string()))?;
        Ok(Self { db: Arc::new(db), path: path.to_path_buf(), leased: Arc::default(), queued: Arc::new(Notify::new()) })
    }

    fn err(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::Embedded { path: self.path.display().to_string(), message: message.to_string() }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| self.err(e))?.map_err(|e| self.err(e))
    }

    /// One write transaction running `f`, committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            let value = f(&tx).map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            Ok(value)
        })
        .await
    }
}

/// Sets `id` to expire at `at_ms`.
fn expire(tx: &WriteTransaction, id: &str, at_ms: u64) -> Result<(), redb::Error> {
    let mut expires = tx.open_table(EXPIRES)?;
    let mut expiry = tx.open_table(EXPIRY)?;
    if let Some(old) = expires.insert(id, at_ms)? {
        expiry.remove((old.value(), id))?;
    }
    expiry.insert((at_ms, id), ())?;
    Ok(())
}

/// Keeps `id` for good (it is queued again).
fn persist(tx: &WriteTransaction, id: &str) -> Result<(), redb::Error> {
    let mut expires = tx.open_table(EXPIRES)?;
    if let Some(old) = expires.remove(id)? {
        tx.open_table(EXPIRY)?.remove((old.value(), id))?;
    }
    Ok(())
}

fn decode(id: &str, bytes: &[u8]) -> Result<CallRecord, String> {
    CallRecord::from_json(bytes).map_err(|e| format!("the stored call {id} is unreadable: {e}"))
}

#[async_trait::async_trait]
impl CallStore for EmbeddedCalls {
    async fn accept(&self, record: &CallRecord, body: &Bytes) -> Result<(), StoreError> {
        let (record, body) = (record.clone(), body.clone());
        self.write(move |tx| {
            tx.open_table(CALLS)?.insert(record.id.as_str(), record.to_json().as_slice())?;
            tx.open_table(BODIES)?.insert(record.id.as_str(), body.as_ref())?;
            tx.open_table(QUEUE)?.insert((record.accepted_ms, record.id.as_str()), ())?;
            Ok(())
        })
        .await?;
        self.queued.notify_one();
        Ok(())
    }

    async fn take(&self, max: usize) -> Result<Vec<Taken>, StoreError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = super::now_ms();
            let busy: Vec<String> = self.leased.lock().expect("leases lock").keys().cloned().collect();
            let found = self
                .blocking(move |db| {
                    let tx = db.begin_read().map_err(|e| e.to_string())?;
                    let queue = tx.open_table(QUEUE).map_err(|e| e.to_string())?;
                    let (calls, bodies) = (
                        tx.open_table(CALLS).map_err(|e| e.to_string())?,
                        tx.open_table(BODIES).map_err(|e| e.to_string())?,
                    );
                    let mut found = Vec::new();
                    let mut next_due = None;
                    for entry in queue.iter().map_err(|e| e.to_string())? {
                        let (k, _) = entry.map_err(|e| e.to_string())?;
                        let (due, id) = k.value();
                        if due > now {
                            next_due = Some(due);
                            break;
                        }
                        if busy.iter().any(|b| b == id) {
                            continue;
                        }
                        let record = calls.get(id).map_err(|e| e.to_string())?;
                        let body = bodies.get(id).map_err(|e| e.to_string())?;
                        if let (Some(record), Some(body)) = (record, body) {
                            let record = decode(id, record.value())?;
                            found.push((
                                due,
                                Taken { lease: id.to_string(), record, body: Bytes::copy_from_slice(body.value()) },
                            ));
                        }
                        if found.len() == max {
                            break;
                        }
                    }
                    Ok((found, next_due))
                })
                .await?;
            let (found, next_due) = found;
            if !found.is_empty() {
                let mut leased = self.leased.lock().expect("leases lock");
                return Ok(found
                    .into_iter()
                    .map(|(due, taken)| {
                        leased.insert(taken.lease.clone(), due);
                        taken
                    })
                    .collect());
            }
            let now_i = tokio::time::Instant::now();
            if now_i >= deadline {
                return Ok(Vec::new());
            }
            let until_due = next_due.map_or(WAIT, |due| Duration::from_millis(due.saturating_sub(now).max(1)));
            let wait = until_due.min(deadline - now_i);
            let _ = tokio::time::timeout(wait, self.queued.notified()).await;
        }
    }

    async fn extend(&self, leases: &[String]) -> Result<Vec<String>, StoreError> {
        let leased = self.leased.lock().expect("leases lock");
        Ok(leases.iter().filter(|l| !leased.contains_key(*l)).cloned().collect())
    }

    async fn update(&self, lease: &str, record: &CallRecord) -> Result<bool, StoreError> {
        if !self.leased.lock().expect("leases lock").contains_key(lease) {
            return Ok(false);
        }
        let record = record.clone();
        self.write(move |tx| {
            tx.open_table(CALLS)?.insert(record.id.as_str(), record.to_json().as_slice())?;
            Ok(())
        })
        .await?;
        Ok(true)
    }

    async fn settle(&self, lease: &str, record: &CallRecord, next: Next) -> Result<bool, StoreError> {
        let Some(due) = self.leased.lock().expect("leases lock").get(lease).copied() else { return Ok(false) };
        let record = record.clone();
        let now = super::now_ms();
        self.write(move |tx| {
            let id = record.id.as_str();
            tx.open_table(CALLS)?.insert(id, record.to_json().as_slice())?;
            let mut queue = tx.open_table(QUEUE)?;
            queue.remove((due, id))?;
            match next {
                Next::Done { keep_secs } => {
                    tx.open_table(BODIES)?.remove(id)?;
                    expire(tx, id, now + keep_secs * 1000)?;
                }
                Next::Dead { keep_secs } => {
                    tx.open_table(DEAD)?.insert((record.function_key().as_str(), now, id), ())?;
                    expire(tx, id, now + keep_secs * 1000)?;
                }
                Next::Later { due_ms } => {
                    queue.insert((due_ms, id), ())?;
                }
            }
            Ok(())
        })
        .await?;
        self.leased.lock().expect("leases lock").remove(lease);
        if matches!(next, Next::Later { .. }) {
            self.queued.notify_one();
        }
        Ok(true)
    }

    /// Due retries are taken straight from the queue; this deletes what outlived its
    /// retention instead.
    async fn promote(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let mut expiry = tx.open_table(EXPIRY)?;
            let gone: Vec<(u64, String)> = expiry
                .range(..(now_ms, ""))?
                .take(1000)
                .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect::<Result<_, _>>()?;
            let (mut calls, mut bodies, mut expires) =
                (tx.open_table(CALLS)?, tx.open_table(BODIES)?, tx.open_table(EXPIRES)?);
            for (at, id) in &gone {
                expiry.remove((*at, id.as_str()))?;
                expires.remove(id.as_str())?;
                calls.remove(id.as_str())?;
                bodies.remove(id.as_str())?;
            }
            Ok(0)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let calls = tx.open_table(CALLS).map_err(|e| e.to_string())?;
            let found = calls.get(id.as_str()).map_err(|e| e.to_string())?;
            found.map(|r| decode(&id, r.value())).transpose()
        })
        .await
    }

    async fn dead_letters(&self, function_key: &str, limit: usize) -> Result<Vec<(CallRecord, Bytes)>, StoreError> {
        let key = function_key.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let dead = tx.open_table(DEAD).map_err(|e| e.to_string())?;
            let (calls, bodies) =
                (tx.open_table(CALLS).map_err(|e| e.to_string())?, tx.open_table(BODIES).map_err(|e| e.to_string())?);
            let mut letters = Vec::new();
            for entry in dead.range((key.as_str(), 0, "")..(key.as_str(), u64::MAX, "")).map_err(|e| e.to_string())? {
                let (k, _) = entry.map_err(|e| e.to_string())?;
                let id = k.value().2;
                let record = calls.get(id).map_err(|e| e.to_string())?;
                let body = bodies.get(id).map_err(|e| e.to_string())?;
                if let (Some(record), Some(body)) = (record, body) {
                    letters.push((decode(id, record.value())?, Bytes::copy_from_slice(body.value())));
                }
                if letters.len() == limit {
                    break;
                }
            }
            Ok(letters)
        })
        .await
    }

    async fn redrive(&self, function_key: &str, now_ms: u64) -> Result<u64, StoreError> {
        let key = function_key.to_string();
        let sent = self
            .write(move |tx| {
                let mut dead = tx.open_table(DEAD)?;
                let letters: Vec<(u64, String)> = dead
                    .range((key.as_str(), 0, "")..(key.as_str(), u64::MAX, ""))?
                    .map(|e| e.map(|(k, _)| (k.value().1, k.value().2.to_string())))
                    .collect::<Result<_, _>>()?;
                let (mut calls, mut queue) = (tx.open_table(CALLS)?, tx.open_table(QUEUE)?);
                let mut sent = 0;
                for (at, id) in letters {
                    dead.remove((key.as_str(), at, id.as_str()))?;
                    let Some(record) = calls.get(id.as_str())?.map(|r| CallRecord::from_json(r.value())) else {
                        continue;
                    };
                    let Ok(record) = record else { continue };
                    calls.insert(id.as_str(), redriven(record, now_ms).to_json().as_slice())?;
                    queue.insert((now_ms, id.as_str()), ())?;
                    persist(tx, &id)?;
                    sent += 1;
                }
                Ok(sent)
            })
            .await?;
        self.queued.notify_one();
        Ok(sent)
    }

    async fn purge(&self, function_key: &str) -> Result<u64, StoreError> {
        let key = function_key.to_string();
        self.write(move |tx| {
            let mut dead = tx.open_table(DEAD)?;
            let letters: Vec<(u64, String)> = dead
                .range((key.as_str(), 0, "")..(key.as_str(), u64::MAX, ""))?
                .map(|e| e.map(|(k, _)| (k.value().1, k.value().2.to_string())))
                .collect::<Result<_, _>>()?;
            let (mut calls, mut bodies) = (tx.open_table(CALLS)?, tx.open_table(BODIES)?);
            for (at, id) in &letters {
                dead.remove((key.as_str(), *at, id.as_str()))?;
                calls.remove(id.as_str())?;
                bodies.remove(id.as_str())?;
                persist(tx, id)?;
            }
            Ok(letters.len() as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<Depth, StoreError> {
        let now = super::now_ms();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let queue = tx.open_table(QUEUE).map_err(|e| e.to_string())?;
            let pending = queue.len().map_err(|e| e.to_string())?;
            let delayed = queue.range((now + 1, "")..).map_err(|e| e.to_string())?.count() as u64;
            // The queue is ordered by due time; a call's first entry is its acceptance.
            let calls = tx.open_table(CALLS).map_err(|e| e.to_string())?;
            let mut oldest_ms = 0;
            if let Some(first) = queue.first().map_err(|e| e.to_string())? {
                let id = first.0.value().1;
                if let Some(record) = calls.get(id).map_err(|e| e.to_string())? {
                    oldest_ms = decode(id, record.value())?.accepted_ms;
                }
            }
            Ok(Depth { pending, delayed, oldest_ms })
        })
        .await
    }
}
