//! terraform-provider-baton: Terraform starts it and speaks its plugin protocol to it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tf_provider::serve("baton", baton_terraform_provider::BatonProvider::default()).await
}
