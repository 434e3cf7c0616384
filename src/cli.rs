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
    /// Compare two versions of manifests (for example `kustomize build` of a base branch and of a
    /// change): which workloads envroll would roll out because of a ConfigMap or Secret change,
    /// which see it in place, which are untouched.
    #[command(
        after_help = "Exit codes: 0 nothing would roll out because of a config change; \
        2 at least one workload would; 1 an error (unreadable or malformed input, bad arguments)."
    )]
    Impact(ImpactArgs),
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
    /// With -f: the namespace of objects that do not set one, as `kubectl apply -n` (default:
    /// default).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,

    /// Manifests to analyse (multi-document YAML or `kind: List`): files, directories (their
    /// .yaml, .yml and .json files), or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ImpactArgs {
    /// The manifests before the change: a file, a directory (its .yaml, .yml and .json files), or
    /// `-` for stdin.
    #[arg(long, value_name = "OLD")]
    pub from: String,

    /// The manifests after the change, read the same way. Its objects are taken to be applied in
    /// the order written, as `kubectl apply -f` does.
    #[arg(long, value_name = "NEW")]
    pub to: String,

    /// The namespace of objects that do not set one, as `kubectl apply -n` (default: default).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl ImpactArgs {
    /// Standard input can be read once: at most one side may be `-`.
    pub fn check(&self) -> Result<(), String> {
        if self.from == "-" && self.to == "-" {
            return Err("--from and --to cannot both be - (stdin can be read once)".into());
        }
        Ok(())
    }
}

/// `envroll impact` exits with this when an error stopped it (unreadable or malformed input, bad
/// arguments).
pub const IMPACT_EXIT_ERROR: u8 = 1;
/// `envroll impact` exits with this when at least one workload would roll out because of a
/// config change (0: none would).
pub const IMPACT_EXIT_ROLLOUT: u8 = 2;

/// The exit code for arguments clap refused (`args` as given, program name first). clap exits
/// with 2, which `impact` uses for "would roll out": there, a mistyped flag must fail a pipeline
/// as an error, not pass for a rollout.
pub fn usage_error_exit_code(error: &clap::Error, args: &[std::ffi::OsString]) -> u8 {
    let code = u8::try_from(error.exit_code()).unwrap_or(IMPACT_EXIT_ERROR);
    let impact = args.get(1).is_some_and(|command| command == "impact");
    if impact && code != 0 {
        IMPACT_EXIT_ERROR
    } else {
        code
    }
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

    /// Rollouts envroll may trigger for one workload within an hour; a change over the budget
    /// waits until the budget allows, it is never dropped. 0 is no limit. A workload can set its
    /// own with the annotation envroll.dev/max-rollouts-per-hour.
    #[arg(long, env = "ENVROLL_MAX_ROLLOUTS_PER_HOUR", default_value_t = 12)]
    pub max_rollouts_per_hour: u32,

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

    fn impact_args(args: &[&str]) -> Result<ImpactArgs, clap::Error> {
        match Cli::try_parse_from(["envroll", "impact"].iter().chain(args))?.command {
            Command::Impact(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impact_needs_both_sides_and_reads_stdin_at_most_once() {
        let args = impact_args(&["--from", "old.yaml", "--to", "-", "-n", "shop"]).unwrap();
        assert_eq!((args.from.as_str(), args.to.as_str()), ("old.yaml", "-"));
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.output, OutputFormat::Table);
        assert!(args.check().is_ok());
        assert!(impact_args(&["--from", "-", "--to", "-"])
            .unwrap()
            .check()
            .is_err());
        assert!(impact_args(&["--from", "old.yaml"]).is_err());
    }

    #[test]
    fn a_usage_error_of_impact_is_not_mistaken_for_a_rollout() {
        let args =
            |list: &[&str]| -> Vec<std::ffi::OsString> { list.iter().map(Into::into).collect() };
        let impact = args(&["envroll", "impact", "--form", "a"]);
        let error = Cli::try_parse_from(&impact).unwrap_err();
        assert_eq!(usage_error_exit_code(&error, &impact), IMPACT_EXIT_ERROR);
        let help = args(&["envroll", "impact", "--help"]);
        let error = Cli::try_parse_from(&help).unwrap_err();
        assert_eq!(usage_error_exit_code(&error, &help), 0);
        let explain = args(&["envroll", "explain"]);
        let error = Cli::try_parse_from(&explain).unwrap_err();
        assert_eq!(usage_error_exit_code(&error, &explain), 2);
    }

    #[test]
    fn explain_needs_files_or_a_target() {
        assert!(Cli::try_parse_from(["envroll", "explain"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-f", "x.yaml"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-n", "shop"]).is_ok());
    }
}
