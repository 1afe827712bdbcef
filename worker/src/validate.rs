//! Turns a wire `CreateSandboxRequest` into a checked [`SandboxSpec`]. Every refusal names
//! the field, so a caller can fix its request without reading worker logs.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use baton_model::function::SpecError;
use baton_model::sandbox;
use baton_proto::SandboxId;
use baton_proto::worker::{CreateSandboxRequest, port_policy};

use crate::error::RuntimeError;
use crate::runtime::{ImageLaunch, PortRequest, Resources, SandboxSpec};

/// Most pids one sandbox may ask for.
pub const MAX_PIDS: u32 = 32_768;
/// Least memory a sandbox may ask for, in MiB: below it no process starts reliably.
pub const MIN_MEMORY_MIB: u64 = 4;

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Ports the worker hands out.
    pub ports: RangeInclusive<u16>,
    /// The node's whole CPU, in thousandths of a core.
    pub cpu_millis: u32,
    /// The node's whole memory, MiB.
    pub memory_mib: u64,
    /// Readiness timeout when none is given.
    pub default_readiness_timeout: Duration,
    /// Longest readiness timeout accepted.
    pub max_readiness_timeout: Duration,
    /// Whether an executable is required (not for the emulated runtime).
    pub needs_executable: bool,
}

/// Checks `req` against `limits`.
pub fn create_request(req: CreateSandboxRequest, limits: &Limits) -> Result<(SandboxId, SandboxSpec), RuntimeError> {
    let id = SandboxId::new(req.sandbox_id).map_err(|e| RuntimeError::invalid("sandbox_id", e.to_string()))?;
    let spec = req.spec.ok_or_else(|| RuntimeError::invalid("spec", "is required"))?;
    if spec.function_id.len() > 256 {
        return Err(RuntimeError::invalid("spec.function_id", "is longer than 256 bytes"));
    }
    // The same checks as a spec's at registration (baton_model::sandbox): a request that
    // did not come through a registration is held to them too.
    let executable = PathBuf::from(&spec.executable);
    let image = spec.image.map(image).transpose()?;
    if image.is_some() {
        if !spec.executable.is_empty() {
            return Err(RuntimeError::invalid("spec.executable", "must be empty when spec.image is given"));
        }
    } else if limits.needs_executable {
        if spec.executable.is_empty() {
            return Err(RuntimeError::invalid("spec.executable", "must not be empty"));
        }
        sandbox::check_executable(&spec.executable).map_err(refused)?;
    }
    sandbox::check_args(spec.args.iter().map(String::as_str)).map_err(refused)?;
    sandbox::check_env(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(refused)?;
    let env: BTreeMap<String, String> = spec.env.into_iter().collect();
    let port = port(spec.port, limits)?;
    let resources = resources(spec.resources, limits)?;
    let readiness_timeout = match spec.readiness_timeout_ms {
        0 => limits.default_readiness_timeout,
        ms => Duration::from_millis(u64::from(ms)),
    };
    if readiness_timeout > limits.max_readiness_timeout {
        return Err(RuntimeError::invalid(
            "spec.readiness_timeout_ms",
            format!(
                "{} ms is more than the worker's maximum of {} ms",
                readiness_timeout.as_millis(),
                limits.max_readiness_timeout.as_millis()
            ),
        ));
    }
    let readiness_path =
        if spec.readiness_path.is_empty() { baton_functions::READINESS_PATH.to_string() } else { spec.readiness_path };
    if !readiness_path.starts_with('/')
        || readiness_path.len() > 1024
        || !readiness_path.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RuntimeError::invalid(
            "spec.readiness_path",
            format!("{readiness_path:?} must start with '/' and hold only visible ASCII"),
        ));
    }
    Ok((
        id,
        SandboxSpec {
            function_id: spec.function_id,
            executable,
            args: spec.args,
            env,
            port,
            resources,
            readiness_timeout,
            readiness_path,
            image,
        },
    ))
}

/// Checks an image to run: a reference, its digest, and a command held to the spec's rules.
pub fn image(image: baton_proto::worker::Image) -> Result<ImageLaunch, RuntimeError> {
    let field = |e: SpecError| RuntimeError::invalid(format!("spec.image.{}", e.field), e.message);
    baton_model::image::check_reference(&image.reference).map_err(|e| field(SpecError::new("reference", e.message)))?;
    baton_model::image::check_digest(&image.digest).map_err(|e| field(SpecError::new("digest", e.message)))?;
    sandbox::check_command(image.command.iter().map(String::as_str)).map_err(field)?;
    let credentials = match image.credentials {
        Some(c) if !c.username.is_empty() => {
            baton_image::Credentials::Basic { username: c.username, password: c.password }
        }
        _ => baton_image::Credentials::Anonymous,
    };
    let port = match image.port {
        0 => None,
        p => Some(
            u16::try_from(p).map_err(|_| RuntimeError::invalid("spec.image.port", format!("{p} is not a TCP port")))?,
        ),
    };
    Ok(ImageLaunch { reference: image.reference, digest: image.digest, command: image.command, port, credentials })
}

/// A refusal of the shared checks, as the worker's error for field `spec.FIELD`.
fn refused(e: SpecError) -> RuntimeError {
    RuntimeError::invalid(format!("spec.{}", e.field), e.message)
}

fn port(policy: Option<baton_proto::worker::PortPolicy>, limits: &Limits) -> Result<PortRequest, RuntimeError> {
    match policy.and_then(|p| p.policy) {
        None | Some(port_policy::Policy::Auto(_)) => Ok(PortRequest::Any),
        Some(port_policy::Policy::Fixed(port)) => {
            let in_range = u16::try_from(port).ok().filter(|p| limits.ports.contains(p));
            in_range.map(PortRequest::Fixed).ok_or_else(|| {
                RuntimeError::invalid(
                    "spec.port.fixed",
                    format!(
                        "{port} is outside this worker's port range {}-{}",
                        limits.ports.start(),
                        limits.ports.end()
                    ),
                )
            })
        }
    }
}

fn resources(res: Option<baton_proto::worker::Resources>, limits: &Limits) -> Result<Resources, RuntimeError> {
    let res =
        res.ok_or_else(|| RuntimeError::invalid("spec.resources", "is required (cpu_millis, memory_mib, pids)"))?;
    if res.cpu_millis == 0 || res.cpu_millis > limits.cpu_millis {
        return Err(RuntimeError::invalid(
            "spec.resources.cpu_millis",
            format!("{} must be between 1 and this node's capacity of {}", res.cpu_millis, limits.cpu_millis),
        ));
    }
    if res.memory_mib < MIN_MEMORY_MIB || res.memory_mib > limits.memory_mib {
        return Err(RuntimeError::invalid(
            "spec.resources.memory_mib",
            format!(
                "{} must be between {MIN_MEMORY_MIB} and this node's capacity of {}",
                res.memory_mib, limits.memory_mib
            ),
        ));
    }
    if res.pids == 0 || res.pids > MAX_PIDS {
        return Err(RuntimeError::invalid(
            "spec.resources.pids",
            format!("{} must be between 1 and {MAX_PIDS}", res.pids),
        ));
    }
    Ok(Resources { cpu_millis: res.cpu_millis, memory_mib: res.memory_mib, pids: res.pids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::worker::{PortPolicy, SandboxSpec as WireSpec};

    fn limits() -> Limits {
        Limits {
            ports: 20000..=20010,
            cpu_millis: 2000,
            memory_mib: 4096,
            default_readiness_timeout: Duration::from_secs(5),
            max_readiness_timeout: Duration::from_secs(60),
            needs_executable: true,
        }
    }

    fn good() -> CreateSandboxRequest {
        CreateSandboxRequest {
            node_id: String::new(),
            sandbox_id: "sb-1".into(),
            spec: Some(WireSpec {
                function_id: "echo".into(),
                executable: "/bin/true".into(),
                resources: Some(baton_proto::worker::Resources { cpu_millis: 500, memory_mib: 64, pids: 16 }),
                ..Default::default()
            }),
        }
    }

    fn field_of(req: CreateSandboxRequest) -> String {
        match create_request(req, &limits()) {
            Err(RuntimeError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_good_request_and_fills_defaults() {
        let (id, spec) = create_request(good(), &limits()).unwrap();
        assert_eq!(id.as_str(), "sb-1");
        assert_eq!(spec.readiness_timeout, Duration::from_secs(5));
        assert_eq!(spec.readiness_path, "/healthz");
        assert_eq!(spec.port, PortRequest::Any);
    }

    #[test]
    fn names_the_bad_field() {
        let with = |f: &dyn Fn(&mut CreateSandboxRequest)| {
            let mut r = good();
            f(&mut r);
            field_of(r)
        };
        assert_eq!(with(&|r| r.sandbox_id.clear()), "sandbox_id");
        assert_eq!(with(&|r| r.spec = None), "spec");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().executable.clear()), "spec.executable");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().executable = "bin/x".into()), "spec.executable");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().resources = None), "spec.resources");
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().cpu_millis = 0),
            "spec.resources.cpu_millis"
        );
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().cpu_millis = u32::MAX),
            "spec.resources.cpu_millis"
        );
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().memory_mib = 0),
            "spec.resources.memory_mib"
        );
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().memory_mib = 1 << 40),
            "spec.resources.memory_mib"
        );
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().resources.as_mut().unwrap().pids = 0), "spec.resources.pids");
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().port = Some(PortPolicy { policy: Some(port_policy::Policy::Fixed(80)) })),
            "spec.port.fixed"
        );
        assert_eq!(
            with(&|r| r.spec.as_mut().unwrap().port =
                Some(PortPolicy { policy: Some(port_policy::Policy::Fixed(70000)) })),
            "spec.port.fixed"
        );
        for name in ["PORT", "LD_PRELOAD", "BATON_API_KEY"] {
            assert_eq!(
                with(&|r| {
                    r.spec.as_mut().unwrap().env.insert(name.into(), "1".into());
                }),
                format!("spec.env.{name}")
            );
        }
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().executable = "/opt/../bin/sh".into()), "spec.executable");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().args.push("a\0b".into())), "spec.args[0]");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().readiness_timeout_ms = u32::MAX), "spec.readiness_timeout_ms");
        assert_eq!(with(&|r| r.spec.as_mut().unwrap().readiness_path = "no-slash".into()), "spec.readiness_path");
    }

    #[test]
    fn an_image_replaces_the_executable_and_is_checked() {
        let image = |reference: &str, digest: &str| baton_proto::worker::Image {
            reference: reference.into(),
            digest: digest.into(),
            command: vec!["/app".into()],
            port: 9000,
            credentials: None,
        };
        let digest = format!("sha256:{}", "0".repeat(64));
        let mut r = good();
        r.spec.as_mut().unwrap().executable.clear();
        r.spec.as_mut().unwrap().image = Some(image("127.0.0.1:5000/acme/app:1", &digest));
        let (_, spec) = create_request(r.clone(), &limits()).unwrap();
        let launch = spec.image.unwrap();
        assert_eq!((launch.command.as_slice(), launch.port), (&["/app".to_string()][..], Some(9000)));
        r.spec.as_mut().unwrap().executable = "/bin/true".into();
        assert_eq!(field_of(r.clone()), "spec.executable");
        r.spec.as_mut().unwrap().executable.clear();
        r.spec.as_mut().unwrap().image = Some(image("a b", &digest));
        assert_eq!(field_of(r.clone()), "spec.image.reference");
        r.spec.as_mut().unwrap().image = Some(image("app", "sha256:1"));
        assert_eq!(field_of(r.clone()), "spec.image.digest");
        let mut bad = image("app", &digest);
        bad.command = vec!["a\0b".into()];
        r.spec.as_mut().unwrap().image = Some(bad);
        assert_eq!(field_of(r.clone()), "spec.image.command[0]");
        r.spec.as_mut().unwrap().image = Some(baton_proto::worker::Image { port: 70_000, ..image("app", &digest) });
        assert_eq!(field_of(r), "spec.image.port");
    }

    #[test]
    fn emulated_needs_no_executable() {
        let mut r = good();
        r.spec.as_mut().unwrap().executable.clear();
        let mut l = limits();
        l.needs_executable = false;
        assert!(create_request(r, &l).is_ok());
    }
}
