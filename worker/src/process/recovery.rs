//! Start-up recovery: a worker killed with SIGKILL leaves its sandboxes running. The next
//! worker process re-adopts every sandbox whose record names a live process with the
//! recorded start time (so control-plane recovery can keep it), and cleans up everything
//! else it finds: folders without a live process, and cgroups without a record.
//!
//! A re-adopted sandbox is not a child of this process, so its exit is noticed by polling
//! `/proc/<pid>` (`process.adopted_poll_interval`) and its exit status is unknown; an OOM
//! kill is still recognised from the cgroup's counter.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use baton_proto::SandboxId;
use tokio::sync::watch;

use super::record::{self, SandboxRecord};
use super::table::{Entry, Phase};
use super::{ProcessRuntime, classify};
use crate::runtime::{SandboxState, SandboxSummary};

/// Re-adopts or cleans up what a previous worker process left in the state folder.
pub async fn recover(runtime: &ProcessRuntime) {
    let inner = &runtime.inner;
    let mut adopted = HashSet::new();
    let Ok(folders) = std::fs::read_dir(&inner.dir) else {
        return;
    };
    for folder in folders.filter_map(Result::ok) {
        let name = folder.file_name().to_string_lossy().into_owned();
        let dir = folder.path();
        let Ok(id) = SandboxId::new(name.as_str()) else {
            tracing::warn!(path = %dir.display(), "ignoring a folder that is not a sandbox ID");
            continue;
        };
        match record::read(&dir) {
            Ok(rec) if record::start_ticks(rec.main_pid) == Some(rec.start_ticks) && rec.id == name => {
                adopt(runtime, id, rec, &dir).await;
                adopted.insert(name);
            }
            outcome => {
                let why = match outcome {
                    Ok(_) => "its process is gone".to_string(),
                    Err(e) => format!("no readable record ({e})"),
                };
                tracing::info!(sandbox = %id, %why, "cleaning up a sandbox left by a previous worker");
                if let Some(containers) = &inner.containers {
                    containers.delete(id.as_str()).await;
                }
                if let Some(cgroups) = &inner.cgroups {
                    let _ = cgroups.sandbox(id.as_str()).remove(Duration::from_secs(2));
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    if let Some(containers) = &inner.containers {
        for name in containers.known().into_iter().filter(|n| !adopted.contains(n)) {
            tracing::info!(container = %name, "removing a container with no sandbox");
            containers.delete(&name).await;
        }
    }
    if let Some(cgroups) = &inner.cgroups {
        for name in cgroups.existing().into_iter().filter(|n| !adopted.contains(n)) {
            tracing::info!(cgroup = %name, "removing a sandbox cgroup with no record");
            if let Err(e) = cgroups.sandbox(&name).remove(Duration::from_secs(2)) {
                tracing::error!(error = %e, "could not remove a stale sandbox cgroup");
            }
        }
    }
    if !adopted.is_empty() {
        tracing::info!(count = adopted.len(), "re-adopted sandboxes left running by a previous worker");
    }
}

async fn adopt(runtime: &ProcessRuntime, id: SandboxId, rec: SandboxRecord, dir: &Path) {
    let inner = &runtime.inner;
    inner.ports.reserve(rec.port);
    if let (Some(digest), Some(containers)) = (&rec.image, &inner.containers) {
        let lease = containers.cache().cached(digest);
        if lease.is_none() {
            tracing::warn!(sandbox = %id, %digest, "re-adopted a container whose image is not in the cache");
        }
        inner.images.lock().expect("images lock").insert(id.clone(), lease);
        if let Some(inside) = rec.network {
            containers.readopt(&id, inner.netfilter.as_ref(), rec.port, inside).await;
        }
    }
    if let (Some(pool), Some(uid)) = (&inner.uids, rec.uid) {
        pool.reserve(id.as_str(), uid);
    }
    if let (Some(pool), Some(uid)) = (&inner.uids, rec.root_uid) {
        pool.reserve(&super::root_key(&id), uid);
    }
    let cgroup = rec.isolation.cgroup.as_ref().and_then(|_| inner.cgroups.as_ref()).map(|c| c.sandbox(id.as_str()));
    let (tx, rx) = watch::channel(None);
    let endpoint = SocketAddr::new(inner.host, rec.port).to_string();
    let entry = Entry {
        summary: SandboxSummary {
            id: id.clone(),
            function_id: rec.function_id.clone(),
            endpoint,
            pid: rec.main_pid as u32,
            state: SandboxState::Running,
            isolation: rec.isolation.clone(),
            resources: rec.resources,
            created_at_unix_ms: rec.created_at_unix_ms,
            adopted: true,
        },
        phase: Phase::Running,
        port: Some(rec.port),
        main_pid: rec.main_pid,
        group_kill: !rec.isolation.namespaces,
        cgroup: cgroup.clone(),
        exit: rx,
        dir: dir.to_path_buf(),
    };
    inner.table.lock().expect("table lock").insert_running(entry);
    let poll = inner.config.adopted_poll_interval;
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll);
        while record::start_ticks(rec.main_pid) == Some(rec.start_ticks) {
            tick.tick().await;
        }
        let exit = classify(None, cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or(0));
        let _ = tx.send(Some(exit));
        runtime.on_exit(&id, exit).await;
    });
}
