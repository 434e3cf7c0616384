//! Helpers shared by the unit tests of the pure modules.

use std::collections::BTreeMap;

use crate::analysis::{
    analyse_with, AnnotationDialects, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadInput,
    WorkloadKind,
};

pub fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Analyses the Deployment `shop/web` with these annotations and this pod template (YAML).
pub fn analyse_deployment(
    pairs: &[(&str, &str)],
    template_yaml: &str,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    analyse_deployment_with(pairs, template_yaml, AnnotationDialects::default(), known)
}

/// [`analyse_deployment`], honouring `dialects` besides envroll's own annotations.
pub fn analyse_deployment_with(
    pairs: &[(&str, &str)],
    template_yaml: &str,
    dialects: AnnotationDialects,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    let annotations = annotations(pairs);
    let template = serde_norway::from_str(template_yaml).expect("test template parses");
    analyse_with(
        WorkloadInput {
            kind: WorkloadKind::Deployment,
            namespace: "shop",
            name: "web",
            annotations: &annotations,
            template: &template,
        },
        dialects,
        known,
    )
}
