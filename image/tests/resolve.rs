//! Resolving references against a real registry (Debian's `docker-registry`), with images
//! this test pushes: a linux/amd64 image, an arm64-only one, a multi-platform index, and
//! references that do not resolve, each refused naming why.

use baton_image::{Credentials, ResolveError, Resolver, ResolverSettings};
use baton_testkit::Registry;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex, Platform,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Arch, Os};

fn pusher(registry: &Registry) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.addr.to_string()]),
        ..ClientConfig::default()
    })
}

/// Pushes a one-layer image for `os/arch` as `reference`; returns its manifest digest.
async fn push(client: &Client, reference: &str, arch: &str, layer: &[u8]) -> String {
    push_as(client, reference, arch, layer, &RegistryAuth::Anonymous).await
}

/// [`push`] with credentials.
async fn push_as(client: &Client, reference: &str, arch: &str, layer: &[u8], auth: &RegistryAuth) -> String {
    let reference: Reference = reference.parse().unwrap();
    let config = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    let layers = [ImageLayer::oci_v1_gzip(layer.to_vec(), None)];
    let config = Config::oci_v1(serde_json::to_vec(&config).unwrap(), None);
    client.push(&reference, &layers, config, auth, None).await.unwrap();
    client.fetch_manifest_digest(&reference, auth).await.unwrap()
}

fn entry(digest: &str, arch: Arch) -> ImageIndexEntry {
    ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.into(),
        digest: digest.into(),
        size: 0,
        platform: Some(Platform {
            architecture: arch,
            os: Os::Linux,
            os_version: None,
            os_features: None,
            variant: None,
            features: None,
        }),
        annotations: None,
        artifact_type: None,
    }
}

#[tokio::test]
async fn references_resolve_to_their_linux_amd64_manifest_or_say_why_not() {
    let registry = Registry::start().await;
    let client = pusher(&registry);
    let hello = push(&client, &registry.image("acme/hello:1.0"), "amd64", b"hello layer").await;
    push(&client, &registry.image("acme/arm:1.0"), "arm64", b"arm layer").await;
    // A multi-platform index: arm64 first, so taking the first entry would be wrong.
    let amd = push(&client, &registry.image("acme/multi:amd64"), "amd64", b"multi amd64 layer").await;
    let arm_in_multi = push(&client, &registry.image("acme/multi:arm64"), "arm64", b"multi arm64 layer").await;
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.into()),
        manifests: vec![entry(&arm_in_multi, Arch::ARM64), entry(&amd, Arch::Amd64)],
        artifact_type: None,
        annotations: None,
    };
    let multi: Reference = registry.image("acme/multi:1.0").parse().unwrap();
    client.push_manifest_list(&multi, &RegistryAuth::Anonymous, index).await.unwrap();

    let resolver = Resolver::new(ResolverSettings::default());
    let anonymous = Credentials::Anonymous;
    let resolved = resolver.resolve(&registry.image("acme/hello:1.0"), &anonymous).await.unwrap();
    assert_eq!(resolved.digest, hello);
    assert_eq!(resolved.reference, registry.image("acme/hello:1.0"));
    assert!(resolved.bytes > 0);
    // By digest, the same.
    let by_digest = resolver.resolve(&registry.image(&format!("acme/hello@{hello}")), &anonymous).await.unwrap();
    assert_eq!(by_digest.digest, hello);
    // An index resolves to its linux/amd64 entry.
    let resolved = resolver.resolve(&registry.image("acme/multi:1.0"), &anonymous).await.unwrap();
    assert_eq!(resolved.digest, amd, "the amd64 entry, not the first");

    let refused = |reference: String| {
        let resolver = resolver.clone();
        async move { resolver.resolve(&reference, &Credentials::Anonymous).await.unwrap_err() }
    };
    let err = refused(registry.image("acme/arm:1.0")).await;
    assert!(matches!(&err, ResolveError::NotLinuxAmd64 { found, .. } if found == "linux/arm64"), "{err}");
    let err = refused(registry.image("acme/hello:2.0")).await;
    assert!(matches!(err, ResolveError::UnknownTag(_)), "{err}");
    let err = refused(registry.image("nobody/nothing:1.0")).await;
    assert!(matches!(err, ResolveError::UnknownRepository(_)), "{err}");
    let err = refused(format!("127.0.0.1:{}/acme/hello:1.0", baton_testkit::free_port())).await;
    assert!(matches!(err, ResolveError::Unreachable { .. }), "{err}");
    let err = refused("Not A Reference".into()).await;
    assert!(matches!(err, ResolveError::BadReference(_)), "{err}");

    // A size limit below the image's size.
    let small = Resolver::new(ResolverSettings { max_image_bytes: 10, ..ResolverSettings::default() });
    let err = small.resolve(&registry.image("acme/hello:1.0"), &anonymous).await.unwrap_err();
    assert!(matches!(err, ResolveError::TooLarge { limit: 10, .. }), "{err}");
}

/// Plain HTTP only for loopback registries and those the operator lists: the same
/// registry reached at a non-loopback address of this machine is refused until listed.
#[tokio::test]
async fn plain_http_is_for_loopback_and_listed_registries_only() {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("192.0.2.1:9").expect("a route off this machine, to find its own address");
    let own = probe.local_addr().unwrap().ip();
    assert!(!own.is_loopback(), "this machine has a non-loopback address: {own}");
    let registry = Registry::start_on(&own.to_string()).await;
    let client = pusher(&registry);
    let digest = push(&client, &registry.image("acme/hello:1.0"), "amd64", b"layer").await;

    let reference = registry.image("acme/hello:1.0");
    let err =
        Resolver::new(ResolverSettings::default()).resolve(&reference, &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(err, ResolveError::NotHttps(_)), "{err}");
    let listed =
        ResolverSettings { insecure_registries: vec![registry.addr.to_string()], ..ResolverSettings::default() };
    let resolved = Resolver::new(listed).resolve(&reference, &Credentials::Anonymous).await.unwrap();
    assert_eq!(resolved.digest, digest);
}

/// A private repository: the tenant's credentials resolve it; none, or wrong ones, are
/// refused as such, and never printed.
#[tokio::test]
async fn a_private_registry_takes_the_right_credentials_only() {
    let registry = Registry::start_private("acme", "s3cret-pass").await;
    let client = pusher(&registry);
    let auth = RegistryAuth::Basic("acme".into(), "s3cret-pass".into());
    push_as(&client, &registry.image("acme/private:1.0"), "amd64", b"private layer", &auth).await;

    let resolver = Resolver::new(ResolverSettings::default());
    let right = Credentials::Basic { username: "acme".into(), password: "s3cret-pass".into() };
    let resolved = resolver.resolve(&registry.image("acme/private:1.0"), &right).await.unwrap();
    assert!(resolved.digest.starts_with("sha256:"));
    let wrong = Credentials::Basic { username: "acme".into(), password: "guess".into() };
    for credentials in [Credentials::Anonymous, wrong] {
        let err = resolver.resolve(&registry.image("acme/private:1.0"), &credentials).await.unwrap_err();
        assert!(matches!(err, ResolveError::RefusedCredentials(_)), "{credentials:?}: {err}");
        assert!(!err.to_string().contains("guess") && !format!("{err:?}").contains("guess"));
    }
}

/// A registry with token authentication: the resolver follows the distribution spec's
/// bearer-token flow with the tenant's credentials (the token server takes them, the
/// registry takes its token); wrong credentials get no token and are refused.
#[tokio::test]
async fn a_token_registry_is_resolved_through_the_bearer_flow() {
    let tokens = baton_testkit::TokenServer::start("acme", "t0ken-pass").await;
    let registry = Registry::start_with_tokens(&tokens).await;
    let client = pusher(&registry);
    let auth = RegistryAuth::Basic("acme".into(), "t0ken-pass".into());
    push_as(&client, &registry.image("acme/app:1.0"), "amd64", b"token layer", &auth).await;

    let resolver = Resolver::new(ResolverSettings::default());
    let right = Credentials::Basic { username: "acme".into(), password: "t0ken-pass".into() };
    let resolved = resolver.resolve(&registry.image("acme/app:1.0"), &right).await.unwrap();
    assert!(resolved.digest.starts_with("sha256:"));
    let wrong = Credentials::Basic { username: "acme".into(), password: "nope".into() };
    for credentials in [Credentials::Anonymous, wrong] {
        let err = resolver.resolve(&registry.image("acme/app:1.0"), &credentials).await.unwrap_err();
        assert!(matches!(err, ResolveError::RefusedCredentials(_)), "{credentials:?}: {err}");
    }
}
