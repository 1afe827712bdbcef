//! Container sandboxes against process sandboxes of the same program (not a test), in one
//! run on one machine: create-to-ready of `baton-fn-echo` as a process and as an image
//! already in the worker's cache (with where the time goes); a cold start that pulls a 5 MB
//! and a 50 MB image from a local registry; 50 cold starts of one image at once (one pull,
//! and the creation rate); warm calls straight to each kind of sandbox with wrk.
//!
//! Run as root with Debian's runc, docker-registry and wrk, after building the release
//! binaries:
//!   cargo build --release --bins && cargo bench -p baton-worker --bench oci
//! Optional: `-- --n 100 --concurrent 50 --pulls 5`.
#![allow(missing_docs)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_image::build::{LayerFile, RunConfig, layer, program_with_libraries, push};
use baton_image::{Credentials, ResolverSettings};
use baton_proto::SandboxId;
use baton_testkit::Registry;
use baton_worker::SandboxRuntime;
use baton_worker::config::{ImagesChoice, ImagesSection, ProcessSection};
use baton_worker::process::ProcessRuntime;
use baton_worker::runtime::{Created, ImageLaunch, PortRequest, Resources, SandboxSpec};
use common::{arg, percentile, release_bin};

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Pushes an image of echo (and `extra` bytes of incompressible data in a layer of their
/// own) as `name`; its reference and digest.
async fn push_echo(registry: &Registry, name: &str, extra: usize) -> (String, String) {
    let echo = release_bin("baton-fn-echo");
    let mut layers = vec![layer(&program_with_libraries(&echo, "/usr/local/bin/baton-fn-echo").unwrap()).unwrap()];
    if extra > 0 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut file = std::fs::File::create(&data).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ extra as u64;
        let mut chunk = vec![0u8; 1 << 16];
        for _ in 0..extra.div_ceil(chunk.len()) {
            for byte in chunk.iter_mut() {
                // xorshift: bytes gzip cannot shrink, so the layer is as large as asked.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            file.write_all(&chunk).unwrap();
        }
        layers.push(layer(&[LayerFile { path: "/data/blob".into(), source: data }]).unwrap());
    }
    let run = RunConfig { entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()], ..RunConfig::default() };
    let reference = registry.image(name);
    let digest = push(&reference, layers, &run, &Credentials::Anonymous, &ResolverSettings::default()).await.unwrap();
    (reference, digest)
}

fn spec(image: Option<(&str, &str)>, executable: PathBuf) -> SandboxSpec {
    SandboxSpec {
        function_id: "echo".into(),
        executable: if image.is_some() { PathBuf::new() } else { executable },
        args: vec![],
        env: Default::default(),
        port: PortRequest::Any,
        resources: Resources { cpu_millis: 500, memory_mib: 64, pids: 64 },
        readiness_timeout: Duration::from_secs(30),
        readiness_path: "/healthz".into(),
        image: image.map(|(reference, digest)| ImageLaunch {
            reference: reference.into(),
            digest: digest.into(),
            command: vec![],
            port: None,
            credentials: Credentials::Anonymous,
        }),
    }
}

struct Row {
    samples: Vec<Duration>,
    created: Vec<Created>,
}

impl Row {
    fn print(mut self, label: &str, wall: Duration) {
        self.samples.sort();
        let n = self.samples.len() as u32;
        let mean = |f: fn(&Created) -> Duration| ms(self.created.iter().map(f).sum::<Duration>() / n);
        println!(
            "| {label} | {} | {} | {} | {} / {} / {} / {} | {:.1} |",
            n,
            ms(percentile(&self.samples, 0.5)),
            ms(percentile(&self.samples, 0.99)),
            mean(|c| c.latency.image),
            mean(|c| c.latency.cgroup),
            mean(|c| c.latency.spawn),
            mean(|c| c.latency.readiness),
            f64::from(n) / wall.as_secs_f64(),
        );
    }
}

/// `n` creations one after another (each deleted before the next), or all at once.
async fn creations(
    runtime: &ProcessRuntime,
    spec: &SandboxSpec,
    n: usize,
    at_once: bool,
    tag: &str,
) -> (Row, Duration) {
    let started = Instant::now();
    let mut row = Row { samples: Vec::new(), created: Vec::new() };
    if at_once {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (runtime, spec) = (runtime.clone(), spec.clone());
            let id = SandboxId::new(format!("{tag}-{i}")).unwrap();
            tasks.spawn(async move {
                let t = Instant::now();
                let created = runtime.create(id.clone(), spec).await.unwrap();
                (id, t.elapsed(), created)
            });
        }
        let done = tasks.join_all().await;
        let wall = started.elapsed();
        for (id, took, created) in done {
            runtime.delete(&id, Duration::from_secs(2)).await.unwrap();
            row.samples.push(took);
            row.created.push(created);
        }
        return (row, wall);
    }
    for i in 0..n {
        let id = SandboxId::new(format!("{tag}-{i}")).unwrap();
        let t = Instant::now();
        let created = runtime.create(id.clone(), spec.clone()).await.unwrap();
        row.samples.push(t.elapsed());
        row.created.push(created);
        runtime.delete(&id, Duration::from_secs(2)).await.unwrap();
    }
    let wall = started.elapsed();
    (row, wall)
}

/// wrk -t1 -c32 for 5 s against `endpoint`: calls/s, p50 and p99. Its output is read to
/// the end and its exit left to the runtime's reaper, which collects every child.
#[allow(clippy::zombie_processes)]
fn wrk(endpoint: &str) -> String {
    use std::io::Read;
    let mut child = std::process::Command::new("wrk")
        .args(["-t1", "-c32", "-d5s", "--latency", &format!("http://{endpoint}/")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (apt-get install wrk)");
    let mut text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.split_whitespace().next().unwrap_or("").to_string()))
            .unwrap_or_default()
    };
    format!("{} | {} | {}", find("Requests/sec:"), find("50%"), find("99%"))
}

/// Kills whatever is left in the bench's sandbox cgroups when the bench ends, however.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        baton_testkit::kill_sandboxes(&self.0);
    }
}

#[tokio::main]
async fn main() {
    let (n, concurrent, pulls) = (arg("--n", 100), arg("--concurrent", 50), arg("--pulls", 5));
    let registry = Registry::start().await;
    // Every image is pushed before the runtime starts: its reaper collects every child of
    // the process, `ldd` included.
    let (echo_ref, echo_digest) = push_echo(&registry, "bench/echo:1", 0).await;
    let mut sized = Vec::new();
    for (label, extra) in [("5 MB", 5usize << 20), ("50 MB", 50 << 20)] {
        sized.push((label, push_echo(&registry, &format!("bench/data:{}", extra >> 20), extra).await));
    }
    let (herd_ref, herd_digest) = push_echo(&registry, "bench/herd:1", 5 << 20).await;
    let state = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let parent = format!("baton-bench-oci-{}", std::process::id());
    // A run that fails half way leaves no sandbox running.
    let _cleanup = Cleanup(parent.clone());
    let config = ProcessSection {
        port_range_start: 17000,
        port_range_end: 17199,
        cgroup_parent: parent.clone(),
        ..ProcessSection::default()
    };
    let images =
        ImagesSection { enabled: ImagesChoice::On, cache_dir: cache.path().to_path_buf(), ..ImagesSection::default() };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = ProcessRuntime::start_with(config, images, state.path(), tx).await.unwrap();
    let reachable = tempfile::Builder::new().prefix("baton-bench-fn-").tempdir_in("/tmp").unwrap();
    let echo = baton_worker::process::reachable_copy(&release_bin("baton-fn-echo"), reachable.path()).unwrap();
    let process = spec(None, echo.clone());
    let container = spec(Some((&echo_ref, &echo_digest)), echo.clone());
    // Warm-up (and the image into the cache).
    creations(&runtime, &process, 5, false, "warm-p").await;
    creations(&runtime, &container, 5, false, "warm-c").await;

    println!("| sandbox | creations | p50 ms | p99 ms | mean image / cgroup / spawn / readiness ms | creations/s |");
    println!("|---|---|---|---|---|---|");
    for round in 0..2 {
        let (row, wall) = creations(&runtime, &process, n, false, &format!("p{round}")).await;
        row.print("process, one at a time", wall);
        let (row, wall) = creations(&runtime, &container, n, false, &format!("c{round}")).await;
        row.print("oci, image cached, one at a time", wall);
    }

    for (label, (reference, digest)) in &sized {
        let pulling = spec(Some((reference, digest)), echo.clone());
        let mut row = Row { samples: Vec::new(), created: Vec::new() };
        let started = Instant::now();
        for i in 0..pulls {
            let (one, _) = creations(&runtime, &pulling, 1, false, &format!("pull-{}-{i}", label.len())).await;
            row.samples.extend(one.samples);
            row.created.extend(one.created);
            // Gone from the cache: the next creation pulls again.
            runtime.drop_image(digest).await;
        }
        row.print(&format!("oci, pulls a {label} image"), started.elapsed());
    }

    let herd = spec(Some((&herd_ref, &herd_digest)), echo.clone());
    let (row, wall) = creations(&runtime, &herd, concurrent, true, "herd").await;
    let pulled = row.created.iter().filter(|c| c.pulled_image).count();
    row.print(&format!("oci, {concurrent} cold starts of one 5 MB image at once ({pulled} pulled it)"), wall);
    let (row, wall) = creations(&runtime, &process, concurrent, true, "herd-p").await;
    row.print(&format!("process, {concurrent} cold starts at once"), wall);

    println!("\n| sandbox | calls/s | p50 | p99 |\n|---|---|---|---|");
    let p = runtime.create(SandboxId::new("warm-process").unwrap(), process.clone()).await.unwrap();
    let c = runtime.create(SandboxId::new("warm-oci").unwrap(), container.clone()).await.unwrap();
    for _ in 0..2 {
        println!("| process | {} |", wrk(&p.endpoint));
        println!("| oci | {} |", wrk(&c.endpoint));
    }
    runtime.shutdown(true, Duration::from_secs(2)).await;
}
