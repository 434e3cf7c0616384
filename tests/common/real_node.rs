//! Pods that run for real, on the kubelet node `e2e/real-node` adds to the local cluster, and what
//! their containers see: the environment of PID 1 and the content of files, read with
//! `kubectl exec` as a person would.
//!
//! The node carries the label and taint [`REAL_NODE_LABEL`]`=true` (NoSchedule); [`real_pod`]
//! selects and tolerates it and runs [`BUSYBOX`], an image that exists only in the node's
//! containerd (`imagePullPolicy: Never`). A test that needs the node and does not find it fails
//! ([`RealNode::require`]); it never passes or skips.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::kubectl::kubectl_binary;
use super::workloads::deployment;
use super::TestNamespace;

/// Label (and taint key) of the real node.
pub const REAL_NODE_LABEL: &str = "envroll.dev/real-node";
/// The image of every container on the real node: busybox, imported by `e2e/real-node`.
pub const BUSYBOX: &str = "envroll.local/busybox:e2e";
/// The kubelet's `syncFrequency` on the real node (e2e/real-node; the default is 1m).
pub const KUBELET_SYNC: Duration = Duration::from_secs(10);
/// How long a change may take to reach a ConfigMap/Secret volume on the real node: a few sync
/// periods, on a machine that is busy with other work.
pub const VOLUME_UPDATE_DEADLINE: Duration = Duration::from_secs(60);
/// A pod on the real node starting (the image is local, so this is the kubelet and containerd).
const START_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);
/// Container states that will not become Running on their own.
const STUCK: &[&str] = &[
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
    "InvalidImageName",
];

/// The real node of the cluster under test.
pub struct RealNode {
    pub client: Client,
    pub name: String,
}

impl RealNode {
    /// The Ready node labelled [`REAL_NODE_LABEL`]`=true`, or an error saying how to get one.
    pub async fn require() -> Result<Self> {
        let client = super::client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let labelled = nodes
            .list(&ListParams::default().labels(&format!("{REAL_NODE_LABEL}=true")))
            .await
            .context("listing nodes")?
            .items;
        let ready = labelled.iter().find(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        match (ready, labelled.first()) {
            (Some(node), _) => Ok(Self {
                client,
                name: node.name_any(),
            }),
            (None, Some(node)) => bail!(
                "the real node {} is not Ready; see `e2e/real-node status` and the kubelet log in \
                 the cluster's logs/ directory",
                node.name_any()
            ),
            (None, None) => bail!(
                "this test needs a real kubelet node and the cluster has none (no Ready node \
                 labelled {REAL_NODE_LABEL}=true): run `make e2e-kubelet`, or \
                 `eval \"$(e2e/cluster up --real-node)\"` and then \
                 `cargo test --test e2e_kubelet_facts -- --ignored`"
            ),
        }
    }
}

/// A pod spec for the real node: `spec` with a node selector and toleration for it, no
/// ServiceAccount token or Service links, a one-second grace period, and in every container and
/// init container that does not say otherwise: [`BUSYBOX`] (never pulled) running
/// `sleep 2147483647` as PID 1.
pub fn real_pod_spec(mut spec: Value) -> Value {
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                let c = c.as_object_mut().expect("a container is an object");
                c.entry("image").or_insert(json!(BUSYBOX));
                c.entry("imagePullPolicy").or_insert(json!("Never"));
                c.entry("command").or_insert(json!(["sleep", "2147483647"]));
            }
        }
    }
    let fixed = json!({
        "nodeSelector": { REAL_NODE_LABEL: "true" },
        "tolerations": [{ "key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule" }],
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
    });
    let spec_map = spec.as_object_mut().expect("a pod spec is an object");
    for (k, v) in fixed.as_object().expect("object") {
        spec_map.insert(k.clone(), v.clone());
    }
    spec
}

/// A pod for the real node, with the spec of [`real_pod_spec`].
pub fn real_pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": real_pod_spec(spec),
    }))
    .expect("a valid pod")
}

/// A Deployment of one replica whose pods run on the real node (the pod spec of
/// [`real_pod_spec`]), with the given workload annotations.
pub fn real_deployment(name: &str, annotations: &[(&str, &str)], spec: Value) -> Deployment {
    deployment(name, annotations, real_pod_spec(spec))
}

/// A pod running on the real node, in a test namespace.
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    api: Api<Pod>,
}

/// What identifies a pod's containers as the same processes: the pod's UID and every container's
/// (and init container's) restart count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: String,
    pub restarts: BTreeMap<String, i32>,
}

impl std::fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let restarts: Vec<String> = self
            .restarts
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        write!(f, "uid {} restarts {}", self.uid, restarts.join(","))
    }
}

impl RunningPod {
    /// Creates the pod in `ns` and waits until it runs on `node` with every container ready.
    pub async fn start(node: &RealNode, ns: &TestNamespace, pod: Pod) -> Result<Self> {
        let api: Api<Pod> = ns.api();
        let name = pod.name_any();
        api.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        Self::attach(node, ns, &name).await
    }

    /// A pod that exists in `ns`, once it runs on `node` with every container ready.
    pub async fn attach(node: &RealNode, ns: &TestNamespace, name: &str) -> Result<Self> {
        let running = Self {
            namespace: ns.name().to_string(),
            name: name.to_string(),
            api: ns.api(),
        };
        running.wait_running(node).await?;
        Ok(running)
    }

    /// The one pod of the Deployment `name` once its rollout is complete and no other pod of it
    /// is left (a replaced pod is gone, not only terminating): it runs on `node`, every container
    /// ready.
    pub async fn of_deployment(node: &RealNode, ns: &TestNamespace, name: &str) -> Result<Self> {
        let deployment = super::wait_for_rollout(&node.client, ns.name(), name, START_TIMEOUT)
            .await
            .with_context(|| format!("deployment {name} on the real node"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pods = super::deployment_pods(&node.client, ns.name(), &deployment).await?;
            if let [pod] = pods.as_slice() {
                if pod.metadata.deletion_timestamp.is_none() {
                    return Self::attach(node, ns, &pod.name_any()).await;
                }
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
                bail!(
                    "deployment {name} still has pods {names:?} {START_TIMEOUT:?} after its \
                     rollout completed; expected one"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_running(&self, node: &RealNode) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pod = self.api.get(&self.name).await?;
            let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(other) = spec_node.as_deref().filter(|n| *n != node.name) {
                bail!(
                    "pod {} was scheduled to {other}, not to the real node",
                    self.name
                );
            }
            let status = pod.status.clone().unwrap_or_default();
            let statuses = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten());
            for s in statuses {
                let waiting = s.state.as_ref().and_then(|st| st.waiting.as_ref());
                if let Some(reason) = waiting
                    .and_then(|w| w.reason.as_deref())
                    .filter(|r| STUCK.contains(r))
                {
                    bail!(
                        "container {} of pod {} cannot start: {reason}: {}",
                        s.name,
                        self.name,
                        waiting.and_then(|w| w.message.as_deref()).unwrap_or("")
                    );
                }
            }
            if status.phase.as_deref() == Some("Running") && super::pod_ready(&pod) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "pod {} did not run on the real node within {START_TIMEOUT:?}; last status: \
                     {status:#?}",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The pod's UID and its containers' restart counts, as the API reports them now.
    pub async fn identity(&self) -> Result<PodIdentity> {
        let pod = self.api.get(&self.name).await?;
        let status = pod.status.unwrap_or_default();
        let restarts = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .map(|s| (s.name.clone(), s.restart_count))
            .collect();
        Ok(PodIdentity {
            uid: pod.metadata.uid.context("pod without uid")?,
            restarts,
        })
    }

    /// `kubectl exec` in `container`: its stdout.
    pub fn exec(&self, container: &str, command: &[&str]) -> Result<String> {
        let output = Command::new(kubectl_binary())
            .args([
                "exec",
                "-n",
                &self.namespace,
                &self.name,
                "-c",
                container,
                "--",
            ])
            .args(command)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl exec")?;
        ensure!(
            output.status.success(),
            "kubectl exec {}/{} -c {container} -- {}: {}",
            self.namespace,
            self.name,
            command.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The environment of the container's PID 1, read from `/proc/1/environ`.
    pub fn environ(&self, container: &str) -> Result<BTreeMap<String, String>> {
        let raw = self.exec(container, &["cat", "/proc/1/environ"])?;
        Ok(raw
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// One variable of PID 1's environment (an error if it is not set).
    pub fn env_var(&self, container: &str, name: &str) -> Result<String> {
        self.environ(container)?
            .remove(name)
            .with_context(|| format!("{name} is not in PID 1's environment in {container}"))
    }

    /// The content of a file in the container.
    pub fn read(&self, container: &str, path: &str) -> Result<String> {
        self.exec(container, &["cat", path])
    }

    /// Reads `path` until it holds `want`, for at most `deadline`; returns how long that took.
    pub async fn wait_file(
        &self,
        container: &str,
        path: &str,
        want: &str,
        deadline: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < deadline {
            last = self.read(container, path)?;
            if last == want {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "{path} in {}/{} still read {last:?}, not {want:?}, {deadline:?} after the change",
            self.name,
            container
        )
    }
}
