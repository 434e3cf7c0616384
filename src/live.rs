//! `envroll explain KIND/NAME`: the offline analysis applied to a workload in the cluster, plus
//! the hash envroll would write now, the baseline it recorded, and whether a rollout is pending.

use std::fmt::Write;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::analysis::{SourceKind, WorkloadAnalysis, WorkloadKind};
use crate::explain::render_table;
use crate::policy;
use crate::rollout::{decide, Applied, Decision, PodsStartedAfter, Template};
use crate::store::{config_map_record, secret_record, SourceKey, SourceRecord, SourceStore};
use crate::workload::{analyse_workload, Observed, Workload};

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
    let workload = &observed.workload;
    let mut store = SourceStore::default();
    for source in analyse_workload(workload, |_, _| None).sources {
        let key = SourceKey::new(source.kind, namespace, &source.name);
        match read(&client, &key).await {
            Ok(Some(record)) => {
                store.upsert(key, record);
            }
            Ok(None) => {}
            Err(reason) => store.record_failed_read(key, reason),
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
    let (config_hash, rollout_pending, status) = match decision {
        Decision::Unmanaged => (None, false, "not managed".to_string()),
        Decision::Wait(unknown) => {
            let names: Vec<String> = unknown
                .iter()
                .map(|s| format!("{} {} ({})", s.kind, s.name, s.reason))
                .collect();
            let status = format!(
                "unknown: could not read {}; no decision until it can be read",
                names.join(", ")
            );
            (None, false, status)
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
            (None, false, status)
        }
        Decision::Act { plan, applied } => (Some(applied.hash), plan.rolls_out(), plan.describe()),
    };
    Ok(LiveExplanation {
        analysis,
        config_hash,
        template_hash,
        applied_hash,
        rollout_pending,
        status,
    })
}

/// Reads one source: `Ok(None)` when it does not exist, `Err` with the reason when it cannot be
/// read (for example when the caller may not read Secrets).
async fn read(client: &Client, key: &SourceKey) -> Result<Option<SourceRecord>, String> {
    let could_not_read = |problem: kube::Error| problem.to_string();
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
