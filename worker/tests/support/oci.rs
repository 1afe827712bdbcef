//! What the container tests share: images of the sample functions in a real registry, and a
//! runtime with images on, private to one test, that checks nothing is left.

use std::time::Duration;

use baton_image::build::{LayerFile, RunConfig, layer, program_with_libraries, push};
use baton_image::{Credentials, ResolverSettings};
use baton_proto::SandboxId;
use baton_testkit::Registry;
use baton_worker::SandboxRuntime;
use baton_worker::config::{ImagesChoice, ImagesSection, ProcessSection};
use baton_worker::process::ProcessRuntime;
use baton_worker::runtime::{ImageLaunch, PortRequest, Resources, SandboxExit, SandboxSpec};
use tokio::sync::mpsc;

use super::*;

/// An image holding the sample functions (echo is the entrypoint) and a static busybox.
pub async fn push_functions(registry: &Registry, name: &str) -> (String, String) {
    push_functions_exposing(registry, name, &[]).await
}

/// [`push_functions`], the image exposing `ports`.
pub async fn push_functions_exposing(registry: &Registry, name: &str, ports: &[u16]) -> (String, String) {
    let mut files = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    files.extend(program_with_libraries(&bin("baton-fn-spin"), "/usr/local/bin/baton-fn-spin").unwrap());
    files.extend(program_with_libraries(&bin("baton-fn-hostile"), "/usr/local/bin/baton-fn-hostile").unwrap());
    let busybox = [LayerFile { path: "/bin/busybox".into(), source: "/bin/busybox".into() }];
    let layers = vec![layer(&files).unwrap(), layer(&busybox).unwrap()];
    let run = RunConfig {
        entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()],
        cmd: vec![],
        env: vec!["FROM_IMAGE=yes".into()],
        exposed_ports: ports.to_vec(),
        user: String::new(),
    };
    let reference = registry.image(name);
    let digest = push(&reference, layers, &run, &Credentials::Anonymous, &ResolverSettings::default()).await.unwrap();
    (reference, digest)
}

pub struct Harness {
    pub runtime: ProcessRuntime,
    pub exits: mpsc::UnboundedReceiver<SandboxExit>,
    pub parent: String,
    pub state: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

pub async fn harness(test: &str, port_base: u16) -> Harness {
    harness_with(test, port_base, |_, _| {}).await
}

/// [`harness`] with `change` made to the process runtime's config and the images'.
pub async fn harness_with(
    test: &str,
    port_base: u16,
    change: impl FnOnce(&mut ProcessSection, &mut ImagesSection),
) -> Harness {
    let mut config = process_config(test, port_base, 20);
    let parent = config.cgroup_parent.clone();
    let state = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut images =
        ImagesSection { enabled: ImagesChoice::On, cache_dir: cache.path().to_path_buf(), ..ImagesSection::default() };
    change(&mut config, &mut images);
    let (tx, exits) = mpsc::unbounded_channel();
    let runtime = ProcessRuntime::start_with(config, images, state.path(), tx).await.unwrap();
    Harness { runtime, exits, parent, state, cache }
}

impl Harness {
    /// Nothing left: no sandbox, port, cgroup, runc container or sandbox file.
    pub async fn assert_clean(&self) {
        assert!(self.runtime.list().await.is_empty(), "sandboxes still listed");
        assert_eq!(self.runtime.ports().in_use(), 0, "ports still held");
        assert_eq!(self.runtime.container_addresses(), 0, "container addresses still held");
        assert_eq!(self.runtime.uids_in_use(), 0, "sandbox uids still held");
        assert_eq!(leftover_cgroups(&self.parent), Vec::<std::path::PathBuf>::new(), "cgroups left");
        assert_eq!(files_in(&self.state.path().join("sandboxes")), Vec::<std::path::PathBuf>::new(), "files left");
        assert_eq!(files_in(&self.state.path().join("runc")), Vec::<std::path::PathBuf>::new(), "runc state left");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed test still leaves no container running.
        for entry in std::fs::read_dir(self.state.path().join("runc")).into_iter().flatten().flatten() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(self.state.path().join("runc"))
                .args(["delete", "--force"])
                .arg(entry.file_name())
                .output();
        }
        remove_cgroup_parent(&self.parent);
    }
}

pub fn spec(reference: &str, digest: &str) -> SandboxSpec {
    SandboxSpec {
        function_id: "acme.hello".into(),
        executable: Default::default(),
        args: vec![],
        env: Default::default(),
        port: PortRequest::Any,
        resources: Resources { cpu_millis: 500, memory_mib: 64, pids: 64 },
        readiness_timeout: Duration::from_secs(5),
        readiness_path: "/healthz".into(),
        image: Some(ImageLaunch {
            reference: reference.into(),
            digest: digest.into(),
            command: vec![],
            port: None,
            credentials: Credentials::Anonymous,
        }),
    }
}

pub fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

pub fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_string()
}
