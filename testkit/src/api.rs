//! What a test asks of a federation, however it runs (processes or in one process): a
//! shard-manager client that knows a leader, tenants and keys, routers' URLs, echo
//! functions deployed through a router.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{
    CreateApiKeyRequest, GetStatusRequest, ListCellsRequest, MoveFunctionRequest, PutFunctionResponse,
};
use tonic::transport::Channel;

/// A running federation, seen from a test.
#[allow(async_fn_in_trait)]
pub trait FederationApi {
    /// Every live shard-manager replica's gRPC URL.
    fn manager_urls(&self) -> Vec<String>;

    /// `http://ROUTER{path}` on router `router`.
    fn router_url(&self, router: usize, path: &str) -> String;

    /// The credentials a test's operator client connects with (plaintext unless the
    /// federation runs with mutual TLS).
    fn operator_tls(&self) -> baton_service::tls::Tls {
        baton_service::tls::Tls::Plaintext
    }

    /// Every replica's URL, comma-separated (as cells and routers take them).
    fn manager_url(&self) -> String {
        self.manager_urls().join(",")
    }

    /// A client of a live replica that knows a leader (writes given to it reach the
    /// leader), waiting up to 10 s for one.
    async fn client(&self) -> ShardManagerClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for url in self.manager_urls() {
                let Ok(channel) = self.operator_tls().connect_url(&url).await else { continue };
                let mut client = ShardManagerClient::new(channel);
                if client.get_status(GetStatusRequest {}).await.is_ok_and(|s| s.into_inner().leader_id != 0) {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "no shard-manager replica with a leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The raft leader's ID, as a live replica reports it.
    async fn leader(&self) -> u64 {
        self.client().await.get_status(GetStatusRequest {}).await.unwrap().into_inner().leader_id
    }

    /// Creates tenant `name` (region `local`) and returns a new API key for it.
    async fn tenant(&self, name: &str) -> String {
        let mut client = self.client().await;
        client.put_tenant(crate::tenant_request(name, "local", 0)).await.unwrap();
        self.key(name).await
    }

    /// A new API key for tenant `name`.
    async fn key(&self, name: &str) -> String {
        let mut client = self.client().await;
        client.create_api_key(CreateApiKeyRequest { tenant: name.into() }).await.unwrap().into_inner().key
    }

    /// Moves `tenant`'s function `name` to `cell` (a graceful migration); returns once the
    /// shard manager has committed it.
    async fn move_function(&self, tenant: &str, name: &str, cell: &str) -> PutFunctionResponse {
        let request = MoveFunctionRequest { tenant: tenant.into(), name: name.into(), cell: cell.into() };
        self.client().await.move_function(request).await.unwrap().into_inner()
    }

    /// Waits (10 s at most) until cell `id` is registered and active.
    async fn wait_cell_active(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cells = self.client().await.list_cells(ListCellsRequest {}).await.unwrap().into_inner().cells;
            if cells.iter().any(|c| c.id == id && c.state == "active") {
                return;
            }
            assert!(Instant::now() < deadline, "{id} did not register: {cells:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (10 s at most) until router `router` has a map that knows `key`.
    async fn wait_router_accepts(&self, router: usize, key: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = client.get(self.router_url(router, "/v1/functions")).bearer_auth(key).send().await.unwrap();
            if answer.status() == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "the router never accepted the key: {}", answer.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers `count` echo functions `f0`, `f1`, … with `extra` merged into each spec,
    /// through router `router` as the tenant of `key`, and waits until each answers a call
    /// (20 s at most). Returns each function's owning cell.
    async fn deploy_echoes(
        &self,
        router: usize,
        key: &str,
        count: usize,
        extra: serde_json::Value,
    ) -> BTreeMap<String, String> {
        let client = reqwest::Client::new();
        let mut owners = BTreeMap::new();
        for i in 0..count {
            let name = format!("f{i}");
            let answer = client
                .post(self.router_url(router, "/v1/functions"))
                .bearer_auth(key)
                .json(&crate::echo_spec(&name, extra.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201, "registering {name}");
            let body: serde_json::Value = answer.json().await.unwrap();
            owners.insert(name, body["cell"].as_str().unwrap().to_string());
        }
        for f in owners.keys() {
            let url = self.router_url(router, &format!("/function/{f}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            while client.post(&url).bearer_auth(key).send().await.unwrap().status() != 200 {
                assert!(Instant::now() < deadline, "{f} never answered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        owners
    }
}
