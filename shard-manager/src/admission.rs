//! What tenants may register: the operator's admission policy (`[functions]`). A
//! function's sandboxes run its `executable` on the workers with the resources and scale
//! it asks for, so a federation open to tenants names the programs (or folders of
//! programs) they may run and bounds what one function may take, and how many functions a
//! tenant may have (the limit is stored with the tenant, so every replica enforces the same
//! one when the registration commits). An empty executable list admits any absolute path,
//! for development.

use baton_model::function::SpecError;
use baton_model::{FunctionSpec, Runtime};
use baton_proto::shard::PutTenantRequest;
use baton_service::ConfigError;

use crate::config::FunctionsSection;
use crate::state::TenantLimits;

/// The admission policy: a checked `[functions]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission(FunctionsSection);

impl Default for Admission {
    fn default() -> Self {
        Self::new(&FunctionsSection::default()).expect("the defaults are valid")
    }
}

impl Admission {
    /// The policy `[functions]` describes; every executable entry must be an absolute path.
    pub fn new(section: &FunctionsSection) -> Result<Self, ConfigError> {
        for (i, entry) in section.executables.iter().enumerate() {
            if !entry.starts_with('/') || !plain(entry) {
                return Err(ConfigError::field(
                    format!("functions.executables[{i}]"),
                    format!("{entry:?} must be an absolute path without . or .. parts"),
                ));
            }
        }
        Ok(Self(section.clone()))
    }

    /// Checks a (valid) spec against the policy; the error names the field it refuses.
    pub fn check(&self, spec: &FunctionSpec) -> Result<(), SpecError> {
        if spec.runtime == Runtime::Process && !self.admits(&spec.executable) {
            return Err(SpecError::new(
                "executable",
                format!(
                    "{:?} is not one this federation runs (allowed: {})",
                    spec.executable,
                    self.0.executables.join(", ")
                ),
            ));
        }
        if spec.runtime == Runtime::Oci && spec.image_digest.is_empty() {
            return Err(SpecError::new(
                "image_digest",
                "is missing: the router a function is registered through resolves its image to the digest it runs",
            ));
        }
        let over = |field: &str, limit: &dyn std::fmt::Display| {
            Err(SpecError::new(field, format!("is over this federation's limit of {limit}")))
        };
        if spec.scaling.max_scale > self.0.max_scale {
            return over("scaling.max_scale", &self.0.max_scale);
        }
        if spec.resources.cpu_millis > self.0.max_cpu_millis {
            return over("resources.cpu_millis", &self.0.max_cpu_millis);
        }
        if spec.resources.memory_mib > self.0.max_memory_mib {
            return over("resources.memory_mib", &self.0.max_memory_mib);
        }
        if spec.timeout > self.0.max_timeout {
            return over("timeout", &humantime_serde::re::humantime::format_duration(self.0.max_timeout));
        }
        Ok(())
    }

    /// Most functions a tenant created without a limit of its own may have.
    pub fn max_per_tenant(&self) -> u32 {
        self.0.max_per_tenant
    }

    /// A new or updated tenant's limits: those asked for, the federation's defaults where
    /// a request gives `0`.
    pub fn tenant_limits(&self, r: &PutTenantRequest) -> TenantLimits {
        let or = |asked: u64, default: u64| if asked == 0 { default } else { asked };
        TenantLimits {
            executables: r.executables,
            max_sandboxes: or(r.max_sandboxes, self.0.max_sandboxes_per_tenant),
            max_reserved_cpu_millis: or(r.max_reserved_cpu_millis, self.0.max_reserved_cpu_millis_per_tenant),
            max_reserved_memory_mib: or(r.max_reserved_memory_mib, self.0.max_reserved_memory_mib_per_tenant),
        }
    }

    /// Whether a function may run `executable`.
    fn admits(&self, executable: &str) -> bool {
        self.0.executables.is_empty()
            || plain(executable)
                && self.0.executables.iter().any(|entry| match entry.strip_suffix('/') {
                    Some(folder) => {
                        executable.strip_prefix(folder).is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
                    }
                    None => executable == entry,
                })
    }
}

/// No `.` or `..` part, so a folder entry cannot be left by `/allowed/../bin/sh`.
fn plain(path: &str) -> bool {
    !path.split('/').any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FunctionSpec {
        baton_model::function::federated_spec(&baton_model::FunctionId::new("dev", "f").unwrap(), json).unwrap()
    }

    fn executables(list: &[&str]) -> Admission {
        let section =
            FunctionsSection { executables: list.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        Admission::new(&section).unwrap()
    }

    /// Whether a function running `executable` is admitted (a spec that is itself refused,
    /// a path with `..` for one, is not).
    fn runs(policy: &Admission, executable: &str) -> bool {
        let json = format!(r#"{{"executable":"{executable}"}}"#);
        let spec = baton_model::function::federated_spec(&baton_model::FunctionId::new("dev", "f").unwrap(), &json);
        spec.is_ok_and(|spec| policy.check(&spec).is_ok())
    }

    #[test]
    fn an_empty_list_admits_any_executable() {
        assert!(runs(&Admission::default(), "/bin/sh"));
    }

    #[test]
    fn paths_match_exactly_and_folders_by_prefix() {
        let policy = executables(&["/opt/fns/", "/usr/bin/echo-fn"]);
        assert!(runs(&policy, "/opt/fns/resize"));
        assert!(runs(&policy, "/opt/fns/img/resize"));
        assert!(runs(&policy, "/usr/bin/echo-fn"));
        assert!(!runs(&policy, "/usr/bin/echo-fn2"), "a file entry is not a prefix");
        assert!(!runs(&policy, "/opt/fns/"), "the folder itself is no program");
        assert!(!runs(&policy, "/opt/fnsx/evil"), "a folder entry matches whole parts");
        assert!(!runs(&policy, "/bin/sh"));
        assert!(!runs(&policy, "/opt/fns/../../bin/sh"), "no way out of the folder");
        assert!(!runs(&policy, "/opt/fns/./x"));
        let refusal = policy.check(&spec(r#"{"executable":"/bin/sh"}"#)).unwrap_err().to_string();
        assert!(refusal.starts_with("executable: \"/bin/sh\""), "{refusal}");
    }

    #[test]
    fn emulated_functions_run_no_executable() {
        assert!(executables(&["/opt/fns/"]).check(&spec(r#"{"runtime":"emulated"}"#)).is_ok());
    }

    #[test]
    fn images_run_only_as_the_digest_the_router_resolved() {
        let policy = executables(&["/opt/fns/"]);
        assert_eq!(policy.check(&spec(r#"{"image":"r.example/acme/f:1"}"#)).unwrap_err().field, "image_digest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let resolved = format!(r#"{{"image":"r.example/acme/f:1","image_digest":"{digest}"}}"#);
        assert_eq!(policy.check(&spec(&resolved)), Ok(()), "an image needs no executable of the list");
    }

    #[test]
    fn entries_must_be_absolute_and_plain() {
        let section = |list: &[&str]| FunctionsSection {
            executables: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(Admission::new(&section(&["opt/fns/"])).unwrap_err().to_string().contains("executables[0]"));
        assert!(Admission::new(&section(&["/ok", "/opt/../bin/"])).unwrap_err().to_string().contains("executables[1]"));
    }

    #[test]
    fn limits_bound_scale_resources_and_timeout_at_the_limit_included() {
        let policy = Admission::new(&FunctionsSection {
            max_scale: 100,
            max_cpu_millis: 1000,
            max_memory_mib: 512,
            max_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .unwrap();
        let at_limits = r#"{"executable":"/f","scaling":{"max_scale":100},"resources":{"cpu_millis":1000,"memory_mib":512},"timeout":"60s"}"#;
        assert_eq!(policy.check(&spec(at_limits)), Ok(()));
        for (json, field) in [
            (r#"{"executable":"/f","scaling":{"max_scale":101}}"#, "scaling.max_scale"),
            (r#"{"executable":"/f","resources":{"cpu_millis":1001}}"#, "resources.cpu_millis"),
            (r#"{"executable":"/f","resources":{"memory_mib":513}}"#, "resources.memory_mib"),
            (r#"{"executable":"/f","timeout":"61s"}"#, "timeout"),
        ] {
            let refusal = policy.check(&spec(json)).unwrap_err();
            assert_eq!(refusal.field, field, "{json}: {refusal}");
            assert!(refusal.message.starts_with("is over"), "{json}: {refusal}");
        }
    }
}
