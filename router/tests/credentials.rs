//! Internal APIs need credentials: a federation whose every hop is mutual TLS serves
//! tenants through its router as before, while every internal API refuses callers without
//! a certificate (plaintext or TLS), with another authority's certificate, or with one of
//! a role the API is not for, and does nothing for them.

use std::time::Duration;

use baton_proto::cell::ListFunctionsRequest as CellListFunctions;
use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::raft::RaftMessage;
use baton_proto::raft::raft_transport_client::RaftTransportClient;
use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{CreateApiKeyRequest, ListApiKeysRequest, ListTenantsRequest, WatchShardMapRequest};
use baton_proto::worker::ListSandboxesRequest;
use baton_proto::worker::worker_client::WorkerClient;
use baton_service::tls::{Role, Tls};
use baton_testkit::{FederationApi, Pki, inproc};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use tonic::Code;
use tonic::transport::Channel;

/// A channel to `url` with `tls`, or the error connecting gave.
async fn channel(tls: &Tls, url: &str) -> Result<Channel, String> {
    tls.connect_url(url).await
}

/// The status a call ended with, its code and the text of it and its causes.
fn refusal<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call is refused");
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    (status.code(), text)
}

/// GET `url` with a hyper client presenting `tls`'s certificate: status and body.
async fn get(tls: &Tls, url: &str) -> Result<(u16, String), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(tls.http_connector());
    let answer = client.get(url.parse().unwrap()).await.map_err(|e| format!("{e:?}"))?;
    let status = answer.status().as_u16();
    let body = answer.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_internal_api_refuses_callers_without_the_right_certificate() {
    let mut federation = inproc::Builder::new(31200).tls().start().await;
    let key = federation.tenant("acme").await;
    let r = federation.start_router(&key).await;
    // The whole path is TLS: router → shard manager, cell → shard manager, worker → cell,
    // data plane → control plane, router → data plane.
    federation.deploy_echoes(r, &key, 1, serde_json::json!({})).await;

    let pki = federation.pki().expect("a TLS federation");
    let as_role = |role| pki.tls(role);
    let stranger = Pki::new().tls(Role::Operator);
    let replica = federation.replicas[0].as_ref().unwrap().addr;
    let manager = format!("http://{replica}");
    let cell = &federation.cells[0];
    let control = format!("http://{}", cell.cell.control_addr.unwrap());
    let worker = format!("http://{}", cell.workers[0].grpc_addr);
    let keys_of_acme = || async {
        let mut operator = ShardManagerClient::new(channel(&as_role(Role::Operator), &manager).await.unwrap());
        let request = ListApiKeysRequest { tenant: "acme".into(), ..Default::default() };
        operator.list_api_keys(request).await.unwrap().into_inner().keys.len()
    };
    assert_eq!(keys_of_acme().await, 1);

    // Minting a key: without a certificate the connection is refused and says why…
    let mut plaintext = ShardManagerClient::new(channel(&Tls::Plaintext, &manager).await.unwrap());
    let (_, text) = refusal(plaintext.create_api_key(CreateApiKeyRequest { tenant: "acme".into() }).await);
    assert!(text.contains("mutual TLS required"), "{text}");
    // …with another authority's certificate there is no connection at all…
    let err = channel(&stranger, &manager).await.expect_err("another authority's client is refused");
    assert!(err.to_lowercase().contains("certificate") || err.contains("alert"), "{err}");
    // …and a router's or a cell's certificate is not an operator's.
    for role in [Role::Router, Role::Cell, Role::Worker] {
        let mut client = ShardManagerClient::new(channel(&as_role(role), &manager).await.unwrap());
        let (code, text) = refusal(client.create_api_key(CreateApiKeyRequest { tenant: "acme".into() }).await);
        assert_eq!(code, Code::PermissionDenied, "{role:?}: {text}");
        assert!(text.contains("operator") && text.contains(role.as_str()), "{text}");
        let (code, _) = refusal(client.list_tenants(ListTenantsRequest { min_epoch: 0 }).await);
        assert_eq!(code, Code::PermissionDenied, "{role:?} lists no tenants");
    }
    assert_eq!(keys_of_acme().await, 1, "no key was minted");

    // The shard map (every key's hash) only for routers and cells; raft only for replicas.
    let mut as_worker = ShardManagerClient::new(channel(&as_role(Role::Worker), &manager).await.unwrap());
    assert_eq!(refusal(as_worker.watch_shard_map(WatchShardMapRequest {}).await).0, Code::PermissionDenied);
    let mut raft = RaftTransportClient::new(channel(&as_role(Role::Operator), &manager).await.unwrap());
    let (code, text) = refusal(raft.vote(RaftMessage { json: b"{}".to_vec() }).await);
    assert_eq!(code, Code::PermissionDenied, "{text}");

    // A cell's control plane: every tenant's specs only for the shard manager and operator.
    let list = || CellListFunctions {};
    let mut plaintext = CellControlClient::new(channel(&Tls::Plaintext, &control).await.unwrap());
    assert!(refusal(plaintext.list_functions(list()).await).1.contains("mutual TLS required"));
    for role in [Role::Router, Role::Worker] {
        let mut client = CellControlClient::new(channel(&as_role(role), &control).await.unwrap());
        assert_eq!(refusal(client.list_functions(list()).await).0, Code::PermissionDenied, "{role:?}");
    }
    let mut operator = CellControlClient::new(channel(&as_role(Role::Operator), &control).await.unwrap());
    assert_eq!(operator.list_functions(list()).await.unwrap().into_inner().functions.len(), 1);

    // A worker: only its cell's control plane.
    let sandboxes = || ListSandboxesRequest { node_id: String::new() };
    let mut plaintext = WorkerClient::new(channel(&Tls::Plaintext, &worker).await.unwrap());
    assert!(refusal(plaintext.list_sandboxes(sandboxes()).await).1.contains("mutual TLS required"));
    for role in [Role::Operator, Role::Router, Role::Worker, Role::ShardManager] {
        let mut client = WorkerClient::new(channel(&as_role(role), &worker).await.unwrap());
        let (code, text) = refusal(client.list_sandboxes(sandboxes()).await);
        assert_eq!(code, Code::PermissionDenied, "{role:?}: {text}");
        assert!(text.contains("cell"), "{text}");
    }
    // Only its own cell: a certificate of role cell for another host is refused too.
    let other_cell = pki.tls_for(Role::Cell, &["cell-b.internal"]);
    let mut client = WorkerClient::new(channel(&other_cell, &worker).await.unwrap());
    let (code, text) = refusal(client.list_sandboxes(sandboxes()).await);
    assert_eq!(code, Code::PermissionDenied, "{text}");
    assert!(text.contains("own cell") && text.contains("cell-b.internal"), "{text}");
    let mut cell_client = WorkerClient::new(channel(&as_role(Role::Cell), &worker).await.unwrap());
    assert_eq!(cell_client.list_sandboxes(sandboxes()).await.unwrap().into_inner().sandboxes.len(), 1);

    // A data plane called directly: plaintext HTTP is told TLS is required, TLS without a
    // certificate fails its handshake, a worker's certificate is forbidden, and only a
    // router's is served (its X-Baton-* headers are then the router's own).
    let data_plane = cell.cell.http_addr.unwrap();
    let (answer, _) = baton_testkit::raw_http(
        data_plane,
        "GET /function/acme.f0 HTTP/1.1\r\nhost: x\r\nx-baton-generation: 999\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("tls_required"), "{answer}");
    let https = format!("https://{data_plane}/function/acme.f0");
    // (TLS 1.3: the client's handshake ends before the server has checked its certificate,
    // so what the client sees is a closed connection or the alert, whichever comes first;
    // the server counts the refusal.)
    const REFUSED: &str = r#"baton_tls_refused_total{server="data plane",reason="handshake"}"#;
    let admin = cell.cell.admin_addr.port();
    let refused_before = baton_testkit::metric_at(admin, REFUSED).await;
    let anonymous = without_certificate(pki);
    get(&anonymous, &https).await.expect_err("a client without a certificate is refused");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while baton_testkit::metric_at(admin, REFUSED).await <= refused_before {
        assert!(std::time::Instant::now() < deadline, "the refusal is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get(&as_role(Role::Worker), &https).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden_caller") && body.contains("router"), "{body}");
    let (status, body) = get(&as_role(Role::Router), &https).await.unwrap();
    assert_eq!(status, 200, "a router is served: {body}");

    // Through the router, the tenant is served all along.
    let answer = reqwest::Client::new()
        .post(federation.router_url(r, "/function/f0"))
        .bearer_auth(&key)
        .body("hi")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    federation.shutdown().await;
}

/// Client credentials that trust the federation's authority but present no certificate.
fn without_certificate(pki: &Pki) -> Tls {
    let ca = std::fs::read_to_string(pki.ca()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let server = match pki.tls(Role::Router) {
        Tls::Mutual { server, .. } => server,
        Tls::Plaintext => unreachable!("a Pki gives mutual TLS"),
    };
    Tls::Mutual { server, client: std::sync::Arc::new(client) }
}
