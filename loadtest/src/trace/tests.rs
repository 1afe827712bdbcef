//! The parsers against every trace in `shared/workload`, with counts computed
//! independently (a short Python script over the same files), and against broken files.

use std::path::{Path, PathBuf};

use super::*;

/// `shared/workload`, beside the checkout (CI clones it there); `BATON_WORKLOAD_DIR`
/// overrides.
pub fn workload(name: &str) -> PathBuf {
    let base = std::env::var_os("BATON_WORKLOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/workload"));
    base.join(name)
}

fn window(start_minute: u32, minutes: u32) -> Window {
    Window { start_minute, minutes }
}

#[test]
fn reads_every_2019_trace_and_agrees_with_independent_counts() {
    // (folder, functions, minutes, all calls, calls in minutes 0..30, calls in 100..160)
    let expected = [
        ("azure2019-100", 100, 480, 339_657, 19_058, 41_226),
        ("azure2019-hot-1", 1, 1440, 20_820_188, 389_808, 786_108),
        ("azure2019-hot-5", 5, 1440, 25_268_396, 483_170, 972_286),
        ("azure2019-hot-10", 10, 1440, 13_037_064, 272_540, 545_658),
        ("invitro-example", 4, 1440, 4_525, 525, 1_200),
    ];
    for (folder, functions, minutes, all, first30, mid) in expected {
        let trace = Trace::load(&workload(folder)).unwrap();
        assert_eq!(trace.format, Format::Azure2019, "{folder}");
        assert_eq!(trace.functions.len(), functions, "{folder}");
        assert_eq!(trace.minutes, minutes, "{folder}");
        assert_eq!(trace.calls_in(trace.whole()), all, "{folder}");
        assert_eq!(trace.calls_in(window(0, 30)), first30, "{folder}");
        assert_eq!(trace.calls_in(window(100, 60)), mid, "{folder}");
    }
}

#[test]
fn joins_durations_and_memory_by_header_name() {
    // azure2019-100's memory.csv puts HashFunction first; the others put it third.
    let trace = Trace::load(&workload("azure2019-100")).unwrap();
    let f = trace.functions.iter().find(|f| f.id.starts_with("17e24635362b4c18")).unwrap();
    assert_eq!(f.memory_mib, Some(10.666666666666666));
    let Arrivals::PerMinute { durations, .. } = &f.arrivals else { panic!("2019 layout") };
    assert_eq!(durations.0, [203.0, 203.0, 203.0, 296.0, 1765.0, 1765.0, 1765.0]);
    let first = &trace.functions[0];
    assert!(first.id.starts_with("b9386d10c889ce4c"));
    assert_eq!(first.calls_in(trace.whole()), 95);
}

#[test]
fn reads_the_2021_invocation_level_traces() {
    // (file, functions as app/func, calls started in each minute)
    let expected: [(&str, usize, &[u64]); 2] = [
        ("azure2021/Azure2021_30.csv", 14, &[7, 6, 16]),
        ("azure2021/Azure2021_200.csv", 31, &[42, 8, 6, 6, 7, 13, 6, 4, 6, 6, 34, 4, 7, 4, 6, 15, 3, 7, 6, 5, 4]),
    ];
    for (file, functions, per_minute) in expected {
        let trace = Trace::load(&workload(file)).unwrap();
        assert_eq!(trace.format, Format::Azure2021);
        assert_eq!(trace.functions.len(), functions, "{file}");
        assert_eq!(trace.minutes as usize, per_minute.len(), "{file}");
        for (m, &n) in per_minute.iter().enumerate() {
            assert_eq!(trace.calls_in(window(m as u32, 1)), n, "{file} minute {m}");
        }
        assert!(trace.functions.iter().all(|f| f.memory_mib.is_none()));
    }
}

#[test]
fn the_cdf_folder_is_refused_as_not_a_trace() {
    let err = Trace::load(&workload("serverlessbench-cdfs")).unwrap_err().to_string();
    assert!(err.contains("serverlessbench-cdfs") && err.contains("is not a trace"), "{err}");
}

#[test]
fn duration_percentiles_interpolate_between_levels() {
    let d = DurationPercentiles([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 100.0]);
    assert_eq!(d.at(0.0), 10.0);
    assert_eq!(d.at(0.005), 15.0);
    assert_eq!(d.at(0.50), 40.0);
    assert_eq!(d.at(0.625), 45.0);
    assert_eq!(d.at(0.995), 80.0);
    assert_eq!(d.at(1.0), 100.0);
}

#[test]
fn sampling_is_reproducible_and_keeps_trace_order() {
    let trace = Trace::load(&workload("azure2019-100")).unwrap();
    let ids = |t: &Trace| t.functions.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    let a = trace.clone().sample(10, 7);
    assert_eq!(ids(&a), ids(&trace.clone().sample(10, 7)));
    assert_ne!(ids(&a), ids(&trace.clone().sample(10, 8)));
    let order: Vec<usize> =
        a.functions.iter().map(|f| trace.functions.iter().position(|g| g.id == f.id).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(trace.clone().sample(1000, 1).functions.len(), 100);
}

#[test]
fn a_window_past_the_end_is_refused() {
    let trace = Trace::load(&workload("azure2019-100")).unwrap();
    trace.check_window(window(450, 30)).unwrap();
    let err = trace.check_window(window(470, 30)).unwrap_err().to_string();
    assert!(err.contains("--start-minute") && err.contains("480 minutes"), "{err}");
    assert!(trace.check_window(window(0, 0)).unwrap_err().to_string().contains("--minutes"));
}

fn broken(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let err = Trace::load(dir.path()).unwrap_err().to_string();
    (dir, err)
}

const INVOCATIONS: &str = "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,3,4\n";
const DURATIONS: &str = "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,\
percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,\
percentile_Average_100\no,a,f,5,7,1,9,1,2,3,4,5,6,7\n";
const MEMORY: &str =
    "HashOwner,HashApp,HashFunction,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct100\no,a,f,1,100,120\n";

#[test]
fn a_small_valid_2019_trace_reads() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("invocations.csv", INVOCATIONS), ("durations.csv", DURATIONS), ("memory.csv", MEMORY)] {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let trace = Trace::load(dir.path()).unwrap();
    assert_eq!((trace.minutes, trace.calls_in(trace.whole())), (2, 7));
}

#[test]
fn bad_files_are_refused_naming_file_line_or_column() {
    /// Files of a trace folder, and what the refusal must mention.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 7] = [
        (&[("invocations.csv", INVOCATIONS), ("durations.csv", DURATIONS)], &["memory.csv", "No such file"]),
        (
            &[
                ("invocations.csv", "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,3,x\n"),
                ("durations.csv", DURATIONS),
                ("memory.csv", MEMORY),
            ],
            &["invocations.csv:2", "\"2\"", "\"x\""],
        ),
        (
            &[
                ("invocations.csv", "HashOwner,HashApp,Function,Trigger,1\no,a,f,http,3\n"),
                ("durations.csv", DURATIONS),
                ("memory.csv", MEMORY),
            ],
            &["invocations.csv", "no column \"HashFunction\""],
        ),
        (
            &[
                ("invocations.csv", INVOCATIONS),
                ("durations.csv", "HashFunction,percentile_Average_0\nf,1\n"),
                ("memory.csv", MEMORY),
            ],
            &["durations.csv", "percentile_Average_1"],
        ),
        (
            &[
                ("invocations.csv", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,g,http,3\n"),
                ("durations.csv", DURATIONS),
                ("memory.csv", MEMORY),
            ],
            &["invocations.csv:2", "function g has no row", "durations.csv"],
        ),
        (
            &[
                ("invocations.csv", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,3\no,a,f,http,4\n"),
                ("durations.csv", DURATIONS),
                ("memory.csv", MEMORY),
            ],
            &["invocations.csv:3", "first on line 2"],
        ),
        (
            &[("invocations.csv", ""), ("durations.csv", DURATIONS), ("memory.csv", MEMORY)],
            &["invocations.csv", "empty"],
        ),
    ];
    for (files, needles) in cases {
        let (_dir, err) = broken(files);
        for needle in needles {
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}

#[test]
fn bad_2021_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    for (body, needles) in [
        ("app,func,end,duration\na,f,1,1\n", &["t.csv", "no column \"end_timestamp\""][..]),
        ("app,func,end_timestamp,duration\na,f,1,1\na,f,-3,1\n", &["t.csv:3", "end_timestamp"]),
        ("app,func,end_timestamp,duration\na,f,1\n", &["t.csv:2"]),
        ("app,func,end_timestamp,duration\n", &["t.csv", "no calls"]),
    ] {
        std::fs::write(&path, body).unwrap();
        let err = Trace::load(&path).unwrap_err().to_string();
        for needle in needles {
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
    let err = Trace::load(&dir.path().join("missing.csv")).unwrap_err().to_string();
    assert!(err.contains("missing.csv") && err.contains("No such file"), "{err}");
}
