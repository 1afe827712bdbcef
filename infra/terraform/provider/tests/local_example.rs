//! `examples/local` applied for real: Terraform starts a federation of real processes on
//! this machine and, through the provider (installed from a filesystem mirror), creates a
//! tenant, a key and a function; the key calls it; a change of memory is made in place
//! with nothing left to plan; a function deleted by hand is a diff; and destroy leaves no
//! process, no sandbox and no data.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

/// Copies `from` into `to`, recursively (the example refers to the modules by relative path).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == ".terraform" || entry.file_name() == "provider" {
            continue;
        }
        if source.is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(format!("{}: {}", entry.file_name().to_string_lossy(), String::from_utf8_lossy(&cmdline)));
        }
    }
    found
}

/// Kills whatever the example started if the test ends early (daemons and sandboxes), so
/// no process outlives it.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        let daemons =
            processes_naming(&self.0).into_iter().filter_map(|line| line.split(':').next().map(str::to_string));
        // The sandboxes (in the workers' cgroups) too: a killed worker cannot delete them.
        for pid in daemons.chain(in_cgroups(&["baton-cell-1-w1", "baton-cell-2-w1"])) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terraform_brings_up_a_federation_and_manages_a_function_on_it() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), &work.path().join("terraform"));
    let example = work.path().join("terraform/examples/local");
    let state = work.path().join("federation");
    let _reaper = Reaper(format!("{}/", state.display()));
    // Sixteen different free ports (the kernel may give one twice in a row).
    let mut ports: Vec<String> = Vec::new();
    while ports.len() < 16 {
        let port = baton_testkit::free_port().to_string();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let bin_dir = baton_testkit::bin("baton-shard-manager").parent().unwrap().to_path_buf();
    let cli_config = common::mirror(work.path(), &baton_testkit::bin("terraform-provider-baton"));
    let terraform = |args: &[&str], memory: u32| {
        let output = std::process::Command::new("terraform")
            .args(args)
            .current_dir(&example)
            .env("TF_CLI_CONFIG_FILE", &cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_VAR_bin_dir", &bin_dir)
            .env("TF_VAR_state_dir", &state)
            .env("TF_VAR_ports", format!("[{}]", ports.join(",")))
            // Clear of the other suites' sandbox ports.
            .env("TF_VAR_sandbox_port_base", "18000")
            .env("TF_VAR_function_memory", memory.to_string())
            .env_remove("BATON_SHARD_MANAGER")
            .env_remove("BATON_URL")
            .env_remove("BATON_API_KEY")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap_or(-1), text)
    };
    let ok = |args: &[&str], memory: u32| {
        let (code, text) = terraform(args, memory);
        assert_eq!(code, 0, "terraform {args:?}:\n{text}");
        text
    };

    ok(&["init", "-input=false", "-no-color"], 64);
    let started = Instant::now();
    ok(&["apply", "-auto-approve", "-input=false", "-no-color"], 64);
    println!("terraform apply to a federation serving calls: {:.1} s", started.elapsed().as_secs_f64());
    let router = ok(&["output", "-raw", "router_url"], 64);
    let key = ok(&["output", "-raw", "api_key"], 64);
    let client = reqwest::Client::new();
    let call = || client.post(format!("{router}/function/echo")).bearer_auth(&key).body("hello").send();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = call().await.unwrap();
        if answer.status() == 200 {
            let echoed: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(echoed["body"], "hello", "the echo function answers with the call's body: {echoed}");
            break;
        }
        assert!(Instant::now() < deadline, "the function never answered: {}", answer.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("terraform apply to the first successful call: {:.1} s", started.elapsed().as_secs_f64());

    // The function's memory, changed in place; nothing to do afterwards.
    let (code, plan) = terraform(&["plan", "-detailed-exitcode", "-input=false", "-no-color"], 128);
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("baton_function.echo will be updated in-place") && plan.contains("64 -> 128"), "{plan}");
    assert!(plan.contains("0 to add, 1 to change, 0 to destroy"), "{plan}");
    ok(&["apply", "-auto-approve", "-input=false", "-no-color"], 128);
    let (code, plan) = terraform(&["plan", "-detailed-exitcode", "-input=false", "-no-color"], 128);
    assert_eq!(code, 0, "the plan after the change is empty:\n{plan}");
    let get = client.get(format!("{router}/v1/functions/echo")).bearer_auth(&key).send().await.unwrap();
    let described: serde_json::Value = get.json().await.unwrap();
    assert_eq!(described["spec"]["resources"]["memory_mib"], 128);

    // Deleted by hand: the next plan creates it again.
    let deleted = client.delete(format!("{router}/v1/functions/echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (code, plan) = terraform(&["plan", "-detailed-exitcode", "-input=false", "-no-color"], 128);
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("baton_function.echo will be created"), "{plan}");

    // Made again, and called, so there is a sandbox for destroy to remove.
    ok(&["apply", "-auto-approve", "-input=false", "-no-color"], 128);
    let deadline = Instant::now() + Duration::from_secs(20);
    while call().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the function made again never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sandboxes = in_cgroups(&["baton-cell-1-w1", "baton-cell-2-w1"]);
    assert!(!sandboxes.is_empty(), "the echo sandbox runs in its worker's cgroup");

    // Destroy: no process, no sandbox, no data.
    ok(&["destroy", "-auto-approve", "-input=false", "-no-color"], 128);
    let left = processes_naming(&format!("{}/", state.display()));
    assert!(left.is_empty(), "processes left: {left:?}");
    let left = in_cgroups(&["baton-cell-1-w1", "baton-cell-2-w1"]);
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    assert!(!state.exists(), "the federation's folder is gone");
}

/// Processes in a cgroup under one of `parents` (the workers' sandboxes).
fn in_cgroups(parents: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else { continue };
        if parents.iter().any(|parent| cgroups.contains(&format!("/{parent}/"))) {
            found.push(entry.file_name().to_string_lossy().to_string());
        }
    }
    found
}
