//! End-to-end tests of when exactly a change rolls out: a config change that
//! lands just after a template change, a source that never stops changing, a
//! leader that is stopped, a patch that admission refuses, an object deleted
//! right after a change, a source explain may not read, a namespace listed
//! twice. Each test runs in its own namespace with its own operator.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use common::case::{Case, DEPLOYMENT};
use common::kubectl::{apply, kubectl, lease_namespace, service_account_kubeconfig_file};
use common::operator::{explain, explain_deployment_json, metric_value, OperatorConfig};
use common::workloads::{
    assert_replicasets_stay, config_map, container, create, deployment, envroll_events, secret,
    set_config_map_data, set_secret_data, template_config_hash, wait_deployment_settled,
    wait_for_event, wait_for_replicasets, web_manifest, CONFIG_HASH, IMAGE, REACTION_TIMEOUT,
    SETTLE_WINDOW,
};
use common::{count_owned_replicasets, owned_replicasets, poll_until, wait_for_rollout};

const AUTO: (&str, &str) = ("envroll.dev/auto", "true");
/// The image `web` moves to from [`IMAGE`].
const NEW_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// The operator's default `--debounce`.
const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(2);

/// Applies [`web_manifest`] and waits until envroll has adopted `web`.
async fn deploy_web(case: &Case) -> Result<()> {
    apply(case.ns(), &web_manifest("info", IMAGE))?;
    wait_deployment_settled(&case.client, case.ns(), "web", true).await?;
    Ok(())
}

/// The newest ReplicaSet of `web`: its image and envroll's config hash.
async fn newest_template(case: &Case) -> Result<(Option<String>, Option<String>)> {
    let replicasets = owned_replicasets(&case.client, case.ns(), "web").await?;
    let newest = replicasets.last().context("web owns no ReplicaSet")?;
    let template = newest
        .spec
        .clone()
        .and_then(|s| s.template)
        .context("ReplicaSet without a template")?;
    let image = template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    Ok((image, template_config_hash(&template)))
}

/// 1. The image changes, and 1.5 s later (within the default debounce) so does
/// the ConfigMap `web` reads through `envFrom`. The pods of the image rollout
/// started before the config change and keep the old environment, so the
/// config change needs a rollout of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_config_change_just_after_a_template_change_rolls_out() -> Result<()> {
    let case = Case::new("late-config").await?;
    let _operator = OperatorConfig::scoped(&[case.ns()])
        .default_debounce()
        .start_ready()
        .await?;
    deploy_web(&case).await?;

    let image = format!("app={NEW_IMAGE}");
    kubectl(
        &["set", "image", "-n", case.ns(), "deployment/web", &image],
        None,
    )?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;

    // Original, image, and envroll's rollout of the new config.
    wait_for_replicasets(&case.client, case.ns(), "web", 3).await?;
    wait_for_rollout(&case.client, case.ns(), "web", REACTION_TIMEOUT).await?;
    assert_replicasets_stay(&case.client, case.ns(), "web", 3, SETTLE_WINDOW).await?;
    let (image, hash) = newest_template(&case).await?;
    let now = explain_deployment_json(case.ns(), "web", None)?;
    ensure!(
        image.as_deref() == Some(NEW_IMAGE),
        "the newest ReplicaSet runs {image:?}"
    );
    ensure!(
        hash.is_some() && hash.as_deref() == now["configHash"].as_str(),
        "the newest ReplicaSet has config hash {hash:?}, the config now hashes to {}",
        now["configHash"]
    );
    Ok(())
}

/// 2. The usual release: the ConfigMap and the image change in one
/// `kubectl apply` (ConfigMap first). The new pods read the new config, so
/// one rollout is enough, and envroll adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_config_and_image_change_applied_together_roll_out_once() -> Result<()> {
    let case = Case::new("together").await?;
    let _operator = OperatorConfig::scoped(&[case.ns()])
        .default_debounce()
        .start_ready()
        .await?;
    deploy_web(&case).await?;

    apply(case.ns(), &web_manifest("debug", NEW_IMAGE))?;
    wait_for_replicasets(&case.client, case.ns(), "web", 2).await?;
    wait_for_rollout(&case.client, case.ns(), "web", REACTION_TIMEOUT).await?;
    let window = DEFAULT_DEBOUNCE * 3;
    assert_replicasets_stay(&case.client, case.ns(), "web", 2, window).await?;
    let rollouts = envroll_events(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        Some("RolloutTriggered"),
    )
    .await?;
    ensure!(
        rollouts.is_empty(),
        "envroll rolled out although the template change already did: {:?}",
        rollouts.iter().map(|e| &e.note).collect::<Vec<_>>()
    );
    let (image, hash) = newest_template(&case).await?;
    ensure!(
        image.as_deref() == Some(NEW_IMAGE) && hash.is_none(),
        "the newest ReplicaSet runs {image:?} with config hash {hash:?}"
    );
    Ok(())
}

/// 3. A ConfigMap that changes every second for 20 s, with a 2 s debounce and
/// a 6 s maximum wait: the debounce would hold every change back until the
/// flapping stops, the maximum wait still rolls out during it; once it stops,
/// the last value is what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_flapping_source_rolls_out_at_least_once_per_max_wait() -> Result<()> {
    let case = Case::new("flapping").await?;
    // Set through the environment, as the install manifests set the flags.
    let _operator = OperatorConfig::scoped(&[case.ns()])
        .debounce("2s")
        .env("ENVROLL_DEBOUNCE_MAX_WAIT", "6s")
        .start_ready()
        .await?;
    deploy_web(&case).await?;

    let started = tokio::time::Instant::now();
    for second in 0..20u64 {
        tokio::time::sleep_until(started + Duration::from_secs(second)).await;
        let level = format!("v{second}");
        set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", &level)]).await?;
    }
    let during = count_owned_replicasets(&case.client, case.ns(), "web").await? - 1;
    eprintln!("{during} rollouts while the ConfigMap kept changing");

    let settled = poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(500),
        "the last value to be rolled out",
        || async {
            let now = explain_deployment_json(case.ns(), "web", None)?;
            Ok((now["templateHash"] == now["configHash"]).then_some(now))
        },
    )
    .await?;
    wait_for_rollout(&case.client, case.ns(), "web", REACTION_TIMEOUT).await?;
    ensure!(
        settled["rolloutPending"] == json!(false),
        "explain still reports a pending rollout: {}",
        settled["status"]
    );
    let (_, hash) = newest_template(&case).await?;
    ensure!(
        hash.as_deref() == settled["configHash"].as_str(),
        "the newest ReplicaSet has config hash {hash:?}, the last value hashes to {}",
        settled["configHash"]
    );
    ensure!(
        during >= 2,
        "{during} rollouts in 20 s of changes every second: a 6 s maximum wait allows no more \
         than 6 s without one"
    );
    Ok(())
}

/// 4. Two replicas with leader election; the leader gets SIGTERM, as in a
/// rolling update of the operator, and the ConfigMap changes right after. The
/// leader gives the Lease up on its way out, so the standby takes over and
/// rolls out within 2 s instead of waiting for the 15 s Lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() -> Result<()> {
    // Also the tolerance of the measurement below: a rollout is seen at most
    // one poll late.
    const POLL: Duration = Duration::from_millis(100);
    const LIMIT: Duration = Duration::from_secs(2);
    let case = Case::new("handover").await?;
    let lease_ns = lease_namespace(&[case.ns().to_string()])?;
    let replica = |identity: &str| {
        OperatorConfig::scoped(&[case.ns()])
            .labelled(identity)
            .arg("--leader-election")
            .arg(format!("--pod-namespace={lease_ns}"))
            .arg(format!("--lease-name={}", case.ns()))
            .arg(format!("--identity={identity}"))
            .arg("--lease-duration=15")
    };
    let mut leader = replica("replica-a").start()?;
    leader
        .wait_for_log("became leader", Duration::from_secs(60))
        .await?;
    leader.wait_ready(Duration::from_secs(60)).await?;
    let mut standby = replica("replica-b").start()?;
    standby
        .wait_for_log("standing by for leadership", Duration::from_secs(60))
        .await?;
    deploy_web(&case).await?;

    leader.terminate()?;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    let changed = Instant::now();
    let deployments: Api<Deployment> = case.deployments();
    poll_until(
        REACTION_TIMEOUT,
        POLL,
        "a rollout after the leader stopped",
        || async {
            let web = deployments.get("web").await?;
            let template = web.spec.unwrap_or_default().template;
            Ok(template_config_hash(&template).map(|_| ()))
        },
    )
    .await?;
    let took = changed.elapsed();
    eprintln!("rolled out {took:?} after the change");
    leader.stop().await?;
    standby.ensure_running()?;

    let rollouts = envroll_events(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        Some("RolloutTriggered"),
    )
    .await?;
    let by: Vec<_> = rollouts
        .iter()
        .map(|e| e.reporting_instance.as_deref())
        .collect();
    ensure!(
        by == [Some("replica-b")],
        "expected one rollout by the standby, replica-b; reported by {by:?}"
    );
    ensure!(
        took <= LIMIT + POLL,
        "the standby rolled out {took:?} after the change, later than {LIMIT:?} \
         (+{POLL:?} polling): the stopped leader did not give up its Lease"
    );
    Ok(())
}

/// 5. Of two Deployments reading a Secret through env, only the annotated one
/// is managed: the other is neither counted nor has its Secret read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn only_managed_workloads_are_counted_and_have_their_secrets_read() -> Result<()> {
    let case = Case::new("managed-only").await?;
    let pod_spec = |secret_name: &str| {
        json!({ "containers": [container(json!({ "env": [{
            "name": "PASSWORD",
            "valueFrom": { "secretKeyRef": { "name": secret_name, "key": "password" } }
        }] }))] })
    };
    for name in ["managed-db", "unmanaged-db"] {
        create(&case.secrets(), &secret(name, &[("password", "one")])).await?;
    }
    // Both exist before the operator starts, so its first pass sees both.
    let managed = deployment("managed", &[AUTO], pod_spec("managed-db"));
    let unmanaged = deployment("unmanaged", &[], pod_spec("unmanaged-db"));
    create(&case.deployments(), &managed).await?;
    create(&case.deployments(), &unmanaged).await?;
    let operator = case.operator().await?;
    wait_deployment_settled(&case.client, case.ns(), "unmanaged", false).await?;
    wait_deployment_settled(&case.client, case.ns(), "managed", true).await?;

    let managed_count = |metrics: &str| metric_value(metrics, "envroll_managed_workloads", &[]);
    let metrics = operator.metrics().await?;
    ensure!(
        managed_count(&metrics) == 1.0,
        "after start-up, envroll_managed_workloads is {}; only `managed` opted in",
        managed_count(&metrics)
    );

    let secret_events =
        |metrics: &str| metric_value(metrics, "envroll_watch_events_total", &[("kind", "Secret")]);
    let seen = secret_events(&metrics);
    set_secret_data(&case.secrets(), "unmanaged-db", &[("password", "two")]).await?;
    poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(100),
        "the operator to see the Secret change",
        || async { Ok((secret_events(&operator.metrics().await?) > seen).then_some(())) },
    )
    .await?;
    // Longer than the debounce: a reconcile the change triggers has run.
    tokio::time::sleep(SETTLE_WINDOW).await;
    let metrics = operator.metrics().await?;
    ensure!(
        managed_count(&metrics) == 1.0,
        "after a change of the unmanaged workload's Secret, envroll_managed_workloads is {}",
        managed_count(&metrics)
    );

    set_secret_data(&case.secrets(), "managed-db", &[("password", "two")]).await?;
    case.expect_one_rollout("managed", 1).await?;
    let managed_changes = 1.0;
    let fetches = metric_value(
        &operator.metrics().await?,
        "envroll_source_fetches_total",
        &[("kind", "Secret")],
    );
    ensure!(
        (1.0..=managed_changes + 1.0).contains(&fetches),
        "envroll_source_fetches_total{{kind=\"Secret\"}} is {}: expected the managed \
         workload's Secret read once at start-up and at most once per change ({managed_changes}), \
         and the unmanaged workload's never",
        fetches as i64
    );
    Ok(())
}

/// A ValidatingAdmissionPolicy, with its binding, that refuses every change of
/// envroll's config hash in the pod templates of Deployments in one namespace.
/// Both are cluster-scoped, so they are deleted when dropped.
struct FrozenRollouts {
    name: Option<String>,
}

impl FrozenRollouts {
    /// What the API server answers when it refuses a patch.
    const MESSAGE: &'static str = "rollouts by envroll are frozen in this namespace";

    fn create(namespace: &str) -> Result<Self> {
        let hash = |object: &str| {
            format!(
                "has({object}.spec.template.metadata.annotations) && \
                 '{CONFIG_HASH}' in {object}.spec.template.metadata.annotations ? \
                 {object}.spec.template.metadata.annotations['{CONFIG_HASH}'] : ''"
            )
        };
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": namespace },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["deployments"]
                }] },
                "variables": [
                    { "name": "hash", "expression": hash("object") },
                    { "name": "oldHash", "expression": hash("oldObject") }
                ],
                "validations": [{
                    "expression": "variables.hash == variables.oldHash",
                    "message": Self::MESSAGE
                }]
            }
        });
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": namespace },
            "spec": {
                "policyName": namespace,
                "validationActions": ["Deny"],
                "matchResources": { "namespaceSelector": { "matchLabels": {
                    "kubernetes.io/metadata.name": namespace
                } } }
            }
        });
        // Made first, so that a failed apply still cleans up whatever it created.
        let frozen = FrozenRollouts {
            name: Some(namespace.to_string()),
        };
        kubectl(
            &["apply", "-f", "-"],
            Some(&format!("{policy}\n---\n{binding}")),
        )?;
        Ok(frozen)
    }

    /// Waits until the API server enforces the policy (it loads policies
    /// asynchronously), probing with a server-side dry run.
    async fn wait_enforced(&self, deployments: &Api<Deployment>, name: &str) -> Result<()> {
        let probe = json!({ "spec": { "template": { "metadata": { "annotations": {
            CONFIG_HASH: "probe"
        } } } } });
        let params = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        poll_until(
            REACTION_TIMEOUT,
            Duration::from_millis(250),
            "the admission policy to be enforced",
            || async {
                match deployments
                    .patch(name, &params, &Patch::Merge(&probe))
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(status)) if status.message.contains(Self::MESSAGE) => {
                        Ok(Some(()))
                    }
                    Err(problem) => Err(problem).context("probing the admission policy"),
                }
            },
        )
        .await
    }

    fn delete(&mut self) -> Result<()> {
        let Some(name) = self.name.take() else {
            return Ok(());
        };
        kubectl(
            &[
                "delete",
                "--ignore-not-found",
                &format!("validatingadmissionpolicybinding/{name}"),
                &format!("validatingadmissionpolicy/{name}"),
            ],
            None,
        )
        .map(|_| ())
    }
}

impl Drop for FrozenRollouts {
    fn drop(&mut self) {
        if let Err(problem) = self.delete() {
            eprintln!("warning: {problem:#}");
        }
    }
}

/// 6. An admission policy refuses envroll's patch: a `PatchFailed` Warning
/// says so, the operator keeps running, and the change is not lost: once
/// the policy is gone, the rollout happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_patch_refused_by_admission_warns_and_rolls_out_once_allowed() -> Result<()> {
    let case = Case::new("admission").await?;
    let mut operator = case.operator().await?;
    deploy_web(&case).await?;
    let mut frozen = FrozenRollouts::create(case.ns())?;
    frozen.wait_enforced(&case.deployments(), "web").await?;

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    let warning = wait_for_event(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        "PatchFailed",
        &[FrozenRollouts::MESSAGE],
    )
    .await?;
    ensure!(
        warning.type_.as_deref() == Some("Warning"),
        "PatchFailed is not a Warning: {warning:?}"
    );
    operator.ensure_running()?;
    let replicasets = count_owned_replicasets(&case.client, case.ns(), "web").await?;
    ensure!(
        replicasets == 1,
        "web owns {replicasets} ReplicaSets while its patches are refused"
    );

    frozen.delete()?;
    case.expect_one_rollout("web", 1).await?;
    Ok(())
}

/// Other Secrets a managed Deployment `busy` reads, changed all at once just
/// before the race: the operator reads each changed Secret in turn, so it is
/// still busy with them when `overrides-secret` is changed and deleted, as in
/// a cluster where many Secrets change together (a certificate rotation).
const BUSY_SECRETS: usize = 30;

/// A managed Deployment per source kind, each reading its own source
/// `overrides-<kind>` through `envFrom` with the given `optional`, and `busy`.
async fn deploy_overrides_readers(case: &Case, optional: bool) -> Result<()> {
    create(
        &case.config_maps(),
        &config_map("overrides-cm", &[("LEVEL", "info")]),
    )
    .await?;
    create(
        &case.secrets(),
        &secret("overrides-secret", &[("TOKEN", "one")]),
    )
    .await?;
    let mut busy = Vec::new();
    for i in 0..BUSY_SECRETS {
        let name = format!("busy-{i}");
        create(&case.secrets(), &secret(&name, &[("TOKEN", "one")])).await?;
        busy.push(json!({ "secretRef": { "name": name } }));
    }
    for (name, env_from) in [
        (
            "from-cm",
            json!([{ "configMapRef": { "name": "overrides-cm", "optional": optional } }]),
        ),
        (
            "from-secret",
            json!([{ "secretRef": { "name": "overrides-secret", "optional": optional } }]),
        ),
        ("busy", Value::Array(busy)),
    ] {
        let spec = json!({ "containers": [container(json!({ "envFrom": env_from }))] });
        case.deploy(deployment(name, &[AUTO], spec), true).await?;
    }
    Ok(())
}

/// Changes both `overrides-*` sources and deletes each right away, so that the
/// operator learns of the change when the object may already be gone.
async fn change_and_delete_overrides(case: &Case) -> Result<()> {
    set_config_map_data(&case.config_maps(), "overrides-cm", &[("LEVEL", "debug")]).await?;
    case.config_maps()
        .delete("overrides-cm", &DeleteParams::default())
        .await?;
    let secrets = case.secrets();
    futures::future::try_join_all((0..BUSY_SECRETS).map(|i| {
        let secrets = secrets.clone();
        async move { set_secret_data(&secrets, &format!("busy-{i}"), &[("TOKEN", "two")]).await }
    }))
    .await?;
    set_secret_data(&secrets, "overrides-secret", &[("TOKEN", "two")]).await?;
    secrets
        .delete("overrides-secret", &DeleteParams::default())
        .await?;
    Ok(())
}

/// 7a. An optional source changed and deleted at once ends in the "missing"
/// state, which rolls out, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn an_optional_source_changed_and_deleted_at_once_rolls_out_once() -> Result<()> {
    let case = Case::new("race-optional").await?;
    let _operator = case.operator().await?;
    deploy_overrides_readers(&case, true).await?;

    change_and_delete_overrides(&case).await?;
    case.expect_one_rollout("from-cm", 1).await?;
    case.expect_one_rollout("from-secret", 1).await?;
    Ok(())
}

/// 7b. A required source changed and deleted at once: new pods would fail, so
/// no rollout, and a `SourceMissing` Warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_required_source_changed_and_deleted_at_once_warns_without_rolling_out() -> Result<()> {
    let case = Case::new("race-required").await?;
    let _operator = case.operator().await?;
    deploy_overrides_readers(&case, false).await?;

    change_and_delete_overrides(&case).await?;
    for (name, missing) in [
        ("from-cm", "ConfigMap overrides-cm is missing"),
        ("from-secret", "Secret overrides-secret is missing"),
    ] {
        wait_for_event(
            &case.client,
            case.ns(),
            DEPLOYMENT,
            name,
            "SourceMissing",
            &[missing],
        )
        .await?;
    }
    case.expect_no_rollout("from-cm", 1).await?;
    case.expect_no_rollout("from-secret", 1).await?;
    Ok(())
}

/// 8. Live explain by someone who may read the Deployment and its ConfigMaps
/// but not its Secret: the Secret's state is unknown, which is not the same
/// as missing. (An optional Secret that looks missing would otherwise look
/// changed, and explain would report a rollout that is not pending.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn live_explain_says_unknown_for_a_secret_it_may_not_read() -> Result<()> {
    let case = Case::new("explain-rbac").await?;
    let _operator = case.operator().await?;
    create(&case.secrets(), &secret("api-token", &[("TOKEN", "one")])).await?;
    let spec = json!({ "containers": [container(json!({ "envFrom": [
        { "secretRef": { "name": "api-token", "optional": true } }
    ] }))] });
    case.deploy(deployment("web", &[AUTO], spec), true).await?;

    let viewer = format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: viewer, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: viewer, namespace: {ns}}}
rules:
  - {{apiGroups: [apps], resources: [deployments], verbs: [get]}}
  - {{apiGroups: [''], resources: [configmaps], verbs: [get]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: viewer}}
subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]
",
        ns = case.ns()
    );
    kubectl(&["apply", "-f", "-"], Some(&viewer))?;
    let kubeconfig = service_account_kubeconfig_file(case.ns(), "viewer")?;

    let table = explain("deploy/web", case.ns(), "table", Some(&kubeconfig))?;
    ensure!(
        table.contains("unknown: could not read") && !table.contains("rollout pending"),
        "explain, without access to the Secret, says:\n{table}"
    );
    let json = explain_deployment_json(case.ns(), "web", Some(&kubeconfig))?;
    let status = json["status"].as_str().unwrap_or_default();
    ensure!(
        status.contains("unknown: could not read") && json["rolloutPending"] == json!(false),
        "explain -o json, without access to the Secret, says: {json:#}"
    );
    Ok(())
}

/// 9. `--namespaces NS,NS` watches NS once: the start-up line names it once,
/// and a change rolls out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn a_namespace_listed_twice_is_watched_once() -> Result<()> {
    let case = Case::new("twice").await?;
    let operator = OperatorConfig::scoped(&[case.ns(), case.ns()])
        .start_ready()
        .await?;
    let watching = operator
        .log_line("envroll watching")
        .context("no start-up line")?;
    ensure!(
        watching.contains(&format!("scope=namespaces {} only;", case.ns()))
            && watching.matches(case.ns()).count() == 1,
        "the start-up line should name {} once: {watching}",
        case.ns()
    );

    deploy_web(&case).await?;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    case.expect_one_rollout("web", 1).await?;
    let rollouts = envroll_events(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        Some("RolloutTriggered"),
    )
    .await?;
    ensure!(
        rollouts.len() == 1,
        "{} RolloutTriggered Events for one change",
        rollouts.len()
    );
    Ok(())
}
