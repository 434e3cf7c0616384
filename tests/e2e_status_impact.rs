//! End-to-end tests of `envroll status` and of `envroll impact` against the cluster, run as the
//! binary a user runs, with the caller's kubeconfig: what status says of a workload that is up to
//! date, has a rollout pending (no operator, or one in `--dry-run`), has envroll's rollout in
//! progress with a change held behind it, and what the last outcome was; what the caller may not
//! read; and live impact of a ConfigMap edit given as a file or as `--from-literal`. The output
//! shapes and exit codes are a contract.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

use common::case::{Case, DEPLOYMENT};
use common::kubectl::{kubectl, service_account_kubeconfig_file};
use common::operator::OperatorConfig;
use common::poll_until;
use common::workloads::{
    config_map, container, create, deployment, secret, set_config_map_data, wait_for_event,
    REACTION_TIMEOUT,
};

const AUTO: (&str, &str) = ("envroll.dev/auto", "true");
/// `impact` exit codes.
const NO_ROLLOUT: i32 = 0;
const ERROR: i32 = 1;
const ROLLOUT: i32 = 2;
/// Keeps each envroll rollout of `web` in progress this long after its new pod is ready (kwok
/// pods are ready at once), so a test can look at it.
const MIN_READY_SECONDS: i32 = 20;
/// A rollout of `web` to finish: [`MIN_READY_SECONDS`] and a busy machine.
const ROLLOUT_DONE: Duration = Duration::from_secs(120);

/// `envroll ARGS` as the caller (`kubeconfig`, default `$KUBECONFIG`): exit code, stdout, stderr.
fn envroll(
    args: &[&str],
    stdin: Option<&str>,
    kubeconfig: Option<&Path>,
) -> Result<(i32, String, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envroll"));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let mut child = command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting envroll")?;
    let mut input = child.stdin.take().context("envroll's stdin")?;
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    let started = Instant::now();
    let output = child.wait_with_output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    );
    let code = output.status.code().context("envroll was killed")?;
    eprintln!(
        "envroll {} (exit {code}, {:.2}s):\n{stdout}{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok((code, stdout, stderr))
}

/// `envroll status -n NS -o json` (must succeed) and its entry for the workload `name`.
fn status_of(namespace: &str, name: &str) -> Result<Value> {
    let (code, stdout, _) = envroll(&["status", "-n", namespace, "-o", "json"], None, None)?;
    ensure!(code == 0, "status exited with {code}");
    let report: Value = serde_json::from_str(&stdout).context("status -o json is not JSON")?;
    report["workloads"]
        .as_array()
        .context("no workloads array")?
        .iter()
        .find(|w| w["name"] == json!(name))
        .cloned()
        .with_context(|| format!("{name} is not in {report:#}"))
}

/// `envroll status -n NS` (table), which must succeed.
fn status_table(namespace: &str) -> Result<String> {
    let (code, stdout, _) = envroll(&["status", "-n", namespace], None, None)?;
    ensure!(code == 0, "status exited with {code}");
    Ok(stdout)
}

/// The table row of `deployment/NAME`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    let prefix = format!("deployment/{name} ");
    table
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_default()
}

/// `web` reads `web-env` through `envFrom` and `web-files` as a volume; `assets` mounts
/// `web-env` as a volume; both opted in.
async fn deploy_web_and_assets(case: &Case, managed: bool) -> Result<()> {
    create(
        &case.config_maps(),
        &config_map("web-env", &[("LEVEL", "info")]),
    )
    .await?;
    create(
        &case.config_maps(),
        &config_map("web-files", &[("index.html", "<h1>shop</h1>")]),
    )
    .await?;
    let web = deployment(
        "web",
        &[AUTO],
        json!({
            "containers": [container(json!({
                "envFrom": [{"configMapRef": {"name": "web-env"}}],
                "volumeMounts": [{"name": "files", "mountPath": "/srv"}]
            }))],
            "volumes": [{"name": "files", "configMap": {"name": "web-files"}}]
        }),
    );
    let assets = deployment(
        "assets",
        &[AUTO],
        json!({
            "containers": [container(json!({
                "volumeMounts": [{"name": "env", "mountPath": "/etc/web-env"}]
            }))],
            "volumes": [{"name": "env", "configMap": {"name": "web-env"}}]
        }),
    );
    case.deploy(web, managed).await?;
    case.deploy(assets, managed).await?;
    Ok(())
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn status_shows_up_to_date_then_pending_without_an_operator_and_under_dry_run() -> Result<()>
{
    let case = Case::new("status-pending").await?;
    let mut operator = case.operator().await?;
    deploy_web_and_assets(&case, true).await?;
    operator.stop().await?;

    let web = status_of(case.ns(), "web")?;
    ensure!(
        web["state"] == json!("up-to-date")
            && web["rolloutPending"] == json!(false)
            && web["rolloutInProgress"] == json!(false)
            && web["lastRollout"].is_null()
            && web["lastOutcome"].is_null(),
        "web just adopted: {web:#}"
    );
    let table = status_table(case.ns())?;
    ensure!(
        row(&table, "web").contains("ConfigMap/web-env (envFrom, rolls out)")
            && row(&table, "web").contains("up to date")
            && table.contains("ConfigMap/web-files (volume, in place)")
            && row(&table, "assets").contains("ConfigMap/web-env (volume, in place)"),
        "{table}"
    );

    // No operator runs: the change waits, and status says the operator would roll out.
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    let web = status_of(case.ns(), "web")?;
    ensure!(
        web["state"] == json!("pending")
            && web["rolloutPending"] == json!(true)
            && web["rolloutInProgress"] == json!(false)
            && web["decision"] == json!("rollout pending: ConfigMap/web-env changed")
            && web["configHash"] != web["templateHash"],
        "web after the change, no operator: {web:#}"
    );
    let assets = status_of(case.ns(), "assets")?;
    ensure!(
        assets["state"] == json!("up-to-date") && assets["rolloutPending"] == json!(false),
        "assets sees the change in place: {assets:#}"
    );
    ensure!(row(&status_table(case.ns())?, "web").contains(" pending "));

    // An operator in --dry-run reports and patches nothing: still pending. (Its baseline lives
    // in its memory: it adopts what it finds at start, and reports changes after that.)
    let mut dry_run = OperatorConfig::scoped(&[case.ns()])
        .arg("--dry-run")
        .start_ready()
        .await?;
    let adopted = format!("without a rollout workload=Deployment {}/web ", case.ns());
    dry_run.wait_for_log(&adopted, REACTION_TIMEOUT).await?;
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "trace")]).await?;
    wait_for_event(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        "DryRunRollout",
        &["web-env"],
    )
    .await?;
    let web = status_of(case.ns(), "web")?;
    ensure!(
        web["state"] == json!("pending")
            && web["rolloutInProgress"] == json!(false)
            && web["templateHash"].is_null()
            && web["lastRollout"].is_null(),
        "web under a dry-run operator: {web:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn status_follows_a_rollout_in_progress_a_held_change_and_the_outcome() -> Result<()> {
    let case = Case::new("status-rollout").await?;
    let _operator = case.operator().await?;
    deploy_web_and_assets(&case, true).await?;
    // Not a template change: no rollout, but each later rollout stays in progress a while.
    case.deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReadySeconds": MIN_READY_SECONDS}})),
        )
        .await?;

    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "debug")]).await?;
    case.rollout_event("web", &["web-env"]).await?;
    let web = status_of(case.ns(), "web")?;
    ensure!(
        web["rolloutInProgress"] == json!(true)
            && web["state"] == json!("up-to-date")
            && web["templateHash"] == web["configHash"]
            && web["templateHash"].is_string()
            && web["lastRollout"]["reason"] == json!("RolloutTriggered")
            && web["lastOutcome"].is_null(),
        "web right after envroll's rollout: {web:#}"
    );
    ensure!(row(&status_table(case.ns())?, "web").contains(" in progress "));

    // A second change while the first rollout runs is held by the operator: pending, in progress.
    set_config_map_data(&case.config_maps(), "web-env", &[("LEVEL", "warn")]).await?;
    let held = poll_until(
        REACTION_TIMEOUT,
        Duration::from_millis(500),
        "status to show the held change",
        || async {
            let web = status_of(case.ns(), "web")?;
            Ok((web["rolloutPending"] == json!(true)).then_some(web))
        },
    )
    .await?;
    ensure!(
        held["rolloutInProgress"] == json!(true),
        "the change came while the rollout was in progress: {held:#}"
    );
    ensure!(row(&status_table(case.ns())?, "web").contains(" pending, in progress "));

    wait_for_event(
        &case.client,
        case.ns(),
        DEPLOYMENT,
        "web",
        "RolloutSucceeded",
        &["rollout for ConfigMap/web-env finished in"],
    )
    .await?;
    // Then the held change rolls out, and that one finishes too.
    let settled = poll_until(
        ROLLOUT_DONE,
        Duration::from_secs(1),
        "the held change to roll out and finish",
        || async {
            let web = status_of(case.ns(), "web")?;
            let done = web["rolloutPending"] == json!(false)
                && web["rolloutInProgress"] == json!(false)
                && web["lastOutcome"]["time"].as_str() > web["lastRollout"]["time"].as_str();
            Ok(done.then_some(web))
        },
    )
    .await?;
    ensure!(
        settled["state"] == json!("up-to-date")
            && settled["lastOutcome"]["reason"] == json!("RolloutSucceeded")
            && settled["lastOutcome"]["type"] == json!("Normal")
            && settled["lastOutcome"]["note"]
                .as_str()
                .is_some_and(|note| note.starts_with("rollout for ConfigMap/web-env finished in")),
        "web after both rollouts: {settled:#}"
    );
    let table = status_table(case.ns())?;
    ensure!(
        row(&table, "web").contains(" up to date ")
            && row(&table, "web").contains("RolloutSucceeded ")
            && row(&table, "web").contains(" ago: rollout for ConfigMap/web-env finished in"),
        "{table}"
    );
    let assets = status_of(case.ns(), "assets")?;
    ensure!(
        assets["lastRollout"].is_null() && assets["rolloutInProgress"] == json!(false),
        "assets was never rolled out: {assets:#}"
    );

    // The JSON shape (README, "envroll status").
    let (_, stdout, _) = envroll(&["status", "-n", case.ns(), "-o", "json"], None, None)?;
    let report: Value = serde_json::from_str(&stdout)?;
    ensure!(keys(&report) == ["unknown", "workloads"], "{report:#}");
    ensure!(report["unknown"] == json!([]));
    let names: Vec<&str> = report["workloads"]
        .as_array()
        .context("workloads")?
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    ensure!(names == ["assets", "web"], "sorted by name: {names:?}");
    ensure!(
        keys(&settled)
            == [
                "configHash",
                "decision",
                "kind",
                "lastOutcome",
                "lastRollout",
                "name",
                "namespace",
                "rolloutInProgress",
                "rolloutPending",
                "sources",
                "state",
                "templateHash",
            ],
        "{settled:#}"
    );
    ensure!(keys(&settled["lastOutcome"]) == ["note", "reason", "time", "type"]);
    ensure!(
        settled["sources"][0]
            == json!({"kind": "ConfigMap", "name": "web-env", "optional": false,
                      "via": ["envFrom"], "keys": null, "rollout": true,
                      "reason": "envFrom in container app: env is read once at process start",
                      "presence": "present"}),
        "{:#}",
        settled["sources"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn status_shows_what_the_caller_may_not_read_as_unknown_with_the_reason() -> Result<()> {
    let case = Case::new("status-rbac").await?;
    create(&case.secrets(), &secret("db", &[("password", "hunter2")])).await?;
    let web = deployment(
        "web",
        &[AUTO],
        json!({"containers": [container(json!({
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
        }))]}),
    );
    case.deploy(web, false).await?;
    // May read workloads and ConfigMaps, not Secrets, Events or DaemonSets.
    let ns = case.ns();
    kubectl(&["create", "serviceaccount", "viewer", "-n", ns], None)?;
    kubectl(
        &[
            "create",
            "role",
            "viewer",
            "-n",
            ns,
            "--verb=get,list",
            "--resource=deployments.apps,statefulsets.apps,configmaps",
        ],
        None,
    )?;
    let subject = format!("{ns}:viewer");
    kubectl(
        &[
            "create",
            "rolebinding",
            "viewer",
            "-n",
            ns,
            "--role=viewer",
            "--serviceaccount",
            &subject,
        ],
        None,
    )?;
    let viewer = service_account_kubeconfig_file(ns, "viewer")?;

    let (code, stdout, _) = envroll(&["status", "-n", ns, "-o", "json"], None, Some(&viewer))?;
    ensure!(
        code == 1,
        "a list that could not be read exits with 1, not {code}"
    );
    let report: Value = serde_json::from_str(&stdout)?;
    let web = &report["workloads"][0];
    ensure!(
        web["name"] == json!("web") && web["state"] == json!("unknown"),
        "{report:#}"
    );
    let db = &web["sources"][0];
    ensure!(
        db["presence"] == json!("unknown")
            && db["readError"]
                .as_str()
                .is_some_and(|reason| reason.contains("forbidden")),
        "the Secret is unknown, never missing: {db:#}"
    );
    ensure!(
        web["rolloutInProgress"].is_null()
            && web["eventsUnknown"]
                .as_str()
                .is_some_and(|reason| reason.contains("forbidden")),
        "{web:#}"
    );
    ensure!(
        report["unknown"][0]["kind"] == json!("DaemonSet")
            && report["unknown"][0]["name"].is_null()
            && report["unknown"][0]["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("forbidden")),
        "{report:#}"
    );

    let (code, table, _) = envroll(&["status", "-n", ns], None, Some(&viewer))?;
    ensure!(code == 1);
    ensure!(
        row(&table, "web").contains("Secret/db (env, rolls out, unknown)")
            && table.contains(&format!(
                "unknown: Secret {ns}/db: secrets \"db\" is forbidden"
            ))
            && table.contains(&format!("unknown: DaemonSets in namespace {ns}: ")),
        "{table}"
    );
    ensure!(!table.contains("hunter2") && !stdout.contains("hunter2"));
    Ok(())
}

/// `web-env` as the user would apply it, without a namespace.
fn web_env_file(level: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-env\ndata:\n  LEVEL: {level}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn impact_of_a_config_map_file_rolls_out_the_env_consumer_and_not_the_volume_one(
) -> Result<()> {
    let case = Case::new("impact-file").await?;
    deploy_web_and_assets(&case, false).await?;
    let ns = case.ns();
    let dir = std::env::temp_dir().join(common::unique_name("impact-file"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("new-configmap.yaml");
    std::fs::write(&file, web_env_file("debug"))?;
    let file = file.to_string_lossy().into_owned();

    let (code, table, _) = envroll(&["impact", "-f", &file, "-n", ns], None, None)?;
    ensure!(code == ROLLOUT, "exit {code}");
    for expected in [
        format!("Deployment {ns}/web: rollout\n  envroll replaces the pods: ConfigMap/web-env changed\n"),
        "  ConfigMap/web-env  modified  LEVEL  rollout  envFrom in container app: env is read once at process start\n".to_string(),
        format!("Deployment {ns}/assets: in-place\n  no rollout: kubelet refreshes the changed files of ConfigMap/web-env in place\n"),
        "2 workloads: 1 would roll out because of config, 1 would see the change in place\n".to_string(),
    ] {
        ensure!(table.contains(&expected), "missing {expected:?} in:\n{table}");
    }

    // The same from stdin, as JSON: the shape of `impact --from --to`.
    let (code, stdout, _) = envroll(
        &["impact", "-f", "-", "-n", ns, "-o", "json"],
        Some(&web_env_file("debug")),
        None,
    )?;
    ensure!(code == ROLLOUT, "exit {code}");
    let report: Value = serde_json::from_str(&stdout)?;
    ensure!(keys(&report) == ["summary", "workloads"]);
    let by_name = |name: &str| {
        report["workloads"]
            .as_array()
            .and_then(|all| all.iter().find(|w| w["name"] == json!(name)))
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        by_name("web")
            == json!({"kind": "Deployment", "namespace": ns, "name": "web", "managed": true,
                      "outcome": "rollout", "templateChanged": false,
                      "reason": "envroll replaces the pods: ConfigMap/web-env changed",
                      "sources": [{"kind": "ConfigMap", "name": "web-env", "change": "modified",
                                   "keys": ["LEVEL"], "effect": "rollout",
                                   "reason": "envFrom in container app: env is read once at process start"}],
                      "warnings": []}),
        "{:#}",
        by_name("web")
    );
    ensure!(
        by_name("assets")["outcome"] == json!("in-place")
            && by_name("assets")["sources"][0]["effect"] == json!("in-place"),
        "{:#}",
        by_name("assets")
    );
    ensure!(
        report["summary"]
            == json!({"workloads": 2, "rollout": 1, "template": 0, "blocked": 0, "new": 0,
                      "inPlace": 1, "untouched": 0}),
        "{:#}",
        report["summary"]
    );

    // The live data as it is: nothing rolls out.
    let (code, table, _) = envroll(
        &["impact", "-f", "-", "-n", ns],
        Some(&web_env_file("info")),
        None,
    )?;
    ensure!(code == NO_ROLLOUT, "exit {code}");
    ensure!(table.ends_with("2 workloads: 2 untouched\n"), "{table}");

    // A workload in the file is set aside, with a note.
    let (code, _, stderr) = envroll(
        &["impact", "-f", "-", "-n", ns],
        Some(&format!(
            "{}---\n{}",
            web_env_file("info"),
            serde_json::to_string(&deployment(
                "other",
                &[],
                json!({"containers": [container(json!({}))]})
            ))?
        )),
        None,
    )?;
    ensure!(code == NO_ROLLOUT, "exit {code}");
    ensure!(
        stderr.contains(&format!("note: skipping Deployment {ns}/other")),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e"]
async fn impact_from_literal_rolls_out_the_env_consumer_and_a_no_op_exits_zero() -> Result<()> {
    let case = Case::new("impact-literal").await?;
    deploy_web_and_assets(&case, false).await?;
    create(&case.secrets(), &secret("db", &[("password", "hunter2")])).await?;
    let api = case.deployments();
    let db_reader = deployment(
        "db-reader",
        &[AUTO],
        json!({"containers": [container(json!({
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
        }))]}),
    );
    create::<Deployment>(&api, &db_reader).await?;
    let ns = case.ns();

    let (code, table, _) = envroll(
        &[
            "impact",
            "configmap/web-env",
            "--from-literal",
            "LEVEL=debug",
            "-n",
            ns,
        ],
        None,
        None,
    )?;
    ensure!(code == ROLLOUT, "exit {code}");
    ensure!(
        table.contains(&format!("Deployment {ns}/web: rollout\n"))
            && table.contains(&format!("Deployment {ns}/assets: in-place\n"))
            && table.contains(&format!("Deployment {ns}/db-reader: untouched\n"))
            && table.contains("  ConfigMap/web-env  modified  LEVEL  rollout  "),
        "{table}"
    );

    // The value the ConfigMap already holds: nothing changes.
    let (code, table, _) = envroll(
        &[
            "impact",
            "cm/web-env",
            "--from-literal",
            "LEVEL=info",
            "-n",
            ns,
            "-o",
            "json",
        ],
        None,
        None,
    )?;
    ensure!(code == NO_ROLLOUT, "exit {code}");
    let report: Value = serde_json::from_str(&table)?;
    ensure!(report["summary"]["untouched"] == json!(3), "{report:#}");

    // A key no workload reads.
    let (code, _, _) = envroll(
        &[
            "impact",
            "configmap/web-env",
            "--from-literal",
            "UNUSED=1",
            "-n",
            ns,
        ],
        None,
        None,
    )?;
    // `web` reads every key through envFrom: a new key changes its environment.
    ensure!(code == ROLLOUT, "exit {code}");

    // A Secret: rolls out its env consumer; the value appears nowhere.
    let value = "Not-Printed-9f2c";
    let literal = format!("password={value}");
    let (code, stdout, stderr) = envroll(
        &["impact", "secret/db", "--from-literal", &literal, "-n", ns],
        None,
        None,
    )?;
    ensure!(code == ROLLOUT, "exit {code}");
    ensure!(
        stdout.contains(&format!("Deployment {ns}/db-reader: rollout\n"))
            && stdout.contains("  Secret/db  modified  password  rollout  "),
        "{stdout}"
    );
    ensure!(!stdout.contains(value) && !stderr.contains(value) && !stdout.contains("hunter2"));

    // Errors exit with 1, before or after asking the cluster.
    let (code, _, stderr) = envroll(
        &[
            "impact",
            "configmap/web-env",
            "--from-literal",
            "no equals sign",
            "-n",
            ns,
        ],
        None,
        None,
    )?;
    ensure!(
        code == ERROR && stderr.contains("KEY=VALUE"),
        "exit {code}: {stderr}"
    );
    let (code, _, _) = envroll(&["impact", "deployment/web", "-n", ns], None, None)?;
    ensure!(code == ERROR, "exit {code}");
    Ok(())
}
