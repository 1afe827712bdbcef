//! Each resource of terraform-provider-baton created, read, updated in place, replaced
//! where it must be, imported, drifted and destroyed by the real `terraform` against a
//! federation of real processes; and both data sources read.

mod common;

use std::time::{Duration, Instant};

use baton_proto::shard::{ListApiKeysRequest, ListCellsRequest, ListTenantsRequest, TenantInfo};
use baton_testkit::{Federation, FederationApi, bin};
use common::Terraform;

/// A federation of `cells` cells with a router, opened to tenant `ops` (whose key the
/// router was started with), and a Terraform working directory pointed at it.
async fn federation(cells: usize, port_base: u16) -> (Federation, String, Terraform) {
    let mut fed = Federation::start(cells, port_base, "3s").await;
    let (key, router) = fed.open_to("ops").await;
    let tf = Terraform::new(&[
        ("BATON_SHARD_MANAGER", fed.manager_url()),
        ("BATON_URL", fed.router_url(router, "")),
        ("BATON_API_KEY", key.clone()),
    ]);
    (fed, key, tf)
}

async fn tenant(fed: &Federation, name: &str) -> Option<TenantInfo> {
    let listed = fed.client().await.list_tenants(ListTenantsRequest { min_epoch: 0 }).await.unwrap();
    listed.into_inner().tenants.into_iter().find(|t| t.name == name)
}

/// `GET path` on the router as `key`, until it answers `want` (5 s at most): keys reach
/// routers with the next map delta.
async fn router_answers(fed: &Federation, key: &str, method: reqwest::Method, path: &str, want: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status =
            client.request(method.clone(), fed.router_url(0, path)).bearer_auth(key).send().await.unwrap().status();
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{method} {path} answered {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_created_updated_imported_and_deleted() {
    let (fed, _, tf) = federation(1, 17200).await;
    let config = |max_functions: u32, executables: bool| {
        format!(
            "resource \"baton_tenant\" \"acme\" {{\n  name = \"acme\"\n  default_region = \"local\"\n  max_functions = {max_functions}\n  executables = {executables}\n}}\n"
        )
    };
    tf.apply(&config(5, false));
    let acme = tenant(&fed, "acme").await.expect("created");
    assert_eq!((acme.max_functions, acme.executables, acme.default_region.as_str()), (5, false, "local"));
    assert_eq!(tf.changes(), None, "the federation's defaults for the limits left out are no diff");

    // In place: the same tenant, new limits.
    tf.write(&config(7, true));
    let plan = tf.changes().expect("a change");
    assert!(plan.contains("1 to change, 0 to destroy"), "{plan}");
    tf.apply(&config(7, true));
    let acme = tenant(&fed, "acme").await.unwrap();
    assert_eq!((acme.max_functions, acme.executables), (7, true));
    assert_eq!(tf.changes(), None);

    // Drift: changed by hand, shown and put back.
    let mut hand = baton_testkit::tenant_request("acme", "local", 9);
    hand.executables = false;
    fed.client().await.put_tenant(hand).await.unwrap();
    let plan = tf.changes().expect("the change made by hand is a diff");
    assert!(plan.contains("max_functions") && plan.contains("9 -> 7"), "{plan}");
    tf.apply(&config(7, true));
    assert_eq!(tenant(&fed, "acme").await.unwrap().max_functions, 7);

    // Import: forgotten by Terraform, then adopted again with nothing to change.
    tf.ok(&["state", "rm", "baton_tenant.acme"]);
    let taken = tf.run(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert_ne!(taken.code, 0, "creating a tenant that exists is refused");
    assert!(taken.output.contains("already exists") && taken.output.contains("terraform import"), "{}", taken.output);
    tf.ok(&["import", "-input=false", "-no-color", "baton_tenant.acme", "acme"]);
    assert_eq!(tf.changes(), None, "an imported tenant matches its configuration");

    // A new name is a new tenant, and the plan says so.
    tf.write(&config(7, true).replace("name = \"acme\"", "name = \"acme-2\""));
    let plan = tf.changes().expect("a change");
    assert!(plan.contains("must be replaced") && plan.contains("forces replacement"), "{plan}");

    // A tenant with a function is not deleted; without, it goes with its keys.
    tf.write(&config(7, true));
    let key = fed.key("acme").await;
    router_answers(&fed, &key, reqwest::Method::GET, "/v1/functions", 200).await;
    let spec = baton_testkit::echo_spec("f", serde_json::json!({}));
    let put = reqwest::Client::new().put(fed.router_url(0, "/v1/functions/f")).bearer_auth(&key).json(&spec);
    assert_eq!(put.send().await.unwrap().status(), 201);
    let refused = tf.run(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert_ne!(refused.code, 0);
    assert!(refused.output.contains("still has 1 function"), "{}", refused.output);
    router_answers(&fed, &key, reqwest::Method::DELETE, "/v1/functions/f", 204).await;
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(tenant(&fed, "acme").await.is_none(), "destroyed");
    let keys = fed.client().await.list_api_keys(ListApiKeysRequest { tenant: String::new(), min_epoch: 0 }).await;
    assert!(keys.unwrap().into_inner().keys.iter().all(|k| k.tenant != "acme"), "its keys went with it");
    router_answers(&fed, &key, reqwest::Method::GET, "/v1/functions", 401).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_is_created_used_imported_and_revoked() {
    let (fed, _, tf) = federation(1, 17400).await;
    let config = |tenant: &str| {
        format!(
            r#"
resource "baton_tenant" "a" {{
  name           = "a"
  default_region = "local"
}}
resource "baton_tenant" "b" {{
  name           = "b"
  default_region = "local"
}}
resource "baton_api_key" "k" {{
  tenant = baton_tenant.{tenant}.name
}}
output "secret" {{
  value     = baton_api_key.k.secret
  sensitive = true
}}
output "key_id" {{
  value = baton_api_key.k.key_id
}}
"#
        )
    };
    tf.apply(&config("a"));
    let outputs = tf.outputs();
    let (secret, key_id) = (outputs["secret"].as_str().unwrap().to_string(), outputs["key_id"].as_str().unwrap());
    assert!(secret.starts_with("bk_") && key_id.len() == 16, "{outputs}");
    router_answers(&fed, &secret, reqwest::Method::GET, "/v1/functions", 200).await;
    assert_eq!(tf.changes(), None);

    // Import by ID: the secret is not known again (only its hash is kept), and that is no diff.
    tf.ok(&["state", "rm", "baton_api_key.k"]);
    tf.ok(&["import", "-input=false", "-no-color", "baton_api_key.k", key_id]);
    assert_eq!(tf.changes(), None, "an imported key matches its configuration");
    let state = tf.ok(&["state", "show", "-no-color", "baton_api_key.k"]);
    assert!(
        state.contains(&format!("\"{key_id}\"")) && state.contains("tenant") && !state.contains(&secret),
        "{state}"
    );

    // Another tenant is another key.
    tf.write(&config("b"));
    let plan = tf.changes().expect("a change");
    assert!(plan.contains("forces replacement"), "{plan}");
    tf.apply(&config("b"));
    router_answers(&fed, &secret, reqwest::Method::GET, "/v1/functions", 401).await;
    let new_secret = tf.outputs()["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    router_answers(&fed, &new_secret, reqwest::Method::GET, "/v1/functions", 200).await;

    // Revoked by hand: gone from the state at the next plan, and made again.
    let key_id = tf.outputs()["key_id"].as_str().unwrap().to_string();
    fed.client().await.revoke_api_key(baton_proto::shard::RevokeApiKeyRequest { key_id }).await.unwrap();
    let plan = tf.changes().expect("a revoked key is created again");
    assert!(plan.contains("1 to add"), "{plan}");

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    router_answers(&fed, &new_secret, reqwest::Method::GET, "/v1/functions", 401).await;
    assert!(tenant(&fed, "a").await.is_none() && tenant(&fed, "b").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_is_deployed_called_changed_in_place_drifts_and_is_imported() {
    let (fed, key, tf) = federation(1, 17600).await;
    let echo = bin("baton-fn-echo").display().to_string();
    let config = |memory: u32| {
        format!(
            r#"
resource "baton_function" "echo" {{
  name       = "echo"
  executable = "{echo}"
  args       = []
  env        = {{ GREETING = "hi" }}
  memory_mib = {memory}
  cpu_millis = 100
  timeout    = "1m"

  reserved_concurrency    = 7
  async_max_attempts      = 5
  async_max_age           = "60m"
  async_backoff_initial   = "2s"
  async_retry_on          = ["5xx"]
  async_max_share_percent = 50
}}
output "cell" {{
  value = baton_function.echo.cell
}}
"#
        )
    };
    tf.apply(&config(64));
    assert_eq!(tf.outputs()["cell"], "cell-1");
    router_answers(&fed, &key, reqwest::Method::POST, "/function/echo", 200).await;
    assert_eq!(tf.changes(), None, "server defaults, `[]` and \"1m\" (stored as 60s) are no diff");
    let spec = |body: serde_json::Value| body["spec"].clone();
    let get = || async {
        let answer = reqwest::Client::new().get(fed.router_url(0, "/v1/functions/echo")).bearer_auth(&key).send();
        answer.await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(spec(get().await)["env"]["GREETING"], "hi");
    assert_eq!(spec(get().await)["reserved_concurrency"], 7);
    assert_eq!(
        spec(get().await)["async"],
        serde_json::json!({"max_attempts": 5, "max_age": "60m", "backoff": {"initial": "2s"}, "retry_on": ["5xx"], "max_share": 0.5}),
        "the async policy as the configuration gives it"
    );

    // Memory changes in place.
    tf.write(&config(128));
    let plan = tf.changes().expect("a change");
    assert!(plan.contains("updated in-place") && plan.contains("64 -> 128"), "{plan}");
    tf.apply(&config(128));
    assert_eq!(spec(get().await)["resources"]["memory_mib"], 128);
    assert_eq!(tf.changes(), None, "nothing left to do after the update");
    router_answers(&fed, &key, reqwest::Method::POST, "/function/echo", 200).await;

    // Drift: redeployed by hand with more memory, then deleted by hand.
    let mut by_hand = spec(get().await);
    by_hand["resources"]["memory_mib"] = 256.into();
    let put = reqwest::Client::new().put(fed.router_url(0, "/v1/functions/echo")).bearer_auth(&key).json(&by_hand);
    assert_eq!(put.send().await.unwrap().status(), 200);
    let plan = tf.changes().expect("a change by hand is a diff");
    assert!(plan.contains("256 -> 128"), "{plan}");
    router_answers(&fed, &key, reqwest::Method::DELETE, "/v1/functions/echo", 204).await;
    let plan = tf.changes().expect("a function deleted by hand is a diff");
    assert!(plan.contains("will be created"), "{plan}");
    tf.apply(&config(128));
    router_answers(&fed, &key, reqwest::Method::POST, "/function/echo", 200).await;

    // Import by name, with the provider's key. (An import cannot tell `args = []` from no
    // `args`: it reads an empty list as none, which this configuration then says too.)
    tf.ok(&["state", "rm", "baton_function.echo"]);
    tf.write(&config(128).replace("  args       = []\n", ""));
    tf.ok(&["import", "-input=false", "-no-color", "baton_function.echo", "echo"]);
    assert_eq!(tf.changes(), None, "an imported function matches its configuration");

    // A new name replaces it, and the plan says so; a bad spec is refused before anything.
    tf.write(&config(128).replace("name       = \"echo\"", "name = \"echo-2\""));
    assert!(tf.changes().unwrap().contains("forces replacement"));
    tf.write(&config(128).replace("timeout    = \"1m\"", "timeout = \"soon\""));
    let refused = tf.run(&["plan", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("timeout \"soon\""), "{}", refused.output);
    tf.write(&config(128).replace("async_retry_on          = [\"5xx\"]", "async_retry_on = [\"sometimes\"]"));
    let refused = tf.run(&["plan", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("async_retry_on \"sometimes\""), "{}", refused.output);
    tf.write(&config(128).replace("async_max_attempts      = 5", "async_max_attempts = 0"));
    let refused = tf.run(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("async.max_attempts"), "{}", refused.output);
    tf.write(&config(128).replace("memory_mib = 128", "memory_mib = 1"));
    let refused = tf.run(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("memory_mib"), "{}", refused.output);

    tf.write(&config(128));
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    router_answers(&fed, &key, reqwest::Method::GET, "/v1/functions/echo", 404).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cell_is_drained_and_filled_and_the_data_sources_read_the_federation() {
    let (fed, key, tf) = federation(1, 17800).await;
    let state = || async {
        let cells = fed.client().await.list_cells(ListCellsRequest {}).await.unwrap().into_inner().cells;
        cells.into_iter().find(|c| c.id == "cell-1").unwrap().state
    };
    let put = reqwest::Client::new()
        .put(fed.router_url(0, "/v1/functions/f"))
        .bearer_auth(&key)
        .json(&baton_testkit::echo_spec("f", serde_json::json!({})));
    assert_eq!(put.send().await.unwrap().status(), 201);
    let config = |cell_state: &str| {
        format!(
            r#"
resource "baton_cell" "one" {{
  id    = "cell-1"
  state = "{cell_state}"
}}
data "baton_cells" "all" {{
  depends_on = [baton_cell.one]
}}
data "baton_shard_map" "ops" {{
  tenant = "ops"
}}
output "cells" {{
  value = data.baton_cells.all.cells
}}
output "map" {{
  value = data.baton_shard_map.ops.functions
}}
output "status" {{
  value = baton_cell.one.status
}}
"#
        )
    };
    tf.apply(&config("draining"));
    assert_eq!(state().await, "draining");
    let outputs = tf.outputs();
    assert_eq!(outputs["status"], "draining");
    assert_eq!(outputs["cells"][0]["id"], "cell-1");
    assert_eq!(outputs["cells"][0]["state"], "draining");
    assert_eq!(outputs["cells"][0]["functions"], 1);
    assert_eq!(outputs["map"][0]["name"], "f");
    assert_eq!(outputs["map"][0]["cell"], "cell-1");
    assert_eq!(outputs["map"][0]["generation"], 1);
    assert_eq!(tf.changes(), None);

    tf.apply(&config("active"));
    assert_eq!(state().await, "active");
    assert_eq!(tf.changes(), None);

    // Drained by hand: a diff that fills it again.
    let drain = baton_proto::shard::SetCellStateRequest { cell: "cell-1".into(), state: "draining".into() };
    fed.client().await.set_cell_state(drain).await.unwrap();
    let plan = tf.changes().expect("a drain by hand is a diff");
    assert!(plan.contains("\"draining\" -> \"active\""), "{plan}");

    tf.ok(&["state", "rm", "baton_cell.one"]);
    tf.ok(&["import", "-input=false", "-no-color", "baton_cell.one", "cell-1"]);
    assert!(tf.changes().unwrap().contains("\"draining\" -> \"active\""), "imported as it is");
    tf.write(&config("drained"));
    let refused = tf.run(&["plan", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("\"active\" or \"draining\""), "{}", refused.output);
    tf.write(&config("draining"));
    let unknown = config("draining").replace("\"cell-1\"", "\"cell-9\"");
    tf.write(&unknown);
    let refused = tf.run(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(refused.code != 0 && refused.output.contains("cell cell-9 is not registered"), "{}", refused.output);

    // Destroying the resource fills the drained cell again.
    tf.write(&config("draining"));
    tf.apply(&config("draining"));
    assert_eq!(state().await, "draining");
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert_eq!(state().await, "active");
}
