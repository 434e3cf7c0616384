//! Command-line arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::controller::Scope;
use crate::debounce::Debounce;
use crate::explain::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "envroll",
    version,
    about = "Roll out workloads only when a ConfigMap or Secret change cannot reach the running process"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator.
    Run(RunArgs),
    /// Show which ConfigMaps and Secrets a workload consumes, and which changes roll it out:
    /// from manifest files (-f) or from the cluster (KIND/NAME).
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A workload in the cluster: deployment/NAME, statefulset/NAME or daemonset/NAME.
    #[arg(
        value_name = "KIND/NAME",
        conflicts_with = "files",
        required_unless_present = "files"
    )]
    pub target: Option<String>,

    /// Namespace of the workload in the cluster (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,

    /// Manifest files to analyse (multi-document YAML or `kind: List`); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watch every namespace. Ignored when --namespaces is given.
    #[arg(long, env = "ENVROLL_WATCH_GLOBALLY", default_value_t = true, action = ArgAction::Set)]
    pub watch_globally: bool,

    /// Watch only these namespaces (comma-separated), with namespaced API calls only, so Roles
    /// are enough.
    #[arg(long, env = "ENVROLL_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Decide and report (Events, logs, metrics) but never patch a workload.
    #[arg(long, env = "ENVROLL_DRY_RUN")]
    pub dry_run: bool,

    /// Changes to a workload's sources and template within this window give one rollout; 0
    /// disables.
    #[arg(long, env = "ENVROLL_DEBOUNCE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub debounce: Duration,

    /// A workload whose sources keep changing is decided at the latest this long after the
    /// first undecided change, so a source that never stops changing still rolls out. Default:
    /// ten times --debounce.
    #[arg(long, env = "ENVROLL_DEBOUNCE_MAX_WAIT", value_parser = humantime::parse_duration)]
    pub debounce_max_wait: Option<Duration>,

    /// Workloads reconciled at the same time, per kind and namespace scope: bounds the load a burst
    /// of changes puts on the API server.
    #[arg(long, env = "ENVROLL_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "ENVROLL_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "ENVROLL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// The namespace the operator runs in, used when neither --namespaces nor
    /// --watch-globally=true says where to look.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// This replica's name, reported in Events and used as its leader-election identity.
    #[arg(long, env = "POD_NAME", default_value = "envroll")]
    pub identity: String,

    /// Run several replicas safely: only the holder of a Lease reconciles.
    #[arg(long, env = "ENVROLL_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the Lease used for leader election (in the operator's own namespace).
    #[arg(long, env = "ENVROLL_LEASE_NAME", default_value = "envroll")]
    pub lease_name: String,

    /// Seconds without renewal after which a standby replica takes over. The leader renews
    /// halfway through and stops patching a third before the end, so at least 3.
    #[arg(long, env = "ENVROLL_LEASE_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..))]
    pub lease_duration: u64,
}

impl RunArgs {
    pub fn debounce(&self) -> Debounce {
        match self.debounce_max_wait {
            Some(max_wait) => Debounce {
                quiet: self.debounce,
                max_wait: max_wait.max(self.debounce),
            },
            None => Debounce::with_default_max_wait(self.debounce),
        }
    }

    pub fn scope(&self) -> Result<Scope, String> {
        // A namespace named twice would get two sets of watches, and every event twice.
        let mut namespaces: Vec<String> = Vec::new();
        for namespace in self.namespaces.iter().map(|ns| ns.trim()) {
            if !namespace.is_empty() && !namespaces.iter().any(|known| known == namespace) {
                namespaces.push(namespace.to_string());
            }
        }
        if !namespaces.is_empty() {
            return Ok(Scope::Namespaces(namespaces));
        }
        if self.watch_globally {
            return Ok(Scope::Cluster);
        }
        match &self.pod_namespace {
            Some(own) => Ok(Scope::Namespaces(vec![own.clone()])),
            None => Err("--watch-globally=false needs --namespaces or POD_NAMESPACE".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["envroll", "run"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cluster_wide_by_default() {
        let args = run_args(&[]);
        assert_eq!(args.scope(), Ok(Scope::Cluster));
        assert_eq!(args.debounce, Duration::from_secs(2));
    }

    #[test]
    fn namespaces_win_over_watch_globally() {
        let args = run_args(&["--namespaces", "a, b", "--debounce", "0"]);
        assert_eq!(
            args.scope(),
            Ok(Scope::Namespaces(vec!["a".into(), "b".into()]))
        );
        assert_eq!(args.debounce, Duration::ZERO);
    }

    #[test]
    fn a_lease_too_short_to_renew_in_time_is_refused() {
        assert!(Cli::try_parse_from(["envroll", "run", "--lease-duration", "2"]).is_err());
        assert_eq!(run_args(&["--lease-duration", "3"]).lease_duration, 3);
    }

    #[test]
    fn a_namespace_named_twice_is_watched_once() {
        let args = run_args(&["--namespaces", "a,b, a,,b"]);
        assert_eq!(
            args.scope(),
            Ok(Scope::Namespaces(vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn the_maximum_wait_defaults_to_ten_debounces_and_is_never_shorter() {
        let second = Duration::from_secs(1);
        let default = run_args(&[]).debounce();
        assert_eq!((default.quiet, default.max_wait), (2 * second, 20 * second));
        let set = run_args(&["--debounce", "2s", "--debounce-max-wait", "6s"]).debounce();
        assert_eq!((set.quiet, set.max_wait), (2 * second, 6 * second));
        let shorter = run_args(&["--debounce", "2s", "--debounce-max-wait", "1s"]).debounce();
        assert_eq!(shorter.max_wait, 2 * second);
    }

    #[test]
    fn not_global_without_namespaces_needs_the_own_namespace() {
        let args = run_args(&["--watch-globally=false", "--pod-namespace", "ops"]);
        assert_eq!(args.scope(), Ok(Scope::Namespaces(vec!["ops".into()])));
        let args = run_args(&["--watch-globally", "false"]);
        assert!(args.scope().is_err());
    }

    #[test]
    fn explain_needs_files_or_a_target() {
        assert!(Cli::try_parse_from(["envroll", "explain"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-f", "x.yaml"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-n", "shop"]).is_ok());
    }
}
