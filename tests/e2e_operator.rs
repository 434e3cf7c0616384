//! End-to-end tests of the operator (`envroll run`) on a real control plane.
//!
//! Every test creates its own namespace and runs its own operator process,
//! scoped to that namespace with `--namespaces`, a free metrics port and a
//! 500 ms debounce, so the tests of this file run in parallel without seeing
//! each other. Workloads run on kwok's fake nodes, where pods become Ready
//! and rollouts complete. A rollout is counted the way Kubernetes records it:
//! one new ReplicaSet (Deployments) or ControllerRevision (StatefulSets,
//! DaemonSets) per new pod template.
//!
//! Ignored by a plain `cargo test`: they need a cluster; run them with
//! `make e2e`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet, StatefulSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use common::case::{Case, DEPLOYMENT};
use common::kubectl::apply;
use common::operator::{metric_value, Operator, OperatorConfig};
use common::workloads::{
    assert_controller_revisions_stay, assert_replicasets_stay, config_map, container,
    count_controller_revisions, create, daemonset, delete_and_wait, deployment, envroll_events,
    named_container, secret, set_config_map_data, set_secret_data, statefulset,
    template_config_hash, wait_adopted, wait_deployment_settled, wait_for_controller_revisions,
    wait_for_daemonset_rollout, wait_for_event, wait_for_replicasets, wait_for_statefulset_rollout,
    web_manifest, APPLIED, NO_ROLLOUT_WINDOW, REACTION_TIMEOUT, ROLLOUT_TIMEOUT, SETTLE_WINDOW,
};
use common::{poll_until, wait_for_rollout, TestNamespace};

const AUTO: (&str, &str) = ("envroll.dev/auto", "true");

/// Reconciles the operator has finished so far.
async fn reconciles(operator: &Operator) -> Result<f64> {
    Ok(metric_value(
        &operator.metrics().await?,
        "envroll_reconcile_duration_seconds_count",
        &[],
    ))
}

/// Waits until the operator has finished more than `before` reconciles: it
/// has looked at the change just made (used before "no rollout" checks, so
/// they do not pass merely because the operator never noticed).
async fn wait_for_reconciles(operator: &Operator, before: f64) -> Result<()> {
    poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(100),
        "the operator to reconcile the change",
        || async move { Ok((reconciles(operator).await? > before).then_some(())) },
    )
    .await
}

async fn rollouts_total(operator: &Operator, namespace: &str) -> Result<f64> {
    Ok(metric_value(
        &operator.metrics().await?,
        "envroll_rollouts_total",
        &[("namespace", namespace)],
    ))
}

/// 1. A ConfigMap consumed through `envFrom` changes: exactly one new
/// ReplicaSet, the rollout completes, a `RolloutTriggered` Event names the
/// ConfigMap, and the rollout counter moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn env_from_config_map_change_rolls_out_once() -> Result<()> {
    let case = Case::new("envfrom").await?;
    let operator = case.operator().await?;
    let (status, body) = operator.get("/readyz").await?;
    ensure!(
        status == 200,
        "/readyz answered {status} {body:?} after sync"
    );

    create(
        &case.config_maps(),
        &config_map("web-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;
    let counted = rollouts_total(&operator, case.ns()).await?;
    ensure!(
        counted == 0.0,
        "rollouts counted before any change: {counted}"
    );

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    let web = case.expect_one_rollout("web", 1).await?;
    let ready = web.status.as_ref().and_then(|s| s.ready_replicas);
    ensure!(
        ready == Some(1),
        "ready replicas after the rollout: {ready:?}"
    );
    case.rollout_event(
        "web",
        &["ConfigMap web-env changed", "envFrom in container app"],
    )
    .await?;

    // The baseline records the hash now in the template.
    let applied: serde_json::Value = serde_json::from_str(
        web.annotations()
            .get(APPLIED)
            .context("no baseline annotation")?,
    )?;
    let hash = template_config_hash(&web.spec.clone().unwrap_or_default().template);
    ensure!(
        applied["hash"].as_str() == hash.as_deref(),
        "baseline {applied} does not match the template's hash {hash:?}"
    );

    let metrics = operator.metrics().await?;
    let rolled = metric_value(
        &metrics,
        "envroll_rollouts_total",
        &[
            ("kind", "Deployment"),
            ("namespace", case.ns()),
            ("source_kind", "ConfigMap"),
            ("dry_run", "false"),
        ],
    );
    ensure!(
        rolled == 1.0,
        "envroll_rollouts_total is {rolled}:\n{metrics}"
    );
    ensure!(
        metric_value(&metrics, "envroll_managed_workloads", &[]) == 1.0,
        "envroll_managed_workloads:\n{metrics}"
    );
    Ok(())
}

/// 2. A ConfigMap mounted as a volume (no subPath) changes: kubelet refreshes
/// the files, so nothing rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn volume_mounted_config_map_change_does_not_roll_out() -> Result<()> {
    let case = Case::new("volume").await?;
    let operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("files", &[("app.conf", "a=1")]),
    )
    .await?;
    let spec = json!({
        "containers": [container(json!({
            "volumeMounts": [{ "name": "files", "mountPath": "/etc/app" }]
        }))],
        "volumes": [{ "name": "files", "configMap": { "name": "files" } }]
    });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    let before = reconciles(&operator).await?;
    set_config_map_data(&case.config_maps(), "files", &[("app.conf", "a=2")]).await?;
    wait_for_reconciles(&operator, before).await?;
    case.expect_no_rollout("web", 1).await?;
    let events = envroll_events(&case.client, case.ns(), DEPLOYMENT, "web", None).await?;
    ensure!(
        events.is_empty(),
        "unexpected Events: {:?}",
        events.iter().map(|e| &e.note).collect::<Vec<_>>()
    );
    Ok(())
}

/// 3a. A ConfigMap key mounted with `subPath` changes: the bind mount pins the
/// old file, so the workload rolls out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn sub_path_mounted_change_rolls_out_once() -> Result<()> {
    let case = Case::new("subpath").await?;
    let _operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("files", &[("app.conf", "a=1")]),
    )
    .await?;
    let spec = json!({
        "containers": [container(json!({
            "volumeMounts": [{
                "name": "files", "mountPath": "/etc/app.conf", "subPath": "app.conf"
            }]
        }))],
        "volumes": [{ "name": "files", "configMap": { "name": "files" } }]
    });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    set_config_map_data(&case.config_maps(), "files", &[("app.conf", "a=2")]).await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["ConfigMap files changed", "subPath"])
        .await
}

/// 3b. A volume mounted only by an init container changes: init containers
/// run once, so the workload rolls out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn init_container_volume_change_rolls_out_once() -> Result<()> {
    let case = Case::new("init").await?;
    let _operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("templates", &[("render.tmpl", "v1")]),
    )
    .await?;
    let spec = json!({
        "initContainers": [named_container("render", json!({
            "volumeMounts": [{ "name": "templates", "mountPath": "/templates" }]
        }))],
        "containers": [container(json!({}))],
        "volumes": [{ "name": "templates", "configMap": { "name": "templates" } }]
    });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    set_config_map_data(&case.config_maps(), "templates", &[("render.tmpl", "v2")]).await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event(
        "web",
        &["ConfigMap templates changed", "init container render"],
    )
    .await
}

/// 4. `configMapKeyRef`: a change to another key of the ConfigMap does not
/// roll out; a change to the referenced key does, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn config_map_key_ref_rolls_out_only_for_the_referenced_key() -> Result<()> {
    let case = Case::new("keyref").await?;
    let operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("settings", &[("LEVEL", "info"), ("UNUSED", "x")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "env": [{
            "name": "LOG_LEVEL",
            "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "LEVEL" } }
        }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    let before = reconciles(&operator).await?;
    set_config_map_data(&case.config_maps(), "settings", &[("UNUSED", "y")]).await?;
    wait_for_reconciles(&operator, before).await?;
    case.expect_no_rollout("web", 1).await?;

    set_config_map_data(&case.config_maps(), "settings", &[("LEVEL", "debug")]).await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["ConfigMap settings changed", "key LEVEL"])
        .await
}

/// 5. Secrets consumed through `secretKeyRef` and through `envFrom` (by the
/// same Deployment): each change rolls out once, and each Event names the
/// Secret that changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn secret_key_ref_and_env_from_changes_each_roll_out_once() -> Result<()> {
    let case = Case::new("secret").await?;
    let _operator = case.operator().await?;
    create(&case.secrets(), &secret("db", &[("password", "hunter2")])).await?;
    create(&case.secrets(), &secret("api-keys", &[("TOKEN", "t1")])).await?;
    let spec = json!({ "containers": [container(json!({
        "env": [{
            "name": "DB_PASSWORD",
            "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } }
        }],
        "envFrom": [{ "secretRef": { "name": "api-keys" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    set_secret_data(&case.secrets(), "db", &[("password", "correct-horse")]).await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["Secret db changed", "key password"])
        .await?;

    set_secret_data(&case.secrets(), "api-keys", &[("TOKEN", "t2")]).await?;
    case.expect_one_rollout("web", 2).await?;
    case.rollout_event("web", &["Secret api-keys changed", "envFrom"])
        .await
}

/// 6a. A StatefulSet consuming a ConfigMap through `envFrom`: one new
/// ControllerRevision, and the rolling update completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn statefulset_env_from_change_rolls_out_once() -> Result<()> {
    let case = Case::new("sts").await?;
    let _operator = case.operator().await?;
    create(&case.config_maps(), &config_map("db-env", &[("MODE", "a")])).await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "db-env" } }]
    }))] });
    let api: Api<StatefulSet> = case.ns.api();
    create(&api, &statefulset("db", &[AUTO], spec)).await?;
    wait_adopted(&api, "db").await?;
    wait_for_statefulset_rollout(&api, "db").await?;
    let before = count_controller_revisions(&api, "db").await?;
    ensure!(before == 1, "{before} ControllerRevisions after creation");

    set_config_map_data(&case.config_maps(), "db-env", &[("MODE", "b")]).await?;
    wait_for_controller_revisions(&api, "db", 2).await?;
    let db = wait_for_statefulset_rollout(&api, "db").await?;
    let status = db.status.clone().unwrap_or_default();
    ensure!(
        status.ready_replicas == Some(2) && status.update_revision == status.current_revision,
        "unexpected status after the rollout: {status:?}"
    );
    ensure!(
        template_config_hash(&db.spec.clone().unwrap_or_default().template).is_some(),
        "the template has no config hash"
    );
    assert_controller_revisions_stay(&api, "db", 2, SETTLE_WINDOW).await?;
    wait_for_event(
        &case.client,
        case.ns(),
        "StatefulSet",
        "db",
        "RolloutTriggered",
        &["ConfigMap db-env changed"],
    )
    .await?;
    Ok(())
}

/// 6b. A DaemonSet consuming a ConfigMap through `envFrom`: one new
/// ControllerRevision, and every node runs an updated, available pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn daemonset_env_from_change_rolls_out_once() -> Result<()> {
    let case = Case::new("ds").await?;
    let _operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("agent-env", &[("MODE", "a")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "agent-env" } }]
    }))] });
    let api: Api<DaemonSet> = case.ns.api();
    create(&api, &daemonset("agent", &[AUTO], spec)).await?;
    wait_adopted(&api, "agent").await?;
    wait_for_daemonset_rollout(&api, "agent").await?;
    let before = count_controller_revisions(&api, "agent").await?;
    ensure!(before == 1, "{before} ControllerRevisions after creation");

    set_config_map_data(&case.config_maps(), "agent-env", &[("MODE", "b")]).await?;
    wait_for_controller_revisions(&api, "agent", 2).await?;
    let agent = wait_for_daemonset_rollout(&api, "agent").await?;
    let status = agent.status.clone().unwrap_or_default();
    ensure!(
        status.desired_number_scheduled >= 1
            && status.updated_number_scheduled == Some(status.desired_number_scheduled)
            && status.number_available == Some(status.desired_number_scheduled),
        "unexpected status after the rollout: {status:?}"
    );
    assert_controller_revisions_stay(&api, "agent", 2, SETTLE_WINDOW).await?;
    wait_for_event(
        &case.client,
        case.ns(),
        "DaemonSet",
        "agent",
        "RolloutTriggered",
        &["ConfigMap agent-env changed"],
    )
    .await?;
    Ok(())
}

/// ReplicaSets per owning Deployment name.
async fn replicasets_by_deployment(case: &Case) -> Result<BTreeMap<String, usize>> {
    let api: Api<ReplicaSet> = case.ns.api();
    let mut counts = BTreeMap::new();
    for rs in api.list(&ListParams::default()).await?.items {
        for owner in rs.owner_references() {
            if owner.kind == DEPLOYMENT && owner.controller == Some(true) {
                *counts.entry(owner.name.clone()).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// What must not change when an operator starts or restarts: per Deployment,
/// its generation, baseline and ReplicaSet count.
async fn fleet_state(
    case: &Case,
    names: &[String],
) -> Result<BTreeMap<String, (i64, Option<String>, usize)>> {
    let replicasets = replicasets_by_deployment(case).await?;
    let mut state = BTreeMap::new();
    for d in case.deployments().list(&ListParams::default()).await?.items {
        let name = d.name_any();
        if let Some(hash) = template_config_hash(&d.spec.clone().unwrap_or_default().template) {
            bail!("deployment {name} has a config hash ({hash}): it was rolled out");
        }
        state.insert(
            name.clone(),
            (
                d.metadata.generation.unwrap_or_default(),
                d.annotations().get(APPLIED).cloned(),
                replicasets.get(&name).copied().unwrap_or(0),
            ),
        );
    }
    let listed: Vec<&String> = state.keys().collect();
    ensure!(
        listed.len() == names.len(),
        "expected deployments {names:?}, found {listed:?}"
    );
    Ok(state)
}

/// 7. An operator started on a namespace with 20 managed workloads rolls
/// nothing out; neither does a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn start_and_restart_roll_nothing_out() -> Result<()> {
    let case = Case::new("fleet").await?;
    const FLEET: usize = 20;
    let names: Vec<String> = (0..FLEET).map(|i| format!("app-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let source = format!("{name}-env");
        create(
            &case.config_maps(),
            &config_map(&source, &[("INDEX", &i.to_string())]),
        )
        .await?;
        // A mix of consumption: envFrom, a key reference and a subPath mount.
        let consumption = match i % 3 {
            0 => json!({ "envFrom": [{ "configMapRef": { "name": source } }] }),
            1 => json!({ "env": [{ "name": "INDEX", "valueFrom": {
                "configMapKeyRef": { "name": source, "key": "INDEX" } } }] }),
            _ => json!({ "volumeMounts": [{
                "name": "cfg", "mountPath": "/etc/index", "subPath": "INDEX" }] }),
        };
        let spec = json!({
            "containers": [container(consumption)],
            "volumes": [{ "name": "cfg", "configMap": { "name": source } }]
        });
        create(&case.deployments(), &deployment(name, &[AUTO], spec)).await?;
    }
    for name in &names {
        wait_for_rollout(&case.client, case.ns(), name, ROLLOUT_TIMEOUT).await?;
    }
    let created = fleet_state(&case, &names).await?;
    ensure!(
        created
            .values()
            .all(|(_, applied, rs)| applied.is_none() && *rs == 1),
        "unexpected state before the operator started: {created:#?}"
    );

    // First start: every workload gets a baseline, none a rollout.
    let config = OperatorConfig::scoped(&[case.ns()]);
    let mut operator = config.start_ready().await?;
    for name in &names {
        wait_adopted(&case.deployments(), name).await?;
    }
    assert_fleet_untouched(&case, &names, &operator, FLEET).await?;
    let adopted = fleet_state(&case, &names).await?;
    // (A Deployment's generation counts annotation changes too, so the
    // baseline moved it; the ReplicaSets show that the template did not.)
    for (name, (_, applied, rs)) in &adopted {
        ensure!(
            applied.is_some() && *rs == 1,
            "deployment {name} after the first start: baseline {applied:?}, {rs} ReplicaSets"
        );
    }

    // Restart: the new process finds every baseline up to date.
    let status = operator.stop().await?;
    ensure!(
        status.success(),
        "the operator exited with {status} on SIGTERM"
    );
    ensure!(
        operator.log_line("termination requested").is_some(),
        "no shutdown log line"
    );
    let operator = config.start_ready().await?;
    assert_fleet_untouched(&case, &names, &operator, FLEET).await?;
    let restarted = fleet_state(&case, &names).await?;
    ensure!(
        restarted == adopted,
        "the restart changed workloads:\nbefore: {adopted:#?}\nafter: {restarted:#?}"
    );
    Ok(())
}

/// Waits until the operator has reconciled at least `fleet` workloads, then
/// watches for [`NO_ROLLOUT_WINDOW`] that no Deployment gets a second
/// ReplicaSet, and that the operator counted no rollout.
async fn assert_fleet_untouched(
    case: &Case,
    names: &[String],
    operator: &Operator,
    fleet: usize,
) -> Result<()> {
    poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(200),
        "the operator to reconcile every workload",
        || async move { Ok((reconciles(operator).await? >= fleet as f64).then_some(())) },
    )
    .await?;
    let deadline = tokio::time::Instant::now() + NO_ROLLOUT_WINDOW;
    loop {
        let counts = replicasets_by_deployment(case).await?;
        for name in names {
            let n = counts.get(name).copied().unwrap_or(0);
            ensure!(
                n == 1,
                "deployment {name} owns {n} ReplicaSets: it was rolled out"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rolled = rollouts_total(operator, case.ns()).await?;
    ensure!(rolled == 0.0, "the operator counted {rolled} rollouts");
    Ok(())
}

/// 8. A change made while the operator is stopped rolls out exactly once
/// after it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn change_while_stopped_rolls_out_once_after_start() -> Result<()> {
    let case = Case::new("down").await?;
    let config = OperatorConfig::scoped(&[case.ns()]);
    let mut operator = config.start_ready().await?;
    create(
        &case.config_maps(),
        &config_map("web-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;
    let status = operator.stop().await?;
    ensure!(
        status.success(),
        "the operator exited with {status} on SIGTERM"
    );

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    let _operator = config.start_ready().await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["ConfigMap web-env changed"])
        .await
}

/// 9. `--namespaces a`: a change in `a` rolls out; the same change to the same
/// objects in `b` does not, and the start-up log names `a` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn namespace_scope_leaves_other_namespaces_alone() -> Result<()> {
    let a = Case::new("scope-a").await?;
    let b = Case {
        client: a.client.clone(),
        ns: TestNamespace::create(&a.client, "scope-b").await?,
    };
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    for case in [&a, &b] {
        create(
            &case.config_maps(),
            &config_map("web-env", &[("LEVEL", "info")]),
        )
        .await?;
        create(
            &case.deployments(),
            &deployment("web", &[AUTO], spec.clone()),
        )
        .await?;
    }
    let operator = a.operator().await?;
    wait_deployment_settled(&a.client, a.ns(), "web", true).await?;
    wait_deployment_settled(&b.client, b.ns(), "web", false).await?;

    let watching = operator
        .log_line("envroll watching")
        .context("no start-up line")?;
    ensure!(
        watching.contains(a.ns()) && watching.contains("only"),
        "the start-up line does not name {}: {watching}",
        a.ns()
    );
    let logs = operator.logs();
    if let Some(line) = logs.iter().find(|line| line.contains(b.ns())) {
        bail!("the operator logged the other namespace {}: {line}", b.ns());
    }

    for case in [&a, &b] {
        set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    }
    tokio::try_join!(a.expect_one_rollout("web", 1), async {
        b.expect_no_rollout("web", 1).await.context("namespace b")
    })?;
    let untouched = b.deployments().get("web").await?;
    ensure!(
        !untouched.annotations().contains_key(APPLIED),
        "the operator wrote its baseline into namespace b"
    );
    let events = envroll_events(&b.client, b.ns(), DEPLOYMENT, "web", None).await?;
    ensure!(events.is_empty(), "Events in namespace b: {events:?}");
    Ok(())
}

/// 10a. A ConfigMap named in `envroll.dev/configmaps` rolls out when it
/// changes even though it is only mounted as a volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn named_volume_source_rolls_out() -> Result<()> {
    let case = Case::new("named").await?;
    let _operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("files", &[("app.conf", "a=1")]),
    )
    .await?;
    let spec = json!({
        "containers": [container(json!({
            "volumeMounts": [{ "name": "files", "mountPath": "/etc/app" }]
        }))],
        "volumes": [{ "name": "files", "configMap": { "name": "files" } }]
    });
    let annotations = [("envroll.dev/configmaps", "files")];
    case.deploy(deployment("web", &annotations, spec), true)
        .await?;

    set_config_map_data(&case.config_maps(), "files", &[("app.conf", "a=2")]).await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["ConfigMap files changed"])
        .await
}

/// 10b. A ConfigMap annotated `envroll.dev/ignore: "true"` never rolls out,
/// even when consumed through env.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn ignored_config_map_does_not_roll_out() -> Result<()> {
    let case = Case::new("ignore").await?;
    let operator = case.operator().await?;
    let mut ignored = config_map("web-env", &[("LEVEL", "info")]);
    ignored.metadata.annotations =
        Some([("envroll.dev/ignore".to_string(), "true".to_string())].into());
    create(&case.config_maps(), &ignored).await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    let before = reconciles(&operator).await?;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    wait_for_reconciles(&operator, before).await?;
    case.expect_no_rollout("web", 1).await
}

/// 10c. An optional source (`envFrom` with `optional: true`) that does not
/// exist: creating it rolls out, deleting it rolls out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn optional_source_created_and_deleted_rolls_out_each_time() -> Result<()> {
    let case = Case::new("optional").await?;
    let _operator = case.operator().await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "overrides", "optional": true } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    create(
        &case.config_maps(),
        &config_map("overrides", &[("LEVEL", "debug")]),
    )
    .await?;
    case.expect_one_rollout("web", 1).await?;
    case.rollout_event("web", &["ConfigMap overrides changed"])
        .await?;

    delete_and_wait(&case.config_maps(), "overrides").await?;
    case.expect_one_rollout("web", 2).await?;
    Ok(())
}

/// 10d. A required source is deleted: no rollout (new pods would fail), and a
/// `SourceMissing` Warning Event instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn missing_required_source_warns_without_rolling_out() -> Result<()> {
    let case = Case::new("missing").await?;
    let _operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("web-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    delete_and_wait(&case.config_maps(), "web-env").await?;
    let warning = wait_for_event(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        "SourceMissing",
        &["ConfigMap web-env is missing"],
    )
    .await?;
    ensure!(
        warning.type_.as_deref() == Some("Warning"),
        "SourceMissing is not a Warning: {warning:?}"
    );
    case.expect_no_rollout("web", 1).await
}

/// 11. With the default debounce, a new image and a changed ConfigMap applied
/// together (one `kubectl apply -f` of both) give one rollout, not two; and
/// the baseline follows the new template, so the next change rolls out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn default_debounce_merges_image_and_config_change() -> Result<()> {
    let case = Case::new("debounce").await?;
    let _operator = OperatorConfig::scoped(&[case.ns()])
        .default_debounce()
        .start_ready()
        .await?;
    apply(case.ns(), &web_manifest("info", "pause:1"))?;
    let adopted = wait_deployment_settled(&case.client, case.ns(), "web", true).await?;
    let baseline = adopted.annotations().get(APPLIED).cloned();

    // The ConfigMap comes first: without a debounce, its change alone would
    // roll out before the new image arrives.
    apply(case.ns(), &web_manifest("debug", "pause:2"))?;
    wait_for_replicasets(&case.client, case.ns(), "web", 2).await?;
    wait_for_rollout(&case.client, case.ns(), "web", ROLLOUT_TIMEOUT).await?;
    // Longer than the default debounce (2 s), so a late second rollout shows.
    assert_replicasets_stay(&case.client, case.ns(), "web", 2, Duration::from_secs(6)).await?;
    let replicasets = common::owned_replicasets(&case.client, case.ns(), "web").await?;
    let newest = replicasets.last().context("no ReplicaSet")?;
    let template = newest
        .spec
        .clone()
        .unwrap_or_default()
        .template
        .unwrap_or_default();
    let image = template
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone());
    ensure!(
        image.as_deref() == Some("pause:2"),
        "the new ReplicaSet runs {image:?}"
    );

    // The baseline moved to the new template without a rollout of its own.
    let rebaselined = poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(250),
        "envroll to record the new template in its baseline",
        || async {
            let web = case.deployments().get("web").await?;
            let applied = web.annotations().get(APPLIED).cloned();
            Ok((applied != baseline).then_some(web))
        },
    )
    .await?;
    ensure!(
        template_config_hash(&rebaselined.spec.clone().unwrap_or_default().template).is_none(),
        "envroll wrote a config hash although the template change already rolled out"
    );

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "trace")]).await?;
    case.expect_one_rollout("web", 2).await?;
    Ok(())
}

/// 12. Malformed annotations give `InvalidAnnotation` Warning Events; the
/// operator keeps serving and keeps rolling out valid workloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn malformed_annotations_warn_and_the_operator_keeps_working() -> Result<()> {
    let case = Case::new("malformed").await?;
    let mut operator = case.operator().await?;
    create(&case.config_maps(), &config_map("a", &[("K", "1")])).await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "a" } }]
    }))] });
    let eager = deployment("eager", &[("envroll.dev/auto", "yes please")], spec.clone());
    let lists = deployment("lists", &[("envroll.dev/configmaps", "a,,b")], spec);
    create(&case.deployments(), &eager).await?;
    create(&case.deployments(), &lists).await?;

    for (name, parts) in [
        ("eager", ["envroll.dev/auto", "yes please"]),
        ("lists", ["envroll.dev/configmaps", "entry 2 is empty"]),
    ] {
        let warning = wait_for_event(
            &case.client,
            case.ns(),
            DEPLOYMENT,
            name,
            "InvalidAnnotation",
            &parts,
        )
        .await?;
        ensure!(
            warning.type_.as_deref() == Some("Warning"),
            "not a Warning: {warning:?}"
        );
    }
    operator.ensure_running()?;
    let (status, _) = operator.get("/healthz").await?;
    ensure!(status == 200, "/healthz answered {status}");

    create(
        &case.config_maps(),
        &config_map("ok-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "ok-env" } }]
    }))] });
    case.deploy(deployment("valid", &[AUTO], spec), true)
        .await?;
    set_config_map_data(&case.config_maps(), "ok-env", &[("LEVEL", "debug")]).await?;
    case.expect_one_rollout("valid", 1).await?;
    operator.ensure_running()?;
    let (status, _) = operator.get("/healthz").await?;
    ensure!(status == 200, "/healthz answered {status}");
    Ok(())
}

/// 13. Another writer keeps updating the Deployment (here its labels; during a
/// real rollout, its status) while a source changes: envroll's guarded patch
/// may conflict, and the rollout must still happen, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn concurrent_writes_to_the_workload_do_not_lose_a_rollout() -> Result<()> {
    let case = Case::new("busy").await?;
    let operator = case.operator().await?;
    create(
        &case.config_maps(),
        &config_map("web-env", &[("LEVEL", "info")]),
    )
    .await?;
    let spec = json!({ "containers": [container(json!({
        "envFrom": [{ "configMapRef": { "name": "web-env" } }]
    }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    // Label updates change the resource version without changing the spec or
    // annotations, so they do not trigger a reconcile of their own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (api, stop) = (case.deployments(), stop.clone());
        tokio::spawn(async move {
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let label = json!({ "metadata": { "labels": { "e2e.envroll.dev/tick": writes.to_string() } } });
                api.patch("web", &PatchParams::default(), &Patch::Merge(&label))
                    .await?;
                writes += 1;
            }
            anyhow::Ok(writes)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.await??;
    eprintln!("the concurrent writer updated the Deployment {writes} times");
    let conflicts = operator
        .logs()
        .iter()
        .filter(|line| line.contains("conflict while patching"))
        .count();
    eprintln!("envroll's patches conflicted {conflicts} times");
    case.expect_one_rollout("web", 1).await?;
    Ok(())
}
