//! Command-line arguments.

use clap::{Args, Parser, Subcommand};

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
    /// Show which ConfigMaps and Secrets each workload consumes, and which changes roll it out.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Manifest files to analyse (multi-document YAML or `kind: List`); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}
