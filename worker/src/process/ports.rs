//! The pool of ports sandboxes listen on. A port is never handed out twice while in use, and
//! one that something else on the machine holds is skipped.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// Ports from one range, each held by at most one sandbox.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    in_use: BTreeSet<u16>,
    /// Where the next search starts, so a freed port is not reused at once (a client may
    /// still hold a connection to the old sandbox).
    cursor: u16,
}

/// Why no port could be had.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every port of the range is taken.
    #[error("no free port left in {start}-{end}; delete sandboxes or widen process.port_range_*")]
    Exhausted {
        /// Range start.
        start: u16,
        /// Range end.
        end: u16,
    },
    /// The fixed port asked for is taken.
    #[error("port {0} is in use")]
    InUse(u16),
}

impl PortPool {
    /// A pool over `range` with nothing in use.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let cursor = *range.start();
        Self { range, state: Mutex::new(PoolState { in_use: BTreeSet::new(), cursor }) }
    }

    /// The range served.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Takes a free port, searching round-robin from after the last one handed out.
    pub fn take_any(&self) -> Result<u16, PortError> {
        let mut state = self.state.lock().expect("port pool lock");
        let (start, end) = (*self.range.start(), *self.range.end());
        let len = u32::from(end - start) + 1;
        for step in 0..len {
            let port = start + ((u32::from(state.cursor - start) + step) % len) as u16;
            if !state.in_use.contains(&port) && bindable(port) {
                state.in_use.insert(port);
                state.cursor = if port == end { start } else { port + 1 };
                return Ok(port);
            }
        }
        Err(PortError::Exhausted { start, end })
    }

    /// Takes `port`, which the caller checked lies in the range.
    pub fn take(&self, port: u16) -> Result<u16, PortError> {
        let mut state = self.state.lock().expect("port pool lock");
        if state.in_use.contains(&port) || !bindable(port) {
            return Err(PortError::InUse(port));
        }
        state.in_use.insert(port);
        Ok(port)
    }

    /// Marks `port` used without checking the socket (a re-adopted sandbox listens on it).
    pub fn reserve(&self, port: u16) {
        self.state.lock().expect("port pool lock").in_use.insert(port);
    }

    /// Returns `port` to the pool.
    pub fn release(&self, port: u16) {
        self.state.lock().expect("port pool lock").in_use.remove(&port);
    }

    /// How many ports are held.
    pub fn in_use(&self) -> usize {
        self.state.lock().expect("port pool lock").in_use.len()
    }
}

/// Whether nothing else listens on `port` on the loopback address.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(len: u16) -> RangeInclusive<u16> {
        // A range above the ephemeral ports of other tests is still shared; pick from the
        // kernel's own choice to stay clear of collisions.
        let base = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let base = base.min(65535 - len);
        base..=base + len - 1
    }

    #[test]
    fn never_hands_out_a_port_twice() {
        let pool = PortPool::new(free_range(4));
        let mut seen = BTreeSet::new();
        while let Ok(p) = pool.take_any() {
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert!(seen.len() <= 4);
        assert!(matches!(pool.take_any(), Err(PortError::Exhausted { .. })));
        let first = *seen.iter().next().unwrap();
        assert_eq!(pool.take(first), Err(PortError::InUse(first)));
        pool.release(first);
        assert_eq!(pool.take(first), Ok(first));
    }

    #[test]
    fn skips_ports_held_by_others() {
        let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let pool = PortPool::new(port..=port);
        assert_eq!(pool.take_any(), Err(PortError::Exhausted { start: port, end: port }));
        assert_eq!(pool.take(port), Err(PortError::InUse(port)));
        drop(holder);
        assert_eq!(pool.take_any(), Ok(port));
        assert_eq!(pool.in_use(), 1);
    }
}
