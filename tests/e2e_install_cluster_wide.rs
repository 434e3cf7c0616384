//! Installing envroll as the README says, cluster-wide: `kubectl apply -k manifests/cluster-wide`,
//! then two replicas running with that ServiceAccount's token (not admin), leader election on the
//! Lease, one rollout per change, a hand-over when the leader dies, and `kubectl delete -k`.
//!
//! One test in its own binary: a cluster-wide operator sees every namespace, so it must not run
//! beside the namespaced tests of other files.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use serde_json::json;

use common::kubectl::{kubectl, service_account_kubeconfig_file};
use common::operator::{metric_value, OperatorConfig};
use common::workloads::{
    config_map, container, create, deployment, expect_one_rollout, set_config_map_data,
    wait_deployment_settled,
};
use common::TestNamespace;

const LEASE_SECONDS: u64 = 6;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: make e2e"]
async fn cluster_wide_install_runs_with_its_service_account_and_hands_over_leadership() -> Result<()>
{
    let client = common::client().await?;
    kubectl(&["apply", "-k", "manifests/cluster-wide"], None)?;
    let identity = service_account_kubeconfig_file("envroll", "envroll")?;

    let ns = TestNamespace::create(&client, "install-cw").await?;
    let config_maps: Api<ConfigMap> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    create(&config_maps, &config_map("app-env", &[("LEVEL", "info")])).await?;
    let pod_spec = json!({"containers": [container(json!({"envFrom": [{"configMapRef": {"name": "app-env"}}]}))]});
    create(
        &deployments,
        &deployment("web", &[("envroll.dev/auto", "true")], pod_spec),
    )
    .await?;

    let replica = |name: &str| {
        OperatorConfig::cluster_wide()
            .kubeconfig(&identity)
            .arg("--leader-election")
            .arg("--pod-namespace=envroll")
            .arg(format!("--identity={name}"))
            .arg(format!("--lease-duration={LEASE_SECONDS}"))
            .labelled(name)
    };
    let mut first = replica("replica-a").start()?;
    first
        .wait_for_log("became leader", Duration::from_secs(60))
        .await?;
    first.wait_ready(Duration::from_secs(60)).await?;
    let mut second = replica("replica-b").start()?;
    second
        .wait_for_log("standing by for leadership", Duration::from_secs(60))
        .await?;
    wait_deployment_settled(&client, ns.name(), "web", true).await?;

    set_config_map_data(&config_maps, "app-env", &[("LEVEL", "debug")]).await?;
    expect_one_rollout(&client, ns.name(), "web", 1).await?;
    let metrics = first.metrics().await?;
    ensure!(
        metric_value(
            &metrics,
            "envroll_rollouts_total",
            &[("namespace", ns.name())]
        ) >= 1.0,
        "the leader's rollout counter did not move:\n{metrics}"
    );
    ensure!(
        second.log_line("RolloutTriggered").is_none()
            && second.log_line("changed; consumed via").is_none(),
        "the standby acted while the leader held the lease"
    );

    // SIGKILL: the lease is not released, so the standby must wait for it to expire.
    let killed_at = Instant::now();
    first.kill()?;
    second
        .wait_for_log("became leader", Duration::from_secs(LEASE_SECONDS * 4))
        .await?;
    let hand_over = killed_at.elapsed();
    eprintln!("leadership handed over {hand_over:?} after the leader was killed");
    ensure!(
        hand_over <= Duration::from_secs(LEASE_SECONDS * 2 + 5),
        "hand-over took {hand_over:?}, more than the lease duration ({LEASE_SECONDS}s) allows"
    );
    second.wait_ready(Duration::from_secs(60)).await?;

    set_config_map_data(&config_maps, "app-env", &[("LEVEL", "warn")]).await?;
    expect_one_rollout(&client, ns.name(), "web", 2).await?;
    second.stop().await?;

    kubectl(
        &["delete", "-k", "manifests/cluster-wide", "--timeout=120s"],
        None,
    )?;
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    ensure!(
        cluster_roles.get_opt("envroll").await?.is_none(),
        "kubectl delete -k left the ClusterRole behind"
    );
    Ok(())
}
