//! What tenants may run: the operator's list of executables. A function's sandboxes run
//! its `executable` on the workers, so a federation open to tenants names the programs (or
//! the folders of programs) they may use; an empty list admits any absolute path, for
//! development.

/// The executables tenants' functions may run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Executables {
    /// Absolute paths; one ending in `/` admits everything under that folder.
    allowed: Vec<String>,
}

impl Executables {
    /// A list from `functions.executables`; every entry must be an absolute path.
    pub fn new(allowed: Vec<String>) -> Result<Self, String> {
        for (i, entry) in allowed.iter().enumerate() {
            if !entry.starts_with('/') || !plain(entry) {
                return Err(format!(
                    "functions.executables[{i}]: {entry:?} must be an absolute path without . or .. parts"
                ));
            }
        }
        Ok(Self { allowed })
    }

    /// Whether a function may run `executable`.
    pub fn admits(&self, executable: &str) -> bool {
        self.allowed.is_empty()
            || plain(executable)
                && self.allowed.iter().any(|entry| match entry.strip_suffix('/') {
                    Some(folder) => {
                        executable.strip_prefix(folder).is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
                    }
                    None => executable == entry,
                })
    }

    /// The list, for error messages.
    pub fn describe(&self) -> String {
        self.allowed.join(", ")
    }
}

/// No `.` or `..` part, so a folder entry cannot be left by `/allowed/../bin/sh`.
fn plain(path: &str) -> bool {
    !path.split('/').any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_admits_anything() {
        assert!(Executables::default().admits("/bin/sh"));
    }

    #[test]
    fn paths_match_exactly_and_folders_by_prefix() {
        let list = Executables::new(vec!["/opt/fns/".into(), "/usr/bin/echo-fn".into()]).unwrap();
        assert!(list.admits("/opt/fns/resize"));
        assert!(list.admits("/opt/fns/img/resize"));
        assert!(list.admits("/usr/bin/echo-fn"));
        assert!(!list.admits("/usr/bin/echo-fn2"), "a file entry is not a prefix");
        assert!(!list.admits("/opt/fns"), "the folder itself is no program");
        assert!(!list.admits("/opt/fns/"), "the folder itself is no program");
        assert!(!list.admits("/opt/fnsx/evil"), "a folder entry matches whole parts");
        assert!(!list.admits("/bin/sh"));
        assert!(!list.admits("/opt/fns/../../bin/sh"), "no way out of the folder");
        assert!(!list.admits("/opt/fns/./x"));
    }

    #[test]
    fn entries_must_be_absolute_and_plain() {
        assert!(Executables::new(vec!["opt/fns/".into()]).unwrap_err().contains("executables[0]"));
        assert!(Executables::new(vec!["/ok".into(), "/opt/../bin/".into()]).unwrap_err().contains("executables[1]"));
    }
}
