//! Where calls go, and how the run's functions are registered there and removed after.

use std::path::PathBuf;
use std::time::Duration;

use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::cell::{DeleteFunctionRequest, PutFunctionRequest};
use futures::{StreamExt, TryStreamExt};
use http::Uri;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 16;

/// The system under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// A cell: calls go to its data plane's `/function/{name}`, functions are registered
    /// through its control plane's gRPC API.
    Cell {
        /// Base URL of the data plane (`http://127.0.0.1:8080`).
        url: String,
        /// Control-plane gRPC address (`http://127.0.0.1:7100`).
        control: String,
    },
    /// Any HTTP endpoint (a baseline such as HAProxy in front of sandboxes): every call
    /// goes to `url`, with `{function}` replaced by the function's name; nothing is
    /// registered.
    Http {
        /// The URL template.
        url: String,
    },
    /// A federation's router: functions registered through its tenant API
    /// (`/v1/functions/{name}`), calls to `/function/{name}`, both with the API key.
    Router {
        /// The router's base URL.
        url: String,
        /// The tenant's API key.
        api_key: String,
    },
}

impl Target {
    /// Checks the URLs; refusals name the option.
    pub fn check(&self) -> Result<()> {
        match self {
            Target::Cell { url, control } => {
                parse_http(url.trim_end_matches('/'), "--url")?;
                parse_http(control, "--control")?;
            }
            Target::Http { url } => {
                parse_http(&url.replace("{function}", "f"), "--url")?;
            }
            Target::Router { url, api_key } => {
                parse_http(url.trim_end_matches('/'), "--url")?;
                self.authorization()?;
                if api_key.trim().is_empty() {
                    return Err(Error::option("--api-key", "is empty"));
                }
            }
        }
        Ok(())
    }

    /// The `Authorization` header calls carry (the router's API key).
    pub fn authorization(&self) -> Result<Option<http::HeaderValue>> {
        let Target::Router { api_key, .. } = self else { return Ok(None) };
        http::HeaderValue::from_str(&format!("Bearer {}", api_key.trim()))
            .map(Some)
            .map_err(|_| Error::option("--api-key", "contains characters a header cannot carry"))
    }

    /// The URI calls to `function` go to.
    pub fn call_uri(&self, function: &str) -> Result<Uri> {
        match self {
            Target::Cell { url, .. } | Target::Router { url, .. } => {
                parse_http(&format!("{}/function/{function}", url.trim_end_matches('/')), "--url")
            }
            Target::Http { url } => parse_http(&url.replace("{function}", function), "--url"),
        }
    }

    /// Whether functions are registered before the run.
    pub fn registers(&self) -> bool {
        matches!(self, Target::Cell { .. } | Target::Router { .. })
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Cell { url, .. } => format!("cell {url}"),
            Target::Http { url } => format!("http {url}"),
            Target::Router { url, .. } => format!("router {url}"),
        }
    }

    async fn control(&self) -> Result<Option<CellControlClient<Channel>>> {
        let Target::Cell { control, .. } = self else { return Ok(None) };
        let channel = Channel::from_shared(control.clone())
            .map_err(|e| Error::option("--control", format!("{control:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Error::Target(format!("cannot reach the control plane at {control}: {e}")))?;
        Ok(Some(CellControlClient::new(channel)))
    }

    /// Registers `functions` (idempotent: an existing function is updated).
    pub async fn register(&self, functions: &[FunctionDef]) -> Result<()> {
        if let Target::Router { .. } = self {
            return self.through_router(functions.iter().map(|f| (f.name.clone(), Some(&f.spec)))).await;
        }
        let Some(client) = self.control().await? else { return Ok(()) };
        futures::stream::iter(functions)
            .map(|f| {
                let mut client = client.clone();
                async move {
                    client
                        .put_function(PutFunctionRequest { spec_json: f.spec.to_string(), pull_first: false })
                        .await
                        .map_err(|s| Error::Target(format!("registering {}: {}", f.name, s.message())))
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Removes `names`; ones already gone are fine.
    pub async fn unregister(&self, names: &[String]) -> Result<()> {
        if let Target::Router { .. } = self {
            return self.through_router(names.iter().map(|n| (n.clone(), None))).await;
        }
        let Some(client) = self.control().await? else { return Ok(()) };
        futures::stream::iter(names)
            .map(|name| {
                let mut client = client.clone();
                async move {
                    match client.delete_function(DeleteFunctionRequest { name: name.clone() }).await {
                        Ok(_) => Ok(()),
                        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                        Err(s) => Err(Error::Target(format!("removing {name}: {}", s.message()))),
                    }
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}

impl Target {
    /// Puts (`Some(spec)`) or deletes (`None`) functions through a router's tenant API.
    async fn through_router<'a>(
        &self,
        changes: impl Iterator<Item = (String, Option<&'a serde_json::Value>)>,
    ) -> Result<()> {
        let Target::Router { url, api_key } = self else { return Ok(()) };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Target(format!("an HTTP client: {e}")))?;
        futures::stream::iter(changes)
            .map(|(name, spec)| {
                let client = client.clone();
                let endpoint = format!("{}/v1/functions/{name}", url.trim_end_matches('/'));
                async move {
                    let request = match spec {
                        Some(spec) => client.put(&endpoint).json(spec),
                        None => client.delete(&endpoint),
                    };
                    let answer = request
                        .bearer_auth(api_key.trim())
                        .send()
                        .await
                        .map_err(|e| Error::Target(format!("cannot reach the router at {url}: {e}")))?;
                    let status = answer.status();
                    if status.is_success() || (spec.is_none() && status == reqwest::StatusCode::NOT_FOUND) {
                        return Ok(());
                    }
                    let body = answer.text().await.unwrap_or_default();
                    let verb = if spec.is_some() { "registering" } else { "removing" };
                    Err(Error::Target(format!("{verb} {name} through the router: {status} {body}")))
                }
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}

fn parse_http(text: &str, option: &'static str) -> Result<Uri> {
    let uri: Uri = text.parse().map_err(|e| Error::option(option, format!("{text:?} is not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(Error::option(option, format!("{text:?} must be an http:// URL with a host")));
    }
    Ok(uri)
}

/// Which runtime the run's functions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxRuntime {
    /// Real sandboxes running `baton-fn-spin`.
    Process,
    /// The worker's emulated sandboxes (creation sleeps; scale tests).
    Emulated,
}

/// How registered functions are built.
#[derive(Debug, Clone)]
pub struct FunctionSettings {
    /// Runtime of their sandboxes.
    pub runtime: SandboxRuntime,
    /// `baton-fn-spin` on the workers (process runtime).
    pub executable: PathBuf,
    /// CPU per sandbox, thousandths of a core.
    pub cpu_millis: u32,
    /// Memory floor per sandbox in MiB (a trace's memory below it is raised to it).
    pub min_memory_mib: u64,
    /// Memory cap per sandbox in MiB, if any (a trace's memory above it is lowered).
    pub max_memory_mib: Option<u64>,
    /// Longest a call may run in the cell.
    pub timeout: Duration,
}

/// A function to register: its name and its spec.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    /// Its name at the target.
    pub name: String,
    /// The cell's function spec (JSON).
    pub spec: serde_json::Value,
}

impl FunctionSettings {
    /// The spec for `name` with `memory_mib` (raised to the floor) and `scaling`.
    pub fn def(&self, name: String, memory_mib: Option<f64>, scaling: serde_json::Value) -> FunctionDef {
        let memory = memory_mib.map_or(self.min_memory_mib, |m| (m.ceil() as u64).max(self.min_memory_mib));
        let memory = self.max_memory_mib.map_or(memory, |cap| memory.min(cap.max(self.min_memory_mib)));
        let mut spec = serde_json::json!({
            "name": name,
            "runtime": self.runtime,
            "resources": {"cpu_millis": self.cpu_millis, "memory_mib": memory},
            "timeout": humantime::format_duration(self.timeout).to_string(),
            "scaling": scaling,
        });
        if self.runtime == SandboxRuntime::Process {
            spec["executable"] = self.executable.display().to_string().into();
        }
        FunctionDef { name, spec }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_built() {
        let cell = Target::Cell { url: "http://127.0.0.1:8080/".into(), control: "http://127.0.0.1:7100".into() };
        cell.check().unwrap();
        assert_eq!(cell.call_uri("f1").unwrap(), "http://127.0.0.1:8080/function/f1");
        let http = Target::Http { url: "http://127.0.0.1:9000/x/{function}?a=1".into() };
        http.check().unwrap();
        assert_eq!(http.call_uri("g").unwrap(), "http://127.0.0.1:9000/x/g?a=1");
        for (target, option) in [
            (Target::Http { url: "https://h/".into() }, "--url"),
            (Target::Http { url: "not a url".into() }, "--url"),
            (Target::Cell { url: "http://h:1".into(), control: "h:2".into() }, "--control"),
        ] {
            let err = target.check().unwrap_err().to_string();
            assert!(err.starts_with(option), "{err}");
        }
    }

    #[test]
    fn specs_carry_memory_with_a_floor() {
        let settings = FunctionSettings {
            runtime: SandboxRuntime::Process,
            executable: "/bin/spin".into(),
            cpu_millis: 50,
            min_memory_mib: 32,
            max_memory_mib: None,
            timeout: Duration::from_secs(70),
        };
        let def = settings.def("lt-1".into(), Some(120.2), serde_json::json!({"max_scale": 1}));
        assert_eq!(def.spec["resources"]["memory_mib"], 121);
        assert_eq!(def.spec["executable"], "/bin/spin");
        assert_eq!(def.spec["timeout"], "1m 10s");
        assert_eq!(settings.def("x".into(), Some(9.4), serde_json::json!({})).spec["resources"]["memory_mib"], 32);
        let capped = FunctionSettings { max_memory_mib: Some(100), ..settings.clone() };
        assert_eq!(capped.def("z".into(), Some(400.0), serde_json::json!({})).spec["resources"]["memory_mib"], 100);
        let emulated = FunctionSettings { runtime: SandboxRuntime::Emulated, ..settings };
        let spec = emulated.def("y".into(), None, serde_json::json!({})).spec;
        assert_eq!(spec["runtime"], "emulated");
        assert!(spec.get("executable").is_none());
    }
}
