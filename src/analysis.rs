//! Consumption analysis: which ConfigMaps and Secrets a pod template consumes, how, and whether a
//! change to each one can reach the running process without a new pod.
//!
//! Pure: it takes a workload's template and annotations plus what is known about the referenced
//! objects, and returns plain values. The rules are those of the decision matrix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, KeyToPath, PodTemplateSpec, Volume, VolumeMount};
use serde::{Deserialize, Serialize};

use crate::policy::reloader::{
    self, parse_reloader_policy, parse_source_annotations, KindKeys, KindRules, ReloaderPolicy,
};
use crate::policy::{self, parse_workload_policy, Policy, VolumesMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        }
    }

    /// The workload annotation that names sources of this kind.
    pub fn list_annotation(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => policy::CONFIGMAPS,
            SourceKind::Secret => policy::SECRETS,
        }
    }

    fn named_in(self, policy: &Policy) -> &BTreeSet<String> {
        match self {
            SourceKind::ConfigMap => &policy.configmaps,
            SourceKind::Secret => &policy.secrets,
        }
    }

    /// Reloader's annotation keys for this kind of source.
    pub fn reloader_keys(self) -> KindKeys {
        match self {
            SourceKind::ConfigMap => reloader::CONFIGMAP_KEYS,
            SourceKind::Secret => reloader::SECRET_KEYS,
        }
    }

    /// Reloader's rules for this kind of source.
    pub fn reloader_rules(self, policy: &ReloaderPolicy) -> &KindRules {
        match self {
            SourceKind::ConfigMap => &policy.configmaps,
            SourceKind::Secret => &policy.secrets,
        }
    }

    fn other(self) -> SourceKind {
        match self {
            SourceKind::ConfigMap => SourceKind::Secret,
            SourceKind::Secret => SourceKind::ConfigMap,
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the analysis needs to know about a ConfigMap or Secret that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceMeta {
    pub ignore: bool,
    pub immutable: bool,
    /// `reloader.stakater.com/ignore: "true"`; counts only with `--reloader-annotations`.
    pub reloader_ignore: bool,
    /// `reloader.stakater.com/match: "true"`; counts only with `--reloader-annotations`.
    pub reloader_match: bool,
}

impl SourceMeta {
    /// Reads an object's metadata. A malformed `envroll.dev/ignore` is returned next to a meta
    /// that does not ignore the object, so a typo never hides a change. Reloader's annotations
    /// are read as Reloader reads them (exactly `"true"`), whether or not they will count.
    pub fn from_object(
        annotations: &BTreeMap<String, String>,
        immutable: Option<bool>,
    ) -> (Self, Option<policy::PolicyError>) {
        let (ignore, problem) = match policy::parse_ignore(annotations) {
            Ok(ignore) => (ignore, None),
            Err(problem) => (false, Some(problem)),
        };
        let reloader = parse_source_annotations(annotations);
        let meta = SourceMeta {
            ignore,
            immutable: immutable.unwrap_or(false),
            reloader_ignore: reloader.ignore,
            reloader_match: reloader.search_match,
        };
        (meta, problem)
    }
}

/// Annotation vocabularies other tools defined that the analysis honours besides its own
/// `envroll.dev/*`. The default honours none, which is envroll's own behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnotationDialects {
    /// Stakater Reloader's annotations (`--reloader-annotations`): see `policy::reloader`.
    pub reloader: bool,
}

/// How a container consumes a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    Env,
    EnvFrom,
    Volume,
    Projected,
    SubPath,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Env => "env",
            Via::EnvFrom => "envFrom",
            Via::Volume => "volume",
            Via::Projected => "projected volume",
            Via::SubPath => "subPath mount",
        }
    }
}

/// The keys of a source that matter; `None` means every key (`data` and `binaryData`).
pub type Keys = Option<BTreeSet<String>>;

fn union_keys(a: &Keys, b: &Keys) -> Keys {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.union(b).cloned().collect()),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consumer {
    pub container: String,
    pub init: bool,
    /// An init container with `restartPolicy: Always` runs beside the app for the pod's lifetime,
    /// so its volume mounts are refreshed like a main container's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sidecar: bool,
    pub via: Via,
    pub keys: Keys,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip)]
    pub optional: bool,
}

impl Consumer {
    fn runs_once(&self) -> bool {
        self.init && !self.sidecar
    }

    fn container_description(&self) -> String {
        let role = match (self.init, self.sidecar) {
            (false, _) => "container",
            (true, false) => "init container",
            (true, true) => "sidecar container",
        };
        format!("{role} {}", self.container)
    }

    fn via_description(&self) -> String {
        match (&self.via, &self.keys) {
            (Via::Env, Some(keys)) => format!("env (key {})", join(keys)),
            (via, _) => via.as_str().to_string(),
        }
    }

    /// Why the running process cannot see a change through this consumer, if it cannot.
    fn frozen_reason(&self, kind: SourceKind, meta: SourceMeta) -> Option<String> {
        let subject = format!(
            "{} in {}",
            self.via_description(),
            self.container_description()
        );
        match self.via {
            Via::Env | Via::EnvFrom => {
                Some(format!("{subject}: env is read once at process start"))
            }
            Via::SubPath => Some(format!(
                "{subject}: the bind mount keeps the old file (kubernetes#50345)"
            )),
            Via::Volume | Via::Projected if self.runs_once() => {
                Some(format!("{subject}: init containers run once at pod start"))
            }
            Via::Volume | Via::Projected if meta.immutable => Some(format!(
                "{subject}: the {kind} is immutable and kubelet stops watching it"
            )),
            Via::Volume | Via::Projected => None,
        }
    }

    /// Lower ranks explain a rollout best, so the reason shown is the most telling one.
    fn rank(&self) -> (u8, Via) {
        (u8::from(self.init), self.via)
    }
}

fn join(keys: &BTreeSet<String>) -> String {
    keys.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceAnalysis {
    pub kind: SourceKind,
    pub name: String,
    pub optional: bool,
    /// The keys counted in the hash when `rollout` is true.
    pub keys: Keys,
    pub rollout: bool,
    pub reason: String,
    pub consumers: Vec<Consumer>,
    /// Named in `envroll.dev/configmaps` / `envroll.dev/secrets` (or matched by a Reloader reload
    /// list) rather than decided by how it is consumed.
    #[serde(skip)]
    pub listed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadAnalysis {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub managed: bool,
    pub sources: Vec<SourceAnalysis>,
    /// `envroll.dev/max-rollouts-per-hour`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rollouts_per_hour: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl WorkloadAnalysis {
    pub fn rollout_sources(&self) -> impl Iterator<Item = &SourceAnalysis> {
        self.sources.iter().filter(|source| source.rollout)
    }
}

/// A workload as the analysis sees it.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadInput<'a> {
    pub kind: WorkloadKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
    pub template: &'a PodTemplateSpec,
}

impl WorkloadInput<'_> {
    /// The pod template's own annotations (Reloader reads its annotations there too).
    pub fn template_annotations(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.template
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.annotations.as_ref())
            .unwrap_or(&NONE)
    }
}

/// Analyses one workload under envroll's own annotations. `known` answers for objects that
/// exist; `None` means missing or not (yet) seen, which the analysis treats as neither ignored nor
/// immutable.
pub fn analyse(
    workload: WorkloadInput<'_>,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    analyse_with(workload, AnnotationDialects::default(), known)
}

/// Analyses one workload, honouring `dialects` besides envroll's own annotations.
pub fn analyse_with(
    workload: WorkloadInput<'_>,
    dialects: AnnotationDialects,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    let parsed = parse_workload_policy(workload.annotations);
    let policy = parsed.policy;
    let mut warnings: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    let reloader = dialects.reloader.then(|| {
        let parsed = parse_reloader_policy(workload.annotations, workload.template_annotations());
        warnings.extend(parsed.errors.iter().map(ToString::to_string));
        parsed.policy
    });
    let rules = Rules {
        policy: &policy,
        reloader: reloader.as_ref(),
    };
    let mut consumers_by_source: BTreeMap<(SourceKind, String), Vec<Consumer>> = BTreeMap::new();
    for (kind, name, consumer) in template_consumers(workload.template) {
        consumers_by_source
            .entry((kind, name))
            .or_default()
            .push(consumer);
    }
    for kind in [SourceKind::ConfigMap, SourceKind::Secret] {
        for name in kind.named_in(&policy) {
            consumers_by_source.entry((kind, name.clone())).or_default();
        }
        // A reload list entry that is a plain name counts even when the template does not
        // reference it, as a name in `envroll.dev/configmaps` does. A pattern can only be matched
        // against names the analysis sees: those the template references.
        let Some(kind_rules) = rules.reloader.map(|r| kind.reloader_rules(r)) else {
            continue;
        };
        for name in kind_rules.reload.iter().filter_map(|p| p.literal_name()) {
            if !kind_rules.excluded(name) {
                consumers_by_source
                    .entry((kind, name.to_string()))
                    .or_default();
            }
        }
    }
    let sources = consumers_by_source
        .into_iter()
        .map(|((kind, name), consumers)| {
            let meta = known(kind, &name).unwrap_or_default();
            decide(kind, name, consumers, rules, meta)
        })
        .collect();
    WorkloadAnalysis {
        kind: workload.kind,
        namespace: workload.namespace.to_string(),
        name: workload.name.to_string(),
        managed: rules.is_managed(),
        sources,
        max_rollouts_per_hour: policy.max_rollouts_per_hour,
        warnings,
    }
}

/// The workload's annotations that decide: envroll's own, and Reloader's when honoured.
#[derive(Clone, Copy)]
struct Rules<'a> {
    policy: &'a Policy,
    reloader: Option<&'a ReloaderPolicy>,
}

impl Rules<'_> {
    fn is_managed(&self) -> bool {
        self.policy.is_managed() || self.reloader.is_some_and(ReloaderPolicy::is_managed)
    }

    fn reloader_managed(&self) -> bool {
        self.reloader.is_some_and(ReloaderPolicy::is_managed)
    }

    fn not_managed_reason(&self) -> String {
        if self.reloader.is_some() {
            format!(
                "workload is not managed: set {}: \"true\" or {}: \"true\" (or a typed one), or list sources in {} / {} or {} / {}",
                policy::AUTO,
                reloader::AUTO,
                policy::CONFIGMAPS,
                policy::SECRETS,
                reloader::CONFIGMAP_RELOAD,
                reloader::SECRET_RELOAD,
            )
        } else {
            format!(
                "workload is not managed: set {}: \"true\" or list sources in {} / {}",
                policy::AUTO,
                policy::CONFIGMAPS,
                policy::SECRETS
            )
        }
    }
}

/// The Reloader annotation that makes a referenced source count (`auto` wins over `search`), as
/// it reads in a reason.
fn reloader_basis(rules: &KindRules, kind: SourceKind, meta: SourceMeta) -> Option<String> {
    if let Some(auto) = &rules.auto {
        return Some(format!("{}{auto}", reloader::AUTO));
    }
    if let Some(typed) = &rules.typed_auto {
        return Some(format!("{}{typed}", kind.reloader_keys().typed_auto));
    }
    (rules.search && meta.reloader_match).then(|| {
        format!(
            "{}: \"true\"{} and the {kind}'s {}: \"true\"",
            reloader::SEARCH,
            rules.place.suffix(),
            reloader::MATCH
        )
    })
}

/// Why no Reloader annotation counts a source of a workload that Reloader's annotations manage.
fn reloader_not_counted(
    kind: SourceKind,
    reloader_policy: &ReloaderPolicy,
    policy: &Policy,
    meta: SourceMeta,
) -> String {
    let rules = kind.reloader_rules(reloader_policy);
    let keys = kind.reloader_keys();
    let other = kind.other().reloader_rules(reloader_policy);
    let other_keys = kind.other().reloader_keys();
    let mut why = Vec::new();
    if !rules.reload.is_empty() {
        why.push(format!(
            "no entry of {}{} matches it",
            keys.reload,
            rules.place.suffix()
        ));
    }
    if rules.search && !meta.reloader_match {
        why.push(format!(
            "{}: \"true\" counts only sources annotated {}: \"true\"",
            reloader::SEARCH,
            reloader::MATCH
        ));
    }
    if other.typed_auto.is_some() {
        why.push(format!(
            "{} counts {}s only",
            other_keys.typed_auto, other_keys.noun
        ));
    }
    if policy.is_managed() {
        why.push(format!("not listed in {}", kind.list_annotation()));
    }
    if why.is_empty() {
        why.push(format!("no Reloader annotation counts {kind}s"));
    }
    format!("not counted: {}", why.join("; "))
}

fn decide(
    kind: SourceKind,
    name: String,
    mut consumers: Vec<Consumer>,
    rules: Rules<'_>,
    meta: SourceMeta,
) -> SourceAnalysis {
    let policy = rules.policy;
    consumers.sort_by(|a, b| a.rank().cmp(&b.rank()).then(a.container.cmp(&b.container)));
    // A source nobody references cannot make new pods fail, so its absence is just a state.
    let optional = consumers.iter().all(|c| c.optional);
    let all_keys = consumers
        .iter()
        .map(|c| c.keys.clone())
        .reduce(|a, b| union_keys(&a, &b))
        .unwrap_or(None);
    let first_consumer = consumers
        .first()
        .map(|c| format!("{} in {}", c.via_description(), c.container_description()));
    let frozen: Vec<(&Consumer, String)> = consumers
        .iter()
        .filter_map(|c| c.frozen_reason(kind, meta).map(|reason| (c, reason)))
        .collect();
    let frozen_keys = || {
        frozen
            .iter()
            .map(|(c, _)| c.keys.clone())
            .reduce(|a, b| union_keys(&a, &b))
            .unwrap_or(None)
    };
    let list_annotation = kind.list_annotation();
    let mut listed = kind.named_in(policy).contains(&name);
    let kind_rules = rules.reloader.map(|r| kind.reloader_rules(r));
    let reloader_keys = kind.reloader_keys();

    let (rollout, keys, reason) = if meta.ignore {
        (
            false,
            all_keys,
            format!("the {kind} is annotated {}: \"true\"", policy::IGNORE),
        )
    } else if rules.reloader.is_some() && meta.reloader_ignore {
        (
            false,
            all_keys,
            format!("the {kind} is annotated {}: \"true\"", reloader::IGNORE),
        )
    } else if !rules.is_managed() {
        (false, all_keys, rules.not_managed_reason())
    } else if listed {
        let how = first_consumer.unwrap_or_else(|| "not referenced by the pod template".into());
        (
            true,
            all_keys,
            format!("listed in {list_annotation}: rolls out on every change ({how})"),
        )
    } else if kind_rules.is_some_and(|r| r.excluded(&name)) {
        (
            false,
            all_keys,
            format!("excluded by {} on the workload", reloader_keys.exclude),
        )
    } else if let Some((kind_rules, pattern)) =
        kind_rules.and_then(|r| r.listed(&name).map(|pattern| (r, pattern)))
    {
        listed = true;
        let how = first_consumer.unwrap_or_else(|| "not referenced by the pod template".into());
        (
            true,
            all_keys,
            format!(
                "matches {:?} in {}{}: rolls out on every change ({how})",
                pattern.entry,
                reloader_keys.reload,
                kind_rules.place.suffix()
            ),
        )
    } else if let Some(basis) = kind_rules.and_then(|r| reloader_basis(r, kind, meta)) {
        // Reloader users' apps never had to reload mounted files: a volume mount rolls out as it
        // did under Reloader, unless the workload says the app reloads them. Frozen consumption
        // and the precision of keys are envroll's as always.
        if let Some((_, reason)) = frozen.first() {
            (true, frozen_keys(), format!("{reason} ({basis})"))
        } else {
            let how = first_consumer.unwrap_or_default();
            match policy.volumes {
                Some(mode) if !mode.rolls_out() => (
                    false,
                    all_keys,
                    format!(
                        "{how}: kubelet refreshes the files in place ({}: {:?} overrides {basis})",
                        policy::VOLUMES,
                        mode.as_str()
                    ),
                ),
                _ => (
                    true,
                    all_keys,
                    format!(
                        "{how}: rolls out on every change, as under Reloader ({basis}; set {}: \"in-place\" if the app reloads the files)",
                        policy::VOLUMES
                    ),
                ),
            }
        }
    } else if !policy.auto {
        let reason = match rules.reloader.filter(|_| rules.reloader_managed()) {
            Some(reloader_policy) => reloader_not_counted(kind, reloader_policy, policy, meta),
            None => format!(
                "not listed in {list_annotation}, and {} is not set",
                policy::AUTO
            ),
        };
        (false, all_keys, reason)
    } else if let Some((_, reason)) = frozen.first() {
        (true, frozen_keys(), reason.clone())
    } else {
        let how = first_consumer.unwrap_or_default();
        match policy.volumes.unwrap_or(VolumesMode::Reload) {
            VolumesMode::Rollout => (
                true,
                all_keys,
                format!("{how}: {}: \"rollout\" says the app cannot reload", policy::VOLUMES),
            ),
            VolumesMode::Reload | VolumesMode::InPlace => (
                false,
                all_keys,
                format!(
                    "{how}: kubelet refreshes the files in place (set {}: \"rollout\" if the app cannot reload them)",
                    policy::VOLUMES
                ),
            ),
        }
    };
    SourceAnalysis {
        kind,
        name,
        optional,
        keys,
        rollout,
        reason,
        consumers,
        listed,
    }
}

/// Every ConfigMap/Secret consumption in a pod template. Image pull secrets, service account
/// tokens, downward API and volumes that no container mounts are not config consumed by the
/// process, so they do not appear.
fn template_consumers(template: &PodTemplateSpec) -> Vec<(SourceKind, String, Consumer)> {
    let Some(spec) = &template.spec else {
        return Vec::new();
    };
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    let main = spec.containers.iter().map(|c| (c, false));
    let mut found = Vec::new();
    for (container, is_init) in init.chain(main) {
        let base = Consumer {
            container: container.name.clone(),
            init: is_init,
            sidecar: is_init && container.restart_policy.as_deref() == Some("Always"),
            via: Via::Env,
            keys: None,
            volume: None,
            prefix: None,
            optional: false,
        };
        env_consumers(container, &base, &mut found);
        for mount in container.volume_mounts.iter().flatten() {
            if let Some(volume) = volumes.get(mount.name.as_str()) {
                mount_consumers(volume, mount, &base, &mut found);
            }
        }
    }
    found
}

fn env_consumers(
    container: &Container,
    base: &Consumer,
    found: &mut Vec<(SourceKind, String, Consumer)>,
) {
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        let refs = [
            from.config_map_key_ref
                .as_ref()
                .map(|r| (SourceKind::ConfigMap, &r.name, &r.key, r.optional)),
            from.secret_key_ref
                .as_ref()
                .map(|r| (SourceKind::Secret, &r.name, &r.key, r.optional)),
        ];
        for (kind, name, key, optional) in refs.into_iter().flatten() {
            let consumer = Consumer {
                via: Via::Env,
                keys: Some(BTreeSet::from([key.clone()])),
                optional: optional.unwrap_or(false),
                ..base.clone()
            };
            found.push((kind, name.clone(), consumer));
        }
    }
    for from in container.env_from.iter().flatten() {
        let refs = [
            from.config_map_ref
                .as_ref()
                .map(|r| (SourceKind::ConfigMap, &r.name, r.optional)),
            from.secret_ref
                .as_ref()
                .map(|r| (SourceKind::Secret, &r.name, r.optional)),
        ];
        for (kind, name, optional) in refs.into_iter().flatten() {
            let consumer = Consumer {
                via: Via::EnvFrom,
                keys: None,
                prefix: from.prefix.clone().filter(|p| !p.is_empty()),
                optional: optional.unwrap_or(false),
                ..base.clone()
            };
            found.push((kind, name.clone(), consumer));
        }
    }
}

/// One ConfigMap/Secret as it appears inside a volume: directly or as a projected source.
struct VolumeSourceRef<'a> {
    kind: SourceKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: Option<bool>,
}

fn volume_sources(volume: &Volume) -> (Via, Vec<VolumeSourceRef<'_>>) {
    if let Some(cm) = &volume.config_map {
        let source = VolumeSourceRef {
            kind: SourceKind::ConfigMap,
            name: &cm.name,
            items: cm.items.as_deref(),
            optional: cm.optional,
        };
        return (Via::Volume, vec![source]);
    }
    if let Some(secret) = &volume.secret {
        let sources = secret
            .secret_name
            .as_deref()
            .map(|name| VolumeSourceRef {
                kind: SourceKind::Secret,
                name,
                items: secret.items.as_deref(),
                optional: secret.optional,
            })
            .into_iter()
            .collect();
        return (Via::Volume, sources);
    }
    let projected = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .flat_map(|projection| {
            let cm = projection.config_map.as_ref().map(|cm| VolumeSourceRef {
                kind: SourceKind::ConfigMap,
                name: &cm.name,
                items: cm.items.as_deref(),
                optional: cm.optional,
            });
            let secret = projection.secret.as_ref().map(|s| VolumeSourceRef {
                kind: SourceKind::Secret,
                name: &s.name,
                items: s.items.as_deref(),
                optional: s.optional,
            });
            cm.into_iter().chain(secret)
        })
        .collect();
    (Via::Projected, projected)
}

fn mount_consumers(
    volume: &Volume,
    mount: &VolumeMount,
    base: &Consumer,
    found: &mut Vec<(SourceKind, String, Consumer)>,
) {
    let (volume_via, sources) = volume_sources(volume);
    let sub_path = mount.sub_path.as_deref().filter(|p| !p.is_empty());
    let sub_path_expr = mount.sub_path_expr.as_deref().filter(|p| !p.is_empty());
    let via = if sub_path.is_some() || sub_path_expr.is_some() {
        Via::SubPath
    } else {
        volume_via
    };
    for source in sources {
        let Some(keys) = keys_visible_through_mount(source.items, sub_path) else {
            continue;
        };
        let consumer = Consumer {
            via,
            keys,
            volume: Some(volume.name.clone()),
            optional: source.optional.unwrap_or(false),
            ..base.clone()
        };
        found.push((source.kind, source.name.to_string(), consumer));
    }
}

/// The keys a mount exposes, or `None` when a `subPath` selects a file of another source.
/// A `subPathExpr` cannot be resolved from the template, so it counts every projected key.
fn keys_visible_through_mount(items: Option<&[KeyToPath]>, sub_path: Option<&str>) -> Option<Keys> {
    let item_keys =
        |items: &[KeyToPath], path_matches: &dyn Fn(&str) -> bool| -> BTreeSet<String> {
            items
                .iter()
                .filter(|item| path_matches(&item.path))
                .map(|item| item.key.clone())
                .collect()
        };
    let Some(sub_path) = sub_path.map(|p| p.trim_matches('/')) else {
        return Some(items.map(|items| item_keys(items, &|_| true)));
    };
    match items {
        Some(items) => {
            let keys = item_keys(items, &|path| {
                let path = path.trim_matches('/');
                path == sub_path || path.starts_with(&format!("{sub_path}/"))
            });
            (!keys.is_empty()).then_some(Some(keys))
        }
        None => {
            let first = sub_path.split('/').next().unwrap_or(sub_path);
            // `..data` and friends are kubelet's own directory: the whole volume lies behind them.
            if first.starts_with("..") || first.is_empty() || first == "." {
                Some(None)
            } else {
                Some(Some(BTreeSet::from([first.to_string()])))
            }
        }
    }
}

#[cfg(test)]
mod reloader_tests;
#[cfg(test)]
mod tests;
