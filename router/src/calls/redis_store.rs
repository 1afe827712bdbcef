//! The queue in Redis, shared by every router configured with the same URL: any router
//! takes any call, and the calls of a router that died are taken by the others once their
//! leases lapse.
//!
//! Keys, all under one hash tag (`async.redis_prefix`, `baton-async` by default) so a
//! script's keys share a slot:
//!
//! - `{baton-async}:stream`: a stream with one entry per queued call (field `id`); the
//!   routers read it as consumer group `delivery`, each router its own consumer. An entry
//!   pending for a consumer is that call's lease; its idle time is the lease's age, reset
//!   by [`CallStore::extend`] (`XCLAIM … JUSTID` to itself) and taken over by another
//!   router's `XAUTOCLAIM` once it passes `async.lease`.
//! - `{baton-async}:delayed`: a sorted set of calls waiting for a retry, by due time.
//! - `{baton-async}:call:{id}`: the record (JSON); `{baton-async}:body:{id}`: the body.
//! - `{baton-async}:dead:{tenant}/{function}`: a sorted set of a function's dead letters.
//!
//! Every write under a lease is a script that first checks, with `XPENDING`, that the
//! entry is still pending for this consumer: that is the fence.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::record::CallRecord;
use super::store::{CallStore, Depth, Next, StoreError, Taken, redriven};

const GROUP: &str = "delivery";
/// How long a read waits for a call when none is due.
const BLOCK: Duration = Duration::from_millis(200);

/// Writes `ARGV[3]` as the record of the call whose entry is `ARGV[2]`, if the entry is
/// still pending for consumer `ARGV[1]`, then: `ARGV[4]` = `update` keeps the lease (its
/// idle time reset); `done` acks and deletes the entry, expires the record after `ARGV[5]`
/// seconds and deletes the body; `dead` does the same but keeps the body as long and adds
/// the call (`ARGV[6]`) to the function's dead letters (`KEYS[4]`) at `ARGV[7]`;
/// `later` acks and deletes the entry and puts the call in the delayed set at `ARGV[5]`, or
/// straight back in the stream when that is not after `ARGV[7]` (now: a callback owed).
/// KEYS: stream, record, body, dead letters, delayed. Answers 1, or 0 if the lease was lost.
const SETTLE: &str = r#"
local p = redis.call('XPENDING', KEYS[1], 'delivery', ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[4] == 'update' then
  redis.call('XCLAIM', KEYS[1], 'delivery', ARGV[1], 0, ARGV[2], 'JUSTID')
  return 1
end
redis.call('XACK', KEYS[1], 'delivery', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == 'done' then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('DEL', KEYS[3])
elseif ARGV[4] == 'dead' then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
elseif tonumber(ARGV[5]) <= tonumber(ARGV[7]) then
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[6])
else
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
end
return 1
"#;

/// Resets the idle time of each entry in ARGV[2..] still pending for consumer ARGV[1];
/// answers the others. KEYS: stream.
const EXTEND: &str = r#"
local lost = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'delivery', ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[1] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], 'delivery', ARGV[1], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"#;

/// Moves up to ARGV[2] calls due by ARGV[1] from the delayed set back into the stream.
/// KEYS: delayed, stream.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'id', id)
end
return #due
"#;

/// Queues dead letter ARGV[1] again with record ARGV[2], if it is still one (a purge or
/// another redrive did not take it first). KEYS: dead letters, record, body, stream.
const REDRIVE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PERSIST', KEYS[3])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[1])
return 1
"#;

/// The queue in a Redis server.
pub struct RedisCalls {
    /// Every command but the blocking read.
    connection: ConnectionManager,
    /// The blocking read (`XREADGROUP … BLOCK`) alone, so it never delays other commands.
    reader: ConnectionManager,
    /// This router's consumer name in the group.
    consumer: String,
    /// The keys' hash tag.
    prefix: String,
    /// How long a lease lasts without being extended.
    lease: Duration,
    url: String,
    settle: redis::Script,
    extend: redis::Script,
    promote: redis::Script,
    redrive: redis::Script,
}

impl RedisCalls {
    /// Connects to `url`, the keys under hash tag `prefix`; this router reads as consumer
    /// `consumer` (unique per running router), and a lease lapses after `lease` without
    /// an extension.
    pub async fn connect(url: &str, prefix: &str, consumer: String, lease: Duration) -> Result<Self, StoreError> {
        let shown = redact(url);
        let err = |e: redis::RedisError| StoreError::Redis(format!("{shown}: {e}"));
        let client = redis::Client::open(url).map_err(err)?;
        let config = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(1))
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(response))
        };
        let connection =
            ConnectionManager::new_with_config(client.clone(), config(Duration::from_secs(5))).await.map_err(err)?;
        let reader =
            ConnectionManager::new_with_config(client, config(BLOCK + Duration::from_secs(5))).await.map_err(err)?;
        let calls = Self {
            connection,
            reader,
            consumer,
            prefix: prefix.to_string(),
            lease,
            url: shown,
            settle: redis::Script::new(SETTLE),
            extend: redis::Script::new(EXTEND),
            promote: redis::Script::new(PROMOTE),
            redrive: redis::Script::new(REDRIVE),
        };
        calls.create_group().await?;
        Ok(calls)
    }

    fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    fn err(&self, e: redis::RedisError) -> StoreError {
        StoreError::Redis(format!("{}: {e}", self.url))
    }

    /// Creates the stream and its group if missing (at start, and after a Redis that lost
    /// its data came back).
    async fn create_group(&self) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key("stream"))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(self.err(e)),
            _ => Ok(()),
        }
    }

    /// The records and bodies of `ids` (entry, call), dropping entries whose call is gone
    /// (purged): those are acknowledged and deleted.
    async fn load(&self, entries: Vec<(String, String)>) -> Result<Vec<Taken>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.connection.clone();
        let mut pipe = redis::pipe();
        for (_, id) in &entries {
            pipe.cmd("GET").arg(self.key(&format!("call:{id}"))).cmd("GET").arg(self.key(&format!("body:{id}")));
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut con).await.map_err(|e| self.err(e))?;
        let mut taken = Vec::with_capacity(entries.len());
        let mut orphans = Vec::new();
        for ((entry, id), pair) in entries.into_iter().zip(values.chunks(2)) {
            match (&pair[0], &pair[1]) {
                (Some(record), Some(body)) => {
                    let record = CallRecord::from_json(record)
                        .map_err(|e| StoreError::Corrupt { id: id.clone(), message: e.to_string() })?;
                    taken.push(Taken { lease: entry, record, body: Bytes::copy_from_slice(body) });
                }
                _ => orphans.push(entry),
            }
        }
        if !orphans.is_empty() {
            let stream = self.key("stream");
            let mut pipe = redis::pipe();
            pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&orphans).cmd("XDEL").arg(&stream).arg(&orphans);
            pipe.query_async::<()>(&mut con).await.map_err(|e| self.err(e))?;
        }
        Ok(taken)
    }
}

fn call_id(entry: &redis::streams::StreamId) -> Option<String> {
    match entry.map.get("id")? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// `url` without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[async_trait::async_trait]
impl CallStore for RedisCalls {
    async fn accept(&self, record: &CallRecord, body: &Bytes) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let id = &record.id;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(&format!("call:{id}")))
            .arg(record.to_json())
            .ignore()
            .cmd("SET")
            .arg(self.key(&format!("body:{id}")))
            .arg(body.as_ref())
            .ignore()
            .cmd("XADD")
            .arg(self.key("stream"))
            .arg("*")
            .arg("id")
            .arg(id)
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| self.err(e))
    }

    async fn take(&self, max: usize) -> Result<Vec<Taken>, StoreError> {
        let stream = self.key("stream");
        let mut con = self.connection.clone();
        // Calls whose router died (their lease lapsed) first.
        let claimed: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut con)
            .await;
        let claimed = match claimed {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group().await?;
                return Ok(Vec::new());
            }
            other => other.map_err(|e| self.err(e))?,
        };
        let mut entries: Vec<(String, String)> =
            claimed.claimed.iter().filter_map(|e| Some((e.id.clone(), call_id(e)?))).collect();
        if entries.len() < max {
            let mut reader = self.reader.clone();
            let read: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(max - entries.len())
                .arg("BLOCK")
                .arg(if entries.is_empty() { BLOCK.as_millis() as u64 } else { 1 })
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut reader)
                .await;
            let read = match read {
                Err(e) if e.code() == Some("NOGROUP") => {
                    self.create_group().await?;
                    None
                }
                other => other.map_err(|e| self.err(e))?,
            };
            for stream in read.map(|r| r.keys).unwrap_or_default() {
                entries.extend(stream.ids.iter().filter_map(|e| Some((e.id.clone(), call_id(e)?))));
            }
        }
        self.load(entries).await
    }

    async fn extend(&self, leases: &[String]) -> Result<Vec<String>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.connection.clone();
        let mut invocation = self.extend.key(self.key("stream"));
        invocation.arg(&self.consumer);
        for lease in leases {
            invocation.arg(lease);
        }
        invocation.invoke_async(&mut con).await.map_err(|e| self.err(e))
    }

    async fn update(&self, lease: &str, record: &CallRecord) -> Result<bool, StoreError> {
        self.run_settle(lease, record, "update", 0).await
    }

    async fn settle(&self, lease: &str, record: &CallRecord, next: Next) -> Result<bool, StoreError> {
        match next {
            Next::Done { keep_secs } => self.run_settle(lease, record, "done", keep_secs.max(1)).await,
            Next::Dead { keep_secs } => self.run_settle(lease, record, "dead", keep_secs.max(1)).await,
            Next::Later { due_ms } => self.run_settle(lease, record, "later", due_ms).await,
        }
    }

    async fn promote(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut con = self.connection.clone();
        self.promote
            .key(self.key("delayed"))
            .key(self.key("stream"))
            .arg(now_ms)
            .arg(1000)
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.err(e))
    }

    async fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let mut con = self.connection.clone();
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(&format!("call:{id}")))
            .query_async(&mut con)
            .await
            .map_err(|e| self.err(e))?;
        bytes
            .map(|b| {
                CallRecord::from_json(&b).map_err(|e| StoreError::Corrupt { id: id.into(), message: e.to_string() })
            })
            .transpose()
    }

    async fn dead_letters(&self, function_key: &str, limit: usize) -> Result<Vec<(CallRecord, Bytes)>, StoreError> {
        let mut con = self.connection.clone();
        let dead = self.key(&format!("dead:{function_key}"));
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&dead)
            .arg(0)
            .arg(limit.saturating_sub(1) as i64)
            .query_async(&mut con)
            .await
            .map_err(|e| self.err(e))?;
        let mut letters = Vec::new();
        for id in ids {
            let record = self.get(&id).await?;
            let body: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.key(&format!("body:{id}")))
                .query_async(&mut con)
                .await
                .map_err(|e| self.err(e))?;
            match (record, body) {
                (Some(record), Some(body)) => letters.push((record, Bytes::from(body))),
                // Expired: its retention passed.
                _ => {
                    redis::cmd("ZREM").arg(&dead).arg(&id).query_async::<()>(&mut con).await.map_err(|e| self.err(e))?
                }
            }
        }
        Ok(letters)
    }

    async fn redrive(&self, function_key: &str, now_ms: u64) -> Result<u64, StoreError> {
        let mut con = self.connection.clone();
        let dead = self.key(&format!("dead:{function_key}"));
        let mut sent = 0;
        loop {
            let ids: Vec<String> =
                redis::cmd("ZRANGE").arg(&dead).arg(0).arg(99).query_async(&mut con).await.map_err(|e| self.err(e))?;
            if ids.is_empty() {
                return Ok(sent);
            }
            for id in ids {
                let Some(record) = self.get(&id).await? else {
                    redis::cmd("ZREM")
                        .arg(&dead)
                        .arg(&id)
                        .query_async::<()>(&mut con)
                        .await
                        .map_err(|e| self.err(e))?;
                    continue;
                };
                let record = redriven(record, now_ms);
                let queued: u64 = self
                    .redrive
                    .key(&dead)
                    .key(self.key(&format!("call:{id}")))
                    .key(self.key(&format!("body:{id}")))
                    .key(self.key("stream"))
                    .arg(&id)
                    .arg(record.to_json())
                    .invoke_async(&mut con)
                    .await
                    .map_err(|e| self.err(e))?;
                sent += queued;
            }
        }
    }

    async fn purge(&self, function_key: &str) -> Result<u64, StoreError> {
        let mut con = self.connection.clone();
        let dead = self.key(&format!("dead:{function_key}"));
        let mut purged = 0;
        loop {
            let ids: Vec<String> =
                redis::cmd("ZRANGE").arg(&dead).arg(0).arg(99).query_async(&mut con).await.map_err(|e| self.err(e))?;
            if ids.is_empty() {
                return Ok(purged);
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for id in &ids {
                pipe.cmd("ZREM").arg(&dead).arg(id).ignore();
                pipe.cmd("DEL").arg(self.key(&format!("call:{id}"))).arg(self.key(&format!("body:{id}"))).ignore();
            }
            pipe.query_async::<()>(&mut con).await.map_err(|e| self.err(e))?;
            purged += ids.len() as u64;
        }
    }

    async fn depth(&self) -> Result<Depth, StoreError> {
        let mut con = self.connection.clone();
        let (pending, delayed, first): (u64, u64, Vec<redis::streams::StreamId>) = redis::pipe()
            .cmd("XLEN")
            .arg(self.key("stream"))
            .cmd("ZCARD")
            .arg(self.key("delayed"))
            .cmd("XRANGE")
            .arg(self.key("stream"))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async::<(u64, u64, redis::streams::StreamRangeReply)>(&mut con)
            .await
            .map(|(p, d, r)| (p, d, r.ids))
            .map_err(|e| self.err(e))?;
        let oldest_ms = first.first().and_then(|e| e.id.split('-').next()?.parse().ok()).unwrap_or(0);
        Ok(Depth { pending: pending + delayed, delayed, oldest_ms })
    }
}

impl RedisCalls {
    async fn run_settle(&self, lease: &str, record: &CallRecord, mode: &str, arg: u64) -> Result<bool, StoreError> {
        let mut con = self.connection.clone();
        let id = &record.id;
        let written: u64 = self
            .settle
            .key(self.key("stream"))
            .key(self.key(&format!("call:{id}")))
            .key(self.key(&format!("body:{id}")))
            .key(self.key(&format!("dead:{}", record.function_key())))
            .key(self.key("delayed"))
            .arg(&self.consumer)
            .arg(lease)
            .arg(record.to_json())
            .arg(mode)
            .arg(arg)
            .arg(id)
            .arg(super::now_ms())
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.err(e))?;
        Ok(written == 1)
    }
}
