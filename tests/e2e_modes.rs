//! Operating modes beyond the default: `--dry-run` (decide and report, never patch) and workloads
//! whose `OnDelete` update strategy means a rollout restarts nothing by itself.

mod common;

use anyhow::{ensure, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};
use serde_json::json;

use common::operator::OperatorConfig;
use common::workloads::{
    assert_replicasets_stay, config_map, container, count_controller_revisions, create, deployment,
    set_config_map_data, statefulset, wait_adopted, wait_for_controller_revisions, wait_for_event,
    APPLIED, NO_ROLLOUT_WINDOW,
};
use common::{wait_for_rollout, TestNamespace};

const AUTO: (&str, &str) = ("envroll.dev/auto", "true");

fn env_from(config_map: &str) -> serde_json::Value {
    json!({"containers": [container(json!({"envFrom": [{"configMapRef": {"name": config_map}}]}))]})
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: make e2e"]
async fn dry_run_reports_the_rollout_and_patches_nothing() -> Result<()> {
    let client = common::client().await?;
    let ns = TestNamespace::create(&client, "dry-run").await?;
    let config_maps: Api<ConfigMap> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    create(&config_maps, &config_map("app-env", &[("LEVEL", "info")])).await?;
    create(
        &deployments,
        &deployment("web", &[AUTO], env_from("app-env")),
    )
    .await?;
    wait_for_rollout(
        &client,
        ns.name(),
        "web",
        std::time::Duration::from_secs(120),
    )
    .await?;

    let mut operator = OperatorConfig::scoped(&[ns.name()])
        .arg("--dry-run")
        .start_ready()
        .await?;
    operator
        .wait_for_log("not adopted yet", std::time::Duration::from_secs(60))
        .await?;
    set_config_map_data(&config_maps, "app-env", &[("LEVEL", "debug")]).await?;
    wait_for_event(
        &client,
        ns.name(),
        "Deployment",
        "web",
        "DryRunRollout",
        &["dry run, would roll out", "ConfigMap app-env changed"],
    )
    .await?;
    assert_replicasets_stay(&client, ns.name(), "web", 1, NO_ROLLOUT_WINDOW).await?;
    let web = deployments.get("web").await?;
    ensure!(
        !web.annotations().contains_key(APPLIED),
        "dry run wrote a baseline onto the workload"
    );
    operator.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: make e2e"]
async fn on_delete_workloads_roll_out_with_a_warning() -> Result<()> {
    let client = common::client().await?;
    let ns = TestNamespace::create(&client, "on-delete").await?;
    let config_maps: Api<ConfigMap> = ns.api();
    let statefulsets: Api<StatefulSet> = ns.api();
    create(&config_maps, &config_map("db-env", &[("LEVEL", "info")])).await?;
    let mut db = statefulset("db", &[AUTO], env_from("db-env"));
    db.spec.as_mut().expect("spec").update_strategy =
        Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
    create(&statefulsets, &db).await?;

    let mut operator = OperatorConfig::scoped(&[ns.name()]).start_ready().await?;
    wait_adopted(&statefulsets, "db").await?;
    let before = count_controller_revisions(&statefulsets, "db").await?;
    set_config_map_data(&config_maps, "db-env", &[("LEVEL", "debug")]).await?;
    wait_for_controller_revisions(&statefulsets, "db", before + 1).await?;
    wait_for_event(
        &client,
        ns.name(),
        "StatefulSet",
        "db",
        "OnDeleteStrategy",
        &["OnDelete", "only when someone deletes them"],
    )
    .await?;
    // Touching the template is all envroll does: the pods of an OnDelete StatefulSet stay.
    let live = statefulsets.get("db").await?;
    ensure!(
        live.status.and_then(|s| s.updated_replicas).unwrap_or(0) == 0,
        "OnDelete pods were replaced without being deleted"
    );
    operator.stop().await?;
    Ok(())
}
