//! Who may call what on a cell's control plane (with mutual TLS; docs/security.md):
//! workers register and report, the cell's own data planes follow the routing, the shard
//! manager (and an operator) manage functions.

use baton_service::tls::Role;

const WORKERS: &[Role] = &[Role::Worker];
const DATA_PLANES: &[Role] = &[Role::Cell];
const FUNCTIONS: &[Role] = &[Role::ShardManager, Role::Operator];

/// The roles that may call the gRPC method at `path`; none for one this server lacks.
pub fn policy(path: &str) -> &'static [Role] {
    match path.trim_start_matches('/').split_once('/') {
        Some(("baton.cell.v1.CellControl", method)) => match method {
            "RegisterWorker" | "WorkerHeartbeat" | "ReportSandboxEvents" => WORKERS,
            "RegisterDataPlane" | "WatchRouting" | "ReportLoad" => DATA_PLANES,
            "PutFunction" | "GetFunction" | "DeleteFunction" | "ListFunctions" => FUNCTIONS,
            _ => &[],
        },
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_callers_and_routers_have_none() {
        let methods = baton_proto::methods("baton.cell.v1.CellControl");
        assert!(methods.len() >= 10, "{methods:?}");
        for path in methods {
            let allowed = policy(&path);
            assert!(!allowed.is_empty(), "{path} has no allowed caller");
            assert!(!allowed.contains(&Role::Router), "routers call data planes, not {path}");
        }
        assert_eq!(policy("/baton.cell.v1.CellControl/ListFunctions"), FUNCTIONS);
        assert!(policy("/baton.shard.v1.ShardManager/PutTenant").is_empty());
    }
}
