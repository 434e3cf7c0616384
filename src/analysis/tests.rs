use super::*;
use crate::test_support::analyse_deployment;

const AUTO: (&str, &str) = (policy::AUTO, "true");

fn analyse_yaml(pairs: &[(&str, &str)], yaml: &str) -> WorkloadAnalysis {
    analyse_deployment(pairs, yaml, |_, _| None)
}

fn source<'a>(analysis: &'a WorkloadAnalysis, kind: SourceKind, name: &str) -> &'a SourceAnalysis {
    analysis
        .sources
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not in {:#?}", analysis.sources))
}

fn keys(names: &[&str]) -> Keys {
    Some(names.iter().map(|k| k.to_string()).collect())
}

const ENV_KEY_REFS: &str = r#"
spec:
  containers:
  - name: app
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: settings, key: level}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: PLAIN
      value: "1"
"#;

#[test]
fn env_key_refs_roll_out_and_count_only_the_referenced_key() {
    let analysis = analyse_yaml(&[AUTO], ENV_KEY_REFS);
    assert!(analysis.managed);
    assert_eq!(
        analysis.sources.len(),
        2,
        "fieldRef and plain values are not sources"
    );
    let settings = source(&analysis, SourceKind::ConfigMap, "settings");
    assert!(settings.rollout);
    assert_eq!(settings.keys, keys(&["level"]));
    assert_eq!(
        settings.reason,
        "env (key level) in container app: env is read once at process start"
    );
    assert_eq!(settings.consumers[0].via, Via::Env);
    let db = source(&analysis, SourceKind::Secret, "db");
    assert!(db.rollout);
    assert_eq!(db.keys, keys(&["password"]));
    assert!(!db.optional);
}

#[test]
fn env_from_rolls_out_with_every_key_with_or_without_prefix() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    envFrom:
    - configMapRef: {name: app-env}
    - prefix: DB_
      secretRef: {name: db, optional: true}
"#,
    );
    let app_env = source(&analysis, SourceKind::ConfigMap, "app-env");
    assert!(app_env.rollout);
    assert_eq!(app_env.keys, None);
    assert_eq!(
        app_env.reason,
        "envFrom in container app: env is read once at process start"
    );
    let db = source(&analysis, SourceKind::Secret, "db");
    assert!(db.rollout);
    assert_eq!(db.keys, None);
    assert!(db.optional);
    assert_eq!(db.consumers[0].prefix.as_deref(), Some("DB_"));
}

const VOLUME_MOUNTS: &str = r#"
spec:
  containers:
  - name: app
    volumeMounts:
    - {name: conf, mountPath: /etc/app}
    - {name: certs, mountPath: /etc/certs}
  volumes:
  - name: conf
    configMap: {name: app-conf}
  - name: certs
    secret: {secretName: tls}
"#;

#[test]
fn plain_volume_mounts_are_refreshed_by_kubelet_and_do_not_roll_out() {
    let analysis = analyse_yaml(&[AUTO], VOLUME_MOUNTS);
    for (kind, name) in [
        (SourceKind::ConfigMap, "app-conf"),
        (SourceKind::Secret, "tls"),
    ] {
        let found = source(&analysis, kind, name);
        assert!(!found.rollout, "{found:?}");
        assert_eq!(found.consumers[0].via, Via::Volume);
        assert!(
            found
                .reason
                .contains("kubelet refreshes the files in place"),
            "{}",
            found.reason
        );
    }
}

#[test]
fn volumes_rollout_mode_rolls_out_volume_mounts() {
    let analysis = analyse_yaml(&[AUTO, (policy::VOLUMES, "rollout")], VOLUME_MOUNTS);
    let conf = source(&analysis, SourceKind::ConfigMap, "app-conf");
    assert!(conf.rollout);
    assert_eq!(conf.keys, None);
    assert!(
        conf.reason.contains("envroll.dev/volumes: \"rollout\""),
        "{}",
        conf.reason
    );
    assert!(source(&analysis, SourceKind::Secret, "tls").rollout);
}

#[test]
fn projected_volumes_are_refreshed_and_skip_non_config_sources() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    volumeMounts: [{name: all-in-one, mountPath: /etc/all}]
  volumes:
  - name: all-in-one
    projected:
      sources:
      - configMap: {name: app-conf, items: [{key: a.yaml, path: a.yaml}]}
      - secret: {name: creds}
      - serviceAccountToken: {path: token}
      - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
"#,
    );
    assert_eq!(analysis.sources.len(), 2);
    let conf = source(&analysis, SourceKind::ConfigMap, "app-conf");
    assert!(!conf.rollout);
    assert_eq!(conf.consumers[0].via, Via::Projected);
    assert_eq!(conf.consumers[0].keys, keys(&["a.yaml"]));
    assert!(!source(&analysis, SourceKind::Secret, "creds").rollout);
}

#[test]
fn sub_path_mounts_roll_out_and_count_the_pinned_key() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    volumeMounts:
    - {name: conf, mountPath: /etc/app/app.conf, subPath: app.conf}
    - {name: mapped, mountPath: /etc/app/x.conf, subPath: files/x.conf}
  volumes:
  - name: conf
    configMap: {name: app-conf}
  - name: mapped
    configMap:
      name: mapped
      items: [{key: x, path: files/x.conf}, {key: y, path: files/y.conf}]
"#,
    );
    let conf = source(&analysis, SourceKind::ConfigMap, "app-conf");
    assert!(conf.rollout);
    assert_eq!(conf.consumers[0].via, Via::SubPath);
    assert_eq!(conf.keys, keys(&["app.conf"]));
    assert!(
        conf.reason.contains("bind mount keeps the old file"),
        "{}",
        conf.reason
    );
    let mapped = source(&analysis, SourceKind::ConfigMap, "mapped");
    assert!(mapped.rollout);
    assert_eq!(mapped.keys, keys(&["x"]));
}

#[test]
fn sub_path_of_a_directory_counts_the_items_under_it() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    volumeMounts: [{name: mapped, mountPath: /etc/files, subPath: files}]
  volumes:
  - name: mapped
    configMap:
      name: mapped
      items: [{key: x, path: files/x.conf}, {key: y, path: files/y.conf}, {key: z, path: other}]
"#,
    );
    assert_eq!(
        source(&analysis, SourceKind::ConfigMap, "mapped").keys,
        keys(&["x", "y"])
    );
}

#[test]
fn sub_path_into_one_projected_source_does_not_consume_the_others() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    volumeMounts: [{name: p, mountPath: /etc/a, subPath: a.conf}]
  volumes:
  - name: p
    projected:
      sources:
      - configMap: {name: first, items: [{key: a, path: a.conf}]}
      - configMap: {name: second, items: [{key: b, path: b.conf}]}
"#,
    );
    assert_eq!(analysis.sources.len(), 1);
    let first = source(&analysis, SourceKind::ConfigMap, "first");
    assert!(first.rollout);
    assert_eq!(first.keys, keys(&["a"]));
}

#[test]
fn sub_path_expr_rolls_out_and_counts_every_key() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    volumeMounts: [{name: conf, mountPath: /etc/app/conf, subPathExpr: "$(POD_NAME).conf"}]
  volumes:
  - name: conf
    configMap: {name: per-pod}
"#,
    );
    let per_pod = source(&analysis, SourceKind::ConfigMap, "per-pod");
    assert!(per_pod.rollout);
    assert_eq!(per_pod.consumers[0].via, Via::SubPath);
    assert_eq!(per_pod.keys, None);
}

#[test]
fn items_limit_the_counted_keys() {
    let analysis = analyse_yaml(
        &[AUTO, (policy::VOLUMES, "rollout")],
        r#"
spec:
  containers:
  - name: app
    volumeMounts: [{name: conf, mountPath: /etc/app}]
  volumes:
  - name: conf
    configMap: {name: app-conf, items: [{key: a, path: a.txt}, {key: b, path: b.txt}]}
"#,
    );
    let conf = source(&analysis, SourceKind::ConfigMap, "app-conf");
    assert!(conf.rollout);
    assert_eq!(conf.keys, keys(&["a", "b"]));
}

#[test]
fn init_container_use_rolls_out() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  initContainers:
  - name: render
    volumeMounts: [{name: tmpl, mountPath: /templates}]
    envFrom: [{configMapRef: {name: init-env}}]
  containers:
  - name: app
  volumes:
  - name: tmpl
    configMap: {name: templates}
"#,
    );
    let templates = source(&analysis, SourceKind::ConfigMap, "templates");
    assert!(templates.rollout);
    assert!(templates.consumers[0].init);
    assert_eq!(
        templates.reason,
        "volume in init container render: init containers run once at pod start"
    );
    let init_env = source(&analysis, SourceKind::ConfigMap, "init-env");
    assert!(init_env.rollout);
    assert_eq!(
        init_env.reason,
        "envFrom in init container render: env is read once at process start"
    );
}

#[test]
fn a_sidecar_init_container_volume_is_refreshed_like_a_main_container() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  initContainers:
  - name: proxy
    restartPolicy: Always
    volumeMounts: [{name: proxy-conf, mountPath: /etc/proxy}]
  containers:
  - name: app
  volumes:
  - name: proxy-conf
    configMap: {name: proxy}
"#,
    );
    let proxy = source(&analysis, SourceKind::ConfigMap, "proxy");
    assert!(!proxy.rollout, "{proxy:?}");
    assert!(proxy.consumers[0].sidecar);
}

#[test]
fn an_immutable_object_mounted_as_a_volume_rolls_out() {
    let analysis = analyse_deployment(&[AUTO], VOLUME_MOUNTS, |kind, _| {
        (kind == SourceKind::Secret).then_some(SourceMeta {
            ignore: false,
            immutable: true,
            ..SourceMeta::default()
        })
    });
    let tls = source(&analysis, SourceKind::Secret, "tls");
    assert!(tls.rollout);
    assert_eq!(
        tls.reason,
        "volume in container app: the Secret is immutable and kubelet stops watching it"
    );
    assert!(!source(&analysis, SourceKind::ConfigMap, "app-conf").rollout);
}

#[test]
fn image_pull_secrets_service_accounts_and_unmounted_volumes_are_not_sources() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  serviceAccountName: web
  imagePullSecrets: [{name: registry}]
  containers:
  - name: app
    volumeMounts: [{name: info, mountPath: /etc/podinfo}]
  volumes:
  - name: unused
    configMap: {name: nobody-mounts-me}
  - name: info
    downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
"#,
    );
    assert!(analysis.sources.is_empty(), "{:#?}", analysis.sources);
}

#[test]
fn a_mount_of_an_undeclared_volume_is_not_a_source() {
    let analysis = analyse_yaml(
        &[AUTO],
        "spec: {containers: [{name: app, volumeMounts: [{name: ghost, mountPath: /x}]}]}",
    );
    assert!(analysis.sources.is_empty());
}

#[test]
fn the_frozen_way_wins_and_only_its_keys_count() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: settings, key: level}}
    volumeMounts: [{name: settings, mountPath: /etc/settings}]
  volumes:
  - name: settings
    configMap: {name: settings}
"#,
    );
    let settings = source(&analysis, SourceKind::ConfigMap, "settings");
    assert!(settings.rollout);
    assert_eq!(settings.consumers.len(), 2);
    assert_eq!(
        settings.keys,
        keys(&["level"]),
        "the hot-reloaded volume keys do not count"
    );
    assert!(settings.reason.starts_with("env (key level)"));
}

#[test]
fn optional_only_when_every_reference_is_optional() {
    let analysis = analyse_yaml(
        &[AUTO],
        r#"
spec:
  containers:
  - name: app
    envFrom:
    - configMapRef: {name: both, optional: true}
    - configMapRef: {name: opt, optional: true}
    env:
    - name: X
      valueFrom: {configMapKeyRef: {name: both, key: x}}
"#,
    );
    assert!(!source(&analysis, SourceKind::ConfigMap, "both").optional);
    assert!(source(&analysis, SourceKind::ConfigMap, "opt").optional);
}

#[test]
fn named_sources_always_roll_out_even_when_unreferenced() {
    let analysis = analyse_yaml(
        &[
            (policy::CONFIGMAPS, "app-conf, feature-flags"),
            (policy::SECRETS, "tls"),
        ],
        VOLUME_MOUNTS,
    );
    assert!(analysis.managed);
    let conf = source(&analysis, SourceKind::ConfigMap, "app-conf");
    assert!(conf.rollout);
    assert_eq!(
        conf.reason,
        "listed in envroll.dev/configmaps: rolls out on every change (volume in container app)"
    );
    let flags = source(&analysis, SourceKind::ConfigMap, "feature-flags");
    assert!(flags.rollout);
    assert!(
        flags.optional,
        "an unreferenced source cannot break new pods"
    );
    assert_eq!(flags.keys, None);
    assert!(flags.reason.contains("not referenced by the pod template"));
    assert!(source(&analysis, SourceKind::Secret, "tls").rollout);
}

#[test]
fn without_auto_only_named_sources_roll_out() {
    let analysis = analyse_yaml(&[(policy::SECRETS, "other")], ENV_KEY_REFS);
    let settings = source(&analysis, SourceKind::ConfigMap, "settings");
    assert!(!settings.rollout);
    assert_eq!(
        settings.reason,
        "not listed in envroll.dev/configmaps, and envroll.dev/auto is not set"
    );
    assert!(!source(&analysis, SourceKind::Secret, "db").rollout);
    assert!(source(&analysis, SourceKind::Secret, "other").rollout);
}

#[test]
fn ignored_objects_never_roll_out_even_when_named() {
    let analysis = analyse_deployment(
        &[AUTO, (policy::CONFIGMAPS, "settings")],
        ENV_KEY_REFS,
        |kind, name| {
            (kind == SourceKind::ConfigMap && name == "settings").then_some(SourceMeta {
                ignore: true,
                immutable: false,
                ..SourceMeta::default()
            })
        },
    );
    let settings = source(&analysis, SourceKind::ConfigMap, "settings");
    assert!(!settings.rollout);
    assert_eq!(
        settings.reason,
        "the ConfigMap is annotated envroll.dev/ignore: \"true\""
    );
    assert!(source(&analysis, SourceKind::Secret, "db").rollout);
}

#[test]
fn unannotated_workloads_are_unmanaged_and_nothing_rolls_out() {
    let analysis = analyse_yaml(&[], ENV_KEY_REFS);
    assert!(!analysis.managed);
    assert_eq!(
        analysis.sources.len(),
        2,
        "sources are still listed for explain"
    );
    assert!(analysis.sources.iter().all(|s| !s.rollout));
    assert!(analysis.sources[0]
        .reason
        .starts_with("workload is not managed"));
    assert!(analysis.warnings.is_empty());
}

#[test]
fn malformed_annotations_become_warnings() {
    let analysis = analyse_yaml(&[(policy::AUTO, "yes please")], ENV_KEY_REFS);
    assert!(!analysis.managed);
    assert_eq!(
        analysis.warnings,
        vec![
            "annotation envroll.dev/auto: \"yes please\" is not \"true\" or \"false\"".to_string()
        ]
    );
}

#[test]
fn a_template_without_spec_has_no_sources() {
    let analysis = analyse_yaml(&[AUTO], "metadata: {labels: {app: web}}");
    assert!(analysis.sources.is_empty());
}

#[test]
fn json_shape_matches_the_contract() {
    let analysis = analyse_yaml(
        &[AUTO],
        "spec: {containers: [{name: app, envFrom: [{configMapRef: {name: app-env}}]}]}",
    );
    let json = serde_json::to_value(&analysis).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "kind": "Deployment", "namespace": "shop", "name": "web", "managed": true,
            "sources": [{"kind": "ConfigMap", "name": "app-env", "optional": false, "keys": null,
                "rollout": true, "reason": "envFrom in container app: env is read once at process start",
                "consumers": [{"container": "app", "init": false, "via": "envFrom", "keys": null}]}]
        })
    );
}
