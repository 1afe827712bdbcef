//! `baton up --observe`: a Prometheus (Debian's `prometheus` package) scraping every process
//! of the local federation, with the rules and alerts baton ships (infra/prometheus, built
//! into this binary), so the dashboards of infra/grafana have data to show.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Recording rules, as shipped.
const RECORDING: &str = include_str!("../../infra/prometheus/rules/recording.yml");
/// Alerts, as shipped.
const ALERTS: &str = include_str!("../../infra/prometheus/rules/alerts.yml");
/// How often the local Prometheus scrapes and evaluates: short, so a local federation
/// shows on the dashboards within seconds.
pub const INTERVAL: &str = "5s";

/// One process to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `baton-router`, `baton-cell`, `baton-worker` or `baton-shard-manager`: the job names
    /// of infra/prometheus/prometheus.yml.
    pub job: &'static str,
    /// Its admin address (`/metrics`).
    pub address: String,
    /// The cell it belongs to (cells and their workers).
    pub cell: Option<String>,
}

/// The Prometheus program, looked up in `PATH`.
pub const PROGRAM: &str = "prometheus";

/// Whether [`PROGRAM`] runs here, as `baton up` checks its other programs.
pub fn available() -> Result<(), String> {
    match std::process::Command::new(PROGRAM).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => {
            Err("prometheus does not run here: install Debian's prometheus package (apt-get install prometheus)".into())
        }
    }
}

/// The file-based discovery file of `job`'s targets (Prometheus's JSON format), every
/// target in region `local`. Pure.
pub fn targets_json(targets: &[Target], job: &str) -> String {
    let entries: Vec<serde_json::Value> = targets
        .iter()
        .filter(|t| t.job == job)
        .map(|t| {
            let mut labels = serde_json::Map::new();
            labels.insert("region".into(), "local".into());
            if let Some(cell) = &t.cell {
                labels.insert("cell".into(), cell.clone().into());
            }
            serde_json::json!({"targets": [t.address], "labels": labels})
        })
        .collect();
    serde_json::to_string_pretty(&entries).expect("JSON values serialize")
}

/// The configuration: the shipped jobs and rules, every target from `targets/`. Pure.
pub fn config() -> String {
    let mut s = format!(
        "# Written by baton up --observe: the jobs and rules of infra/prometheus.\nglobal:\n  scrape_interval: \
         {INTERVAL}\n  evaluation_interval: {INTERVAL}\nrule_files:\n  - rules/recording.yml\n  - rules/alerts.yml\n\
         scrape_configs:\n"
    );
    for (job, file) in JOBS {
        let _ = writeln!(s, "  - job_name: {job}\n    file_sd_configs:\n      - files: [targets/{file}.json]");
    }
    s
}

/// Job names and their targets' file names.
const JOBS: [(&str, &str); 4] = [
    ("baton-router", "routers"),
    ("baton-cell", "cells"),
    ("baton-worker", "workers"),
    ("baton-shard-manager", "shard-managers"),
];

/// Writes the configuration, rules and targets under `dir`; returns the config's path.
pub fn write(dir: &Path, targets: &[Target]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("rules"))?;
    std::fs::create_dir_all(dir.join("targets"))?;
    std::fs::write(dir.join("rules/recording.yml"), RECORDING)?;
    std::fs::write(dir.join("rules/alerts.yml"), ALERTS)?;
    for (job, file) in JOBS {
        std::fs::write(dir.join(format!("targets/{file}.json")), targets_json(targets, job))?;
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_carry_region_and_cell_and_each_job_gets_its_own() {
        let targets = vec![
            Target { job: "baton-cell", address: "127.0.0.1:1".into(), cell: Some("cell-1".into()) },
            Target { job: "baton-router", address: "127.0.0.1:2".into(), cell: None },
        ];
        let cells: serde_json::Value = serde_json::from_str(&targets_json(&targets, "baton-cell")).unwrap();
        assert_eq!(
            cells,
            serde_json::json!([{"targets": ["127.0.0.1:1"], "labels": {"region": "local", "cell": "cell-1"}}])
        );
        let routers: serde_json::Value = serde_json::from_str(&targets_json(&targets, "baton-router")).unwrap();
        assert_eq!(routers[0]["labels"], serde_json::json!({"region": "local"}));
        assert_eq!(targets_json(&targets, "baton-worker"), "[]");
        let config = config();
        for (job, file) in JOBS {
            assert!(
                config
                    .contains(&format!("job_name: {job}\n    file_sd_configs:\n      - files: [targets/{file}.json]"))
            );
        }
    }
}
