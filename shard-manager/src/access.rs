//! Who may call what on a shard-manager replica (with mutual TLS; docs/security.md). The
//! operator administers; routers act for tenants on their functions and follow the map;
//! cells report and follow; replicas talk raft and forward to their leader.

use baton_service::tls::Role;

const OPERATOR: &[Role] = &[Role::Operator, Role::ShardManager];
const FUNCTIONS: &[Role] = &[Role::Operator, Role::Router, Role::ShardManager];
const FUNCTION_READS: &[Role] = &[Role::Operator, Role::Router, Role::Cell, Role::ShardManager];
const CELLS: &[Role] = &[Role::Cell, Role::ShardManager];
const CREDENTIALS: &[Role] = &[Role::Router, Role::Cell, Role::ShardManager];
const MAP: &[Role] = &[Role::Router, Role::Cell, Role::ShardManager];
const STATUS: &[Role] = &[Role::Operator, Role::Router, Role::Cell, Role::ShardManager];
const REPLICAS: &[Role] = &[Role::ShardManager];

/// The roles that may call the gRPC method at `path`; none for one this server lacks.
pub fn policy(path: &str) -> &'static [Role] {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else { return &[] };
    match (service, method) {
        ("baton.raft.v1.RaftTransport", _) => REPLICAS,
        ("baton.shard.v1.ShardManager", method) => match method {
            "PutTenant" | "DeleteTenant" | "CreateApiKey" | "RevokeApiKey" | "ListTenants" | "ListApiKeys"
            | "SetCellState" | "PinFunction" | "MoveFunction" | "ListCells" | "AddReplica" | "ChangeVoters" => OPERATOR,
            "PutFunction" | "PutFunctions" | "DeleteFunction" => FUNCTIONS,
            // Tenants' credentials go in through routers; they come out only where an image
            // is resolved (routers) or pulled (cells, for their workers).
            "PutRegistryCredentials" | "DeleteRegistryCredentials" | "ListRegistries" => FUNCTIONS,
            "GetRegistryCredentials" => CREDENTIALS,
            "GetFunction" | "ListFunctions" => FUNCTION_READS,
            "RegisterCell" | "CellHeartbeat" => CELLS,
            "WatchShardMap" => MAP,
            "GetStatus" => STATUS,
            _ => &[],
        },
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_callers_and_admin_is_the_operators() {
        let mut methods = baton_proto::methods("baton.shard.v1.ShardManager");
        methods.extend(baton_proto::methods("baton.raft.v1.RaftTransport"));
        assert!(methods.len() > 20, "{methods:?}");
        for path in &methods {
            assert!(!policy(path).is_empty(), "{path} has no allowed caller");
            assert!(!policy(path).contains(&Role::Worker), "workers call nothing here: {path}");
        }
        for admin in
            ["PutTenant", "DeleteTenant", "CreateApiKey", "RevokeApiKey", "ListApiKeys", "MoveFunction", "AddReplica"]
        {
            let allowed = policy(&format!("/baton.shard.v1.ShardManager/{admin}"));
            assert!(!allowed.contains(&Role::Router) && !allowed.contains(&Role::Cell), "{admin}: {allowed:?}");
        }
        // Credentials come out to routers and cells only, never to an operator's tool.
        let read = policy("/baton.shard.v1.ShardManager/GetRegistryCredentials");
        assert!(read.contains(&Role::Router) && read.contains(&Role::Cell) && !read.contains(&Role::Operator));
        assert_eq!(policy("/baton.raft.v1.RaftTransport/Vote"), REPLICAS);
        assert!(policy("/baton.shard.v1.ShardManager/Nope").is_empty());
        assert!(policy("/baton.worker.v1.Worker/CreateSandbox").is_empty());
        assert!(policy("garbage").is_empty());
    }
}
