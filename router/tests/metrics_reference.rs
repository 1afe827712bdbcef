//! docs/metrics.md is the catalogs in the code, and the catalogs are every metric the code
//! exports: a metric added, renamed or dropped without its catalog entry fails here, and so
//! does a reference not regenerated (`BATON_WRITE_METRICS_DOC=1` rewrites it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use baton_service::catalog::{self, Section};

fn sections() -> Vec<Section> {
    vec![
        Section { title: "Router", exported_by: "`baton-router`", metrics: baton_router::metrics::CATALOG },
        Section {
            title: "Cell",
            exported_by: "`baton-cell` (control plane and data plane; a data plane of its own exports the data plane's)",
            metrics: baton_cell::metrics::CATALOG,
        },
        Section { title: "Worker", exported_by: "`baton-worker`", metrics: baton_worker::metrics::CATALOG },
        Section {
            title: "Shard manager",
            exported_by: "each `baton-shard-manager` replica (its own view: a follower trails its leader)",
            metrics: baton_shard_manager::metrics::CATALOG,
        },
        Section {
            title: "Shard-map followers",
            exported_by: "`baton-router` and `baton-cell` (each its own view of the map)",
            metrics: baton_shardmap::METRICS,
        },
        Section { title: "Every process serving TLS", exported_by: "every process above", metrics: catalog::SERVICE },
    ]
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    baton_testkit::files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "rs")).collect()
}

/// The metric names `text` exports: string literals given to `counter!`, `gauge!` or
/// `histogram!`, and `&str` constants naming a `baton_` metric (a name ending in `_` is a
/// prefix of something else, such as the worker's nftables tables).
fn exported(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"baton_") {
        let before = rest[..at].trim_end();
        let after = &rest[at + 1..];
        let end = after.find('"').unwrap_or(after.len());
        let name = &after[..end];
        let by_macro = ["counter!(", "gauge!(", "histogram!("].iter().any(|m| before.ends_with(m));
        let by_const = before.ends_with("&str =");
        let metric_like =
            !name.ends_with('_') && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if (by_macro || by_const) && metric_like {
            names.push(name.to_string());
        }
        rest = &after[end..];
    }
    names
}

#[test]
fn every_metric_the_code_exports_is_in_a_catalog_and_every_catalog_entry_is_exported() {
    let sections = sections();
    assert_eq!(catalog::problems(&sections), Vec::<String>::new());
    let listed: BTreeSet<String> = sections.iter().flat_map(|s| s.metrics).map(|m| m.name.to_string()).collect();
    let mut in_code = BTreeSet::new();
    for krate in ["router", "cell", "worker", "shard-manager", "service", "shardmap", "model", "image", "proto"] {
        for file in sources(&root().join(krate).join("src")) {
            in_code.extend(exported(&std::fs::read_to_string(&file).unwrap()));
        }
    }
    let undocumented: Vec<_> = in_code.difference(&listed).collect();
    assert!(undocumented.is_empty(), "exported but in no catalog: {undocumented:?}");
    let stale: Vec<_> = listed.difference(&in_code).collect();
    assert!(stale.is_empty(), "in a catalog but exported nowhere: {stale:?}");
}

#[test]
fn docs_metrics_md_is_the_catalogs() {
    let path = root().join("docs/metrics.md");
    let generated = catalog::reference(&sections());
    if std::env::var_os("BATON_WRITE_METRICS_DOC").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/metrics.md differs from the catalogs: run BATON_WRITE_METRICS_DOC=1 cargo test -p baton-router --test \
         metrics_reference"
    );
}

#[test]
fn the_scan_finds_macros_and_constants_only() {
    let text = r#"
        metrics::counter!("baton_a_total", "x" => y).increment(1);
        metrics::histogram!(
            "baton_b_seconds"
        );
        const TABLE: &str = "baton_sandboxes_";
        pub const DEPTH: &str = "baton_d_depth";
        tracing::info!("baton_c is not a metric");
    "#;
    assert_eq!(exported(text), ["baton_a_total", "baton_b_seconds", "baton_d_depth"]);
}
