//! Deciding what to do with a workload, from plain values: its analysis, what is known of each
//! source, its pod template's fingerprint and envroll's recorded baseline. Pure: the controller
//! gathers the inputs and applies the decision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::{SourceKind, WorkloadAnalysis};
use crate::fingerprint;
use crate::hash::{source_label, workload_hash, MissingRequired, WorkloadHash};
use crate::policy;
use crate::store::SourceView;

/// The baseline, stored as JSON in the workload's `envroll.dev/applied` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The config hash last written to (or adopted for) the pod template.
    pub hash: String,
    /// The template's fingerprint at that time (`fingerprint::template_fingerprint`).
    pub template: String,
    /// `Kind/name` → short hash of each rollout source at that time.
    pub sources: BTreeMap<String, String>,
}

impl Applied {
    pub fn current(hash: &WorkloadHash, template_fingerprint: &str) -> Self {
        Applied {
            hash: hash.total.clone(),
            template: template_fingerprint.to_string(),
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

/// The pod template as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template<'a> {
    pub fingerprint: &'a str,
    pub started_after: PodsStartedAfter,
}

/// Revisions before which every config change is read by the pods the template runs now: pods
/// are started after the template change that made them, and read the config of that moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodsStartedAfter {
    /// The edit that gave the template its current fingerprint, when envroll watched that edit
    /// happen. `None` when it was first seen already edited (after a start or a re-list), so its
    /// order against config changes is not known.
    pub edit: Option<u64>,
    /// envroll's last rollout of the workload (the revision its patch produced), when this
    /// process made it. A source watch can be behind (the API server was down): a change it
    /// reports late may be older than that rollout, whose pods then read it already.
    pub rollout: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// First sight of the workload (installation, or a new annotation): record, never roll out.
    Adopt,
    /// Nothing changed since the baseline.
    UpToDate,
    /// Something changed that does not need new pods from envroll. Record the new state.
    Rebaseline(RebaselineCause),
    /// Consumed config changed and no pod started since has read it: roll out. Names the changed
    /// sources; `template_edited` says the template was edited too, but not provably after them.
    Rollout {
        changed: Vec<String>,
        template_edited: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebaselineCause {
    /// The template was edited and no config changed: its rollout is the user's.
    TemplateChanged,
    /// The template was edited after every config change: the pods it starts read the new config.
    TemplateEditedAfterConfig,
    /// envroll's last rollout came after every config change: its pods read the new config.
    RolledOutAfterConfig,
    /// The set of rollout sources changed (annotations or references), no source's data did.
    SourcesChanged,
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
                "the pod template changed since the baseline and no consumed config did: the baseline is updated without a rollout".into()
            }
            Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig) => {
                "the pod template was edited after the config change: the pods it starts read the new config, so the baseline is updated without an extra rollout".into()
            }
            Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig) => {
                "envroll's last rollout came after the config change: the pods it started read the new config, so the baseline is updated without another rollout".into()
            }
            Plan::Rebaseline(RebaselineCause::SourcesChanged) => {
                "the set of rollout sources changed (annotations or references): the baseline is updated without a rollout".into()
            }
            Plan::Rollout { changed, template_edited: false } => {
                format!("rollout pending: {} changed", changed.join(", "))
            }
            Plan::Rollout { changed, template_edited: true } => format!(
                "rollout pending: {} changed, and the pod template was edited but not provably after that",
                changed.join(", ")
            ),
        }
    }
}

/// A source whose state is not known, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSource {
    pub kind: SourceKind,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The workload did not opt in.
    Unmanaged,
    /// A source it references is unknown: decide once it is known, never guess.
    Wait(Vec<UnknownSource>),
    /// A required source is missing: new pods would fail, so nothing rolls out.
    Blocked(MissingRequired),
    /// Apply the plan and record `applied` as the new baseline.
    Act { plan: Plan, applied: Applied },
}

/// The whole decision for one workload.
pub fn decide<'a>(
    analysis: &WorkloadAnalysis,
    template: Template<'_>,
    baseline: Option<&Applied>,
    source: impl Fn(SourceKind, &str) -> SourceView<'a>,
) -> Decision {
    if !analysis.managed {
        return Decision::Unmanaged;
    }
    let unknown: Vec<UnknownSource> = analysis
        .sources
        .iter()
        .filter_map(|s| match source(s.kind, &s.name) {
            SourceView::Unknown(reason) => Some(UnknownSource {
                kind: s.kind,
                name: s.name.clone(),
                reason: reason.to_string(),
            }),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        return Decision::Wait(unknown);
    }
    // Any required source, not only a rollout source: new pods could not start without it. And
    // an absent object's `immutable` is not known, so deciding without it could drop it from
    // the rollout sources and miss the change its re-creation brings.
    let missing: Vec<(SourceKind, String)> = analysis
        .sources
        .iter()
        .filter(|s| !s.optional && source(s.kind, &s.name) == SourceView::Absent)
        .map(|s| (s.kind, s.name.clone()))
        .collect();
    if !missing.is_empty() {
        return Decision::Blocked(MissingRequired { sources: missing });
    }
    let hash = workload_hash(analysis, |kind, name| match source(kind, name) {
        SourceView::Known { digests, .. } => Some(digests),
        _ => None,
    });
    let hash = match hash {
        Ok(hash) => hash,
        Err(missing) => return Decision::Blocked(missing),
    };
    let revisions: BTreeMap<String, Option<u64>> = analysis
        .rollout_sources()
        .map(|s| {
            let revision = match source(s.kind, &s.name) {
                SourceView::Known { revision, .. } => revision,
                _ => None,
            };
            (source_label(s.kind, &s.name), revision)
        })
        .collect();
    let current = Applied::current(&hash, template.fingerprint);
    let plan = plan(baseline, &current, template.started_after, &revisions);
    Decision::Act {
        plan,
        applied: current,
    }
}

/// Compares the current state with the baseline. `revisions` gives the revision since which each
/// rollout source holds its current data (`None` when it is absent or cannot be ordered).
pub fn plan(
    baseline: Option<&Applied>,
    current: &Applied,
    started_after: PodsStartedAfter,
    revisions: &BTreeMap<String, Option<u64>>,
) -> Plan {
    let Some(baseline) = baseline else {
        return Plan::Adopt;
    };
    if baseline == current {
        return Plan::UpToDate;
    }
    // Only a source that was a rollout source before and still is can have changed under the
    // pods; a source that joined or left the set did so by an annotation edit, not a data change.
    let changed: Vec<String> = current
        .sources
        .iter()
        .filter(|(label, hash)| baseline.sources.get(*label).is_some_and(|old| old != *hash))
        .map(|(label, _)| label.clone())
        .collect();
    let template_edited = baseline.template != current.template;
    if changed.is_empty() {
        return Plan::Rebaseline(if template_edited {
            RebaselineCause::TemplateChanged
        } else {
            RebaselineCause::SourcesChanged
        });
    }
    // Pods started for a template change read the config of that moment: they carry a config
    // change only if the template changed after it. When the order cannot be shown, rolling out
    // once more is the price; a pod left on old config is not.
    let carried_by = |template_changed_at: Option<u64>| {
        template_changed_at.is_some_and(|template_changed_at| {
            changed.iter().all(|label| {
                revisions
                    .get(label)
                    .copied()
                    .flatten()
                    .is_some_and(|changed_at| changed_at < template_changed_at)
            })
        })
    };
    let edit = started_after
        .edit
        .filter(|_| template_edited && fingerprint::is_current(&baseline.template));
    if carried_by(edit) {
        Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig)
    } else if carried_by(edit.max(started_after.rollout)) {
        Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig)
    } else {
        Plan::Rollout {
            changed,
            template_edited,
        }
    }
}

/// The merge patch for a plan: only envroll's annotations, guarded by the resource version the
/// decision was made on, so a concurrent edit makes the patch fail and the decision is redone.
/// `template_hash` is the config hash the pod template carries now: when a rollout's hash equals
/// it (the config went back to a state the template still names), the template is marked with
/// the resource version too, or nothing would change and no pod would be replaced.
pub fn patch_body(
    applied: &Applied,
    resource_version: Option<&str>,
    roll_out: bool,
    template_hash: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { policy::APPLIED: applied.to_annotation() }
        }
    });
    if roll_out {
        let mut annotations = json!({ policy::CONFIG_HASH: applied.hash });
        if template_hash == Some(applied.hash.as_str()) {
            annotations[policy::ROLLOUT_MARK] = json!(resource_version);
        }
        body["spec"] = json!({ "template": { "metadata": { "annotations": annotations } } });
    }
    body
}

#[cfg(test)]
mod tests;
