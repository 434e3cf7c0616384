//! Command-line arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::analysis::AnnotationDialects;
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
    /// What a ConfigMap or Secret change does before you make it: which workloads envroll would
    /// roll out because of it (and which keys), which see it in place, which are untouched.
    /// Against the cluster (-f FILE, or configmap/NAME --from-literal KEY=VALUE), or offline
    /// between two versions of manifests (--from OLD --to NEW, for example `kustomize build` of a
    /// base branch and of a change).
    #[command(
        after_help = "Exit codes: 0 nothing would roll out because of a config change; \
        2 at least one workload would; 1 an error (unreadable or malformed input, bad arguments, \
        a cluster that cannot be read)."
    )]
    Impact(ImpactArgs),
    /// Every managed workload in scope: its sources, the config hash its pods run, whether a
    /// rollout is pending or in progress, and the last outcome envroll reported.
    #[command(
        after_help = "Exit codes: 0 every workload in scope was read; 1 an error, or some \
        workloads could not be read (they are listed as unknown, with the reason)."
    )]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A workload in the cluster: deployment/NAME, statefulset/NAME or daemonset/NAME. With
    /// --reloader-annotations it may be left out: every workload of the namespace is compared.
    #[arg(
        value_name = "KIND/NAME",
        conflicts_with = "files",
        required_unless_present_any = ["files", "reloader_annotations"]
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

    /// Honour Stakater Reloader's annotations as `run --reloader-annotations` does, and compare
    /// each workload's decisions with what Reloader would do (a migration report).
    #[arg(long, env = "ENVROLL_RELOADER_ANNOTATIONS")]
    pub reloader_annotations: bool,

    /// With --reloader-annotations and neither KIND/NAME nor -f: compare the workloads of every
    /// namespace.
    #[arg(
        short = 'A',
        long = "all-namespaces",
        requires = "reloader_annotations",
        conflicts_with_all = ["target", "files", "namespace"]
    )]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("proposal").required(true).args(["from", "files", "target"])))]
pub struct ImpactArgs {
    /// Offline: the manifests before the change: a file, a directory (its .yaml, .yml and .json
    /// files), or `-` for stdin.
    #[arg(long, value_name = "OLD", requires = "to")]
    pub from: Option<String>,

    /// Offline: the manifests after the change, read the same way. Its objects are taken to be
    /// applied in the order written, as `kubectl apply -f` does.
    #[arg(long, value_name = "NEW", requires = "from")]
    pub to: Option<String>,

    /// Against the cluster: ConfigMaps and Secrets as you would apply them (files, directories,
    /// or `-` for stdin), compared with the live ones.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,

    /// Against the cluster: configmap/NAME or secret/NAME, edited with --from-literal and
    /// --from-file.
    #[arg(value_name = "KIND/NAME")]
    pub target: Option<String>,

    /// With KIND/NAME: set KEY to VALUE (repeatable). The value may be a secret: prefer
    /// --from-file for Secrets, a command line is visible to other users of the machine.
    #[arg(long = "from-literal", value_name = "KEY=VALUE", conflicts_with_all = ["files", "from"])]
    pub literals: Vec<String>,

    /// With KIND/NAME: set KEY (default: the file's name) to the file's content (repeatable).
    #[arg(long = "from-file", value_name = "[KEY=]PATH", conflicts_with_all = ["files", "from"])]
    pub from_files: Vec<String>,

    /// With KIND/NAME: the keys given are the whole data (other keys are removed), as with
    /// `kubectl create configmap ... | kubectl replace -f -`; by default they are set on the
    /// live data and the other keys kept.
    #[arg(long, conflicts_with_all = ["files", "from"])]
    pub replace: bool,

    /// The namespace of objects that do not set one, as `kubectl apply -n` (offline default:
    /// default; against the cluster: the kubeconfig context's namespace).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl ImpactArgs {
    /// Standard input can be read once: at most one side may be `-`.
    pub fn check(&self) -> Result<(), String> {
        if self.from.as_deref() == Some("-") && self.to.as_deref() == Some("-") {
            return Err("--from and --to cannot both be - (stdin can be read once)".into());
        }
        if self.files.iter().filter(|file| *file == "-").count() > 1 {
            return Err("-f - can be given once (stdin can be read once)".into());
        }
        Ok(())
    }

    /// Whether this compares two sets of manifests (`--from`/`--to`) rather than the cluster.
    pub fn offline(&self) -> bool {
        self.from.is_some()
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One workload: deployment/NAME, statefulset/NAME or daemonset/NAME (shown even when it is
    /// not managed).
    #[arg(value_name = "KIND/NAME")]
    pub target: Option<String>,

    /// The namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,

    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with_all = ["namespace", "target"])]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
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

    /// Honour Stakater Reloader's annotations (reloader.stakater.com/auto, search and match,
    /// ignore, configmap.reloader.stakater.com/reload, …) besides envroll's own, for a drop-in
    /// switch from Reloader. `envroll explain --reloader-annotations` shows what changes.
    #[arg(long, env = "ENVROLL_RELOADER_ANNOTATIONS")]
    pub reloader_annotations: bool,

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
    /// The annotation vocabularies honoured besides envroll's own.
    pub fn dialects(&self) -> AnnotationDialects {
        AnnotationDialects {
            reloader: self.reloader_annotations,
        }
    }

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
        assert_eq!(
            (args.from.as_deref(), args.to.as_deref()),
            (Some("old.yaml"), Some("-"))
        );
        assert!(args.offline());
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.output, OutputFormat::Table);
        assert!(args.check().is_ok());
        assert!(impact_args(&["--from", "-", "--to", "-"])
            .unwrap()
            .check()
            .is_err());
        assert!(impact_args(&["--from", "old.yaml"]).is_err());
        assert!(impact_args(&["--to", "new.yaml"]).is_err());
    }

    #[test]
    fn impact_against_the_cluster_takes_files_or_an_edited_source() {
        let args = impact_args(&["-f", "cm.yaml", "-f", "-", "-n", "shop", "-o", "json"]).unwrap();
        assert_eq!(args.files, vec!["cm.yaml", "-"]);
        assert!(!args.offline() && args.check().is_ok());
        assert!(impact_args(&["-f", "-", "-f", "-"])
            .unwrap()
            .check()
            .is_err());
        let args = impact_args(&[
            "configmap/web-env",
            "--from-literal",
            "LEVEL=debug",
            "--from-file",
            "conf=app.conf",
            "--replace",
        ])
        .unwrap();
        assert_eq!(args.target.as_deref(), Some("configmap/web-env"));
        assert_eq!(args.literals, vec!["LEVEL=debug"]);
        assert_eq!(args.from_files, vec!["conf=app.conf"]);
        assert!(args.replace && !args.offline());
        // One way of proposing a change at a time, and at least one.
        assert!(impact_args(&[]).is_err());
        assert!(impact_args(&["-f", "a.yaml", "configmap/x"]).is_err());
        assert!(impact_args(&["-f", "a.yaml", "--from", "a", "--to", "b"]).is_err());
        assert!(impact_args(&["configmap/x", "--from", "a", "--to", "b"]).is_err());
        // Edits need a target.
        assert!(impact_args(&["-f", "a.yaml", "--from-literal", "A=b"]).is_err());
        assert!(impact_args(&["--from", "a", "--to", "b", "--replace"]).is_err());
        assert!(impact_args(&["--from-literal", "A=b"]).is_err());
    }

    fn status_args(args: &[&str]) -> Result<StatusArgs, clap::Error> {
        match Cli::try_parse_from(["envroll", "status"].iter().chain(args))?.command {
            Command::Status(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_takes_a_namespace_every_namespace_or_one_workload() {
        let args = status_args(&[]).unwrap();
        assert!(args.target.is_none() && args.namespace.is_none() && !args.all_namespaces);
        assert!(status_args(&["-A", "-o", "json"]).unwrap().all_namespaces);
        let args = status_args(&["deploy/web", "-n", "shop"]).unwrap();
        assert_eq!(args.target.as_deref(), Some("deploy/web"));
        assert!(status_args(&["-A", "-n", "shop"]).is_err());
        assert!(status_args(&["-A", "deploy/web"]).is_err());
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
    fn reloader_annotations_are_off_unless_asked_for() {
        assert_eq!(run_args(&[]).dialects(), AnnotationDialects::default());
        assert!(run_args(&["--reloader-annotations"]).dialects().reloader);
        let explain =
            |args: &[&str]| Cli::try_parse_from(["envroll", "explain"].iter().chain(args));
        // The migration report may cover a namespace, or every namespace, instead of one workload.
        match explain(&["--reloader-annotations", "-n", "shop"])
            .unwrap()
            .command
        {
            Command::Explain(args) => assert!(args.reloader_annotations && args.target.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(explain(&["--reloader-annotations", "-A"]).is_ok());
        assert!(explain(&["-A"]).is_err(), "-A is for the migration report");
        assert!(explain(&["--reloader-annotations", "-A", "deploy/web"]).is_err());
        assert!(explain(&["--reloader-annotations", "-f", "x.yaml"]).is_ok());
    }

    #[test]
    fn explain_needs_files_or_a_target() {
        assert!(Cli::try_parse_from(["envroll", "explain"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-f", "x.yaml"]).is_err());
        assert!(Cli::try_parse_from(["envroll", "explain", "deploy/web", "-n", "shop"]).is_ok());
    }
}
