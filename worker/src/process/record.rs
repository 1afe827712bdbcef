//! What do we store? One `sandbox.json` per running sandbox in
//! `<state_dir>/sandboxes/<id>/`, next to its logs: enough to find the process again after a
//! worker restart (pid and its start time, so a recycled pid is never mistaken for it), its
//! port and limits. Nothing is written on the invocation path; the record is written once
//! when the sandbox becomes ready and removed with it.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runtime::{Isolation, Resources};

/// File name of the record inside the sandbox's folder.
pub const FILE: &str = "sandbox.json";

/// A running sandbox as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox ID (also the folder name).
    pub id: String,
    /// Function served.
    pub function_id: String,
    /// Port it listens on.
    pub port: u16,
    /// The function's pid.
    pub main_pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// Isolation applied.
    pub isolation: Isolation,
    /// Limits.
    pub resources: Resources,
    /// Creation time, Unix milliseconds.
    pub created_at_unix_ms: u64,
    /// The uid it runs as, when it has one of its own (`process.uid_range_*`).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The image digest it runs, when it is a container (runtime `oci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A container's address and port in its own network namespace (`port` is then the
    /// host port mapped to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<std::net::SocketAddrV4>,
    /// The host uid root is mapped to in a container's user namespace, when it runs as its
    /// image's user (`images.run_as_image_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_uid: Option<u32>,
}

/// Writes `record` into `dir` atomically (temporary file, then rename).
pub fn write(dir: &Path, record: &SandboxRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    fs::rename(tmp, dir.join(FILE))
}

/// Reads the record in `dir`.
pub fn read(dir: &Path) -> std::io::Result<SandboxRecord> {
    let bytes = fs::read(dir.join(FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The start time of live process `pid` in clock ticks, or `None` if it is gone or a zombie.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_own_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let record = SandboxRecord {
            id: "sb".into(),
            function_id: "f".into(),
            port: 20001,
            main_pid: me,
            start_ticks: start_ticks(me).expect("this process is alive"),
            isolation: Isolation::default(),
            resources: Resources { cpu_millis: 1, memory_mib: 4, pids: 1 },
            created_at_unix_ms: 1,
            uid: Some(2_000_000_007),
            image: None,
            network: Some("10.222.0.9:8080".parse().unwrap()),
            root_uid: Some(2_000_000_008),
        };
        write(dir.path(), &record).unwrap();
        assert_eq!(read(dir.path()).unwrap(), record);
        // A record from before sandboxes had uids of their own reads back without one.
        let mut old = serde_json::to_value(&record).unwrap();
        old.as_object_mut().unwrap().remove("uid");
        std::fs::write(dir.path().join(FILE), old.to_string()).unwrap();
        assert_eq!(read(dir.path()).unwrap().uid, None);
        assert_eq!(start_ticks(i32::MAX), None);
    }
}
