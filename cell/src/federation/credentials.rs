//! Tenants' registry credentials from the shard manager, each answer kept for a short
//! while so a burst of cold starts asks once (and a change is seen within that while).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_proto::shard::RegistryRef;

use crate::control_plane::{CredentialSource, RegistryLogin};

/// How long an answer is kept.
pub const KEEP: Duration = Duration::from_secs(30);

/// An answer for (tenant, registry), and when it came.
type Kept = HashMap<(String, String), (Instant, Option<RegistryLogin>)>;

/// Credentials read from the shard manager.
pub struct FromShardManager {
    replicas: baton_shardmap::Replicas,
    kept: Mutex<Kept>,
}

impl FromShardManager {
    /// Reads through `replicas`.
    pub fn new(replicas: baton_shardmap::Replicas) -> Self {
        Self { replicas, kept: Mutex::default() }
    }
}

#[async_trait::async_trait]
impl CredentialSource for FromShardManager {
    async fn get(&self, tenant: &str, registry: &str) -> Result<Option<RegistryLogin>, String> {
        let key = (tenant.to_string(), registry.to_string());
        if let Some((at, login)) = self.kept.lock().expect("credentials lock").get(&key)
            && at.elapsed() < KEEP
        {
            return Ok(login.clone());
        }
        let request = RegistryRef { tenant: key.0.clone(), registry: key.1.clone(), min_epoch: 0 };
        let got = self.replicas.call(request, |mut c, r| async move { c.get_registry_credentials(r).await }).await;
        let got = got.map_err(|status| status.message().to_string())?;
        let login = got.found.then_some(RegistryLogin { username: got.username, password: got.password });
        self.kept.lock().expect("credentials lock").insert(key, (Instant::now(), login.clone()));
        Ok(login)
    }
}
