//! Reaps every child of the worker process, sandboxes and orphans alike.
//!
//! The worker is a child subreaper, so processes orphaned inside a sandbox are re-parented
//! to it and must be reaped here. One thread per process calls `waitpid(-1)` and hands each
//! exit status to whoever registered for that pid. Nothing else in the worker may wait for
//! children (no `tokio::process`, no `Child::wait`): this thread would steal their statuses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// Exited with this status.
    Code(i32),
    /// Ended by this signal.
    Signal(i32),
}

/// Statuses of pids nobody has registered for yet (a child that exits before `watch` is
/// called); bounded so orphans we never asked about cannot grow it.
const MAX_UNCLAIMED: usize = 4096;

#[derive(Default)]
struct State {
    waiting: HashMap<i32, oneshot::Sender<ChildExit>>,
    unclaimed: VecDeque<(i32, ChildExit)>,
}

/// The process-wide reaper.
pub struct Reaper {
    state: Mutex<State>,
    wake: Condvar,
}

impl Reaper {
    /// The reaper, started on first use. It also makes this process a child subreaper.
    pub fn get() -> &'static Reaper {
        static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
        REAPER.get_or_init(|| {
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!(error = %e, "could not become a child subreaper; orphans of sandboxes go to init");
            }
            let reaper: &'static Reaper = Box::leak(Box::new(Reaper { state: Mutex::default(), wake: Condvar::new() }));
            std::thread::Builder::new()
                .name("baton-reaper".into())
                .spawn(move || reaper.run())
                .expect("spawning the reaper thread");
            reaper
        })
    }

    /// Returns a receiver that resolves when `pid` (a child of this process) ends.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ChildExit> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state.lock().expect("reaper lock");
        if let Some(pos) = state.unclaimed.iter().position(|(p, _)| *p == pid) {
            let (_, exit) = state.unclaimed.remove(pos).expect("position is valid");
            let _ = tx.send(exit);
        } else {
            state.waiting.insert(pid, tx);
        }
        drop(state);
        self.wake.notify_one();
        rx
    }

    /// Tells the reaper a child may now exist (after a spawn).
    pub fn notify_spawned(&self) {
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => self.deliver(status),
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until a spawn, or briefly in case an orphan arrives.
                    let state = self.state.lock().expect("reaper lock");
                    let _ = self.wake.wait_timeout(state, Duration::from_millis(200));
                }
            }
        }
    }

    fn deliver(&self, status: WaitStatus) {
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (pid.as_raw(), ChildExit::Code(code)),
            WaitStatus::Signaled(pid, signal, _) => (pid.as_raw(), ChildExit::Signal(signal as i32)),
            _ => return,
        };
        let mut state = self.state.lock().expect("reaper lock");
        match state.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => {
                if state.unclaimed.len() == MAX_UNCLAIMED {
                    state.unclaimed.pop_front();
                }
                state.unclaimed.push_back((pid, exit));
            }
        }
    }
}
