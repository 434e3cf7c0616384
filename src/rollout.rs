//! Deciding what to do with a workload, given the hash computed now and the baseline the operator
//! recorded the last time it acted. Pure: the controller applies the plan.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::hash::WorkloadHash;
use crate::policy;

/// The baseline, stored as JSON in the workload's `envroll.dev/applied` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The config hash last written to (or adopted for) the pod template.
    pub hash: String,
    /// The template's fingerprint at that time, without envroll's own annotation.
    pub template: String,
    /// `Kind/name` → short hash of each rollout source at that time.
    pub sources: BTreeMap<String, String>,
}

impl Applied {
    pub fn current(hash: &WorkloadHash, template: &PodTemplateSpec) -> Self {
        Applied {
            hash: hash.total.clone(),
            template: template_fingerprint(template),
            sources: hash.sources.clone(),
        }
    }

    /// Reads the baseline annotation. A malformed one is reported and treated as absent, which
    /// adopts the workload again rather than rolling it out.
    pub fn parse(annotation: Option<&String>) -> Result<Option<Self>, String> {
        match annotation {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| format!("annotation {} is not valid: {e}", policy::APPLIED)),
        }
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a baseline always serializes")
    }
}

/// A digest of the pod template as the user wrote it: envroll's own annotation is left out so
/// that a rollout by envroll does not look like a template edit.
pub fn template_fingerprint(template: &PodTemplateSpec) -> String {
    let mut template = template.clone();
    if let Some(annotations) = template
        .metadata
        .as_mut()
        .and_then(|m| m.annotations.as_mut())
    {
        annotations.remove(policy::CONFIG_HASH);
        if annotations.is_empty() {
            if let Some(metadata) = template.metadata.as_mut() {
                metadata.annotations = None;
            }
        }
    }
    let bytes = serde_json::to_vec(&template).expect("a pod template always serializes");
    let mut fingerprint = hex::encode(Sha256::digest(bytes));
    fingerprint.truncate(16);
    fingerprint
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// First sight of the workload (installation, or a new annotation): record, never roll out.
    Adopt,
    /// Nothing changed since the baseline.
    UpToDate,
    /// Something changed that does not need new pods from envroll: the template was edited (new
    /// pods read fresh config anyway), or the set of rollout sources changed because of an
    /// annotation. Record the new state without a rollout.
    Rebaseline(RebaselineCause),
    /// Consumed config changed and the template did not: roll out. Names the changed sources.
    Rollout { changed: Vec<String> },
}

impl Plan {
    pub fn rolls_out(&self) -> bool {
        matches!(self, Plan::Rollout { .. })
    }

    /// What the plan means, for logs and `explain`.
    pub fn describe(&self) -> String {
        match self {
            Plan::Adopt => "not adopted yet: the current state will be recorded without a rollout".into(),
            Plan::UpToDate => "up to date".into(),
            Plan::Rebaseline(RebaselineCause::TemplateChanged) => {
                "the pod template changed since the baseline: new pods read the current config, so the baseline is updated without an extra rollout".into()
            }
            Plan::Rebaseline(RebaselineCause::SourcesChanged) => {
                "the set of rollout sources changed (annotations or references): the baseline is updated without a rollout".into()
            }
            Plan::Rollout { changed } => format!("rollout pending: {} changed", changed.join(", ")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebaselineCause {
    TemplateChanged,
    SourcesChanged,
}

pub fn plan(baseline: Option<&Applied>, current: &Applied) -> Plan {
    let Some(baseline) = baseline else {
        return Plan::Adopt;
    };
    if baseline == current {
        return Plan::UpToDate;
    }
    if baseline.template != current.template {
        return Plan::Rebaseline(RebaselineCause::TemplateChanged);
    }
    // Only a source that was a rollout source before and still is can have changed under the
    // pods; a source that joined or left the set did so by an annotation edit, not a data change.
    let changed: Vec<String> = current
        .sources
        .iter()
        .filter(|(label, hash)| baseline.sources.get(*label).is_some_and(|old| old != *hash))
        .map(|(label, _)| label.clone())
        .collect();
    if changed.is_empty() {
        Plan::Rebaseline(RebaselineCause::SourcesChanged)
    } else {
        Plan::Rollout { changed }
    }
}

/// The merge patch for a plan: only envroll's annotations, guarded by the resource version the
/// decision was made on, so a concurrent edit makes the patch fail and the decision is redone.
pub fn patch_body(
    applied: &Applied,
    resource_version: Option<&str>,
    roll_out: bool,
) -> serde_json::Value {
    let mut body = json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { policy::APPLIED: applied.to_annotation() }
        }
    });
    if roll_out {
        body["spec"] = json!({
            "template": { "metadata": { "annotations": { policy::CONFIG_HASH: applied.hash } } }
        });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(hash: &str, template: &str, sources: &[(&str, &str)]) -> Applied {
        Applied {
            hash: hash.into(),
            template: template.into(),
            sources: sources
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn first_sight_adopts() {
        assert_eq!(plan(None, &applied("h", "t", &[])), Plan::Adopt);
    }

    #[test]
    fn same_state_is_up_to_date() {
        let state = applied("h", "t", &[("ConfigMap/a", "1")]);
        assert_eq!(plan(Some(&state), &state.clone()), Plan::UpToDate);
    }

    #[test]
    fn a_changed_source_under_an_unchanged_template_rolls_out() {
        let before = applied("h1", "t", &[("ConfigMap/a", "1"), ("Secret/b", "2")]);
        let after = applied("h2", "t", &[("ConfigMap/a", "9"), ("Secret/b", "2")]);
        assert_eq!(
            plan(Some(&before), &after),
            Plan::Rollout {
                changed: vec!["ConfigMap/a".into()]
            }
        );
    }

    #[test]
    fn a_template_edit_rebaselines_even_when_config_changed_too() {
        let before = applied("h1", "t1", &[("ConfigMap/a", "1")]);
        let after = applied("h2", "t2", &[("ConfigMap/a", "9")]);
        assert_eq!(
            plan(Some(&before), &after),
            Plan::Rebaseline(RebaselineCause::TemplateChanged)
        );
    }

    #[test]
    fn sources_joining_or_leaving_the_set_rebaseline_without_rollout() {
        let before = applied("h1", "t", &[("ConfigMap/a", "1")]);
        let joined = applied("h2", "t", &[("ConfigMap/a", "1"), ("ConfigMap/b", "5")]);
        let left = applied("h3", "t", &[]);
        for after in [joined, left] {
            assert_eq!(
                plan(Some(&before), &after),
                Plan::Rebaseline(RebaselineCause::SourcesChanged)
            );
        }
    }

    #[test]
    fn the_fingerprint_ignores_envrolls_own_annotation_only() {
        let template = |annotations: &str| -> PodTemplateSpec {
            serde_norway::from_str(&format!(
                "metadata: {{annotations: {{{annotations}}}}}\nspec: {{containers: [{{name: a, image: x}}]}}"
            ))
            .unwrap()
        };
        let plain = template_fingerprint(&template(""));
        assert_eq!(
            plain,
            template_fingerprint(&template("envroll.dev/config-hash: abc"))
        );
        assert_ne!(plain, template_fingerprint(&template("other: x")));
        let mut new_image = template("");
        new_image.spec.as_mut().unwrap().containers[0].image = Some("y".into());
        assert_ne!(plain, template_fingerprint(&new_image));
    }

    #[test]
    fn baseline_round_trips_and_malformed_is_an_error() {
        let state = applied("h", "t", &[("ConfigMap/a", "1")]);
        assert_eq!(
            Applied::parse(Some(&state.to_annotation())),
            Ok(Some(state))
        );
        assert_eq!(Applied::parse(None), Ok(None));
        let error = Applied::parse(Some(&"{not json".to_string())).unwrap_err();
        assert!(
            error.starts_with("annotation envroll.dev/applied is not valid"),
            "{error}"
        );
    }

    #[test]
    fn patches_touch_only_envroll_annotations() {
        let state = applied("h", "t", &[]);
        let adopt = patch_body(&state, Some("42"), false);
        assert_eq!(adopt["metadata"]["resourceVersion"], "42");
        assert!(adopt.get("spec").is_none());
        let rollout = patch_body(&state, Some("42"), true);
        assert_eq!(
            rollout["spec"]["template"]["metadata"]["annotations"]["envroll.dev/config-hash"],
            "h"
        );
    }
}
