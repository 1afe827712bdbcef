//! `baton up` as the README runs it: it starts a whole federation, writes the env file;
//! sourcing that file, `echo` answers 200 through the router (with curl and with
//! `baton invoke`); Ctrl-C stops every process it started and removes its data.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_testkit::{bin, cgroup_dirs};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// `baton up` in a process group of its own. Dropped while it runs (an assertion failed),
/// it gets Ctrl-C and 30 s to stop what it started, then its whole group is killed: a
/// failed test leaves no federation running under the rest of the suite.
struct Up(Child);

impl Up {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = kill(self.pid(), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn baton_up_serves_echo_through_the_router_and_stops_cleanly() {
    up_serves_and_stops("10000", &[]);
}

/// The same with the cells' state in Redis (the test script's private server).
#[test]
fn baton_up_with_redis_serves_and_stops_cleanly() {
    let url =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    up_serves_and_stops("12000", &["--redis", &url]);
}

/// A registry password given to `baton registries login`, which no log may hold.
const REGISTRY_SECRET: &str = "registry-secret-7c1d9e";

/// Starts `baton up` on free ports with `BATON_HOME` in `home`, sandbox ports from
/// `sandbox_ports` (two cells of 1,000 each: the tests' ranges are disjoint and below the
/// kernel's ephemeral ports) and `extra` options; returns it once it wrote its env file,
/// with that file's text.
fn start_up(home: &std::path::Path, sandbox_ports: &str, extra: &[&str]) -> (Up, String) {
    let mut up = Up(Command::new(bin("baton"))
        .args(["up", "--port", "0", "--shard-manager-port", "0", "--registry-port", "0"])
        .args(["--sandbox-ports", sandbox_ports])
        .args(extra)
        .env("BATON_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap());
    let env = home.join("env");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !env.exists() {
        assert!(up.0.try_wait().unwrap().is_none(), "baton up exited early; logs in {}", home.display());
        assert!(Instant::now() < deadline, "baton up did not write {} within 90 s", env.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&env).unwrap();
    (up, text)
}

fn up_serves_and_stops(sandbox_ports: &str, extra: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let (mut up, text) = start_up(home.path(), sandbox_ports, extra);
    let env = home.path().join("env");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&env).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the env file holds a key: this user's alone");
    for line in ["export BATON_URL=http://127.0.0.1:", "export BATON_API_KEY=bk_", "export BATON_SHARD_MANAGER="] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} missing from:\n{text}");
    }

    // The README's way: source the file, call echo.
    let script = format!(
        r#"source {env} && curl -s -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $BATON_API_KEY" -d hello "$BATON_URL/function/echo""#,
        env = env.display()
    );
    let curl = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200", "{}", String::from_utf8_lossy(&curl.stderr));
    // h2c: HTTP/2 without TLS, on the same port.
    let script = format!(
        r#"source {env} && curl -s --http2-prior-knowledge -o /dev/null -w '%{{http_version}} %{{http_code}}' -H "Authorization: Bearer $BATON_API_KEY" "$BATON_URL/function/echo""#,
        env = env.display()
    );
    let h2 = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2 200", "{}", String::from_utf8_lossy(&h2.stderr));
    let script = format!("source {} && {} invoke echo -d hello", env.display(), bin("baton").display());
    let invoked = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(invoked.status.success(), "{}", String::from_utf8_lossy(&invoked.stderr));
    let echoed: serde_json::Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(echoed["body"], "hello");
    // An async call, queued by the router (in its file, or in Redis with --redis) and run.
    let script = format!(
        "source {env} && id=$({baton} invoke echo --async -d later) && for i in $(seq 200); do \
         {baton} calls get $id -o json | grep -q '\"succeeded\"' && exit 0; sleep 0.05; done; exit 1",
        env = env.display(),
        baton = bin("baton").display()
    );
    let queued = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(queued.status.success(), "the async call did not succeed: {}", String::from_utf8_lossy(&queued.stderr));
    let script = format!("source {} && {} functions list -o json", env.display(), bin("baton").display());
    let listed = Command::new("bash").args(["-c", &script]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> =
        listed["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "spin"]);
    // The README's container image: deployed from the local registry and invoked.
    assert!(text.contains("export BATON_SAMPLE_IMAGE=127.0.0.1:"), "no sample image in:\n{text}");
    let script = format!(
        r#"source {env} && export PATH={bin_dir}:$PATH && baton functions deploy hello --image $BATON_SAMPLE_IMAGE && baton invoke hello -d '{{"x":1}}'"#,
        env = env.display(),
        bin_dir = bin("baton").parent().unwrap().display()
    );
    let image = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(image.status.success(), "{}", String::from_utf8_lossy(&image.stderr));
    let stdout = String::from_utf8_lossy(&image.stdout);
    assert!(stdout.contains(r#""body":"{\"x\":1}""#), "{stdout}");
    // Registry credentials go in (baton up gives the shard manager a key to seal them) and
    // never come back out, nor into any log (checked after the stop).
    let script = format!(
        r#"source {env} && echo {REGISTRY_SECRET} | {baton} registries login ghcr.io -u bot && {baton} registries list -o json"#,
        env = env.display(),
        baton = bin("baton").display()
    );
    let login = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let listed = String::from_utf8_lossy(&login.stdout);
    assert!(listed.contains("ghcr.io") && !listed.contains(REGISTRY_SECRET), "{listed}");
    // With --redis the cells' records are in that Redis server: each cell's functions hash.
    if let Some(url) = extra.iter().position(|a| *a == "--redis").map(|i| extra[i + 1]) {
        let mut redis = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut stored: Vec<String> = Vec::new();
        for cell in ["cell-1", "cell-2"] {
            let names: Vec<String> =
                redis::cmd("HKEYS").arg(format!("baton:cell:{cell}:functions")).query(&mut redis).unwrap();
            stored.extend(names);
        }
        stored.sort();
        // A function the rebalancer moved stays on its old cell too, until its calls there
        // have had time to finish.
        stored.dedup();
        assert_eq!(stored, ["dev.echo", "dev.hello", "dev.spin"], "the functions' records in Redis");
    }
    // The sandboxes that served echo live in the workers' cgroups.
    let cgroups: Vec<std::path::PathBuf> =
        ["cell-1", "cell-2"].iter().flat_map(|id| cgroup_dirs(&format!("baton-up-{}-{id}", up.0.id()))).collect();
    let sandbox_cgroups = |dirs: &[std::path::PathBuf]| -> usize {
        dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten().filter(|e| e.path().is_dir()).count()
    };
    assert!(sandbox_cgroups(&cgroups) > 0, "no sandbox cgroup under {cgroups:?} while echo runs");
    // And run as the unprivileged sandbox user, never as root.
    let sandbox_pids: Vec<String> = cgroups
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cgroup.procs")).ok())
        .flat_map(|procs| procs.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    // (Each cgroup also holds the worker's small holder process, the pid namespace's
    // parent: the function is the one running a sample's program.)
    let functions: Vec<&String> = sandbox_pids
        .iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("baton-fn-"))
        })
        .collect();
    assert!(!functions.is_empty(), "no function process among {sandbox_pids:?}");
    for pid in functions {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
        assert!(uid.is_some_and(|u| u != "0"), "function {pid} runs as uid {uid:?}");
    }

    // Ctrl-C: everything stops, nothing is left running, the data folder is gone.
    kill(up.pid(), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "baton up did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "baton up exited with {status}");
    let home_path = home.path().display().to_string();
    assert_eq!(processes_mentioning(&home_path), Vec::<String>::new(), "processes left behind");
    assert!(!home.path().join("run").exists(), "the data folder is removed");
    // The key was used for calls and deployments: no process logged it.
    let key = text.lines().find_map(|l| l.strip_prefix("export BATON_API_KEY=")).unwrap();
    for log in std::fs::read_dir(home.path().join("logs")).unwrap() {
        let log = log.unwrap().path();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains(key), "{} holds the API key", log.display());
        assert!(!text.contains(REGISTRY_SECRET), "{} holds a registry password", log.display());
    }
    // No sandbox is left: its cgroup would hold it, and the workers' cgroups are gone.
    let left: Vec<&std::path::PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

#[test]
fn baton_up_refuses_bad_options_with_a_clear_message() {
    let out = Command::new(bin("baton")).args(["up", "--cells", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cells"));
    let out = Command::new(bin("baton")).args(["invoke", "echo"]).env_remove("BATON_API_KEY").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BATON_API_KEY"));
}

#[test]
fn baton_up_names_the_process_that_failed_and_why_and_leaves_nothing_running() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on: the cell cannot open its store and exits.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://127.0.0.1:{}", refused.local_addr().unwrap().port());
    drop(refused);
    let up = Command::new(bin("baton"))
        .args(["up", "--port", "0", "--shard-manager-port", "0", "--sandbox-ports", "14000", "--cells", "1"])
        .args(["--redis", &redis])
        .env("BATON_HOME", home.path())
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(up.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(stderr.contains("cell-1 exited"), "which process: {stderr}");
    assert!(stderr.contains("Error: opening the cell's store") && stderr.contains(&redis), "why: {stderr}");
    assert!(!stderr.contains("backtrace"), "the error, not a backtrace: {stderr}");
    let home_path = home.path().display().to_string();
    assert_eq!(processes_mentioning(&home_path), Vec::<String>::new(), "processes left behind");
}

/// `baton up --observe` with a real Prometheus: every dashboard panel's query and every
/// recording rule returns data under load, and killing a cell fires `BatonCellDown` within
/// its `for` plus a scrape and an evaluation or two.
#[test]
fn baton_up_observe_feeds_every_panel_and_rule_and_a_killed_cell_fires_its_alert() {
    let home = tempfile::tempdir().unwrap();
    let (mut up, text) = start_up(home.path(), "6000", &["--observe", "--prometheus-port", "0"]);
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let (prometheus, router, key) =
        (var("BATON_PROMETHEUS_URL").to_string(), var("BATON_URL").to_string(), var("BATON_API_KEY").to_string());

    // Load: echo called without a pause for the rest of the test, one call in five async.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url, queued) =
            (stop.clone(), format!("{router}/function/echo"), format!("{router}/async-function/echo"));
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            for i in 0u64.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let url = if i % 5 == 4 { &queued } else { &url };
                let _ = client.post(url).bearer_auth(&key).body("load").send();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let query = |q: &str| -> serde_json::Value {
        let response = reqwest::blocking::Client::new()
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .unwrap();
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["status"], "success", "{q}: {body}");
        body["data"]["result"].clone()
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let mut queries = baton_testkit::dashboard_queries();
    let rules = std::fs::read_to_string(root.join("infra/prometheus/rules/recording.yml")).unwrap();
    for record in rules.lines().filter_map(|l| l.trim().strip_prefix("- record: ")) {
        queries.push((format!("recording rule {record}"), record.to_string()));
    }
    assert!(queries.len() >= 80, "{}", queries.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let empty: Vec<&String> = queries
            .iter()
            .filter(|(_, q)| query(q).as_array().is_none_or(|r| r.is_empty()))
            .map(|(what, _)| what)
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no data within 90 s for: {empty:?}");
        std::thread::sleep(Duration::from_secs(2));
    }

    // SIGKILL one cell: Prometheus sees it down at its next scrape, the alert is pending at
    // the next evaluation and fires one minute (`for`) later.
    let cell = processes_mentioning("cell-2.toml");
    let pid: i32 = cell.first().and_then(|p| p.split(':').next()).and_then(|p| p.parse().ok()).expect("cell-2 runs");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let fired = loop {
        let alerts =
            reqwest::blocking::get(format!("{prometheus}/api/v1/alerts")).unwrap().json::<serde_json::Value>().unwrap();
        let firing = alerts["data"]["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "BatonCellDown" && a["labels"]["cell"] == "cell-2" && a["state"] == "firing"
        });
        if firing {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "BatonCellDown did not fire within 120 s: {alerts}");
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("BatonCellDown fired {fired:?} after the kill");
    // `for` (60 s) + a scrape (5 s) + two evaluations (5 s each) + a second of polling.
    assert!(fired <= Duration::from_secs(76), "BatonCellDown fired {fired:?} after the kill");
    let others = query(r#"ALERTS{alertname="BatonCellDown",alertstate="firing",cell!="cell-2"}"#);
    assert_eq!(others, serde_json::json!([]), "only the killed cell is down");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    kill(up.pid(), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "baton up did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let home_path = home.path().display().to_string();
    assert_eq!(
        processes_mentioning(&home_path),
        Vec::<String>::new(),
        "processes left behind (prometheus among them?)"
    );
}
