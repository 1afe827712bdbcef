//! The provider block: where the federation is and the credentials to use, each also
//! read from the environment variables the `baton` CLI reads (`source ~/.baton/env` after
//! `baton up` is enough).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use baton_service::tls::{Role, Tls};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{ValueEmpty, ValueString};
use tf_provider::{Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::api::Api;
use crate::schema::{optional, schema, sensitive};

/// The configured clients, shared by every resource (set once, by `ConfigureProvider`).
pub type Shared = Arc<OnceLock<Api>>;

/// The clients of `shared`, or an error diagnostic when the provider was never configured.
pub fn api<'a>(shared: &'a Shared, diags: &mut Diagnostics) -> Option<&'a Api> {
    let api = shared.get();
    if api.is_none() {
        diags.root_error_short("the baton provider was used before it was configured");
    }
    api
}

/// `provider "baton" { … }`
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Config<'a> {
    /// Shard-manager replicas' gRPC URLs, comma-separated.
    #[serde(borrow = "'a")]
    pub shard_manager: ValueString<'a>,
    /// The federation's certificate authority (a PEM file).
    pub ca: ValueString<'a>,
    /// An operator certificate (PEM file).
    pub cert: ValueString<'a>,
    /// Its key (PEM file).
    pub key: ValueString<'a>,
    /// A router's URL.
    pub url: ValueString<'a>,
    /// A tenant's API key, for functions.
    pub api_key: ValueString<'a>,
}

/// terraform-provider-baton.
#[derive(Default)]
pub struct BatonProvider {
    shared: Shared,
}

/// A setting: the block's value, else the environment's, else none. An unknown value (one
/// that depends on a resource not yet created) is none for now.
fn setting(value: &ValueString<'_>, env: &str) -> Option<String> {
    value.as_ref_option().map(|v| v.to_string()).or_else(|| std::env::var(env).ok()).filter(|v| !v.is_empty())
}

#[async_trait]
impl Provider for BatonProvider {
    type Config<'a> = Config<'a>;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A baton federation: its tenants, API keys, functions and cells.",
            vec![
                (
                    "shard_manager",
                    optional(
                        AttributeType::String,
                        "gRPC URLs of the shard-manager replicas, comma-separated (default: $BATON_SHARD_MANAGER). \
                         Needed for tenants, keys, cells and the shard map.",
                    ),
                ),
                (
                    "ca",
                    optional(
                        AttributeType::String,
                        "The federation's certificate authority, a PEM file (default: $BATON_CA).",
                    ),
                ),
                (
                    "cert",
                    optional(
                        AttributeType::String,
                        "An operator certificate the authority signed, a PEM file (`baton certs issue operator`; default: \
                         $BATON_CERT). Without ca, cert and key the provider talks plaintext.",
                    ),
                ),
                (
                    "key",
                    optional(
                        AttributeType::String,
                        "The operator certificate's key, a PEM file (default: $BATON_KEY).",
                    ),
                ),
                ("url", optional(AttributeType::String, "A router's URL (default: $BATON_URL). Needed for functions.")),
                (
                    "api_key",
                    sensitive(optional(
                        AttributeType::String,
                        "The API key functions are managed with unless one sets its own (default: $BATON_API_KEY).",
                    )),
                ),
            ],
        ))
    }

    async fn configure<'a>(&self, diags: &mut Diagnostics, _version: String, config: Config<'a>) -> Option<()> {
        let managers: Vec<String> = setting(&config.shard_manager, "BATON_SHARD_MANAGER")
            .map(|urls| urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect())
            .unwrap_or_default();
        let path = |value: &ValueString<'_>, env: &str| setting(value, env).map(PathBuf::from);
        let (ca, cert, key) =
            (path(&config.ca, "BATON_CA"), path(&config.cert, "BATON_CERT"), path(&config.key, "BATON_KEY"));
        let tls = match Tls::for_tool(ca.as_deref(), cert.as_deref(), key.as_deref(), Role::Operator) {
            Ok(tls) => tls,
            Err(e) => {
                diags.root_error("the provider's ca, cert and key", e.to_string());
                return None;
            }
        };
        let api = Api::new(managers, tls, setting(&config.url, "BATON_URL"), setting(&config.api_key, "BATON_API_KEY"));
        if self.shared.set(api).is_err() {
            diags.root_warning_short("the baton provider was configured twice; the first configuration stays");
        }
        Some(())
    }

    // tf-provider names each `baton_<key>`.
    fn get_resources(&self, _diags: &mut Diagnostics) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let shared = || self.shared.clone();
        Some(HashMap::from([
            ("tenant".to_string(), Box::new(crate::tenant::TenantResource(shared())) as Box<dyn DynamicResource>),
            ("api_key".to_string(), Box::new(crate::api_key::ApiKeyResource(shared()))),
            ("function".to_string(), Box::new(crate::function::FunctionResource(shared()))),
            ("cell".to_string(), Box::new(crate::cell::CellResource(shared()))),
        ]))
    }

    fn get_data_sources(&self, _diags: &mut Diagnostics) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let shared = || self.shared.clone();
        Some(HashMap::from([
            ("cells".to_string(), Box::new(crate::data::CellsData(shared())) as Box<dyn DynamicDataSource>),
            ("shard_map".to_string(), Box::new(crate::data::ShardMapData(shared()))),
        ]))
    }
}
