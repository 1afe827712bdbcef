//! `baton_tenant`: a tenant and its limits. Created and updated whole (`PutTenant`),
//! deleted once it has no functions (its API keys go with it); imported by name. A limit
//! left out takes the federation's default, which is then kept as it is (never a diff).

use async_trait::async_trait;
use baton_proto::shard::{DeleteTenantRequest, ListTenantsRequest, PutTenantRequest, TenantInfo};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueBool, ValueEmpty, ValueNumber, ValueString};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::api::{Api, ApiError, refused};
use crate::plan::filled_in;
use crate::provider::{Shared, api};
use crate::schema::{absent, computed, defaulted, found, optional, outcome, removed, report, required, schema};

/// State of a `baton_tenant`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantState<'a> {
    #[serde(borrow = "'a")]
    id: ValueString<'a>,
    name: ValueString<'a>,
    default_region: ValueString<'a>,
    executables: ValueBool,
    max_functions: ValueNumber,
    max_sandboxes: ValueNumber,
    max_reserved_cpu_millis: ValueNumber,
    max_reserved_memory_mib: ValueNumber,
}

/// The `baton_tenant` resource.
pub struct TenantResource(pub Shared);

const LIMITS: [&str; 4] = ["max_functions", "max_sandboxes", "max_reserved_cpu_millis", "max_reserved_memory_mib"];

impl TenantState<'_> {
    fn limits(&self) -> [&ValueNumber; 4] {
        [&self.max_functions, &self.max_sandboxes, &self.max_reserved_cpu_millis, &self.max_reserved_memory_mib]
    }

    fn request(&self) -> PutTenantRequest {
        let number = |v: &ValueNumber| v.as_ref_option().copied().unwrap_or(0).max(0) as u64;
        PutTenantRequest {
            name: self.name.as_str().to_string(),
            default_region: self.default_region.as_str().to_string(),
            max_functions: number(&self.max_functions) as u32,
            executables: self.executables.as_ref_option().copied().unwrap_or(false),
            max_sandboxes: number(&self.max_sandboxes),
            max_reserved_cpu_millis: number(&self.max_reserved_cpu_millis),
            max_reserved_memory_mib: number(&self.max_reserved_memory_mib),
        }
    }

    /// The state of `t`; `executables` false reads back as the configuration wrote it
    /// (left out or `false`).
    fn from_info(t: TenantInfo, prior_executables: &ValueBool) -> TenantState<'static> {
        let executables =
            if !t.executables && prior_executables.is_null() { Value::Null } else { Value::Value(t.executables) };
        TenantState {
            id: Value::Value(t.name.clone().into()),
            name: Value::Value(t.name.into()),
            default_region: Value::Value(t.default_region.into()),
            executables,
            max_functions: Value::Value(t.max_functions.into()),
            max_sandboxes: Value::Value(t.max_sandboxes as i64),
            max_reserved_cpu_millis: Value::Value(t.max_reserved_cpu_millis as i64),
            max_reserved_memory_mib: Value::Value(t.max_reserved_memory_mib as i64),
        }
    }
}

/// The tenant named `name`, if there is one.
async fn find(api: &Api, name: &str) -> Result<Option<TenantInfo>, ApiError> {
    let listed = api.manager().await?.list_tenants(ListTenantsRequest { min_epoch: 0 }).await;
    let tenants = listed.map_err(|s| refused("listing tenants", s))?.into_inner().tenants;
    Ok(tenants.into_iter().find(|t| t.name == name))
}

/// Puts `state` and reads it back as the federation stored it.
async fn put(api: &Api, state: &TenantState<'_>) -> Result<TenantState<'static>, ApiError> {
    let name = state.name.as_str();
    api.manager().await?.put_tenant(state.request()).await.map_err(|s| refused(&format!("tenant {name}"), s))?;
    match find(api, name).await? {
        Some(info) => Ok(TenantState::from_info(info, &state.executables)),
        None => Err(ApiError::NotFound(format!("tenant {name} was stored but does not read back"))),
    }
}

#[async_trait]
impl Resource for TenantResource {
    type State<'a> = TenantState<'a>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let number = AttributeType::Number;
        Some(schema(
            "A tenant of the federation, with its limits. Deleting it needs its functions gone first; its API keys \
             are revoked with it. Import: `terraform import baton_tenant.NAME name`.",
            vec![
                ("id", computed(AttributeType::String, "The tenant's name.")),
                (
                    "name",
                    required(
                        AttributeType::String,
                        "1-63 lowercase letters, digits and '-', starting with a letter. Changing it replaces the tenant.",
                    ),
                ),
                (
                    "default_region",
                    required(AttributeType::String, "Region its functions live in unless they say otherwise."),
                ),
                (
                    "executables",
                    optional(
                        AttributeType::Bool,
                        "May register functions that run a host executable (the process runtime). Default false: \
                         leaving it out takes the permission away.",
                    ),
                ),
                (
                    "max_functions",
                    defaulted(
                        number.clone(),
                        "Most functions it may have. Default: the federation's (functions.max_per_tenant).",
                    ),
                ),
                (
                    "max_sandboxes",
                    defaulted(
                        number.clone(),
                        "Most sandboxes its functions may have at once (sum of max_scale); 0: no limit.",
                    ),
                ),
                (
                    "max_reserved_cpu_millis",
                    defaulted(
                        number.clone(),
                        "Most CPU, thousandths of a core, held even when idle (sum of min_scale × cpu).",
                    ),
                ),
                (
                    "max_reserved_memory_mib",
                    defaulted(number, "Most memory, MiB, held even when idle (sum of min_scale × memory)."),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: TenantState<'a>) -> Option<()> {
        if let Some(name) = config.name.as_ref_option()
            && !baton_model::function::is_label(name)
        {
            diags.error_short(
                format!("name {name:?}: 1-63 lowercase letters, digits and '-', starting with a letter"),
                AttributePath::new("name"),
            );
        }
        for (field, value) in LIMITS.iter().zip(config.limits()) {
            if let Some(&n) = value.as_ref_option()
                && n < 0
            {
                diags.error_short(format!("{field} cannot be negative"), AttributePath::new(*field));
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: TenantState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(TenantState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        match find(api, state.name.as_str()).await {
            Ok(Some(info)) => Some((TenantState::from_info(info, &state.executables), private)),
            Ok(None) => None,
            Err(e) => {
                report(diags, &format!("reading tenant {}", state.name.as_str()), e);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: TenantState<'a>,
        _config: TenantState<'a>,
        _meta: ValueEmpty,
    ) -> Option<(TenantState<'a>, ValueEmpty)> {
        let mut state = proposed;
        state.id = state.name.clone();
        for limit in [
            &mut state.max_functions,
            &mut state.max_sandboxes,
            &mut state.max_reserved_cpu_millis,
            &mut state.max_reserved_memory_mib,
        ] {
            filled_in(limit);
        }
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: TenantState<'a>,
        proposed: TenantState<'a>,
        _config: TenantState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(TenantState<'a>, ValueEmpty, Vec<AttributePath>)> {
        let replace = if proposed.name != prior.name { vec![AttributePath::new("name")] } else { Vec::new() };
        Some((proposed, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: TenantState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: TenantState<'a>,
        _config: TenantState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(TenantState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let name = planned.name.as_str().to_string();
        absent(diags, "tenant", &name, find(api, &name).await)?;
        outcome(diags, &format!("creating tenant {name}"), put(api, &planned).await).map(|state| (state, private))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: TenantState<'a>,
        planned: TenantState<'a>,
        _config: TenantState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(TenantState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        outcome(diags, &format!("updating tenant {}", prior.name.as_str()), put(api, &planned).await)
            .map(|state| (state, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: TenantState<'a>,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let api = api(&self.0, diags)?;
        let name = prior.name.as_str().to_string();
        let what = format!("deleting tenant {name}");
        let deleted = async {
            let request = DeleteTenantRequest { name: name.clone() };
            api.manager().await?.delete_tenant(request).await.map(|_| ()).map_err(|s| refused(&what, s))
        };
        removed(diags, &what, deleted.await)
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(TenantState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let info = found(diags, "tenant", &id, find(api, &id).await)?;
        Some((TenantState::from_info(info, &Value::Null), ValueEmpty::default()))
    }
}
