//! Where a control plane gets a tenant's registry credentials, for its workers' pulls of
//! the tenant's images. A federated cell asks the shard manager (which keeps them sealed)
//! and keeps an answer a short while; a cell on its own has none, and pulls anonymously.

/// A tenant's user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({:?}, <redacted>)", self.username)
    }
}

/// Gives a tenant's credentials for a registry.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    /// `tenant`'s credentials for `registry` (normalized, as
    /// `baton_model::image::registry_of` names it); `None` when it has none.
    async fn get(&self, tenant: &str, registry: &str) -> Result<Option<RegistryLogin>, String>;
}
