//! `baton_api_key`: an API key of a tenant. The secret is known once, when the key is
//! created (only its hash is stored), so it is in the state as a sensitive attribute and
//! an imported key has none. Nothing about a key changes in place: a new tenant is a new
//! key. Destroying it revokes it.

use async_trait::async_trait;
use baton_proto::shard::{ApiKeyInfo, CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty, ValueString};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::api::{Api, ApiError, refused};
use crate::provider::{Shared, api};
use crate::schema::{computed, found, removed, report, required, schema, sensitive};

/// State of a `baton_api_key`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState<'a> {
    #[serde(borrow = "'a")]
    id: ValueString<'a>,
    tenant: ValueString<'a>,
    key_id: ValueString<'a>,
    secret: ValueString<'a>,
}

/// The `baton_api_key` resource.
pub struct ApiKeyResource(pub Shared);

/// The key `key_id` (of `tenant`, when given), if it is still there.
async fn find(api: &Api, tenant: &str, key_id: &str) -> Result<Option<ApiKeyInfo>, ApiError> {
    let request = ListApiKeysRequest { tenant: tenant.to_string(), min_epoch: 0 };
    let keys = match api.manager().await?.list_api_keys(request).await {
        Ok(listed) => listed.into_inner().keys,
        // The tenant is gone, and its keys with it.
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
        Err(status) => return Err(refused("listing API keys", status)),
    };
    Ok(keys.into_iter().find(|k| k.key_id == key_id))
}

#[async_trait]
impl Resource for ApiKeyResource {
    type State<'a> = ApiKeyState<'a>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "An API key of a tenant, for its functions and calls. Import: `terraform import baton_api_key.NAME KEY_ID` \
             (an imported key has no secret: the federation keeps only its hash).",
            vec![
                ("id", computed(AttributeType::String, "The key's ID.")),
                ("tenant", required(AttributeType::String, "The tenant. Changing it replaces the key.")),
                ("key_id", computed(AttributeType::String, "The key's ID: 16 hex digits, as `baton keys list` shows.")),
                (
                    "secret",
                    sensitive(computed(
                        AttributeType::String,
                        "The key itself (`bk_…`), for Authorization: Bearer. Known only to the apply that created it.",
                    )),
                ),
            ],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: ApiKeyState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        match find(api, state.tenant.as_str(), state.key_id.as_str()).await {
            Ok(Some(_)) => Some((state, private)),
            Ok(None) => None,
            Err(e) => {
                report(diags, &format!("reading API key {}", state.key_id.as_str()), e);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: ApiKeyState<'a>,
        _config: ApiKeyState<'a>,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState<'a>, ValueEmpty)> {
        let mut state = proposed;
        state.id = Value::Unknown;
        state.key_id = Value::Unknown;
        state.secret = Value::Unknown;
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: ApiKeyState<'a>,
        proposed: ApiKeyState<'a>,
        _config: ApiKeyState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState<'a>, ValueEmpty, Vec<AttributePath>)> {
        let replace = if proposed.tenant != prior.tenant { vec![AttributePath::new("tenant")] } else { Vec::new() };
        Some((proposed, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: ApiKeyState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: ApiKeyState<'a>,
        _config: ApiKeyState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let tenant = planned.tenant.as_str().to_string();
        let created = match api.manager().await {
            Ok(mut client) => client.create_api_key(CreateApiKeyRequest { tenant: tenant.clone() }).await,
            Err(e) => {
                report(diags, &format!("creating an API key for {tenant}"), e);
                return None;
            }
        };
        match created {
            Ok(key) => {
                let key = key.into_inner();
                let state = ApiKeyState {
                    id: Value::Value(key.key_id.clone().into()),
                    tenant: planned.tenant,
                    key_id: Value::Value(key.key_id.into()),
                    secret: Value::Value(key.key.into()),
                };
                Some((state, private))
            }
            Err(status) => {
                report(diags, &format!("creating an API key for {tenant}"), refused("creating the key", status));
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: ApiKeyState<'a>,
        planned: ApiKeyState<'a>,
        _config: ApiKeyState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState<'a>, ValueEmpty)> {
        // Only `tenant` is configurable, and changing it replaces the key.
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: ApiKeyState<'a>,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let api = api(&self.0, diags)?;
        let key_id = prior.key_id.as_str().to_string();
        let what = format!("revoking API key {key_id}");
        let revoked = async {
            let request = RevokeApiKeyRequest { key_id };
            api.manager().await?.revoke_api_key(request).await.map(|_| ()).map_err(|s| refused(&what, s))
        };
        removed(diags, &what, revoked.await)
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(ApiKeyState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let key = found(diags, "API key", &id, find(api, "", &id).await)?;
        let state = ApiKeyState {
            id: Value::Value(key.key_id.clone().into()),
            tenant: Value::Value(key.tenant.into()),
            key_id: Value::Value(key.key_id.into()),
            secret: Value::Null,
        };
        Some((state, ValueEmpty::default()))
    }
}
