//! Tenants' registry credentials: stored sealed with the operator's key
//! ([`crate::secrets`]), listed by registry only, and opened only for the routers that
//! resolve a tenant's images and the cells whose workers pull them.

use baton_model::image::{check_registry, normalize_registry};
use baton_proto::shard::{
    Ack, ListRegistriesRequest, ListRegistriesResponse, PutRegistryCredentialsRequest, RegistryCredentialsResponse,
    RegistryRef,
};
use tonic::Status;

use super::{Manager, required};
use crate::state::{Command, Rejection};

/// Longest user name or password (a registry token) accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// The sealed form: the user name and the password, NUL between (neither holds one).
fn plain(username: &str, password: &str) -> Vec<u8> {
    format!("{username}\0{password}").into_bytes()
}

fn registry(raw: &str) -> Result<String, Status> {
    let given = required("registry", raw)?;
    check_registry(given).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(normalize_registry(given))
}

impl Manager {
    fn sealer(&self) -> Result<&crate::secrets::Sealer, Status> {
        self.sealer.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this federation stores no registry credentials: its operator has not set secrets.key_file",
            )
        })
    }

    pub(super) async fn put_registry_credentials_inner(
        &self,
        r: PutRegistryCredentialsRequest,
        request: Option<&str>,
    ) -> Result<Ack, Status> {
        let tenant = required("tenant", &r.tenant)?;
        let registry = registry(&r.registry)?;
        for (field, value) in [("username", &r.username), ("password", &r.password)] {
            if value.is_empty() || value.len() > MAX_SECRET_BYTES || value.bytes().any(|b| b == 0 || b == b'\n') {
                return Err(Status::invalid_argument(format!(
                    "{field}: must be 1 to {MAX_SECRET_BYTES} bytes without NUL or line breaks"
                )));
            }
        }
        let sealed = self.sealer()?.seal(tenant, &registry, &plain(&r.username, &r.password));
        let command = Command::PutRegistryCredentials { tenant: tenant.to_string(), registry, sealed };
        let epoch = self.write(request, command).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    pub(super) async fn delete_registry_credentials_inner(
        &self,
        r: RegistryRef,
        request: Option<&str>,
    ) -> Result<Ack, Status> {
        let tenant = required("tenant", &r.tenant)?.to_string();
        let registry = registry(&r.registry)?;
        let epoch = self.write(request, Command::DeleteRegistryCredentials { tenant, registry }).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    pub(super) async fn list_registries_inner(
        &self,
        r: ListRegistriesRequest,
    ) -> Result<ListRegistriesResponse, Status> {
        self.caught_up(r.min_epoch).await?;
        let tenant = required("tenant", &r.tenant)?.to_string();
        let listed = self
            .sm
            .read(|state| {
                if !state.tenants.contains_key(&tenant) {
                    return Err(Rejection::UnknownTenant(tenant.clone()));
                }
                let registries = state.registry_credentials.get(&tenant).map(|r| r.keys().cloned().collect());
                Ok(ListRegistriesResponse { registries: registries.unwrap_or_default(), epoch: state.epoch.0 })
            })
            .await;
        listed.map_err(|e| super::rejected(&e))
    }

    pub(super) async fn get_registry_credentials_inner(
        &self,
        r: RegistryRef,
    ) -> Result<RegistryCredentialsResponse, Status> {
        self.caught_up(r.min_epoch).await?;
        let tenant = required("tenant", &r.tenant)?.to_string();
        let registry = registry(&r.registry)?;
        let sealed =
            self.sm.read(|state| state.registry_credentials.get(&tenant).and_then(|r| r.get(&registry)).cloned()).await;
        let Some(sealed) = sealed else {
            return Ok(RegistryCredentialsResponse { found: false, username: String::new(), password: String::new() });
        };
        let opened = self.sealer()?.open(&tenant, &registry, &sealed).map_err(|e| Status::internal(e.to_string()))?;
        let text = String::from_utf8(opened).map_err(|_| Status::internal("sealed credentials are not text"))?;
        let (username, password) = text.split_once('\0').unwrap_or((text.as_str(), ""));
        Ok(RegistryCredentialsResponse { found: true, username: username.to_string(), password: password.to_string() })
    }
}
