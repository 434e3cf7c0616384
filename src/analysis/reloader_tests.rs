//! The analysis under `--reloader-annotations`: Reloader's annotations decide which sources
//! count, envroll's precision still decides which changes roll out.

use super::*;
use crate::test_support::{analyse_deployment, analyse_deployment_with};

const RELOADER: AnnotationDialects = AnnotationDialects { reloader: true };

fn analyse(pairs: &[(&str, &str)], yaml: &str) -> WorkloadAnalysis {
    analyse_deployment_with(pairs, yaml, RELOADER, |_, _| None)
}

fn analyse_known(
    pairs: &[(&str, &str)],
    yaml: &str,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    analyse_deployment_with(pairs, yaml, RELOADER, known)
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

const CM: SourceKind = SourceKind::ConfigMap;
const SECRET: SourceKind = SourceKind::Secret;

/// Every way a template consumes config: env key refs, envFrom, a plain volume, a volume with
/// items, a subPath mount and an init container's volume.
const TEMPLATE: &str = r#"
spec:
  initContainers:
  - name: setup
    volumeMounts: [{name: seed, mountPath: /seed}]
  containers:
  - name: app
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: settings, key: level}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
    envFrom: [{configMapRef: {name: app-env}}]
    volumeMounts:
    - {name: conf, mountPath: /etc/app}
    - {name: rules, mountPath: /etc/rules}
    - {name: single, mountPath: /etc/single.yaml, subPath: single.yaml}
    - {name: certs, mountPath: /etc/certs}
  volumes:
  - name: conf
    configMap: {name: app-conf}
  - name: rules
    configMap: {name: rules, items: [{key: rules.yaml, path: rules.yaml}]}
  - name: single
    configMap: {name: single}
  - name: certs
    secret: {secretName: tls}
  - name: seed
    configMap: {name: seed}
"#;

const AUTO: (&str, &str) = (reloader::AUTO, "true");

#[test]
fn with_the_flag_off_reloader_annotations_change_nothing() {
    let pairs = [
        AUTO,
        (reloader::CONFIGMAP_RELOAD, "app-conf, nothing-.*"),
        (reloader::SEARCH, "true"),
    ];
    let off = analyse_deployment(&pairs, TEMPLATE, |_, _| None);
    let without = analyse_deployment(&[], TEMPLATE, |_, _| None);
    assert_eq!(off, without);
    assert!(!off.managed);
    assert!(off.warnings.is_empty());
    // Reloader's own source annotations neither.
    let ignored = |_: SourceKind, _: &str| {
        Some(SourceMeta {
            reloader_ignore: true,
            ..SourceMeta::default()
        })
    };
    let envroll_auto = [(policy::AUTO, "true")];
    assert_eq!(
        analyse_deployment(&envroll_auto, TEMPLATE, ignored),
        analyse_deployment(&envroll_auto, TEMPLATE, |_, _| None)
    );
}

#[test]
fn auto_counts_every_reference_and_volume_mounts_roll_out_as_under_reloader() {
    let analysis = analyse(&[AUTO], TEMPLATE);
    assert!(analysis.managed);
    assert!(analysis.warnings.is_empty());
    let basis = "(reloader.stakater.com/auto: \"true\")";
    let settings = source(&analysis, CM, "settings");
    assert!(settings.rollout);
    assert_eq!(
        settings.keys,
        keys(&["level"]),
        "only the key the env var reads"
    );
    assert_eq!(
        settings.reason,
        format!("env (key level) in container app: env is read once at process start {basis}")
    );
    let db = source(&analysis, SECRET, "db");
    assert_eq!((db.rollout, db.keys.clone()), (true, keys(&["password"])));
    assert!(db.reason.ends_with(basis), "{}", db.reason);
    let app_env = source(&analysis, CM, "app-env");
    assert_eq!((app_env.rollout, app_env.keys.clone()), (true, None));

    let conf = source(&analysis, CM, "app-conf");
    assert!(conf.rollout);
    assert_eq!(conf.keys, None);
    assert_eq!(
        conf.reason,
        "volume in container app: rolls out on every change, as under Reloader (reloader.stakater.com/auto: \"true\"; set envroll.dev/volumes: \"in-place\" if the app reloads the files)"
    );
    assert!(source(&analysis, SECRET, "tls").rollout);
    let rules = source(&analysis, CM, "rules");
    assert_eq!(
        (rules.rollout, rules.keys.clone()),
        (true, keys(&["rules.yaml"])),
        "only the keys a volume's items project"
    );
    let single = source(&analysis, CM, "single");
    assert_eq!(
        single.reason,
        format!("subPath mount in container app: the bind mount keeps the old file (kubernetes#50345) {basis}")
    );
    let seed = source(&analysis, CM, "seed");
    assert!(seed.rollout);
    assert!(
        seed.reason
            .starts_with("volume in init container setup: init containers run once at pod start"),
        "{}",
        seed.reason
    );
    // Not listed: decided by how they are consumed.
    assert!(analysis.sources.iter().all(|s| !s.listed));
}

#[test]
fn in_place_opts_a_reloader_workload_into_envrolls_volume_semantics() {
    for value in ["in-place", "reload"] {
        let analysis = analyse(&[AUTO, (policy::VOLUMES, value)], TEMPLATE);
        let conf = source(&analysis, CM, "app-conf");
        assert!(!conf.rollout, "{value}");
        assert_eq!(
            conf.reason,
            format!("volume in container app: kubelet refreshes the files in place (envroll.dev/volumes: \"{value}\" overrides reloader.stakater.com/auto: \"true\")")
        );
        assert!(!source(&analysis, CM, "rules").rollout);
        // Frozen consumption still rolls out.
        assert!(source(&analysis, CM, "settings").rollout);
        assert!(source(&analysis, CM, "single").rollout);
        assert!(source(&analysis, CM, "seed").rollout);
    }
    let analysis = analyse(&[AUTO, (policy::VOLUMES, "rollout")], TEMPLATE);
    assert!(source(&analysis, CM, "app-conf").rollout);
}

#[test]
fn an_immutable_volume_is_frozen_and_says_which_annotation_counted_it() {
    let analysis = analyse_known(
        &[AUTO, (policy::VOLUMES, "in-place")],
        TEMPLATE,
        |kind, _| {
            (kind == SECRET).then_some(SourceMeta {
                immutable: true,
                ..SourceMeta::default()
            })
        },
    );
    let tls = source(&analysis, SECRET, "tls");
    assert!(tls.rollout);
    assert_eq!(
        tls.reason,
        "volume in container app: the Secret is immutable and kubelet stops watching it (reloader.stakater.com/auto: \"true\")"
    );
}

#[test]
fn typed_auto_counts_its_kind_only() {
    let analysis = analyse(&[(reloader::SECRET_AUTO, "true")], TEMPLATE);
    assert!(analysis.managed);
    let db = source(&analysis, SECRET, "db");
    assert!(db.rollout);
    assert!(
        db.reason
            .ends_with("(secret.reloader.stakater.com/auto: \"true\")"),
        "{}",
        db.reason
    );
    let settings = source(&analysis, CM, "settings");
    assert!(!settings.rollout);
    assert_eq!(
        settings.reason,
        "not counted: secret.reloader.stakater.com/auto counts Secrets only"
    );
}

#[test]
fn with_auto_and_a_typed_auto_either_being_true_is_enough() {
    for pairs in [
        [
            (reloader::AUTO, "false"),
            (reloader::CONFIGMAP_AUTO, "true"),
        ],
        [
            (reloader::AUTO, "true"),
            (reloader::CONFIGMAP_AUTO, "false"),
        ],
    ] {
        let analysis = analyse(&pairs, TEMPLATE);
        assert!(source(&analysis, CM, "settings").rollout, "{pairs:?}");
    }
    let analysis = analyse(
        &[
            (reloader::AUTO, "false"),
            (reloader::CONFIGMAP_AUTO, "true"),
        ],
        TEMPLATE,
    );
    assert!(!source(&analysis, SECRET, "db").rollout);
    let analysis = analyse(
        &[
            (reloader::AUTO, "false"),
            (reloader::CONFIGMAP_AUTO, "false"),
        ],
        TEMPLATE,
    );
    assert!(!analysis.managed);
}

#[test]
fn reload_lists_roll_out_on_every_change_however_consumed() {
    let analysis = analyse(
        &[
            (reloader::CONFIGMAP_RELOAD, "app-.*, flags"),
            (reloader::SECRET_RELOAD, "t.s"),
        ],
        TEMPLATE,
    );
    assert!(analysis.managed);
    let conf = source(&analysis, CM, "app-conf");
    assert!(conf.rollout && conf.listed);
    assert_eq!(
        conf.reason,
        "matches \"app-.*\" in configmap.reloader.stakater.com/reload: rolls out on every change (volume in container app)"
    );
    assert!(source(&analysis, CM, "app-env").rollout);
    assert!(source(&analysis, SECRET, "tls").rollout, "t.s matches tls");
    // A plain name counts even when the template does not reference it, as in Reloader.
    let flags = source(&analysis, CM, "flags");
    assert!(flags.rollout && flags.consumers.is_empty());
    assert!(
        flags
            .reason
            .ends_with("(not referenced by the pod template)"),
        "{}",
        flags.reason
    );
    // Not matched, and no auto.
    let settings = source(&analysis, CM, "settings");
    assert!(!settings.rollout);
    assert_eq!(
        settings.reason,
        "not counted: no entry of configmap.reloader.stakater.com/reload matches it"
    );
    // A pattern only ever matches names the analysis sees.
    assert!(!analysis.sources.iter().any(|s| s.name == "app-.*"));
}

#[test]
fn a_listed_key_ref_still_counts_only_its_key() {
    let analysis = analyse(&[(reloader::CONFIGMAP_RELOAD, "settings")], TEMPLATE);
    let settings = source(&analysis, CM, "settings");
    assert!(settings.rollout);
    assert_eq!(settings.keys, keys(&["level"]));
}

#[test]
fn excluded_names_never_count_for_the_workload() {
    let analysis = analyse(
        &[
            AUTO,
            (reloader::CONFIGMAP_RELOAD, "app-conf, flags"),
            (reloader::CONFIGMAPS_EXCLUDE, "app-conf, settings, flags"),
            (reloader::SECRETS_EXCLUDE, "db"),
        ],
        TEMPLATE,
    );
    for (kind, name, annotation) in [
        (CM, "app-conf", reloader::CONFIGMAPS_EXCLUDE),
        (CM, "settings", reloader::CONFIGMAPS_EXCLUDE),
        (SECRET, "db", reloader::SECRETS_EXCLUDE),
    ] {
        let excluded = source(&analysis, kind, name);
        assert!(!excluded.rollout, "{name}");
        assert_eq!(
            excluded.reason,
            format!("excluded by {annotation} on the workload")
        );
    }
    assert!(
        !analysis.sources.iter().any(|s| s.name == "flags"),
        "an excluded name is not added"
    );
    assert!(source(&analysis, CM, "app-env").rollout);
    // envroll's own list is explicit and wins.
    let analysis = analyse(
        &[
            AUTO,
            (reloader::CONFIGMAPS_EXCLUDE, "settings"),
            (policy::CONFIGMAPS, "settings"),
        ],
        TEMPLATE,
    );
    assert!(source(&analysis, CM, "settings").rollout);
}

#[test]
fn search_counts_only_matched_sources_and_auto_wins_over_it() {
    let matched = |kind: SourceKind, name: &str| {
        (kind == CM && name == "app-env").then_some(SourceMeta {
            reloader_match: true,
            ..SourceMeta::default()
        })
    };
    let analysis = analyse_known(&[(reloader::SEARCH, "true")], TEMPLATE, matched);
    assert!(analysis.managed);
    let app_env = source(&analysis, CM, "app-env");
    assert!(app_env.rollout);
    assert_eq!(
        app_env.reason,
        "envFrom in container app: env is read once at process start (reloader.stakater.com/search: \"true\" and the ConfigMap's reloader.stakater.com/match: \"true\")"
    );
    let settings = source(&analysis, CM, "settings");
    assert!(!settings.rollout);
    assert_eq!(
        settings.reason,
        "not counted: reloader.stakater.com/search: \"true\" counts only sources annotated reloader.stakater.com/match: \"true\""
    );
    let analysis = analyse_known(&[(reloader::SEARCH, "true"), AUTO], TEMPLATE, matched);
    assert!(source(&analysis, CM, "settings").rollout);
}

#[test]
fn an_ignored_source_never_counts() {
    let ignored = |kind: SourceKind, name: &str| {
        (kind == CM && name == "app-conf").then_some(SourceMeta {
            reloader_ignore: true,
            ..SourceMeta::default()
        })
    };
    for pairs in [
        vec![AUTO],
        vec![(reloader::CONFIGMAP_RELOAD, "app-conf")],
        vec![(policy::CONFIGMAPS, "app-conf")],
    ] {
        let analysis = analyse_known(&pairs, TEMPLATE, ignored);
        let conf = source(&analysis, CM, "app-conf");
        assert!(!conf.rollout, "{pairs:?}");
        assert_eq!(
            conf.reason,
            "the ConfigMap is annotated reloader.stakater.com/ignore: \"true\""
        );
    }
    // envroll's own ignore too.
    let analysis = analyse_known(&[AUTO], TEMPLATE, |_, _| {
        Some(SourceMeta {
            ignore: true,
            ..SourceMeta::default()
        })
    });
    assert_eq!(analysis.rollout_sources().count(), 0);
}

#[test]
fn annotations_on_the_pod_template_count_and_say_so() {
    let template = TEMPLATE.replacen(
        "spec:\n",
        "metadata:\n  annotations: {reloader.stakater.com/auto: \"true\"}\nspec:\n",
        1,
    );
    let analysis = analyse(&[], &template);
    assert!(analysis.managed);
    let settings = source(&analysis, CM, "settings");
    assert!(
        settings
            .reason
            .ends_with("(reloader.stakater.com/auto: \"true\" on the pod template)"),
        "{}",
        settings.reason
    );
    // Any of the four on the workload: the template is not read for that kind.
    let analysis = analyse(&[(reloader::SEARCH, "true")], &template);
    assert!(!source(&analysis, CM, "settings").rollout);
    assert_eq!(analysis.warnings.len(), 1, "{:?}", analysis.warnings);
}

#[test]
fn a_bad_annotation_is_a_warning_and_the_valid_rest_works() {
    let analysis = analyse(
        &[(reloader::CONFIGMAP_RELOAD, "settings, [unclosed")],
        TEMPLATE,
    );
    assert!(source(&analysis, CM, "settings").rollout);
    assert_eq!(analysis.warnings.len(), 1);
    assert!(
        analysis.warnings[0].starts_with(
            "annotation configmap.reloader.stakater.com/reload: \"settings, [unclosed\" has bad entries: entry 2 \"[unclosed\" is not a valid regular expression"
        ),
        "{}",
        analysis.warnings[0]
    );
}

#[test]
fn an_unmanaged_workload_says_which_annotations_would_manage_it() {
    let analysis = analyse(&[], TEMPLATE);
    assert!(!analysis.managed);
    assert_eq!(
        source(&analysis, CM, "settings").reason,
        "workload is not managed: set envroll.dev/auto: \"true\" or reloader.stakater.com/auto: \"true\" (or a typed one), or list sources in envroll.dev/configmaps / envroll.dev/secrets or configmap.reloader.stakater.com/reload / secret.reloader.stakater.com/reload"
    );
}

#[test]
fn envroll_annotations_keep_their_meaning_beside_reloaders() {
    // A Secret-only Reloader annotation leaves ConfigMaps to envroll.dev/auto, with envroll's
    // volume semantics.
    let analysis = analyse(
        &[(reloader::SECRET_AUTO, "true"), (policy::AUTO, "true")],
        TEMPLATE,
    );
    let conf = source(&analysis, CM, "app-conf");
    assert!(!conf.rollout);
    assert!(
        conf.reason.contains("kubelet refreshes the files in place"),
        "{}",
        conf.reason
    );
    assert!(source(&analysis, SECRET, "tls").rollout);
    // The same workload without the flag: exactly envroll's analysis.
    let envroll_only = analyse_deployment(&[(policy::AUTO, "true")], TEMPLATE, |_, _| None);
    let with_flag = analyse(&[(policy::AUTO, "true")], TEMPLATE);
    assert_eq!(envroll_only, with_flag);
}

#[test]
fn source_meta_reads_reloader_annotations_as_reloader_does() {
    let annotations: BTreeMap<String, String> = [
        (reloader::IGNORE.to_string(), "true".to_string()),
        (reloader::MATCH.to_string(), "True".to_string()),
    ]
    .into();
    let (meta, problem) = SourceMeta::from_object(&annotations, None);
    assert!(meta.reloader_ignore);
    assert!(!meta.reloader_match, "exactly \"true\", as Reloader");
    assert!(!meta.ignore);
    assert!(problem.is_none());
}

#[test]
fn turning_the_flag_on_or_installing_rolls_nothing_out() {
    use crate::hash::{salt_for, Section, SourceDigests};
    use crate::rollout::{decide, Decision, Plan, PodsStartedAfter, RebaselineCause, Template};
    use crate::store::SourceView;

    let digests = SourceDigests::from_values(
        salt_for(CM, ""),
        [("level", Section::Data, b"info".as_slice())],
    );
    let known = |_: SourceKind, _: &str| SourceView::Known {
        digests: &digests,
        meta: SourceMeta::default(),
        revision: Some(1),
    };
    let template = Template {
        fingerprint: "v2:0000000000000001",
        started_after: PodsStartedAfter::default(),
    };
    // envroll's own annotation and Reloader's on one workload: the baseline recorded without
    // the flag (env only), then the operator restarted with it (volumes count too).
    let pairs = [AUTO, (policy::AUTO, "true")];
    let without = analyse_deployment(&pairs, TEMPLATE, |_, _| None);
    let Decision::Act { applied, .. } = decide(&without, template, None, known) else {
        panic!("decided");
    };
    let with = analyse(&pairs, TEMPLATE);
    assert!(with.rollout_sources().count() > without.rollout_sources().count());
    match decide(&with, template, Some(&applied), known) {
        Decision::Act { plan, .. } => {
            assert_eq!(plan, Plan::Rebaseline(RebaselineCause::SourcesChanged))
        }
        other => panic!("{other:?}"),
    }
    // A workload only Reloader's annotations manage is first seen with the flag: adopted.
    let reloader_only = analyse(&[AUTO], TEMPLATE);
    match decide(&reloader_only, template, None, known) {
        Decision::Act { plan, .. } => assert_eq!(plan, Plan::Adopt),
        other => panic!("{other:?}"),
    }
}
