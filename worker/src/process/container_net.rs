//! A network namespace of its own for each container sandbox, so a function listens on the
//! port it chooses (its `port`, the image's one exposed port, or `$PORT`) without meeting
//! any other sandbox's.
//!
//! Per sandbox, before runc starts it:
//!
//! 1. a new network namespace, held only by a descriptor of the worker's
//!    (`/proc/<worker>/fd/<n>` is the path runc joins): once the container is in it the
//!    descriptor is closed, and the namespace (with everything in it) goes with the
//!    container's last process, whoever ends it. Nothing is left to clean up.
//! 2. a veth pair, `baton<address in hex>` on the host and `eth0` inside, with an address
//!    of the subnet (`images.subnet`) as a /32 on `eth0` and a route to it on the host side;
//!    inside, a default route through a link-local gateway (`169.254.1.1`), whose MAC is the
//!    host side's: no ARP, no bridge, no address on the host side. The interface name is
//!    the address: two workers on one host that pick the same address fail on the name, and
//!    the second takes the next.
//! 3. the host port from the pool is held by a listening socket of the worker's (so nothing
//!    else on the machine takes it) and mapped in the worker's nftables table to the
//!    container's address and port: the data plane, the readiness probe and the tests
//!    connect to `process.host:<host port>` exactly as for a process sandbox.
//!
//! The filter (`netfilter`) treats what comes in on a `baton*` veth as it treats a sandbox
//! uid's packets, and refuses every sandbox the way to a container.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::netfilter::GATEWAY;
use crate::error::RuntimeError;

/// Prefix of the host side of every container's veth pair (the rest is its address in hex).
pub const IFACE_PREFIX: &str = "baton";
/// MAC of the host side of every veth: what the containers' gateway resolves to.
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// Addresses tried before a creation gives up because other workers hold them.
const ADDRESS_ATTEMPTS: usize = 16;

/// The containers' addresses and how their ports are reached.
#[derive(Debug)]
pub struct ContainerNet {
    subnet: Ipv4Net,
    /// `process.host`, when it is a loopback address: the veths must then accept loopback
    /// sources (`route_localnet`).
    loopback_host: bool,
    addresses: Mutex<Addresses>,
}

/// The addresses in use, and where the next search starts (round-robin, so an address
/// whose veth the kernel is still removing is not reused at once).
#[derive(Debug, Default)]
struct Addresses {
    in_use: BTreeSet<Ipv4Addr>,
    cursor: u32,
}

/// A new network namespace, configured and ready for runc to join.
pub struct Prepared {
    netns: Netns,
    /// The container's address and the port its function listens on.
    inside: SocketAddrV4,
    /// Holds the host port, so that nothing else on the machine listens on it.
    reservation: TcpListener,
}

impl Prepared {
    /// The namespace, the container's address and port, and the host port's reservation.
    pub fn into_parts(self) -> (Netns, SocketAddrV4, TcpListener) {
        (self.netns, self.inside, self.reservation)
    }
}

/// A network namespace held open by the worker until the container is in it; dropping it
/// lets go (the namespace then lives as long as something is in it).
pub struct Netns(OwnedFd);

impl Netns {
    /// The path runc joins the namespace by (valid while this value lives).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.0.as_raw_fd()))
    }
}

impl ContainerNet {
    /// Addresses from `subnet`; `host` is `process.host`.
    pub fn new(subnet: Ipv4Net, host: Ipv4Addr) -> Self {
        Self { subnet, loopback_host: host.is_loopback(), addresses: Mutex::default() }
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Makes and configures a namespace for a container whose function listens on `port`,
    /// reached at `host:host_port`. On failure nothing is left.
    pub async fn prepare(&self, host: Ipv4Addr, host_port: u16, port: u16) -> Result<Prepared, RuntimeError> {
        let reservation = TcpListener::bind((host, host_port))
            .map_err(|e| RuntimeError::os(format!("holding port {host_port} for a container"), e))?;
        let netns = new_netns().await.map_err(|e| RuntimeError::os("creating a network namespace", e))?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let mut last = String::new();
        for _ in 0..ADDRESS_ATTEMPTS {
            let address = self.take()?;
            match self.wire(&path, address).await {
                Ok(()) => {
                    let (netns, inside) = (Netns(netns), SocketAddrV4::new(address, port));
                    return Ok(Prepared { netns, inside, reservation });
                }
                Err(Wire::Taken) => {
                    // Another worker on this host has it: the search goes on past it.
                    self.release(address);
                    tracing::debug!(%address, "address held by another worker on this host");
                    last = format!("{address} is held by another worker on this host");
                }
                Err(Wire::Failed(e)) => {
                    self.release(address);
                    // The namespace, and the veth with it, goes with the descriptor.
                    return Err(RuntimeError::os("wiring a container's network", std::io::Error::other(e)));
                }
            }
        }
        Err(RuntimeError::Exhausted(format!(
            "no free container address in images.subnet {} after {ADDRESS_ATTEMPTS} tries ({last}); widen it, or \
             give each worker on this host a subnet of its own",
            self.subnet
        )))
    }

    /// Marks `address` as a re-adopted container's.
    pub fn reserve(&self, address: Ipv4Addr) {
        self.addresses.lock().expect("addresses lock").in_use.insert(address);
    }

    /// Gives `address` back (its container is gone).
    pub fn release(&self, address: Ipv4Addr) {
        self.addresses.lock().expect("addresses lock").in_use.remove(&address);
    }

    /// How many addresses are held (for leak checks).
    pub fn in_use(&self) -> usize {
        self.addresses.lock().expect("addresses lock").in_use.len()
    }

    fn take(&self) -> Result<Ipv4Addr, RuntimeError> {
        let mut state = self.addresses.lock().expect("addresses lock");
        let Addresses { in_use, cursor } = &mut *state;
        let address = next_free(self.subnet, in_use, cursor).ok_or_else(|| {
            RuntimeError::Exhausted(format!("every address of images.subnet {} is in use; widen it", self.subnet))
        })?;
        in_use.insert(address);
        Ok(address)
    }

    /// The veth pair, addresses and routes for `address` in namespace `netns`.
    async fn wire(&self, netns: &str, address: Ipv4Addr) -> Result<(), Wire> {
        let iface = iface_name(address);
        match super::tool::run("ip", vec!["-batch".into(), "-".into()], Some(host_side(&iface, netns, address))).await {
            Err(e) if e.contains("File exists") => return Err(Wire::Taken),
            Err(e) => return Err(Wire::Failed(e)),
            Ok(_) => {}
        }
        if self.loopback_host {
            // Connections to a loopback endpoint reach the container with the gateway's
            // address as their source (the table's snat); their replies come back with a
            // loopback destination, which this veth must accept.
            let knob = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
            std::fs::write(&knob, "1").map_err(|e| Wire::Failed(format!("writing {knob}: {e}")))?;
        }
        let args = [format!("--net={netns}"), "ip".into(), "-batch".into(), "-".into()].to_vec();
        super::tool::run("nsenter", args, Some(inside(address))).await.map_err(Wire::Failed)?;
        Ok(())
    }
}

enum Wire {
    /// The interface name, hence the address, is another worker's.
    Taken,
    Failed(String),
}

/// A new network namespace, made by a thread of its own (a namespace belongs to a thread),
/// which then ends: the descriptor alone keeps it.
async fn new_netns() -> std::io::Result<OwnedFd> {
    tokio::task::spawn_blocking(|| {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            // Per namespace: its function may listen on any port, 80 included, without a
            // capability (as Docker does). `/proc/sys/net` is the writing thread's namespace.
            std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")?;
            File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The host side's interface name for `address`: `baton` and the address in hex (13
/// characters; the kernel allows 15).
pub fn iface_name(address: Ipv4Addr) -> String {
    format!("{IFACE_PREFIX}{:08x}", u32::from(address))
}

/// The container side's MAC, from its address (locally administered, unicast).
fn container_mac(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:ba:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// `ip -batch` commands for the host side: the pair, with `eth0` put in `netns`, and the
/// route and neighbour entry to the container. Pure.
fn host_side(iface: &str, netns: &str, address: Ipv4Addr) -> String {
    let mac = container_mac(address);
    format!(
        "link add {iface} address {HOST_MAC} type veth peer name eth0 address {mac} netns {netns}\n\
         link set {iface} up\n\
         route add {address}/32 dev {iface}\n\
         neigh replace {address} lladdr {mac} dev {iface} nud permanent\n"
    )
}

/// `ip -batch` commands inside the namespace: loopback, the address, the gateway. Pure.
fn inside(address: Ipv4Addr) -> String {
    format!(
        "link set lo up\n\
         link set eth0 up\n\
         addr add {address}/32 dev eth0\n\
         route add {GATEWAY} dev eth0 scope link\n\
         route add default via {GATEWAY} dev eth0\n\
         neigh replace {GATEWAY} lladdr {HOST_MAC} dev eth0 nud permanent\n"
    )
}

/// The next address of `subnet` not in `in_use`, searching from `cursor` (an offset into
/// the subnet, moved past the one returned). The network and broadcast addresses are
/// never handed out (for prefixes shorter than /31). Pure.
fn next_free(subnet: Ipv4Net, in_use: &BTreeSet<Ipv4Addr>, cursor: &mut u32) -> Option<Ipv4Addr> {
    let base = u32::from(subnet.network());
    let size: u64 = 1u64 << (32 - u32::from(subnet.prefix_len()));
    let usable = |offset: u64| size <= 2 || (offset != 0 && offset != size - 1);
    for step in 0..size {
        let offset = (u64::from(*cursor) + step) % size;
        let address = Ipv4Addr::from(base + offset as u32);
        if usable(offset) && !in_use.contains(&address) {
            *cursor = ((offset + 1) % size) as u32;
            return Some(address);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_and_scripts_follow_the_address() {
        let address: Ipv4Addr = "10.222.0.5".parse().unwrap();
        assert_eq!(iface_name(address), "baton0ade0005");
        assert!(iface_name("255.255.255.255".parse().unwrap()).len() <= 15, "the kernel's limit");
        let host = host_side("baton0ade0005", "/proc/1/fd/9", address);
        assert!(host.starts_with(
            "link add baton0ade0005 address ee:ee:ee:ee:ee:ee type veth peer name eth0 address 02:ba:0a:de:00:05 \
             netns /proc/1/fd/9\n"
        ));
        assert!(host.contains("route add 10.222.0.5/32 dev baton0ade0005\n"), "{host}");
        let inside = inside(address);
        assert!(inside.contains("addr add 10.222.0.5/32 dev eth0\n") && inside.contains("default via 169.254.1.1"));
    }

    #[test]
    fn addresses_skip_network_broadcast_and_those_in_use_and_wrap() {
        let subnet: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let mut in_use = BTreeSet::new();
        let mut cursor = 0;
        let first = next_free(subnet, &in_use, &mut cursor).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 1));
        in_use.insert(first);
        let second = next_free(subnet, &in_use, &mut cursor).unwrap();
        assert_eq!(second, Ipv4Addr::new(10, 0, 0, 2));
        in_use.insert(second);
        assert_eq!(next_free(subnet, &in_use, &mut cursor), None, "only .1 and .2 are usable in a /30");
        in_use.remove(&first);
        assert_eq!(next_free(subnet, &in_use, &mut cursor), Some(first), "the search wraps around");
    }

    proptest! {
        #[test]
        fn an_address_handed_out_is_in_the_subnet_and_never_one_in_use(
            prefix in 24u8..=30,
            taken in proptest::collection::btree_set(0u32..256, 0..40),
            cursor in 0u32..256,
        ) {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 9, 8, 0), prefix).unwrap();
            let in_use: BTreeSet<Ipv4Addr> = taken.iter().map(|o| Ipv4Addr::from(u32::from(subnet.network()) + o)).collect();
            let mut cursor = cursor % (1 << (32 - u32::from(prefix)));
            let usable = subnet.hosts().filter(|a| !in_use.contains(a)).count();
            match next_free(subnet, &in_use, &mut cursor) {
                Some(address) => {
                    prop_assert!(subnet.contains(&address));
                    prop_assert!(!in_use.contains(&address));
                    prop_assert!(address != subnet.network() && address != subnet.broadcast());
                }
                None => prop_assert_eq!(usable, 0),
            }
        }
    }
}
