use proptest::prelude::*;

use super::*;
use crate::analysis::{analyse_with, WorkloadKind};
use crate::policy;
use crate::policy::reloader::{parse_reloader_policy, parse_source_annotations};

fn load(text: &str) -> Manifests {
    let mut manifests = Manifests::default();
    manifests
        .add_yaml("test.yaml", text)
        .expect("test manifests parse");
    manifests
}

fn workload<'a>(report: &'a MigrationReport, name: &str) -> &'a WorkloadComparison {
    report
        .workloads
        .iter()
        .find(|w| w.analysis.name == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

fn difference<'a>(comparison: &'a WorkloadComparison, name: &str) -> &'a SourceDifference {
    comparison
        .reloader
        .differences
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no difference for {name}: {:#?}", comparison.reloader))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn the_reloader_example_compares_as_documented() {
    let report = compare_manifests(&load(include_str!("../../examples/reloader.yaml")));
    assert_eq!(
        report.summary.line,
        "3 workloads: 1 identical, 2 fewer rollouts: Deployment shop/web, Deployment shop/api"
    );
    assert_eq!(
        (report.summary.identical, report.summary.fewer_rollouts),
        (1, 2)
    );

    let web = workload(&report, "web");
    assert_eq!(web.reloader.outcome, Outcome::FewerRollouts);
    assert_eq!(web.reloader.differences.len(), 1, "{:#?}", web.reloader);
    let db = difference(web, "web-db");
    assert_eq!(db.effect, Effect::Fewer);
    assert!(db.reloader.rollout && db.envroll);
    assert_eq!(db.keys, Some(set(&["url"])));
    assert_eq!(db.keys_no_longer_rolling_out, Some(set(&["password"])));
    assert!(
        db.why
            .starts_with("only a change to key url rolls out: env (key url)"),
        "{}",
        db.why
    );

    let api = workload(&report, "api");
    assert_eq!(api.reloader.outcome, Outcome::FewerRollouts);
    let rules = difference(api, "api-rules");
    assert!(!rules.envroll);
    assert!(
        rules.why.contains("envroll.dev/volumes: \"in-place\""),
        "{}",
        rules.why
    );
    assert_eq!(
        rules.reloader.reason,
        "configmap.reloader.stakater.com/auto: \"true\" on the pod template"
    );
    // Ignored by both; listed by both.
    assert_eq!(api.reloader.differences.len(), 1, "{:#?}", api.reloader);

    let worker = workload(&report, "worker");
    assert_eq!(worker.reloader.outcome, Outcome::Identical);
}

const KEY_REF: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {reloader.stakater.com/auto: "true"}}
spec:
  selector: {}
  template:
    spec:
      containers:
      - name: app
        env: [{name: L, valueFrom: {configMapKeyRef: {name: settings, key: level}}}]
"#;

#[test]
fn a_key_ref_to_an_object_with_that_key_only_is_identical() {
    let text = format!(
        "{KEY_REF}---\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{level: info}}\n"
    );
    let report = compare_manifests(&load(&text));
    assert_eq!(
        workload(&report, "web").reloader.outcome,
        Outcome::Identical
    );
    assert_eq!(report.summary.line, "1 workload: 1 identical");

    // Another key: its changes rolled out under Reloader and no longer do.
    let text = format!("{KEY_REF}---\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{level: info, other: x}}\n");
    let report = compare_manifests(&load(&text));
    let settings = difference(workload(&report, "web"), "settings");
    assert_eq!(settings.keys_no_longer_rolling_out, Some(set(&["other"])));

    // Not in the input: its keys are not known, the difference is still shown.
    let report = compare_manifests(&load(KEY_REF));
    let settings = difference(workload(&report, "web"), "settings");
    assert_eq!(settings.effect, Effect::Fewer);
    assert_eq!(settings.keys_no_longer_rolling_out, None);
}

#[test]
fn envroll_annotations_reloader_does_not_know_are_more_rollouts() {
    let report = compare_manifests(&load(
        r#"
kind: Deployment
metadata: {name: web, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {}
  template: {spec: {containers: [{name: app, envFrom: [{configMapRef: {name: env}}]}]}}
---
kind: Deployment
metadata: {name: plain}
spec:
  selector: {}
  template: {spec: {containers: [{name: app, envFrom: [{configMapRef: {name: env}}]}]}}
"#,
    ));
    let web = workload(&report, "web");
    assert_eq!(web.reloader.outcome, Outcome::MoreRollouts);
    let env = difference(web, "env");
    assert_eq!(env.effect, Effect::More);
    assert_eq!(
        env.reloader.reason,
        "no Reloader annotation counts this ConfigMap"
    );
    assert_eq!(
        workload(&report, "plain").reloader.outcome,
        Outcome::Identical,
        "managed by neither"
    );
    assert_eq!(
        report.summary.line,
        "2 workloads: 1 identical, 1 more rollouts: Deployment default/web"
    );
}

#[test]
fn a_pattern_matching_an_unreferenced_source_is_a_difference_envroll_explains() {
    let report = compare_manifests(&load(
        r#"
kind: Deployment
metadata: {name: web, annotations: {configmap.reloader.stakater.com/reload: "flags-.*, extra"}}
spec:
  selector: {}
  template: {spec: {containers: [{name: app}]}}
---
kind: ConfigMap
metadata: {name: flags-v1}
---
kind: ConfigMap
metadata: {name: flags-v1, namespace: other}
"#,
    ));
    let web = workload(&report, "web");
    assert_eq!(web.reloader.outcome, Outcome::FewerRollouts);
    let flags = difference(web, "flags-v1");
    assert!(flags.reloader.rollout && !flags.envroll);
    assert!(
        flags.why.starts_with("not referenced by the pod template: envroll matches the patterns of configmap.reloader.stakater.com/reload only against"),
        "{}",
        flags.why
    );
    // A plain name counts in both, referenced or not.
    assert!(web.reloader.differences.iter().all(|d| d.name != "extra"));
    assert_eq!(
        web.reloader.differences.len(),
        1,
        "the other namespace's does not count"
    );
}

#[test]
fn a_volume_no_container_can_read_is_a_difference() {
    // The subPath selects a file that only the Secret of the projected volume provides.
    let report = compare_manifests(&load(
        r#"
kind: Deployment
metadata: {name: web, annotations: {reloader.stakater.com/auto: "true"}}
spec:
  selector: {}
  template:
    spec:
      containers:
      - name: app
        volumeMounts: [{name: all, mountPath: /etc/token, subPath: token}]
      volumes:
      - name: all
        projected:
          sources:
          - configMap: {name: conf, items: [{key: a, path: a.yaml}]}
          - secret: {name: creds, items: [{key: token, path: token}]}
"#,
    ));
    let web = workload(&report, "web");
    let conf = difference(web, "conf");
    assert!(conf.reloader.rollout && !conf.envroll);
    assert!(
        conf.why.starts_with("no container can read it"),
        "{}",
        conf.why
    );
    // The Secret's file is read through a subPath: frozen, and only its key counts.
    let creds = difference(web, "creds");
    assert!(creds.envroll);
    assert_eq!(creds.keys, Some(set(&["token"])));
}

#[test]
fn reloader_references_are_mounted_volumes_and_env_of_any_container() {
    let template: PodTemplateSpec = serde_norway::from_str(
        r#"
spec:
  initContainers:
  - name: init
    envFrom: [{secretRef: {name: init-env}}]
    volumeMounts: [{name: seed, mountPath: /seed}]
  containers:
  - name: app
    env: [{name: A, valueFrom: {configMapKeyRef: {name: a, key: k}}}, {name: P, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts: [{name: p, mountPath: /p, subPath: x}]
  volumes:
  - {name: seed, configMap: {name: seed}}
  - {name: p, projected: {sources: [{secret: {name: ps}}, {configMap: {name: pc}}, {serviceAccountToken: {path: t}}]}}
  - {name: unmounted, secret: {secretName: nobody}}
"#,
    )
    .unwrap();
    let found: Vec<String> = reloader_references(&template)
        .into_iter()
        .map(|(kind, name)| format!("{kind}/{name}"))
        .collect();
    assert_eq!(
        found,
        [
            "ConfigMap/a",
            "ConfigMap/pc",
            "ConfigMap/seed",
            "Secret/init-env",
            "Secret/ps"
        ]
    );
}

#[test]
fn reloader_verdicts_follow_should_reload_in_order() {
    let annotations = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let policy = parse_reloader_policy(
        &annotations(&[
            (reloader::AUTO, "true"),
            (reloader::CONFIGMAP_RELOAD, "listed"),
            (reloader::CONFIGMAPS_EXCLUDE, "listed, excluded"),
        ]),
        &BTreeMap::new(),
    )
    .policy;
    let verdict = |name: &str, referenced: bool, meta: SourceMeta| {
        reloader_verdict(&policy, SourceKind::ConfigMap, name, referenced, meta)
    };
    let plain = SourceMeta::default();
    let ignored = SourceMeta {
        reloader_ignore: true,
        ..plain
    };
    assert_eq!(
        verdict("any", true, ignored).reason,
        "the ConfigMap is annotated reloader.stakater.com/ignore: \"true\""
    );
    let excluded = verdict("listed", true, plain);
    assert!(!excluded.rollout, "exclude wins over the reload list");
    assert_eq!(
        excluded.reason,
        "excluded by configmaps.exclude.reloader.stakater.com/reload"
    );
    assert!(!verdict("unreferenced", false, plain).rollout);
    assert_eq!(
        verdict("referenced", true, plain),
        ReloaderVerdict {
            rollout: true,
            reason: "reloader.stakater.com/auto: \"true\"".into()
        }
    );
    // envroll's own ignore is not Reloader's business.
    let envroll_ignored = SourceMeta {
        ignore: true,
        ..plain
    };
    assert!(verdict("referenced", true, envroll_ignored).rollout);
}

#[test]
fn the_table_shows_each_difference_and_ends_with_the_summary() {
    let report = compare_manifests(&load(KEY_REF));
    let table = render_table(&report);
    let expected = "\
Deployment default/web: managed
  SOURCE              KEYS   ROLLOUT  REASON
  ConfigMap/settings  level  yes      env (key level) in container app: env is read once at process start (reloader.stakater.com/auto: \"true\")
  compared with Reloader: fewer rollouts
    SOURCE              RELOADER                                  ENVROLL    WHY
    ConfigMap/settings  yes (reloader.stakater.com/auto: \"true\")  key level  only a change to key level rolls out: env (key level) in container app: env is read once at process start (reloader.stakater.com/auto: \"true\")

1 workload: 0 identical, 1 fewer rollouts: Deployment default/web
";
    assert_eq!(table, expected);
}

#[test]
fn json_carries_the_analysis_the_comparison_and_the_summary() {
    let report = compare_manifests(&load(KEY_REF));
    let json: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
    let web = &json["workloads"][0];
    assert_eq!(web["kind"], "Deployment");
    assert_eq!(web["sources"][0]["rollout"], true);
    assert_eq!(web["reloader"]["outcome"], "fewer-rollouts");
    let difference = &web["reloader"]["differences"][0];
    assert_eq!(difference["effect"], "fewer");
    assert_eq!(difference["reloader"]["rollout"], true);
    assert_eq!(difference["envroll"], true);
    assert_eq!(difference["keys"], serde_json::json!(["level"]));
    assert_eq!(json["summary"]["workloads"], 1);
    assert_eq!(json["summary"]["fewerRollouts"], 1);
    assert_eq!(
        json["summary"]["line"],
        "1 workload: 0 identical, 1 fewer rollouts: Deployment default/web"
    );
}

// Property: for a workload with Reloader's annotations only (no envroll.dev ones), envroll rolls
// out on a change of exactly the sources Reloader does; it differs only in which keys count.
// With `envroll.dev/volumes: "in-place"` it never rolls out where Reloader does not.

const NAMES: [&str; 3] = ["a", "b", "c"];

fn name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&NAMES[..])
}

fn kind() -> impl Strategy<Value = SourceKind> {
    prop_oneof![Just(SourceKind::ConfigMap), Just(SourceKind::Secret)]
}

/// One way of consuming a source; subPath mounts select a key of the same source, so that every
/// source Reloader sees referenced is one a container can read.
fn consumption() -> impl Strategy<Value = (u8, SourceKind, &'static str, bool)> {
    (0u8..5, kind(), name(), any::<bool>())
}

fn template_yaml(consumptions: &[(u8, SourceKind, &'static str, bool)]) -> String {
    let mut env = Vec::new();
    let mut env_from = Vec::new();
    let mut mounts = Vec::new();
    let mut init_mounts = Vec::new();
    let mut volumes = Vec::new();
    for (index, (how, kind, name, items)) in consumptions.iter().enumerate() {
        let key_ref = match kind {
            SourceKind::ConfigMap => "configMapKeyRef",
            SourceKind::Secret => "secretKeyRef",
        };
        let volume_source = match kind {
            SourceKind::ConfigMap => format!("configMap: {{name: {name}"),
            SourceKind::Secret => format!("secret: {{secretName: {name}"),
        };
        let items = if *items {
            ", items: [{key: k, path: k}]"
        } else {
            ""
        };
        let volume = format!("v{index}");
        match how {
            0 => env.push(format!(
                "{{name: E{index}, valueFrom: {{{key_ref}: {{name: {name}, key: k}}}}}}"
            )),
            1 => env_from.push(match kind {
                SourceKind::ConfigMap => format!("{{configMapRef: {{name: {name}}}}}"),
                SourceKind::Secret => format!("{{secretRef: {{name: {name}}}}}"),
            }),
            2..=4 => {
                let mount = match how {
                    2 => format!("{{name: {volume}, mountPath: /m{index}}}"),
                    _ => format!("{{name: {volume}, mountPath: /m{index}, subPath: k}}"),
                };
                if *how == 4 {
                    init_mounts.push(mount);
                } else {
                    mounts.push(mount);
                }
                volumes.push(format!("{{name: {volume}, {volume_source}{items}}}}}"));
            }
            _ => unreachable!(),
        }
    }
    format!(
        "spec:\n  initContainers: [{{name: init, volumeMounts: [{}]}}]\n  containers: [{{name: app, env: [{}], envFrom: [{}], volumeMounts: [{}]}}]\n  volumes: [{}]\n",
        init_mounts.join(", "),
        env.join(", "),
        env_from.join(", "),
        mounts.join(", "),
        volumes.join(", "),
    )
}

fn reloader_annotation() -> impl Strategy<Value = (&'static str, &'static str)> {
    let key = proptest::sample::select(
        &[
            reloader::AUTO,
            reloader::CONFIGMAP_AUTO,
            reloader::SECRET_AUTO,
            reloader::SEARCH,
            reloader::CONFIGMAP_RELOAD,
            reloader::SECRET_RELOAD,
            reloader::CONFIGMAPS_EXCLUDE,
            reloader::SECRETS_EXCLUDE,
        ][..],
    );
    let value = proptest::sample::select(
        &[
            "true", "false", "True", "yes", "a", "b|c", "a, (bad", ".*", "a, c", "c",
        ][..],
    );
    (key, value)
}

proptest! {
    #[test]
    fn envroll_rolls_out_on_the_sources_reloader_does(
        consumptions in proptest::collection::vec(consumption(), 0..6),
        on_workload in proptest::collection::vec(reloader_annotation(), 0..4),
        on_template in proptest::collection::vec(reloader_annotation(), 0..3),
        ignored in proptest::collection::vec((kind(), name()), 0..2),
        matched in proptest::collection::vec((kind(), name()), 0..3),
        in_place in any::<bool>(),
    ) {
        let mut workload_annotations: BTreeMap<String, String> = on_workload
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if in_place {
            workload_annotations.insert(policy::VOLUMES.into(), "in-place".into());
        }
        let template_annotations: BTreeMap<String, String> = on_template
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut template: PodTemplateSpec =
            serde_norway::from_str(&template_yaml(&consumptions)).unwrap();
        template.metadata = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(template_annotations.clone()),
            ..Default::default()
        });
        let meta = |kind: SourceKind, name: &str| {
            let mut annotations = BTreeMap::new();
            if ignored.contains(&(kind, name)) {
                annotations.insert(reloader::IGNORE.to_string(), "true".to_string());
            }
            if matched.contains(&(kind, name)) {
                annotations.insert(reloader::MATCH.to_string(), "true".to_string());
            }
            let found = parse_source_annotations(&annotations);
            SourceMeta {
                reloader_ignore: found.ignore,
                reloader_match: found.search_match,
                ..SourceMeta::default()
            }
        };
        let input = WorkloadInput {
            kind: WorkloadKind::Deployment,
            namespace: "shop",
            name: "web",
            annotations: &workload_annotations,
            template: &template,
        };
        let analysis = analyse_with(input, DIALECTS, |kind, name| Some(meta(kind, name)));
        let policy = parse_reloader_policy(&workload_annotations, &template_annotations).policy;
        let referenced = reloader_references(&template);
        let mut candidates = referenced.clone();
        candidates.extend(analysis.sources.iter().map(|s| (s.kind, s.name.clone())));
        for (kind, name) in candidates {
            let reloader = reloader_verdict(
                &policy, kind, &name, referenced.contains(&(kind, name.clone())), meta(kind, &name),
            );
            let envroll = analysis
                .sources
                .iter()
                .find(|s| s.kind == kind && s.name == name)
                .is_some_and(|s| s.rollout);
            if in_place {
                prop_assert!(!envroll || reloader.rollout, "{kind}/{name}: {analysis:#?}");
            } else {
                prop_assert_eq!(envroll, reloader.rollout, "{}/{}: {:#?} {:?}", kind, name, analysis, reloader);
            }
        }
        prop_assert_eq!(analysis.managed, policy.is_managed());
    }
}
