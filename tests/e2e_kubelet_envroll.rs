//! envroll on a real kubelet (the node of `e2e/real-node`): the consumers of the facts suite
//! (`tests/e2e_kubelet_facts.rs`) as Deployments annotated `envroll.dev/auto: "true"`, with the
//! operator running (a local `envroll run` scoped to the test's namespace). After a ConfigMap
//! change, what the running containers see, read with `kubectl exec`:
//!
//! * a frozen consumer (`envFrom` and `env[].valueFrom`, or a `subPath` file) ends with a new pod,
//!   and the new pod's PID 1 environment (`/proc/1/environ`) or file holds the new value;
//! * an in-place consumer (a ConfigMap volume without `subPath`) keeps its pod — same UID, no
//!   container restarted, no new ReplicaSet — and its file shows the new value within the
//!   kubelet's sync.
//!
//! Each test prints its observations as `envroll |` lines (run with `--nocapture`, as
//! `make e2e-kubelet` does). Run with `make e2e-kubelet`; on a cluster without the real node,
//! every test fails.

mod common;

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use common::case::DEPLOYMENT;
use common::operator::{Operator, OperatorConfig};
use common::real_node::{
    real_deployment, PodIdentity, RealNode, RunningPod, VOLUME_UPDATE_DEADLINE,
};
use common::workloads::{
    assert_replicasets_stay, config_map, create, expect_one_rollout, set_config_map_data,
    wait_deployment_settled, wait_for_event, NO_ROLLOUT_WINDOW,
};
use common::TestNamespace;

const OLD: &str = "blue";
const NEW: &str = "red";
const APP: &str = "app";
/// The ConfigMap every consumer reads (`COLOR`).
const CONFIG: &str = "color";
const AUTO: (&str, &str) = ("envroll.dev/auto", "true");

/// One test's real node, namespace (with the ConfigMap [`CONFIG`], `COLOR: blue`) and operator.
struct Scenario {
    node: RealNode,
    ns: TestNamespace,
    _operator: Operator,
}

impl Scenario {
    async fn new(prefix: &str) -> Result<Self> {
        let node = RealNode::require().await?;
        let ns = TestNamespace::create(&node.client, prefix).await?;
        create(
            &ns.api::<ConfigMap>(),
            &config_map(CONFIG, &[("COLOR", OLD)]),
        )
        .await?;
        let operator = OperatorConfig::scoped(&[ns.name()]).start_ready().await?;
        Ok(Self {
            node,
            ns,
            _operator: operator,
        })
    }

    /// Creates the managed Deployment `name` with `spec` on the real node, waits until envroll
    /// has adopted it and its pod runs, and returns that pod.
    async fn deploy(&self, name: &str, spec: Value) -> Result<RunningPod> {
        create(&self.ns.api(), &real_deployment(name, &[AUTO], spec)).await?;
        wait_deployment_settled(&self.node.client, self.ns.name(), name, true).await?;
        RunningPod::of_deployment(&self.node, &self.ns, name).await
    }

    async fn change(&self) -> Result<()> {
        set_config_map_data(&self.ns.api(), CONFIG, &[("COLOR", NEW)]).await
    }

    /// envroll rolled `name` out once (one new ReplicaSet, the rollout complete, envroll's
    /// config hash in the template, a `RolloutTriggered` Event naming the ConfigMap); returns the
    /// Deployment's pod after it and the Event's note.
    async fn expect_rollout(&self, name: &str) -> Result<(RunningPod, String)> {
        expect_one_rollout(&self.node.client, self.ns.name(), name, 1).await?;
        let event = wait_for_event(
            &self.node.client,
            self.ns.name(),
            DEPLOYMENT,
            name,
            "RolloutTriggered",
            &[CONFIG],
        )
        .await?;
        let pod = RunningPod::of_deployment(&self.node, &self.ns, name).await?;
        Ok((pod, event.note.unwrap_or_default()))
    }

    /// envroll left `name` alone: still one ReplicaSet after [`NO_ROLLOUT_WINDOW`].
    async fn expect_no_rollout(&self, name: &str) -> Result<()> {
        assert_replicasets_stay(
            &self.node.client,
            self.ns.name(),
            name,
            1,
            NO_ROLLOUT_WINDOW,
        )
        .await
    }
}

fn report(consumer: &str, before: &str, after: &str) {
    eprintln!("envroll | {consumer} | before: {before} | after: {after}");
}

/// `envFrom` and `env[].valueFrom`: envroll replaces the pod, and the new container's PID 1 was
/// started with the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn env_consumer_gets_a_new_pod_with_the_new_value() -> Result<()> {
    let s = Scenario::new("envroll-kubelet-env").await?;
    let pod = s
        .deploy(
            "env-consumer",
            json!({
                "containers": [{
                    "name": APP,
                    "envFrom": [{ "configMapRef": { "name": CONFIG } }],
                    "env": [{ "name": "KEY_COLOR", "valueFrom": { "configMapKeyRef": { "name": CONFIG, "key": "COLOR" } } }],
                }],
            }),
        )
        .await?;
    ensure!(pod.env_var(APP, "COLOR")? == OLD && pod.env_var(APP, "KEY_COLOR")? == OLD);
    let before = pod.identity().await?;

    s.change().await?;
    let (new_pod, note) = s.expect_rollout("env-consumer").await?;

    let (color, key_color) = (
        new_pod.env_var(APP, "COLOR")?,
        new_pod.env_var(APP, "KEY_COLOR")?,
    );
    let after = new_pod.identity().await?;
    report(
        "envFrom + valueFrom",
        &format!(
            "pod {} PID 1 env COLOR={OLD} KEY_COLOR={OLD} ({before})",
            pod.name
        ),
        &format!(
            "new pod {} PID 1 env COLOR={color} KEY_COLOR={key_color} ({after}); Event: {note}",
            new_pod.name
        ),
    );
    ensure!(
        after.uid != before.uid,
        "the env consumer kept its pod {before}"
    );
    ensure!(
        color == NEW && key_color == NEW,
        "the new pod's PID 1 env holds COLOR={color:?} KEY_COLOR={key_color:?}, not {NEW:?}"
    );
    assert_fresh(&after)
}

/// A ConfigMap volume without `subPath`: envroll leaves the pod alone and the kubelet updates the
/// file in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn volume_consumer_keeps_its_pod_and_sees_the_new_file() -> Result<()> {
    let s = Scenario::new("envroll-kubelet-volume").await?;
    let pod = s
        .deploy(
            "volume-consumer",
            json!({
                "containers": [{
                    "name": APP,
                    "volumeMounts": [{ "name": "config", "mountPath": "/etc/app" }],
                }],
                "volumes": [{ "name": "config", "configMap": { "name": CONFIG } }],
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/etc/app/COLOR")? == OLD);
    let before = pod.identity().await?;

    s.change().await?;
    let seen = pod
        .wait_file(APP, "/etc/app/COLOR", NEW, VOLUME_UPDATE_DEADLINE)
        .await?;
    s.expect_no_rollout("volume-consumer").await?;

    let after = pod.identity().await?;
    let current = RunningPod::of_deployment(&s.node, &s.ns, "volume-consumer").await?;
    report(
        "volume, no subPath",
        &format!("pod {} /etc/app/COLOR={OLD} ({before})", pod.name),
        &format!(
            "pod {} /etc/app/COLOR={NEW} after {seen:.1?} ({after}); one ReplicaSet {NO_ROLLOUT_WINDOW:?} later",
            current.name
        ),
    );
    ensure!(
        current.name == pod.name,
        "the volume consumer's pod {} was replaced by {}",
        pod.name,
        current.name
    );
    ensure!(
        before == after,
        "the pod changed: before {before}, after {after}"
    );
    assert_fresh(&after)
}

/// A ConfigMap volume mounted with `subPath`: the kubelet never updates the file, so envroll
/// replaces the pod, and the new pod's file holds the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster with the real node: make e2e-kubelet"]
async fn sub_path_consumer_gets_a_new_pod_with_the_new_file() -> Result<()> {
    let s = Scenario::new("envroll-kubelet-subpath").await?;
    let pod = s
        .deploy(
            "subpath-consumer",
            json!({
                "containers": [{
                    "name": APP,
                    "volumeMounts": [{ "name": "config", "mountPath": "/etc/app/color", "subPath": "COLOR" }],
                }],
                "volumes": [{ "name": "config", "configMap": { "name": CONFIG } }],
            }),
        )
        .await?;
    ensure!(pod.read(APP, "/etc/app/color")? == OLD);
    let before = pod.identity().await?;

    s.change().await?;
    let (new_pod, note) = s.expect_rollout("subpath-consumer").await?;

    let file = new_pod.read(APP, "/etc/app/color")?;
    let after = new_pod.identity().await?;
    report(
        "volume with subPath",
        &format!("pod {} /etc/app/color={OLD} ({before})", pod.name),
        &format!(
            "new pod {} /etc/app/color={file} ({after}); Event: {note}",
            new_pod.name
        ),
    );
    ensure!(
        after.uid != before.uid,
        "the subPath consumer kept its pod {before}"
    );
    ensure!(
        file == NEW,
        "the new pod's subPath file holds {file:?}, not {NEW:?}"
    );
    assert_fresh(&after)
}

/// No container of the pod restarted.
fn assert_fresh(identity: &PodIdentity) -> Result<()> {
    ensure!(
        identity.restarts.values().all(|n| *n == 0),
        "a container restarted: {identity}"
    );
    Ok(())
}
