//! A client of every shard-manager replica: any replica answers (a follower forwards
//! writes to the leader), so a call that finds a replica unreachable goes to the next one.
//! Used by routers (the tenant API) and cells (registration, heartbeats, specs).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Clients of every replica, and the one that answered last.
#[derive(Clone)]
pub struct Replicas {
    clients: Vec<ShardManagerClient<Channel>>,
    current: std::sync::Arc<AtomicUsize>,
}

impl Replicas {
    /// Clients of `replicas` (gRPC URLs), connected lazily.
    pub fn new(replicas: &[String]) -> Result<Self, String> {
        if replicas.is_empty() {
            return Err("at least one shard-manager URL is needed".into());
        }
        let clients = replicas
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
                let channel = endpoint
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(10))
                    // A hung replica's connection is dropped, so calls move on to the next.
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                Ok(ShardManagerClient::new(channel)
                    .max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(baton_proto::MAX_MESSAGE_BYTES))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { clients, current: std::sync::Arc::new(AtomicUsize::new(0)) })
    }

    /// Sends `request` with `call` to a replica; moves to the next replica while they are
    /// unavailable (each attempt gets its own copy of the request).
    pub async fn call<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, Status>
    where
        R: Clone,
        F: Fn(ShardManagerClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = Status::unavailable("no shard-manager replica");
        for i in 0..self.clients.len() {
            let index = (start + i) % self.clients.len();
            match call(self.clients[index].clone(), request.clone()).await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Err(status) if status.code() == Code::Unavailable => last = status,
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }
}
