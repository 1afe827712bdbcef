//! The OCI runtime spec (`config.json`) a sandbox runs with under runc: the image's
//! entrypoint, command, environment and working folder, the function's overrides, and
//! baton's isolation. Pure: the worker writes it beside the rootfs and runs `runc`.
//!
//! What a container gets: its own pid, ipc, uts, mount and cgroup namespaces and the host's
//! network (the worker's packet filter applies to it by its uid, as to a process
//! sandbox); the sandbox's own unprivileged uid and gid; a read-only rootfs with a private
//! `/tmp`; no new privileges and no capabilities; CPU, memory and pids limits; the
//! command resolved as Kubernetes does (the function's `command` replaces the entrypoint,
//! its `args` the image's `Cmd`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use baton_model::sandbox::{CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS};
use oci_spec::runtime::Capabilities;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// What an image's config says about running it (`config` of the image config JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`; empty: `/`.
    pub working_dir: String,
    /// The TCP ports of `ExposedPorts` (`"8080/tcp"` or `"8080"`), ascending; other
    /// protocols and malformed keys are left out.
    pub exposed_ports: Vec<u16>,
}

impl ImageConfig {
    /// Reads an image config (the JSON blob a manifest's `config` names).
    pub fn parse(json: &[u8]) -> Result<Self, BundleError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| BundleError::BadConfig(e.to_string()))?;
        let config = &value["config"];
        let strings = |key: &str| -> Vec<String> {
            config[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
        };
        Ok(Self {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: config["WorkingDir"].as_str().unwrap_or_default().to_string(),
            exposed_ports: exposed_tcp_ports(&config["ExposedPorts"]),
        })
    }

    /// The port a function listens on in its sandbox when it does not say: the image's
    /// one exposed TCP port, else `fallback` (also when it exposes several: which one
    /// serves HTTP is the function's to say).
    pub fn default_port(&self, fallback: u16) -> u16 {
        match self.exposed_ports.as_slice() {
            [only] => *only,
            _ => fallback,
        }
    }
}

fn exposed_tcp_ports(value: &serde_json::Value) -> Vec<u16> {
    let mut ports: Vec<u16> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| match key.split_once('/') {
            Some((port, proto)) if proto.eq_ignore_ascii_case("tcp") => port.parse().ok(),
            Some(_) => None,
            None => key.parse().ok(),
        })
        .filter(|port| *port != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// How one sandbox runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The function's `command`: replaces the image's entrypoint (and its `Cmd`).
    pub command: Option<Vec<String>>,
    /// The function's `args`: replace the image's `Cmd`.
    pub args: Option<Vec<String>>,
    /// The function's environment and baton's (`PORT`), over the image's.
    pub env: BTreeMap<String, String>,
    /// The sandbox's own uid and gid.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The rootfs (read-only).
    pub rootfs: PathBuf,
    /// The container's host name.
    pub hostname: String,
    /// The network namespace to join (a path runc opens); `None`: the host's network.
    pub netns: Option<PathBuf>,
    /// The cgroup runc puts it in (a path under each controller's root).
    pub cgroups_path: String,
    /// CPU, thousandths of a core.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Most processes.
    pub pids: u32,
}

/// Why no spec could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The image config is not JSON of the expected shape.
    #[error("the image config: {0}")]
    BadConfig(String),
    /// Neither the function nor the image says what to run.
    #[error("nothing to run: the image has no Entrypoint or Cmd and the function gives no command")]
    NoCommand,
    /// The spec could not be built.
    #[error("the runtime spec: {0}")]
    Spec(String),
}

/// CFS period the CPU quota is set against, microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// The argv: the function's command and args over the image's entrypoint and `Cmd`.
pub fn argv(image: &ImageConfig, command: Option<&[String]>, args: Option<&[String]>) -> Vec<String> {
    match (command, args) {
        (Some(command), args) => command.iter().chain(args.into_iter().flatten()).cloned().collect(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The environment: the image's, then `over` (by name), with a default `PATH`.
pub fn environment(image: &[String], over: &BTreeMap<String, String>) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for pair in image {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        set(name, value);
    }
    for (name, value) in over {
        set(name, value);
    }
    if !merged.iter().any(|(n, _)| n == "PATH") {
        merged.insert(0, ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
    }
    merged.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The sandbox's seccomp filter: everything else allowed, `DENIED_SYSCALLS` (baton-model)
/// refused,
/// `clone` refused when it asks for a namespace, `clone3` answered `ENOSYS` (its flags
/// sit behind a pointer a filter cannot read, and C libraries fall back to `clone`).
fn seccomp() -> Result<oci_spec::runtime::LinuxSeccomp, oci_spec::OciSpecError> {
    use oci_spec::runtime::{
        LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder,
    };
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    let denied = LinuxSyscallBuilder::default()
        .names(DENIED_SYSCALLS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()?;
    // One rule per flag (rules for one syscall are alternatives; MASKED_EQ takes the mask
    // in `value` and the datum in `value_two`): clone asking for that namespace is refused.
    let mut rules = vec![denied];
    for flag in CLONE_NAMESPACE_FLAGS {
        rules.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(flag)
                        .value_two(flag)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()?,
                ])
                .build()?,
        );
    }
    let clone3 = LinuxSyscallBuilder::default()
        .names(vec!["clone3".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(ENOSYS)
        .build()?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            oci_spec::runtime::Arch::ScmpArchX86_64,
            oci_spec::runtime::Arch::ScmpArchX86,
            oci_spec::runtime::Arch::ScmpArchX32,
        ])
        .syscalls({
            rules.push(clone3);
            rules
        })
        .build()
}

/// The runtime spec of one sandbox.
pub fn runtime_spec(image: &ImageConfig, launch: &Launch) -> Result<Spec, BundleError> {
    let fail = |e: oci_spec::OciSpecError| BundleError::Spec(e.to_string());
    let args = argv(image, launch.command.as_deref(), launch.args.as_deref());
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let cwd = if image.working_dir.is_empty() { "/".to_string() } else { image.working_dir.clone() };
    let user = UserBuilder::default().uid(launch.uid).gid(launch.gid).build().map_err(fail)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args)
        .env(environment(&image.env, &launch.env))
        .cwd(cwd)
        .no_new_privileges(true)
        .capabilities(
            oci_spec::runtime::LinuxCapabilitiesBuilder::default()
                .bounding(Capabilities::new())
                .effective(Capabilities::new())
                .inheritable(Capabilities::new())
                .permitted(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .map_err(fail)?,
        )
        .build()
        .map_err(fail)?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().map_err(fail))
    .chain(launch.netns.iter().map(|path| {
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(path.clone()).build().map_err(fail)
    }))
    .collect::<Result<Vec<_>, _>>()?;
    let quota = (u64::from(launch.cpu_millis) * CPU_PERIOD_US / 1000).max(1000) as i64;
    let memory = (launch.memory_mib * 1024 * 1024) as i64;
    let resources = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).build().map_err(fail)?)
        .memory(LinuxMemoryBuilder::default().limit(memory).swap(memory).build().map_err(fail)?)
        .pids(LinuxPidsBuilder::default().limit(i64::from(launch.pids)).build().map_err(fail)?)
        .build()
        .map_err(fail)?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .seccomp(seccomp().map_err(fail)?)
        .cgroups_path(PathBuf::from(&launch.cgroups_path))
        .build()
        .map_err(fail)?;
    let tmp = MountBuilder::default()
        .destination("/tmp")
        .typ("tmpfs")
        .source("tmpfs")
        // Owned by the sandbox: runc gives a tmpfs the mode of the folder under it, which an
        // image may have made 0755 for root.
        .options(vec![
            "nosuid".into(),
            "nodev".into(),
            "mode=1777".into(),
            format!("uid={}", launch.uid),
            format!("gid={}", launch.gid),
            "size=65536k".into(),
        ])
        .build()
        .map_err(fail)?;
    let mut mounts = oci_spec::runtime::get_default_mounts();
    mounts.push(tmp);
    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(&launch.rootfs).readonly(true).build().map_err(fail)?)
        .process(process)
        .hostname(launch.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(fail)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
