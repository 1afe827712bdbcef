//! One catalog of every metric a process may export: its name, kind, labels (each with its
//! bounded set of values) and help text. The same entries give the `# HELP` lines of
//! `/metrics` ([`describe`]) and the reference in docs/metrics.md ([`reference`]), and a
//! test holds both to the code, so neither can drift from what is exported.

use std::fmt::Write as _;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (its name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (names ending in `_seconds` take
    /// [`crate::admin::LATENCY_BUCKETS`], in `_commands` [`crate::admin::COUNT_BUCKETS`]).
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name, `baton_<component>_…`.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its labels, each `name: value, value, …` (or `name: what it holds` when the values
    /// are another bounded set, described there).
    pub labels: &'static [&'static str],
    /// What it measures (one sentence, the `# HELP` text).
    pub help: &'static str,
}

/// A process's metrics under one heading of the reference.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The heading (`Router`, `Cell`, …).
    pub title: &'static str,
    /// Which processes export them.
    pub exported_by: &'static str,
    /// The metrics.
    pub metrics: &'static [Metric],
}

/// The metrics every process that serves TLS exports (`baton_service::tls`).
pub const SERVICE: &[Metric] = &[Metric {
    name: "baton_tls_refused_total",
    kind: Kind::Counter,
    labels: &[
        "server: the listener's name (one per listener of the process, such as Worker or CellControl)",
        "reason: busy, handshake, role",
    ],
    help: "Connections refused before a request: too many handshakes at once, a failed handshake, or a caller of the wrong role.",
}];

/// Registers the help text of `metrics` with the installed recorder, so `/metrics` carries
/// a `# HELP` line for each. Call once the recorder is installed
/// ([`crate::admin::metrics_handle`]); calling it again is harmless.
pub fn describe(metrics: &[Metric]) {
    for m in metrics {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Installs the process-wide recorder (if not yet), describes `catalogs` and [`SERVICE`]
/// with it and starts their counters and histograms at zero: what a process calls before
/// it serves `/metrics`.
pub fn install(catalogs: &[&[Metric]]) {
    crate::admin::metrics_handle();
    for catalog in catalogs.iter().chain([&SERVICE]) {
        describe(catalog);
        initialize(catalog);
    }
}

/// Makes every series of `metrics`' counters and histograms exist before anything happens,
/// at zero, for every combination of their labels' values: a rate or a ratio over them
/// reads 0 rather than nothing (an alert on errors works before the first error), and a
/// dashboard panel shows a flat line rather than "no data". Metrics with a label whose
/// values are not a fixed list (a listener's name) start with their first event. Gauges
/// are set by their owners.
pub fn initialize(metrics: &[Metric]) {
    for m in metrics.iter().filter(|m| m.kind != Kind::Gauge) {
        let Some(series) = label_combinations(m.labels) else { continue };
        for labels in series {
            let labels: Vec<metrics::Label> = labels.into_iter().map(|(k, v)| metrics::Label::new(k, v)).collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Histogram => drop(metrics::histogram!(m.name, labels)),
                Kind::Gauge => {}
            }
        }
    }
}

/// Every combination of the values of `labels` (each `name: a, b, c`), or `None` when a
/// label's values are not a list of names. Pure.
pub fn label_combinations(labels: &[&str]) -> Option<Vec<Vec<(String, String)>>> {
    let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for label in labels {
        let (name, values) = label.split_once(": ")?;
        let values: Vec<&str> = values.split(", ").collect();
        let is_name =
            |v: &&str| !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !values.iter().all(is_name) {
            return None;
        }
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((name.to_string(), v.to_string()));
                    next
                })
            })
            .collect();
    }
    Some(combinations)
}

/// The reference (docs/metrics.md) of `sections`, in Markdown. Pure.
pub fn reference(sections: &[Section]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Metrics reference\n\n\
         Every metric a baton process exports on its admin port (`/metrics`, Prometheus text). \
         Generated from the catalogs in the code (`baton_service::catalog`): \
         `BATON_WRITE_METRICS_DOC=1 cargo test -p baton-router --test metrics_reference` rewrites \
         this file, and the same test fails when it differs from the code.\n\n\
         No label holds a function, tenant, sandbox or node ID: every label's values are one of \
         the fixed sets listed, so the number of series of a process is bounded by this page. \
         Histograms of `_seconds` have buckets from 100 µs to 60 s \
         (`baton_service::admin::LATENCY_BUCKETS`); those of `_commands` from 1 to 1,024."
    );
    let total: usize = sections.iter().map(|sec| sec.metrics.len()).sum();
    let _ = writeln!(s, "\n{total} metrics in {} sections.", sections.len());
    for section in sections {
        let _ = writeln!(s, "\n## {}\n\nExported by {}.\n", section.title, section.exported_by);
        let _ = writeln!(s, "| metric | kind | labels | what |\n|---|---|---|---|");
        for m in section.metrics {
            let labels = if m.labels.is_empty() {
                "—".to_string()
            } else {
                m.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join("<br>")
            };
            let _ = writeln!(s, "| `{}` | {} | {labels} | {} |", m.name, m.kind.name(), m.help);
        }
    }
    s
}

/// What is wrong with `sections` as a catalog: names without the `baton_` prefix, counters
/// not ending in `_total`, names given twice. Pure; empty when all is well.
pub fn problems(sections: &[Section]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for m in sections.iter().flat_map(|sec| sec.metrics) {
        if !m.name.starts_with("baton_") {
            found.push(format!("{}: not a baton_ name", m.name));
        }
        if (m.kind == Kind::Counter) != m.name.ends_with("_total") {
            found.push(format!("{}: counters, and only counters, end in _total", m.name));
        }
        if !seen.insert(m.name) {
            found.push(format!("{}: listed twice", m.name));
        }
        if m.help.is_empty() || m.help.contains('|') || m.help.contains('\n') {
            found.push(format!("{}: help must be one line without `|`", m.name));
        }
        if m.labels.iter().any(|l| l.contains('|') || !l.contains(": ")) {
            found.push(format!("{}: a label is `name: values` without `|`", m.name));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[Metric] = &[
        Metric { name: "baton_x_calls_total", kind: Kind::Counter, labels: &["outcome: ok, error"], help: "Calls." },
        Metric { name: "baton_x_depth", kind: Kind::Gauge, labels: &[], help: "Depth." },
    ];

    #[test]
    fn the_reference_lists_each_metric_with_its_kind_and_labels() {
        let text = reference(&[Section { title: "X", exported_by: "`baton-x`", metrics: A }]);
        assert!(text.contains("| `baton_x_calls_total` | counter | `outcome: ok, error` | Calls. |"), "{text}");
        assert!(text.contains("| `baton_x_depth` | gauge | — | Depth. |"), "{text}");
        assert!(text.contains("2 metrics in 1 sections"), "{text}");
    }

    #[test]
    fn every_combination_of_listed_label_values_and_none_for_open_ones() {
        let pairs = |c: &[Vec<(String, String)>]| -> Vec<String> {
            c.iter().map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")).collect()
        };
        assert_eq!(pairs(&label_combinations(&[]).unwrap()), [""], "no label: one series");
        let two = label_combinations(&["runtime: process, emulated", "outcome: ok, os_error"]).unwrap();
        assert_eq!(
            pairs(&two),
            [
                "runtime=process,outcome=ok",
                "runtime=process,outcome=os_error",
                "runtime=emulated,outcome=ok",
                "runtime=emulated,outcome=os_error"
            ]
        );
        assert!(label_combinations(&["server: the listener's name", "reason: busy"]).is_none());
        assert!(label_combinations(&["outcome"]).is_none());
    }

    #[test]
    fn a_catalog_is_held_to_prometheus_naming() {
        assert!(problems(&[Section { title: "X", exported_by: "", metrics: A }]).is_empty());
        const BAD: &[Metric] = &[
            Metric { name: "x_calls", kind: Kind::Counter, labels: &["outcome"], help: "a|b" },
            Metric { name: "baton_x_depth_total", kind: Kind::Gauge, labels: &[], help: "Depth." },
            Metric { name: "baton_x_depth_total", kind: Kind::Gauge, labels: &[], help: "Depth." },
        ];
        let found = problems(&[Section { title: "X", exported_by: "", metrics: BAD }]);
        assert_eq!(found.len(), 7, "{found:?}");
    }
}
