//! Running the host's network tools (`nft`, `ip`, `nsenter`) as children of the worker.
//! Their exit statuses are collected by the worker's reaper like every child's: nothing else
//! in the worker may wait for a child.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

/// Runs `program` with `args`, `stdin` fed in, and returns its stdout, or its stderr as the
/// error (these tools report every failure there). Blocking: call it from a blocking
/// context, or through [`run`].
pub fn run_blocking(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let reaper = super::reaper::Reaper::get();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    reaper.notify_spawned();
    // Registered and dropped: the status is not needed, only taken off the reaper's books.
    drop(reaper.watch(child.id() as i32));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    if err.trim().is_empty() { Ok(out) } else { Err(format!("{program} {}: {}", args.join(" "), err.trim())) }
}

/// [`run_blocking`] on the blocking pool.
pub async fn run(program: &'static str, args: Vec<String>, stdin: Option<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_blocking(program, &args, stdin.as_deref())
    })
    .await
    .map_err(|e| format!("{program}: {e}"))?
}
