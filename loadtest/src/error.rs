//! What can go wrong before or while a run starts. Every error names the file and line, or
//! the option, it is about.

use std::path::PathBuf;

/// A refusal of bad input or a failure to reach the target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of an input file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// An input file as a whole is unusable (a missing column, no rows, the wrong layout).
    #[error("{}: {message}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command-line option has a value that cannot be used.
    #[error("{option}: {message}")]
    Option {
        /// The option, as typed (`--rates`).
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The target refused or could not be reached while setting up or cleaning up.
    #[error("target: {0}")]
    Target(String),
}

impl Error {
    pub(crate) fn option(option: &'static str, message: impl Into<String>) -> Self {
        Self::Option { option, message: message.into() }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File { path: path.into(), message: message.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
