use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::impact::{Effect, Outcome};

fn edit(kind: SourceKind, set: &[(&str, &[u8])], replace: bool) -> Edit {
    Edit {
        kind,
        namespace: "shop".into(),
        name: "web-env".into(),
        set: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
        replace,
    }
}

#[test]
fn targets_are_config_maps_or_secrets_as_kubectl_names_them() {
    assert_eq!(
        parse_source_target("configmap/web-env").unwrap(),
        (SourceKind::ConfigMap, "web-env".into())
    );
    assert_eq!(
        parse_source_target("cm/a").unwrap(),
        (SourceKind::ConfigMap, "a".into())
    );
    assert_eq!(
        parse_source_target("Secrets/db").unwrap(),
        (SourceKind::Secret, "db".into())
    );
    for wrong in ["deploy/web", "configmap/", "web-env", "cm/a/b"] {
        assert!(parse_source_target(wrong).is_err(), "{wrong}");
    }
}

#[test]
fn literals_are_checked_and_their_values_never_quoted() {
    assert_eq!(
        parse_literal("LEVEL=a=b").unwrap(),
        ("LEVEL".to_string(), b"a=b".to_vec())
    );
    assert_eq!(parse_literal("EMPTY=").unwrap().1, b"".to_vec());
    let error = parse_literal("password hunter2").unwrap_err();
    assert!(!error.contains("hunter2"), "{error}");
    let error = parse_literal("pass word=hunter2").unwrap_err();
    assert!(
        error.contains("pass word") && !error.contains("hunter2"),
        "{error}"
    );
    assert!(parse_literal("=x").is_err());
    assert!(valid_key("app.conf") && valid_key("A_B-c.1"));
    assert!(!valid_key("..") && !valid_key("a/b") && !valid_key(""));
    let error = edit_keys(&["A=1".into(), "A=2".into()], &[]).unwrap_err();
    assert_eq!(error, "key A is given twice");
}

#[test]
fn files_give_their_name_or_the_key_named() {
    let dir = std::env::temp_dir().join(format!("envroll-live-impact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.conf");
    std::fs::write(&file, "level = debug\n").unwrap();
    let path = file.to_string_lossy().into_owned();
    assert_eq!(
        read_from_file(&path).unwrap(),
        ("app.conf".to_string(), b"level = debug\n".to_vec())
    );
    assert_eq!(read_from_file(&format!("conf={path}")).unwrap().0, "conf");
    let missing = format!("{}/missing", dir.to_string_lossy());
    assert!(read_from_file(&missing).unwrap_err().contains("missing"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_edit_sets_keys_on_the_live_data_or_replaces_it() {
    let live: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "web-env", "namespace": "shop", "annotations": {"envroll.dev/ignore": "false"}},
        "data": {"LEVEL": "info", "KEEP": "x"},
        "binaryData": {"blob": "AAE="}
    }))
    .unwrap();
    let merged = edited_config_map(
        Some(live.clone()),
        &edit(
            SourceKind::ConfigMap,
            &[("LEVEL", b"debug"), ("blob", b"text now")],
            false,
        ),
    );
    assert_eq!(
        serde_json::to_value(&merged.data).unwrap(),
        json!({"KEEP": "x", "LEVEL": "debug", "blob": "text now"})
    );
    assert!(merged.binary_data.is_none());
    // The live object's metadata stays: annotations decide whether it is ignored.
    assert_eq!(merged.metadata.annotations, live.metadata.annotations);
    let replaced = edited_config_map(
        Some(live),
        &edit(SourceKind::ConfigMap, &[("bin", &[0xff, 0x00])], true),
    );
    assert!(replaced.data.is_none());
    assert_eq!(
        serde_json::to_value(&replaced.binary_data).unwrap(),
        json!({"bin": "/wA="})
    );
    let created = edited_config_map(None, &edit(SourceKind::ConfigMap, &[("A", b"1")], false));
    assert_eq!(created.metadata.name.as_deref(), Some("web-env"));
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-env", "namespace": "shop", "uid": "u"},
        "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}
    }))
    .unwrap();
    let edited = edited_secret(
        Some(secret),
        &edit(SourceKind::Secret, &[("password", b"s3cret")], false),
    );
    let data = edited.data.unwrap();
    assert_eq!(data["password"].0, b"s3cret".to_vec());
    assert_eq!(data["user"].0, b"admin".to_vec());
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        envFrom: [{configMapRef: {name: web-env}}]
        env: [{name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: assets, namespace: shop, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {matchLabels: {app: assets}}
  template:
    metadata: {labels: {app: assets}}
    spec:
      containers: [{name: assets, volumeMounts: [{name: env, mountPath: /env}]}]
      volumes: [{name: env, configMap: {name: web-env}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: shop, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers: [{name: b, envFrom: [{configMapRef: {name: web-env}}, {configMapRef: {name: gone}}]}]
"#;

/// The live side as `impact` builds it: workloads and sources read, `gone` missing, the Secret
/// `db` unreadable.
fn live(level: &str) -> (Manifests, BTreeMap<SourceKey, String>) {
    let mut live = Manifests::default();
    live.add_yaml("live", WORKLOADS).unwrap();
    live.add_json(
        "live",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "web-env", "namespace": "shop"},
               "data": {"LEVEL": level}}),
    )
    .unwrap();
    live.mark_absent(SourceKey::new(SourceKind::ConfigMap, "shop", "gone"));
    let unreadable = BTreeMap::from([(
        SourceKey::new(SourceKind::Secret, "shop", "db"),
        "secrets \"db\" is forbidden".to_string(),
    )]);
    (live, unreadable)
}

fn proposal(level: &str) -> Manifests {
    let mut proposed = Manifests::default();
    proposed
        .add_json(
            "proposed",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "web-env", "namespace": "shop"},
                   "data": {"LEVEL": level}}),
        )
        .unwrap();
    proposed
}

#[test]
fn the_proposal_is_compared_with_the_live_objects_of_its_namespace() {
    let (live, unreadable) = live("info");
    let report = compare_with_live(&live, &proposal("debug"), &unreadable);
    let outcome = |name: &str| {
        report
            .workloads
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("{name} in {report:#?}"))
    };
    let web = outcome("web");
    assert_eq!(web.outcome, Outcome::Rollout, "{web:#?}");
    assert_eq!(web.sources[0].effect, Effect::Rollout);
    assert_eq!(
        web.sources[0].keys.iter().collect::<Vec<_>>(),
        vec!["LEVEL"]
    );
    assert_eq!(
        web.warnings,
        vec!["Secret/db could not be read (secrets \"db\" is forbidden): taken to be unchanged"]
    );
    let assets = outcome("assets");
    assert_eq!(assets.outcome, Outcome::InPlace);
    // A workload whose required source is missing in the cluster: no pod runs, envroll does
    // not roll out, and the reason does not claim the change deletes it.
    let broken = outcome("broken");
    assert_eq!(broken.outcome, Outcome::Blocked, "{broken:#?}");
    assert!(
        broken
            .reason
            .starts_with("ConfigMap/gone missing and not optional: no pod can start"),
        "{}",
        broken.reason
    );
    assert!(report.rolls_out());
    assert_eq!(
        report.summary.line(),
        "3 workloads: 1 would roll out because of config, 1 blocked by a missing source, 1 would see the change in place"
    );

    let unchanged = compare_with_live(&live, &proposal("info"), &unreadable);
    assert!(!unchanged.rolls_out(), "{unchanged:#?}");
}

#[test]
fn a_proposal_that_creates_a_missing_source_lets_pods_start() {
    let (live, unreadable) = live("info");
    let mut proposed = Manifests::default();
    proposed
        .add_json(
            "proposed",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "gone", "namespace": "shop"}, "data": {"A": "1"}}),
        )
        .unwrap();
    let report = compare_with_live(&live, &proposed, &unreadable);
    let broken = report
        .workloads
        .iter()
        .find(|w| w.name == "broken")
        .unwrap();
    assert_eq!(broken.outcome, Outcome::New, "{broken:#?}");
    assert!(!report.rolls_out());
}

#[test]
fn workloads_in_a_proposal_file_are_set_aside() {
    let mut proposed = Manifests::default();
    proposed.add_yaml("f.yaml", WORKLOADS).unwrap();
    let dropped = drop_workloads(&mut proposed);
    assert_eq!(
        dropped,
        vec![
            "Deployment shop/web",
            "Deployment shop/assets",
            "Deployment shop/broken"
        ]
    );
    assert_eq!(proposed.workloads().count(), 0);
}
