//! terraform-provider-baton: Terraform starts it and speaks its plugin protocol to it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Terraform's automatic mutual TLS with the provider goes through rustls. Some builds of
    // the workspace link both of rustls' crypto backends, and then it picks none by itself:
    // ring, as every baton process uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tf_provider::serve("baton", baton_terraform_provider::BatonProvider::default()).await
}
