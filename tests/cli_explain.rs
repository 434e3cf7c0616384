//! `envroll explain` on manifest files, run as the binary a user runs (no cluster needed).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn envroll(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_envroll"))
        .args(args)
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn the_examples_explain_as_a_table() {
    let output = envroll(&["explain", "-f", "examples/shop.yaml"], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    for expected in [
        "Deployment shop/web: managed",
        "ConfigMap/web-env      all         yes      envFrom in container web: env is read once at process start",
        "StatefulSet shop/orders-db: managed",
        "DaemonSet shop/log-agent: managed",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in:\n{table}");
    }
    assert!(text(&output.stderr).contains("skipping kind Namespace"));
}

#[test]
fn json_output_follows_the_contract() {
    let output = envroll(&["explain", "-f", "examples/shop.yaml", "-o", "json"], None);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let web = &json["workloads"][0];
    assert_eq!(web["kind"], "Deployment");
    assert_eq!(web["namespace"], "shop");
    assert_eq!(web["managed"], true);
    let web_env = web["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web-env")
        .expect("web-env is a source");
    assert_eq!(web_env["keys"], serde_json::Value::Null);
    assert_eq!(web_env["rollout"], true);
    assert_eq!(web_env["consumers"][0]["via"], "envFrom");
}

#[test]
fn stdin_and_default_namespace() {
    let manifest = "kind: Deployment\nmetadata: {name: api, annotations: {envroll.dev/auto: \"true\"}}\nspec: {selector: {}, template: {spec: {containers: [{name: api, env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: x}}}]}]}}}\n";
    let output = envroll(&["explain", "-f", "-"], Some(manifest));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(table.contains("Deployment default/api: managed"), "{table}");
    assert!(table.contains("ConfigMap/cfg  x     yes"), "{table}");
}

#[test]
fn malformed_input_names_the_file_and_document_and_exits_2() {
    let output = envroll(
        &["explain", "-f", "-"],
        Some("kind: ConfigMap\nmetadata: {name: a}\n---\nkind: [\n"),
    );
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(
        error.contains("<stdin>: document 2: malformed YAML"),
        "{error}"
    );

    let output = envroll(&["explain", "-f", "does-not-exist.yaml"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("does-not-exist.yaml: cannot read"));
}
