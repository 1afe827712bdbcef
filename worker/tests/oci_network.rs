//! Containers' networks against the real kernel: each container in a network namespace of
//! its own, listening on the port it chooses, reached through the worker's port mapping,
//! and kept by the packet filter from this host and from every other sandbox.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::time::Duration;

use baton_testkit::Registry;
use baton_worker::SandboxRuntime;
use baton_worker::runtime::Created;
use serde_json::{Value, json};
use support::oci::*;
use support::*;

/// What a connection stopped by the packet filter reports (EHOSTUNREACH, from its reject).
const FILTERED: &str = "No route to host";

/// The TCP ports listening in `pid`'s network namespace (`/proc/<pid>/net/tcp` is the
/// namespace of the process named).
fn listening(pid: u32) -> Vec<u16> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1)?.rsplit(':').next()?;
            (fields.get(3) == Some(&"0A")).then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect();
    ports.sort_unstable();
    ports
}

/// The address and port a container's record says it has inside its namespace.
fn inside(state: &Path, sandbox: &str) -> SocketAddrV4 {
    let record: Value =
        serde_json::from_slice(&std::fs::read(state.join("sandboxes").join(sandbox).join("sandbox.json")).unwrap())
            .unwrap();
    record["network"].as_str().expect("a container's record has its network").parse().unwrap()
}

/// Whether this host has a network interface called `name`.
fn has_link(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn veth(address: &Ipv4Addr) -> String {
    format!("baton{:08x}", u32::from(*address))
}

/// An IPv4 address of this host that is not loopback (the one its default route leaves by).
fn host_address() -> Ipv4Addr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("198.51.100.1:9").expect("this host has a route off loopback");
    match probe.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(address) if !address.is_loopback() => address,
        other => panic!("no address off loopback: {other}"),
    }
}

async fn answers(created: &Created) -> bool {
    let url = format!("http://{}/", created.endpoint);
    reqwest::get(url).await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_listens_on_the_port_it_chooses_in_a_network_of_its_own() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions_exposing(&registry, "acme/ports:1", &[7070]).await;
    let h = harness("oci-ports", 15940).await;

    // No port given: the image's one exposed port. Given: that one, for two sandboxes at
    // once on one worker, which a shared network could not hold.
    let exposed = h.runtime.create(id("exposed"), spec(&reference, &digest)).await.unwrap();
    let mut chosen = Vec::new();
    for name in ["chosen-1", "chosen-2"] {
        let mut s = spec(&reference, &digest);
        s.image.as_mut().unwrap().port = Some(9090);
        chosen.push(h.runtime.create(id(name), s).await.unwrap());
    }
    assert_eq!(listening(exposed.pid), [7070]);
    for created in &chosen {
        assert_eq!(listening(created.pid), [9090], "each in its own namespace, on the port it chose");
    }
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    for created in chosen.iter().chain([&exposed]) {
        assert_ne!(std::fs::read_link(format!("/proc/{}/ns/net", created.pid)).unwrap(), own);
        assert!(answers(created).await, "reached at its endpoint {}", created.endpoint);
    }
    let endpoints: std::collections::HashSet<&str> =
        chosen.iter().chain([&exposed]).map(|c| c.endpoint.as_str()).collect();
    assert_eq!(endpoints.len(), 3, "one host port each");
    assert_eq!(h.runtime.container_addresses(), 3);

    // Deleted, each takes its veth, address, port and mapping with it.
    let addresses: Vec<SocketAddrV4> =
        ["exposed", "chosen-1", "chosen-2"].iter().map(|s| inside(h.state.path(), s)).collect();
    assert!(addresses.iter().all(|a| has_link(&veth(a.ip()))));
    for name in ["exposed", "chosen-1", "chosen-2"] {
        h.runtime.delete(&id(name), Duration::from_secs(1)).await.unwrap();
    }
    h.assert_clean().await;
    let gone = eventually(Duration::from_secs(5), || addresses.iter().all(|a| !has_link(&veth(a.ip())))).await;
    assert!(gone, "the veths went with their namespaces");
    for created in chosen.iter().chain([&exposed]) {
        assert!(!answers(created).await, "nothing answers at {} any more", created.endpoint);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_neither_this_host_nor_any_other_sandbox() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions(&registry, "acme/mallory:1").await;
    // Endpoints on the host's own address, as on a real multi-host cell; one port of this
    // host opened to sandboxes (as an operator opens a router's). Outbound connections to
    // anywhere: private addresses, the containers' among them, are not refused by the
    // outbound policy, so what stops the attacks below is the containers' own rules.
    let host = host_address();
    let secret = TcpListener::bind("0.0.0.0:0").unwrap();
    let opened = TcpListener::bind("0.0.0.0:0").unwrap();
    let opened_port = opened.local_addr().unwrap().port();
    let h = harness_with("oci-net-filter", 15960, |c, _| {
        c.host = host.to_string();
        c.network.local_ports = vec![opened_port];
        c.network.outbound = baton_worker::config::Outbound::Any;
        // Uids of this test's own: every worker's table filters its uid range by its policy.
        (c.uid_range_start, c.uid_range_end) = (2_000_700_000, 2_000_700_099);
    })
    .await;

    let victim = h.runtime.create(id("victim"), spec(&reference, &digest)).await.unwrap();
    let victim_inside = inside(h.state.path(), "victim");
    let mut attacker = spec(&reference, &digest);
    attacker.image.as_mut().unwrap().command = vec!["/usr/local/bin/baton-fn-hostile".into()];
    let mallory = h.runtime.create(id("mallory"), attacker).await.unwrap();
    // A process sandbox (its own uid, this host's network) tries the same.
    let (_copy_dir, hostile) = world_reachable_copy(&bin("baton-fn-hostile"));
    let mut process = spec("", "");
    process.image = None;
    process.executable = hostile;
    let neighbour = h.runtime.create(id("neighbour"), process).await.unwrap();

    let secret_port = secret.local_addr().unwrap().port();
    let targets = [format!("{host}:{secret_port}"), victim.endpoint.clone(), victim_inside.to_string()];
    let allowed = format!("{host}:{opened_port}");
    let plan = json!({ "connect": targets.iter().chain([&allowed]).collect::<Vec<_>>() });
    for (who, attacker) in [("container", &mallory), ("process sandbox", &neighbour)] {
        let report: Value = reqwest::Client::new()
            .post(format!("http://{}/", attacker.endpoint))
            .json(&plan)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for target in &targets {
            let got = report["connect"][target.as_str()].as_str().unwrap_or_default();
            assert!(got.contains(FILTERED), "a {who} reached {target}: {got:?}");
        }
        assert_eq!(report["connect"][&allowed], json!("connected"), "a {who} reaches the opened port: {report}");
    }
    assert!(answers(&victim).await, "the worker, and the data plane, still reach it");

    for name in ["victim", "mallory", "neighbour"] {
        h.runtime.delete(&id(name), Duration::from_secs(1)).await.unwrap();
    }
    h.assert_clean().await;
}
