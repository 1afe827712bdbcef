//! Tenants and API keys. A key is 24 random bytes, hex, prefixed `bk_`; it is returned
//! once and only its SHA-256 is replicated (and sent to routers in the shard map). Its ID,
//! for revocation, is the first 16 hex digits of that hash.

use baton_model::function::is_label;
use baton_proto::shard::{
    Ack, ApiKeyInfo, CreateApiKeyRequest, CreateApiKeyResponse, DeleteTenantRequest, ListApiKeysRequest,
    ListApiKeysResponse, ListTenantsRequest, ListTenantsResponse, PutTenantRequest, RevokeApiKeyRequest, TenantInfo,
};
use baton_shardmap::key_hash;
use tonic::Status;

use super::{Manager, required};
use crate::state::{Command, Rejection, Tenant};

/// Hex digits of a key's hash that name it.
const KEY_ID_LEN: usize = 16;

fn new_key() -> String {
    let bytes: [u8; 24] = rand::random();
    let mut key = String::from("bk_");
    for byte in bytes {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

impl Manager {
    pub(super) async fn put_tenant_inner(&self, r: PutTenantRequest, request: Option<&str>) -> Result<Ack, Status> {
        let name = required("name", &r.name)?;
        if !is_label(name) {
            return Err(Status::invalid_argument(format!(
                "name: {name:?} must be 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
            )));
        }
        let default_region = required("default_region", &r.default_region)?;
        let max_functions = if r.max_functions == 0 { self.admission.max_per_tenant() } else { r.max_functions };
        let tenant = Tenant {
            name: name.to_string(),
            default_region: default_region.to_string(),
            max_functions,
            limits: self.admission.tenant_limits(&r),
        };
        let epoch = self.write(request, Command::PutTenant(tenant)).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    /// Deletes a tenant without functions; its keys are revoked in the same commit, so no
    /// router admits them once it has the delta.
    pub(super) async fn delete_tenant_inner(
        &self,
        r: DeleteTenantRequest,
        request: Option<&str>,
    ) -> Result<Ack, Status> {
        let name = required("name", &r.name)?.to_string();
        let epoch = self.write(request, Command::DeleteTenant { name }).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    pub(super) async fn create_api_key_inner(&self, r: CreateApiKeyRequest) -> Result<CreateApiKeyResponse, Status> {
        let tenant = required("tenant", &r.tenant)?;
        if !self.sm.read(|state| state.tenants.contains_key(tenant)).await {
            return Err(super::rejected(&Rejection::UnknownTenant(tenant.to_string())));
        }
        let key = new_key();
        let hash = key_hash(&key);
        let key_id = hash[..KEY_ID_LEN].to_string();
        // No request ID: a retry makes a new key (only its hash is stored), so the first
        // attempt's outcome could not be answered with it.
        let epoch = self.write(None, Command::PutApiKey { key_hash: hash, tenant: tenant.to_string() }).await?.epoch;
        Ok(CreateApiKeyResponse { key, key_id, epoch: epoch.0 })
    }

    pub(super) async fn revoke_api_key_inner(
        &self,
        r: RevokeApiKeyRequest,
        request: Option<&str>,
    ) -> Result<Ack, Status> {
        let key_id = required("key_id", &r.key_id)?;
        if key_id.len() != KEY_ID_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!("key_id: {key_id:?} must be {KEY_ID_LEN} hex digits")));
        }
        let key_id = key_id.to_ascii_lowercase();
        // The key's ID stands for its hash in the write's subject.
        if let Some(first) = self.remembered(request, &Command::RevokeApiKey { key_hash: key_id.clone() }).await? {
            return Ok(Ack { epoch: first.epoch.0 });
        }
        let hash = self.sm.read(|state| state.api_keys.keys().find(|h| h.starts_with(&key_id)).cloned()).await;
        let Some(key_hash) = hash else {
            return Err(super::rejected(&Rejection::UnknownKey(key_id.to_string())));
        };
        let epoch = self.write(request, Command::RevokeApiKey { key_hash }).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    pub(super) async fn list_tenants_inner(&self, r: ListTenantsRequest) -> Result<ListTenantsResponse, Status> {
        self.caught_up(r.min_epoch).await?;
        Ok(self
            .sm
            .read(|state| ListTenantsResponse {
                tenants: state
                    .tenants
                    .values()
                    .map(|t| {
                        let usage = state.usage(&t.name);
                        TenantInfo {
                            name: t.name.clone(),
                            default_region: t.default_region.clone(),
                            max_functions: t.max_functions,
                            functions: state.function_count(&t.name) as u64,
                            executables: t.limits.executables,
                            max_sandboxes: t.limits.max_sandboxes,
                            max_reserved_cpu_millis: t.limits.max_reserved_cpu_millis,
                            max_reserved_memory_mib: t.limits.max_reserved_memory_mib,
                            sandboxes: usage.sandboxes,
                            reserved_cpu_millis: usage.reserved_cpu_millis,
                            reserved_memory_mib: usage.reserved_memory_mib,
                        }
                    })
                    .collect(),
                epoch: state.epoch.0,
            })
            .await)
    }

    pub(super) async fn list_api_keys_inner(&self, r: ListApiKeysRequest) -> Result<ListApiKeysResponse, Status> {
        self.caught_up(r.min_epoch).await?;
        let listed = self
            .sm
            .read(|state| {
                if !r.tenant.is_empty() && !state.tenants.contains_key(&r.tenant) {
                    return Err(Rejection::UnknownTenant(r.tenant.clone()));
                }
                let keys = state
                    .api_keys
                    .iter()
                    .filter(|(_, tenant)| r.tenant.is_empty() || **tenant == r.tenant)
                    .map(|(hash, tenant)| ApiKeyInfo { key_id: hash[..KEY_ID_LEN].to_string(), tenant: tenant.clone() })
                    .collect();
                Ok(ListApiKeysResponse { keys, epoch: state.epoch.0 })
            })
            .await;
        listed.map_err(|rejection| super::rejected(&rejection))
    }
}
