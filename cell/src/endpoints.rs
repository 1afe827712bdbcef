//! Versioned endpoint distribution from the control plane to data planes.
//!
//! The control plane keeps an [`EndpointLog`]: the current endpoints of every function and
//! a short history of changes, each stamped with the next version. A data plane keeps an
//! [`EndpointView`] and applies updates strictly in order: an update whose version is not
//! the next one is a *gap*, and the data plane asks for a snapshot instead (as it does on
//! every reconnect). Updates carry a function's whole endpoint list, so applying one is
//! idempotent and needs no merge.

use std::collections::{BTreeMap, VecDeque};

/// One function's endpoints after a change, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUpdate {
    /// Version of this change (1, 2, 3, … per control-plane lifetime).
    pub version: u64,
    /// The function.
    pub function: String,
    /// Its sandboxes now, as (sandbox ID, host:port); empty when it has none.
    pub endpoints: Vec<(String, String)>,
}

/// Every function's endpoints at a version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSnapshot {
    /// Version of the last change included.
    pub version: u64,
    /// Endpoints per function (functions with none are left out).
    pub functions: BTreeMap<String, Vec<(String, String)>>,
}

/// The control plane's side: current endpoints and recent changes.
#[derive(Debug, Clone)]
pub struct EndpointLog {
    current: EndpointSnapshot,
    recent: VecDeque<EndpointUpdate>,
    keep: usize,
}

impl EndpointLog {
    /// An empty log keeping the last `keep` changes for catch-up.
    pub fn new(keep: usize) -> Self {
        Self {
            current: EndpointSnapshot::default(),
            recent: VecDeque::new(),
            keep: keep.max(1),
        }
    }

    /// Records `function`'s new endpoint list and returns the update to send.
    pub fn set(&mut self, function: &str, endpoints: Vec<(String, String)>) -> EndpointUpdate {
        self.current.version += 1;
        if endpoints.is_empty() {
            self.current.functions.remove(function);
        } else {
            self.current
                .functions
                .insert(function.to_string(), endpoints.clone());
        }
        let update = EndpointUpdate {
            version: self.current.version,
            function: function.to_string(),
            endpoints,
        };
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        self.recent.push_back(update.clone());
        update
    }

    /// Everything now.
    pub fn snapshot(&self) -> EndpointSnapshot {
        self.current.clone()
    }

    /// The changes after `version`, if the log still holds all of them; `None` means the
    /// caller needs a snapshot.
    pub fn since(&self, version: u64) -> Option<Vec<EndpointUpdate>> {
        if version == self.current.version {
            return Some(Vec::new());
        }
        let first = self.recent.front()?.version;
        if version + 1 < first || version > self.current.version {
            return None;
        }
        Some(
            self.recent
                .iter()
                .filter(|u| u.version > version)
                .cloned()
                .collect(),
        )
    }
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The update was the next one; these are the function's endpoints now.
    Changed,
    /// Already seen (a duplicate after a reconnect); nothing changed.
    Stale,
    /// Versions were skipped: the view is behind and needs a snapshot.
    Gap {
        /// The version the view has.
        have: u64,
        /// The version that arrived.
        got: u64,
    },
}

/// A data plane's side: the endpoints it routes by.
#[derive(Debug, Clone, Default)]
pub struct EndpointView {
    current: EndpointSnapshot,
}

impl EndpointView {
    /// Replaces everything with `snapshot` (on connect and after a gap).
    pub fn reset(&mut self, snapshot: EndpointSnapshot) {
        self.current = snapshot;
    }

    /// Applies one update if it is the next version.
    pub fn apply(&mut self, update: &EndpointUpdate) -> Applied {
        if update.version <= self.current.version {
            return Applied::Stale;
        }
        if update.version != self.current.version + 1 {
            return Applied::Gap {
                have: self.current.version,
                got: update.version,
            };
        }
        self.current.version = update.version;
        if update.endpoints.is_empty() {
            self.current.functions.remove(&update.function);
        } else {
            self.current
                .functions
                .insert(update.function.clone(), update.endpoints.clone());
        }
        Applied::Changed
    }

    /// The version the view is at.
    pub fn version(&self) -> u64 {
        self.current.version
    }

    /// A function's endpoints.
    pub fn endpoints(&self, function: &str) -> &[(String, String)] {
        self.current
            .functions
            .get(function)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(i: u32) -> (String, String) {
        (format!("sb-{i}"), format!("127.0.0.1:{}", 20000 + i))
    }

    #[test]
    fn in_order_updates_apply_and_duplicates_are_stale() {
        let mut log = EndpointLog::new(16);
        let mut view = EndpointView::default();
        let u1 = log.set("echo", vec![ep(1)]);
        let u2 = log.set("echo", vec![ep(1), ep(2)]);
        assert_eq!(view.apply(&u1), Applied::Changed);
        assert_eq!(view.apply(&u2), Applied::Changed);
        assert_eq!(view.apply(&u1), Applied::Stale);
        assert_eq!(view.endpoints("echo"), &[ep(1), ep(2)]);
        let u3 = log.set("echo", vec![]);
        assert_eq!(view.apply(&u3), Applied::Changed);
        assert!(view.endpoints("echo").is_empty());
        assert_eq!(view.version(), 3);
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_which_catches_up() {
        let mut log = EndpointLog::new(16);
        let mut view = EndpointView::default();
        let _lost = log.set("a", vec![ep(1)]);
        let u2 = log.set("b", vec![ep(2)]);
        assert_eq!(view.apply(&u2), Applied::Gap { have: 0, got: 2 });
        assert!(view.endpoints("b").is_empty(), "nothing applied past a gap");
        view.reset(log.snapshot());
        assert_eq!(
            (view.endpoints("a"), view.endpoints("b")),
            (&[ep(1)][..], &[ep(2)][..])
        );
        assert_eq!(view.apply(&log.set("a", vec![])), Applied::Changed);
    }

    #[test]
    fn catch_up_comes_from_the_log_while_it_holds_the_versions() {
        let mut log = EndpointLog::new(2);
        for i in 1..=4 {
            log.set("f", vec![ep(i)]);
        }
        assert_eq!(log.since(4), Some(vec![]));
        assert_eq!(
            log.since(2)
                .unwrap()
                .iter()
                .map(|u| u.version)
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(log.since(1), None, "version 2 has left the log: snapshot");
        assert_eq!(
            log.since(9),
            None,
            "a view ahead of the log (control plane restarted): snapshot"
        );
    }
}
