//! The README's install-and-use walkthrough, command by command, on the local control plane:
//! namespaced install with `kubectl apply -k`, the operator running as the installed
//! ServiceAccount (the Deployment's pods are kwok's fakes, so the binary runs here with that
//! identity and the same environment), `kubectl annotate`, the rollout Event read back with
//! `kubectl get events`, the kubectl plugin, and the uninstall.
//!
//! It uses the README's own namespaces (`envroll`, `apps`), so it runs alone in its binary and
//! first waits for any earlier cluster-wide install to be gone.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use common::kubectl::{kubectl, kubectl_binary, service_account_kubeconfig_file};
use common::operator::OperatorConfig;
use common::poll_until;
use common::workloads::{expect_one_rollout, wait_adopted, wait_deployment_settled};

const APP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web-env}
data: {LOG_LEVEL: info}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
        envFrom: [{configMapRef: {name: web-env}}]
"#;

async fn wait_namespace_gone(client: &kube::Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    poll_until(
        Duration::from_secs(120),
        Duration::from_millis(500),
        &format!("namespace {name} to be gone"),
        || async { Ok(namespaces.get_opt(name).await?.is_none().then_some(())) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cluster: make e2e"]
async fn readme_walkthrough_namespaced_install_annotate_events_plugin_uninstall() -> Result<()> {
    let client = common::client().await?;
    kubectl(
        &[
            "delete",
            "-k",
            "manifests/cluster-wide",
            "--ignore-not-found",
            "--wait=false",
        ],
        None,
    )?;
    for namespace in ["envroll", "apps"] {
        wait_namespace_gone(&client, namespace).await?;
    }

    // Install, namespace-scoped.
    kubectl(&["create", "namespace", "apps"], None)?;
    kubectl(&["create", "namespace", "envroll"], None)?;
    kubectl(&["apply", "-k", "manifests/namespaced"], None)?;
    let identity = service_account_kubeconfig_file("envroll", "envroll")?;
    let mut operator = OperatorConfig::scoped(&["apps"])
        .kubeconfig(&identity)
        .labelled("readme")
        .start_ready()
        .await?;
    let scope = operator.log_line("envroll watching").unwrap_or_default();
    ensure!(
        scope.contains("namespaces apps only"),
        "the start-up log does not say what is watched: {scope}"
    );

    // Use: an app, then the annotation from the README.
    kubectl(&["apply", "-n", "apps", "-f", "-"], Some(APP))?;
    wait_deployment_settled(&client, "apps", "web", false).await?;
    kubectl(
        &[
            "-n",
            "apps",
            "annotate",
            "deployment",
            "web",
            "envroll.dev/auto=true",
        ],
        None,
    )?;
    let deployments = Api::namespaced(client.clone(), "apps");
    let _: k8s_openapi::api::apps::v1::Deployment = wait_adopted(&deployments, "web").await?;
    kubectl(
        &[
            "-n",
            "apps",
            "patch",
            "configmap",
            "web-env",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"LOG_LEVEL":"debug"}}"#,
        ],
        None,
    )?;
    expect_one_rollout(&client, "apps", "web", 1).await?;
    let events = poll_until(
        Duration::from_secs(60),
        Duration::from_millis(500),
        "the RolloutTriggered Event through kubectl get events",
        || async {
            let listed = kubectl(
                &[
                    "-n",
                    "apps",
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=web,reason=RolloutTriggered",
                ],
                None,
            )?;
            Ok(listed
                .contains("ConfigMap web-env changed; consumed via envFrom in container web")
                .then_some(listed))
        },
    )
    .await?;
    eprintln!("{events}");

    // The kubectl plugin.
    let plugins = std::env::temp_dir().join(common::unique_name("kubectl-plugins"));
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(
        env!("CARGO_BIN_EXE_envroll"),
        plugins.join("kubectl-envroll"),
    )?;
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let explained = std::process::Command::new(kubectl_binary())
        .args(["envroll", "explain", "deploy/web", "-n", "apps"])
        .env("PATH", path)
        .output()
        .context("running kubectl envroll")?;
    let _ = std::fs::remove_dir_all(&plugins);
    let table = String::from_utf8_lossy(&explained.stdout);
    ensure!(
        explained.status.success()
            && table.contains("Deployment apps/web: managed")
            && table.contains("status:              up to date"),
        "kubectl envroll explain: {table}{}",
        String::from_utf8_lossy(&explained.stderr)
    );

    // Uninstall.
    operator.stop().await?;
    kubectl(&["delete", "-k", "manifests/namespaced"], None)?;
    kubectl(
        &[
            "-n",
            "apps",
            "annotate",
            "deployment",
            "web",
            "envroll.dev/applied-",
        ],
        None,
    )?;
    kubectl(
        &["delete", "namespace", "apps", "envroll", "--timeout=120s"],
        None,
    )?;
    Ok(())
}
