//! The runtime spec against the real runc (Debian's `runc`), with a rootfs holding a static
//! busybox (Debian's `busybox-static`): what the image says runs, as the sandbox's uid,
//! in a read-only root, without capabilities, in its own pid namespace, under its limits.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use baton_image::bundle::{ImageConfig, Launch, runtime_spec};

/// Runs `argv` (over an image whose entrypoint is busybox) in a container; its stdout,
/// stderr and exit status.
fn run(argv: &[&str], uid: u32) -> (String, String, i32) {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static (scripts/test.sh installs it)");
    for folder in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(folder)).unwrap();
    }
    let image = ImageConfig {
        entrypoint: vec!["/bin/busybox".into()],
        cmd: vec!["true".into()],
        env: vec!["FROM_IMAGE=yes".into()],
        working_dir: "/tmp".into(),
        exposed_ports: vec![],
        user: String::new(),
    };
    let id = format!("baton-runc-test-{}-{}", std::process::id(), argv.join("-").len());
    let launch = Launch {
        command: None,
        args: Some(argv.iter().map(|s| s.to_string()).collect()),
        env: BTreeMap::from([("PORT".to_string(), "9999".to_string())]),
        uid,
        gid: uid,
        rootfs: rootfs.clone(),
        hostname: "sandbox".into(),
        netns: None,
        id_maps: None,
        cgroups_path: format!("/{id}"),
        cpu_millis: 500,
        memory_mib: 64,
        pids: 16,
    };
    let spec = runtime_spec(&image, &launch).unwrap();
    spec.save(dir.path().join("config.json")).unwrap();
    let output = Command::new("runc")
        .args(["--root", &dir.path().join("state").display().to_string(), "run", "--bundle"])
        .arg(dir.path())
        .arg(&id)
        .output()
        .expect("runc (scripts/test.sh installs it)");
    let _ = Command::new("runc")
        .args(["--root", &dir.path().join("state").display().to_string(), "delete", "--force", &id])
        .output();
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/{id}")).exists(), "runc removed the container's cgroup");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[test]
fn a_container_runs_what_the_image_says_as_the_sandbox_and_nothing_more() {
    let uid = 2_000_600_150;
    let (out, err, code) = run(&["sh", "-c", "echo hello; id -u; id -g; pwd; echo $FROM_IMAGE $PORT; hostname"], uid);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello", &uid.to_string(), &uid.to_string(), "/tmp", "yes 9999", "sandbox"]
    );

    // The root is read-only; /tmp is its own.
    let (_, err, code) = run(&["sh", "-c", "touch /bin/x"], uid);
    assert_ne!(code, 0, "{err}");
    let (_, err, code) = run(&["sh", "-c", "touch /tmp/x"], uid);
    assert_eq!(code, 0, "{err}");

    // Its own pid namespace: it is pid 1 and sees no other process.
    let (out, err, code) = run(&["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"], uid);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
    assert!(lines[1].parse::<u32>().unwrap() <= 3, "{out}");

    // No capabilities: even a chown of its own file is refused.
    let (_, _, code) = run(&["sh", "-c", "touch /tmp/f && chown 0 /tmp/f"], uid);
    assert_ne!(code, 0, "chown needs CAP_CHOWN");

    // The seccomp filter: no new namespaces (user namespaces included, which the kernel
    // would give any user), no keys, no mounts; ordinary programs and forks run.
    for refused in [
        &["unshare", "-U", "true"][..],
        &["unshare", "-Ur", "true"],
        &["unshare", "-n", "true"],
        &["mount", "-t", "tmpfs", "x", "/tmp"],
    ] {
        let (_, err, code) = run(refused, uid);
        assert_ne!(code, 0, "{refused:?} is refused");
        assert!(
            err.to_lowercase().contains("not permitted") || err.contains("permission denied"),
            "{refused:?}: {err}"
        );
    }
    let (out, err, code) = run(&["sh", "-c", "(echo forked) & wait; ls / | head -1"], uid);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("forked"), "{out}");

    // The pids limit holds a fork bomb.
    let (out, _, _) =
        run(&["sh", "-c", "for i in $(seq 40); do sleep 5 & done 2>/dev/null; ls /proc | grep -c '^[0-9]'"], uid);
    let count: u32 = out.trim().parse().unwrap_or(0);
    assert!(count <= 16, "at most 16 processes: {out}");
}
