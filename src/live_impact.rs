//! `envroll impact -f FILE` and `envroll impact configmap/NAME --from-literal K=V`: the impact of
//! a proposed ConfigMap or Secret compared with the live one, for every workload in its
//! namespace.
//!
//! Nothing here is a second comparison: the live objects of the namespace (its Deployments,
//! StatefulSets and DaemonSets, and the ConfigMaps and Secrets they reference) become the OLD
//! side of `impact::compare`, and the same objects with the proposal written over them its NEW
//! side; so the report, its JSON and its exit code are those of `impact --from --to`. Values are
//! digested as they are read (`manifests`) and never printed.

use std::collections::{BTreeMap, BTreeSet};

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::analysis::SourceKind;
use crate::hash::source_label;
use crate::impact::{self, ImpactReport};
use crate::live::failure;
use crate::manifests::Manifests;
use crate::store::SourceKey;
use crate::workload::Workload;

/// One edit of a ConfigMap or Secret given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
    /// Keys set, in the order given.
    pub set: Vec<(String, Vec<u8>)>,
    /// The keys given are the whole data (as `kubectl create configmap … | kubectl replace`);
    /// otherwise they are set on the live object's data, the other keys kept.
    pub replace: bool,
}

/// Parses `configmap/NAME`, `cm/NAME`, `secret/NAME` (and plurals), as kubectl names them.
pub fn parse_source_target(target: &str) -> Result<(SourceKind, String), String> {
    let fail = || format!("{target:?} is not KIND/NAME with KIND configmap (cm) or secret");
    let (kind, name) = target.split_once('/').ok_or_else(fail)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "configmap" | "configmaps" | "cm" => SourceKind::ConfigMap,
        "secret" | "secrets" => SourceKind::Secret,
        _ => return Err(fail()),
    };
    if name.is_empty() || name.contains('/') {
        return Err(fail());
    }
    Ok((kind, name.to_string()))
}

/// Whether `key` is a valid ConfigMap or Secret key (`[-._a-zA-Z0-9]+`, at most 253 characters,
/// not `.` or `..`).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `KEY=VALUE` of `--from-literal`. The value is never quoted in an error: it may be a secret.
pub fn parse_literal(text: &str) -> Result<(String, Vec<u8>), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| "--from-literal takes KEY=VALUE (no = found)".to_string())?;
    if !valid_key(key) {
        return Err(format!(
            "--from-literal: {key:?} is not a valid key (letters, digits, -, _ and .)"
        ));
    }
    Ok((key.to_string(), value.as_bytes().to_vec()))
}

/// `[KEY=]PATH` of `--from-file`: the file's content under KEY, or under the file's name.
pub fn read_from_file(spec: &str) -> Result<(String, Vec<u8>), String> {
    let (key, path) = match spec.split_once('=') {
        Some((key, path)) => (key.to_string(), path),
        None => {
            let name = std::path::Path::new(spec)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, spec)
        }
    };
    if !valid_key(&key) {
        return Err(format!(
            "--from-file: {key:?} is not a valid key (letters, digits, -, _ and .); name one with KEY=PATH"
        ));
    }
    let content = std::fs::read(path).map_err(|e| format!("--from-file: {path}: {e}"))?;
    Ok((key, content))
}

/// The keys of an edit, refusing a key given twice (as kubectl does).
pub fn edit_keys(literals: &[String], files: &[String]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut set: Vec<(String, Vec<u8>)> = Vec::new();
    for item in literals
        .iter()
        .map(|literal| parse_literal(literal))
        .chain(files.iter().map(|file| read_from_file(file)))
    {
        let (key, value) = item?;
        if set.iter().any(|(known, _)| *known == key) {
            return Err(format!("key {key} is given twice"));
        }
        set.push((key, value));
    }
    Ok(set)
}

/// The ConfigMap after the edit, from the live one (`None`: it does not exist yet). Text goes to
/// `data`, anything not UTF-8 to `binaryData`, as `kubectl create configmap` does.
pub fn edited_config_map(live: Option<ConfigMap>, edit: &Edit) -> ConfigMap {
    let mut object = live.unwrap_or_else(|| ConfigMap {
        metadata: new_metadata(edit),
        ..ConfigMap::default()
    });
    let mut data = object.data.take().unwrap_or_default();
    let mut binary = object.binary_data.take().unwrap_or_default();
    if edit.replace {
        data.clear();
        binary.clear();
    }
    for (key, value) in &edit.set {
        data.remove(key);
        binary.remove(key);
        match String::from_utf8(value.clone()) {
            Ok(text) => {
                data.insert(key.clone(), text);
            }
            Err(_) => {
                binary.insert(key.clone(), ByteString(value.clone()));
            }
        }
    }
    object.data = (!data.is_empty()).then_some(data);
    object.binary_data = (!binary.is_empty()).then_some(binary);
    object
}

/// The Secret after the edit, from the live one (`None`: it does not exist yet).
pub fn edited_secret(live: Option<Secret>, edit: &Edit) -> Secret {
    let mut object = live.unwrap_or_else(|| Secret {
        metadata: new_metadata(edit),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    });
    let mut data: BTreeMap<String, ByteString> = object.data.take().unwrap_or_default();
    if edit.replace {
        data.clear();
    }
    // The API server folds stringData into data; a live Secret has none.
    for (key, value) in object.string_data.take().unwrap_or_default() {
        data.insert(key, ByteString(value.into_bytes()));
    }
    for (key, value) in &edit.set {
        data.insert(key.clone(), ByteString(value.clone()));
    }
    object.data = (!data.is_empty()).then_some(data);
    object
}

fn new_metadata(edit: &Edit) -> ObjectMeta {
    ObjectMeta {
        name: Some(edit.name.clone()),
        namespace: Some(edit.namespace.clone()),
        ..ObjectMeta::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveImpactError {
    #[error("nothing to compare: the input holds no ConfigMap or Secret")]
    Empty,
    #[error("cannot read {what}: {reason}")]
    Read { what: String, reason: String },
}

/// Reads the live object of an edit and returns the proposal: that object with the edit made.
pub async fn propose_edit(client: &Client, edit: &Edit) -> Result<Manifests, LiveImpactError> {
    let key = SourceKey::new(edit.kind, &edit.namespace, &edit.name);
    let cannot_read = |problem: kube::Error| LiveImpactError::Read {
        what: format!("the live {key}"),
        reason: failure(&problem),
    };
    let value = match edit.kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &edit.namespace);
            let live = api.get_opt(&edit.name).await.map_err(cannot_read)?;
            to_json(&edited_config_map(live, edit))
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &edit.namespace);
            let live = api.get_opt(&edit.name).await.map_err(cannot_read)?;
            to_json(&edited_secret(live, edit))
        }
    };
    let mut proposed = Manifests::default();
    proposed
        .add_json(&source_label(edit.kind, &edit.name), value)
        .map_err(|problem| LiveImpactError::Read {
            what: format!("the edited {key}"),
            reason: problem.to_string(),
        })?;
    Ok(proposed)
}

fn to_json<K: serde::Serialize>(object: &K) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialize")
}

/// Compares the proposed ConfigMaps and Secrets with the live ones: every Deployment,
/// StatefulSet and DaemonSet in their namespaces, with what applying the proposal does to its
/// pods. Workloads in the proposal are not compared (see [`drop_workloads`]). A source a
/// workload reads that the caller may not read is taken to be unchanged, and said so in that
/// workload's warnings; the proposed sources themselves must be readable.
pub async fn impact(
    client: &Client,
    proposed: &Manifests,
) -> Result<ImpactReport, LiveImpactError> {
    let proposed_keys: BTreeSet<SourceKey> =
        proposed.sources().map(|(key, _)| key.clone()).collect();
    let namespaces: BTreeSet<String> = proposed_keys
        .iter()
        .map(|key| key.namespace.clone())
        .collect();
    if namespaces.is_empty() {
        return Err(LiveImpactError::Empty);
    }
    let mut live = Manifests::default();
    for namespace in &namespaces {
        add_workloads::<Deployment>(client, namespace, &mut live).await?;
        add_workloads::<StatefulSet>(client, namespace, &mut live).await?;
        add_workloads::<DaemonSet>(client, namespace, &mut live).await?;
    }
    let mut wanted: BTreeSet<SourceKey> = proposed_keys.clone();
    for workload in live.workloads() {
        let namespace = workload.key().namespace;
        wanted.extend(
            live.analyse_workload(&workload)
                .sources
                .iter()
                .map(|source| SourceKey::new(source.kind, &namespace, &source.name)),
        );
    }
    let reads: BTreeMap<SourceKey, Result<Option<Value>, String>> = stream::iter(wanted)
        .map(|key| async move {
            let read = read_source(client, &key).await;
            (key, read)
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await;
    let mut unreadable: BTreeMap<SourceKey, String> = BTreeMap::new();
    for (key, read) in reads {
        match read {
            Ok(Some(value)) => {
                live.add_json(&format!("the live {key}"), value)
                    .map_err(|problem| LiveImpactError::Read {
                        what: format!("the live {key}"),
                        reason: problem.to_string(),
                    })?
            }
            Ok(None) => live.mark_absent(key),
            Err(reason) if proposed_keys.contains(&key) => {
                return Err(LiveImpactError::Read {
                    what: format!("the live {key}"),
                    reason,
                })
            }
            Err(reason) => {
                unreadable.insert(key, reason);
            }
        }
    }
    Ok(compare_with_live(&live, proposed, &unreadable))
}

/// The report for `proposed` written over `live` (the objects read from the cluster, sources
/// known missing marked absent); `unreadable` names the sources that could not be read, with
/// the reason, which the workloads reading them are warned of.
pub fn compare_with_live(
    live: &Manifests,
    proposed: &Manifests,
    unreadable: &BTreeMap<SourceKey, String>,
) -> ImpactReport {
    let after = live.overlay(proposed);
    let mut report = impact::compare(live, &after);
    for (workload, analysis) in report.workloads.iter_mut().zip(after.analyse()) {
        for source in &analysis.sources {
            let key = SourceKey::new(source.kind, &analysis.namespace, &source.name);
            if let Some(reason) = unreadable.get(&key) {
                workload.warnings.push(format!(
                    "{} could not be read ({reason}): taken to be unchanged",
                    source_label(source.kind, &source.name)
                ));
            }
        }
    }
    report
}

/// Sources read at the same time.
const CONCURRENT_READS: usize = 8;

async fn add_workloads<W: Workload>(
    client: &Client,
    namespace: &str,
    live: &mut Manifests,
) -> Result<(), LiveImpactError> {
    let api: Api<W> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|problem| LiveImpactError::Read {
            what: format!("the {}s in namespace {namespace}", W::KIND),
            reason: failure(&problem),
        })?;
    for workload in list.items {
        let origin = format!("the live {} {namespace}/{}", W::KIND, workload.name_any());
        live.add_json(&origin, to_json(&workload))
            .map_err(|problem| LiveImpactError::Read {
                what: origin.clone(),
                reason: problem.to_string(),
            })?;
    }
    Ok(())
}

/// The live object as JSON; `None` when it does not exist.
async fn read_source(client: &Client, key: &SourceKey) -> Result<Option<Value>, String> {
    let could_not_read = |problem: kube::Error| failure(&problem);
    Ok(match key.kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
            api.get_opt(&key.name)
                .await
                .map_err(could_not_read)?
                .map(|object| to_json(&object))
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
            api.get_opt(&key.name)
                .await
                .map_err(could_not_read)?
                .map(|object| to_json(&object))
        }
    })
}

/// Takes the workloads out of a proposal read from files and says which: live impact compares
/// ConfigMaps and Secrets with the cluster; a workload as written differs from the live one by
/// every default the API server fills in, so its changes are compared offline
/// (`impact --from --to`).
pub fn drop_workloads(proposed: &mut Manifests) -> Vec<String> {
    proposed
        .take_workloads()
        .into_iter()
        .map(|key| format!("{} {}/{}", key.kind, key.namespace, key.name))
        .collect()
}

#[cfg(test)]
mod tests;
