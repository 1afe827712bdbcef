//! Packet filtering by sandbox identity: a root worker installs one nftables table whose
//! output hook sends every packet from a sandbox's uid through the operator's policy. A
//! sandbox can then open no connection to this host's addresses (baton's ports, other
//! sandboxes, anything listening on loopback) and, by default, none to private networks
//! (the other hosts of a federation, cloud metadata); it still answers the connections the
//! data plane opens to it, which conntrack sees as established.
//!
//! Why uids and not a network namespace per process sandbox: every sandbox already has a
//! uid of its own, so the filter costs one rule set per worker and nothing per creation,
//! where a namespace with a veth pair and addresses costs about 10 ms per sandbox
//! (docs/BENCHMARKS.md). Containers, which choose their port, pay it: the table also maps
//! their ports and filters what enters on their veths the same way (`container_net`).

use std::fmt::Write as _;
use std::ops::RangeInclusive;
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

/// What the table does for container sandboxes, each in a network namespace of its own
/// behind a veth pair named `<IFACE_PREFIX>…` (see `container_net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRules {
    /// Where the containers' addresses come from.
    pub subnet: ipnet::Ipv4Net,
    /// The address sandboxes' endpoints name (`process.host`): connections to one of its
    /// mapped ports go on to the container's address and port.
    pub host: std::net::Ipv4Addr,
}

/// Name of the map from a container's port on the host to its address and port.
pub const PORT_MAP: &str = "container_ports";
/// Name of the set of this worker's containers' veths (host side): other workers on the
/// host filter theirs by their own policy.
pub const VETH_SET: &str = "container_veths";
/// Source address loopback connections to a container are rewritten to: the gateway its
/// default route names, which is no address of this host's.
pub const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

/// The nftables rule set for `policy`, in `nft -f` syntax, for table `table`: the filter on
/// `uids` (none when `None`) and the port mapping and filter of containers. Pure.
pub fn ruleset(
    table: &str,
    uids: Option<&SandboxUids>,
    policy: &NetworkSection,
    containers: Option<&ContainerRules>,
) -> String {
    let veths = format!("\"{}*\"", super::container_net::IFACE_PREFIX);
    let mut s = String::new();
    // `add` then `delete` then the table: replaces a table of the same name atomically.
    let _ = writeln!(s, "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{");
    if let Some(c) = containers {
        let _ = writeln!(s, "  map {PORT_MAP} {{ type inet_service : ipv4_addr . inet_service; }}");
        let _ = writeln!(s, "  set {VETH_SET} {{ type ifname; }}");
        for (chain, hook) in [("container_dnat_local", "output"), ("container_dnat", "prerouting")] {
            let _ = writeln!(
                s,
                "  chain {chain} {{\n    type nat hook {hook} priority -100; policy accept;\n    \
                 ip daddr {} dnat ip to tcp dport map @{PORT_MAP}\n  }}",
                c.host
            );
        }
        // Loopback sources cannot leave on a veth: they become the gateway's address (and
        // the veth accepts loopback addresses back, `route_localnet`). The containers'
        // own connections leave with this host's address.
        let _ = writeln!(
            s,
            "  chain container_snat {{\n    type nat hook postrouting priority 100; policy accept;\n    \
             oifname {veths} ip saddr 127.0.0.0/8 snat ip to {GATEWAY}\n    \
             ip saddr {} oifname != {veths} masquerade\n  }}",
            c.subnet
        );
    }
    let Some(uids) = uids.filter(|_| policy.filter) else {
        let _ = writeln!(s, "}}");
        return s;
    };
    let uid_match = match uids {
        SandboxUids::Range(r) => format!("{}-{}", r.start(), r.end()),
        SandboxUids::Single(u) => u.to_string(),
    };
    let (allow4, allow6): (Vec<&IpNet>, Vec<&IpNet>) = policy.allow.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let _ = writeln!(s, "  chain output {{\n    type filter hook output priority filter; policy accept;");
    // Packets without a socket (the kernel's own replies) never match a uid and pass.
    let _ = writeln!(s, "    meta skuid {uid_match} jump sandbox\n  }}");
    if containers.is_some() {
        // A container's packets come in on its veth: for this host (input) or on (forward).
        for hook in ["input", "forward"] {
            let _ = writeln!(
                s,
                "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    \
                 iifname @{VETH_SET} jump sandbox\n  }}"
            );
        }
    }
    let _ = writeln!(s, "  chain sandbox {{\n    ct state established,related accept");
    if containers.is_some() {
        // No sandbox reaches a container: not through a mapped port, not at its address.
        let _ = writeln!(s, "    ct status dnat reject with icmpx admin-prohibited");
        let _ = writeln!(s, "    oifname {veths} reject with icmpx admin-prohibited");
    }
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
    /// It filters the sandboxes' connections (not only maps containers' ports).
    filters: bool,
    keep: std::sync::atomic::AtomicBool,
}

impl NetFilter {
    /// Installs the rule set with `nft`: the filter on `uids` when given and
    /// `policy.filter` is on, the containers' port mapping when `containers` is given. An
    /// error names the field to change. Tables of workers no longer running stay until
    /// [`sweep_stale`], so re-adopted sandboxes stay filtered and mapped meanwhile.
    pub fn install(
        uids: Option<&SandboxUids>,
        policy: &NetworkSection,
        containers: Option<&ContainerRules>,
    ) -> Result<Self, RuntimeError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let table = format!("{TABLE_PREFIX}{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let filters = uids.is_some() && policy.filter;
        nft(&["-f", "-"], Some(&ruleset(&table, uids, policy, containers))).map_err(|e| {
            let (field, off) = if filters {
                (
                    "process.network.filter",
                    "set process.network.filter = false to let sandboxes reach this host's ports",
                )
            } else {
                ("images.enabled", "set images.enabled = \"off\"")
            };
            RuntimeError::invalid(
                field,
                format!(
                    "could not install the sandboxes' packet filter and port mapping ({e}); install nftables, or {off}"
                ),
            )
        })?;
        Ok(Self { table, filters, keep: false.into() })
    }

    /// Whether it filters the sandboxes' connections.
    pub fn filters(&self) -> bool {
        self.filters
    }

    /// Sends connections to `host_port` of the sandboxes' host address on to `to`, a
    /// container behind veth `iface`, whose packets this table then filters.
    pub async fn map_port(&self, host_port: u16, to: std::net::SocketAddrV4, iface: &str) -> Result<(), String> {
        let table = &self.table;
        let script = format!(
            "add element inet {table} {PORT_MAP} {{ {host_port} : {} . {} }}\n\
             add element inet {table} {VETH_SET} {{ \"{iface}\" }}\n",
            to.ip(),
            to.port()
        );
        super::tool::run("nft", vec!["-f".into(), "-".into()], Some(script)).await.map(drop)
    }

    /// Undoes [`NetFilter::map_port`]; what is not there is no error.
    pub async fn unmap_port(&self, host_port: u16, iface: &str) {
        let table = &self.table;
        for (set, element) in [(PORT_MAP, host_port.to_string()), (VETH_SET, format!("\"{iface}\""))] {
            let args =
                ["delete", "element", "inet", table, set, &format!("{{ {element} }}")].map(String::from).to_vec();
            if let Err(e) = super::tool::run("nft", args, None).await
                && !e.contains("No such file or directory")
            {
                tracing::warn!(port = host_port, iface, "could not remove a container's port mapping: {e}");
            }
        }
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
pub fn sweep_stale() {
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

/// Runs `nft` with `args`, `stdin` fed in: its stdout, or its stderr as the error.
pub(super) fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    super::tool::run_blocking("nft", args, stdin)
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
        let text = ruleset("t", Some(&SandboxUids::Range(10..=20)), &policy(Outbound::Any, &[], false), None);
        assert!(text.contains("meta skuid 10-20 jump sandbox"), "{text}");
        assert!(text.contains("ct state established,related accept"), "{text}");
        assert!(text.contains("fib daddr type local reject"), "{text}");
        assert!(!text.contains("th dport 53"), "{text}");
        assert!(!text.contains("10.0.0.0/8"), "any outbound refuses only local addresses: {text}");
    }

    #[test]
    fn allowed_networks_come_after_local_and_before_the_outbound_policy() {
        let text = ruleset(
            "t",
            Some(&SandboxUids::Single(65534)),
            &policy(Outbound::Public, &["10.1.0.0/16", "fd00::/8"], true),
            None,
        );
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing: {text}"));
        assert!(text.contains("meta skuid 65534 jump sandbox"));
        assert!(at("th dport 53") < at("fib daddr type local"));
        assert!(at("fib daddr type local") < at("ip daddr { 10.1.0.0/16 } accept"));
        assert!(at("ip6 daddr { fd00::/8 } accept") < at("169.254.0.0/16"));
        let ports = NetworkSection { local_ports: vec![8000, 8443], ..policy(Outbound::Public, &[], false) };
        let text = ruleset("t", Some(&SandboxUids::Single(1)), &ports, None);
        assert!(
            at_in(&text, "tcp dport { 8000, 8443 } accept") < at_in(&text, "fib daddr type local reject"),
            "{text}"
        );
        let none = ruleset("t", Some(&SandboxUids::Single(1)), &policy(Outbound::None, &[], false), None);
        assert!(none.trim_end().ends_with("reject with icmpx admin-prohibited\n  }\n}"), "{none}");
    }

    fn containers() -> ContainerRules {
        ContainerRules { subnet: "10.222.0.0/16".parse().unwrap(), host: "127.0.0.1".parse().unwrap() }
    }

    #[test]
    fn containers_ports_are_mapped_and_their_veths_filtered_like_sandbox_uids() {
        let text =
            ruleset("t", Some(&SandboxUids::Range(10..=20)), &policy(Outbound::Public, &[], true), Some(&containers()));
        assert!(text.contains("ip daddr 127.0.0.1 dnat ip to tcp dport map @container_ports"), "{text}");
        assert!(text.contains("type nat hook output") && text.contains("type nat hook prerouting"), "{text}");
        assert!(text.contains("ip saddr 10.222.0.0/16 oifname != \"baton*\" masquerade"), "{text}");
        for hook in ["input", "forward"] {
            assert!(
                text.contains(&format!(
                    "type filter hook {hook} priority filter; policy accept;\n    iifname @container_veths jump sandbox"
                )),
                "{text}"
            );
        }
        // Before anything the policy lets through: no sandbox reaches a container.
        assert!(at_in(&text, "ct state established") < at_in(&text, "ct status dnat reject"));
        assert!(at_in(&text, "oifname \"baton*\" reject") < at_in(&text, "th dport 53"));

        // Without the filter, containers are still mapped, and nothing is filtered.
        let off = NetworkSection { filter: false, ..policy(Outbound::Public, &[], true) };
        let text = ruleset("t", Some(&SandboxUids::Range(10..=20)), &off, Some(&containers()));
        assert!(text.contains("dnat ip to") && !text.contains("jump sandbox") && !text.contains("reject"), "{text}");
    }

    #[test]
    fn every_rule_set_is_one_nft_accepts() {
        // `nft --check` parses and validates against the kernel without changing anything.
        let uids = SandboxUids::Range(10..=20);
        for (uids, containers) in [(Some(&uids), None), (Some(&uids), Some(containers())), (None, Some(containers()))] {
            for outbound in [Outbound::Any, Outbound::Public, Outbound::None] {
                let text = ruleset(
                    "baton_check",
                    uids,
                    &policy(outbound, &["10.1.0.0/16", "fd00::/8"], true),
                    containers.as_ref(),
                );
                let checked = crate::process::tool::run_blocking("nft", &["--check", "-f", "-"], Some(&text));
                assert!(checked.is_ok(), "{checked:?}\n{text}");
            }
        }
    }
}
