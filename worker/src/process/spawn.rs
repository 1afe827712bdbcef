//! Starting a sandbox process: join its cgroup, enter new namespaces, drop privileges, exec.
//!
//! `unshare(CLONE_NEWPID)` puts only the caller's *children* in the new pid namespace, so
//! with namespaces the forked child unshares and forks once more: the grandchild becomes
//! pid 1 of the namespace and execs the function, and the child stays behind as a holder
//! that waits for it and ends the same way (same exit status, same signal). The worker
//! waits for the holder; it signals the function's pid directly.
//!
//! This is the only module with `unsafe`: `pre_exec` runs between fork and exec, where only
//! async-signal-safe calls are allowed. Everything the closure needs (paths, file
//! descriptors, ids) is prepared before the fork; inside it there is no allocation, only
//! raw system calls.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

/// Everything needed to start one sandbox process.
pub struct SpawnPlan {
    /// Absolute path of the executable.
    pub executable: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Where stdout goes.
    pub stdout: File,
    /// Where stderr goes.
    pub stderr: File,
    /// One open `cgroup.procs` per cgroup folder to join.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Enter new pid, mount, ipc and uts namespaces.
    pub namespaces: bool,
    /// Host name inside the uts namespace.
    pub hostname: String,
    /// Run as this user and group.
    pub user: Option<(Uid, Gid)>,
    /// Seccomp programs installed last before exec (after the user switch): the sandbox
    /// and all it starts stay under them.
    pub seccomp: Option<super::seccomp::Filters>,
}

/// The processes of a started sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Spawned {
    /// The function's process, as the worker sees its pid.
    pub main_pid: i32,
    /// The child the worker waits for: the holder with namespaces, else the main process.
    pub waited_pid: i32,
}

/// Starts the plan's process. Returns once exec succeeded (or failed, with the error).
pub fn spawn(plan: SpawnPlan) -> std::io::Result<Spawned> {
    let mut command = Command::new(&plan.executable);
    command
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(plan.stdout)
        .stderr(plan.stderr)
        // Its own process group: a Ctrl-C meant for the worker does not reach sandboxes.
        .process_group(0);

    let cgroup_fds: Vec<i32> = plan.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect();
    let namespaces = plan.namespaces;
    let hostname = plan.hostname;
    let user = plan.user;
    let seccomp = plan.seccomp;
    let oom_adj_path = CString::new("/proc/self/oom_score_adj").expect("no NUL in a literal");

    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe system calls (write, unshare, mount, sethostname, fork, waitpid,
    // open, close_range, kill, setgroups/setgid/setuid, prctl, seccomp, _exit) on data
    // prepared above, and allocates nothing (but on a failure it reports).
    unsafe {
        command.pre_exec(move || {
            for fd in &cgroup_fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if namespaces {
                let flags = CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWUTS;
                nix::sched::unshare(flags)?;
                // Mounts made inside must not propagate back to the host.
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                nix::unistd::sethostname(&hostname)?;
                hold_and_fork(&oom_adj_path)?;
                // Now pid 1 of the new pid namespace: a /proc of its own, so the function
                // sees only its own processes, not the host's.
                nix::mount::mount(
                    Some("proc"),
                    "/proc",
                    Some("proc"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
                    None::<&str>,
                )?;
            }
            if let Some((uid, gid)) = user {
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
            }
            // Sets no_new_privs, then the filter: a raw prctl and seccomp(2) on programs
            // compiled before the fork.
            for program in seccomp.iter().flat_map(|p| p.iter()) {
                seccompiler::apply_filter(program).map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let waited_pid = child.id() as i32;
    // The child is waited for by the reaper, never through `Child`.
    drop(child);
    // A function that exited at once has no pid left to find; its holder ends with the
    // same status right away, which the caller sees as an exit during start-up.
    let main_pid = if namespaces { find_child(waited_pid).unwrap_or(waited_pid) } else { waited_pid };
    Ok(Spawned { main_pid, waited_pid })
}

/// In the forked child: forks again. The new process returns (and goes on to exec as pid 1
/// of the new pid namespace); this one becomes the holder and never returns.
///
/// SAFETY (for the caller): only call between fork and exec.
unsafe fn hold_and_fork(oom_adj_path: &CString) -> std::io::Result<()> {
    // SAFETY: we are single-threaded between fork and exec.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(()),
        nix::unistd::ForkResult::Parent { child } => {
            // SAFETY: raw system calls on prepared data; this process only waits and exits.
            unsafe {
                // Close everything but stdio, above all std's exec-status pipe, so the
                // worker learns of the grandchild's exec, not of this process.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                // The OOM killer must pick the function, never its holder.
                let fd = libc::open(oom_adj_path.as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, b"-1000".as_ptr().cast(), 5);
                    libc::close(fd);
                }
                let mut status = 0;
                loop {
                    let r = libc::waitpid(child.as_raw(), &mut status, 0);
                    if r == child.as_raw() {
                        break;
                    }
                    if r < 0 && *libc::__errno_location() != libc::EINTR {
                        libc::_exit(127);
                    }
                }
                if libc::WIFSIGNALED(status) {
                    let signal = libc::WTERMSIG(status);
                    libc::signal(signal, libc::SIG_DFL);
                    libc::kill(libc::getpid(), signal);
                    libc::_exit(128 + signal);
                }
                libc::_exit(libc::WEXITSTATUS(status));
            }
        }
    }
}

/// The single child of holder `pid` (it has exec'd by the time spawn returns), if it still
/// runs.
fn find_child(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next().and_then(|p| p.parse().ok())
}
