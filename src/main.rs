use std::io::Read;
use std::process::ExitCode;

use clap::Parser;

use envroll::cli::{Cli, Command, ExplainArgs};
use envroll::explain::{render_json, render_table, OutputFormat};
use envroll::manifests::{ManifestError, Manifests};

/// Bad input (unreadable files, malformed manifests) exits with 2, like kubectl.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Explain(args) => explain_files(&args),
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
