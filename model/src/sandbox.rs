//! What a sandbox may be given: its program, its arguments and its environment. One check,
//! used by a spec's validation (router, shard manager, cell) and again by the worker for
//! every creation, so nothing a worker would refuse is ever stored.

use crate::function::SpecError;

/// Most arguments, and most environment variables.
pub const MAX_ENTRIES: usize = 1024;
/// Longest argument or variable value, in bytes.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Longest executable path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest variable name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Variables the worker sets itself.
pub const RESERVED: &[&str] = &["PORT", "HOST"];
/// Prefix of the names baton keeps for itself.
pub const RESERVED_PREFIX: &str = "BATON_";
/// Variables that make the dynamic loader or the C library load code or files the
/// function's author did not ship (glibc's list of variables it ignores in setuid
/// programs, and its tunables).
pub const LOADER: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];
/// Prefixes of such variables (`LD_PRELOAD`, `LD_AUDIT`, `MALLOC_TRACE`, …).
pub const LOADER_PREFIXES: &[&str] = &["LD_", "MALLOC_"];

/// System calls every sandbox (process or container) is refused with `EPERM`, whatever its
/// capabilities: the kernel's largest attack surface for code that needs none of it
/// (keys, BPF, perf, userfaultfd, new namespaces, mounts, modules, kexec, clocks, tracing
/// other processes, NUMA policy).
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "mount",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
];

/// The namespace flags of clone(2) (`CLONE_NEWNS`, `CLONE_NEWCGROUP`, `CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`, `CLONE_NEWNET`, `CLONE_NEWTIME`): a
/// sandbox's clone asking for any is refused with `EPERM`; `clone3`, whose flags a filter
/// cannot read, is answered `ENOSYS`, so C libraries fall back to clone.
pub const CLONE_NAMESPACE_FLAGS: [u64; 8] =
    [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000, 0x0000_0080];

/// Checks an executable path: absolute, plain (no `.` or `..` part), no NUL, at most
/// [`MAX_PATH_BYTES`].
pub fn check_executable(path: &str) -> Result<(), SpecError> {
    let refuse = |why: &str| Err(SpecError::new("executable", format!("{:?} {why}", truncated(path))));
    if !path.starts_with('/') {
        return refuse("must be an absolute path");
    }
    if path.len() > MAX_PATH_BYTES {
        return refuse(&format!("is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.contains('\0') {
        return refuse("must not contain NUL bytes");
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return refuse("must not contain . or .. parts");
    }
    if is_platform_program(path) {
        return refuse("is one of baton's own programs, which never run as functions");
    }
    Ok(())
}

/// Whether `path` names one of baton's own programs ([`PLATFORM_PROGRAMS`]), by its file
/// name.
pub fn is_platform_program(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| PLATFORM_PROGRAMS.contains(&name))
}

/// baton's own programs: refused as executables by name, wherever they are (the worker
/// also refuses a path that resolves to one, or to its own file).
pub const PLATFORM_PROGRAMS: &[&str] =
    &["baton", "baton-worker", "baton-cell", "baton-router", "baton-shard-manager", "baton-loadtest"];

/// Checks arguments: at most [`MAX_ENTRIES`], each without NUL and at most
/// [`MAX_VALUE_BYTES`].
pub fn check_args<'a>(args: impl ExactSizeIterator<Item = &'a str>) -> Result<(), SpecError> {
    check_list("args", args)
}

/// Checks an image's `command` as [`check_args`] checks arguments (`command[0]`).
pub fn check_command<'a>(command: impl ExactSizeIterator<Item = &'a str>) -> Result<(), SpecError> {
    check_list("command", command)
}

fn check_list<'a>(field: &str, items: impl ExactSizeIterator<Item = &'a str>) -> Result<(), SpecError> {
    if items.len() > MAX_ENTRIES {
        return Err(SpecError::new(field, format!("has {} entries; at most {MAX_ENTRIES}", items.len())));
    }
    for (i, item) in items.enumerate() {
        check_value(&format!("{field}[{i}]"), item)?;
    }
    Ok(())
}

/// Checks an environment: at most [`MAX_ENTRIES`] variables, names of letters, digits,
/// `_`, `-` and `.` not starting with a digit, none of baton's own ([`RESERVED`],
/// [`RESERVED_PREFIX`]) or the loader's ([`LOADER`], [`LOADER_PREFIXES`]), values without
/// NUL of at most [`MAX_VALUE_BYTES`]. A refusal names the variable (`env.LD_PRELOAD`).
pub fn check_env<'a>(env: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Result<(), SpecError> {
    if env.len() > MAX_ENTRIES {
        return Err(SpecError::new("env", format!("has {} variables; at most {MAX_ENTRIES}", env.len())));
    }
    for (name, value) in env {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && !name.as_bytes()[0].is_ascii_digit()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !well_formed {
            return Err(SpecError::new(
                "env",
                format!(
                    "variable name {:?} must be 1-{MAX_NAME_BYTES} letters, digits, '_', '-' or '.', not starting with a digit",
                    truncated(name)
                ),
            ));
        }
        let field = format!("env.{name}");
        if RESERVED.contains(&name) || name.starts_with(RESERVED_PREFIX) {
            return Err(SpecError::new(&field, "is set by baton and cannot be given"));
        }
        if LOADER.contains(&name) || LOADER_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(SpecError::new(&field, "would make the loader or the C library load other code; not allowed"));
        }
        check_value(&field, value)?;
    }
    Ok(())
}

fn check_value(field: &str, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') {
        return Err(SpecError::new(field, "must not contain NUL bytes"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(SpecError::new(field, format!("is {} bytes; at most {MAX_VALUE_BYTES}", value.len())));
    }
    Ok(())
}

/// At most the first 64 characters of `s`, for messages about hostile input.
fn truncated(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_field(name: &str, value: &str) -> Option<String> {
        check_env([(name, value)].into_iter()).err().map(|e| e.field)
    }

    #[test]
    fn executables_must_be_absolute_plain_paths() {
        assert!(check_executable("/opt/fns/resize").is_ok());
        for bad in ["bin/sh", "", "/opt/fns/../../bin/sh", "/opt/./x", "/a\0b"] {
            assert_eq!(check_executable(bad).unwrap_err().field, "executable", "{bad:?}");
        }
        assert!(check_executable(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn batons_own_programs_are_never_executables() {
        for own in PLATFORM_PROGRAMS {
            let refused = check_executable(&format!("/usr/local/bin/{own}")).unwrap_err();
            assert!(refused.message.contains("baton's own programs"), "{own}: {refused}");
        }
        assert!(check_executable("/opt/fns/baton-fn-echo").is_ok());
        assert!(check_executable("/opt/baton/fn").is_ok(), "a folder named baton is fine");
    }

    #[test]
    fn loader_and_reserved_variables_are_refused_by_name() {
        assert_eq!(env_field("MODE", "x"), None);
        assert_eq!(env_field("spring.profiles.active", "prod"), None);
        for name in ["LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "GCONV_PATH", "GLIBC_TUNABLES", "MALLOC_TRACE"] {
            assert_eq!(env_field(name, "/tmp/evil.so").as_deref(), Some(format!("env.{name}").as_str()));
        }
        for name in ["PORT", "HOST", "BATON_URL", "BATON_API_KEY"] {
            assert_eq!(env_field(name, "1").as_deref(), Some(format!("env.{name}").as_str()));
        }
        for name in ["", "1ABC", "A=B", "A B", "A\0B"] {
            assert_eq!(env_field(name, "x").as_deref(), Some("env"), "{name:?}");
        }
        assert_eq!(env_field("MODE", "a\0b").as_deref(), Some("env.MODE"));
        assert_eq!(env_field("MODE", &"x".repeat(MAX_VALUE_BYTES + 1)).as_deref(), Some("env.MODE"));
    }

    #[test]
    fn arguments_are_bounded_and_without_nul() {
        let args = ["-v".to_string(), "a\0b".to_string()];
        assert_eq!(check_args(args.iter().map(String::as_str)).unwrap_err().field, "args[1]");
        let many = vec![String::new(); MAX_ENTRIES + 1];
        assert_eq!(check_args(many.iter().map(String::as_str)).unwrap_err().field, "args");
    }
}
