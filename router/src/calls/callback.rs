//! Callbacks: when an async call that named an `X-Callback-Url` ends, its record (as
//! `GET /v1/calls/{id}` shows it, result included) is POSTed there as JSON, with
//! `X-Call-Id`, `X-Baton-Status` and `X-Baton-Attempts`. A callback that fails (no answer
//! within [`TIMEOUT`], or anything but a 2xx) is tried again with back-off, from the queue
//! like a try of the call, so it never holds up another call.
//!
//! The URL is the tenant's: the router refuses to call loopback, private, link-local and
//! other non-public addresses (baton's own processes among them) unless the operator allows
//! it (`async.callback_private_networks`), checks every address a name resolves to, and
//! follows no redirect.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use baton_model::headers;

use super::record::CallRecord;

/// Longest a callback's receiver may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries a callback gets.
pub const MAX_ATTEMPTS: u32 = 10;

/// The wait before a callback's next try, after `attempts` tries: 1 s doubling, at most
/// 5 min (about 14 min over all ten).
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// Whether `ip` is an address a tenant's callback may reach without the operator's leave:
/// a public unicast one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Resolves names for callbacks, keeping only the addresses they may reach.
struct Guarded;

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if allowed.is_empty() {
                let why = format!("{host} resolves to no public address (async.callback_private_networks is off)");
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client that POSTs callbacks.
pub struct Callbacks {
    client: reqwest::Client,
    private_allowed: bool,
}

impl Callbacks {
    /// A client; `private_allowed` lets callbacks reach any address.
    pub fn new(private_allowed: bool) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton-router/", env!("CARGO_PKG_VERSION")));
        if !private_allowed {
            builder = builder.dns_resolver(std::sync::Arc::new(Guarded));
        }
        Self { client: builder.build().expect("a client without custom TLS builds"), private_allowed }
    }

    /// POSTs `record` (ended) to its callback URL; why not, when it did not get a 2xx.
    pub async fn send(&self, url: &str, record: &CallRecord) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !self.private_allowed {
            let host = parsed.host_str().unwrap_or_default();
            let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
            if literal.is_some_and(|ip| !is_public(ip)) {
                return Err(format!("{url} is not a public address (async.callback_private_networks is off)"));
            }
        }
        let state = serde_json::to_value(record.state).unwrap_or_default();
        let answer = self
            .client
            .post(parsed)
            .header(headers::CALL_ID, &record.id)
            .header(headers::STATUS, state.as_str().unwrap_or_default())
            .header(headers::ATTEMPTS, record.attempts.to_string())
            .header("content-type", "application/json")
            .body(super::api::describe(record).to_string())
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let status = answer.status();
        if status.is_success() { Ok(()) } else { Err(format!("the receiver answered {status}")) }
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn waits_double_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
