//! What is stored of one async call: the request as the function will receive it (its
//! body apart, in the store's own key), where it stands, and its result once it has one.
//! Stored as JSON; the result's body as base64.

use serde::{Deserialize, Serialize};

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its first try, or for its next one.
    Queued,
    /// A try is running.
    Running,
    /// Ended with a 1xx–3xx answer.
    Succeeded,
    /// Ended with an answer its function's policy does not retry.
    Failed,
    /// Gave up on: in its function's dead letters.
    Dead,
}

impl State {
    /// Whether the call has ended.
    pub fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Dead)
    }
}

/// Why a call is in the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Every try the policy allows ended in an outcome it retries.
    RetriesExhausted,
    /// Older than the policy's `max_age` before it succeeded.
    MaxAgeExceeded,
    /// Its function was deleted before the call ran.
    FunctionDeleted,
}

impl DeadReason {
    /// The reason as the API and the metrics name it.
    pub fn label(self) -> &'static str {
        match self {
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::MaxAgeExceeded => "max_age_exceeded",
            DeadReason::FunctionDeleted => "function_deleted",
        }
    }
}

/// The function's answer to a call's last try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// Its HTTP status.
    pub status: u16,
    /// Its headers (end-to-end ones), in order.
    pub headers: Vec<(String, String)>,
    /// Its body, up to `async.max_result_bytes`.
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// The body was longer and was cut at `async.max_result_bytes`.
    pub truncated: bool,
}

/// One async call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Its ID (`X-Call-Id`).
    pub id: String,
    /// The tenant that made it.
    pub tenant: String,
    /// The function's name.
    pub function: String,
    /// The request's method.
    pub method: String,
    /// What follows the function's name in the path, with the query (`/resize?w=10`).
    pub path: String,
    /// The request's end-to-end headers (no `Authorization`, no `X-Baton-*`).
    pub headers: Vec<(String, String)>,
    /// Where its result is POSTed when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Where it stands.
    pub state: State,
    /// Tries started so far.
    pub attempts: u32,
    /// When it was accepted (or sent again from the dead letters), Unix ms.
    pub accepted_ms: u64,
    /// When it last changed, Unix ms.
    pub updated_ms: u64,
    /// When it ended, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Why its last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<DeadReason>,
    /// Its last try's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CallResult>,
    /// Callback tries so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub callback_attempts: u32,
    /// The callback was delivered, or given up on (see `callback_error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub callback_done: bool,
    /// Why the last callback try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_error: Option<String>,
    /// The shard-map epoch of the router that accepted it: a router whose map is older
    /// does not take a function missing from it for deleted.
    pub epoch: u64,
}

/// Who made a call and what it asks: the parts of a new call's record.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Its ID.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The function's name.
    pub function: String,
    /// The method.
    pub method: String,
    /// The rest of the path, with the query.
    pub path: String,
    /// End-to-end headers.
    pub headers: Vec<(String, String)>,
    /// Where its result is POSTed.
    pub callback: Option<String>,
}

impl CallRecord {
    /// A call just accepted (queued, no tries) at `now_ms` by a router whose map is at
    /// `epoch`.
    pub fn accepted(request: Request, now_ms: u64, epoch: u64) -> Self {
        let Request { id, tenant, function, method, path, headers, callback } = request;
        Self {
            id,
            tenant,
            function,
            method,
            path,
            headers,
            callback,
            state: State::Queued,
            attempts: 0,
            accepted_ms: now_ms,
            updated_ms: now_ms,
            ended_ms: None,
            last_error: None,
            dead_reason: None,
            result: None,
            callback_attempts: 0,
            callback_done: false,
            callback_error: None,
            epoch,
        }
    }

    /// The function's key in the shard map (`tenant/name`).
    pub fn function_key(&self) -> String {
        format!("{}/{}", self.tenant, self.function)
    }

    /// As JSON, for the store.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    /// From the store's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CallRecord {
    /// Whether it has ended and still owes its callback a try.
    pub fn owes_callback(&self) -> bool {
        self.state.is_final() && self.callback.is_some() && !self.callback_done
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let record = CallRecord {
            id: "c1".into(),
            tenant: "acme".into(),
            function: "echo".into(),
            method: "POST".into(),
            path: "/x?y=1".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            callback: Some("http://127.0.0.1:9/cb".into()),
            state: State::Dead,
            attempts: 3,
            accepted_ms: 1,
            updated_ms: 2,
            ended_ms: Some(3),
            last_error: Some("503".into()),
            dead_reason: Some(DeadReason::RetriesExhausted),
            result: Some(CallResult { status: 503, headers: vec![], body: vec![0, 255, 10], truncated: false }),
            callback_attempts: 2,
            callback_done: false,
            callback_error: Some("the receiver answered 500".into()),
            epoch: 7,
        };
        assert_eq!(CallRecord::from_json(&record.to_json()).unwrap(), record);
        assert_eq!(record.function_key(), "acme/echo");
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!((json["state"].as_str(), json["dead_reason"].as_str()), (Some("dead"), Some("retries_exhausted")));
    }
}
