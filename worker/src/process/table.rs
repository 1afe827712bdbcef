//! The runtime's sandbox table: one owner, a lock held briefly and never across `.await`.

use std::collections::HashMap;
use std::path::PathBuf;

use baton_proto::SandboxId;
use tokio::sync::watch;

use super::cgroup::SandboxCgroup;
use crate::error::RuntimeError;
use crate::runtime::{ExitInfo, SandboxState, SandboxSummary};

/// Where a live sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Ready and serving.
    Running,
    /// Its process ended on its own; kept until deleted.
    Exited,
    /// A delete is under way.
    Deleting,
}

/// A sandbox past creation.
pub struct Entry {
    /// What listings show.
    pub summary: SandboxSummary,
    /// Its phase.
    pub phase: Phase,
    /// Its port while held.
    pub port: Option<u16>,
    /// The function's pid.
    pub main_pid: i32,
    /// Signal the process group rather than the pid (no pid namespace).
    pub group_kill: bool,
    /// Its cgroup while it exists.
    pub cgroup: Option<SandboxCgroup>,
    /// Resolves to `Some` once the process is gone.
    pub exit: watch::Receiver<Option<ExitInfo>>,
    /// Its folder (record and logs).
    pub dir: PathBuf,
}

enum Row {
    /// Being created (its exit, if any, is the creation's business).
    Creating,
    Live(Box<Entry>),
}

/// What a delete needs, taken out of the table so nobody else frees it.
pub struct Ticket {
    /// Port to release.
    pub port: Option<u16>,
    /// Cgroup to remove.
    pub cgroup: Option<SandboxCgroup>,
    /// Pid to signal.
    pub main_pid: i32,
    /// Signal the group.
    pub group_kill: bool,
    /// Exit watch.
    pub exit: watch::Receiver<Option<ExitInfo>>,
    /// Folder to remove.
    pub dir: PathBuf,
}

/// All sandboxes of one runtime.
#[derive(Default)]
pub struct Table {
    rows: HashMap<SandboxId, Row>,
}

impl Table {
    /// Claims `id` for a creation.
    pub fn reserve(&mut self, id: &SandboxId) -> Result<(), RuntimeError> {
        if self.rows.contains_key(id) {
            return Err(RuntimeError::AlreadyExists(id.clone()));
        }
        self.rows.insert(id.clone(), Row::Creating);
        Ok(())
    }

    /// Records a ready sandbox (created or re-adopted).
    pub fn insert_running(&mut self, entry: Entry) {
        self.rows.insert(entry.summary.id.clone(), Row::Live(Box::new(entry)));
    }

    /// Records that a running sandbox's process ended on its own and hands back what it
    /// held; `None` when the exit is expected (creation or delete under way).
    pub fn mark_exited(&mut self, id: &SandboxId) -> Option<(Option<u16>, Option<SandboxCgroup>)> {
        match self.rows.get_mut(id) {
            Some(Row::Live(entry)) if entry.phase == Phase::Running => {
                entry.phase = Phase::Exited;
                entry.summary.state = SandboxState::Exited;
                Some((entry.port.take(), entry.cgroup.take()))
            }
            _ => None,
        }
    }

    /// Starts deleting `id`.
    pub fn begin_delete(&mut self, id: &SandboxId) -> Result<Ticket, RuntimeError> {
        match self.rows.get_mut(id) {
            Some(Row::Live(entry)) if entry.phase != Phase::Deleting => {
                entry.phase = Phase::Deleting;
                Ok(Ticket {
                    port: entry.port.take(),
                    cgroup: entry.cgroup.take(),
                    main_pid: entry.main_pid,
                    group_kill: entry.group_kill,
                    exit: entry.exit.clone(),
                    dir: entry.dir.clone(),
                })
            }
            _ => Err(RuntimeError::NotFound(id.clone())),
        }
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: &SandboxId) {
        self.rows.remove(id);
    }

    /// Listing rows of sandboxes that are ready or exited (not being created or deleted).
    pub fn summaries(&self) -> Vec<SandboxSummary> {
        let mut rows: Vec<SandboxSummary> = self
            .rows
            .values()
            .filter_map(|row| match row {
                Row::Live(e) if e.phase != Phase::Deleting => Some(e.summary.clone()),
                _ => None,
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    /// Folders of live sandboxes.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.rows
            .values()
            .filter_map(|row| match row {
                Row::Live(e) => Some(e.dir.clone()),
                Row::Creating => None,
            })
            .collect()
    }
}
