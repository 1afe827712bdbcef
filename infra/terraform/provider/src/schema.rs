//! Short ways to write the resources' schemas, and the one place an [`ApiError`] becomes a
//! Terraform diagnostic.

use std::collections::HashMap;

use tf_provider::Diagnostics;
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description, Schema};

use crate::api::ApiError;

/// An attribute the practitioner must set.
pub fn required(attr_type: AttributeType, description: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Required, description)
}

/// An attribute the practitioner may set; unset, it is null.
pub fn optional(attr_type: AttributeType, description: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Optional, description)
}

/// An attribute the practitioner may set; unset, the federation's value is kept (a
/// server default is never a diff).
pub fn defaulted(attr_type: AttributeType, description: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::OptionalComputed, description)
}

/// An attribute only the provider sets.
pub fn computed(attr_type: AttributeType, description: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Computed, description)
}

/// `attribute`, marked sensitive (never shown in plans or logs).
pub fn sensitive(mut attribute: Attribute) -> Attribute {
    attribute.sensitive = true;
    attribute
}

fn attribute(attr_type: AttributeType, constraint: AttributeConstraint, description: &str) -> Attribute {
    Attribute { attr_type, description: Description::plain(description), constraint, ..Default::default() }
}

/// A schema of these attributes.
pub fn schema(description: &str, attributes: Vec<(&str, Attribute)>) -> Schema {
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::plain(description),
            attributes: attributes.into_iter().map(|(name, a)| (name.to_string(), a)).collect::<HashMap<_, _>>(),
            ..Default::default()
        },
    }
}

/// Records `error` as a diagnostic; `what` says what the provider was doing.
pub fn report(diags: &mut Diagnostics, what: &str, error: ApiError) {
    let summary = match error {
        ApiError::NotConfigured(_) => "the baton provider is not configured for this",
        ApiError::NotFound(_) => "not found",
        ApiError::Refused(_) => "the federation refused it",
        ApiError::Unreachable(_) => "the federation did not answer",
    };
    diags.root_error(format!("{what}: {summary}"), error.to_string());
}

/// `result`'s value, or none with its error recorded (see [`report`]).
pub fn outcome<T>(diags: &mut Diagnostics, what: &str, result: Result<T, ApiError>) -> Option<T> {
    result.map_err(|e| report(diags, what, e)).ok()
}

/// Whether nothing is there yet to create (a `kind` named `name`, as `lookup` found): one
/// that exists is an error naming the import that adopts it, not taken over silently.
pub fn absent<T>(diags: &mut Diagnostics, kind: &str, name: &str, lookup: Result<Option<T>, ApiError>) -> Option<()> {
    match outcome(diags, &format!("creating {kind} {name}"), lookup)? {
        None => Some(()),
        Some(_) => {
            diags.root_error(
                format!("{kind} {name} already exists"),
                format!("import it to manage it here: terraform import baton_{kind}.<name> {name}"),
            );
            None
        }
    }
}

/// What an import found under `id` (a `kind`), or none with an error saying it is not there.
pub fn found<T>(diags: &mut Diagnostics, kind: &str, id: &str, lookup: Result<Option<T>, ApiError>) -> Option<T> {
    let found = outcome(diags, &format!("importing {kind} {id}"), lookup)?;
    if found.is_none() {
        diags.root_error(
            format!("importing {kind} {id}"),
            format!("the federation has no {kind} {id} (that these credentials see)"),
        );
    }
    found
}

/// Whether a destroy is done: removed now, or already gone (`NotFound`) is the same.
pub fn removed(diags: &mut Diagnostics, what: &str, result: Result<(), ApiError>) -> Option<()> {
    match result {
        Ok(()) | Err(ApiError::NotFound(_)) => Some(()),
        Err(e) => {
            report(diags, what, e);
            None
        }
    }
}
