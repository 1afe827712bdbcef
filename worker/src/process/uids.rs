//! The pool of user IDs sandboxes run as: each sandbox gets a uid (and a gid of the same
//! number) of its own, so no sandbox can signal, trace or read the `/proc` files (the
//! environment among them) of another's processes, nor files another leaves behind.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// User IDs from one range, each held by at most one sandbox.
#[derive(Debug)]
pub struct UidPool {
    range: RangeInclusive<u32>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    in_use: BTreeSet<u32>,
    by_sandbox: HashMap<String, u32>,
    /// Where the next search starts.
    cursor: u32,
}

/// Every uid of the range is taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no free sandbox uid left in {start}-{end}; delete sandboxes or widen process.uid_range_*")]
pub struct UidsExhausted {
    /// Range start.
    pub start: u32,
    /// Range end.
    pub end: u32,
}

impl UidPool {
    /// A pool over `range` with nothing in use.
    pub fn new(range: RangeInclusive<u32>) -> Self {
        let cursor = *range.start();
        Self { range, state: Mutex::new(PoolState { in_use: BTreeSet::new(), by_sandbox: HashMap::new(), cursor }) }
    }

    /// One uid of the range (for checks that only need a uid no file belongs to).
    pub fn any(&self) -> u32 {
        *self.range.start()
    }

    /// Takes a free uid for `sandbox`, round-robin from after the last one handed out (a
    /// uid just freed is not reused at once).
    pub fn take(&self, sandbox: &str) -> Result<u32, UidsExhausted> {
        let mut state = self.state.lock().expect("uid pool lock");
        let (start, end) = (*self.range.start(), *self.range.end());
        let len = u64::from(end - start) + 1;
        for step in 0..len.min(1 << 20) {
            let uid = start + ((u64::from(state.cursor - start) + step) % len) as u32;
            if state.in_use.insert(uid) {
                state.cursor = if uid == end { start } else { uid + 1 };
                state.by_sandbox.insert(sandbox.to_string(), uid);
                return Ok(uid);
            }
        }
        Err(UidsExhausted { start, end })
    }

    /// Marks `uid` used by `sandbox` (re-adopted, it runs as it).
    pub fn reserve(&self, sandbox: &str, uid: u32) {
        if self.range.contains(&uid) {
            let mut state = self.state.lock().expect("uid pool lock");
            state.in_use.insert(uid);
            state.by_sandbox.insert(sandbox.to_string(), uid);
        }
    }

    /// How many uids are held.
    pub fn in_use(&self) -> usize {
        self.state.lock().expect("uid pool lock").in_use.len()
    }

    /// The uid `sandbox` holds.
    pub fn of(&self, sandbox: &str) -> Option<u32> {
        self.state.lock().expect("uid pool lock").by_sandbox.get(sandbox).copied()
    }

    /// Gives back the uid of `sandbox`, if it holds one.
    pub fn release(&self, sandbox: &str) {
        let mut state = self.state.lock().expect("uid pool lock");
        if let Some(uid) = state.by_sandbox.remove(sandbox) {
            state.in_use.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_uid_twice_and_reuses_freed_ones_last() {
        let pool = UidPool::new(100..=102);
        let (a, b, c) = (pool.take("a").unwrap(), pool.take("b").unwrap(), pool.take("c").unwrap());
        assert_eq!([a, b, c], [100, 101, 102]);
        assert_eq!(pool.take("d"), Err(UidsExhausted { start: 100, end: 102 }));
        pool.release("b");
        pool.release("b");
        assert_eq!(pool.take("d"), Ok(101));
        pool.release("a");
        pool.release("c");
        pool.reserve("adopted", 102);
        assert_eq!(pool.take("e"), Ok(100), "a re-adopted sandbox's uid is not handed out");
        assert_eq!(pool.take("f"), Err(UidsExhausted { start: 100, end: 102 }));
    }
}
