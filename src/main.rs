use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info};

use envroll::cli::{Cli, Command, ExplainArgs, RunArgs};
use envroll::controller::{self, Settings, Shared};
use envroll::explain::{render_json, render_table, OutputFormat};
use envroll::live::{self, render_live_table};
use envroll::manifests::{ManifestError, Manifests};
use envroll::metrics::Metrics;
use envroll::{server, telemetry};

/// Bad input (unreadable files, malformed manifests, bad arguments) exits with 2, like kubectl.
const EXIT_BAD_INPUT: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Explain(args) if args.files.is_empty() => explain_live(&args).await,
        Command::Explain(args) => explain_files(&args),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
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
        debounce: args.debounce,
        concurrency: args.concurrency,
    };
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared::new(
        client,
        settings,
        metrics.clone(),
        &args.identity,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server_stopped = stopped.clone();
    let server = tokio::spawn(server::serve(args.metrics_address, metrics, async move {
        let _ = server_stopped.wait_for(|stop| *stop).await;
    }));
    tokio::spawn(async move {
        controller::termination().await;
        info!("termination requested; finishing in-flight reconciles");
        let _ = stop.send(true);
    });
    controller::run(shared, stopped).await;
    match server.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(problem)) => {
            error!(error = %problem, address = %args.metrics_address, "metrics server failed");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
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
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(problem) => {
            eprintln!("error: cannot build a Kubernetes client: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
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
    let manifests = match read_manifests(&args.files) {
        Ok(manifests) => manifests,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    for note in &manifests.notes {
        eprintln!("note: {note}");
    }
    let analyses = manifests.analyse();
    match args.output {
        OutputFormat::Table => print!("{}", render_table(&analyses)),
        OutputFormat::Json => println!("{}", render_json(&analyses)),
    }
    ExitCode::SUCCESS
}

fn read_manifests(files: &[String]) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::default();
    for file in files {
        let read = if file == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(file)
        };
        let text = read.map_err(|source| ManifestError::Read {
            file: file.clone(),
            source,
        })?;
        let name = if file == "-" { "<stdin>" } else { file };
        manifests.add_yaml(name, &text)?;
    }
    Ok(manifests)
}
