//! kubectl, the install manifests and ServiceAccount identities, for tests that install envroll
//! the way the README does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

/// The repository root, where `manifests/` and `e2e/` live.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The kubectl built for the local control plane (`e2e/components env`), else the one on `PATH`.
pub fn kubectl_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVROLL_BIN_KUBECTL") {
        return path.into();
    }
    let found = Command::new(repo_root().join("e2e/components"))
        .arg("env")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find_map(|line| {
                    line.strip_prefix("ENVROLL_BIN_KUBECTL=")
                        .map(str::to_string)
                })
        })
        .map(|path| PathBuf::from(path.trim_matches(|c| c == '\'' || c == '"')))
        .filter(|path| path.is_file());
    found.unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl (with `$KUBECONFIG`, the admin identity) and returns its stdout.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(kubectl_binary())
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("kubectl {}: {stdout}{stderr}", args.join(" "));
    ensure!(
        output.status.success(),
        "kubectl {} failed: {stderr}",
        args.join(" ")
    );
    Ok(stdout)
}

/// `kubectl apply -f -` of a multi-document manifest into `namespace`.
pub fn apply(namespace: &str, manifest: &str) -> Result<()> {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest)).map(|_| ())
}

/// A kubeconfig file that authenticates as `namespace/service_account` (see
/// [`super::service_account_kubeconfig`]), for an operator process that must run with exactly the
/// RBAC the manifests grant.
pub fn service_account_kubeconfig_file(namespace: &str, service_account: &str) -> Result<PathBuf> {
    let yaml = super::service_account_kubeconfig(namespace, service_account, "1h")?;
    let path = std::env::temp_dir().join(format!(
        "{}.kubeconfig",
        super::unique_name(&format!("sa-{namespace}"))
    ));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// `manifests/namespaced` as one YAML stream, with the operator in `operator_ns` and the Role
/// granted in `watched`. The manifests name those `envroll` and `apps`.
pub fn render_namespaced(operator_ns: &str, watched: &str) -> Result<String> {
    let rendered = kubectl(&["kustomize", "manifests/namespaced"], None)?;
    Ok(move_namespaced(&rendered, operator_ns, watched))
}

fn move_namespaced(yaml: &str, operator_ns: &str, watched: &str) -> String {
    yaml.replace("namespace: envroll", &format!("namespace: {operator_ns}"))
        .replace("namespace: apps", &format!("namespace: {watched}"))
        .replace("value: apps", &format!("value: {watched}"))
}

/// The identity an operator under test runs with, chosen by `ENVROLL_E2E_IDENTITY`:
/// `namespaced` (default: the Role of `manifests/namespaced` in each watched namespace, and a
/// ServiceAccount in the first), `cluster-wide` (the ServiceAccount of
/// `manifests/cluster-wide`), or `admin` (`$KUBECONFIG` itself, returned as `None`).
pub fn operator_identity(watched: &[String]) -> Result<Option<PathBuf>> {
    let mode = std::env::var("ENVROLL_E2E_IDENTITY").unwrap_or_else(|_| "namespaced".into());
    match (mode.as_str(), watched.first()) {
        ("admin", _) => Ok(None),
        ("cluster-wide", _) | ("namespaced", None) => cluster_wide_identity().map(Some),
        ("namespaced", Some(home)) => namespaced_identity(home, watched).map(Some),
        (other, _) => anyhow::bail!(
            "ENVROLL_E2E_IDENTITY={other:?}: expected namespaced, cluster-wide or admin"
        ),
    }
}

/// Where the identity of an operator watching `watched` (see [`operator_identity`]) may hold its
/// leader-election Lease: the namespaced identity is granted the install's leader-election Role in
/// its own namespace, the cluster-wide one has it in `envroll`.
pub fn lease_namespace(watched: &[String]) -> Result<String> {
    let mode = std::env::var("ENVROLL_E2E_IDENTITY").unwrap_or_else(|_| "namespaced".into());
    match (mode.as_str(), watched.first()) {
        ("namespaced", Some(home)) => {
            let role =
                std::fs::read_to_string(repo_root().join("manifests/base/leader-election.yaml"))?;
            kubectl(
                &["apply", "-f", "-"],
                Some(&move_namespaced(&role, home, home)),
            )?;
            Ok(home.clone())
        }
        ("admin", Some(home)) => Ok(home.clone()),
        _ => {
            cluster_wide_identity()?;
            Ok("envroll".into())
        }
    }
}

fn namespaced_identity(home: &str, watched: &[String]) -> Result<PathBuf> {
    let rbac = std::fs::read_to_string(repo_root().join("manifests/namespaced/rbac.yaml"))?;
    let mut objects = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: envroll\n  namespace: {home}\n"
    );
    for namespace in watched {
        objects.push_str("---\n");
        objects.push_str(&move_namespaced(&rbac, home, namespace));
    }
    kubectl(&["apply", "-f", "-"], Some(&objects))?;
    service_account_kubeconfig_file(home, "envroll")
}

/// Retries while an earlier test's `envroll` namespace is still terminating (the API server
/// refuses new content in it until it is gone).
fn apply_until_accepted(args: &[&str]) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match kubectl(args, None) {
            Ok(out) => return Ok(out),
            Err(problem)
                if format!("{problem:#}").contains("being terminated")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(problem) => return Err(problem),
        }
    }
}

fn cluster_wide_identity() -> Result<PathBuf> {
    static INSTALLED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            apply_until_accepted(&["apply", "-k", "manifests/cluster-wide"])
                .and_then(|_| service_account_kubeconfig_file("envroll", "envroll"))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}
