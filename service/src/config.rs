//! Layered configuration: compiled defaults, then a TOML file, then `BATON_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Every baton binary loads its config here.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("config file {path} does not exist; pass an existing TOML file or leave --config out")]
    MissingFile {
        /// The path given.
        path: String,
    },
    /// A layer held a value of the wrong type, an unknown key or bad TOML.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A field's value is well-formed but unusable (out of bounds, inconsistent with
    /// another, or needing something that is not there).
    #[error("invalid configuration: {field}: {message}")]
    Field {
        /// Dotted path of the field, with an index where it is a list
        /// (`functions.executables[1]`).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Field`].
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field { field: field.into(), message: message.into() }
    }
}

/// Loads a `C` from its defaults, the optional TOML `file`, the environment and `flags`.
///
/// `flags` is serialized on top of everything else; give it `Option` fields skipped when
/// `None` so that only flags the user set override the lower layers. Environment variables
/// are read only when they hold a `__` (section separator), so unrelated `BATON_*` variables
/// such as `BATON_URL` never collide with the config.
pub fn load_config<C, F>(file: Option<&Path>, flags: &F) -> Result<C, ConfigError>
where
    C: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let mut figment = Figment::from(Serialized::defaults(C::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile { path: path.display().to_string() });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let env = Env::prefixed("BATON_").filter(|key| key.as_str().contains("__")).split("__");
    figment = figment.merge(env).merge(Serialized::defaults(flags));
    figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// Checks that an example config file (TOML) lists every field of `C` and that its values
/// are exactly `C::default()`, so the documented defaults can never drift from the code.
/// Each crate calls it from a unit test on its `*.example.toml`.
pub fn example_matches_defaults<C>(text: &str) -> Result<(), String>
where
    C: DeserializeOwned + Serialize + Default + PartialEq + std::fmt::Debug,
{
    let parsed: C = toml::from_str(text).map_err(|e| format!("the example does not parse: {e}"))?;
    if parsed != C::default() {
        return Err(format!("the example's values differ from the defaults:\n{parsed:#?}\nvs\n{:#?}", C::default()));
    }
    let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
    let defaults = toml::Value::try_from(C::default()).map_err(|e| e.to_string())?;
    for (section, fields) in defaults.as_table().into_iter().flatten() {
        for key in fields.as_table().into_iter().flat_map(|t| t.keys()) {
            if value.get(section).and_then(|s| s.get(key)).is_none() {
                return Err(format!("{section}.{key} is missing from the example"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its error type
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Conf {
        net: Net,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Net {
        port: u16,
        host: String,
    }

    impl Default for Net {
        fn default() -> Self {
            Self { port: 1, host: "h".into() }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        net: Option<FlagNet>,
    }

    #[derive(Serialize)]
    struct FlagNet {
        host: String,
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[net]\nport = 2\nhost = \"file\"\n")?;
            let c: Conf = load_config(None, &Flags::default()).unwrap();
            assert_eq!(c, Conf::default());
            let c: Conf = load_config(Some(Path::new("c.toml")), &Flags::default()).unwrap();
            assert_eq!(c.net, Net { port: 2, host: "file".into() });
            jail.set_env("BATON_NET__PORT", "3");
            jail.set_env("BATON_URL", "ignored: no section separator");
            let c: Conf = load_config(Some(Path::new("c.toml")), &Flags::default()).unwrap();
            assert_eq!(c.net, Net { port: 3, host: "file".into() });
            let flags = Flags { net: Some(FlagNet { host: "flag".into() }) };
            let c: Conf = load_config(Some(Path::new("c.toml")), &flags).unwrap();
            assert_eq!(c.net, Net { port: 3, host: "flag".into() });
            Ok(())
        });
    }

    #[test]
    fn example_check_catches_drift_and_omissions() {
        assert_eq!(example_matches_defaults::<Conf>("[net]\nport = 1\nhost = \"h\"\n"), Ok(()));
        let missing = example_matches_defaults::<Conf>("[net]\nport = 1\n").unwrap_err();
        assert!(missing.contains("net.host is missing"), "{missing}");
        let drift = example_matches_defaults::<Conf>("[net]\nport = 2\nhost = \"h\"\n").unwrap_err();
        assert!(drift.contains("differ"), "{drift}");
    }

    #[test]
    fn errors_name_the_problem() {
        let err = load_config::<Conf, _>(Some(Path::new("/nonexistent/x.toml")), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[net]\nprot = 2\n")?;
            let err = load_config::<Conf, _>(Some(Path::new("c.toml")), &Flags::default()).unwrap_err();
            assert!(err.to_string().contains("prot"), "{err}");
            Ok(())
        });
    }
}
