//! The control plane's function registry as typed operations: put, get, delete and list.
//! The gRPC `CellControl` service and the federation's reconciler both call these, so a
//! spec is parsed once at the edge and never turned back into JSON to cross the process.

use baton_model::{FunctionSpec, SpecError};

use super::Scale;
use super::runtime::ControlPlane;
use crate::store::StoreError;

/// Why a function operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The spec is invalid (the field is named).
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// No function of that name.
    #[error("function {0:?} does not exist")]
    NotFound(String),
    /// The cell's store failed; nothing changed.
    #[error("the cell's store failed; retry: {0}")]
    Store(#[from] StoreError),
}

impl From<FunctionError> for tonic::Status {
    fn from(e: FunctionError) -> Self {
        match e {
            FunctionError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            FunctionError::NotFound(_) => tonic::Status::not_found(e.to_string()),
            FunctionError::Store(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}

impl ControlPlane {
    /// Registers or updates a function (persisted first, then applied). Returns whether it
    /// is new.
    pub async fn put_function_spec(&self, spec: FunctionSpec) -> Result<bool, FunctionError> {
        spec.validate()?;
        self.inner.store.put_function(&spec).await?;
        let name = spec.name.clone();
        let (created, _) = self.apply(|st| st.put_function(spec));
        self.urge(name);
        Ok(created)
    }

    /// A function's spec and scale.
    pub fn function_spec(&self, name: &str) -> Result<(FunctionSpec, Scale), FunctionError> {
        self.read(|st| st.function(name)).ok_or_else(|| FunctionError::NotFound(name.to_string()))
    }

    /// Removes a function (from the store first); its sandboxes are deleted.
    pub async fn delete_function_spec(&self, name: &str) -> Result<(), FunctionError> {
        if self.read(|st| st.function(name).is_none()) {
            return Err(FunctionError::NotFound(name.to_string()));
        }
        self.inner.store.delete_function(name).await?;
        self.apply(|st| st.delete_function(name));
        Ok(())
    }

    /// Every function with its scale, by name.
    pub fn function_specs(&self) -> Vec<(FunctionSpec, Scale)> {
        self.read(|st| st.function_names().iter().filter_map(|n| st.function(n)).collect())
    }
}
