//! Identifier newtypes. An ID that reaches a file name or a cgroup path is checked here
//! once, so no other code has to worry about `..` or `/` inside it.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of ID.
        kind: &'static str,
    },
    /// The string was longer than [`MAX_ID_LEN`].
    #[error("{kind} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Which kind of ID.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The string held a character outside `[A-Za-z0-9._-]` or started with `.` or `-`.
    #[error(
        "{kind} {value:?} may hold only ASCII letters, digits, '.', '_' and '-', and must start with a letter or digit"
    )]
    BadCharacter {
        /// Which kind of ID.
        kind: &'static str,
        /// The offending value.
        value: String,
    },
}

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: value.len() });
    }
    let first_ok = value.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !(first_ok && rest_ok) {
        return Err(IdError::BadCharacter { kind, value: value.to_owned() });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps an identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// Names one sandbox on a worker node; unique per node while the sandbox exists.
    SandboxId,
    "sandbox_id"
);
id_type!(
    /// Names one worker node in a cell.
    NodeId,
    "node_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(SandboxId::new("fn-echo.1_a").unwrap().as_str(), "fn-echo.1_a");
    }

    #[test]
    fn refuses_path_tricks_and_empties() {
        assert_eq!(SandboxId::new(""), Err(IdError::Empty { kind: "sandbox_id" }));
        for bad in ["..", "a/b", ".hidden", "-x", "a b", "é"] {
            let err = SandboxId::new(bad).unwrap_err();
            assert!(matches!(err, IdError::BadCharacter { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("sandbox_id"));
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(matches!(NodeId::new(long), Err(IdError::TooLong { len: 129, .. })));
    }
}
