//! Objects the operator tests create, and the checks they make on them:
//! ReplicaSets and ControllerRevisions (one per rollout), rollout completion
//! of StatefulSets and DaemonSets, envroll's annotations, and Events.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{count_owned_replicasets, poll_until, wait_for, wait_for_rollout};

/// The workload annotation holding envroll's baseline.
pub const APPLIED: &str = "envroll.dev/applied";
/// The pod-template annotation envroll changes to roll a workload out.
pub const CONFIG_HASH: &str = "envroll.dev/config-hash";
/// The reporting controller of envroll's Events.
pub const ENVROLL: &str = "envroll";
/// Never pulled: kwok nodes only pretend to run pods.
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Creating a workload and seeing its first rollout complete.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// The operator noticing a change and the workload's controller acting on it.
pub const REACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a "no rollout" check watches. The tests run the operator with a
/// 500 ms debounce, so a rollout that is going to happen happens well within it.
pub const NO_ROLLOUT_WINDOW: Duration = Duration::from_secs(10);
/// After a rollout: how long to make sure no second one follows.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(250);

/// A ConfigMap with string data.
pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    from_json(json!({
        "metadata": { "name": name },
        "data": pairs(data),
    }))
}

/// A Secret; the API server turns `stringData` into `data`.
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    from_json(json!({
        "metadata": { "name": name },
        "stringData": pairs(data),
    }))
}

/// One container named `app`, running [`IMAGE`], with extra fields
/// (`env`, `envFrom`, `volumeMounts`, ...) merged in.
pub fn container(extra: Value) -> Value {
    named_container("app", extra)
}

pub fn named_container(name: &str, extra: Value) -> Value {
    let mut container = json!({ "name": name, "image": IMAGE });
    merge(&mut container, extra);
    container
}

/// A Deployment with one replica, labels `app: <name>`, the given workload
/// annotations and pod spec.
pub fn deployment(name: &str, annotations: &[(&str, &str)], pod_spec: Value) -> Deployment {
    from_json(json!({
        "metadata": { "name": name, "annotations": pairs(annotations) },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(name, pod_spec),
        }
    }))
}

/// A StatefulSet with two replicas started in parallel.
pub fn statefulset(name: &str, annotations: &[(&str, &str)], pod_spec: Value) -> StatefulSet {
    from_json(json!({
        "metadata": { "name": name, "annotations": pairs(annotations) },
        "spec": {
            "replicas": 2,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(name, pod_spec),
        }
    }))
}

/// A DaemonSet: one pod per (fake) node.
pub fn daemonset(name: &str, annotations: &[(&str, &str)], pod_spec: Value) -> DaemonSet {
    from_json(json!({
        "metadata": { "name": name, "annotations": pairs(annotations) },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(name, pod_spec),
        }
    }))
}

/// Input for [`super::kubectl::apply`]: the ConfigMap `web-env` (`LEVEL: level`), then the
/// managed Deployment `web` running `image` and reading `web-env` through `envFrom`. Applied as
/// one, the ConfigMap changes just before the pod template, as in a typical release.
pub fn web_manifest(level: &str, image: &str) -> String {
    let spec = json!({ "containers": [container(json!({
        "image": image,
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    [
        serde_json::to_string_pretty(&config_map("web-env", &[("LEVEL", level)])),
        serde_json::to_string_pretty(&deployment("web", &[("envroll.dev/auto", "true")], spec)),
    ]
    .map(|doc| doc.expect("test objects serialize"))
    .join("\n---\n")
}

fn pod_template(name: &str, pod_spec: Value) -> Value {
    let mut spec = json!({ "terminationGracePeriodSeconds": 0 });
    merge(&mut spec, pod_spec);
    json!({ "metadata": { "labels": { "app": name } }, "spec": spec })
}

fn pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid test object")
}

pub async fn create<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    <K as Resource>::DynamicType: Default,
{
    api.create(&PostParams::default(), object)
        .await
        .with_context(|| {
            format!(
                "creating {} {}",
                K::kind(&Default::default()),
                object.name_any()
            )
        })
}

/// Sets keys of a ConfigMap's `data` (a merge patch: other keys stay).
pub async fn set_config_map_data(
    api: &Api<ConfigMap>,
    name: &str,
    data: &[(&str, &str)],
) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": pairs(data) })),
    )
    .await
    .with_context(|| format!("changing ConfigMap {name}"))?;
    Ok(())
}

/// Sets keys of a Secret through `stringData`.
pub async fn set_secret_data(api: &Api<Secret>, name: &str, data: &[(&str, &str)]) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "stringData": pairs(data) })),
    )
    .await
    .with_context(|| format!("changing Secret {name}"))?;
    Ok(())
}

/// Deletes an object and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {name}"))?;
    poll_until(
        REACTION_TIMEOUT,
        POLL,
        &format!("{name} to be deleted"),
        || async move { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await
}

/// Waits until envroll has recorded its baseline on the workload (first
/// sight), and returns the workload.
pub async fn wait_adopted<K>(api: &Api<K>, name: &str) -> Result<K>
where
    K: Resource + Clone + Debug + Send + DeserializeOwned + 'static,
{
    wait_for(
        api,
        name,
        REACTION_TIMEOUT,
        "envroll's baseline annotation",
        |o: Option<&K>| o.is_some_and(|o| o.annotations().contains_key(APPLIED)),
    )
    .await
}

/// The config-hash annotation of a pod template, if any.
pub fn template_config_hash(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Option<String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH))
        .cloned()
}

/// Waits until the Deployment owns `count` ReplicaSets.
pub async fn wait_for_replicasets(
    client: &Client,
    namespace: &str,
    name: &str,
    count: usize,
) -> Result<()> {
    poll_until(
        REACTION_TIMEOUT,
        POLL,
        &format!("deployment {namespace}/{name} to own {count} ReplicaSets"),
        || async move {
            let n = count_owned_replicasets(client, namespace, name).await?;
            if n > count {
                bail!("deployment {namespace}/{name} owns {n} ReplicaSets, expected {count}");
            }
            Ok((n == count).then_some(()))
        },
    )
    .await
}

/// Fails if the number of ReplicaSets the Deployment owns differs from
/// `expected` at any time during `window`.
pub async fn assert_replicasets_stay(
    client: &Client,
    namespace: &str,
    name: &str,
    expected: usize,
    window: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let n = count_owned_replicasets(client, namespace, name).await?;
        if n != expected {
            bail!(
                "deployment {namespace}/{name} owns {n} ReplicaSets, expected {expected}: \
                 a rollout happened that should not have"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Deployment that was just created: waits for its first rollout, and for
/// envroll's baseline when `managed`. Returns the Deployment.
pub async fn wait_deployment_settled(
    client: &Client,
    namespace: &str,
    name: &str,
    managed: bool,
) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if managed {
        wait_adopted(&api, name).await?;
    }
    let deployment = wait_for_rollout(client, namespace, name, ROLLOUT_TIMEOUT).await?;
    let replicasets = count_owned_replicasets(client, namespace, name).await?;
    if replicasets != 1 {
        bail!("deployment {namespace}/{name} owns {replicasets} ReplicaSets after creation");
    }
    if let Some(hash) = template_config_hash(&deployment.spec.clone().unwrap_or_default().template)
    {
        bail!("deployment {namespace}/{name} was rolled out on first sight (config hash {hash})");
    }
    Ok(deployment)
}

/// After a change: exactly one new ReplicaSet (`before + 1`), the rollout
/// completes, and no further ReplicaSet follows within [`SETTLE_WINDOW`].
/// Returns the Deployment.
pub async fn expect_one_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    before: usize,
) -> Result<Deployment> {
    wait_for_replicasets(client, namespace, name, before + 1).await?;
    let deployment = wait_for_rollout(client, namespace, name, ROLLOUT_TIMEOUT).await?;
    assert_replicasets_stay(client, namespace, name, before + 1, SETTLE_WINDOW).await?;
    let hash = template_config_hash(&deployment.spec.clone().unwrap_or_default().template);
    if hash.is_none() {
        bail!("deployment {namespace}/{name} rolled out without envroll's config hash");
    }
    Ok(deployment)
}

/// The ControllerRevisions whose controller owner has `owner_uid`.
pub async fn owned_controller_revisions(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
) -> Result<Vec<ControllerRevision>> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing controllerrevisions")?
        .items
        .into_iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
        })
        .collect())
}

/// How many ControllerRevisions a StatefulSet or DaemonSet owns; each new
/// pod template adds one.
pub async fn count_controller_revisions<K>(api: &Api<K>, name: &str) -> Result<usize>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let object = api
        .get(name)
        .await
        .with_context(|| format!("reading {name}"))?;
    let uid = object.uid().context("object without uid")?;
    let namespace = object.namespace().context("object without namespace")?;
    let client = api.clone().into_client();
    Ok(owned_controller_revisions(&client, &namespace, &uid)
        .await?
        .len())
}

/// Waits until the workload owns `count` ControllerRevisions.
pub async fn wait_for_controller_revisions<K>(api: &Api<K>, name: &str, count: usize) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    poll_until(
        REACTION_TIMEOUT,
        POLL,
        &format!("{name} to own {count} ControllerRevisions"),
        || async move {
            let n = count_controller_revisions(api, name).await?;
            if n > count {
                bail!("{name} owns {n} ControllerRevisions, expected {count}");
            }
            Ok((n == count).then_some(()))
        },
    )
    .await
}

/// Fails if the workload's ControllerRevision count differs from `expected`
/// at any time during `window`.
pub async fn assert_controller_revisions_stay<K>(
    api: &Api<K>,
    name: &str,
    expected: usize,
    window: Duration,
) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let n = count_controller_revisions(api, name).await?;
        if n != expected {
            bail!("{name} owns {n} ControllerRevisions, expected {expected}");
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Like `kubectl rollout status`: the controller saw the latest spec, every
/// replica runs the update revision and is ready.
pub fn statefulset_rollout_complete(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(status)) = (sts.spec.as_ref(), sts.status.as_ref()) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0)
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas.unwrap_or(0) == want
        && status.ready_replicas.unwrap_or(0) == want
        && status.replicas == want
}

/// Like `kubectl rollout status`: every scheduled pod is updated and available.
pub fn daemonset_rollout_complete(ds: &DaemonSet) -> bool {
    let Some(status) = ds.status.as_ref() else {
        return false;
    };
    let desired = status.desired_number_scheduled;
    status.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0)
        && desired > 0
        && status.updated_number_scheduled.unwrap_or(0) == desired
        && status.number_available.unwrap_or(0) == desired
        && status.number_unavailable.unwrap_or(0) == 0
}

pub async fn wait_for_statefulset_rollout(
    api: &Api<StatefulSet>,
    name: &str,
) -> Result<StatefulSet> {
    wait_for(
        api,
        name,
        ROLLOUT_TIMEOUT,
        "the StatefulSet rollout to complete",
        |o: Option<&StatefulSet>| o.is_some_and(statefulset_rollout_complete),
    )
    .await
}

pub async fn wait_for_daemonset_rollout(api: &Api<DaemonSet>, name: &str) -> Result<DaemonSet> {
    wait_for(
        api,
        name,
        ROLLOUT_TIMEOUT,
        "the DaemonSet rollout to complete",
        |o: Option<&DaemonSet>| o.is_some_and(daemonset_rollout_complete),
    )
    .await
}

/// The Events (events.k8s.io/v1) envroll published about the object
/// `kind`/`name`, optionally only those with `reason`, oldest first.
pub async fn envroll_events(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: Option<&str>,
) -> Result<Vec<Event>> {
    Ok(events_about(client, namespace, kind, name)
        .await?
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(ENVROLL))
        .filter(|e| reason.is_none_or(|reason| e.reason.as_deref() == Some(reason)))
        .collect())
}

/// Every Event about the object `kind`/`name`, whoever published it.
async fn events_about(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .context("listing events")?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect();
    events.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.deprecated_first_timestamp.as_ref().map(|t| t.0))
    });
    Ok(events)
}

/// Waits for an Event from envroll about `kind`/`name` with `reason` whose
/// note contains every one of `note_contains`, and returns it.
pub async fn wait_for_event(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
    note_contains: &[&str],
) -> Result<Event> {
    let found = poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(500),
        &format!("a {reason} Event on {kind} {namespace}/{name} mentioning {note_contains:?}"),
        || async move {
            let events = envroll_events(client, namespace, kind, name, Some(reason)).await?;
            Ok(events.into_iter().find(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                note_contains.iter().all(|part| note.contains(part))
            }))
        },
    )
    .await;
    match found {
        Ok(event) => Ok(event),
        Err(problem) => {
            let seen: Vec<String> = events_about(client, namespace, kind, name)
                .await
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        e.type_.as_deref().unwrap_or_default(),
                        e.reason.as_deref().unwrap_or_default(),
                        e.note.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            Err(problem.context(format!("Events seen on {kind} {name}: {seen:#?}")))
        }
    }
}
