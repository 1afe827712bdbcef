//! What a tenant may hold: its limits (set by the operator, stored with the tenant) and
//! what its functions take of them. Checked when a registration commits, on every replica
//! alike, so two concurrent registrations cannot both pass a limit.
//!
//! Sandboxes are bounded by the sum of the functions' `scaling.max_scale` (the most that
//! can ever run at once), reserved capacity by the sum of `min_scale` × resources (what is
//! held even when idle). Both are known when the function is registered, so the bound is
//! exact and needs no count of live sandboxes from the cells.

use baton_model::{FunctionSpec, Runtime};
use serde::{Deserialize, Serialize};

use super::Rejection;

/// A tenant's limits; `0` is no limit (tenants stored before limits existed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantLimits {
    /// May register functions that run a host executable (the `process` runtime).
    pub executables: bool,
    /// Most sandboxes its functions may ever have at once (sum of `scaling.max_scale`).
    pub max_sandboxes: u64,
    /// Most CPU its functions may reserve, thousandths of a core (sum of `min_scale` ×
    /// `resources.cpu_millis`).
    pub max_reserved_cpu_millis: u64,
    /// Most memory its functions may reserve, MiB (sum of `min_scale` × `memory_mib`).
    pub max_reserved_memory_mib: u64,
}

/// What one function takes of its tenant's limits, or what all of a tenant's take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Runs a host executable.
    pub executable: bool,
    /// Its `scaling.max_scale`.
    pub sandboxes: u64,
    /// `min_scale` × `cpu_millis`.
    pub reserved_cpu_millis: u64,
    /// `min_scale` × `memory_mib`.
    pub reserved_memory_mib: u64,
}

impl Usage {
    /// What a function with `spec` takes.
    pub fn of(spec: &FunctionSpec) -> Self {
        let min = u64::from(spec.scaling.min_scale);
        Self {
            executable: spec.runtime == Runtime::Process,
            sandboxes: u64::from(spec.scaling.max_scale),
            reserved_cpu_millis: min * u64::from(spec.resources.cpu_millis),
            reserved_memory_mib: min * spec.resources.memory_mib,
        }
    }

    /// `self` with `other` added (a function registered).
    pub fn plus(self, other: Usage) -> Self {
        Self {
            executable: self.executable || other.executable,
            sandboxes: self.sandboxes + other.sandboxes,
            reserved_cpu_millis: self.reserved_cpu_millis + other.reserved_cpu_millis,
            reserved_memory_mib: self.reserved_memory_mib + other.reserved_memory_mib,
        }
    }

    /// `self` with `other` taken away (a function deleted or replaced).
    pub fn minus(self, other: Usage) -> Self {
        Self {
            executable: self.executable,
            sandboxes: self.sandboxes.saturating_sub(other.sandboxes),
            reserved_cpu_millis: self.reserved_cpu_millis.saturating_sub(other.reserved_cpu_millis),
            reserved_memory_mib: self.reserved_memory_mib.saturating_sub(other.reserved_memory_mib),
        }
    }
}

/// Whether `tenant`, holding `now`, may hold `after`: every limit it would pass refuses the
/// change, unless the change lowers what it holds (a limit lowered below a tenant's use
/// still lets it shrink).
pub fn check(tenant: &str, limits: &TenantLimits, now: Usage, after: Usage) -> Result<(), Rejection> {
    let over = |what: &'static str, now: u64, after: u64, limit: u64| {
        if limit > 0 && after > limit && after > now {
            Err(Rejection::OverTenantLimit {
                tenant: tenant.to_string(),
                what: what.to_string(),
                would_have: after,
                limit,
            })
        } else {
            Ok(())
        }
    };
    over("sandboxes (sum of scaling.max_scale)", now.sandboxes, after.sandboxes, limits.max_sandboxes)?;
    over(
        "reserved CPU millis (sum of scaling.min_scale × resources.cpu_millis)",
        now.reserved_cpu_millis,
        after.reserved_cpu_millis,
        limits.max_reserved_cpu_millis,
    )?;
    over(
        "reserved memory MiB (sum of scaling.min_scale × resources.memory_mib)",
        now.reserved_memory_mib,
        after.reserved_memory_mib,
        limits.max_reserved_memory_mib,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn usage(sandboxes: u64, cpu: u64, memory: u64) -> Usage {
        Usage { executable: false, sandboxes, reserved_cpu_millis: cpu, reserved_memory_mib: memory }
    }

    #[test]
    fn each_limit_refuses_growth_past_it_and_names_itself() {
        let limits = TenantLimits {
            executables: false,
            max_sandboxes: 10,
            max_reserved_cpu_millis: 1000,
            max_reserved_memory_mib: 512,
        };
        assert!(check("t", &limits, usage(0, 0, 0), usage(10, 1000, 512)).is_ok(), "at the limits");
        let refused = check("t", &limits, usage(0, 0, 0), usage(11, 0, 0)).unwrap_err();
        assert!(refused.to_string().contains("max_scale") && refused.to_string().contains("11"), "{refused}");
        assert!(check("t", &limits, usage(0, 0, 0), usage(0, 1001, 0)).unwrap_err().to_string().contains("CPU"));
        assert!(check("t", &limits, usage(0, 0, 0), usage(0, 0, 513)).unwrap_err().to_string().contains("memory"));
        assert!(check("t", &TenantLimits::default(), usage(0, 0, 0), usage(u64::MAX, 1, 1)).is_ok(), "0: no limit");
    }

    proptest! {
        /// Shrinking is always allowed; growing is allowed exactly when it stays within
        /// every limit.
        #[test]
        fn growth_is_refused_exactly_past_a_limit(
            limit in 1u64..100, now in 0u64..200, after in 0u64..200,
        ) {
            let limits = TenantLimits { max_sandboxes: limit, ..TenantLimits::default() };
            let result = check("t", &limits, usage(now, 0, 0), usage(after, 0, 0));
            prop_assert_eq!(result.is_ok(), after <= limit || after <= now);
        }
    }
}
