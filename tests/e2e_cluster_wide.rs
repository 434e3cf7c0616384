//! End-to-end test of the operator in its default, cluster-wide mode (no
//! `--namespaces`).
//!
//! Kept in a file of its own: test binaries run one after another, so this
//! operator, which sees every namespace, never runs beside the namespaced
//! operators of `e2e_operator.rs`. It changes objects only in the namespace it
//! creates. Ignored unless asked for (`make e2e`), as every end-to-end test.

mod common;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

use common::operator::OperatorConfig;
use common::workloads::{
    config_map, container, create, deployment, expect_one_rollout, set_config_map_data,
    wait_deployment_settled, wait_for_event,
};
use common::TestNamespace;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn cluster_wide_mode_rolls_out_and_says_so() -> Result<()> {
    let client = common::client().await?;
    let ns = TestNamespace::create(&client, "cluster-wide").await?;
    let operator = OperatorConfig::cluster_wide().start_ready().await?;
    let watching = operator
        .log_line("envroll watching")
        .context("no start-up line")?;
    ensure!(
        watching.contains("all namespaces (cluster-wide)"),
        "the start-up line does not say cluster-wide: {watching}"
    );

    let config_maps: Api<ConfigMap> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    create(&config_maps, &config_map("web-env", &[("LEVEL", "info")])).await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    create(
        &deployments,
        &deployment("web", &[("envroll.dev/auto", "true")], spec),
    )
    .await?;
    wait_deployment_settled(&client, ns.name(), "web", true).await?;

    set_config_map_data(&config_maps, "web-env", &[("LEVEL", "debug")]).await?;
    expect_one_rollout(&client, ns.name(), "web", 1).await?;
    wait_for_event(
        &client,
        ns.name(),
        "Deployment",
        "web",
        "RolloutTriggered",
        &["ConfigMap web-env changed"],
    )
    .await?;
    Ok(())
}
