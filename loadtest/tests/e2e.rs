//! `baton-loadtest` as a user runs it: the real binary against a real cell (control and
//! data plane, a process-runtime worker, `baton-fn-spin` sandboxes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use baton_loadtest::trace::{Trace, Window};
use baton_proto::cell::ListFunctionsRequest;
use baton_testkit::{Cluster, bin};

fn workload(name: &str) -> PathBuf {
    std::env::var_os("BATON_WORKLOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/workload"))
        .join(name)
}

fn loadtest(cluster: &Cluster, out: &Path, args: &[&str]) -> Output {
    let output = Command::new(bin("baton-loadtest"))
        .args(args)
        .args(["--url", &cluster.url(""), "--control", &format!("http://127.0.0.1:{}", cluster.control_port)])
        .arg("--out")
        .arg(out)
        // Twice the default pause for the data plane to learn of new functions: a loaded
        // test machine may be slow to deliver the routing update.
        .args(["--quiet", "--cpu-millis", "10", "--settle", "1s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "baton-loadtest {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

async fn registered(cluster: &Cluster) -> Vec<String> {
    let list = cluster.api().await.list_functions(ListFunctionsRequest {}).await.unwrap().into_inner();
    list.functions
        .into_iter()
        .map(|f| serde_json::from_str::<serde_json::Value>(&f.spec_json).unwrap()["name"].as_str().unwrap().to_string())
        .collect()
}

/// A seed whose sample of `n` functions of `azure2019-100` makes at least 150 calls in
/// `window` (most calls come from a few hot functions).
fn busy_sample(trace: &Trace, n: usize, window: Window) -> (u64, u64) {
    (1..1000)
        .map(|seed| (seed, trace.clone().sample(n, seed).calls_in(window)))
        .find(|&(_, calls)| (150..400).contains(&calls))
        .expect("a busy sample")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_slice_of_azure2019_100_against_a_cell() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("lt-trace", 200, 28000).await;
    let path = workload("azure2019-100");
    let window = Window { start_minute: 120, minutes: 2 };
    let (seed, expected_calls) = busy_sample(&Trace::load(&path).unwrap(), 40, window);
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = loadtest(
        &cluster,
        out.path(),
        &[
            "trace",
            "--trace",
            path.to_str().unwrap(),
            "--start-minute",
            "120",
            "--minutes",
            "2",
            // Two trace minutes in 32 s of wall time.
            "--time-scale",
            "0.2667",
            "--functions",
            "40",
            // Runtimes clamped to 3 s so the replay ends soon after its schedule.
            "--max-runtime-ms",
            "3000",
            "--seed",
            &seed.to_string(),
            "--execution",
            "sleep",
            // The sample's functions ask for up to 423 MiB each; the test worker has the
            // machine's memory.
            "--max-memory-mib",
            "128",
        ],
    );
    assert!(started.elapsed() >= Duration::from_secs(30), "the replay took {:?}", started.elapsed());

    let s = summary(out.path());
    let phase = &s["phases"][0];
    assert_eq!(phase["calls"], expected_calls, "{s:#}");
    assert_eq!(phase["ok"], expected_calls, "every call succeeds: {s:#}");
    assert_eq!(phase["failures"]["timeout"].as_u64().unwrap() + phase["failures"]["http_5xx"].as_u64().unwrap(), 0);
    assert!(phase["duration_s"].as_f64().unwrap() >= 28.0, "{s:#}");
    for metric in ["latency_ms", "slowdown", "scheduling_ms", "scheduling_per_function_ms"] {
        let (p50, p99) = (phase[metric]["p50"].as_f64().unwrap(), phase[metric]["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{metric}: {p50} {p99}");
    }
    // Sleeping functions: every call ran at least as long as asked, so slowdown >= 1.
    assert!(phase["slowdown"]["p50"].as_f64().unwrap() >= 1.0);
    let cold = phase["cold_start_fraction"].as_f64().unwrap();
    assert!(cold > 0.0 && cold < 1.0, "some calls, not all, start sandboxes: {cold}");

    let mut csv = csv::Reader::from_path(out.path().join("calls.csv")).unwrap();
    let headers: Vec<String> = csv.headers().unwrap().iter().map(str::to_string).collect();
    // The columns of the Dirigent loader's per-call output, and baton's own.
    let loader = "phase instance invocationID startTime requestedDuration responseTime actualDuration";
    let ours = "connectionTimeout functionTimeout cell coldStart queued";
    for column in loader.split(' ').chain(ours.split(' ')) {
        assert!(headers.iter().any(|h| h == column), "calls.csv lacks {column}: {headers:?}");
    }
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as u64, expected_calls);
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    for row in &rows {
        let requested: u64 = row[col("requestedDuration")].parse().unwrap();
        let actual: u64 = row[col("actualDuration")].parse().unwrap();
        let response: u64 = row[col("responseTime")].parse().unwrap();
        assert!(actual >= requested && response >= actual, "{row:?}");
    }
    for plot in ["latency-cdf.svg", "slowdown-cdf.svg", "scheduling-cdf.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{plot}");
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("trace") && table.contains(&expected_calls.to_string()), "{table}");
    assert!(registered(&cluster).await.is_empty(), "the run removes its functions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_and_bursts_measure_what_they_claim() {
    let mut cluster = Cluster::new("");
    cluster.start_cell().await;
    cluster.start_worker("lt-sweep", 200, 28200).await;
    let spin = ["--execution", "sleep"];

    // Cold sweep: every call finds no sandbox.
    let out = tempfile::tempdir().unwrap();
    let args = ["cold-sweep", "--rates", "5,10", "--step", "3s", "--cooldown", "3s", "--pause", "0s"];
    loadtest(&cluster, out.path(), &[&args[..], &spin[..]].concat());
    let s = summary(out.path());
    let phases = s["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{s:#}");
    for (phase, calls) in phases.iter().zip([15, 30]) {
        assert_eq!((phase["calls"].as_u64(), phase["ok"].as_u64()), (Some(calls), Some(calls)), "{s:#}");
        assert_eq!(phase["cold_start_fraction"], 1.0, "{s:#}");
    }
    assert!(out.path().join("sweep.svg").exists());
    assert!(registered(&cluster).await.is_empty());

    // Burst: N simultaneous cold starts.
    let out = tempfile::tempdir().unwrap();
    loadtest(&cluster, out.path(), &[&["burst", "--count", "8"][..], &spin[..]].concat());
    let s = summary(out.path());
    assert_eq!((s["phases"][0]["ok"].as_u64(), s["phases"][0]["cold_start_fraction"].as_f64()), (Some(8), Some(1.0)));

    // Warm sweep: pre-warmed sandboxes, no cold start once measuring; kept for the next run.
    let out = tempfile::tempdir().unwrap();
    let args = ["warm-sweep", "--rates", "20,40", "--step", "2s", "--functions", "2", "--sandboxes", "2"];
    loadtest(&cluster, out.path(), &[&args[..], &["--warmup", "2s", "--keep-functions"][..], &spin[..]].concat());
    let s = summary(out.path());
    let phases = s["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "the warm-up is not measured: {s:#}");
    for (phase, calls) in phases.iter().zip([40, 80]) {
        assert_eq!((phase["calls"].as_u64(), phase["ok"].as_u64()), (Some(calls), Some(calls)), "{s:#}");
        // "Cold" means "waited in the queue": a scheduling hiccup on a busy machine may
        // queue a call or two behind a busy sandbox; a missing warm-up would make most cold.
        assert!(phase["cold_start_fraction"].as_f64().unwrap() <= 0.05, "{s:#}");
    }
    let mut kept = registered(&cluster).await;
    kept.sort();
    assert_eq!(kept, ["lt-w-0", "lt-w-1"]);

    // Any HTTP endpoint: here the kept functions through a URL template, nothing registered.
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(bin("baton-loadtest"))
        .args(["warm-sweep", "--rates", "10", "--step", "2s", "--functions", "2", "--warmup", "0s", "--quiet"])
        .args(["--target", "http", "--url", &cluster.url("/function/{function}"), "--name-prefix", "lt"])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let s = summary(out.path());
    assert_eq!(s["phases"][0]["ok"], 20, "{s:#}");
    assert_eq!(registered(&cluster).await.len(), 2, "an http target registers and removes nothing");
}

#[test]
fn bad_input_exits_non_zero_naming_the_file_or_option() {
    let run = |args: &[&str]| {
        let out = Command::new(bin("baton-loadtest")).args(args).arg("--quiet").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let trace = workload("azure2019-100");
    let trace = trace.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 6] = [
        (&["trace", "--trace", "/nonexistent/trace"], 2, "/nonexistent/trace"),
        (&["trace", "--trace", trace, "--start-minute", "470", "--minutes", "20"], 2, "past the end"),
        (&["cold-sweep", "--rates", "0"], 2, "--rates"),
        (&["trace", "--trace", trace, "--iat", "gaussian"], 2, "--iat"),
        (&["burst", "--count", "3", "--url", "ftp://x/"], 2, "--url"),
        // Nothing listens on port 9 of this machine: the control plane cannot be reached.
        (&["burst", "--count", "1", "--control", "http://127.0.0.1:9", "--runtime", "emulated"], 1, "cannot reach"),
    ];
    for (args, code, needle) in cases {
        let (got, stderr) = run(args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr:?} should name {needle:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("invocations.csv"), "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,x\n")
        .unwrap();
    let (got, stderr) = run(&["trace", "--trace", dir.path().to_str().unwrap()]);
    assert_eq!(got, Some(2));
    assert!(stderr.contains("durations.csv"), "{stderr}");
}
