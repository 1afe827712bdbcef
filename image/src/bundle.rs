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
use std::path::{Path, PathBuf};

use baton_model::sandbox::{CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS};
use oci_spec::runtime::Capabilities;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
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
    /// `User`: `uid`, `uid:gid`, `name` or `name:group`; empty: the image does not say.
    pub user: String,
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
            user: config["User"].as_str().unwrap_or_default().to_string(),
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
    /// Run in a new user namespace with these ids mapped; `uid` and `gid` are then the
    /// ids inside it. `None`: no user namespace, and `uid`/`gid` are the host's.
    pub id_maps: Option<IdMaps>,
    /// The cgroup runc puts it in (a path under each controller's root).
    pub cgroups_path: String,
    /// CPU, thousandths of a core.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Most processes.
    pub pids: u32,
}

/// The ids a user namespace maps, each one id of the container's to one of the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// `(container uid, host uid)` pairs.
    pub uids: Vec<(u32, u32)>,
    /// `(container gid, host gid)` pairs.
    pub gids: Vec<(u32, u32)>,
}

/// The uid and gid an image's `User` names: numbers as they are, names looked up in the
/// image's own `/etc/passwd` and `/etc/group` (their contents, when the image has them).
/// A name without a group takes the user's primary group; a number without one, gid 0
/// as Docker does. `None` when `user` is empty.
pub fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Option<(u32, u32)>, BundleError> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| BundleError::BadUser { user: user.to_string(), why };
    let (name, group_name) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:password:uid:gid:… and name:password:gid:…
    let passwd_entry = |name: &str| {
        passwd
            .into_iter()
            .flat_map(str::lines)
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
    };
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let fields =
                passwd_entry(name).ok_or_else(|| bad(format!("no user {name:?} in the image's /etc/passwd")))?;
            let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok());
            let uid = number(2).ok_or_else(|| bad(format!("the image's /etc/passwd entry of {name:?} has no uid")))?;
            (uid, number(3))
        }
    };
    let gid = match group_name {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .into_iter()
                .flat_map(str::lines)
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2).and_then(|v| v.parse::<u32>().ok()))
                .ok_or_else(|| bad(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    Ok(Some((uid, gid)))
}

/// Makes the folders the runtime spec mounts over (`/proc`, `/dev`, `/sys`, `/tmp`) in
/// `rootfs` where the image lacks them: runc makes them itself when it runs as the host's
/// root, but not from a user namespace. Whatever is there already stays (a symlink is
/// never followed).
pub fn mount_points(rootfs: &Path) -> std::io::Result<()> {
    for folder in ["proc", "dev", "sys", "tmp"] {
        let path = rootfs.join(folder);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    /// The image's `User` names no user of the image.
    #[error("the image's User {user:?}: {why}")]
    BadUser {
        /// As the image config says it.
        user: String,
        /// What is wrong.
        why: String,
    },
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
    .chain(
        launch
            .id_maps
            .iter()
            .map(|_| LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).build().map_err(fail)),
    )
    .collect::<Result<Vec<_>, _>>()?;
    let quota = (u64::from(launch.cpu_millis) * CPU_PERIOD_US / 1000).max(1000) as i64;
    let memory = (launch.memory_mib * 1024 * 1024) as i64;
    let resources = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).build().map_err(fail)?)
        .memory(LinuxMemoryBuilder::default().limit(memory).swap(memory).build().map_err(fail)?)
        .pids(LinuxPidsBuilder::default().limit(i64::from(launch.pids)).build().map_err(fail)?)
        .build()
        .map_err(fail)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .seccomp(seccomp().map_err(fail)?)
        .cgroups_path(PathBuf::from(&launch.cgroups_path))
        .build()
        .map_err(fail)?;
    if let Some(maps) = &launch.id_maps {
        let map = |pairs: &[(u32, u32)]| {
            pairs
                .iter()
                .map(|&(container, host)| {
                    LinuxIdMappingBuilder::default()
                        .container_id(container)
                        .host_id(host)
                        .size(1u32)
                        .build()
                        .map_err(fail)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        linux.set_uid_mappings(Some(map(&maps.uids)?));
        linux.set_gid_mappings(Some(map(&maps.gids)?));
    }
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
    if launch.id_maps.is_some() {
        // In a user namespace: `devpts`'s `gid=5` is no gid of the namespace's, and sysfs
        // (and the cgroup file system under it) may only be mounted by the owner of the
        // network namespace, which is the host's.
        mounts.retain(|m| !m.destination().starts_with("/sys"));
        for mount in &mut mounts {
            if let Some(options) = mount.options().clone() {
                mount.set_options(Some(options.into_iter().filter(|o| !o.starts_with("gid=")).collect()));
            }
        }
    }
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
