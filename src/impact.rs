//! `envroll impact`: what applying one set of manifests (NEW) over another (OLD) does to each
//! workload's pods because of ConfigMap and Secret changes, before anything is applied.
//!
//! Pure: it takes two parsed manifest sets and returns a plain report. Nothing here is a second
//! model of the rules: each workload goes through the operator's own path, the analysis of its
//! template (`analysis`), the baseline envroll would have recorded on OLD, and the decision it
//! takes on NEW (`rollout::decide`, which hashes with `hash`). Values never reach this module:
//! manifests hold per-key digests, and the report holds key names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use crate::analysis::{
    Keys, SourceAnalysis, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadKind,
};
use crate::explain::{describe_keys, write_table};
use crate::hash::{source_label, KeyDigests, MissingRequired, SourceDigests};
use crate::manifests::{ManifestWorkload, Manifests};
use crate::policy;
use crate::rollout::{decide, Decision, Plan, PodsStartedAfter, RebaselineCause, Template};
use crate::store::{SourceKey, SourceView};

/// The whole comparison, as `impact -o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImpactReport {
    /// Every Deployment, StatefulSet and DaemonSet of NEW, in its order.
    pub workloads: Vec<WorkloadImpact>,
    pub summary: Summary,
}

impl ImpactReport {
    /// Whether envroll would replace the pods of any workload because of a config change.
    pub fn rolls_out(&self) -> bool {
        self.summary.rollout > 0
    }
}

/// What happens to a workload's pods when NEW is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// envroll replaces the pods because consumed config changed in a way they cannot see.
    Rollout,
    /// The pod template itself changes: the workload's own rollout replaces the pods, and they
    /// start with the new config.
    Template,
    /// A required ConfigMap or Secret is deleted (or, compared with a cluster, missing there):
    /// new pods would fail, envroll does not roll out.
    Blocked,
    /// Not in OLD, or no pod of it could run there (a required source was missing): its pods
    /// start with the config of NEW.
    New,
    /// No rollout; kubelet refreshes changed files in the running pods.
    InPlace,
    /// No rollout and nothing the pods see changes (sources may say the pods keep old data).
    Untouched,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rollout => "rollout",
            Outcome::Template => "template",
            Outcome::Blocked => "blocked",
            Outcome::New => "new",
            Outcome::InPlace => "in-place",
            Outcome::Untouched => "untouched",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadImpact {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// Opted in to envroll (in NEW).
    pub managed: bool,
    pub outcome: Outcome,
    /// The pod template differs between OLD and NEW (envroll's own annotations aside).
    pub template_changed: bool,
    pub reason: String,
    /// The ConfigMaps and Secrets it consumes whose data the change modifies, creates or deletes.
    pub sources: Vec<SourceImpact>,
    pub warnings: Vec<String>,
}

/// How a source's data differs between OLD and NEW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Modified,
    Created,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Modified => "modified",
            Change::Created => "created",
            Change::Deleted => "deleted",
        }
    }
}

/// What a source's change does to the workload's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// envroll rolls the workload out for it.
    Rollout,
    /// The pod template changes too: the pods of that rollout read the new data.
    Template,
    /// kubelet refreshes the files in the running pods.
    InPlace,
    /// The running pods cannot see it and nothing replaces them: they keep the old data until
    /// they restart for another reason.
    Stale,
    /// No running pod is affected: no key the workload reads changed, or no pod could run with
    /// the old manifests.
    None,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Rollout => "rollout",
            Effect::Template => "template",
            Effect::InPlace => "in-place",
            Effect::Stale => "stale",
            Effect::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceImpact {
    pub kind: SourceKind,
    pub name: String,
    pub change: Change,
    /// Keys whose values differ, were added or were removed, among the keys the workload reads
    /// (every key for `envFrom` and whole-volume mounts). Names only, never values or digests.
    pub keys: BTreeSet<String>,
    pub effect: Effect,
    pub reason: String,
}

/// How many workloads of NEW end in each outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub workloads: usize,
    pub rollout: usize,
    pub template: usize,
    pub blocked: usize,
    pub new: usize,
    pub in_place: usize,
    pub untouched: usize,
}

impl Summary {
    fn of(workloads: &[WorkloadImpact]) -> Self {
        let mut summary = Summary {
            workloads: workloads.len(),
            ..Summary::default()
        };
        for workload in workloads {
            *match workload.outcome {
                Outcome::Rollout => &mut summary.rollout,
                Outcome::Template => &mut summary.template,
                Outcome::Blocked => &mut summary.blocked,
                Outcome::New => &mut summary.new,
                Outcome::InPlace => &mut summary.in_place,
                Outcome::Untouched => &mut summary.untouched,
            } += 1;
        }
        summary
    }

    /// One line for people, for example
    /// `3 workloads: 1 would roll out because of config, 1 untouched`.
    pub fn line(&self) -> String {
        if self.workloads == 0 {
            return "no Deployment, StatefulSet or DaemonSet in the new manifests".into();
        }
        let parts: Vec<String> = [
            (self.rollout, "would roll out because of config"),
            (self.template, "would roll out for a pod template change"),
            (self.blocked, "blocked by a missing source"),
            (self.new, "new"),
            (self.in_place, "would see the change in place"),
            (self.untouched, "untouched"),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        let noun = if self.workloads == 1 {
            "workload"
        } else {
            "workloads"
        };
        format!("{} {noun}: {}", self.workloads, parts.join(", "))
    }
}

/// Compares the workloads of `new` with their versions in `old`.
pub fn compare(old: &Manifests, new: &Manifests) -> ImpactReport {
    let workloads: Vec<WorkloadImpact> = new
        .workloads()
        .map(|workload| workload_impact(old, new, &workload))
        .collect();
    let summary = Summary::of(&workloads);
    ImpactReport { workloads, summary }
}

/// Data of a source that neither input holds.
static OUTSIDE: SourceDigests = SourceDigests {
    keys: KeyDigests::new(),
};

/// What one input says of a source, in the terms of the operator's store. Known, with its
/// position in the input as its revision: `kubectl apply -f` writes objects in that order, and
/// the revisions of those writes are what the operator orders a template edit against a config
/// change by. Absent when only the other input holds it (the change creates or deletes it).
/// When neither holds it, it is something outside these manifests (a Secret managed elsewhere,
/// say) that this change does not touch: known, the same on both sides; unless a side read from a
/// cluster knows it is missing there.
fn view<'a>(this: &'a Manifests, other: &Manifests, key: &SourceKey) -> SourceView<'a> {
    match this.source(key) {
        Some(source) => SourceView::Known {
            digests: &source.digests,
            meta: source.meta,
            revision: Some(source.position),
        },
        // Absent when only the other side holds it, or when this side was read from a cluster
        // that does not have it.
        None if other.source(key).is_some() || this.is_absent(key) => SourceView::Absent,
        None => SourceView::Known {
            digests: &OUTSIDE,
            meta: SourceMeta::default(),
            revision: None,
        },
    }
}

fn workload_impact(
    old: &Manifests,
    new: &Manifests,
    workload: &ManifestWorkload<'_>,
) -> WorkloadImpact {
    let key = workload.key();
    let namespace = key.namespace.as_str();
    let analysis = new.analyse_workload(workload);
    let mut impact = WorkloadImpact {
        kind: key.kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        managed: analysis.managed,
        outcome: Outcome::New,
        template_changed: false,
        reason: "new workload: its pods start with the config of the new manifests".into(),
        sources: Vec::new(),
        warnings: analysis.warnings.clone(),
    };
    let Some(before) = old.workload(&key) else {
        return impact;
    };

    let old_analysis = old.analyse_workload(&before);
    let missing_before = old_analysis
        .sources
        .iter()
        .filter(|source| {
            !source.optional
                && view(
                    old,
                    new,
                    &SourceKey::new(source.kind, namespace, &source.name),
                ) == SourceView::Absent
        })
        .map(|source| source_label(source.kind, &source.name))
        .collect();
    // The baseline envroll records for OLD is what a decision without one records.
    let old_decision = decide(
        &old_analysis,
        Template {
            fingerprint: before.template_fingerprint(),
            started_after: PodsStartedAfter::default(),
        },
        None,
        |kind, name| view(old, new, &SourceKey::new(kind, namespace, name)),
    );
    let baseline = match &old_decision {
        Decision::Act { applied, .. } => Some(applied),
        _ => None,
    };
    let template_changed = before.template_fingerprint() != workload.template_fingerprint();
    let template = Template {
        fingerprint: workload.template_fingerprint(),
        started_after: PodsStartedAfter {
            edit: template_changed.then_some(workload.position),
            rollout: None,
        },
    };
    let decision = decide(&analysis, template, baseline, |kind, name| {
        view(new, old, &SourceKey::new(kind, namespace, name))
    });
    let situation = Situation {
        old,
        new,
        namespace,
        decision: &decision,
        missing_before,
        template_changed,
        // The same template under `auto` with nothing ignored: the operator's answer to whether
        // each consumption is frozen, whether or not this workload opted in.
        frozen: workload.analyse_annotated(
            BTreeMap::from([(policy::AUTO.to_string(), "true".to_string())]),
            |kind, name| {
                new.meta(kind, namespace, name).map(|meta| SourceMeta {
                    ignore: false,
                    ..meta
                })
            },
        ),
    };
    impact.sources = analysis
        .sources
        .iter()
        .filter_map(|source| situation.source_impact(source))
        .collect();
    for source in &impact.sources {
        let key = SourceKey::new(source.kind, namespace, &source.name);
        let was_immutable = old.source(&key).is_some_and(|old| old.meta.immutable);
        if source.change == Change::Modified && was_immutable {
            impact.warnings.push(format!(
                "{} is immutable: the API server refuses changes to its data, so it must be \
                 deleted and re-created (or given a new name)",
                source_label(source.kind, &source.name)
            ));
        }
    }
    impact.template_changed = template_changed;
    (impact.outcome, impact.reason) = situation.outcome(&impact.sources);
    if workload.updates_on_delete()
        && matches!(impact.outcome, Outcome::Rollout | Outcome::Template)
    {
        impact.warnings.push(
            "updateStrategy is OnDelete: the pod template changes, but pods are replaced only \
             when deleted"
                .into(),
        );
    }
    impact
}

/// Keys whose digests differ, were added or were removed.
fn differing_keys(before: &SourceDigests, after: &SourceDigests) -> BTreeSet<String> {
    before
        .keys
        .names()
        .chain(after.keys.names())
        .filter(|key| before.keys.get(key) != after.keys.get(key))
        .map(str::to_string)
        .collect()
}

/// The keys a workload reads from a source through any of its consumers; `None` is every key,
/// which is also what a source named in a list annotation but never referenced counts.
fn keys_read(source: &SourceAnalysis) -> Keys {
    if source.consumers.is_empty() {
        return None;
    }
    let mut read = BTreeSet::new();
    for consumer in &source.consumers {
        read.extend(consumer.keys.as_ref()?.iter().cloned());
    }
    Some(read)
}

/// Whether a change of these keys (or of the object's existence) changes what `counted` covers.
fn touches(counted: &Keys, changed: &BTreeSet<String>, change: Change) -> bool {
    change != Change::Modified
        || match counted {
            None => !changed.is_empty(),
            Some(counted) => !counted.is_disjoint(changed),
        }
}

fn join(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items
        .into_iter()
        .map(|item| item.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing_sources(missing: &MissingRequired) -> String {
    join(
        missing
            .sources
            .iter()
            .map(|(kind, name)| source_label(*kind, name)),
    )
}

/// One workload between OLD and NEW: the operator's decisions on both, from which each source's
/// effect and the workload's outcome are told.
struct Situation<'a> {
    old: &'a Manifests,
    new: &'a Manifests,
    namespace: &'a str,
    decision: &'a Decision,
    /// Required sources the old template reads that the old manifests lack: no pod could start
    /// (CreateContainerConfigError), so whatever NEW brings is read by pods starting afresh.
    missing_before: Vec<String>,
    template_changed: bool,
    /// The workload's analysis as if it were annotated `auto` and no source were ignored.
    frozen: WorkloadAnalysis,
}

impl Situation<'_> {
    /// The impact of one source the workload reads, when the change touches its data.
    fn source_impact(&self, source: &SourceAnalysis) -> Option<SourceImpact> {
        let key = SourceKey::new(source.kind, self.namespace, &source.name);
        let (before, after) = (self.old.source(&key), self.new.source(&key));
        let change = match (before, after) {
            (Some(before), Some(after)) if before.digests == after.digests => return None,
            (Some(_), Some(_)) => Change::Modified,
            (None, Some(_)) => Change::Created,
            (Some(_), None) => Change::Deleted,
            (None, None) => return None,
        };
        let differing = differing_keys(
            before.map_or(&OUTSIDE, |s| &s.digests),
            after.map_or(&OUTSIDE, |s| &s.digests),
        );
        let read = keys_read(source);
        let (keys, unread): (BTreeSet<String>, BTreeSet<String>) = differing
            .into_iter()
            .partition(|key| read.as_ref().is_none_or(|read| read.contains(key)));
        let frozen = self
            .frozen
            .sources
            .iter()
            .find(|f| f.kind == source.kind && f.name == source.name);
        let (effect, reason) = self.effect(source, frozen, change, &keys, &unread);
        Some(SourceImpact {
            kind: source.kind,
            name: source.name.clone(),
            change,
            keys,
            effect,
            reason,
        })
    }

    fn rollout(&self) -> Option<(&[String], bool)> {
        match self.decision {
            Decision::Act {
                plan:
                    Plan::Rollout {
                        changed,
                        template_edited,
                    },
                ..
            } => Some((changed, *template_edited)),
            _ => None,
        }
    }

    /// What the change of one source does, checked from what replaces the pods (envroll, the
    /// template's own rollout) to what reaches or misses the running ones.
    fn effect(
        &self,
        source: &SourceAnalysis,
        frozen: Option<&SourceAnalysis>,
        change: Change,
        keys: &BTreeSet<String>,
        unread: &BTreeSet<String>,
    ) -> (Effect, String) {
        let label = source_label(source.kind, &source.name);
        if let Some((changed, template_edited)) = self.rollout() {
            if changed.contains(&label) {
                let reason = if template_edited {
                    format!(
                        "{}; the pod template changes too, but not after this {} in the new \
                         manifests, so pods of its rollout may start with the old data",
                        source.reason, source.kind
                    )
                } else {
                    source.reason.clone()
                };
                return (Effect::Rollout, reason);
            }
        }
        if change == Change::Modified && keys.is_empty() {
            return (
                Effect::None,
                format!(
                    "only keys this workload does not read changed ({})",
                    join(unread)
                ),
            );
        }
        if !self.missing_before.is_empty() {
            return (
                Effect::None,
                "no pod could run with the old manifests: they start with this data".into(),
            );
        }
        if self.template_changed {
            return (
                Effect::Template,
                "the pod template changes too: the pods of its rollout read the new data".into(),
            );
        }
        if source.rollout && touches(&source.keys, keys, change) {
            return (
                Effect::Stale,
                format!(
                    "{}, but no rollout: {}",
                    source.reason,
                    self.why_no_rollout()
                ),
            );
        }
        match frozen {
            Some(frozen) if frozen.rollout && touches(&frozen.keys, keys, change) => (
                Effect::Stale,
                format!("{}, but no rollout: {}", frozen.reason, source.reason),
            ),
            Some(frozen) if !frozen.rollout => (Effect::InPlace, frozen.reason.clone()),
            Some(frozen) => (
                Effect::InPlace,
                format!(
                    "the changed keys reach the pods only through volume mounts, which kubelet \
                     refreshes in place; the frozen keys ({}) did not change",
                    describe_keys(&frozen.keys)
                ),
            ),
            None => (Effect::None, "the pod template does not read it".into()),
        }
    }

    /// Why a change that needs new pods by the workload's own rules gets none from envroll.
    fn why_no_rollout(&self) -> String {
        match self.decision {
            Decision::Blocked(missing) => format!(
                "{} missing and not optional, so envroll does not roll out",
                missing_sources(missing)
            ),
            Decision::Act {
                plan: Plan::Adopt, ..
            } => "envroll starts managing the workload with this change, and records its state \
                  without a rollout"
                .into(),
            Decision::Act {
                plan: Plan::Rebaseline(RebaselineCause::SourcesChanged),
                ..
            } => "it becomes a rollout source with this change, which envroll records without \
                  a rollout"
                .into(),
            Decision::Act { plan, .. } => plan.describe(),
            Decision::Unmanaged => "the workload is not managed".into(),
            Decision::Wait(_) => "a source's state is not known".into(),
        }
    }

    fn outcome(&self, sources: &[SourceImpact]) -> (Outcome, String) {
        let labels = |effect: Effect| {
            join(
                sources
                    .iter()
                    .filter(|s| s.effect == effect)
                    .map(|s| source_label(s.kind, &s.name)),
            )
        };
        if let Some((changed, template_edited)) = self.rollout() {
            let reason = if template_edited {
                format!(
                    "the pod template changes, but the new manifests do not put {} before the \
                     workload, so pods of the template's own rollout may start with the old \
                     data: envroll rolls out once more",
                    join(changed)
                )
            } else {
                format!("envroll replaces the pods: {} changed", join(changed))
            };
            return (Outcome::Rollout, reason);
        }
        if let Decision::Blocked(missing) = self.decision {
            let labels = missing_sources(missing);
            // Missing before the change too (only a side read from a cluster knows that).
            let all_along = missing
                .sources
                .iter()
                .all(|(kind, name)| self.missing_before.contains(&source_label(*kind, name)));
            let mut reason = if all_along {
                format!(
                    "{labels} missing and not optional: no pod can start \
                     (CreateContainerConfigError), and envroll does not roll out until it exists"
                )
            } else {
                format!(
                    "{labels} deleted but not optional: new pods would fail to start \
                     (CreateContainerConfigError), so envroll does not roll out"
                )
            };
            if self.template_changed {
                reason.push_str("; the pod template changes too, and its new pods would fail");
            }
            return (Outcome::Blocked, reason);
        }
        if !self.missing_before.is_empty() {
            let reason = format!(
                "no pod could run with the old manifests ({} missing, \
                 CreateContainerConfigError): its pods start with the config of the new ones",
                join(&self.missing_before)
            );
            return (Outcome::New, reason);
        }
        let stale = labels(Effect::Stale);
        let keeps_old = |reason: String| {
            if stale.is_empty() {
                reason
            } else {
                format!("{reason}; running pods keep the old data of {stale} until they restart")
            }
        };
        if self.template_changed {
            let riding = labels(Effect::Template);
            let reason = if riding.is_empty() {
                "the pod template changes: its own rollout replaces the pods".to_string()
            } else {
                format!(
                    "the pod template changes: its own rollout replaces the pods, which read \
                     the new data of {riding}"
                )
            };
            return (Outcome::Template, reason);
        }
        if sources.iter().any(|s| s.effect == Effect::InPlace) {
            let reason = format!(
                "no rollout: kubelet refreshes the changed files of {} in place",
                labels(Effect::InPlace)
            );
            return (Outcome::InPlace, keeps_old(reason));
        }
        let reason = if !stale.is_empty() {
            keeps_old("no rollout".to_string())
        } else if !sources.is_empty() {
            "no rollout: no key this workload reads changed".to_string()
        } else {
            "no consumed ConfigMap or Secret changes".to_string()
        };
        (Outcome::Untouched, reason)
    }
}

/// The report as a table, one block per workload, then the summary line.
pub fn render_table(report: &ImpactReport) -> String {
    let mut out = String::new();
    for workload in &report.workloads {
        let _ = writeln!(
            out,
            "{} {}/{}: {}",
            workload.kind,
            workload.namespace,
            workload.name,
            workload.outcome.as_str()
        );
        let _ = writeln!(out, "  {}", workload.reason);
        for warning in &workload.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        if !workload.sources.is_empty() {
            let rows: Vec<[String; 5]> = workload.sources.iter().map(source_row).collect();
            write_table(
                &mut out,
                ["SOURCE", "CHANGE", "KEYS", "EFFECT", "REASON"],
                &rows,
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", report.summary.line());
    out
}

fn source_row(source: &SourceImpact) -> [String; 5] {
    [
        source_label(source.kind, &source.name),
        source.change.as_str().to_string(),
        describe_keys(&Some(source.keys.clone())),
        source.effect.as_str().to_string(),
        source.reason.clone(),
    ]
}

/// The report as JSON: `{"workloads": [...], "summary": {...}}` (README, "Impact of a change").
pub fn render_json(report: &ImpactReport) -> String {
    serde_json::to_string_pretty(report).expect("an impact report always serializes")
}

#[cfg(test)]
mod tests;
