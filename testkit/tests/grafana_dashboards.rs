//! The shipped Grafana dashboards (infra/grafana): what `dashboards.py` writes with
//! Grafana's Foundation SDK and loads back into Grafana's model unchanged (checked by the
//! script itself, in the virtualenv scripts/test.sh makes), reading only the
//! `${datasource}` variable's data source, and every query valid PromQL (`promtool`) over
//! metrics that exist (docs/metrics.md, itself held to the code).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use baton_testkit::{dashboards, metric_names, panels, promql_of};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn the_dashboards_are_what_the_script_writes_and_load_into_grafanas_model() {
    let python = std::env::var("BATON_TEST_PYTHON").expect(
        "BATON_TEST_PYTHON is not set: run through scripts/test.sh, which makes a virtualenv with \
         grafana-foundation-sdk",
    );
    let output = Command::new(python).arg(root().join("infra/grafana/dashboards.py")).arg("--check").output().unwrap();
    assert!(
        output.status.success(),
        "dashboards.py --check: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_panel_reads_the_datasource_variable_and_every_query_is_promql_over_known_metrics() {
    let documented = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let boards = dashboards();
    assert!(boards.len() >= 5, "{boards:?}");
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let mut count = 0;
    for (file, board) in &boards {
        let variables = board["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"),
            "{file}: no datasource variable"
        );
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            assert_eq!(variable["datasource"]["uid"], "${datasource}", "{file}: variable {}", variable["name"]);
        }
        for panel in panels(board).into_iter().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{file}: {title}");
            let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
            for target in targets.unwrap_or_else(|| panic!("{file}: {title} has no query")) {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "{file}: {title} has an empty query");
                for name in metric_names(expr) {
                    assert!(
                        documented.contains(&format!("`{name}`")),
                        "{file}: {title} reads {name}, which no process exports"
                    );
                }
                rules.push_str(&format!(
                    "      - record: dashboard_query_{count}\n        expr: {}\n",
                    serde_json::to_string(&promql_of(expr)).unwrap()
                ));
                count += 1;
            }
        }
    }
    // promtool parses each query as a recording rule's expression.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.yml");
    std::fs::write(&path, &rules).unwrap();
    let output = Command::new("promtool").args(["check", "rules"]).arg(&path).output().expect("promtool runs");
    assert!(
        output.status.success(),
        "a dashboard query is not PromQL: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(count >= 60, "{count} queries");
}

#[test]
fn metric_names_are_read_from_queries() {
    let expr =
        r#"histogram_quantile(0.99, sum by (le) (rate(baton_cell_queue_seconds_bucket{x="1"}[5m]))) / baton:cell_load"#;
    assert_eq!(metric_names(expr), BTreeSet::from(["baton_cell_queue_seconds".to_string()]));
}
