//! The control plane's sandbox table, indexed by function and by node so that a decision
//! about one function or one placement costs what that function or node holds, not what
//! the whole cell holds.

use std::collections::{BTreeSet, HashMap};

use baton_proto::{NodeId, SandboxId};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Creating,
    Ready { endpoint: String, creation: crate::routing::Creation },
    Deleting,
}

/// One sandbox as the control plane tracks it.
#[derive(Debug, Clone)]
pub(super) struct SandboxEntry {
    pub function: String,
    pub node_id: NodeId,
    pub phase: Phase,
    pub seq: u64,
    /// What it takes of its node (the spec's resources when it was placed).
    pub cpu_millis: u32,
    pub memory_mib: u64,
}

/// What a node has given out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct NodeAllocation {
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub sandboxes: u32,
}

#[derive(Default)]
pub(super) struct SandboxTable {
    all: HashMap<SandboxId, SandboxEntry>,
    by_function: HashMap<String, BTreeSet<SandboxId>>,
    by_node: HashMap<NodeId, BTreeSet<SandboxId>>,
    allocation: HashMap<NodeId, NodeAllocation>,
}

impl SandboxTable {
    pub fn insert(&mut self, id: SandboxId, entry: SandboxEntry) {
        if let Some(old) = self.remove(&id) {
            debug_assert!(false, "sandbox {id} inserted twice ({old:?})");
        }
        self.by_function.entry(entry.function.clone()).or_default().insert(id.clone());
        self.by_node.entry(entry.node_id.clone()).or_default().insert(id.clone());
        let a = self.allocation.entry(entry.node_id.clone()).or_default();
        a.cpu_millis += entry.cpu_millis;
        a.memory_mib += entry.memory_mib;
        a.sandboxes += 1;
        self.all.insert(id, entry);
    }

    pub fn remove(&mut self, id: &(impl AsRef<str> + ?Sized)) -> Option<SandboxEntry> {
        let id = id.as_ref();
        let entry = self.all.remove(id)?;
        if let Some(ids) = self.by_function.get_mut(&entry.function) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_function.remove(&entry.function);
            }
        }
        if let Some(ids) = self.by_node.get_mut(&entry.node_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_node.remove(&entry.node_id);
            }
        }
        if let Some(a) = self.allocation.get_mut(&entry.node_id) {
            a.cpu_millis -= entry.cpu_millis;
            a.memory_mib -= entry.memory_mib;
            a.sandboxes -= 1;
        }
        Some(entry)
    }

    pub fn get(&self, id: &(impl AsRef<str> + ?Sized)) -> Option<&SandboxEntry> {
        self.all.get(id.as_ref())
    }

    /// For phase changes only: the indexed fields (function, node, resources) stay.
    pub fn get_mut(&mut self, id: &(impl AsRef<str> + ?Sized)) -> Option<&mut SandboxEntry> {
        self.all.get_mut(id.as_ref())
    }

    pub fn contains(&self, id: &(impl AsRef<str> + ?Sized)) -> bool {
        self.all.contains_key(id.as_ref())
    }

    pub fn of_function<'a>(&'a self, function: &str) -> impl Iterator<Item = (&'a SandboxId, &'a SandboxEntry)> + 'a {
        self.by_function.get(function).into_iter().flatten().map(move |id| (id, &self.all[id]))
    }

    pub fn on_node(&self, node: &(impl AsRef<str> + ?Sized)) -> Vec<SandboxId> {
        self.by_node.get(node.as_ref()).map(|ids| ids.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn allocation(&self, node: &(impl AsRef<str> + ?Sized)) -> NodeAllocation {
        self.allocation.get(node.as_ref()).copied().unwrap_or_default()
    }

    pub fn ready(&self) -> usize {
        self.all.values().filter(|s| matches!(s.phase, Phase::Ready { .. })).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: &str, node: &str) -> SandboxEntry {
        SandboxEntry {
            function: function.into(),
            node_id: NodeId::new(node).unwrap(),
            phase: Phase::Creating,
            seq: 0,
            cpu_millis: 100,
            memory_mib: 64,
        }
    }

    #[test]
    fn indexes_follow_inserts_and_removals() {
        let mut t = SandboxTable::default();
        let id = |s: &str| SandboxId::new(s).unwrap();
        t.insert(id("a"), entry("f", "n1"));
        t.insert(id("b"), entry("f", "n2"));
        t.insert(id("c"), entry("g", "n1"));
        assert_eq!(t.of_function("f").count(), 2);
        assert_eq!(t.on_node("n1"), vec![id("a"), id("c")]);
        assert_eq!(t.allocation("n1"), NodeAllocation { cpu_millis: 200, memory_mib: 128, sandboxes: 2 });
        t.remove("a");
        assert_eq!(t.of_function("f").map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(t.allocation("n1"), NodeAllocation { cpu_millis: 100, memory_mib: 64, sandboxes: 1 });
        assert!(t.remove("a").is_none());
        t.remove("c");
        assert_eq!(t.allocation("n1"), NodeAllocation::default());
        assert!(t.on_node("n1").is_empty());
    }
}
