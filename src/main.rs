use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info};

use envroll::cli::{
    usage_error_exit_code, Cli, Command, ExplainArgs, ImpactArgs, RunArgs, StatusArgs,
    IMPACT_EXIT_ERROR, IMPACT_EXIT_ROLLOUT,
};
use envroll::controller::{self, Context, Settings};
use envroll::explain::{render_json, render_table, OutputFormat};
use envroll::impact::{self, ImpactReport};
use envroll::leader::{self, LeaseSettings};
use envroll::lifecycle::Budget;
use envroll::live::{self, render_live_table};
use envroll::live_impact::{self, Edit};
use envroll::manifests::{read_paths, Manifests};
use envroll::metrics::Metrics;
use envroll::migration::{self, cluster::Selection};
use envroll::notify::{Notifier, NotifySettings};
use envroll::{server, status, telemetry};

#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Bad input (unreadable files, malformed manifests, bad arguments) exits with 2, like kubectl.
const EXIT_BAD_INPUT: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(usage_error_exit_code(&error, &args));
        }
    };
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Explain(args) if args.reloader_annotations => explain_reloader(&args).await,
        Command::Explain(args) if args.files.is_empty() => explain_live(&args).await,
        Command::Explain(args) => explain_files(&args),
        Command::Impact(args) if args.offline() => impact_files(&args),
        Command::Impact(args) => impact_live(&args).await,
        Command::Status(args) => status(&args).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::new_heap();
    let scope = match args.scope() {
        Ok(scope) => scope,
        Err(problem) => {
            error!("{problem}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(problem) => {
            error!(error = %problem, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        scope,
        dry_run: args.dry_run,
        debounce: args.debounce(),
        concurrency: args.concurrency,
        budget: Budget::per_hour(args.max_rollouts_per_hour),
        dialects: args.dialects(),
    };
    if settings.dialects.reloader {
        info!("honouring Stakater Reloader's annotations (--reloader-annotations)");
    }
    let metrics = Arc::new(Metrics::default());
    let notifier = match NotifySettings::from_env(|name| std::env::var(name).ok()) {
        Ok(notify) => {
            if !notify.sinks.is_empty() {
                info!("rollout notifications: {notify}");
            }
            match Notifier::start(notify, metrics.clone()) {
                Ok(notifier) => notifier,
                Err(problem) => {
                    error!(error = %problem, "cannot start rollout notifications");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(problem) => {
            error!(error = %problem, "rollout notifications are not configured right");
            return ExitCode::FAILURE;
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let mut server_stopped = stopped.clone();
    let server = tokio::spawn(server::serve(
        args.metrics_address,
        metrics.clone(),
        async move {
            let _ = server_stopped.wait_for(|stop| *stop).await;
        },
    ));
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        controller::termination().await;
        info!("termination requested; finishing in-flight reconciles");
        let _ = stop_on_signal.send(true);
    });

    let leadership = if args.leader_election {
        let lease = LeaseSettings {
            namespace: args
                .pod_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            name: args.lease_name.clone(),
            identity: args.identity.clone(),
            duration_seconds: args.lease_duration,
        };
        // A standby is healthy and ready to take over.
        metrics.set_ready(true);
        match leader::acquire(client.clone(), &lease, stopped.clone()).await {
            Ok(Some(leadership)) => Some(leadership),
            Ok(None) => return finish(server, &args, stop, false).await,
            Err(problem) => {
                error!(error = %problem, "leader election failed");
                let _ = stop.send(true);
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    metrics.set_ready(false);
    let lost_leadership = Arc::new(AtomicBool::new(false));
    if let Some(leadership) = &leadership {
        let mut lost = leadership.lost.clone();
        let (stop, flag) = (stop.clone(), lost_leadership.clone());
        tokio::spawn(async move {
            if lost.wait_for(|lost| *lost).await.is_ok() {
                error!("lost leadership; stopping so that only the new leader patches workloads");
                flag.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
            }
        });
    }
    let guard = leadership
        .as_ref()
        .map(|leadership| leadership.guard.clone());
    let context = Arc::new(
        Context::new(client, settings, metrics, &args.identity, guard).with_notifier(notifier),
    );
    controller::run(context, stopped).await;
    // Released only now that no reconcile is patching any more.
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    finish(server, &args, stop, lost_leadership.load(Ordering::SeqCst)).await
}

/// Stops the HTTP server and turns how the operator ended into an exit code.
async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    args: &RunArgs,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    lost_leadership: bool,
) -> ExitCode {
    let _ = stop.send(true);
    match server.await {
        Ok(Ok(())) if !lost_leadership => ExitCode::SUCCESS,
        Ok(Ok(())) => ExitCode::FAILURE,
        Ok(Err(problem)) => {
            error!(error = %problem, address = %args.metrics_address, "metrics server failed");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// A client from the caller's kubeconfig, and the namespace to work in: the one asked for, or
/// the kubeconfig's. A client that cannot be built is reported, and its exit code returned.
async fn client_in_namespace(namespace: Option<&str>) -> Result<(kube::Client, String), ExitCode> {
    match kube::Client::try_default().await {
        Ok(client) => {
            let namespace =
                namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string);
            Ok((client, namespace))
        }
        Err(problem) => {
            eprintln!("error: cannot build a Kubernetes client: {problem}");
            Err(ExitCode::FAILURE)
        }
    }
}

async fn explain_live(args: &ExplainArgs) -> ExitCode {
    let target = args.target.as_deref().unwrap_or_default();
    let (kind, name) = match live::parse_target(target) {
        Ok(parsed) => parsed,
        Err(problem) => {
            eprintln!("error: {problem}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (client, namespace) = match client_in_namespace(args.namespace.as_deref()).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    match live::explain(client, kind, &namespace, &name).await {
        Ok(explanation) => {
            match args.output {
                OutputFormat::Table => print!("{}", render_live_table(&explanation)),
                OutputFormat::Json => println!("{}", render_json(&[explanation])),
            }
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}

fn explain_files(args: &ExplainArgs) -> ExitCode {
    let manifests = match read_explain_files(args) {
        Ok(manifests) => manifests,
        Err(code) => return code,
    };
    print_notes(&manifests);
    let analyses = manifests.analyse();
    match args.output {
        OutputFormat::Table => print!("{}", render_table(&analyses)),
        OutputFormat::Json => println!("{}", render_json(&analyses)),
    }
    ExitCode::SUCCESS
}

/// The manifests `explain -f` names (`-` is stdin); unreadable or malformed input is bad input.
fn read_explain_files(args: &ExplainArgs) -> Result<Manifests, ExitCode> {
    read_paths(
        &args.files,
        args.namespace.as_deref(),
        &mut std::io::stdin(),
    )
    .map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

/// `explain --reloader-annotations`: envroll's decisions with Reloader's annotations honoured,
/// compared with what Reloader does, for manifests (-f) or for workloads in the cluster.
async fn explain_reloader(args: &ExplainArgs) -> ExitCode {
    let manifests = if args.files.is_empty() {
        let (client, namespace) = match client_in_namespace(args.namespace.as_deref()).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        let selection = match args.target.as_deref() {
            Some(target) => match live::parse_target(target) {
                Ok((kind, name)) => Selection::One {
                    kind,
                    namespace,
                    name,
                },
                Err(problem) => {
                    eprintln!("error: {problem}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            },
            None if args.all_namespaces => Selection::All { namespace: None },
            None => Selection::All {
                namespace: Some(namespace),
            },
        };
        match migration::cluster::read(&client, &selection).await {
            Ok((manifests, notes)) => {
                for note in notes {
                    eprintln!("note: {note}");
                }
                manifests
            }
            Err(problem) => {
                eprintln!("error: {problem}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match read_explain_files(args) {
            Ok(manifests) => manifests,
            Err(code) => return code,
        }
    };
    print_notes(&manifests);
    let report = migration::compare_manifests(&manifests);
    match args.output {
        OutputFormat::Table => print!("{}", migration::render_table(&report)),
        OutputFormat::Json => println!("{}", migration::render_json(&report)),
    }
    ExitCode::SUCCESS
}

/// What the manifest reader noticed without stopping (skipped kinds, bad annotations).
fn print_notes(manifests: &Manifests) {
    for note in &manifests.notes {
        eprintln!("note: {note}");
    }
}

fn impact_files(args: &ImpactArgs) -> ExitCode {
    if let Err(problem) = args.check() {
        eprintln!("error: {problem}");
        return ExitCode::from(IMPACT_EXIT_ERROR);
    }
    let mut sides = Vec::new();
    for path in [&args.from, &args.to].into_iter().flatten() {
        match read_paths(
            std::slice::from_ref(path),
            args.namespace.as_deref(),
            &mut std::io::stdin(),
        ) {
            Ok(manifests) => {
                print_notes(&manifests);
                sides.push(manifests);
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(IMPACT_EXIT_ERROR);
            }
        }
    }
    let report = impact::compare(&sides[0], &sides[1]);
    print_impact(&report, args)
}

/// Prints an impact report and turns it into the exit code.
fn print_impact(report: &ImpactReport, args: &ImpactArgs) -> ExitCode {
    match args.output {
        OutputFormat::Table => print!("{}", impact::render_table(report)),
        OutputFormat::Json => println!("{}", impact::render_json(report)),
    }
    if report.rolls_out() {
        ExitCode::from(IMPACT_EXIT_ROLLOUT)
    } else {
        ExitCode::SUCCESS
    }
}

/// `impact -f FILE` or `impact KIND/NAME --from-literal ...`: the proposal against the live
/// objects of its namespace.
async fn impact_live(args: &ImpactArgs) -> ExitCode {
    let fail = |problem: &dyn std::fmt::Display| {
        eprintln!("error: {problem}");
        ExitCode::from(IMPACT_EXIT_ERROR)
    };
    if let Err(problem) = args.check() {
        return fail(&problem);
    }
    // Arguments and files first: a mistake is told before the cluster is asked anything.
    let edit = match &args.target {
        Some(target) => {
            let parsed = live_impact::parse_source_target(target).and_then(|(kind, name)| {
                let set = live_impact::edit_keys(&args.literals, &args.from_files)?;
                Ok((kind, name, set))
            });
            match parsed {
                Ok(parsed) => Some(parsed),
                Err(problem) => return fail(&problem),
            }
        }
        None => None,
    };
    let (client, namespace) = match client_in_namespace(args.namespace.as_deref()).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let proposed = match edit {
        Some((kind, name, set)) => {
            let edit = Edit {
                kind,
                namespace,
                name,
                set,
                replace: args.replace,
            };
            match live_impact::propose_edit(&client, &edit).await {
                Ok(proposed) => proposed,
                Err(problem) => return fail(&problem),
            }
        }
        None => {
            let mut proposed =
                match read_paths(&args.files, Some(&namespace), &mut std::io::stdin()) {
                    Ok(proposed) => proposed,
                    Err(problem) => return fail(&problem),
                };
            print_notes(&proposed);
            for workload in live_impact::drop_workloads(&mut proposed) {
                eprintln!(
                    "note: skipping {workload}: against the cluster, impact compares ConfigMaps \
                     and Secrets; compare workload changes with --from OLD --to NEW"
                );
            }
            proposed
        }
    };
    match live_impact::impact(&client, &proposed).await {
        Ok(report) => print_impact(&report, args),
        Err(problem) => fail(&problem),
    }
}

async fn status(args: &StatusArgs) -> ExitCode {
    let target = match args.target.as_deref().map(live::parse_target).transpose() {
        Ok(target) => target,
        Err(problem) => {
            eprintln!("error: {problem}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (client, namespace) = match client_in_namespace(args.namespace.as_deref()).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let scope = match target {
        Some((kind, name)) => status::Scope::Workload {
            kind,
            namespace,
            name,
        },
        None if args.all_namespaces => status::Scope::AllNamespaces,
        None => status::Scope::Namespace(namespace),
    };
    match status::status(client, &scope).await {
        Ok(report) => {
            match args.output {
                OutputFormat::Table => print!(
                    "{}",
                    status::render_table(&report, args.all_namespaces, status::now())
                ),
                OutputFormat::Json => println!("{}", status::render_json(&report)),
            }
            if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}
