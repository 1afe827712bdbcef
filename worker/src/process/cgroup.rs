//! Sandbox cgroups, v1 or v2 as detected at start. Each sandbox gets
//! `<worker's own cgroup>/<parent>/<sandbox id>` in every controller it needs (memory, cpu,
//! pids), with limits written before the process joins it.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::runtime::Resources;

/// CFS period used for CPU quotas, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One folder per controller; the sandbox parent folder in each.
    V1 {
        /// `<memory mount>/<own path>/<parent>`.
        memory: PathBuf,
        /// `<cpu mount>/<own path>/<parent>`.
        cpu: PathBuf,
        /// `<pids mount>/<own path>/<parent>`.
        pids: PathBuf,
    },
    /// The unified hierarchy: `<mount>/<own path>/<parent>`.
    V2 {
        /// The sandbox parent folder.
        parent: PathBuf,
    },
}

/// Creates, limits, empties and removes sandbox cgroups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    /// v1: the parent folder in every other hierarchy, where runc also puts a container
    /// (freezer, devices, …); removed with the sandbox and the parent.
    others: Vec<PathBuf>,
}

/// One sandbox's cgroup folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroup {
    /// Every folder of the sandbox, one per controller (v1) or one (v2).
    pub dirs: Vec<PathBuf>,
    /// The folder whose `cgroup.procs` lists the sandbox's processes and that holds the
    /// memory controller's OOM counter.
    pub memory_dir: PathBuf,
    v2: bool,
}

impl Cgroups {
    /// Detects the hierarchy and creates the parent folder(s). Fails when cgroups are not
    /// there or not writable, which the caller reports as isolation without a cgroup.
    pub fn detect(parent: &str) -> std::io::Result<Self> {
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let root = Path::new("/sys/fs/cgroup");
        let layout = if root.join("cgroup.controllers").exists() {
            let path = own_path(&own, |c| c.is_empty()).unwrap_or_default();
            Layout::V2 { parent: root.join(path.trim_start_matches('/')).join(parent) }
        } else {
            let find = |name: &str| -> std::io::Result<PathBuf> {
                let path = own_path(&own, |c| c.split(',').any(|c| c == name)).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no {name} cgroup controller in /proc/self/cgroup"),
                    )
                })?;
                Ok(root.join(name).join(path.trim_start_matches('/')).join(parent))
            };
            Layout::V1 { memory: find("memory")?, cpu: find("cpu")?, pids: find("pids")? }
        };
        let others = match layout {
            Layout::V2 { .. } => Vec::new(),
            Layout::V1 { .. } => own
                .lines()
                .filter_map(|line| {
                    let mut parts = line.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    let ours = controllers.split(',').any(|c| matches!(c, "memory" | "cpu" | "pids"));
                    // "0::" is the unified hierarchy of a hybrid machine, where runc goes too.
                    let mount = match controllers {
                        "" => root.join("unified"),
                        named => root.join(named.strip_prefix("name=").unwrap_or(named)),
                    };
                    (!ours && mount.is_dir()).then(|| mount.join(path.trim_start_matches('/')).join(parent))
                })
                .collect(),
        };
        let cgroups = Self { layout, others };
        cgroups.prepare_parent()?;
        Ok(cgroups)
    }

    /// "v1" or "v2".
    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }

    fn parents(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1 { memory, cpu, pids } => vec![memory, cpu, pids],
            Layout::V2 { parent } => vec![parent],
        }
    }

    fn prepare_parent(&self) -> std::io::Result<()> {
        for dir in self.parents() {
            fs::create_dir_all(dir)?;
        }
        if let Layout::V2 { parent } = &self.layout {
            // Controllers must be enabled on the way down; the worker's own cgroup holds the
            // worker process, so enabling there can fail ("no internal processes"). The
            // parent folder itself holds no process, so enabling in it works.
            if let Some(own) = parent.parent() {
                let _ = fs::write(own.join("cgroup.subtree_control"), "+memory +cpu +pids");
            }
            fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
        }
        Ok(())
    }

    /// The folders a sandbox named `name` has (whether or not they exist).
    pub fn sandbox(&self, name: &str) -> SandboxCgroup {
        match &self.layout {
            Layout::V1 { memory, cpu, pids } => SandboxCgroup {
                dirs: [memory, cpu, pids].into_iter().chain(&self.others).map(|p| p.join(name)).collect(),
                memory_dir: memory.join(name),
                v2: false,
            },
            Layout::V2 { parent } => {
                SandboxCgroup { dirs: vec![parent.join(name)], memory_dir: parent.join(name), v2: true }
            }
        }
    }

    /// Creates the sandbox's cgroup with `limits` and returns it with one open
    /// `cgroup.procs` per folder, for the child to join with.
    pub fn create(&self, name: &str, limits: &Resources) -> std::io::Result<(SandboxCgroup, Vec<OwnedFd>)> {
        let cg = self.sandbox(name);
        // A process sandbox lives in the controllers that limit it (the others are runc's).
        let limiting = match self.layout {
            Layout::V1 { .. } => 3,
            Layout::V2 { .. } => 1,
        };
        let result = (|| {
            for dir in &cg.dirs[..limiting] {
                fs::create_dir(dir)?;
            }
            let memory = (limits.memory_mib << 20).to_string();
            let quota = u64::from(limits.cpu_millis) * CPU_PERIOD_US / 1000;
            match &self.layout {
                Layout::V1 { .. } => {
                    fs::write(cg.dirs[0].join("memory.limit_in_bytes"), &memory)?;
                    fs::write(cg.dirs[1].join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    fs::write(cg.dirs[1].join("cpu.cfs_quota_us"), quota.to_string())?;
                    fs::write(cg.dirs[2].join("pids.max"), limits.pids.to_string())?;
                }
                Layout::V2 { .. } => {
                    let dir = &cg.dirs[0];
                    fs::write(dir.join("memory.max"), &memory)?;
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                    fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
                    fs::write(dir.join("pids.max"), limits.pids.to_string())?;
                }
            }
            cg.dirs[..limiting]
                .iter()
                .map(|dir| fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")).map(OwnedFd::from))
                .collect::<std::io::Result<Vec<_>>>()
        })();
        match result {
            Ok(fds) => Ok((cg, fds)),
            Err(e) => {
                let _ = cg.remove(Duration::from_millis(100));
                Err(e)
            }
        }
    }

    /// Removes the (empty) parent folders; fails quietly while sandboxes remain.
    pub fn remove_parent(&self) {
        for dir in self.parents().into_iter().chain(self.others.iter().map(PathBuf::as_path)) {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Names of the sandbox cgroups that exist now.
    pub fn existing(&self) -> Vec<String> {
        let Some(first) = self.parents().first().map(|p| p.to_path_buf()) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(first) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

impl SandboxCgroup {
    /// Pids of every process in the sandbox.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.memory_dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// How many times the kernel OOM-killed a process of this sandbox.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok())))
            .unwrap_or(0)
    }

    /// SIGKILLs every process still in the sandbox.
    pub fn kill_all(&self) {
        if self.v2
            && let Ok(mut f) = fs::OpenOptions::new().write(true).open(self.memory_dir.join("cgroup.kill"))
        {
            let _ = f.write_all(b"1");
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Kills what is left and removes every folder, waiting up to `patience` for exiting
    /// processes to leave.
    pub fn remove(&self, patience: Duration) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + patience;
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        return Err(std::io::Error::new(e.kind(), format!("removing cgroup {}: {e}", dir.display())));
                    }
                    Err(_) => {
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The path of the line in `/proc/self/cgroup` whose controller list satisfies `matches`.
fn own_path(text: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(controllers).then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::own_path;

    #[test]
    fn reads_own_cgroup_paths() {
        let text = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/unified\n";
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "memory")).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "cpu")).as_deref(), Some("/"));
        assert_eq!(own_path(text, |c| c.is_empty()).as_deref(), Some("/unified"));
        assert_eq!(own_path(text, |c| c == "pids"), None);
    }
}
