//! Per-sandbox log files. The sandbox writes its stdout and stderr straight into
//! `stdout.log` and `stderr.log` (append mode), so logging survives a worker restart; a
//! periodic check copies a file past the size cap to `<name>.1` and truncates it. Lines
//! written between the copy and the truncation are lost; the cap is soft by one check
//! interval's worth of output.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Names of the two log files.
pub const STREAMS: [&str; 2] = ["stdout.log", "stderr.log"];

/// Opens (creating) the two log files in `dir` for the sandbox to append to. They are the
/// worker's user's alone (mode 0600; a rotated copy keeps the mode): another sandbox
/// cannot read what a function printed.
pub fn open(dir: &Path) -> std::io::Result<(File, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |name: &str| OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(name));
    Ok((open(STREAMS[0])?, open(STREAMS[1])?))
}

/// Rotates any log in `dir` larger than `max_bytes`.
pub fn enforce_cap(dir: &Path, max_bytes: u64) {
    for name in STREAMS {
        let path = dir.join(name);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.len() <= max_bytes {
            continue;
        }
        let old: PathBuf = dir.join(format!("{name}.1"));
        if fs::copy(&path, &old).is_ok()
            && let Ok(file) = OpenOptions::new().write(true).open(&path)
        {
            let _ = file.set_len(0);
        }
    }
}

/// The last `max` bytes of `stderr.log`, for error messages.
pub fn stderr_tail(dir: &Path, max: u64) -> String {
    let Ok(mut file) = File::open(dir.join(STREAMS[1])) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut tail = Vec::new();
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotates_past_the_cap_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let (mut out, _err) = open(dir.path()).unwrap();
        for name in STREAMS {
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&fs::metadata(dir.path().join(name)).unwrap().permissions());
            assert_eq!(mode & 0o777, 0o600, "{name} is the worker's alone");
        }
        out.write_all(&[b'a'; 100]).unwrap();
        enforce_cap(dir.path(), 200);
        assert_eq!(fs::metadata(dir.path().join("stdout.log")).unwrap().len(), 100);
        out.write_all(&[b'b'; 150]).unwrap();
        enforce_cap(dir.path(), 200);
        assert_eq!(fs::metadata(dir.path().join("stdout.log.1")).unwrap().len(), 250);
        assert_eq!(fs::metadata(dir.path().join("stdout.log")).unwrap().len(), 0);
        out.write_all(b"after").unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("stdout.log")).unwrap(), "after");
    }

    #[test]
    fn tails_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let (_out, mut err) = open(dir.path()).unwrap();
        err.write_all(b"first line\nfatal: no config\n").unwrap();
        assert_eq!(stderr_tail(dir.path(), 17), "fatal: no config");
    }
}
