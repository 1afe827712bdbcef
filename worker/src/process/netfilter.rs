//! Packet filtering by sandbox identity: a root worker installs one nftables table whose
//! output hook sends every packet from a sandbox's uid through the operator's policy. A
//! sandbox can then open no connection to this host's addresses (baton's ports, other
//! sandboxes, anything listening on loopback) and, by default, none to private networks
//! (the other hosts of a federation, cloud metadata); it still answers the connections the
//! data plane opens to it, which conntrack sees as established.
//!
//! Why uids and not a network namespace per sandbox: every sandbox already has a uid of its
//! own, so the filter costs one rule set per worker and nothing per creation, where a
//! namespace with a veth pair and addresses costs 20–40 ms per sandbox or a pool prepared
//! ahead (docs/security.md).

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use crate::config::{NetworkSection, Outbound};
use crate::error::RuntimeError;

/// Prefix of every table a worker installs; the rest is `<pid>_<n>`.
const TABLE_PREFIX: &str = "baton_sandboxes_";

/// Addresses `outbound = "public"` keeps sandboxes from: loopback, private, shared (CGNAT),
/// link-local (cloud metadata lives at 169.254.169.254), multicast and reserved ranges.
const NON_PUBLIC_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
const NON_PUBLIC_V6: &[&str] = &["::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8"];

/// Which packets count as a sandbox's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxUids {
    /// One uid each, from this range.
    Range(RangeInclusive<u32>),
    /// All sandboxes share this uid.
    Single(u32),
}

/// The nftables rule set for `policy`, in `nft -f` syntax, for table `table`. Pure.
pub fn ruleset(table: &str, uids: &SandboxUids, policy: &NetworkSection) -> String {
    let uid_match = match uids {
        SandboxUids::Range(r) => format!("{}-{}", r.start(), r.end()),
        SandboxUids::Single(u) => u.to_string(),
    };
    let (allow4, allow6): (Vec<&IpNet>, Vec<&IpNet>) = policy.allow.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let mut s = String::new();
    // `add` then `delete` then the table: replaces a table of the same name atomically.
    let _ = writeln!(s, "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{");
    let _ = writeln!(s, "  chain output {{\n    type filter hook output priority filter; policy accept;");
    // Packets without a socket (the kernel's own replies) never match a uid and pass.
    let _ = writeln!(s, "    meta skuid {uid_match} jump sandbox\n  }}");
    let _ = writeln!(s, "  chain sandbox {{\n    ct state established,related accept");
    if policy.dns {
        let _ = writeln!(s, "    meta l4proto {{ tcp, udp }} th dport 53 accept");
    }
    if !policy.local_ports.is_empty() {
        let ports: Vec<String> = policy.local_ports.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "    fib daddr type local tcp dport {{ {} }} accept", ports.join(", "));
    }
    // This host's own addresses, whatever the policy: baton's ports and other sandboxes.
    let _ = writeln!(s, "    fib daddr type local reject with icmpx admin-prohibited");
    if !allow4.is_empty() {
        let _ = writeln!(s, "    ip daddr {{ {} }} accept", join(&allow4));
    }
    if !allow6.is_empty() {
        let _ = writeln!(s, "    ip6 daddr {{ {} }} accept", join(&allow6));
    }
    match policy.outbound {
        Outbound::Any => {}
        Outbound::Public => {
            let _ = writeln!(s, "    ip daddr {{ {} }} reject with icmpx admin-prohibited", NON_PUBLIC_V4.join(", "));
            let _ = writeln!(s, "    ip6 daddr {{ {} }} reject with icmpx admin-prohibited", NON_PUBLIC_V6.join(", "));
        }
        Outbound::None => {
            let _ = writeln!(s, "    reject with icmpx admin-prohibited");
        }
    }
    let _ = writeln!(s, "  }}\n}}");
    s
}

fn join(nets: &[&IpNet]) -> String {
    nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// An installed table; removed when dropped unless [`NetFilter::keep`] was called.
#[derive(Debug)]
pub struct NetFilter {
    table: String,
    keep: std::sync::atomic::AtomicBool,
}

impl NetFilter {
    /// Installs the rule set with `nft`, then removes tables that workers no longer running
    /// left behind. An error names the field to change.
    pub fn install(uids: &SandboxUids, policy: &NetworkSection) -> Result<Self, RuntimeError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let table = format!("{TABLE_PREFIX}{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        nft(&["-f", "-"], Some(&ruleset(&table, uids, policy))).map_err(|e| {
            RuntimeError::invalid(
                "process.network.filter",
                format!(
                    "could not install the sandboxes' packet filter ({e}); install nftables, or set \
                     process.network.filter = false to let sandboxes reach this host's ports"
                ),
            )
        })?;
        sweep_stale();
        Ok(Self { table, keep: false.into() })
    }

    /// The table's name (`inet` family).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Leaves the table installed when this value is dropped (sandboxes kept running for the
    /// next worker process, which installs its own and removes this one).
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for NetFilter {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Relaxed)
            && let Err(e) = nft(&["delete", "table", "inet", &self.table], None)
        {
            tracing::warn!(table = %self.table, "could not remove the sandboxes' packet filter: {e}");
        }
    }
}

/// Deletes `baton_sandboxes_<pid>_<n>` tables whose worker process is gone.
fn sweep_stale() {
    let Ok(listing) = nft(&["list", "tables", "inet"], None) else { return };
    for name in listing.lines().filter_map(|l| l.strip_prefix("table inet ")).map(str::trim) {
        let Some(pid) = name.strip_prefix(TABLE_PREFIX).and_then(|r| r.split('_').next()) else { continue };
        let alive = pid.parse::<u32>().is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            match nft(&["delete", "table", "inet", name], None) {
                Ok(_) => tracing::info!(table = name, "removed a packet filter left by a worker that is gone"),
                Err(e) => tracing::warn!(table = name, "could not remove a stale packet filter: {e}"),
            }
        }
    }
}

/// Runs `nft` with `args`, `stdin` fed in; its stdout, or its stderr as the error (`nft`
/// reports every failure there). The worker's reaper collects its exit status: nothing else
/// in the worker may wait for a child.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let reaper = super::reaper::Reaper::get();
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    reaper.notify_spawned();
    // Registered and dropped: the status is not needed, only taken off the reaper's books.
    drop(reaper.watch(child.id() as i32));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("writing to nft: {e}"))?;
    }
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    if err.trim().is_empty() { Ok(out) } else { Err(format!("nft {}: {}", args.join(" "), err.trim())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(outbound: Outbound, allow: &[&str], dns: bool) -> NetworkSection {
        NetworkSection {
            filter: true,
            outbound,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            dns,
            local_ports: Vec::new(),
        }
    }

    fn at_in(text: &str, needle: &str) -> usize {
        text.find(needle).unwrap_or_else(|| panic!("{needle} missing: {text}"))
    }

    #[test]
    fn only_sandbox_uids_enter_the_policy_and_local_addresses_are_always_refused() {
        let text = ruleset("t", &SandboxUids::Range(10..=20), &policy(Outbound::Any, &[], false));
        assert!(text.contains("meta skuid 10-20 jump sandbox"), "{text}");
        assert!(text.contains("ct state established,related accept"), "{text}");
        assert!(text.contains("fib daddr type local reject"), "{text}");
        assert!(!text.contains("th dport 53"), "{text}");
        assert!(!text.contains("10.0.0.0/8"), "any outbound refuses only local addresses: {text}");
    }

    #[test]
    fn allowed_networks_come_after_local_and_before_the_outbound_policy() {
        let text =
            ruleset("t", &SandboxUids::Single(65534), &policy(Outbound::Public, &["10.1.0.0/16", "fd00::/8"], true));
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing: {text}"));
        assert!(text.contains("meta skuid 65534 jump sandbox"));
        assert!(at("th dport 53") < at("fib daddr type local"));
        assert!(at("fib daddr type local") < at("ip daddr { 10.1.0.0/16 } accept"));
        assert!(at("ip6 daddr { fd00::/8 } accept") < at("169.254.0.0/16"));
        let ports = NetworkSection { local_ports: vec![8000, 8443], ..policy(Outbound::Public, &[], false) };
        let text = ruleset("t", &SandboxUids::Single(1), &ports);
        assert!(
            at_in(&text, "tcp dport { 8000, 8443 } accept") < at_in(&text, "fib daddr type local reject"),
            "{text}"
        );
        let none = ruleset("t", &SandboxUids::Single(1), &policy(Outbound::None, &[], false));
        assert!(none.trim_end().ends_with("reject with icmpx admin-prohibited\n  }\n}"), "{none}");
    }
}
