//! `envroll explain --reloader-annotations`: for a Stakater Reloader user about to switch, where
//! envroll's decisions differ from what Reloader does, per workload and source, and why.
//!
//! Pure: envroll's side is the operator's own analysis with Reloader's annotations honoured
//! (`analysis::analyse_with`); Reloader's side is a small model of Reloader's `ShouldReload` and
//! of which containers it finds using a source (`getContainerUsingResource`): Reloader rolls a
//! workload out on a change to any key of a source it counts, however the source is consumed.
//! Only names of keys reach this module, never values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;

use crate::analysis::{
    AnnotationDialects, Keys, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadInput,
};
use crate::explain::{describe_keys, render_table as render_analysis, write_table};
use crate::hash::source_label;
use crate::manifests::Manifests;
use crate::policy::reloader::{self, parse_reloader_policy, ReloaderPolicy};

pub mod cluster;

/// What the comparison knows of a ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownSource {
    pub meta: SourceMeta,
    /// The names of its keys (`data` and `binaryData`), when its content is known.
    pub keys: Option<BTreeSet<String>>,
}

/// How a workload fares under envroll compared with Reloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every config change that rolled it out under Reloader does under envroll, and no other.
    Identical,
    /// Some changes that rolled it out under Reloader do not under envroll (never one more).
    FewerRollouts,
    /// Some changes roll it out under envroll that did not under Reloader (never one fewer).
    MoreRollouts,
    /// Both.
    FewerAndMoreRollouts,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Identical => "identical",
            Outcome::FewerRollouts => "fewer rollouts",
            Outcome::MoreRollouts => "more rollouts",
            Outcome::FewerAndMoreRollouts => "fewer and more rollouts",
        }
    }
}

/// Whether a difference spares a rollout or adds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Fewer,
    More,
}

/// What Reloader does when a source changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReloaderVerdict {
    /// Reloader rolls the workload out on a change to any key of the source.
    pub rollout: bool,
    pub reason: String,
}

/// One source for which envroll decides otherwise than Reloader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDifference {
    pub kind: SourceKind,
    pub name: String,
    pub effect: Effect,
    /// What Reloader does: it rolls out on a change to any key, or on none.
    pub reloader: ReloaderVerdict,
    /// Whether envroll rolls out on a change of some key.
    pub envroll: bool,
    /// The keys envroll counts when it rolls out (`null`: every key).
    pub keys: Keys,
    /// Keys of the object whose change rolled the workload out under Reloader and no longer does,
    /// when the object's keys are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_no_longer_rolling_out: Option<BTreeSet<String>>,
    /// Why envroll decides as it does (the analysis's reason, naming the annotation).
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<SourceDifference>,
}

/// One workload: envroll's analysis (Reloader's annotations honoured) and how it compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadComparison {
    #[serde(flatten)]
    pub analysis: WorkloadAnalysis,
    pub reloader: Comparison,
}

/// How many workloads end in each outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub workloads: usize,
    pub identical: usize,
    pub fewer_rollouts: usize,
    pub more_rollouts: usize,
    pub fewer_and_more_rollouts: usize,
    /// The summary as one line, the last line of the table.
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    pub workloads: Vec<WorkloadComparison>,
    pub summary: Summary,
}

/// The dialects the report analyses with.
pub const DIALECTS: AnnotationDialects = AnnotationDialects { reloader: true };

/// What Reloader does on a change of one source of a workload. `referenced` is Reloader's own
/// view (see [`reloader_references`]).
pub fn reloader_verdict(
    policy: &ReloaderPolicy,
    kind: SourceKind,
    name: &str,
    referenced: bool,
    meta: SourceMeta,
) -> ReloaderVerdict {
    let rules = kind.reloader_rules(policy);
    let keys = kind.reloader_keys();
    let verdict = |rollout: bool, reason: String| ReloaderVerdict { rollout, reason };
    if meta.reloader_ignore {
        return verdict(
            false,
            format!("the {kind} is annotated {}: \"true\"", reloader::IGNORE),
        );
    }
    if rules.excluded(name) {
        return verdict(false, format!("excluded by {}", keys.exclude));
    }
    if let Some(pattern) = rules.listed(name) {
        return verdict(
            true,
            format!(
                "matches {:?} in {}{}",
                pattern.entry,
                keys.reload,
                rules.place.suffix()
            ),
        );
    }
    if !referenced {
        return verdict(false, "not referenced by the pod template".into());
    }
    if let Some(auto) = &rules.auto {
        return verdict(true, format!("{}{auto}", reloader::AUTO));
    }
    if let Some(typed) = &rules.typed_auto {
        return verdict(true, format!("{}{typed}", keys.typed_auto));
    }
    if rules.search && meta.reloader_match {
        return verdict(
            true,
            format!(
                "{}: \"true\" and the {kind}'s {}: \"true\"",
                reloader::SEARCH,
                reloader::MATCH
            ),
        );
    }
    verdict(false, format!("no Reloader annotation counts this {kind}"))
}

/// The sources Reloader finds a pod template using: a ConfigMap or Secret volume (plain or
/// projected) that some container or init container mounts, or an `env` / `envFrom` reference of
/// one. How (subPath, items, which keys) does not matter to Reloader.
pub fn reloader_references(template: &PodTemplateSpec) -> BTreeSet<(SourceKind, String)> {
    let mut found = BTreeSet::new();
    let Some(spec) = &template.spec else {
        return found;
    };
    let containers: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mounted: BTreeSet<&str> = containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|mount| mount.name.as_str())
        .collect();
    for volume in spec.volumes.iter().flatten() {
        if !mounted.contains(volume.name.as_str()) {
            continue;
        }
        if let Some(cm) = &volume.config_map {
            found.insert((SourceKind::ConfigMap, cm.name.clone()));
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            found.insert((SourceKind::Secret, name));
        }
        for projection in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &projection.config_map {
                found.insert((SourceKind::ConfigMap, cm.name.clone()));
            }
            if let Some(secret) = &projection.secret {
                found.insert((SourceKind::Secret, secret.name.clone()));
            }
        }
    }
    for container in containers {
        for from in container
            .env
            .iter()
            .flatten()
            .filter_map(|v| v.value_from.as_ref())
        {
            if let Some(r) = &from.config_map_key_ref {
                found.insert((SourceKind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &from.secret_key_ref {
                found.insert((SourceKind::Secret, r.name.clone()));
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                found.insert((SourceKind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &from.secret_ref {
                found.insert((SourceKind::Secret, r.name.clone()));
            }
        }
    }
    found
}

/// Compares one workload. `analysis` is envroll's (with [`DIALECTS`]); `known` answers for the
/// ConfigMaps and Secrets of its namespace; `names` lists the names of every ConfigMap or Secret
/// of its namespace, which a pattern of a reload list may match without the template
/// referencing it.
pub fn compare_workload(
    input: WorkloadInput<'_>,
    analysis: WorkloadAnalysis,
    known: &dyn Fn(SourceKind, &str) -> Option<KnownSource>,
    names: &dyn Fn(SourceKind) -> Vec<String>,
) -> WorkloadComparison {
    let policy = parse_reloader_policy(input.annotations, input.template_annotations()).policy;
    let referenced = reloader_references(input.template);
    let mut candidates: BTreeSet<(SourceKind, String)> = referenced.clone();
    candidates.extend(analysis.sources.iter().map(|s| (s.kind, s.name.clone())));
    for kind in [SourceKind::ConfigMap, SourceKind::Secret] {
        let rules = kind.reloader_rules(&policy);
        if rules.reload.is_empty() {
            continue;
        }
        for name in names(kind) {
            if rules.listed(&name).is_some() {
                candidates.insert((kind, name));
            }
        }
    }
    let mut differences = Vec::new();
    for (kind, name) in candidates {
        let source = known(kind, &name).unwrap_or_default();
        let is_referenced = referenced.contains(&(kind, name.clone()));
        let reloader = reloader_verdict(&policy, kind, &name, is_referenced, source.meta);
        let envroll = analysis
            .sources
            .iter()
            .find(|s| s.kind == kind && s.name == name);
        let (rollout, keys, why) = match envroll {
            Some(s) => (s.rollout, s.keys.clone(), s.reason.clone()),
            None => (false, None, not_analysed_reason(kind, is_referenced)),
        };
        let difference = |effect, keys_no_longer_rolling_out, why| SourceDifference {
            kind,
            name: name.clone(),
            effect,
            reloader: reloader.clone(),
            envroll: rollout,
            keys: keys.clone(),
            keys_no_longer_rolling_out,
            why,
        };
        match (reloader.rollout, rollout, &keys) {
            (true, false, _) => differences.push(difference(Effect::Fewer, source.keys, why)),
            (true, true, Some(counted)) => {
                let uncounted = source
                    .keys
                    .as_ref()
                    .map(|all| all.difference(counted).cloned().collect::<BTreeSet<_>>());
                if uncounted.as_ref().is_none_or(|keys| !keys.is_empty()) {
                    let why = format!(
                        "only a change to {} rolls out: {why}",
                        describe_counted(counted)
                    );
                    differences.push(difference(Effect::Fewer, uncounted, why));
                }
            }
            (false, true, _) => differences.push(difference(Effect::More, None, why)),
            _ => {}
        }
    }
    let fewer = differences.iter().any(|d| d.effect == Effect::Fewer);
    let more = differences.iter().any(|d| d.effect == Effect::More);
    let outcome = match (fewer, more) {
        (false, false) => Outcome::Identical,
        (true, false) => Outcome::FewerRollouts,
        (false, true) => Outcome::MoreRollouts,
        (true, true) => Outcome::FewerAndMoreRollouts,
    };
    WorkloadComparison {
        analysis,
        reloader: Comparison {
            outcome,
            differences,
        },
    }
}

fn describe_counted(keys: &BTreeSet<String>) -> String {
    match keys.len() {
        0 => "no key".to_string(),
        1 => format!("key {}", describe_keys(&Some(keys.clone()))),
        _ => format!("keys {}", describe_keys(&Some(keys.clone()))),
    }
}

/// Why a source Reloader counts is not in envroll's analysis at all.
fn not_analysed_reason(kind: SourceKind, referenced: bool) -> String {
    let keys = kind.reloader_keys();
    if referenced {
        "no container can read it: its volume is mounted only with a subPath that selects another file".into()
    } else {
        format!(
            "not referenced by the pod template: envroll matches the patterns of {} only against the {kind}s the pod template references (write the name itself in the list, or in {}, to count it)",
            keys.reload,
            kind.list_annotation()
        )
    }
}

/// Compares every workload of a set of manifests (or of a cluster read into one), in order.
pub fn compare_manifests(manifests: &Manifests) -> MigrationReport {
    let mut names: BTreeMap<(String, SourceKind), Vec<String>> = BTreeMap::new();
    for (key, _) in manifests.sources() {
        names
            .entry((key.namespace.clone(), key.kind))
            .or_default()
            .push(key.name.clone());
    }
    let workloads: Vec<WorkloadComparison> = manifests
        .workloads()
        .map(|workload| {
            let namespace = workload.key().namespace;
            let analysis = manifests.analyse_workload_with(&workload, DIALECTS);
            let known = |kind: SourceKind, name: &str| {
                let key = crate::store::SourceKey::new(kind, &namespace, name);
                manifests.source(&key).map(|source| KnownSource {
                    meta: source.meta,
                    keys: Some(source.digests.keys.names().map(str::to_string).collect()),
                })
            };
            let names_of = |kind: SourceKind| {
                names
                    .get(&(namespace.clone(), kind))
                    .cloned()
                    .unwrap_or_default()
            };
            workload.with_input(|input| compare_workload(input, analysis, &known, &names_of))
        })
        .collect();
    let summary = summarise(&workloads);
    MigrationReport { workloads, summary }
}

pub fn summarise(workloads: &[WorkloadComparison]) -> Summary {
    let mut summary = Summary {
        workloads: workloads.len(),
        ..Summary::default()
    };
    let mut named: BTreeMap<Outcome, Vec<String>> = BTreeMap::new();
    for workload in workloads {
        let outcome = workload.reloader.outcome;
        *match outcome {
            Outcome::Identical => &mut summary.identical,
            Outcome::FewerRollouts => &mut summary.fewer_rollouts,
            Outcome::MoreRollouts => &mut summary.more_rollouts,
            Outcome::FewerAndMoreRollouts => &mut summary.fewer_and_more_rollouts,
        } += 1;
        let analysis = &workload.analysis;
        named.entry(outcome).or_default().push(format!(
            "{} {}/{}",
            analysis.kind, analysis.namespace, analysis.name
        ));
    }
    summary.line = if workloads.is_empty() {
        "no Deployment, StatefulSet or DaemonSet to compare with Reloader".into()
    } else {
        let noun = if workloads.len() == 1 {
            "workload"
        } else {
            "workloads"
        };
        // "42 workloads: 40 identical, 2 fewer rollouts: Deployment shop/web, …; 1 more …"
        let mut line = format!(
            "{} {noun}: {} identical",
            workloads.len(),
            summary.identical
        );
        let others = named
            .iter()
            .filter(|(outcome, _)| **outcome != Outcome::Identical);
        for (index, (outcome, names)) in others.enumerate() {
            let separator = if index == 0 { ", " } else { "; " };
            let _ = write!(
                line,
                "{separator}{} {}: {}",
                names.len(),
                outcome.as_str(),
                names.join(", ")
            );
        }
        line
    };
    summary
}

/// One block per workload (envroll's analysis, then how it compares with Reloader), then the
/// summary line.
pub fn render_table(report: &MigrationReport) -> String {
    let mut out = String::new();
    for workload in &report.workloads {
        let analysis = render_analysis([&workload.analysis]);
        out.push_str(analysis.trim_end_matches('\n'));
        out.push('\n');
        let comparison = &workload.reloader;
        let _ = writeln!(
            out,
            "  compared with Reloader: {}",
            comparison.outcome.as_str()
        );
        if !comparison.differences.is_empty() {
            let rows: Vec<[String; 4]> =
                comparison.differences.iter().map(difference_row).collect();
            let mut table = String::new();
            write_table(&mut table, ["SOURCE", "RELOADER", "ENVROLL", "WHY"], &rows);
            for line in table.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", report.summary.line);
    out
}

fn difference_row(difference: &SourceDifference) -> [String; 4] {
    let reloader = if difference.reloader.rollout {
        format!("yes ({})", difference.reloader.reason)
    } else {
        format!("no ({})", difference.reloader.reason)
    };
    let envroll = match (difference.envroll, &difference.keys) {
        (false, _) => "no".to_string(),
        (true, None) => "yes".to_string(),
        (true, Some(keys)) => describe_counted(keys),
    };
    let why = match &difference.keys_no_longer_rolling_out {
        Some(keys) if difference.effect == Effect::Fewer && !keys.is_empty() => format!(
            "{}; a change to {} no longer rolls out",
            difference.why,
            describe_counted(keys)
        ),
        _ => difference.why.clone(),
    };
    [
        source_label(difference.kind, &difference.name),
        reloader,
        envroll,
        why,
    ]
}

/// `{"workloads": [...], "summary": {...}}`: each workload as `explain -o json` shows it, with a
/// `reloader` comparison.
pub fn render_json(report: &MigrationReport) -> String {
    serde_json::to_string_pretty(report).expect("a migration report always serializes")
}

#[cfg(test)]
mod tests;
