//! Tenant commands, through a router's HTTP API: `BATON_URL` and `BATON_API_KEY` (as
//! `baton up` writes them to `$BATON_HOME/env`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::output::{OutputArgs, Table, cell};

/// `baton functions …`
#[derive(Subcommand)]
pub enum FunctionsCommand {
    /// Create or update a function from a JSON spec file (`-` reads standard input); a
    /// JSON array of specs registers them all in one commit.
    Deploy {
        /// The spec (see docs/cell.md); `name` may be given with `--name` instead.
        file: PathBuf,
        /// The function's name, overriding the spec's.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        router: RouterArgs,
    },
    /// List the tenant's functions.
    List {
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one function (`-o json` for its whole spec).
    Get {
        /// Its name.
        name: String,
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a function.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        router: RouterArgs,
    },
}

/// Which router, and as whom.
#[derive(Args)]
pub struct RouterArgs {
    /// The router's URL.
    #[arg(long, env = "BATON_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The tenant's API key.
    #[arg(long, env = "BATON_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// `baton invoke`
#[derive(Args)]
pub struct InvokeArgs {
    /// The function's name.
    name: String,
    /// Request body (`@FILE` reads a file); none: an empty GET.
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// Path after the function's name, e.g. `/items/7?full=1`.
    #[arg(long, default_value = "")]
    path: String,
    #[command(flatten)]
    router: RouterArgs,
}

impl RouterArgs {
    fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let Some(key) = &self.api_key else {
            bail!("no API key: set BATON_API_KEY (source $BATON_HOME/env after `baton up`) or pass --api-key");
        };
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        Ok(reqwest::Client::new().request(method, url).bearer_auth(key))
    }
}

/// Sends `request`; prints the body; fails with the API's error message on a non-2xx.
async fn send(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
    let answer = request.send().await.with_context(|| format!("{what}: the router did not answer"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{what}: {status}: {message}");
    }
    Ok(body)
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string())
}

/// The table of `functions` as the router describes them.
fn function_table(functions: &[serde_json::Value]) -> Table {
    let mut table = Table::new(&["NAME", "CELL", "GENERATION", "REGION", "RUNTIME", "EXECUTABLE"]);
    for f in functions {
        let runtime = f["spec"]["runtime"].as_str().unwrap_or("process");
        table.row(vec![
            cell(&f["name"]),
            cell(&f["cell"]),
            cell(&f["generation"]),
            cell(&f["home_region"]),
            runtime.to_string(),
            cell(&f["spec"]["executable"]),
        ]);
    }
    table
}

/// Runs a `baton functions` command.
pub async fn functions(command: FunctionsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let body = match command {
        FunctionsCommand::Deploy { file, name, router } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the spec from standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let mut spec: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            if spec.is_array() {
                // A batch: up to 1,000 specs, registered all or none.
                if name.is_some() {
                    bail!("--name applies to one spec, not to a batch");
                }
                let request = router.request(Method::POST, "/v1/functions")?.json(&spec);
                println!("{}", pretty(&send(request, "deploying").await?));
                return Ok(());
            }
            if let Some(name) = name {
                spec["name"] = name.into();
            }
            let Some(name) = spec["name"].as_str().map(str::to_string) else {
                bail!("the spec has no \"name\"; add one or pass --name");
            };
            let request = router.request(Method::PUT, &format!("/v1/functions/{name}"))?.json(&spec);
            send(request, "deploying").await?
        }
        FunctionsCommand::List { router, output } => {
            let body = send(router.request(Method::GET, "/v1/functions")?, "listing").await?;
            let listed: serde_json::Value = serde_json::from_str(&body).context("the router's answer is not JSON")?;
            crate::output::print(output.output, &listed, |v| {
                function_table(v["functions"].as_array().map(Vec::as_slice).unwrap_or_default())
            });
            return Ok(());
        }
        FunctionsCommand::Get { name, router, output } => {
            let body = send(router.request(Method::GET, &format!("/v1/functions/{name}"))?, "reading").await?;
            let function: serde_json::Value = serde_json::from_str(&body).context("the router's answer is not JSON")?;
            crate::output::print(output.output, &function, |v| function_table(std::slice::from_ref(v)));
            return Ok(());
        }
        FunctionsCommand::Delete { name, router } => {
            send(router.request(Method::DELETE, &format!("/v1/functions/{name}"))?, "deleting").await?;
            format!("deleted {name}")
        }
    };
    println!("{}", pretty(&body));
    Ok(())
}

/// Runs `baton invoke`.
pub async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let path = format!("/function/{}{}", args.name, args.path);
    let request = match &args.data {
        None => args.router.request(reqwest::Method::GET, &path)?,
        Some(data) => {
            let body = match data.strip_prefix('@') {
                Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
                None => data.clone().into_bytes(),
            };
            args.router.request(reqwest::Method::POST, &path)?.body(body)
        }
    };
    print!("{}", send(request, "invoking").await?);
    Ok(())
}
