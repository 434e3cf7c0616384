//! Smoke test of the local end-to-end control plane.
//!
//! Checks, against the real cluster named by `$KUBECONFIG`, what every later
//! end-to-end test relies on: a Deployment that consumes a ConfigMap through
//! `envFrom` rolls out to Ready pods on the fake (kwok) nodes, and a change to
//! its pod template produces a second ReplicaSet and a second completed
//! rollout; and RBAC is enforced for ServiceAccount tokens, which is how tests
//! run the operator with only the permissions its manifests grant. Skips (with
//! a loud notice) when `$KUBECONFIG` is unset.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, EnvFromSource, PodSpec, PodTemplateSpec,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use common::TestNamespace;

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
const RESTART_ANNOTATION: &str = "e2e.envroll.dev/restarted-at";

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "smoke".to_string())].into()
}

fn config_map() -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("smoke-config".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                ("GREETING".to_string(), "hello".to_string()),
                ("LOG_LEVEL".to_string(), "info".to_string()),
            ]
            .into(),
        ),
        ..ConfigMap::default()
    }
}

fn deployment() -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        // Never pulled: kwok nodes only pretend to run pods.
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        env_from: Some(vec![EnvFromSource {
                            config_map_ref: Some(ConfigMapEnvSource {
                                name: "smoke-config".into(),
                                optional: Some(false),
                            }),
                            ..EnvFromSource::default()
                        }]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// After a completed rollout: exactly `replicas` pods, all Ready, all bound to
/// kwok nodes, all carrying the current template's annotation value.
async fn assert_pods_ready_on_kwok_nodes(
    client: &kube::Client,
    ns: &str,
    deploy: &Deployment,
    restart_value: Option<&str>,
) -> Result<()> {
    let kwok_nodes = common::kwok_nodes(client).await?;
    ensure!(
        kwok_nodes.len() >= 2,
        "expected at least 2 kwok nodes, found {kwok_nodes:?}"
    );
    // Pods of the old ReplicaSet may still be terminating; look at live ones.
    let pods: Vec<_> = common::deployment_pods(client, ns, deploy)
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    ensure!(
        pods.len() == 2,
        "expected 2 live pods, found {:?}",
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    for pod in &pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .with_context(|| format!("pod {} is not scheduled", pod.name_any()))?;
        ensure!(
            kwok_nodes.contains(&node),
            "pod {} runs on {node}, which is not a kwok node",
            pod.name_any()
        );
        ensure!(
            common::pod_ready(pod),
            "pod {} is not Ready",
            pod.name_any()
        );
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        ensure!(
            phase == Some("Running"),
            "pod {} is in phase {phase:?}",
            pod.name_any()
        );
        ensure!(
            pod.annotations()
                .get(RESTART_ANNOTATION)
                .map(String::as_str)
                == restart_value,
            "pod {} has annotation {:?}, expected {restart_value:?}",
            pod.name_any(),
            pod.annotations().get(RESTART_ANNOTATION)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn deployment_rolls_out_and_rolls_again_on_template_change() -> Result<()> {
    let client = common::client().await?;
    let ns = TestNamespace::create(&client, "smoke").await?;
    let name = "smoke";

    let config_maps: Api<ConfigMap> = ns.api();
    config_maps
        .create(&PostParams::default(), &config_map())
        .await
        .context("creating the ConfigMap")?;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .context("creating the Deployment")?;

    // First rollout: one ReplicaSet, two Ready pods on kwok nodes.
    let deploy = common::wait_for_rollout(&client, ns.name(), name, ROLLOUT_TIMEOUT).await?;
    assert_eq!(
        deploy.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2)
    );
    assert_eq!(
        common::count_owned_replicasets(&client, ns.name(), name).await?,
        1
    );
    assert_pods_ready_on_kwok_nodes(&client, ns.name(), &deploy, None).await?;

    // Change the pod template: the Deployment controller makes a new
    // ReplicaSet and rolls the pods over to it.
    let restarted_at = "2024-01-01T00:00:00Z";
    let patch = json!({
        "spec": { "template": { "metadata": { "annotations": {
            RESTART_ANNOTATION: restarted_at
        }}}}
    });
    deployments
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("patching the pod template")?;

    let client_ref = &client;
    let ns_name = ns.name();
    common::poll_until(
        Duration::from_secs(60),
        Duration::from_millis(250),
        "a second ReplicaSet",
        || async move {
            let n = common::count_owned_replicasets(client_ref, ns_name, name).await?;
            Ok((n >= 2).then_some(n))
        },
    )
    .await?;

    let deploy = common::wait_for_rollout(&client, ns.name(), name, ROLLOUT_TIMEOUT).await?;
    let replicasets = common::owned_replicasets(&client, ns.name(), name).await?;
    assert_eq!(
        replicasets.len(),
        2,
        "expected exactly 2 ReplicaSets, got {:?}",
        replicasets.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let (old, new) = (&replicasets[0], &replicasets[1]);
    assert_eq!(old.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(new.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(new.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
    assert_eq!(
        new.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .map(String::as_str),
        Some(restarted_at)
    );
    // Old pods may take a moment to disappear; wait until only new ones remain.
    let deploy_ref = &deploy;
    common::poll_until(
        Duration::from_secs(60),
        Duration::from_millis(250),
        "old pods to go away",
        || async move {
            match assert_pods_ready_on_kwok_nodes(
                client_ref,
                ns_name,
                deploy_ref,
                Some(restarted_at),
            )
            .await
            {
                Ok(()) => Ok(Some(())),
                Err(_) => Ok(None),
            }
        },
    )
    .await?;
    assert_pods_ready_on_kwok_nodes(&client, ns.name(), &deploy, Some(restarted_at)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn service_account_token_gets_exactly_its_rbac() -> Result<()> {
    let client = common::client().await?;
    let ns = TestNamespace::create(&client, "rbac").await?;
    let sa_name = "reader";
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    };

    ns.api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(sa_name),
                ..ServiceAccount::default()
            },
        )
        .await
        .context("creating the ServiceAccount")?;
    let sa_client = common::service_account_client(ns.name(), sa_name).await?;
    let sa_config_maps: Api<ConfigMap> = Api::namespaced(sa_client.clone(), ns.name());

    // Nothing is bound to the ServiceAccount yet.
    let err = sa_config_maps
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without bindings must not list ConfigMaps");
    assert!(common::is_forbidden(&err), "expected 403, got {err}");

    // Grant read access to ConfigMaps in the test namespace only.
    ns.api::<Role>()
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("configmap-reader"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .context("creating the Role")?;
    ns.api::<RoleBinding>()
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("reader-configmaps"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "configmap-reader".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: sa_name.into(),
                    namespace: Some(ns.name().into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .context("creating the RoleBinding")?;

    let sa_config_maps_ref = &sa_config_maps;
    common::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "the RoleBinding to take effect",
        || async move {
            match sa_config_maps_ref.list(&ListParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(e) if common::is_forbidden(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;

    // Everything not granted stays forbidden: other resources, and the same
    // resource cluster-wide.
    let err = Api::<Deployment>::namespaced(sa_client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("Deployments were not granted");
    assert!(common::is_forbidden(&err), "expected 403, got {err}");
    let err = Api::<ConfigMap>::all(sa_client)
        .list(&ListParams::default())
        .await
        .expect_err("cluster-wide ConfigMaps were not granted");
    assert!(common::is_forbidden(&err), "expected 403, got {err}");
    Ok(())
}
