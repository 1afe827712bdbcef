//! The function specification a tenant registers, and its validation. Every refusal names
//! the field (`scaling.min_scale: …`), parse errors included.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FunctionId;

/// Longest function name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Which runtime runs the function's sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A process in namespaces and a cgroup.
    #[default]
    Process,
    /// An emulated sandbox (scale tests).
    Emulated,
}

/// CPU and memory of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionResources {
    /// Thousandths of a core. Default: 250.
    #[serde(default = "default_cpu")]
    pub cpu_millis: u32,
    /// MiB. Default: 128.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
}

fn default_cpu() -> u32 {
    250
}

fn default_memory() -> u64 {
    128
}

impl Default for FunctionResources {
    fn default() -> Self {
        Self { cpu_millis: default_cpu(), memory_mib: default_memory() }
    }
}

/// How the function scales (Knative KPA semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scaling {
    /// Fewest sandboxes, even without traffic. Default: 0.
    pub min_scale: u32,
    /// Most sandboxes. Default: 100.
    pub max_scale: u32,
    /// In-flight requests per sandbox the autoscaler aims for. Default: 1.0.
    pub target_concurrency: f64,
    /// Most in-flight requests one sandbox takes at once (0: unlimited). Default: 1.
    pub container_concurrency: u32,
    /// Window the stable average is taken over. Default: `"60s"`.
    #[serde(with = "humantime_serde")]
    pub stable_window: Duration,
    /// Window the panic average is taken over. Default: `"6s"`.
    #[serde(with = "humantime_serde")]
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the ready sandboxes. Default: 2.0.
    pub panic_threshold: f64,
    /// How long a function without traffic keeps its last sandbox. Default: `"30s"`.
    #[serde(with = "humantime_serde")]
    pub scale_to_zero_grace: Duration,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            min_scale: 0,
            max_scale: 100,
            target_concurrency: 1.0,
            container_concurrency: 1,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
        }
    }
}

/// A registered function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Its name: lowercase letters, digits and `-`, starting with a letter, at most 63 bytes.
    pub name: String,
    /// Runtime of its sandboxes. Default: `process`.
    #[serde(default)]
    pub runtime: Runtime,
    /// Absolute path of the executable on the workers (required for `process`).
    #[serde(default)]
    pub executable: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Sandbox resources.
    #[serde(default)]
    pub resources: FunctionResources,
    /// Longest one call may take. Default: `"60s"`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Scaling.
    #[serde(default)]
    pub scaling: Scaling,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Dotted path of the field (`scaling.min_scale`), or `body` when the JSON is unreadable.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    /// A refusal of `field` (its dotted path) saying `message`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl FunctionSpec {
    /// Parses and validates a JSON spec. Unknown fields, wrong types and bad values are all
    /// refused with the field's path.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(SpecError::new("body", "must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let spec: FunctionSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // An unreadable document has no field path ("." or "?"): blame the body.
            let field = if matches!(path.as_str(), "." | "?" | "") { "body".to_string() } else { path };
            SpecError { field, message: inner.to_string() }
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.runtime == Runtime::Process {
            if self.executable.is_empty() {
                return Err(SpecError::new("executable", "is required for the process runtime"));
            }
            if !self.executable.starts_with('/') {
                return Err(SpecError::new("executable", format!("{:?} must be an absolute path", self.executable)));
            }
        }
        if self.resources.cpu_millis == 0 {
            return Err(SpecError::new("resources.cpu_millis", "must be at least 1"));
        }
        if self.resources.memory_mib < 4 {
            return Err(SpecError::new("resources.memory_mib", "must be at least 4"));
        }
        if self.timeout.is_zero() {
            return Err(SpecError::new("timeout", "must be longer than zero"));
        }
        let s = &self.scaling;
        if s.max_scale == 0 {
            return Err(SpecError::new("scaling.max_scale", "must be at least 1"));
        }
        if s.min_scale > s.max_scale {
            return Err(SpecError::new(
                "scaling.min_scale",
                format!("{} is more than scaling.max_scale ({})", s.min_scale, s.max_scale),
            ));
        }
        if !(s.target_concurrency.is_finite() && s.target_concurrency > 0.0) {
            return Err(SpecError::new("scaling.target_concurrency", "must be a number above zero"));
        }
        if s.stable_window.is_zero() {
            return Err(SpecError::new("scaling.stable_window", "must be longer than zero"));
        }
        if s.panic_window.is_zero() || s.panic_window > s.stable_window {
            return Err(SpecError::new(
                "scaling.panic_window",
                "must be longer than zero and at most scaling.stable_window",
            ));
        }
        if !(s.panic_threshold.is_finite() && s.panic_threshold >= 1.0) {
            return Err(SpecError::new("scaling.panic_threshold", "must be at least 1.0"));
        }
        Ok(())
    }
}

/// A tenant's spec as a federated cell runs it: validated, and named `tenant.name`
/// ([`FunctionId::cell_name`]). The spec's own `name` may be left out; when given it must
/// be the function's name.
pub fn federated_spec(id: &FunctionId, spec_json: &str) -> Result<FunctionSpec, SpecError> {
    let mut value: serde_json::Value =
        serde_json::from_str(spec_json).map_err(|e| SpecError::new("body", format!("not JSON: {e}")))?;
    let object = value.as_object_mut().ok_or_else(|| SpecError::new("body", "must be a JSON object"))?;
    match object.get("name") {
        None => {}
        Some(serde_json::Value::String(given)) if given == id.name() => {}
        Some(other) => {
            return Err(SpecError::new("name", format!("{other} does not match the function's name {:?}", id.name())));
        }
    }
    object.insert("name".into(), id.cell_name().into());
    FunctionSpec::from_json(value.to_string().as_bytes())
}

/// Checks a function name: a label, or a tenant's label and the function's joined by `.`
/// (how a federation names a tenant's function inside a cell: `acme.resize`).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = match name.split_once('.') {
        Some((tenant, function)) => is_label(tenant) && is_label(function),
        None => is_label(name),
    };
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            "name",
            format!(
                "{name:?} must be 1-{MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter and not ending with '-' (or two such labels joined by '.')"
            ),
        ))
    }
}

/// Whether `label` is 1-63 lowercase letters, digits and `-`, starting with a letter and
/// not ending with `-`: the rule for function and tenant names.
pub fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_NAME_LEN
        && label.as_bytes()[0].is_ascii_lowercase()
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str) -> String {
        FunctionSpec::from_json(json.as_bytes()).unwrap_err().field
    }

    #[test]
    fn parses_a_minimal_spec_with_defaults() {
        let spec = FunctionSpec::from_json(br#"{"name":"echo","executable":"/usr/bin/echo-fn"}"#).unwrap();
        assert_eq!(spec.scaling, Scaling::default());
        assert_eq!(spec.resources, FunctionResources::default());
        assert_eq!(spec.timeout, Duration::from_secs(60));
        let spec = FunctionSpec::from_json(
            br#"{"name":"spin","runtime":"emulated","scaling":{"max_scale":10,"stable_window":"10s","panic_window":"1s"}}"#,
        )
        .unwrap();
        assert_eq!(spec.scaling.max_scale, 10);
        assert_eq!(spec.scaling.stable_window, Duration::from_secs(10));
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(field_of(r#"{"name":"echo"}"#), "executable");
        assert_eq!(field_of(r#"{"name":"echo","executable":"rel/path"}"#), "executable");
        assert_eq!(field_of(r#"{"name":"Echo","executable":"/x"}"#), "name");
        for bad in ["a.b.c", ".echo", "acme.", "acme..echo", "acme.Echo"] {
            assert_eq!(field_of(&format!(r#"{{"name":"{bad}","executable":"/x"}}"#)), "name", "{bad}");
        }
        assert!(FunctionSpec::from_json(br#"{"name":"acme.echo","executable":"/x"}"#).is_ok());
        let acme_echo = FunctionId::new("acme", "echo").unwrap();
        let spec = federated_spec(&acme_echo, r#"{"executable":"/x"}"#).unwrap();
        assert_eq!(spec.name, "acme.echo");
        assert_eq!(federated_spec(&acme_echo, r#"{"name":"echo","executable":"/x"}"#).unwrap().name, "acme.echo");
        for (json, field) in [
            (r#"{"name":"other","executable":"/x"}"#, "name"),
            (r#"[1]"#, "body"),
            (r#"{"executable":"rel"}"#, "executable"),
        ] {
            assert_eq!(federated_spec(&acme_echo, json).unwrap_err().field, field, "{json}");
        }
        for (tenant, name) in [("acme", "Echo"), ("ac.me", "echo")] {
            assert_eq!(FunctionId::new(tenant, name).unwrap_err().field, "name", "{tenant}/{name}");
        }
        assert_eq!(field_of(r#"{"name":"echo","executable":"/x","scaling":{"min_scale":-1}}"#), "scaling.min_scale");
        assert_eq!(
            field_of(r#"{"name":"echo","executable":"/x","scaling":{"min_scale":5,"max_scale":2}}"#),
            "scaling.min_scale"
        );
        assert_eq!(field_of(r#"{"name":"echo","executable":"/x","colour":"red"}"#), "colour");
        assert_eq!(field_of(r#"{"name":"echo","executable":"/x","scaling":{"burst":1}}"#), "scaling.burst");
        assert_eq!(
            field_of(r#"{"name":"echo","executable":"/x","scaling":{"stable_window":"soon"}}"#),
            "scaling.stable_window"
        );
        assert_eq!(
            field_of(r#"{"name":"echo","executable":"/x","scaling":{"panic_window":"2m"}}"#),
            "scaling.panic_window"
        );
        assert_eq!(
            field_of(r#"{"name":"echo","executable":"/x","resources":{"cpu_millis":0}}"#),
            "resources.cpu_millis"
        );
        assert_eq!(field_of(r#"{"name":"echo","executable":"/x","timeout":"0s"}"#), "timeout");
        assert_eq!(field_of(r#"{"name":"echo""#), "body");
        assert_eq!(field_of(r#"[1,2]"#), "body");
    }
}
