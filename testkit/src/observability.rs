//! The shipped dashboards and rules as tests read them (infra/grafana, infra/prometheus).

use std::path::PathBuf;

use serde_json::Value;

fn infra() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("infra")
}

/// Every dashboard of infra/grafana/dashboards: its path and its JSON, by path.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = infra().join("grafana/dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("infra/grafana/dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.display().to_string(), serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel of a dashboard, rows' nested ones included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// A panel query as Prometheus receives it: Grafana's variables given values (every
/// region, cell, instance and tenant; a one-minute rate interval).
pub fn promql_of(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$region", ".*")
        .replace("$cell", ".*")
        .replace("$instance", ".*")
        .replace("$tenant", ".*")
}

/// Every panel query of every dashboard, as PromQL ([`promql_of`]), with where it stands
/// (`dashboard: panel`).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for (_, board) in dashboards() {
        for panel in panels(&board) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = promql_of(target["expr"].as_str().unwrap_or_default());
                queries.push((format!("{}: {}", board["title"], panel["title"]), expr));
            }
        }
    }
    queries
}

/// The `baton_…` metric names a PromQL expression reads, without the `_bucket`, `_count`
/// and `_sum` a histogram's series add (recording rules' `baton:…` names are not metrics).
pub fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (at, _) in expr.match_indices("baton_") {
        if at > 0 && expr[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}
