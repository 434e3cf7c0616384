//! Rendering analysis results for people (a table) and for tools (JSON).

use std::fmt::Write;

use serde::Serialize;

use crate::analysis::{Keys, SourceAnalysis, WorkloadAnalysis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Serialize)]
struct Report<'a, T: Serialize> {
    workloads: &'a [T],
}

/// The JSON document other tools read: `{"workloads": [...]}`.
pub fn render_json<T: Serialize>(workloads: &[T]) -> String {
    serde_json::to_string_pretty(&Report { workloads }).expect("analysis results always serialize")
}

pub fn render_table<'a>(workloads: impl IntoIterator<Item = &'a WorkloadAnalysis>) -> String {
    let mut out = String::new();
    for analysis in workloads {
        render_workload(&mut out, analysis);
    }
    if out.is_empty() {
        out.push_str("no Deployment, StatefulSet or DaemonSet found\n");
    }
    out
}

fn render_workload(out: &mut String, analysis: &WorkloadAnalysis) {
    let status = if analysis.managed {
        "managed"
    } else {
        "not managed"
    };
    let _ = writeln!(
        out,
        "{} {}/{}: {status}",
        analysis.kind, analysis.namespace, analysis.name
    );
    for warning in &analysis.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if analysis.sources.is_empty() {
        let _ = writeln!(out, "  no ConfigMap or Secret consumed\n");
        return;
    }
    let rows: Vec<[String; 4]> = analysis.sources.iter().map(source_row).collect();
    write_table(out, ["SOURCE", "KEYS", "ROLLOUT", "REASON"], &rows);
    out.push('\n');
}

/// Writes an indented table: every column but the last padded to its widest cell, so the last
/// one (a reason, often long) is never padded and lines carry no trailing spaces.
pub(crate) fn write_table<const N: usize>(
    out: &mut String,
    header: [&str; N],
    rows: &[[String; N]],
) {
    let header = header.map(String::from);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(" ");
        for (column, cell) in row.iter().enumerate() {
            let width = if column + 1 == N { 0 } else { widths[column] };
            let _ = write!(line, " {cell:width$} ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn source_row(source: &SourceAnalysis) -> [String; 4] {
    let optional = if source.optional { " (optional)" } else { "" };
    [
        format!("{}/{}{optional}", source.kind, source.name),
        describe_keys(&source.keys),
        if source.rollout { "yes" } else { "no" }.to_string(),
        source.reason.clone(),
    ]
}

/// Keys as a table cell: `all` for every key, `none` for an empty set.
pub(crate) fn describe_keys(keys: &Keys) -> String {
    match keys {
        None => "all".to_string(),
        Some(keys) if keys.is_empty() => "none".to_string(),
        Some(keys) => keys.iter().cloned().collect::<Vec<_>>().join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::Manifests;

    fn analyses() -> Vec<WorkloadAnalysis> {
        let mut manifests = Manifests::default();
        manifests
            .add_yaml(
                "t.yaml",
                r#"
kind: Deployment
metadata: {name: web, namespace: shop, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {}
  template:
    spec:
      containers:
      - name: app
        envFrom: [{configMapRef: {name: app-env}}]
        env: [{name: L, valueFrom: {secretKeyRef: {name: db, key: password, optional: true}}}]
---
kind: StatefulSet
metadata: {name: legacy, namespace: shop}
spec: {selector: {}, template: {spec: {containers: [{name: x}]}}}
"#,
            )
            .unwrap();
        manifests.analyse()
    }

    #[test]
    fn table_lists_each_source_with_keys_decision_and_reason() {
        let table = render_table(&analyses());
        let expected = "\
Deployment shop/web: managed
  SOURCE                KEYS      ROLLOUT  REASON
  ConfigMap/app-env     all       yes      envFrom in container app: env is read once at process start
  Secret/db (optional)  password  yes      env (key password) in container app: env is read once at process start

StatefulSet shop/legacy: not managed
  no ConfigMap or Secret consumed

";
        assert_eq!(table, expected);
    }

    #[test]
    fn json_wraps_workloads() {
        let json: serde_json::Value = serde_json::from_str(&render_json(&analyses())).unwrap();
        assert_eq!(
            json["workloads"][0]["sources"][1]["keys"],
            serde_json::json!(["password"])
        );
        assert_eq!(json["workloads"][1]["managed"], serde_json::json!(false));
    }
}
