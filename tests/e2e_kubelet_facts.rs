//! The facts envroll's decision matrix rests on, observed on a real kubelet (the node of
//! `e2e/real-node`), without envroll running: for each way a pod can consume a ConfigMap or
//! Secret, a pod runs, the source changes, and the test reads what the running container sees,
//! with `kubectl exec` (the environment of PID 1 from `/proc/1/environ`, files with `cat`).
//!
//! Frozen consumption is checked against a witness: the same pod also mounts the changed object
//! as a plain volume, and the frozen value is read only once the witness shows the new value (so
//! the kubelet has seen the change) and one more kubelet sync period has passed. Every test
//! records the pod's UID and restart counts before and after the change and asserts that they did
//! not change: the same processes saw (or did not see) the change.
//!
//! Run with `make e2e-kubelet`; asked to run on a cluster without the real node, every test fails.

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::{json, Value};

use common::real_node::{
    real_pod, PodIdentity, RealNode, RunningPod, KUBELET_SYNC, VOLUME_UPDATE_DEADLINE,
};
use common::workloads::{
    config_map, create, delete_and_wait, secret, set_config_map_data, set_secret_data,
};
use common::TestNamespace;

const OLD: &str = "blue";
const NEW: &str = "red";
const APP: &str = "app";
/// Where every pod mounts the changed ConfigMap (and Secret) as a plain volume.
const WITNESS_CM: &str = "/witness/cm/COLOR";
const WITNESS_SECRET: &str = "/witness/secret/COLOR";

/// One test's real node, namespace and the ConfigMap `color` and Secret `color` (`COLOR: blue`).
struct Fact {
    node: RealNode,
    ns: TestNamespace,
}

impl Fact {
    async fn new(prefix: &str) -> Result<Self> {
        let node = RealNode::require().await?;
        let ns = TestNamespace::create(&node.client, prefix).await?;
        let fact = Self { node, ns };
        create(&fact.config_maps(), &config_map("color", &[("COLOR", OLD)])).await?;
        create(&fact.secrets(), &secret("color", &[("COLOR", OLD)])).await?;
        Ok(fact)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        self.ns.api()
    }

    fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }

    async fn start(&self, name: &str, spec: Value) -> Result<RunningPod> {
        RunningPod::start(&self.node, &self.ns, real_pod(name, spec)).await
    }

    /// Changes `COLOR` in the ConfigMap and the Secret `color` to [`NEW`].
    async fn change(&self) -> Result<()> {
        set_config_map_data(&self.config_maps(), "color", &[("COLOR", NEW)]).await?;
        set_secret_data(&self.secrets(), "color", &[("COLOR", NEW)]).await
    }

    /// Waits until the witness volumes show the change, then one more kubelet sync period: any
    /// update the kubelet makes to this pod has been made by then.
    async fn wait_witness(&self, pod: &RunningPod, container: &str) -> Result<Duration> {
        let cm = pod
            .wait_file(container, WITNESS_CM, NEW, VOLUME_UPDATE_DEADLINE)
            .await?;
        let secret = pod
            .wait_file(container, WITNESS_SECRET, NEW, VOLUME_UPDATE_DEADLINE)
            .await?;
        tokio::time::sleep(KUBELET_SYNC).await;
        Ok(cm.max(secret))
    }
}

/// The witness volumes, for `volumes` of a pod spec, and their mounts, for a container.
fn witness_volumes() -> Value {
    json!([
        { "name": "witness-cm", "configMap": { "name": "color" } },
        { "name": "witness-secret", "secret": { "secretName": "color" } },
    ])
}

fn witness_mounts() -> Value {
    json!([
        { "name": "witness-cm", "mountPath": "/witness/cm" },
        { "name": "witness-secret", "mountPath": "/witness/secret" },
    ])
}

/// `a` followed by the elements of the JSON arrays `b`.
fn concat(a: Value, b: Value) -> Value {
    let mut all = a.as_array().cloned().unwrap_or_default();
    all.extend(b.as_array().cloned().unwrap_or_default());
    Value::Array(all)
}

/// The same processes before and after: same pod UID, no container restarted.
fn assert_same_pod(before: &PodIdentity, after: &PodIdentity) -> Result<()> {
    ensure!(
        before == after,
        "the pod changed: before {before}, after {after}"
    );
    ensure!(
        after.restarts.values().all(|n| *n == 0),
        "a container restarted: {after}"
    );
    Ok(())
}

fn report(row: &str, observed: &str, identity: &PodIdentity) {
    eprintln!("fact | {row} | {observed} | {identity}");
}

/// `env[].valueFrom.configMapKeyRef` and `secretKeyRef`: frozen at container start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn env_value_from_is_frozen() -> Result<()> {
    let fact = Fact::new("facts-valuefrom").await?;
    let pod = fact
        .start(
            "valuefrom",
            json!({
                "containers": [{
                    "name": APP,
                    "env": [
                        { "name": "CM_COLOR", "valueFrom": { "configMapKeyRef": { "name": "color", "key": "COLOR" } } },
                        { "name": "SECRET_COLOR", "valueFrom": { "secretKeyRef": { "name": "color", "key": "COLOR" } } },
                    ],
                    "volumeMounts": witness_mounts(),
                }],
                "volumes": witness_volumes(),
            }),
        )
        .await?;
    ensure!(pod.env_var(APP, "CM_COLOR")? == OLD && pod.env_var(APP, "SECRET_COLOR")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;

    let (cm, secret) = (
        pod.env_var(APP, "CM_COLOR")?,
        pod.env_var(APP, "SECRET_COLOR")?,
    );
    let after = pod.identity().await?;
    report(
        "env valueFrom configMapKeyRef / secretKeyRef",
        &format!("PID 1 env CM_COLOR={cm} SECRET_COLOR={secret} (witness volume {NEW} after {seen:.1?} + one sync)"),
        &after,
    );
    ensure!(
        cm == OLD,
        "configMapKeyRef env changed to {cm:?} in the running container"
    );
    ensure!(
        secret == OLD,
        "secretKeyRef env changed to {secret:?} in the running container"
    );
    assert_same_pod(&before, &after)
}

/// `envFrom[].configMapRef` (with a prefix) and `secretRef`: frozen at container start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn env_from_is_frozen() -> Result<()> {
    let fact = Fact::new("facts-envfrom").await?;
    let pod = fact
        .start(
            "envfrom",
            json!({
                "containers": [{
                    "name": APP,
                    "envFrom": [
                        { "configMapRef": { "name": "color" }, "prefix": "CM_" },
                        { "secretRef": { "name": "color" } },
                    ],
                    "volumeMounts": witness_mounts(),
                }],
                "volumes": witness_volumes(),
            }),
        )
        .await?;
    ensure!(pod.env_var(APP, "CM_COLOR")? == OLD && pod.env_var(APP, "COLOR")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;

    let (cm, secret) = (pod.env_var(APP, "CM_COLOR")?, pod.env_var(APP, "COLOR")?);
    let after = pod.identity().await?;
    report(
        "envFrom configMapRef (prefix CM_) / secretRef",
        &format!("PID 1 env CM_COLOR={cm} COLOR={secret} (witness volume {NEW} after {seen:.1?} + one sync)"),
        &after,
    );
    ensure!(
        cm == OLD,
        "envFrom configMapRef changed to {cm:?} in the running container"
    );
    ensure!(
        secret == OLD,
        "envFrom secretRef changed to {secret:?} in the running container"
    );
    assert_same_pod(&before, &after)
}

/// A volume without `subPath` (`configMap` or `secret`, chosen by `kind`): updated in place.
async fn plain_volume_is_updated(kind: &str) -> Result<()> {
    let fact = Fact::new(&format!("facts-{kind}-vol")).await?;
    let source = match kind {
        "configmap" => json!({ "configMap": { "name": "color" } }),
        _ => json!({ "secret": { "secretName": "color" } }),
    };
    let mut volume = json!({ "name": "cfg" });
    volume
        .as_object_mut()
        .unwrap()
        .extend(source.as_object().unwrap().clone());
    let pod = fact
        .start(
            &format!("{kind}-volume"),
            json!({
                "containers": [{ "name": APP, "volumeMounts": [{ "name": "cfg", "mountPath": "/cfg" }] }],
                "volumes": [volume],
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/cfg/COLOR")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let took = pod
        .wait_file(APP, "/cfg/COLOR", NEW, VOLUME_UPDATE_DEADLINE)
        .await?;

    let after = pod.identity().await?;
    report(
        &format!("{kind} volume, no subPath"),
        &format!("/cfg/COLOR={NEW} after {took:.1?} (kubelet syncFrequency {KUBELET_SYNC:?})"),
        &after,
    );
    assert_same_pod(&before, &after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn config_map_volume_is_updated() -> Result<()> {
    plain_volume_is_updated("configmap").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn secret_volume_is_updated() -> Result<()> {
    plain_volume_is_updated("secret").await
}

/// A `projected` volume with a ConfigMap and a Secret source, no `subPath`: updated in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn projected_volume_is_updated() -> Result<()> {
    let fact = Fact::new("facts-projected").await?;
    let pod = fact
        .start(
            "projected",
            json!({
                "containers": [{ "name": APP, "volumeMounts": [{ "name": "cfg", "mountPath": "/cfg" }] }],
                "volumes": [{ "name": "cfg", "projected": { "sources": [
                    { "configMap": { "name": "color", "items": [{ "key": "COLOR", "path": "cm-color" }] } },
                    { "secret": { "name": "color", "items": [{ "key": "COLOR", "path": "secret-color" }] } },
                ] } }],
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/cfg/cm-color")? == OLD && pod.read(APP, "/cfg/secret-color")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let cm = pod
        .wait_file(APP, "/cfg/cm-color", NEW, VOLUME_UPDATE_DEADLINE)
        .await?;
    let secret = pod
        .wait_file(APP, "/cfg/secret-color", NEW, VOLUME_UPDATE_DEADLINE)
        .await?;

    let after = pod.identity().await?;
    report(
        "projected volume (configMap + secret sources), no subPath",
        &format!("/cfg/cm-color={NEW} after {cm:.1?}, /cfg/secret-color={NEW} after {secret:.1?}"),
        &after,
    );
    assert_same_pod(&before, &after)
}

/// A ConfigMap volume and a Secret volume mounted with `subPath`: the file is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn sub_path_is_frozen() -> Result<()> {
    let fact = Fact::new("facts-subpath").await?;
    let pod = fact
        .start(
            "subpath",
            json!({
                "containers": [{
                    "name": APP,
                    "volumeMounts": concat(json!([
                        { "name": "cm", "mountPath": "/etc/app/cm-color", "subPath": "COLOR" },
                        { "name": "secret", "mountPath": "/etc/app/secret-color", "subPath": "COLOR" },
                    ]), witness_mounts()),
                }],
                "volumes": concat(json!([
                    { "name": "cm", "configMap": { "name": "color" } },
                    { "name": "secret", "secret": { "secretName": "color" } },
                ]), witness_volumes()),
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/etc/app/cm-color")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;

    let cm = pod.read(APP, "/etc/app/cm-color")?;
    let secret = pod.read(APP, "/etc/app/secret-color")?;
    let after = pod.identity().await?;
    report(
        "configMap / secret volume with subPath",
        &format!("cm-color={cm} secret-color={secret} (witness volume {NEW} after {seen:.1?} + one sync)"),
        &after,
    );
    ensure!(cm == OLD, "the ConfigMap subPath file changed to {cm:?}");
    ensure!(
        secret == OLD,
        "the Secret subPath file changed to {secret:?}"
    );
    assert_same_pod(&before, &after)
}

/// A projected volume mounted with `subPathExpr` (expanded from the downward API): pinned too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn sub_path_expr_is_frozen() -> Result<()> {
    let fact = Fact::new("facts-subpathexpr").await?;
    let name = "subpathexpr";
    let pod = fact
        .start(
            name,
            json!({
                "containers": [{
                    "name": APP,
                    "env": [{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
                    "volumeMounts": concat(json!([
                        { "name": "cfg", "mountPath": "/etc/app/cm-color", "subPathExpr": "$(POD_NAME).cm" },
                        { "name": "cfg", "mountPath": "/etc/app/secret-color", "subPathExpr": "$(POD_NAME).secret" },
                    ]), witness_mounts()),
                }],
                "volumes": concat(json!([{ "name": "cfg", "projected": { "sources": [
                    { "configMap": { "name": "color", "items": [{ "key": "COLOR", "path": format!("{name}.cm") }] } },
                    { "secret": { "name": "color", "items": [{ "key": "COLOR", "path": format!("{name}.secret") }] } },
                ] } }]), witness_volumes()),
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/etc/app/cm-color")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;

    let cm = pod.read(APP, "/etc/app/cm-color")?;
    let secret = pod.read(APP, "/etc/app/secret-color")?;
    let after = pod.identity().await?;
    report(
        "projected volume with subPathExpr",
        &format!("cm-color={cm} secret-color={secret} (witness volume {NEW} after {seen:.1?} + one sync)"),
        &after,
    );
    ensure!(
        cm == OLD,
        "the subPathExpr file from the ConfigMap changed to {cm:?}"
    );
    ensure!(
        secret == OLD,
        "the subPathExpr file from the Secret changed to {secret:?}"
    );
    assert_same_pod(&before, &after)
}

/// An init container renders files from its env and from a volume the main container does not
/// mount: what it wrote is frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn init_container_output_is_frozen() -> Result<()> {
    let fact = Fact::new("facts-init").await?;
    let pod = fact
        .start(
            "init",
            json!({
                "initContainers": [{
                    "name": "render",
                    "command": ["sh", "-c", "cat /src/COLOR > /rendered/from-volume && printf %s \"$COLOR\" > /rendered/from-env"],
                    "env": [{ "name": "COLOR", "valueFrom": { "configMapKeyRef": { "name": "color", "key": "COLOR" } } }],
                    "volumeMounts": [
                        { "name": "src", "mountPath": "/src" },
                        { "name": "rendered", "mountPath": "/rendered" },
                    ],
                }],
                "containers": [{
                    "name": APP,
                    "volumeMounts": concat(json!([{ "name": "rendered", "mountPath": "/rendered" }]), witness_mounts()),
                }],
                "volumes": concat(json!([
                    { "name": "src", "configMap": { "name": "color" } },
                    { "name": "rendered", "emptyDir": {} },
                ]), witness_volumes()),
            }),
        )
        .await?;
    ensure!(
        pod.read(APP, "/rendered/from-volume")? == OLD
            && pod.read(APP, "/rendered/from-env")? == OLD
    );
    let before = pod.identity().await?;

    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;

    let from_volume = pod.read(APP, "/rendered/from-volume")?;
    let from_env = pod.read(APP, "/rendered/from-env")?;
    let after = pod.identity().await?;
    report(
        "file rendered by an init container (from its volume and its env)",
        &format!("from-volume={from_volume} from-env={from_env} (witness volume {NEW} after {seen:.1?} + one sync)"),
        &after,
    );
    ensure!(
        from_volume == OLD,
        "the file rendered from the init container's volume changed to {from_volume:?}"
    );
    ensure!(
        from_env == OLD,
        "the file rendered from the init container's env changed to {from_env:?}"
    );
    assert_same_pod(&before, &after)
}

/// An `immutable: true` ConfigMap mounted as a volume, replaced by delete-and-create with new
/// data: the running pod keeps the old files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn immutable_replaced_object_is_not_seen() -> Result<()> {
    let fact = Fact::new("facts-immutable").await?;
    let immutable = |color: &str| {
        let mut cm = config_map("fixed", &[("COLOR", color)]);
        cm.immutable = Some(true);
        cm
    };
    create(&fact.config_maps(), &immutable(OLD)).await?;
    let pod = fact
        .start(
            "immutable",
            json!({
                "containers": [{
                    "name": APP,
                    "volumeMounts": concat(json!([{ "name": "fixed", "mountPath": "/fixed" }]), witness_mounts()),
                }],
                "volumes": concat(json!([{ "name": "fixed", "configMap": { "name": "fixed" } }]), witness_volumes()),
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/fixed/COLOR")? == OLD);
    let before = pod.identity().await?;

    delete_and_wait(&fact.config_maps(), "fixed").await?;
    create(&fact.config_maps(), &immutable(NEW)).await?;
    fact.change().await?;
    let seen = fact.wait_witness(&pod, APP).await?;
    // Two more sync periods: a kubelet that did pick up the replacement has written it by now.
    tokio::time::sleep(KUBELET_SYNC * 2).await;

    let fixed = pod.read(APP, "/fixed/COLOR")?;
    let after = pod.identity().await?;
    report(
        "immutable ConfigMap volume, replaced by delete-and-create",
        &format!("/fixed/COLOR={fixed} (witness volume {NEW} after {seen:.1?} + three syncs)"),
        &after,
    );
    ensure!(
        fixed == OLD,
        "the running pod sees the replaced immutable ConfigMap: {fixed:?}"
    );
    assert_same_pod(&before, &after)
}

/// A native sidecar (an init container with `restartPolicy: Always`) mounting the ConfigMap as a
/// volume: updated in place like any running container's volume. Its env stays frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn native_sidecar_volume_is_updated() -> Result<()> {
    let fact = Fact::new("facts-sidecar").await?;
    let sidecar = "sidecar";
    let pod = fact
        .start(
            "sidecar",
            json!({
                "initContainers": [{
                    "name": sidecar,
                    "restartPolicy": "Always",
                    "envFrom": [{ "configMapRef": { "name": "color" } }],
                    "volumeMounts": [{ "name": "cfg", "mountPath": "/cfg" }],
                }],
                "containers": [{ "name": APP }],
                "volumes": [{ "name": "cfg", "configMap": { "name": "color" } }],
            }),
        )
        .await?;
    ensure!(pod.read(sidecar, "/cfg/COLOR")? == OLD);
    let before = pod.identity().await?;

    fact.change().await?;
    let took = pod
        .wait_file(sidecar, "/cfg/COLOR", NEW, VOLUME_UPDATE_DEADLINE)
        .await?;

    let env = pod.env_var(sidecar, "COLOR")?;
    let after = pod.identity().await?;
    report(
        "native sidecar (init container, restartPolicy: Always) volume",
        &format!("/cfg/COLOR={NEW} after {took:.1?}; its PID 1 env COLOR={env}"),
        &after,
    );
    ensure!(env == OLD, "the sidecar's envFrom changed to {env:?}");
    ensure!(
        after.restarts.contains_key(sidecar),
        "no status for the sidecar: {after}"
    );
    assert_same_pod(&before, &after)
}
