//! Runs the real `envroll` binary as the operator under test.
//!
//! [`OperatorConfig`] says how to start it (scope, debounce, extra flags);
//! [`Operator`] is the running process: its log lines are collected (and
//! echoed to the test's stderr with a prefix, which the test harness shows
//! when a test fails), its `/metrics`, `/healthz` and `/readyz` endpoints are
//! reachable through the address it logs, and it is stopped with SIGTERM by
//! [`Operator::stop`] or killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Logged once every ConfigMap and Secret in scope has been listed.
pub const INITIAL_LIST_DONE: &str = "initial list of ConfigMaps and Secrets complete";
/// Logged by the HTTP server with the address it bound (`address=...`).
pub const SERVING: &str = "serving /metrics, /healthz and /readyz";
/// Generous for a loaded two-core machine: the operator only lists what is in
/// the test's namespace.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the operator: `envroll run` with these arguments.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    label: String,
    namespaces: Vec<String>,
    debounce: Option<String>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    kubeconfig: Option<PathBuf>,
}

impl OperatorConfig {
    /// `--namespaces <namespaces> --metrics-address 127.0.0.1:0 --debounce 500ms`.
    pub fn scoped(namespaces: &[&str]) -> Self {
        OperatorConfig {
            label: namespaces.join(","),
            namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
            debounce: Some("500ms".into()),
            extra: Vec::new(),
            env: Vec::new(),
            kubeconfig: None,
        }
    }

    /// No `--namespaces`: the default, cluster-wide mode.
    pub fn cluster_wide() -> Self {
        OperatorConfig {
            label: "cluster-wide".into(),
            namespaces: Vec::new(),
            debounce: Some("500ms".into()),
            extra: Vec::new(),
            env: Vec::new(),
            kubeconfig: None,
        }
    }

    /// `--debounce <value>` instead of 500 ms.
    pub fn debounce(mut self, value: &str) -> Self {
        self.debounce = Some(value.to_string());
        self
    }

    /// Leaves `--debounce` out, so the operator's default applies.
    pub fn default_debounce(mut self) -> Self {
        self.debounce = None;
        self
    }

    /// Runs the operator with this kubeconfig instead of `$KUBECONFIG`, for example a
    /// ServiceAccount's (see `common::service_account_kubeconfig`).
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.to_path_buf());
        self
    }

    /// Names the process in the test's output (default: its scope).
    pub fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Sets an environment variable of the process, as the install manifests set the
    /// operator's settings.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The arguments after the binary's name.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        if !self.namespaces.is_empty() {
            args.push("--namespaces".into());
            args.push(self.namespaces.join(","));
        }
        args.push("--metrics-address".into());
        args.push("127.0.0.1:0".into());
        if let Some(debounce) = &self.debounce {
            args.push("--debounce".into());
            args.push(debounce.clone());
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Spawns the operator with [`Self::kubeconfig`], else with the identity the install
    /// manifests grant (see `kubectl::operator_identity`).
    pub fn start(&self) -> Result<Operator> {
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Some(path.clone()),
            None => super::kubectl::operator_identity(&self.namespaces)?,
        };
        Operator::spawn(&self.label, &self.args(), &self.env, kubeconfig.as_deref())
    }

    /// Spawns the operator and waits until it is ready (see [`Operator::wait_ready`]).
    pub async fn start_ready(&self) -> Result<Operator> {
        let mut operator = self.start()?;
        operator.wait_ready(READY_TIMEOUT).await?;
        Ok(operator)
    }
}

/// `envroll explain TARGET -n NAMESPACE -o OUTPUT` on the live cluster, as the identity of
/// `kubeconfig` (default: `$KUBECONFIG`). Returns stdout; fails when the command does.
pub fn explain(
    target: &str,
    namespace: &str,
    output: &str,
    kubeconfig: Option<&Path>,
) -> Result<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envroll"));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let result = command
        .args(["explain", target, "-n", namespace, "-o", output])
        .env("NO_COLOR", "1")
        .output()
        .context("running envroll explain")?;
    let stdout = String::from_utf8_lossy(&result.stdout).to_string();
    let stderr = String::from_utf8_lossy(&result.stderr);
    eprintln!("envroll explain {target} -n {namespace} -o {output}:\n{stdout}{stderr}");
    if !result.status.success() {
        bail!(
            "envroll explain {target} failed ({}): {stderr}",
            result.status
        );
    }
    Ok(stdout)
}

/// The entry of `envroll explain deploy/NAME -o json` for that one workload.
pub fn explain_deployment_json(
    namespace: &str,
    name: &str,
    kubeconfig: Option<&Path>,
) -> Result<serde_json::Value> {
    let out = explain(&format!("deploy/{name}"), namespace, "json", kubeconfig)?;
    let report: serde_json::Value =
        serde_json::from_str(&out).context("explain -o json is not JSON")?;
    Ok(report["workloads"][0].clone())
}

/// A running `envroll run` process.
pub struct Operator {
    label: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Operator {
    /// Starts `envroll <args>`, collecting its stderr line by line.
    pub fn spawn(
        label: &str,
        args: &[String],
        env: &[(String, String)],
        kubeconfig: Option<&Path>,
    ) -> Result<Self> {
        let binary = env!("CARGO_BIN_EXE_envroll");
        eprintln!("[envroll {label}] starting: {binary} {}", args.join(" "));
        // envroll's own debug lines (conflicts, triggers) help when a test
        // fails; `RUST_LOG` overrides.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,envroll=debug".into());
        let mut command = Command::new(binary);
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let mut child = command
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let stderr = child.stderr.take().context("the operator's stderr")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let logs = logs.clone();
            let prefix = format!("[envroll {label}]");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    eprintln!("{prefix} {line}");
                    logs.lock().expect("log lock").push(line);
                }
            })
        };
        Ok(Operator {
            label: label.to_string(),
            child,
            logs,
            reader: Some(reader),
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first log line containing `needle`, if any.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .find(|line| line.contains(needle))
            .cloned()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs.lock().expect("log lock");
        let start = logs.len().saturating_sub(lines);
        logs[start..].join("\n")
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("checking the operator")?;
        }
        Ok(self.exit)
    }

    /// Fails when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.exited()? {
            bail!(
                "operator {} exited with {status}; last log lines:\n{}",
                self.label,
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// Waits for a log line containing `needle` and returns it. Fails if the
    /// process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_line(needle) {
                return Ok(line);
            }
            self.ensure_running()
                .with_context(|| format!("waiting for log line {needle:?}"))?;
            if Instant::now() >= deadline {
                bail!(
                    "operator {} did not log {needle:?} within {timeout:?}; last log lines:\n{}",
                    self.label,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address of `/metrics`, `/healthz` and `/readyz`, from the log.
    pub fn address(&self) -> Result<SocketAddr> {
        let line = self
            .log_line(SERVING)
            .with_context(|| format!("operator {} has not logged {SERVING:?}", self.label))?;
        parse_address(&line)
    }

    /// Waits until the initial list is complete and `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.wait_for_log(INITIAL_LIST_DONE, timeout).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_for_log(SERVING, remaining).await?;
        let address = self.address()?;
        loop {
            self.ensure_running()?;
            match http_get(address, "/readyz").await {
                Ok((200, _)) => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {}
                Ok((status, body)) => {
                    bail!("/readyz still answers {status} {body:?} after {timeout:?}")
                }
                Err(problem) => return Err(problem.context("/readyz never answered")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` on the operator's HTTP endpoint: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.address()?, path).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        match self.get("/metrics").await? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }

    /// Kills the process at once (SIGKILL), as a crashed node would: nothing is released.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("killing the operator")?;
        self.exit = Some(self.child.wait()?);
        eprintln!("[envroll {}] killed", self.label);
        Ok(())
    }

    /// Sends SIGTERM, as Kubernetes does to a pod it stops, and returns at once.
    pub fn terminate(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed: {sent}");
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the process to exit; kills it if it does
    /// not exit within 30 s (and fails).
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited()? {
            return Ok(status);
        }
        self.terminate()?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.exited()? {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                eprintln!("[envroll {}] exited with {status}", self.label);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "operator {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; last log lines:\n{}",
                    self.label,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `address=HOST:PORT` from a log line.
fn parse_address(line: &str) -> Result<SocketAddr> {
    let value = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .with_context(|| format!("no address= in {line:?}"))?;
    value
        .trim_matches('"')
        .parse()
        .with_context(|| format!("bad address in {line:?}"))
}

/// Removes terminal colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A minimal HTTP/1.0 GET: enough for the operator's plain-text endpoints.
pub async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get_blocking(address, &path))
        .await
        .map_err(|e| anyhow!("HTTP client thread failed: {e}"))?
}

fn http_get_blocking(address: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the response to GET {path}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response to GET {path}: {response:?}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in the response to GET {path}: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The sum of every sample of metric `name` whose labels include all of
/// `labels`; 0 when there is none (a counter that never moved is absent).
pub fn metric_value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (label_text, value) = rest.split_once('}')?;
                (label_text, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            let matches = labels
                .iter()
                .all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")));
            if !matches {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_logged_address() {
        let line = "2025-01-01T00:00:00Z  INFO envroll::server: serving /metrics, /healthz and /readyz address=127.0.0.1:4242";
        assert_eq!(
            parse_address(line).unwrap(),
            "127.0.0.1:4242".parse().unwrap()
        );
    }

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2maddress\u{1b}[0m=1"),
            "address=1".to_string()
        );
    }

    #[test]
    fn sums_matching_samples() {
        let text = "# HELP envroll_rollouts Rollouts\nenvroll_rollouts_total{kind=\"Deployment\",namespace=\"a\"} 2\nenvroll_rollouts_total{kind=\"StatefulSet\",namespace=\"a\"} 1\nenvroll_managed_workloads 3\n";
        assert_eq!(metric_value(text, "envroll_rollouts_total", &[]), 3.0);
        assert_eq!(
            metric_value(text, "envroll_rollouts_total", &[("kind", "Deployment")]),
            2.0
        );
        assert_eq!(metric_value(text, "envroll_managed_workloads", &[]), 3.0);
        assert_eq!(metric_value(text, "envroll_missing", &[]), 0.0);
    }
}
