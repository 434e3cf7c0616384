//! Helpers shared by the end-to-end tests (`tests/e2e_*.rs`).
//!
//! The end-to-end tests talk to a real Kubernetes control plane, normally the
//! local one made by `e2e/cluster up` (or `make e2e`), found through
//! `$KUBECONFIG`. They are `#[ignore]`d, so a plain `cargo test` lists them as
//! ignored instead of running them; `make e2e` runs them with `--include-ignored`.
//! Run without `$KUBECONFIG`, they fail (see [`client`]).
//!
//! Each test works in its own namespace ([`TestNamespace`]), which is deleted
//! when the value is dropped, whether the test passed or panicked. Set
//! `ENVROLL_E2E_KEEP_NAMESPACES=1` to keep them for debugging.
//!
//! [`operator`] runs the real `envroll` binary as the operator under test;
//! [`workloads`] builds the objects the tests create and checks what happened
//! to them (ReplicaSets, ControllerRevisions, envroll's annotations, Events).

// Each `tests/e2e_*.rs` file compiles this module separately and uses only
// part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, Condition};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub mod case;
pub mod kubectl;
pub mod operator;
pub mod real_node;
pub mod workloads;

/// Annotation the kwok controller looks for on the nodes it manages.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Label put on every namespace the tests create, so leftovers are easy to
/// find: `kubectl get ns -l envroll.dev/e2e=true`.
pub const TEST_NAMESPACE_LABEL: &str = "envroll.dev/e2e";

/// A client for the cluster named by `$KUBECONFIG`, the first thing every
/// end-to-end test asks for. Without `$KUBECONFIG` it fails rather than fall
/// back to `~/.kube/config`, which may well be a real cluster.
pub async fn client() -> Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        bail!(
            "this end-to-end test needs a cluster and $KUBECONFIG is not set: run `make e2e`, \
             or `eval \"$(e2e/cluster up)\"` and then `cargo test --test 'e2e_*' -- --ignored`"
        );
    }
    Client::try_default()
        .await
        .context("building a Kubernetes client from $KUBECONFIG")
}

/// A kubeconfig (YAML) that authenticates as the ServiceAccount
/// `namespace/name` with a token from the TokenRequest API, made by
/// `e2e/sa-kubeconfig`. The ServiceAccount must exist.
pub fn service_account_kubeconfig(namespace: &str, name: &str, duration: &str) -> Result<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/sa-kubeconfig");
    let out = Command::new(&script)
        .args([namespace, name, duration])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {namespace} {name} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("kubeconfig is not UTF-8")
}

/// A client that acts as the ServiceAccount `namespace/name`, with exactly
/// the permissions RBAC grants it (see [`service_account_kubeconfig`]).
pub async fn service_account_client(namespace: &str, name: &str) -> Result<Client> {
    let yaml = service_account_kubeconfig(namespace, name, "1h")?;
    let kubeconfig =
        Kubeconfig::from_yaml(&yaml).context("parsing the ServiceAccount kubeconfig")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the ServiceAccount kubeconfig")?;
    Client::try_from(config).context("building the ServiceAccount client")
}

/// Whether `err` is the apiserver refusing a request (HTTP 403).
pub fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_forbidden())
}

/// A name that is unique across concurrently running tests and test runs,
/// shaped as a DNS label: `<prefix>-<suffix>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    let mixed = nanos
        .wrapping_mul(2_654_435_761)
        .wrapping_add(std::process::id().wrapping_mul(40_503))
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(97));
    format!("{prefix}-{mixed:08x}")
}

/// A namespace created for one test and deleted when dropped.
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` and waits until its `default`
    /// ServiceAccount exists (pods are rejected before that).
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = unique_name(&format!("e2e-{prefix}"));
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let created = Self {
            name,
            client: client.clone(),
        };
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &created.name);
        wait_for(
            &sa,
            "default",
            Duration::from_secs(60),
            "default ServiceAccount",
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await?;
        Ok(created)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An API handle for namespaced resources of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("ENVROLL_E2E_KEEP_NAMESPACES").is_some() {
            eprintln!(
                "keeping namespace {} (ENVROLL_E2E_KEEP_NAMESPACES is set)",
                self.name
            );
            return;
        }
        // Drop cannot await, and may run inside the test's runtime: issue the
        // delete from a separate thread with its own small runtime. The
        // namespace finishes terminating in the background.
        let name = self.name.clone();
        let client = self.client.clone();
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let api: Api<Namespace> = Api::all(client);
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                    Err(e) => Err(format!("deleting namespace {name}: {e}")),
                }
            })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: {e}"),
            Err(_) => eprintln!("warning: namespace cleanup thread panicked"),
        }
    }
}

/// Watches the object `name` until `cond` holds and returns it. Fails after
/// `timeout`, naming `what` and showing the last state seen.
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: C,
) -> Result<K>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("{what}: {name} does not exist"),
        Ok(Err(e)) => Err(anyhow!(e)).with_context(|| format!("watching {name} for {what}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            bail!("timed out after {timeout:?} waiting for {what} ({name}); last state: {last:#?}")
        }
    }
}

/// Calls `check` every `interval` until it returns `Ok(Some(value))`, then
/// returns that value. `Ok(None)` means "not yet"; an error ends the wait.
/// For conditions that span several objects, where a single watch does not do.
pub async fn poll_until<T, F, Fut>(
    timeout: Duration,
    interval: Duration,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Whether a Deployment's rollout is complete, by the same rules as
/// `kubectl rollout status`: the controller has observed the latest spec, all
/// replicas are updated and available, and no old replicas remain. Returns an
/// error if the rollout exceeded its progress deadline.
pub fn rollout_complete(d: &Deployment) -> Result<bool> {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else {
        return Ok(false);
    };
    if let Some(cond) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
    {
        if cond.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            bail!(
                "deployment {} exceeded its progress deadline: {}",
                d.name_any(),
                cond.message.as_deref().unwrap_or("")
            );
        }
    }
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    let want = spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    Ok(observed >= generation && updated == want && total == updated && available == updated)
}

/// Waits until the Deployment's rollout is complete (see [`rollout_complete`])
/// and returns the Deployment as last seen.
pub async fn wait_for_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    poll_until(
        timeout,
        Duration::from_millis(250),
        &format!("rollout of deployment {namespace}/{name}"),
        || async {
            let d = api
                .get(name)
                .await
                .with_context(|| format!("reading deployment {namespace}/{name}"))?;
            Ok(rollout_complete(&d)?.then_some(d))
        },
    )
    .await
    .with_context(|| format!("deployment {namespace}/{name} did not finish rolling out"))
}

/// The ReplicaSets whose controller owner is the Deployment `name`, oldest
/// first.
pub async fn owned_replicasets(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<ReplicaSet>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let uid = deployments
        .get(name)
        .await
        .with_context(|| format!("reading deployment {namespace}/{name}"))?
        .uid()
        .context("deployment has no uid")?;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let mut owned: Vec<ReplicaSet> = replicasets
        .list(&ListParams::default())
        .await
        .context("listing replicasets")?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    owned.sort_by_key(|rs| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    });
    Ok(owned)
}

/// How many ReplicaSets the Deployment `name` owns; each pod-template change
/// that the Deployment rolled out adds one.
pub async fn count_owned_replicasets(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<usize> {
    Ok(owned_replicasets(client, namespace, name).await?.len())
}

/// The pods matched by the Deployment's label selector.
pub async fn deployment_pods(
    client: &Client,
    namespace: &str,
    deployment: &Deployment,
) -> Result<Vec<Pod>> {
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .context("deployment has no matchLabels selector")?;
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing pods")?
        .items)
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Names of the nodes the kwok controller manages.
pub async fn kwok_nodes(client: &Client) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .into_iter()
        .filter(|n| n.annotations().contains_key(KWOK_NODE_ANNOTATION))
        .map(|n| n.name_any())
        .collect())
}
