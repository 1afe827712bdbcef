//! The seccomp filter every process sandbox runs under: the same policy as containers'
//! (`baton_model::sandbox::DENIED_SYSCALLS`, clone asking for a namespace refused, clone3
//! answered `ENOSYS`), compiled once with seccompiler and installed last before exec.

use std::sync::Arc;

use baton_model::sandbox::{CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS};
use seccompiler::BpfProgram;

/// The compiled programs, in the order they are installed.
pub type Filters = Arc<[BpfProgram]>;

/// Compiles the policy for this machine's architecture.
pub fn compile() -> Result<Filters, String> {
    let mut denied: Vec<serde_json::Value> =
        DENIED_SYSCALLS.iter().map(|name| serde_json::json!({ "syscall": name })).collect();
    for flag in CLONE_NAMESPACE_FLAGS {
        denied.push(serde_json::json!({
            "syscall": "clone",
            "args": [{"index": 0, "type": "qword", "op": {"masked_eq": flag}, "val": flag}],
        }));
    }
    let policy = serde_json::json!({
        "denied": {"mismatch_action": "allow", "match_action": {"errno": libc::EPERM}, "filter": denied},
        "clone3": {"mismatch_action": "allow", "match_action": {"errno": libc::ENOSYS}, "filter": [{"syscall": "clone3"}]},
    });
    let arch =
        std::env::consts::ARCH.try_into().map_err(|e| format!("seccomp on {}: {e:?}", std::env::consts::ARCH))?;
    let mut programs = seccompiler::compile_from_json(policy.to_string().as_bytes(), arch)
        .map_err(|e| format!("compiling the sandbox seccomp filter: {e}"))?;
    let order = ["denied", "clone3"];
    Ok(order.iter().filter_map(|name| programs.remove(*name)).collect::<Vec<_>>().into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_compiles_into_two_programs() {
        let filters = super::compile().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|p| !p.is_empty()));
    }
}
