//! `envroll explain KIND/NAME`: the offline analysis applied to a workload in the cluster, plus
//! the hash envroll would write now, the baseline it recorded, and whether a rollout is pending.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::analysis::{SourceKind, WorkloadAnalysis, WorkloadKind};
use crate::explain::render_table;
use crate::policy;
use crate::rollout::{decide, Applied, Decision, Plan, PodsStartedAfter, Template};
use crate::store::{config_map_record, secret_record, SourceKey, SourceRecord, SourceStore};
use crate::workload::{analyse_workload, namespace_or_default, Observed, Workload};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0:?} is not KIND/NAME with KIND one of deployment, statefulset, daemonset (or deploy, sts, ds)")]
    Target(String),
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error("reading {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Parses `deployment/web`, `deploy/web`, `statefulsets/db`, `ds/agent`, as kubectl does.
pub fn parse_target(target: &str) -> Result<(WorkloadKind, String), LiveError> {
    let fail = || LiveError::Target(target.to_string());
    let (kind, name) = target.split_once('/').ok_or_else(fail)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" | "deployment.apps" => WorkloadKind::Deployment,
        "statefulset" | "statefulsets" | "sts" | "statefulset.apps" => WorkloadKind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" | "daemonset.apps" => WorkloadKind::DaemonSet,
        _ => return Err(fail()),
    };
    if name.is_empty() {
        return Err(fail());
    }
    Ok((kind, name.to_string()))
}

/// What the operator's decision on the live state comes to, in one word (for `status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveState {
    /// The workload did not opt in.
    #[default]
    NotManaged,
    /// A source it reads could not be read: no decision until it can be.
    Unknown,
    /// A required source is missing: no rollout until it exists.
    Blocked,
    /// Managed, but the operator has not recorded its baseline yet (it will, without a rollout).
    NotAdopted,
    /// Nothing to roll out: the pods run the config of now (or the template's own rollout
    /// carries it).
    UpToDate,
    /// Consumed config changed in a way the pods cannot see: the operator rolls out.
    Pending,
}

/// The live state of one workload.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveExplanation {
    #[serde(flatten)]
    pub analysis: WorkloadAnalysis,
    /// The config hash envroll computes now; absent when a required source is missing.
    pub config_hash: Option<String>,
    /// The hash in the pod template (`envroll.dev/config-hash`).
    pub template_hash: Option<String>,
    /// The hash of envroll's baseline (`envroll.dev/applied`).
    pub applied_hash: Option<String>,
    pub rollout_pending: bool,
    pub status: String,
    /// The decision in one word; not part of `explain -o json`.
    #[serde(skip)]
    pub state: LiveState,
}

pub async fn explain(
    client: Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> Result<LiveExplanation, LiveError> {
    match kind {
        WorkloadKind::Deployment => explain_workload::<Deployment>(client, namespace, name).await,
        WorkloadKind::StatefulSet => explain_workload::<StatefulSet>(client, namespace, name).await,
        WorkloadKind::DaemonSet => explain_workload::<DaemonSet>(client, namespace, name).await,
    }
}

async fn explain_workload<W: Workload>(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<LiveExplanation, LiveError> {
    // Read as the operator watches it, so the template fingerprint is the operator's.
    let api: Api<Observed<W>> = Api::namespaced(client.clone(), namespace);
    let observed = api
        .get_opt(name)
        .await
        .map_err(|source| LiveError::Api {
            what: format!("{} {namespace}/{name}", W::KIND),
            source,
        })?
        .ok_or_else(|| LiveError::NotFound {
            kind: W::KIND,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let mut reader = SourceReader::new(client);
    Ok(explain_observed(&mut reader, &observed).await)
}

/// What a source read from the cluster came to: its record, `None` when it does not exist, or
/// why it could not be read (for example when the caller may not read Secrets).
pub type SourceRead = Result<Option<SourceRecord>, String>;

/// Reads ConfigMaps and Secrets from the cluster, each once, with the caller's identity.
pub struct SourceReader {
    client: Client,
    read: HashMap<SourceKey, SourceRead>,
}

/// Sources read at the same time by [`SourceReader::prefetch`].
const CONCURRENT_READS: usize = 8;

impl SourceReader {
    pub fn new(client: Client) -> Self {
        SourceReader {
            client,
            read: HashMap::new(),
        }
    }

    /// Reads these sources, a few at a time, unless already read.
    pub async fn prefetch(&mut self, keys: impl IntoIterator<Item = SourceKey>) {
        let wanted: BTreeSet<SourceKey> = keys
            .into_iter()
            .filter(|key| !self.read.contains_key(key))
            .collect();
        let client = &self.client;
        let results: Vec<(SourceKey, SourceRead)> = stream::iter(wanted)
            .map(|key| async move {
                let result = read(client, &key).await;
                (key, result)
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;
        self.read.extend(results);
    }

    /// The source as read (read now if it was not yet).
    pub async fn read(&mut self, key: &SourceKey) -> &SourceRead {
        if !self.read.contains_key(key) {
            let result = read(&self.client, key).await;
            self.read.insert(key.clone(), result);
        }
        &self.read[key]
    }

    /// The source as read, if it was.
    pub fn get(&self, key: &SourceKey) -> Option<&SourceRead> {
        self.read.get(key)
    }
}

/// The sources a workload references, as keys in its namespace.
pub fn referenced_sources<W: Workload>(workload: &W) -> Vec<SourceKey> {
    let namespace = namespace_or_default(workload.namespace());
    analyse_workload(workload, |_, _| None)
        .sources
        .iter()
        .map(|source| SourceKey::new(source.kind, &namespace, &source.name))
        .collect()
}

/// The operator's analysis and decision for a workload read from the cluster, with its sources
/// read through `reader`.
pub async fn explain_observed<W: Workload>(
    reader: &mut SourceReader,
    observed: &Observed<W>,
) -> LiveExplanation {
    let workload = &observed.workload;
    let namespace = namespace_or_default(workload.namespace());
    let namespace = namespace.as_str();
    let mut store = SourceStore::default();
    for key in referenced_sources(workload) {
        match reader.read(&key).await {
            Ok(Some(record)) => {
                store.upsert(key, record.clone());
            }
            Ok(None) => {}
            Err(reason) => store.record_failed_read(key, reason.clone()),
        }
    }
    let mut analysis = analyse_workload(workload, |kind, name| {
        store.meta(&SourceKey::new(kind, namespace, name))
    });
    if workload.updates_on_delete() {
        analysis.warnings.push(
            "updateStrategy is OnDelete: a rollout changes the template, but pods restart only when deleted".into(),
        );
    }
    let template_hash = workload.template_config_hash().map(str::to_string);
    let baseline =
        Applied::parse(workload.annotations().get(policy::APPLIED)).unwrap_or_else(|problem| {
            analysis.warnings.push(problem);
            None
        });
    let applied_hash = baseline.as_ref().map(|b| b.hash.clone());
    // Whether a template edit came after a config change is known only to the operator, which
    // watched it happen: here the order is unknown, as after a restart.
    let template = Template {
        fingerprint: &observed.template_fingerprint,
        started_after: PodsStartedAfter::default(),
    };
    let decision = decide(&analysis, template, baseline.as_ref(), |kind, name| {
        store.view(&SourceKey::new(kind, namespace, name))
    });
    let (config_hash, state, status) = match decision {
        Decision::Unmanaged => (None, LiveState::NotManaged, "not managed".to_string()),
        Decision::Wait(unknown) => {
            let names: Vec<String> = unknown
                .iter()
                .map(|s| format!("{} {} ({})", s.kind, s.name, s.reason))
                .collect();
            let status = format!(
                "unknown: could not read {}; no decision until it can be read",
                names.join(", ")
            );
            (None, LiveState::Unknown, status)
        }
        Decision::Blocked(missing) => {
            let names: Vec<String> = missing
                .sources
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let status = format!(
                "blocked: {} missing and not optional; no rollout until it exists",
                names.join(", ")
            );
            (None, LiveState::Blocked, status)
        }
        Decision::Act { plan, applied } => {
            let state = match plan {
                Plan::Adopt => LiveState::NotAdopted,
                Plan::Rollout { .. } => LiveState::Pending,
                Plan::UpToDate | Plan::Rebaseline(_) => LiveState::UpToDate,
            };
            (Some(applied.hash), state, plan.describe())
        }
    };
    LiveExplanation {
        analysis,
        config_hash,
        template_hash,
        applied_hash,
        rollout_pending: state == LiveState::Pending,
        status,
        state,
    }
}

/// Why a request failed: the API server's message when it answered (the error's own text repeats
/// the whole response), else the error.
pub fn failure(problem: &kube::Error) -> String {
    match problem {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Reads one source: `Ok(None)` when it does not exist, `Err` with the reason when it cannot be
/// read (for example when the caller may not read Secrets).
async fn read(client: &Client, key: &SourceKey) -> SourceRead {
    let could_not_read = |problem: kube::Error| failure(&problem);
    match key.kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
            let found = api.get_opt(&key.name).await.map_err(could_not_read)?;
            Ok(found.map(|object| config_map_record(&object).1))
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
            match api.get_opt(&key.name).await.map_err(could_not_read)? {
                Some(object) => secret_record(&object)
                    .map(|(_, record)| Some(record))
                    .map_err(|problem| problem.to_string()),
                None => Ok(None),
            }
        }
    }
}

pub fn render_live_table(explanation: &LiveExplanation) -> String {
    let mut out = render_table([&explanation.analysis]);
    let show = |hash: &Option<String>| hash.clone().unwrap_or_else(|| "-".to_string());
    let _ = writeln!(
        out,
        "  config hash now:     {}",
        show(&explanation.config_hash)
    );
    let _ = writeln!(
        out,
        "  hash in template:    {}",
        show(&explanation.template_hash)
    );
    let _ = writeln!(
        out,
        "  baseline (applied):  {}",
        show(&explanation.applied_hash)
    );
    let _ = writeln!(out, "  status:              {}", explanation.status);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_kubectl_names() {
        assert_eq!(
            parse_target("deploy/web").unwrap(),
            (WorkloadKind::Deployment, "web".into())
        );
        assert_eq!(
            parse_target("StatefulSets/db").unwrap(),
            (WorkloadKind::StatefulSet, "db".into())
        );
        assert_eq!(
            parse_target("ds/agent").unwrap(),
            (WorkloadKind::DaemonSet, "agent".into())
        );
        assert!(parse_target("pod/x").is_err());
        assert!(parse_target("deploy/").is_err());
        assert!(parse_target("web").is_err());
    }
}
