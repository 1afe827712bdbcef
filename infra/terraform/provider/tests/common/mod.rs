//! Terraform, run for real against a federation: a working directory whose CLI
//! configuration installs this build of terraform-provider-baton from a filesystem mirror
//! (no registry is reached), and the commands a practitioner types.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The provider's source address in configurations.
pub const SOURCE: &str = "baton/baton";

/// A Terraform working directory.
pub struct Terraform {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a command printed, and whether it succeeded.
pub struct Run {
    pub code: i32,
    pub output: String,
}

/// Installs `provider` (the binary) into a filesystem mirror under `root`, as `terraform
/// providers mirror` lays one out, and writes a CLI configuration that installs
/// `baton/baton` from it alone; returns the configuration's path.
pub fn mirror(root: &Path, provider: &Path) -> PathBuf {
    let version = env!("CARGO_PKG_VERSION");
    let folder = root.join(format!("mirror/registry.terraform.io/baton/baton/{version}/linux_amd64"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(provider, folder.join(format!("terraform-provider-baton_v{version}"))).unwrap();
    let config = root.join("cli.tfrc");
    let text = format!(
        "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/baton/*\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/baton/*\"]\n  }}\n}}\n",
        root.join("mirror").display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

impl Terraform {
    /// A working directory whose provider reads `env` (BATON_SHARD_MANAGER, BATON_URL, …).
    pub fn new(env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cli_config = mirror(dir.path(), &baton_testkit::bin("terraform-provider-baton"));
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        env.push(("TF_CLI_CONFIG_FILE".into(), cli_config.display().to_string()));
        env.push(("TF_IN_AUTOMATION".into(), "1".into()));
        env.push(("CHECKPOINT_DISABLE".into(), "1".into()));
        Self { dir, env }
    }

    /// `terraform ARGS` in the working directory.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new("terraform")
            .args(args)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("BATON_CA")
            .env_remove("BATON_CERT")
            .env_remove("BATON_KEY")
            .output()
            .expect("terraform is installed (Terraform 1.11, as on the project's machines)");
        let mut text = String::from_utf8_lossy(&output.stdout).to_string();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Run { code: output.status.code().unwrap_or(-1), output: text }
    }

    /// `terraform ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "terraform {args:?} failed:\n{}", run.output);
        run.output
    }

    /// Writes the configuration: the provider block (from the environment) and `body`.
    pub fn write(&self, body: &str) {
        let text = format!(
            "terraform {{\n  required_providers {{\n    baton = {{ source = \"{SOURCE}\" }}\n  }}\n}}\n\nprovider \"baton\" {{}}\n\n{body}\n"
        );
        std::fs::write(self.dir.path().join("main.tf"), text).unwrap();
        if !self.dir.path().join(".terraform").exists() {
            self.ok(&["init", "-input=false", "-no-color"]);
        }
    }

    /// Writes `body` and applies it.
    pub fn apply(&self, body: &str) -> String {
        self.write(body);
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    /// The plan's text when it has changes; none when it is empty.
    pub fn changes(&self) -> Option<String> {
        let run = self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
        match run.code {
            0 => None,
            2 => Some(run.output),
            _ => panic!("terraform plan failed:\n{}", run.output),
        }
    }

    /// The outputs, sensitive ones included.
    pub fn outputs(&self) -> serde_json::Value {
        let text = self.ok(&["output", "-json", "-no-color"]);
        let outputs: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut values = serde_json::Map::new();
        for (name, output) in outputs.as_object().unwrap() {
            values.insert(name.clone(), output["value"].clone());
        }
        values.into()
    }
}
