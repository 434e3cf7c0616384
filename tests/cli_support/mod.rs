//! Running the built binary the way a user or a pipeline does, for the CLI contract tests
//! (`tests/cli_*.rs`; no cluster needed).

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `envroll ARGS` in the repository root, with `stdin` as its input.
pub fn envroll(args: &[&str], stdin: Option<&str>) -> Output {
    envroll_env(args, &[], stdin)
}

/// Like [`envroll`], with environment variables set. Variables that change what `explain`
/// reads are cleared first, so the caller's environment cannot change a test's outcome.
pub fn envroll_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_envroll"))
        .args(args)
        .env_remove("ENVROLL_RELOADER_ANNOTATIONS")
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("envroll starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("envroll finishes")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}
