//! Installing envroll namespace-scoped from `manifests/namespaced`: Roles only, no cluster-scoped
//! object, and an operator identity that can read the watched namespace and nothing else.
//!
//! The manifests name the operator's namespace `envroll` and the watched one `apps`; the test
//! renders them with `kubectl kustomize` and moves both into namespaces of its own, so it can run
//! beside other tests and leaves nothing behind.

mod common;

use anyhow::{ensure, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ListParams;
use kube::Api;
use serde_json::json;

use common::kubectl::{kubectl, render_namespaced, service_account_kubeconfig_file};
use common::operator::OperatorConfig;
use common::workloads::{
    assert_replicasets_stay, config_map, container, create, deployment, expect_one_rollout,
    set_config_map_data, wait_deployment_settled, NO_ROLLOUT_WINDOW,
};
use common::TestNamespace;

const CLUSTER_SCOPED: [&str; 3] = ["Namespace", "ClusterRole", "ClusterRoleBinding"];

fn render_checked(operator_ns: &str, watched: &str) -> Result<String> {
    let rendered = render_namespaced(operator_ns, watched)?;
    for kind in CLUSTER_SCOPED {
        ensure!(
            !rendered.contains(&format!("\nkind: {kind}\n")),
            "manifests/namespaced renders a cluster-scoped {kind}"
        );
    }
    Ok(rendered)
}

fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    result.as_ref().err().is_some_and(common::is_forbidden)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: make e2e"]
async fn namespaced_install_reads_only_the_watched_namespace() -> Result<()> {
    let client = common::client().await?;
    let operator_ns = TestNamespace::create(&client, "install-op").await?;
    let watched = TestNamespace::create(&client, "install-apps").await?;
    let unwatched = TestNamespace::create(&client, "install-other").await?;
    kubectl(
        &["apply", "-f", "-"],
        Some(&render_checked(operator_ns.name(), watched.name())?),
    )?;
    let identity = service_account_kubeconfig_file(operator_ns.name(), "envroll")?;
    let operator_client = common::service_account_client(operator_ns.name(), "envroll").await?;

    let everywhere: Api<Secret> = Api::all(operator_client.clone());
    ensure!(
        is_forbidden(&everywhere.list(&ListParams::default().limit(1)).await),
        "the namespaced identity can list Secrets cluster-wide"
    );
    let elsewhere: Api<Secret> = Api::namespaced(operator_client.clone(), unwatched.name());
    ensure!(
        is_forbidden(&elsewhere.list(&ListParams::default().limit(1)).await),
        "the namespaced identity can list Secrets in an unwatched namespace"
    );
    let inside: Api<Secret> = Api::namespaced(operator_client.clone(), watched.name());
    inside.list(&ListParams::default().limit(1)).await?;

    let pod_spec = json!({"containers": [container(json!({"envFrom": [{"configMapRef": {"name": "app-env"}}]}))]});
    for ns in [&watched, &unwatched] {
        let config_maps: Api<ConfigMap> = ns.api();
        create(&config_maps, &config_map("app-env", &[("LEVEL", "info")])).await?;
        let deployments: Api<Deployment> = ns.api();
        create(
            &deployments,
            &deployment("web", &[("envroll.dev/auto", "true")], pod_spec.clone()),
        )
        .await?;
    }

    let mut operator = OperatorConfig::scoped(&[watched.name()])
        .kubeconfig(&identity)
        .start_ready()
        .await?;
    let scope = operator.log_line("envroll watching").unwrap_or_default();
    ensure!(
        scope.contains(watched.name()) && !scope.contains(unwatched.name()),
        "the start-up log does not name exactly the watched namespace: {scope}"
    );
    wait_deployment_settled(&client, watched.name(), "web", true).await?;
    wait_deployment_settled(&client, unwatched.name(), "web", false).await?;

    for ns in [&watched, &unwatched] {
        let config_maps: Api<ConfigMap> = ns.api();
        set_config_map_data(&config_maps, "app-env", &[("LEVEL", "debug")]).await?;
    }
    expect_one_rollout(&client, watched.name(), "web", 1).await?;
    assert_replicasets_stay(&client, unwatched.name(), "web", 1, NO_ROLLOUT_WINDOW).await?;
    ensure!(
        operator.log_line("forbidden").is_none(),
        "the operator hit RBAC errors with the namespaced manifests:\n{}",
        operator.log_tail(40)
    );
    operator.stop().await?;
    Ok(())
}
