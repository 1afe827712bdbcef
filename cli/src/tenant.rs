//! Tenant commands, through a router's HTTP API: `BATON_URL` and `BATON_API_KEY` (as
//! `baton up` writes them to `$BATON_HOME/env`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::output::{OutputArgs, Table, cell};

/// `baton functions …`
#[derive(Subcommand)]
pub enum FunctionsCommand {
    /// Create or update a function: from a container image (`baton functions deploy hello
    /// --image registry.example:5000/acme/hello:1.2`), or from a JSON spec file (`-` reads
    /// standard input; a JSON array of specs registers them all in one commit).
    Deploy {
        /// With `--image`: the function's name. Otherwise the spec file (see docs/cell.md),
        /// whose `name` `--name` may give or override.
        target: String,
        /// The function's name, overriding the spec file's.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
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

/// `baton registries …`
#[derive(Subcommand)]
pub enum RegistriesCommand {
    /// Store the tenant's credentials for a registry (its password or token is read from
    /// standard input, never from the command line): images from it then resolve and pull
    /// with them.
    Login {
        /// The registry's host (and port), as image references name it: ghcr.io, 10.0.0.5:5000.
        registry: String,
        /// The user name.
        #[arg(long, short = 'u')]
        username: String,
        #[command(flatten)]
        router: RouterArgs,
    },
    /// List the registries the tenant has credentials for (never the credentials).
    List {
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Forget the tenant's credentials for a registry.
    Logout {
        /// The registry.
        registry: String,
        #[command(flatten)]
        router: RouterArgs,
    },
}

/// Runs a `baton registries` command.
pub async fn registries(command: RegistriesCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        RegistriesCommand::Login { registry, username, router } => {
            let mut password = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("no password on standard input (echo \"$TOKEN\" | baton registries login …)");
            }
            let body = serde_json::json!({"username": username, "password": password});
            let request = router.request(Method::PUT, &format!("/v1/registries/{registry}"))?.json(&body);
            send(request, "storing the credentials").await?;
            println!("credentials for {registry} stored");
        }
        RegistriesCommand::List { router, output } => {
            let body = send(router.request(Method::GET, "/v1/registries")?, "listing").await?;
            let listed: serde_json::Value = serde_json::from_str(&body).context("the router's answer is not JSON")?;
            crate::output::print(output.output, &listed, |v| {
                let mut table = Table::new(&["REGISTRY"]);
                for registry in v["registries"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    table.row(vec![cell(registry)]);
                }
                table
            });
        }
        RegistriesCommand::Logout { registry, router } => {
            send(router.request(Method::DELETE, &format!("/v1/registries/{registry}"))?, "forgetting").await?;
            println!("credentials for {registry} forgotten");
        }
    }
    Ok(())
}

/// A spec given as flags (each over the spec file's value when both are given).
#[derive(Args, Default)]
pub struct SpecArgs {
    /// The container image to run (registry/repository:tag or …@sha256:…); the target is
    /// then the function's name.
    #[arg(long)]
    image: Option<String>,
    /// Replaces the image's entrypoint (repeat for each word: `--command /app --command serve`).
    #[arg(long = "command", value_name = "WORD")]
    command: Vec<String>,
    /// The port the function listens on inside its sandbox (default: the image's one
    /// exposed TCP port, else 8080; the function finds it in `$PORT`).
    #[arg(long)]
    port: Option<u16>,
    /// An argument, replacing the image's Cmd (repeat for each).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// An environment variable, `NAME=value` (repeat for each).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Memory of each sandbox, MiB.
    #[arg(long)]
    memory: Option<u64>,
    /// CPU of each sandbox, thousandths of a core.
    #[arg(long)]
    cpu: Option<u32>,
    /// Longest one call may take (`30s`, `5m`).
    #[arg(long)]
    timeout: Option<String>,
    /// Fewest sandboxes, even without traffic.
    #[arg(long)]
    min_scale: Option<u32>,
    /// Most sandboxes.
    #[arg(long)]
    max_scale: Option<u32>,
    /// Most calls in flight at once, sync and async together (0 stops the function).
    #[arg(long)]
    reserved_concurrency: Option<u32>,
}

impl SpecArgs {
    /// Whether any flag was given.
    fn any(&self) -> bool {
        self.image.is_some()
            || !self.command.is_empty()
            || self.port.is_some()
            || !self.args.is_empty()
            || !self.env.is_empty()
            || self.memory.is_some()
            || self.cpu.is_some()
            || self.timeout.is_some()
            || self.min_scale.is_some()
            || self.max_scale.is_some()
            || self.reserved_concurrency.is_some()
    }

    /// Writes the flags given into `spec`.
    fn apply(self, spec: &mut serde_json::Value) -> anyhow::Result<()> {
        let object = spec.as_object_mut().context("the spec is not a JSON object")?;
        if let Some(image) = self.image {
            object.insert("image".into(), image.into());
        }
        if !self.command.is_empty() {
            object.insert("command".into(), self.command.into());
        }
        if let Some(port) = self.port {
            object.insert("port".into(), port.into());
        }
        if !self.args.is_empty() {
            object.insert("args".into(), self.args.into());
        }
        for pair in self.env {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("--env {pair:?}: give NAME=value");
            };
            let env = object.entry("env").or_insert_with(|| serde_json::json!({}));
            env[name] = value.into();
        }
        let mut set = |section: &str, key: &str, value: serde_json::Value| {
            let part = object.entry(section).or_insert_with(|| serde_json::json!({}));
            part[key] = value;
        };
        if let Some(memory) = self.memory {
            set("resources", "memory_mib", memory.into());
        }
        if let Some(cpu) = self.cpu {
            set("resources", "cpu_millis", cpu.into());
        }
        if let Some(min) = self.min_scale {
            set("scaling", "min_scale", min.into());
        }
        if let Some(max) = self.max_scale {
            set("scaling", "max_scale", max.into());
        }
        if let Some(timeout) = self.timeout {
            object.insert("timeout".into(), timeout.into());
        }
        if let Some(reserved) = self.reserved_concurrency {
            object.insert("reserved_concurrency".into(), reserved.into());
        }
        Ok(())
    }
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
    /// Call it asynchronously: print the call's ID once it is queued (`baton calls get
    /// ID` shows how it went).
    #[arg(long = "async")]
    asynchronous: bool,
    /// With `--async`: where the call's result is POSTed when it ends.
    #[arg(long, requires = "asynchronous")]
    callback_url: Option<String>,
    #[command(flatten)]
    router: RouterArgs,
}

impl RouterArgs {
    /// A request to the router's `path`, with the tenant's key.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let Some(key) = &self.api_key else {
            bail!("no API key: set BATON_API_KEY (source $BATON_HOME/env after `baton up`) or pass --api-key");
        };
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        Ok(reqwest::Client::new().request(method, url).bearer_auth(key))
    }
}

/// Sends `request`; answers the body; fails with the API's error message on a non-2xx.
pub(crate) async fn send(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
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
    let mut table = Table::new(&["NAME", "CELL", "GENERATION", "REGION", "RUNTIME", "RUNS"]);
    for f in functions {
        let spec = &f["spec"];
        let image = spec["image"].as_str().filter(|i| !i.is_empty());
        let runtime = spec["runtime"].as_str().unwrap_or(if image.is_some() { "oci" } else { "process" });
        // An image shows with the digest it runs (shortened), a process its program.
        let runs = match (image, spec["image_digest"].as_str()) {
            (Some(image), Some(digest)) => format!("{image}@{}", &digest[..digest.len().min(19)]),
            (Some(image), None) => image.to_string(),
            (None, _) => cell(&spec["executable"]),
        };
        table.row(vec![
            cell(&f["name"]),
            cell(&f["cell"]),
            cell(&f["generation"]),
            cell(&f["home_region"]),
            runtime.to_string(),
            runs,
        ]);
    }
    table
}

/// Runs a `baton functions` command.
pub async fn functions(command: FunctionsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let body = match command {
        FunctionsCommand::Deploy { target, name, spec: flags, router } => {
            let (mut spec, name) = if flags.image.is_some() {
                // `deploy NAME --image …`: the spec is the flags.
                if name.is_some() {
                    bail!("with --image the function's name is the first argument; --name is for spec files");
                }
                (serde_json::json!({ "name": target }), None)
            } else {
                let file = PathBuf::from(&target);
                let text = if target == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading the spec from standard input")?
                } else {
                    std::fs::read_to_string(&file).with_context(|| {
                        format!("reading {}: give a spec file, or a name with --image", file.display())
                    })?
                };
                let spec: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                (spec, name)
            };
            if spec.is_array() {
                // A batch: up to 1,000 specs, registered all or none.
                if name.is_some() || flags.any() {
                    bail!("--name and spec flags apply to one spec, not to a batch");
                }
                let request = router.request(Method::POST, "/v1/functions")?.json(&spec);
                println!("{}", pretty(&send(request, "deploying").await?));
                return Ok(());
            }
            if let Some(name) = name {
                spec["name"] = name.into();
            }
            flags.apply(&mut spec)?;
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
    let prefix = if args.asynchronous { "/async-function" } else { "/function" };
    let path = format!("{prefix}/{}{}", args.name, args.path);
    let method = if args.asynchronous || args.data.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
    let mut request = match &args.data {
        None => args.router.request(method, &path)?,
        Some(data) => {
            let body = match data.strip_prefix('@') {
                Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
                None => data.clone().into_bytes(),
            };
            args.router.request(method, &path)?.body(body)
        }
    };
    if let Some(url) = &args.callback_url {
        request = request.header("x-callback-url", url);
    }
    let body = send(request, "invoking").await?;
    if args.asynchronous {
        let queued: serde_json::Value = serde_json::from_str(&body).context("the router's answer is not JSON")?;
        println!("{}", queued["call_id"].as_str().unwrap_or_default());
    } else {
        print!("{body}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_flags_write_their_fields_over_the_spec() {
        let flags = SpecArgs {
            image: Some("r.example/acme/hello:1.2".into()),
            command: vec!["/app".into(), "serve".into()],
            port: Some(9000),
            args: vec!["--verbose".into()],
            env: vec!["MODE=fast".into(), "EMPTY=".into()],
            memory: Some(128),
            cpu: Some(250),
            timeout: Some("30s".into()),
            min_scale: None,
            max_scale: Some(4),
            reserved_concurrency: Some(0),
        };
        assert!(flags.any());
        let mut spec = serde_json::json!({"name": "hello", "resources": {"cpu_millis": 100}});
        flags.apply(&mut spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "name": "hello",
                "image": "r.example/acme/hello:1.2",
                "command": ["/app", "serve"],
                "port": 9000,
                "args": ["--verbose"],
                "env": {"MODE": "fast", "EMPTY": ""},
                "resources": {"cpu_millis": 250, "memory_mib": 128},
                "scaling": {"max_scale": 4},
                "timeout": "30s",
                "reserved_concurrency": 0,
            })
        );
        assert!(!SpecArgs::default().any());
        let bad = SpecArgs { env: vec!["NOEQUALS".into()], ..SpecArgs::default() };
        assert!(bad.apply(&mut serde_json::json!({})).unwrap_err().to_string().contains("NAME=value"));
    }
}
