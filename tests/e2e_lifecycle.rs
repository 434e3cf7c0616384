//! End-to-end tests of what happens after envroll triggers a rollout: it follows the rollout to
//! its outcome (`RolloutSucceeded`, `RolloutStalled`), never starts another on top of one in
//! progress, and keeps to a per-workload budget of rollouts per hour. Each test runs in its own
//! namespace with its own operator, against the local control plane (whose
//! kube-controller-manager runs the Deployments).

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::json;

use common::case::{Case, DEPLOYMENT};
use common::kubectl::apply;
use common::operator::{explain_deployment_json, metric_value, Operator, OperatorConfig};
use common::workloads::{
    config_map, container, create, deployment, envroll_events, set_config_map_data,
    template_config_hash, wait_adopted, wait_deployment_settled, wait_for_event, web_manifest,
    IMAGE, REACTION_TIMEOUT,
};
use common::{count_owned_replicasets, poll_until, wait_for_rollout};

/// Applies `web` (reading `web-env` through `envFrom`) with extra annotations and waits until
/// envroll has adopted it.
async fn deploy_web(case: &Case, annotations: &[(&str, &str)]) -> Result<()> {
    apply(case.ns(), &web_manifest("info", IMAGE))?;
    for (key, value) in annotations {
        common::kubectl::kubectl(
            &[
                "-n",
                case.ns(),
                "annotate",
                "deploy/web",
                &format!("{key}={value}"),
            ],
            None,
        )?;
    }
    wait_deployment_settled(&case.client, case.ns(), "web", true).await?;
    Ok(())
}

/// Waits for an Event with this reason on the Deployment whose note contains every part of
/// `note`, then checks that the operator counted exactly one in `metric`.
async fn expect_event_counted(
    case: &Case,
    operator: &Operator,
    deployment: &str,
    (reason, note): (&str, &[&str]),
    metric: &str,
) -> Result<()> {
    wait_for_event(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        deployment,
        reason,
        note,
    )
    .await?;
    let metrics = operator.metrics().await?;
    let counted = metric_value(&metrics, metric, &[("kind", "Deployment")]);
    ensure!(counted == 1.0, "{metric} is {counted}, expected 1");
    Ok(())
}

/// A change rolls out, and once the new pods are available envroll says so, with the time the
/// rollout took, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_finished_rollout_is_reported_succeeded() -> Result<()> {
    let case = Case::new("succeeded").await?;
    let operator = case.operator().await?;
    deploy_web(&case, &[]).await?;

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    case.rollout_event("web", &["ConfigMap web-env changed"])
        .await?;
    let succeeded: &[&str] = &[
        "rollout for ConfigMap/web-env finished in",
        "the new pods are available",
    ];
    expect_event_counted(
        &case,
        &operator,
        "web",
        ("RolloutSucceeded", succeeded),
        "envroll_rollout_duration_seconds_count",
    )
    .await
}

/// A rollout whose pods can never be scheduled passes its progress deadline: envroll reports
/// it stalled, naming the change that triggered it and what the Deployment controller says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_rollout_past_its_progress_deadline_is_reported_stalled() -> Result<()> {
    let case = Case::new("stalled").await?;
    let operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("stuck-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({
        "nodeSelector": { "envroll.dev/no-such-node": "true" },
        "containers": [container(json!({
            "envFrom": [{ "configMapRef": { "name": "stuck-env" } }]
        }))]
    });
    let mut stuck = deployment("stuck", &[("envroll.dev/auto", "true")], spec);
    stuck
        .spec
        .as_mut()
        .expect("a spec")
        .progress_deadline_seconds = Some(5);
    create(&case.deployments(), &stuck).await?;
    wait_adopted(&case.deployments(), "stuck").await?;

    set_config_map_data(&case.config_maps(), "stuck-env", &[("LEVEL", "debug")]).await?;
    case.rollout_event("stuck", &["ConfigMap stuck-env changed"])
        .await?;
    let stalled: &[&str] = &[
        "rollout for ConfigMap/stuck-env stalled",
        "has timed out progressing",
    ];
    expect_event_counted(
        &case,
        &operator,
        "stuck",
        ("RolloutStalled", stalled),
        "envroll_rollouts_stalled_total",
    )
    .await
}

/// With a budget of one rollout an hour, the second change waits: a `RolloutThrottled`
/// Warning, no second rollout, and the change is counted, not dropped (`explain` still shows it
/// pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn over_its_budget_a_change_waits_with_a_warning() -> Result<()> {
    let case = Case::new("budget").await?;
    let operator = case.operator().await?;
    deploy_web(&case, &[("envroll.dev/max-rollouts-per-hour", "1")]).await?;

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    case.expect_one_rollout("web", 1).await?;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "trace")]).await?;
    let throttled: &[&str] = &["the change waits until the budget allows"];
    expect_event_counted(
        &case,
        &operator,
        "web",
        ("RolloutThrottled", throttled),
        "envroll_rollouts_throttled_total",
    )
    .await?;
    case.expect_no_rollout("web", 2).await?;
    let explained = explain_deployment_json(case.ns(), "web", None)?;
    ensure!(
        explained["rolloutPending"] == json!(true),
        "explain does not show the waiting change as pending: {explained}"
    );
    Ok(())
}

/// A source that changes every second for two minutes: envroll never starts a rollout on top
/// of one in progress, so the rollouts stay few (one per maximum wait at most), and once the
/// changes stop the last value is what the newest pods run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_flapping_source_gives_a_bounded_number_of_rollouts_and_the_last_value() -> Result<()> {
    const FLAPPING: u64 = 120;
    /// The default maximum wait: ten times the default 2 s debounce.
    const MAX_WAIT: u64 = 20;
    let case = Case::new("flapping-2m").await?;
    let operator = OperatorConfig::scoped(&[case.ns()])
        .default_debounce()
        .start_ready()
        .await?;
    deploy_web(&case, &[]).await?;

    let started = tokio::time::Instant::now();
    for second in 0..FLAPPING {
        tokio::time::sleep_until(started + Duration::from_secs(second)).await;
        let level = format!("v{second}");
        set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", &level)]).await?;
    }
    let settled = poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(500),
        "the last value to be rolled out",
        || async {
            let out = common::operator::explain("deploy/web", case.ns(), "json", None)?;
            let report: serde_json::Value = serde_json::from_str(&out)?;
            let web = report["workloads"][0].clone();
            Ok(
                (web["templateHash"] == web["configHash"] && web["rolloutPending"] == json!(false))
                    .then_some(web),
            )
        },
    )
    .await?;
    let deployment = wait_for_rollout(&case.client, case.ns(), "web", REACTION_TIMEOUT).await?;
    let hash = template_config_hash(&deployment.spec.clone().unwrap_or_default().template);
    ensure!(
        hash.as_deref() == settled["configHash"].as_str(),
        "the template carries {hash:?}, the last value hashes to {}",
        settled["configHash"]
    );
    let rollouts = count_owned_replicasets(&case.client, case.ns(), "web").await? - 1;
    let bound = (FLAPPING / MAX_WAIT + 2) as usize;
    eprintln!("{rollouts} rollouts for {FLAPPING} changes, one a second");
    ensure!(
        (1..=bound).contains(&rollouts),
        "{rollouts} rollouts for {FLAPPING} s of changes every second; expected 1 to {bound}"
    );
    let triggered = envroll_events(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        Some("RolloutTriggered"),
    )
    .await?;
    ensure!(
        triggered.len() == rollouts,
        "{} RolloutTriggered Events for {rollouts} rollouts",
        triggered.len()
    );
    let metrics = operator.metrics().await?;
    let held = metric_value(
        &metrics,
        "envroll_rollouts_held_total",
        &[("kind", "Deployment")],
    );
    eprintln!("{held} config states held while a rollout was in progress");
    // Nothing else rolls out afterwards.
    case.expect_no_rollout("web", rollouts + 1).await?;
    Ok(())
}
