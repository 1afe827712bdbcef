//! The Terraform modules: formatted, valid, their `terraform test` suites passing (plan-time
//! assertions and every validation rule), and the host module's install script run for
//! real, into a scratch root with a `systemctl` that records what it is asked.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `infra/terraform`.
fn terraform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `terraform ARGS` in `dir`, its working data in `data`; panics with the output on failure.
fn terraform(dir: &Path, data: &Path, args: &[&str]) -> String {
    let output = Command::new("terraform")
        .args(args)
        .current_dir(dir)
        .env("TF_DATA_DIR", data)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .expect("terraform is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "terraform {args:?} in {} failed:\n{text}", dir.display());
    text
}

#[test]
fn the_terraform_code_is_formatted() {
    let scratch = tempfile::tempdir().unwrap();
    terraform(&terraform_dir(), scratch.path(), &["fmt", "-check", "-recursive", "-diff", "-no-color"]);
}

#[test]
fn each_module_is_valid_and_passes_its_tests() {
    for module in ["modules/federation", "modules/host"] {
        let dir = terraform_dir().join(module);
        let scratch = tempfile::tempdir().unwrap();
        terraform(&dir, scratch.path(), &["init", "-backend=false", "-input=false", "-no-color"]);
        terraform(&dir, scratch.path(), &["validate", "-no-color"]);
        let tested = terraform(&dir, scratch.path(), &["test", "-no-color"]);
        assert!(tested.contains("0 failed") && !tested.contains(" 0 passed"), "{module}:\n{tested}");
    }
}

/// A root configuration laying a one-host federation out under `root` with both modules,
/// the router on `router_host`; its outputs are the host's install and uninstall scripts.
fn layout(root: &Path, router_host: &str) -> String {
    let modules = terraform_dir().join("modules");
    format!(
        r#"
module "federation" {{
  source         = "{modules}/federation"
  shard_managers = [{{ host = "h1", region = "r" }}]
  regions = {{
    r = {{ cells = {{ c = {{ control = {{ host = "h1" }}, data_planes = [{{ host = "h1" }}], workers = [{{ host = "h1" }}] }} }} }}
  }}
  routers      = [{{ host = "{router_host}", region = "r" }}]
  paths        = {{ bin = "{root}/bin", config = "{root}/etc", data = "{root}/data", units = "{root}/units" }}
  service_user = {{ user = "nobody", group = "nogroup" }}
}}
module "host" {{
  source    = "{modules}/host"
  host      = module.federation.hosts["h1"]
  bin_dir   = "{root}/bin"
  state_dir = "{root}/state"
}}
output "install" {{
  value     = module.host.install_script
  sensitive = true
}}
output "uninstall" {{
  value     = module.host.uninstall_script
  sensitive = true
}}
"#,
        modules = modules.display(),
        root = root.display(),
    )
}

/// Renders `layout` in `work` and writes its two scripts there; returns their paths.
fn render(work: &Path, root: &Path, router_host: &str, name: &str) -> (PathBuf, PathBuf) {
    let config = work.join(name);
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("main.tf"), layout(root, router_host)).unwrap();
    let data = config.join(".data");
    terraform(&config, &data, &["init", "-backend=false", "-input=false", "-no-color"]);
    terraform(&config, &data, &["apply", "-auto-approve", "-input=false", "-no-color"]);
    let scripts: Vec<PathBuf> = ["install", "uninstall"]
        .iter()
        .map(|output| {
            let path = config.join(format!("{output}.sh"));
            std::fs::write(&path, terraform(&config, &data, &["output", "-raw", "-no-color", output])).unwrap();
            path
        })
        .collect();
    (scripts[0].clone(), scripts[1].clone())
}

/// Runs `script` (with `args`) as root with the recording `systemctl` first on the PATH;
/// returns what systemctl was asked, one call per line.
fn run(script: &Path, stubs: &Path, args: &[&Path]) -> Vec<String> {
    let log = stubs.join("calls");
    std::fs::write(&log, "").unwrap();
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh").arg(script).args(args).env("PATH", path).output().unwrap();
    assert!(
        output.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_host_install_script_installs_rolls_and_uninstalls() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let stubs = work.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let systemctl = stubs.join("systemctl");
    std::fs::write(&systemctl, format!("#!/bin/sh\necho \"$*\" >> {}\n", stubs.join("calls").display())).unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A release tarball as scripts/package.sh lays one out.
    let release = work.path().join("release");
    std::fs::create_dir_all(release.join("baton-0.1.0-x86_64-linux/bin")).unwrap();
    std::fs::write(release.join("baton-0.1.0-x86_64-linux/bin/baton-router"), "#!/bin/sh\n").unwrap();
    let tarball = work.path().join("release.tar.gz");
    let packed = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&release).arg(".").status().unwrap();
    assert!(packed.success());

    let (install, old_uninstall) = render(work.path(), &root, "h1", "first");
    let calls = run(&install, &stubs, &[&tarball]);
    let units = [
        "baton-shard-manager.service",
        "baton-cell-c.service",
        "baton-data-plane-c-1.service",
        "baton-worker-c-1.service",
        "baton-router.service",
    ];
    let mut expected = vec!["daemon-reload".to_string()];
    for unit in units {
        expected.push(format!("enable {unit}"));
        expected.push(format!("restart {unit}"));
    }
    assert_eq!(calls, expected, "every unit enabled and restarted, in start order");
    let meta = |path: &Path| std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = root.join("etc/shard-manager.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("id = 1\n") && text.contains("plaintext = true"), "{text}");
    assert_eq!(meta(&config).mode() & 0o777, 0o640);
    assert_ne!(meta(&config).gid(), 0, "configs are in the services' group");
    assert!(std::fs::read_to_string(root.join("units/baton-router.service")).unwrap().contains("User=nobody"));
    assert_eq!(meta(&root.join("data/router")).mode() & 0o777, 0o750);
    assert_eq!(meta(&root.join("bin/baton-router")).mode() & 0o777, 0o755, "the release's binaries installed");

    // Run again, with the router moved to another host: its unit is stopped and removed.
    let (install, uninstall) = render(work.path(), &root, "h2", "second");
    let calls = run(&install, &stubs, &[]);
    assert_eq!(calls[0], "disable --now baton-router.service", "{calls:?}");
    assert!(!root.join("units/baton-router.service").exists());
    assert!(!calls.iter().any(|c| c == "restart baton-router.service"));

    // The first install's uninstall finds itself replaced and does nothing; the second's
    // removes units and files, and keeps the data.
    assert!(run(&old_uninstall, &stubs, &[]).is_empty());
    assert!(config.exists());
    let calls = run(&uninstall, &stubs, &[]);
    assert!(calls.contains(&"disable --now baton-shard-manager.service".to_string()), "{calls:?}");
    assert!(!config.exists() && !root.join("units/baton-cell-c.service").exists());
    assert!(!root.join("state").exists());
    assert!(root.join("data/shard-manager").exists(), "data stays unless purge_data_on_destroy");
}

#[test]
fn the_multi_region_example_plans_one_install_per_host_with_mutual_tls() {
    let work = tempfile::tempdir().unwrap();
    let example = terraform_dir().join("examples/multi-region");
    let tfvars = std::fs::read_to_string(example.join("terraform.tfvars.example")).unwrap();
    // Every address the example names, with a certificate for each role from `baton certs`.
    let mut hosts: Vec<&str> = tfvars
        .split('"')
        .filter(|s| s.split('.').count() == 4 && s.split('.').all(|p| p.parse::<u8>().is_ok()))
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 13, "{hosts:?}");
    let tls = work.path().join("tls");
    let baton = baton_testkit::bin("baton");
    let certs = |args: &[&str]| {
        let output = Command::new(&baton).arg("certs").args(args).arg("--dir").arg(&tls).output().unwrap();
        assert!(output.status.success(), "baton certs {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    certs(&["init"]);
    for host in &hosts {
        for role in ["shard-manager", "cell", "worker", "router"] {
            certs(&["issue", role, "--host", host, "--name", &format!("{host}-{role}")]);
        }
    }
    let key = work.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let tarball = work.path().join("release.tar.gz");
    std::fs::write(&tarball, "not opened by a plan").unwrap();
    let ssh_key = work.path().join("id");
    std::fs::write(&ssh_key, "not used by a plan").unwrap();
    let vars = work.path().join("test.tfvars");
    std::fs::write(&vars, &tfvars).unwrap();

    let data = work.path().join(".data");
    terraform(&example, &data, &["init", "-backend=false", "-input=false", "-no-color"]);
    terraform(&example, &data, &["validate", "-no-color"]);
    let plan = terraform(
        &example,
        &data,
        &[
            "plan",
            "-input=false",
            "-no-color",
            "-refresh=false",
            "-lock=false",
            &format!("-var-file={}", vars.display()),
            &format!("-var=tls_dir={}", tls.display()),
            &format!("-var=secrets_key_file={}", key.display()),
            &format!("-var=release_tarball={}", tarball.display()),
            &format!("-var=ssh_private_key_file={}", ssh_key.display()),
            &format!("-state={}", work.path().join("none.tfstate").display()),
        ],
    );
    assert!(plan.contains("Plan: 13 to add, 0 to change, 0 to destroy"), "{plan}");
    assert!(plan.contains("module.host[\"10.3.1.10\"].terraform_data.install[0] will be created"), "{plan}");
    assert!(plan.contains("\"http://10.3.0.10:7500,http://10.1.0.10:7500,http://10.2.0.10:7500\""), "{plan}");
}
