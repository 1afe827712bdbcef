//! The request IDs of recent writes and what they did: a write retried with its ID (after
//! its answer was lost, say to a leader that died between commit and reply) is answered
//! as the first attempt was, and not applied twice. Replicated with the state, so every
//! replica and every later leader knows the same IDs; bounded, oldest first out. Each ID
//! is kept with the write's subject (what it is about: which function, cell, tenant), so
//! an ID sent again on another write is refused rather than answered for the first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Outcome;

/// Most request IDs kept. At a thousand identified writes a second this is over a minute
/// and a half of history; a retry comes within seconds. Part of what `apply` does: every
/// replica of a federation must run with the same value.
pub const REQUESTS_KEPT: usize = 100_000;

/// An applied write, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// XXH3-64 of the write's subject ([`super::Command::subject`]).
    pub subject: u64,
    /// What it did.
    pub outcome: Outcome,
}

/// Applied writes by request ID, in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLog {
    order: VecDeque<Arc<str>>,
    writes: HashMap<Arc<str>, Remembered>,
}

impl RequestLog {
    /// The write with this ID, if it was applied and is still kept.
    pub fn get(&self, request: &str) -> Option<&Remembered> {
        self.writes.get(request)
    }

    /// Records an applied write; the oldest ID goes once more than [`REQUESTS_KEPT`] are kept.
    pub fn record(&mut self, request: &str, write: Remembered) {
        let id: Arc<str> = Arc::from(request);
        if self.writes.insert(id.clone(), write).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REQUESTS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.writes.remove(&oldest);
            }
        }
    }

    /// IDs kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Serialize for RequestLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.order.iter().map(|id| (id, &self.writes[id])))
    }
}

impl<'de> Deserialize<'de> for RequestLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut log = Self::default();
        for (id, write) in Vec::<(String, Remembered)>::deserialize(deserializer)? {
            log.record(&id, write);
        }
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(epoch: u64) -> Remembered {
        Remembered {
            subject: epoch,
            outcome: Outcome::Applied { epoch: baton_model::Epoch(epoch), generation: None, created: false },
        }
    }

    #[test]
    fn keeps_the_newest_ids_in_order_and_reads_back_the_same() {
        let mut log = RequestLog::default();
        for i in 0..REQUESTS_KEPT as u64 + 2 {
            log.record(&format!("r{i}"), applied(i));
        }
        assert_eq!(log.len(), REQUESTS_KEPT);
        assert_eq!(log.get("r0"), None, "the oldest went first");
        assert_eq!(log.get("r1"), None);
        assert_eq!(log.get("r2"), Some(&applied(2)));
        let last = format!("r{}", REQUESTS_KEPT + 1);
        assert_eq!(log.get(&last), Some(&applied(REQUESTS_KEPT as u64 + 1)));
        let json = serde_json::to_string(&log).unwrap();
        assert_eq!(serde_json::from_str::<RequestLog>(&json).unwrap(), log);
    }
}
