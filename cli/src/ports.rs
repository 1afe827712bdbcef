//! Ports for the processes `baton up` starts. It chooses them before starting the
//! processes (each one's config names the others'), so a port must stay free between the
//! choice and the bind. A port the kernel picks for a bind to port 0 is one of its
//! ephemeral ports, which it also hands to every outgoing connection (the load a user
//! sends, the router's connections to cells): one freed there was taken before its process
//! bound it (seen in a benchmark, one start in 16). So ports are drawn below the ephemeral
//! range, where no connection gets one unasked, and never twice in one `baton up`.

use std::collections::HashSet;
use std::net::TcpListener;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

/// The lowest port drawn: below it are many services' well-known ports.
const FLOOR: u16 = 10_000;

/// Ports given out by this process, and the range it must not give (the sandboxes').
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static AVOID: OnceLock<Range<u16>> = OnceLock::new();

/// Keeps `range` (the workers' sandbox ports) out of what [`free`] gives; once, at start.
pub fn avoid(range: Range<u16>) {
    let _ = AVOID.set(range);
}

/// A port free now that no outgoing connection will take before it is bound; the
/// kernel's choice when there is no room below its ephemeral range.
pub fn free() -> std::io::Result<u16> {
    let low = ephemeral_low().unwrap_or(32_768);
    let avoid = AVOID.get().cloned().unwrap_or(0..0);
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    // Concurrent `baton up`s start at different places of the range.
    let start = std::process::id();
    for port in candidates(low, &avoid, start) {
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    given.insert(port);
    Ok(port)
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Every port from [`FLOOR`] up to (not including) `low` outside `avoid`, once each,
/// starting at a place that `start` picks and wrapping around. Pure.
pub fn candidates(low: u16, avoid: &Range<u16>, start: u32) -> impl Iterator<Item = u16> + use<> {
    let len = u32::from(low.saturating_sub(FLOOR));
    let first = if len == 0 { 0 } else { start % len };
    let avoid = avoid.clone();
    (0..len).map(move |i| FLOOR + ((first + i) % len) as u16).filter(move |p| !avoid.contains(p))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ports_given_are_free_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_low().expect("Linux names its ephemeral range");
        let ports: Vec<u16> = (0..40).map(|_| free().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        if low > FLOOR {
            assert!(ports.iter().all(|p| (FLOOR..low).contains(p)), "{ports:?} (ephemeral from {low})");
        }
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }

    proptest! {
        #[test]
        fn candidates_are_each_port_below_the_range_once_outside_what_is_avoided(
            low in 0u16..40_000,
            avoid_from in 0u16..40_000,
            avoid_len in 0u16..5_000,
            start: u32,
        ) {
            let avoid = avoid_from..avoid_from.saturating_add(avoid_len);
            let got: Vec<u16> = candidates(low, &avoid, start).collect();
            let distinct: HashSet<u16> = got.iter().copied().collect();
            prop_assert_eq!(distinct.len(), got.len());
            prop_assert!(got.iter().all(|p| (FLOOR..low).contains(p) && !avoid.contains(p)));
            let expected = (FLOOR..low.max(FLOOR)).filter(|p| !avoid.contains(p)).count();
            prop_assert_eq!(got.len(), expected);
        }
    }
}
