//! Functions' async policies, as the delivery loop needs them: read from the shard
//! manager (the function's spec) and kept for [`FRESH`], so a change to a function's
//! `async` reaches its queued calls within that time and a busy function costs one read
//! per interval, not one per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_model::AsyncPolicy;
use baton_proto::shard::FunctionRef;
use serde::Deserialize;
use tonic::Code;

use crate::context::Router;

/// How long a policy read is used.
pub const FRESH: Duration = Duration::from_secs(5);
/// Most policies kept.
const MOST: usize = 10_000;

/// Why a policy could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The shard manager has no such function.
    Deleted,
    /// The shard manager could not be asked.
    Unavailable(String),
}

/// The cache.
#[derive(Default)]
pub struct Policies {
    cache: Mutex<HashMap<String, (Instant, Arc<AsyncPolicy>)>>,
}

#[derive(Deserialize)]
struct OnlyAsync {
    #[serde(default, rename = "async")]
    policy: AsyncPolicy,
}

impl Policies {
    /// `tenant`'s function `name`'s policy.
    pub async fn get(&self, router: &Router, tenant: &str, name: &str) -> Result<Arc<AsyncPolicy>, Missing> {
        let key = baton_model::FunctionId::key_of(tenant, name);
        if let Some((at, policy)) = self.cache.lock().expect("policies lock").get(&key)
            && at.elapsed() < FRESH
        {
            return Ok(policy.clone());
        }
        let request = FunctionRef { tenant: tenant.into(), name: name.into(), min_epoch: router.read_epoch() };
        let read = router.manager.call(request, |mut c, r| async move { c.get_function(r).await }).await;
        let function = match read {
            Ok(function) => function,
            Err(status) if status.code() == Code::NotFound => {
                self.cache.lock().expect("policies lock").remove(&key);
                return Err(Missing::Deleted);
            }
            Err(status) => return Err(Missing::Unavailable(status.message().to_string())),
        };
        // A stored spec was validated when registered; one unreadable now gets the defaults.
        let policy =
            Arc::new(serde_json::from_str::<OnlyAsync>(&function.spec_json).map(|o| o.policy).unwrap_or_default());
        let mut cache = self.cache.lock().expect("policies lock");
        if cache.len() >= MOST {
            cache.retain(|_, (at, _)| at.elapsed() < FRESH);
        }
        cache.insert(key, (Instant::now(), policy.clone()));
        Ok(policy)
    }
}
