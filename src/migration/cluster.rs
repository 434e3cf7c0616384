//! The migration report against a cluster: its workloads, and the ConfigMaps and Secrets they
//! reference, read into [`Manifests`] so that the comparison is exactly the offline one. Values
//! are dropped as soon as they are read: the comparison needs the names of keys, never values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::analysis::{SourceKind, WorkloadKind};
use crate::manifests::Manifests;
use crate::policy::reloader::parse_reloader_policy;
use crate::store::SourceKey;

use super::{reloader_references, DIALECTS};

/// Which workloads to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// One workload.
    One {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    /// Every Deployment, StatefulSet and DaemonSet of a namespace (`None`: of every namespace).
    All { namespace: Option<String> },
}

/// Sources read at the same time.
const CONCURRENT_READS: usize = 8;

/// Reads the selected workloads and what the comparison needs of their sources. Sources that
/// cannot be read are left out (compared as unknown) and said in the notes returned.
pub async fn read(
    client: &Client,
    selection: &Selection,
) -> Result<(Manifests, Vec<String>), String> {
    let mut manifests = Manifests::default();
    let mut notes = Vec::new();
    let workloads = match selection {
        Selection::One {
            kind,
            namespace,
            name,
        } => vec![get_workload(client, *kind, namespace, name).await?],
        Selection::All { namespace } => {
            let namespace = namespace.as_deref();
            let mut all = list::<Deployment>(client, namespace).await?;
            all.extend(list::<StatefulSet>(client, namespace).await?);
            all.extend(list::<DaemonSet>(client, namespace).await?);
            all
        }
    };
    for workload in workloads {
        manifests
            .add_json("cluster", workload)
            .map_err(|problem| problem.to_string())?;
    }

    // What each workload references, as envroll and as Reloader see it, and the namespaces
    // where a reload list holds a pattern that may match a source nobody references.
    let mut wanted: BTreeSet<SourceKey> = BTreeSet::new();
    let mut patterns: BTreeSet<(String, SourceKind)> = BTreeSet::new();
    for workload in manifests.workloads() {
        let namespace = workload.key().namespace;
        let analysis = workload.analyse_with(DIALECTS, |_, _| None);
        wanted.extend(
            analysis
                .sources
                .iter()
                .map(|s| SourceKey::new(s.kind, &namespace, &s.name)),
        );
        workload.with_input(|input| {
            for (kind, name) in reloader_references(input.template) {
                wanted.insert(SourceKey::new(kind, &namespace, &name));
            }
            let policy =
                parse_reloader_policy(input.annotations, input.template_annotations()).policy;
            for kind in [SourceKind::ConfigMap, SourceKind::Secret] {
                let rules = kind.reloader_rules(&policy);
                if rules.reload.iter().any(|p| p.literal_name().is_none()) {
                    patterns.insert((namespace.clone(), kind));
                }
            }
        });
    }

    let reads: Vec<(SourceKey, Result<Option<Value>, String>)> =
        stream::iter(wanted.iter().cloned())
            .map(|key| async move {
                let read = get_source(client, &key).await;
                (key, read)
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;
    let reads: BTreeMap<SourceKey, Result<Option<Value>, String>> = reads.into_iter().collect();
    for (key, read) in reads {
        match read {
            Ok(Some(object)) => manifests
                .add_json("cluster", object)
                .map_err(|problem| problem.to_string())?,
            Ok(None) => {}
            Err(problem) => notes.push(format!(
                "cannot read {key}: {problem}; it is compared as unknown"
            )),
        }
    }

    for (namespace, kind) in patterns {
        match list_names(client, &namespace, kind).await {
            Ok(objects) => {
                for object in objects {
                    let name = object
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !wanted.contains(&SourceKey::new(kind, &namespace, name)) {
                        manifests
                            .add_json("cluster", object)
                            .map_err(|problem| problem.to_string())?;
                    }
                }
            }
            Err(problem) => notes.push(format!(
                "cannot list {kind}s in {namespace}: {problem}; reload list patterns are matched only against referenced sources"
            )),
        }
    }
    Ok((manifests, notes))
}

async fn get_workload(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
) -> Result<Value, String> {
    let found = match kind {
        WorkloadKind::Deployment => get::<Deployment>(client, namespace, name).await,
        WorkloadKind::StatefulSet => get::<StatefulSet>(client, namespace, name).await,
        WorkloadKind::DaemonSet => get::<DaemonSet>(client, namespace, name).await,
    };
    found
        .map_err(|problem| format!("reading {kind} {namespace}/{name}: {problem}"))?
        .ok_or_else(|| format!("{kind} {namespace}/{name} not found"))
}

async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<Value>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(to_json))
}

async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<Value>, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let api: Api<K> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(|problem| format!("listing {}s: {problem}", K::kind(&())))?;
    Ok(listed.items.into_iter().map(to_json).collect())
}

/// The object as JSON without its field-manager bookkeeping.
fn to_json<K: Resource + Serialize>(mut object: K) -> Value {
    object.meta_mut().managed_fields = None;
    serde_json::to_value(&object).expect("a Kubernetes object serializes")
}

/// A ConfigMap or Secret with its keys and annotations, every value emptied.
async fn get_source(client: &Client, key: &SourceKey) -> Result<Option<Value>, String> {
    let could_not_read = |problem: kube::Error| problem.to_string();
    match key.kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
            let found = api.get_opt(&key.name).await.map_err(could_not_read)?;
            Ok(found.map(|mut object| {
                for value in object.data.iter_mut().flat_map(|data| data.values_mut()) {
                    value.clear();
                }
                for value in object
                    .binary_data
                    .iter_mut()
                    .flat_map(|data| data.values_mut())
                {
                    *value = ByteString(Vec::new());
                }
                to_json(object)
            }))
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
            let found = api.get_opt(&key.name).await.map_err(could_not_read)?;
            Ok(found.map(|mut object| {
                for value in object.data.iter_mut().flat_map(|data| data.values_mut()) {
                    *value = ByteString(Vec::new());
                }
                object.string_data = None;
                to_json(object)
            }))
        }
    }
}

/// Every ConfigMap or Secret of a namespace, by metadata only (name and annotations).
async fn list_names(
    client: &Client,
    namespace: &str,
    kind: SourceKind,
) -> Result<Vec<Value>, kube::Error> {
    let params = ListParams::default();
    let metadata = match kind {
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api.list_metadata(&params)
                .await?
                .items
                .into_iter()
                .map(|item| item.metadata)
                .collect::<Vec<_>>()
        }
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            api.list_metadata(&params)
                .await?
                .items
                .into_iter()
                .map(|item| item.metadata)
                .collect()
        }
    };
    Ok(metadata
        .into_iter()
        .map(|metadata| {
            json!({
                "apiVersion": "v1",
                "kind": kind.as_str(),
                "metadata": {
                    "name": metadata.name,
                    "namespace": metadata.namespace,
                    "annotations": metadata.annotations,
                },
            })
        })
        .collect())
}
