//! `envroll impact --from OLD --to NEW`, run as the binary a pipeline runs (no cluster needed):
//! its output, its JSON shape and its exit codes are a contract.

mod cli_support;

use std::path::PathBuf;

use cli_support::{envroll, text};

/// Nothing would roll out because of config.
const NO_ROLLOUT: i32 = 0;
const ERROR: i32 = 1;
/// At least one workload would roll out because of config.
const ROLLOUT: i32 = 2;

/// A directory of its own for one test's manifests, removed when the test ends.
struct Files(PathBuf);

impl Files {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("envroll-cli-impact-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Files(dir)
    }

    fn write(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write manifest");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `impact` on OLD and NEW given as text (written to files) and returns the exit code,
/// stdout and stderr.
fn impact(test: &str, old: &str, new: &str, extra: &[&str]) -> (i32, String, String) {
    let files = Files::new(test);
    let (old, new) = (files.write("old.yaml", old), files.write("new.yaml", new));
    let mut args = vec!["impact", "--from", &old, "--to", &new];
    args.extend(extra);
    let output = envroll(&args, None);
    (
        output.status.code().expect("exit code"),
        text(&output.stdout),
        text(&output.stderr),
    )
}

const AUTO: &str = r#"envroll.dev/auto: "true""#;

/// ConfigMap `app-env` with this data, then Deployment `shop/web` with these annotations and
/// this container (YAML flow mapping).
fn app(data: &str, annotations: &str, container: &str) -> String {
    format!(
        "kind: ConfigMap\nmetadata: {{name: app-env, namespace: shop}}\ndata: {{{data}}}\n---\n\
         kind: Deployment\nmetadata: {{name: web, namespace: shop, annotations: {{{annotations}}}}}\n\
         spec:\n  selector: {{}}\n  template:\n    spec:\n      containers: [{container}]\n      \
         volumes: [{{name: files, configMap: {{name: app-env}}}}]\n"
    )
}

const ENV_FROM: &str = "{name: app, image: app:1, envFrom: [{configMapRef: {name: app-env}}]}";
const VOLUME: &str =
    "{name: app, image: app:1, volumeMounts: [{name: files, mountPath: /etc/app}]}";
const LEVEL_ONLY: &str = "{name: app, image: app:1, env: [{name: LEVEL, valueFrom: {configMapKeyRef: {name: app-env, key: LEVEL}}}]}";

#[test]
fn an_env_change_rolls_out_names_the_keys_and_exits_2() {
    let (code, table, _) = impact(
        "env",
        &app("LEVEL: info, MODE: a", AUTO, ENV_FROM),
        &app("LEVEL: debug, MODE: a", AUTO, ENV_FROM),
        &[],
    );
    assert_eq!(code, ROLLOUT, "{table}");
    let expected = "\
Deployment shop/web: rollout
  envroll replaces the pods: ConfigMap/app-env changed
  SOURCE             CHANGE    KEYS   EFFECT   REASON
  ConfigMap/app-env  modified  LEVEL  rollout  envFrom in container app: env is read once at process start

1 workload: 1 would roll out because of config
";
    assert_eq!(table, expected);
}

#[test]
fn a_volume_change_is_seen_in_place_and_exits_0() {
    let (code, table, _) = impact(
        "volume",
        &app("LEVEL: info", AUTO, VOLUME),
        &app("LEVEL: debug", AUTO, VOLUME),
        &[],
    );
    assert_eq!(code, NO_ROLLOUT, "{table}");
    assert!(
        table.starts_with("Deployment shop/web: in-place\n"),
        "{table}"
    );
    assert!(
        table.contains("ConfigMap/app-env  modified  LEVEL  in-place  volume in container app: kubelet refreshes the files in place"),
        "{table}"
    );
    assert!(
        table.ends_with("1 workload: 1 would see the change in place\n"),
        "{table}"
    );
}

#[test]
fn a_value_from_on_an_unchanged_key_is_untouched() {
    let (code, table, _) = impact(
        "value-from",
        &app("LEVEL: info, MODE: a", AUTO, LEVEL_ONLY),
        &app("LEVEL: info, MODE: b", AUTO, LEVEL_ONLY),
        &[],
    );
    assert_eq!(code, NO_ROLLOUT, "{table}");
    assert!(
        table.starts_with("Deployment shop/web: untouched\n"),
        "{table}"
    );
    assert!(
        table.contains("none  none    only keys this workload does not read changed (MODE)"),
        "{table}"
    );
}

#[test]
fn an_immutable_config_map_mounted_as_a_volume_rolls_out() {
    let immutable = |level: &str| {
        app(&format!("LEVEL: {level}"), AUTO, VOLUME).replacen(
            "\ndata:",
            "\nimmutable: true\ndata:",
            1,
        )
    };
    let (code, table, _) = impact("immutable", &immutable("info"), &immutable("debug"), &[]);
    assert_eq!(code, ROLLOUT, "{table}");
    assert!(
        table.contains("rollout  volume in container app: the ConfigMap is immutable and kubelet stops watching it"),
        "{table}"
    );
    assert!(
        table.contains(
            "warning: ConfigMap/app-env is immutable: the API server refuses changes to its data"
        ),
        "{table}"
    );
}

#[test]
fn a_secret_change_is_reported_without_its_value() {
    let secret = |password: &str| {
        format!(
            "kind: Secret\nmetadata: {{name: db, namespace: shop}}\ndata: {{password: {password}}}\n---\n\
             kind: Deployment\nmetadata: {{name: web, namespace: shop, annotations: {{{AUTO}}}}}\n\
             spec:\n  selector: {{}}\n  template:\n    spec:\n      containers: [{{name: app, \
             env: [{{name: PW, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}]}}]\n"
        )
    };
    // base64 of "hunter2" and of "Tr0ub4dor&3".
    let (old, new) = (secret("aHVudGVyMg=="), secret("VHIwdWI0ZG9yJjM="));
    for format in ["table", "json"] {
        let (code, output, errors) = impact("secret", &old, &new, &["-o", format]);
        assert_eq!(code, ROLLOUT, "{output}{errors}");
        assert!(output.contains("password"), "the key is named: {output}");
        for value in ["hunter2", "aHVudGVyMg", "Tr0ub4dor", "VHIwdWI0ZG9y"] {
            assert!(
                !output.contains(value) && !errors.contains(value),
                "{value} in {output}{errors}"
            );
        }
        let digest_like = output
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|run| run.len() >= 16);
        assert!(!digest_like, "nothing like a digest either: {output}");
    }
}

#[test]
fn a_template_change_carries_the_config_change() {
    let (code, table, _) = impact(
        "template",
        &app("LEVEL: info", AUTO, ENV_FROM),
        &app("LEVEL: debug", AUTO, &ENV_FROM.replace("app:1", "app:2")),
        &[],
    );
    assert_eq!(
        code, NO_ROLLOUT,
        "the user's own rollout is not a config rollout: {table}"
    );
    let expected = "\
Deployment shop/web: template
  the pod template changes: its own rollout replaces the pods, which read the new data of ConfigMap/app-env
  SOURCE             CHANGE    KEYS   EFFECT    REASON
  ConfigMap/app-env  modified  LEVEL  template  the pod template changes too: the pods of its rollout read the new data

1 workload: 1 would roll out for a pod template change
";
    assert_eq!(table, expected);
}

#[test]
fn either_side_can_come_from_stdin_but_not_both() {
    let files = Files::new("stdin");
    let old = files.write("old.yaml", &app("LEVEL: info", AUTO, ENV_FROM));
    let new_text = app("LEVEL: debug", AUTO, ENV_FROM);
    let output = envroll(&["impact", "--from", &old, "--to", "-"], Some(&new_text));
    assert_eq!(
        output.status.code(),
        Some(ROLLOUT),
        "{}",
        text(&output.stderr)
    );
    let new = files.write("new.yaml", &new_text);
    let old_text = app("LEVEL: info", AUTO, ENV_FROM);
    let output = envroll(&["impact", "--from", "-", "--to", &new], Some(&old_text));
    assert_eq!(
        output.status.code(),
        Some(ROLLOUT),
        "{}",
        text(&output.stderr)
    );

    let output = envroll(&["impact", "--from", "-", "--to", "-"], Some(&old_text));
    assert_eq!(output.status.code(), Some(ERROR));
    assert_eq!(
        text(&output.stderr),
        "error: --from and --to cannot both be - (stdin can be read once)\n"
    );
}

#[test]
fn objects_without_a_namespace_get_the_one_given_with_n() {
    // As a rendered chart often comes out: the workload names its namespace, the ConfigMap not.
    let render = |level: &str| {
        app(&format!("LEVEL: {level}"), AUTO, ENV_FROM).replacen(
            "{name: app-env, namespace: shop}",
            "{name: app-env}",
            1,
        )
    };
    let (code, table, _) = impact(
        "namespace",
        &render("info"),
        &render("debug"),
        &["-n", "shop"],
    );
    assert_eq!(code, ROLLOUT, "{table}");
    // Without -n the ConfigMap lands in `default`: not the one the workload reads.
    let (code, table, _) = impact("no-namespace", &render("info"), &render("debug"), &[]);
    assert_eq!(code, NO_ROLLOUT, "{table}");
    assert!(
        table.contains("no consumed ConfigMap or Secret changes"),
        "{table}"
    );
}

#[test]
fn explain_f_takes_the_namespace_too() {
    let manifest = app("LEVEL: info", AUTO, ENV_FROM).replace(", namespace: shop", "");
    let output = envroll(&["explain", "-f", "-", "-n", "shop"], Some(&manifest));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("Deployment shop/web: managed\n"));
    let output = envroll(&["explain", "-f", "-"], Some(&manifest));
    assert!(text(&output.stdout).starts_with("Deployment default/web: managed\n"));
}

#[test]
fn bad_input_names_the_file_and_exits_1() {
    let good = app("LEVEL: info", AUTO, ENV_FROM);
    let (code, _, errors) = impact("malformed", &good, &format!("{good}---\nkind: [\n"), &[]);
    assert_eq!(code, ERROR);
    assert!(
        errors.contains("new.yaml: document 3: malformed YAML"),
        "{errors}"
    );

    let (code, _, errors) = impact(
        "invalid",
        "kind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n",
        &good,
        &[],
    );
    assert_eq!(code, ERROR);
    assert!(
        errors.contains("old.yaml: document 1: invalid Deployment"),
        "{errors}"
    );

    let output = envroll(
        &["impact", "--from", "missing.yaml", "--to", "-"],
        Some(&good),
    );
    assert_eq!(output.status.code(), Some(ERROR));
    assert!(text(&output.stderr).starts_with("error: missing.yaml: cannot read"));

    // A mistyped flag is an error, not a "would roll out" (clap's own code is 2).
    let output = envroll(&["impact", "--form", "a.yaml", "--to", "b.yaml"], None);
    assert_eq!(output.status.code(), Some(ERROR));
    let output = envroll(&["impact", "--from", "a.yaml"], None);
    assert_eq!(output.status.code(), Some(ERROR));
}

#[test]
fn the_examples_compare_as_the_readme_shows() {
    let output = envroll(
        &[
            "impact",
            "--from",
            "examples/shop.yaml",
            "--to",
            "examples/shop-change.yaml",
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(ROLLOUT),
        "{}",
        text(&output.stderr)
    );
    let table = text(&output.stdout);
    for expected in [
        "Deployment shop/web: rollout\n  envroll replaces the pods: ConfigMap/web-env, Secret/db-credentials changed\n",
        "StatefulSet shop/orders-db: untouched\n",
        "DaemonSet shop/log-agent: template\n",
        "3 workloads: 1 would roll out because of config, 1 would roll out for a pod template change, 1 untouched\n",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in:\n{table}");
    }
    assert!(
        !table.contains("7yW-rotated"),
        "the rotated password is not shown"
    );
}

#[test]
fn json_output_follows_the_documented_shape() {
    let output = envroll(
        &[
            "impact",
            "--from",
            "examples/shop.yaml",
            "--to",
            "examples/shop-change.yaml",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(ROLLOUT));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let web = &json["workloads"][0];
    for (field, value) in [
        ("kind", "Deployment"),
        ("namespace", "shop"),
        ("name", "web"),
        ("outcome", "rollout"),
    ] {
        assert_eq!(web[field], value, "{field}");
    }
    assert_eq!(web["managed"], true);
    assert_eq!(web["templateChanged"], false);
    assert_eq!(web["warnings"], serde_json::json!([]));
    assert_eq!(
        web["sources"][0],
        serde_json::json!({
            "kind": "ConfigMap", "name": "web-env", "change": "modified", "keys": ["LOG_LEVEL"],
            "effect": "rollout",
            "reason": "envFrom in container web: env is read once at process start"
        })
    );
    assert_eq!(json["workloads"][2]["outcome"], "template");
    assert_eq!(json["workloads"][2]["templateChanged"], true);
    assert_eq!(
        json["summary"],
        serde_json::json!({"workloads": 3, "rollout": 1, "template": 1, "blocked": 0, "new": 0,
                           "inPlace": 0, "untouched": 1})
    );
}
