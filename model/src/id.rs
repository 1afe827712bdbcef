//! A tenant's function, named once. It has three spellings on the wire and each has one
//! method here, so no other code joins or splits them by hand:
//!
//! | form | example | where |
//! |---|---|---|
//! | [`FunctionId::key`] | `acme/resize` | the shard map, the shard manager's state, heartbeats |
//! | [`FunctionId::cell_name`] | `acme.resize` | inside a federated cell (its registry, sandboxes, `/function/acme.resize`) |
//! | [`FunctionId::name`] | `resize` | the tenant's own API (`/function/resize`, with the tenant from the API key) |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::function::{SpecError, is_label};

/// A tenant's function: two labels (1-63 lowercase letters, digits and `-`, starting with a
/// letter and not ending with `-`). Serialized as its key, `tenant/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionId {
    tenant: String,
    name: String,
}

impl FunctionId {
    /// Checks and joins a tenant and a function name.
    pub fn new(tenant: &str, name: &str) -> Result<Self, SpecError> {
        if !is_label(tenant) || !is_label(name) {
            return Err(SpecError::new(
                "name",
                format!(
                    "tenant {tenant:?} and function {name:?} must each be 1-{} lowercase letters, digits and '-', starting with a letter and not ending with '-'",
                    crate::function::MAX_NAME_LEN
                ),
            ));
        }
        Ok(Self { tenant: tenant.to_string(), name: name.to_string() })
    }

    /// Parses the federation's key, `tenant/name`.
    pub fn from_key(key: &str) -> Result<Self, SpecError> {
        let (tenant, name) =
            key.split_once('/').ok_or_else(|| SpecError::new("function", format!("{key:?} is not tenant/name")))?;
        Self::new(tenant, name)
    }

    /// Parses the name a federated cell gives it, `tenant.name`; `None` for a cell's own
    /// (unfederated) function, whose name has no `.`.
    pub fn from_cell_name(cell_name: &str) -> Option<Self> {
        let (tenant, name) = cell_name.split_once('.')?;
        Self::new(tenant, name).ok()
    }

    /// The key (`tenant/name`) of `tenant`'s function `name`, without checking the labels:
    /// for looking a function up by what a caller sent (a malformed key finds nothing).
    /// Registration checks with [`FunctionId::new`].
    pub fn key_of(tenant: &str, name: &str) -> String {
        format!("{tenant}/{name}")
    }

    /// The key (`tenant/name`) of the function a federated cell names `cell_name`
    /// (`tenant.name`), without checking the labels: one allocation, for the data plane's
    /// per-call fence, where an unknown key simply finds no assignment. `None` for a cell's
    /// own function (no `.`).
    pub fn key_of_cell_name(cell_name: &str) -> Option<String> {
        let (tenant, name) = cell_name.split_once('.')?;
        Some(Self::key_of(tenant, name))
    }

    /// Its tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Its name within the tenant.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The federation's key: `tenant/name`.
    pub fn key(&self) -> String {
        Self::key_of(&self.tenant, &self.name)
    }

    /// Its name inside a federated cell: `tenant.name`.
    pub fn cell_name(&self) -> String {
        format!("{}.{}", self.tenant, self.name)
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

impl TryFrom<String> for FunctionId {
    type Error = SpecError;
    fn try_from(key: String) -> Result<Self, SpecError> {
        Self::from_key(&key)
    }
}

impl From<FunctionId> for String {
    fn from(id: FunctionId) -> String {
        id.key()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn each_spelling_round_trips() {
        let id = FunctionId::new("acme", "resize").unwrap();
        assert_eq!(
            (id.key(), id.cell_name(), id.to_string()),
            ("acme/resize".into(), "acme.resize".into(), "acme/resize".into())
        );
        assert_eq!(FunctionId::from_key("acme/resize").unwrap(), id);
        assert_eq!(FunctionId::from_cell_name("acme.resize"), Some(id.clone()));
        assert_eq!(FunctionId::key_of_cell_name("acme.resize"), Some(id.key()));
        assert_eq!(FunctionId::key_of_cell_name("echo"), None);
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""acme/resize""#);
        assert_eq!(serde_json::from_str::<FunctionId>(r#""acme/resize""#).unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["acme", "acme/", "/resize", "Acme/resize", "acme/re/size", "acme/re.size", "a-/b"] {
            assert!(FunctionId::from_key(bad).is_err(), "{bad}");
        }
        assert_eq!(FunctionId::from_cell_name("echo"), None, "a cell's own function");
        assert_eq!(FunctionId::from_cell_name("acme.Echo"), None);
        assert!(serde_json::from_str::<FunctionId>(r#""nope""#).is_err());
    }

    proptest! {
        #[test]
        fn keys_and_cell_names_parse_back(tenant in "[a-z][a-z0-9-]{0,20}[a-z0-9]", name in "[a-z][a-z0-9-]{0,20}[a-z0-9]") {
            let id = FunctionId::new(&tenant, &name).unwrap();
            prop_assert_eq!(FunctionId::from_key(&id.key()).unwrap(), id.clone());
            prop_assert_eq!(FunctionId::from_cell_name(&id.cell_name()), Some(id));
        }
    }
}
