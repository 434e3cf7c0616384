//! `envroll explain` on manifest files, run as the binary a user runs (no cluster needed).

mod cli_support;

use cli_support::{envroll, envroll_env, text};

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

#[test]
fn the_reloader_migration_report_compares_each_workload_and_sums_up() {
    let output = envroll(
        &[
            "explain",
            "--reloader-annotations",
            "-f",
            "examples/reloader.yaml",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    for expected in [
        "Deployment shop/web: managed",
        "  ConfigMap/web-conf  all   yes      volume in container web: rolls out on every change, as under Reloader (reloader.stakater.com/auto: \"true\"; set envroll.dev/volumes: \"in-place\" if the app reloads the files)",
        "  compared with Reloader: fewer rollouts",
        "    Secret/web-db  yes (reloader.stakater.com/auto: \"true\")  key url  only a change to key url rolls out",
        "a change to key password no longer rolls out",
        "ConfigMap/api-flags-v2  flags       yes      matches \"api-flags-.*\" in configmap.reloader.stakater.com/reload on the pod template: rolls out on every change",
        "Secret/api-token        token       no       the Secret is annotated reloader.stakater.com/ignore: \"true\"",
        "ConfigMap/worker-tuning  all   no       excluded by configmaps.exclude.reloader.stakater.com/reload on the workload",
        "StatefulSet shop/worker: managed",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in:\n{table}");
    }
    assert!(
        table.ends_with(
            "\n3 workloads: 1 identical, 2 fewer rollouts: Deployment shop/web, Deployment shop/api\n"
        ),
        "{table}"
    );
    assert!(
        !table.contains("hunter2") && !table.contains("postgres://"),
        "values never shown"
    );
}

#[test]
fn the_reloader_migration_report_as_json() {
    let output = envroll(
        &[
            "explain",
            "--reloader-annotations",
            "-f",
            "examples/reloader.yaml",
            "-o",
            "json",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let summary = &json["summary"];
    assert_eq!(summary["workloads"], 3);
    assert_eq!(summary["identical"], 1);
    assert_eq!(summary["fewerRollouts"], 2);
    assert_eq!(summary["moreRollouts"], 0);
    let web = &json["workloads"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["managed"], true);
    assert_eq!(web["reloader"]["outcome"], "fewer-rollouts");
    let difference = &web["reloader"]["differences"][0];
    assert_eq!(difference["kind"], "Secret");
    assert_eq!(difference["name"], "web-db");
    assert_eq!(difference["keys"], serde_json::json!(["url"]));
    assert_eq!(
        difference["keysNoLongerRollingOut"],
        serde_json::json!(["password"])
    );
    assert_eq!(json["workloads"][2]["reloader"]["outcome"], "identical");
}

#[test]
fn reloader_annotations_count_only_with_the_flag_or_its_environment_variable() {
    let output = envroll_env(&["explain", "-f", "examples/reloader.yaml"], &[], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(
        table.contains("Deployment shop/web: not managed"),
        "{table}"
    );
    assert!(!table.contains("compared with Reloader"), "{table}");

    let output = envroll_env(
        &["explain", "-f", "examples/reloader.yaml"],
        &[("ENVROLL_RELOADER_ANNOTATIONS", "true")],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(table.contains("Deployment shop/web: managed"), "{table}");
    assert!(table.contains("3 workloads: 1 identical"), "{table}");
}

#[test]
fn a_malformed_reloader_regex_is_a_warning_naming_the_annotation() {
    let manifest = "kind: Deployment\nmetadata: {name: api, annotations: {configmap.reloader.stakater.com/reload: \"cfg, ([\"}}\nspec: {selector: {}, template: {spec: {containers: [{name: api, envFrom: [{configMapRef: {name: cfg}}]}]}}}\n";
    let output = envroll(
        &["explain", "--reloader-annotations", "-f", "-"],
        Some(manifest),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(
        table.contains("  warning: annotation configmap.reloader.stakater.com/reload: \"cfg, ([\" has bad entries: entry 2 \"([\" is not a valid regular expression"),
        "{table}"
    );
    assert!(
        table.contains("ConfigMap/cfg  all   yes      matches \"cfg\""),
        "{table}"
    );
    assert!(table.contains("1 workload: 1 identical"), "{table}");
}
