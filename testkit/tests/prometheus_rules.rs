//! The shipped Prometheus configuration (infra/prometheus) against the real `promtool`
//! (Debian's `prometheus` package; scripts/test.sh installs it): the config and its rules
//! load, and every alert's unit tests pass (each alert fires when it should, and only
//! then). Every alert has a test, and a summary, a description and a runbook.

use std::path::{Path, PathBuf};
use std::process::Command;

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("infra/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(infra())
        .output()
        .expect("promtool runs (Debian's prometheus package; scripts/test.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn the_config_and_rules_load_and_every_alert_passes_its_unit_tests() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "rules/recording.yml", "rules/alerts.yml"]);
    let tested = promtool(&["test", "rules", "tests/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The values of every line `key: value` (after indentation, dashes removed) in `text`.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.trim_start().trim_start_matches("- ").trim_start())
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .collect()
}

#[test]
fn every_rule_reads_metrics_that_exist() {
    let documented = std::fs::read_to_string(infra().join("../../docs/metrics.md")).unwrap();
    for file in ["rules/recording.yml", "rules/alerts.yml"] {
        let text = std::fs::read_to_string(infra().join(file)).unwrap();
        for expr in values(&text, "expr") {
            for name in baton_testkit::metric_names(expr) {
                assert!(documented.contains(&format!("`{name}`")), "{file} reads {name}, which no process exports");
            }
        }
    }
}

#[test]
fn every_alert_has_a_runbook_and_a_unit_test() {
    let alerts = std::fs::read_to_string(infra().join("rules/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(infra().join("tests/alerts_test.yml")).unwrap();
    let names = values(&alerts, "alert");
    assert!(names.len() >= 12, "{names:?}");
    let tested = values(&tests, "alertname");
    for name in &names {
        assert!(tested.contains(name), "{name} has no unit test in tests/alerts_test.yml");
    }
    for key in ["summary", "description", "runbook"] {
        assert_eq!(values(&alerts, key).len(), names.len(), "every alert has a {key}");
    }
}
