//! Every `baton` subcommand against a running federation (a shard manager, two cells and a
//! router, real processes): tables for people, JSON with `-o json`, and errors as one line
//! on standard error with a non-zero exit.

use std::process::Command;

use baton_testkit::{Federation, FederationApi, bin, echo_spec};
use serde_json::{Value, json};

/// What one run of `baton` printed, and whether it succeeded.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `baton args…` against the federation (and the router, once there is one).
fn baton(federation: &Federation, router: Option<(&str, &str)>, args: &[&str]) -> Run {
    let mut command = Command::new(bin("baton"));
    command.args(args).env("BATON_SHARD_MANAGER", federation.manager_url().split(',').next().unwrap());
    if let Some((url, key)) = router {
        command.env("BATON_URL", url).env("BATON_API_KEY", key);
    }
    let out = command.output().unwrap();
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    if !run.ok {
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "an error is one line: {:?}", run.stderr);
    }
    run
}

fn ok(run: Run, what: &str) -> String {
    assert!(run.ok, "{what}: {}", run.stderr);
    run.stdout
}

fn json_of(run: Run, what: &str) -> Value {
    let out = ok(run, what);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_running_federation() {
    let mut federation = Federation::start(2, 30200, "3s").await;
    let f = &federation;

    // Tenants and keys, through the shard manager.
    assert_eq!(
        ok(
            baton(
                f,
                None,
                &["tenants", "create", "acme", "--max-functions", "1", "--executables", "--max-sandboxes", "500"]
            ),
            "create"
        ),
        "tenant acme ready\n"
    );
    let table = ok(baton(f, None, &["tenants", "list"]), "tenants list");
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["TENANT", "REGION", "FUNCTIONS", "LIMIT", "EXECUTABLES", "SANDBOXES", "RESERVED_CPU", "RESERVED_MIB"]
    );
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["acme", "local", "0", "1", "allowed", "0/500", "0/16000", "0/32768"]
    );
    let tenants = json_of(baton(f, None, &["tenants", "list", "-o", "json"]), "tenants list -o json");
    assert_eq!(tenants["tenants"][0]["max_functions"], 1);
    let created = ok(baton(f, None, &["keys", "create", "acme"]), "keys create");
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{created}"))
    };
    let (key, key_id) = (field("key:"), field("key_id:"));
    let keys = json_of(baton(f, None, &["keys", "list", "--tenant", "acme", "-o", "json"]), "keys list");
    assert_eq!(keys["keys"], json!([{"key_id": key_id, "tenant": "acme"}]));
    let table = ok(baton(f, None, &["keys", "list"]), "keys list");
    let rows: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(rows, [vec!["KEY ID", "TENANT"], vec![key_id.as_str(), "acme"]], "{table}");
    let unknown = baton(f, None, &["keys", "list", "--tenant", "nobody"]);
    assert!(!unknown.ok && unknown.stderr.contains("tenant nobody does not exist"), "{}", unknown.stderr);

    // Cells.
    let cells = json_of(baton(f, None, &["cells", "list", "-o", "json"]), "cells list");
    let states: Vec<&str> = cells["cells"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["active", "active"]);
    assert!(ok(baton(f, None, &["cells", "list"]), "cells list").starts_with("CELL"));
    assert_eq!(ok(baton(f, None, &["cells", "drain", "cell-2"]), "drain"), "cell cell-2 is draining\n");
    assert_eq!(ok(baton(f, None, &["cells", "fill", "cell-2"]), "fill"), "cell cell-2 is active\n");

    // Functions, through a router.
    let r = federation.start_router(None, &key).await;
    let url = federation.routers[r].url("");
    let f = &federation;
    let router = Some((url.as_str(), key.as_str()));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("echo.json");
    std::fs::write(&spec, echo_spec("echo", json!({})).to_string()).unwrap();
    let deployed = json_of(baton(f, router, &["functions", "deploy", spec.to_str().unwrap()]), "deploy");
    let owner = deployed["cell"].as_str().unwrap().to_string();
    let table = ok(baton(f, router, &["functions", "list"]), "functions list");
    assert!(table.starts_with("NAME") && table.lines().nth(1).unwrap().starts_with("echo"), "{table}");
    let table = ok(baton(f, router, &["functions", "get", "echo"]), "functions get");
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "CELL", "GENERATION", "REGION", "RUNTIME", "RUNS"], "{table}");
    assert_eq!(rows[1][..5], ["echo", owner.as_str(), "1", "local", "process"], "{table}");
    assert!(rows[1][5].ends_with("baton-fn-echo") && rows.len() == 2, "{table}");
    let got = json_of(baton(f, router, &["functions", "get", "echo", "-o", "json"]), "functions get");
    assert_eq!((got["name"].as_str(), got["cell"].as_str()), (Some("echo"), Some(owner.as_str())));
    assert!(got["spec"]["executable"].as_str().unwrap().ends_with("baton-fn-echo"));
    let invoked = (0..100)
        .map(|_| baton(f, router, &["invoke", "echo", "-d", "hello"]))
        .find(|run| run.ok)
        .expect("echo answered");
    assert!(invoked.stdout.contains("hello"), "{}", invoked.stdout);

    // An async call: its ID, then how it went; and the function's (empty) dead letters.
    let id = ok(baton(f, router, &["invoke", "echo", "--async", "-d", "later"]), "invoke --async");
    let id = id.trim();
    assert!(!id.is_empty() && !id.contains(' '), "{id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let call = loop {
        let call = json_of(baton(f, router, &["calls", "get", id, "-o", "json"]), "calls get");
        if call["state"] == "succeeded" {
            break call;
        }
        assert!(std::time::Instant::now() < deadline, "{call}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!((call["attempts"].as_u64(), call["result"]["status"].as_u64()), (Some(1), Some(200)), "{call}");
    let table = ok(baton(f, router, &["calls", "get", id]), "calls get");
    assert!(table.starts_with("CALL") && table.contains("succeeded"), "{table}");
    let missing = baton(f, router, &["calls", "get", "no-such-call"]);
    assert!(!missing.ok && missing.stderr.contains("404"), "{}", missing.stderr);
    let letters = json_of(baton(f, router, &["dead-letters", "list", "echo", "-o", "json"]), "dead-letters list");
    assert_eq!(letters["dead_letters"], json!([]));
    let redriven = ok(baton(f, router, &["dead-letters", "redrive", "echo"]), "dead-letters redrive");
    assert_eq!(redriven, "0 dead letters of echo queued again\n");
    let purged = ok(baton(f, router, &["dead-letters", "purge", "echo"]), "dead-letters purge");
    assert_eq!(purged, "0 dead letters of echo deleted\n");

    // The tenant's limit of one, through the router: 409, one line.
    let second = dir.path().join("other.json");
    std::fs::write(&second, echo_spec("other", json!({})).to_string()).unwrap();
    let refused = baton(f, router, &["functions", "deploy", second.to_str().unwrap()]);
    assert!(
        !refused.ok && refused.stderr.contains("409") && refused.stderr.contains("over its limit of 1"),
        "{}",
        refused.stderr
    );

    // Move, replicas.
    let target = if owner == "cell-1" { "cell-2" } else { "cell-1" };
    let moved = ok(baton(f, None, &["move", "echo", "--tenant", "acme", "--to", target]), "move");
    assert_eq!(moved, format!("echo is on {target} (generation 2)\n"));
    assert!(ok(baton(f, None, &["replicas", "status"]), "replicas status").contains("leader"));

    // Delete, then the function is gone; revoke, then the key is.
    assert_eq!(ok(baton(f, router, &["functions", "delete", "echo"]), "delete"), "deleted echo\n");
    let gone = baton(f, router, &["functions", "get", "echo"]);
    assert!(!gone.ok && gone.stderr.contains("404"), "{}", gone.stderr);
    assert!(ok(baton(f, None, &["keys", "revoke", &key_id]), "revoke").contains("revoked"));
    let keys = json_of(baton(f, None, &["keys", "list", "-o", "json"]), "keys list after revoke");
    assert_eq!(keys["keys"], json!([]));
}
