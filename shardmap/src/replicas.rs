//! A client of every shard-manager replica: any replica answers (a follower forwards
//! writes to the leader), so a call that finds a replica unreachable goes to the next one.
//! Used by routers (the tenant API) and cells (registration, heartbeats, specs).
//!
//! Every attempt of one call carries the same request ID
//! ([`baton_model::headers::REQUEST_ID`]): a write whose answer was lost (its leader died
//! after the commit) and that is then sent to the next replica is applied once, and
//! answered as the first attempt was.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_service::tls::Tls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Clients of every replica, and the one that answered last.
#[derive(Clone)]
pub struct Replicas {
    clients: Vec<ShardManagerClient<Channel>>,
    current: std::sync::Arc<AtomicUsize>,
}

/// Why a list of shard-manager replicas is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicasError {
    /// The list is empty.
    #[error("at least one shard-manager URL is needed")]
    None,
    /// An entry is not a URL.
    #[error("{url:?} is not a URL: {reason}")]
    NotAUrl {
        /// The entry.
        url: String,
        /// Why.
        reason: String,
    },
}

impl Replicas {
    /// Clients of `replicas` (gRPC URLs), connected lazily with `tls`.
    pub fn new(replicas: &[String], tls: &Tls) -> Result<Self, ReplicasError> {
        if replicas.is_empty() {
            return Err(ReplicasError::None);
        }
        let clients = replicas
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| ReplicasError::NotAUrl { url: url.clone(), reason: e.to_string() })?;
                let endpoint = endpoint
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(10))
                    // A hung replica's connection is dropped, so calls move on to the next.
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true);
                let channel = tls.channel(&endpoint);
                Ok(ShardManagerClient::new(channel)
                    .max_decoding_message_size(baton_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(baton_proto::MAX_MESSAGE_BYTES))
            })
            .collect::<Result<_, ReplicasError>>()?;
        Ok(Self { clients, current: std::sync::Arc::new(AtomicUsize::new(0)) })
    }

    /// Sends `request` with `call` to a replica; moves to the next replica while they are
    /// unavailable (each attempt gets its own copy of the request, with the call's one
    /// request ID, a random one).
    pub async fn call<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, Status>
    where
        R: Clone,
        F: Fn(ShardManagerClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let id = format!("{:032x}", rand::random::<u128>()).parse().expect("hex digits are valid metadata");
        self.attempts(id, request, call).await
    }

    /// As [`Replicas::call`], with the caller's request ID (a tenant's idempotency key, so
    /// that the tenant's own retries are applied once too): printable ASCII without spaces,
    /// at most [`baton_model::headers::MAX_REQUEST_ID_LEN`] characters.
    pub async fn call_as<R, T, F, Fut>(&self, request_id: &str, request: R, call: F) -> Result<T, Status>
    where
        R: Clone,
        F: Fn(ShardManagerClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let id = request_id.parse().map_err(|_| Status::invalid_argument("the request ID is not printable ASCII"))?;
        self.attempts(id, request, call).await
    }

    async fn attempts<R, T, F, Fut>(&self, id: MetadataValue<Ascii>, request: R, call: F) -> Result<T, Status>
    where
        R: Clone,
        F: Fn(ShardManagerClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = Status::unavailable("no shard-manager replica");
        for i in 0..self.clients.len() {
            let index = (start + i) % self.clients.len();
            let mut attempt = tonic::Request::new(request.clone());
            attempt.metadata_mut().insert(baton_model::headers::REQUEST_ID, id.clone());
            match call(self.clients[index].clone(), attempt).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attempt of a call carries one request ID; another call, another.
    #[tokio::test]
    async fn each_call_has_one_request_id_across_its_attempts() {
        // Never connected: the attempts below answer without calling.
        let urls = ["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()];
        let replicas = Replicas::new(&urls, &Tls::Plaintext).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let attempt = |_client, request: tonic::Request<()>| {
            let id = request.metadata().get(baton_model::headers::REQUEST_ID).map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(id);
            async { Err::<tonic::Response<()>, _>(Status::unavailable("down")) }
        };
        assert_eq!(replicas.call((), attempt).await.unwrap_err().code(), Code::Unavailable);
        assert_eq!(replicas.call((), attempt).await.unwrap_err().code(), Code::Unavailable);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 4, "two attempts per call, one per replica");
        let ids: Vec<String> = seen.into_iter().map(Option::unwrap).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())), "{ids:?}");
        assert_eq!(ids[0], ids[1], "a call's attempts share its ID");
        assert_eq!(ids[2], ids[3]);
        assert_ne!(ids[0], ids[2], "calls do not");
    }
}
