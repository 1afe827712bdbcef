//! Who may call a worker (with mutual TLS; docs/security.md): control planes only.

use baton_service::tls::Role;

/// The roles that may call the gRPC method at `path`: cells for the Worker service,
/// nobody for anything else.
pub fn policy(path: &str) -> &'static [Role] {
    match path.trim_start_matches('/').split_once('/') {
        Some((
            "baton.worker.v1.Worker",
            "CreateSandbox" | "DeleteSandbox" | "ListSandboxes" | "PullImage" | "DropImage",
        )) => &[Role::Cell],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_for_control_planes_only() {
        let methods = baton_proto::methods("baton.worker.v1.Worker");
        assert_eq!(methods.len(), 5, "{methods:?}");
        for path in methods {
            assert_eq!(policy(&path), &[Role::Cell], "{path}");
        }
        assert!(policy("/baton.worker.v1.Worker/Other").is_empty());
        assert!(policy("/baton.cell.v1.CellControl/RegisterWorker").is_empty());
    }
}
