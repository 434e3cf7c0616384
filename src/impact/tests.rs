use super::*;

/// Reads YAML as `impact -n shop` would.
fn read(yaml: &str) -> Manifests {
    let mut manifests = Manifests::in_namespace(Some("shop"));
    manifests
        .add_yaml("test.yaml", yaml)
        .expect("test YAML reads");
    manifests
}

fn impact(old: &str, new: &str) -> ImpactReport {
    compare(&read(old), &read(new))
}

fn only(report: &ImpactReport) -> &WorkloadImpact {
    assert_eq!(report.workloads.len(), 1, "{report:#?}");
    &report.workloads[0]
}

fn only_source(workload: &WorkloadImpact) -> &SourceImpact {
    assert_eq!(workload.sources.len(), 1, "{workload:#?}");
    &workload.sources[0]
}

fn keys(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|k| k.to_string()).collect()
}

fn config_map(name: &str, data: &str) -> String {
    format!("kind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{{data}}}\n---\n")
}

/// The Deployment `web` with these annotations and these lines under `template.spec` (indented
/// by six spaces).
fn deployment(annotations: &str, pod_spec: &str) -> String {
    format!(
        "kind: Deployment\nmetadata: {{name: web, annotations: {{{annotations}}}}}\n\
         spec:\n  selector: {{}}\n  template:\n    spec:\n{pod_spec}---\n"
    )
}

const AUTO: &str = r#"envroll.dev/auto: "true""#;

const ENV_FROM: &str =
    "      containers:\n      - name: app\n        envFrom: [{configMapRef: {name: app-env}}]\n";

const LEVEL_ONLY: &str = "      containers:\n      - name: app\n        env: [{name: LEVEL, valueFrom: {configMapKeyRef: {name: app-env, key: LEVEL}}}]\n";

const VOLUME: &str = "      containers:\n      - name: app\n        volumeMounts: [{name: files, mountPath: /etc/app}]\n      volumes: [{name: files, configMap: {name: app-env}}]\n";

fn with_env(data: &str, pod_spec: &str, annotations: &str) -> String {
    config_map("app-env", data) + &deployment(annotations, pod_spec)
}

#[test]
fn an_env_from_change_rolls_out_and_names_the_changed_keys() {
    let report = impact(
        &with_env("LEVEL: info, MODE: a", ENV_FROM, AUTO),
        &with_env("LEVEL: debug, MODE: a, NEW: x", ENV_FROM, AUTO),
    );
    let web = only(&report);
    assert_eq!(
        (web.kind, web.namespace.as_str(), web.name.as_str()),
        (WorkloadKind::Deployment, "shop", "web")
    );
    assert_eq!(web.outcome, Outcome::Rollout);
    assert!(web.managed && !web.template_changed);
    assert_eq!(
        web.reason,
        "envroll replaces the pods: ConfigMap/app-env changed"
    );
    let source = only_source(web);
    assert_eq!(source.change, Change::Modified);
    assert_eq!(source.keys, keys(&["LEVEL", "NEW"]));
    assert_eq!(source.effect, Effect::Rollout);
    assert_eq!(
        source.reason,
        "envFrom in container app: env is read once at process start"
    );
    assert!(report.rolls_out());
    assert_eq!(report.summary.rollout, 1);
}

#[test]
fn a_value_from_reference_counts_only_its_key() {
    let old = with_env("LEVEL: info, MODE: a", LEVEL_ONLY, AUTO);
    let other_key = impact(&old, &with_env("LEVEL: info, MODE: b", LEVEL_ONLY, AUTO));
    let web = only(&other_key);
    assert_eq!(web.outcome, Outcome::Untouched);
    assert_eq!(web.reason, "no rollout: no key this workload reads changed");
    let source = only_source(web);
    assert_eq!(source.keys, keys(&[]));
    assert_eq!(source.effect, Effect::None);
    assert_eq!(
        source.reason,
        "only keys this workload does not read changed (MODE)"
    );
    assert!(!other_key.rolls_out());

    let its_key = impact(&old, &with_env("LEVEL: debug, MODE: a", LEVEL_ONLY, AUTO));
    let source = only_source(only(&its_key));
    assert_eq!(
        (source.effect, &source.keys),
        (Effect::Rollout, &keys(&["LEVEL"]))
    );
    assert_eq!(
        source.reason,
        "env (key LEVEL) in container app: env is read once at process start"
    );
}

#[test]
fn a_volume_without_sub_path_sees_the_change_in_place() {
    let report = impact(
        &with_env("LEVEL: info", VOLUME, AUTO),
        &with_env("LEVEL: debug", VOLUME, AUTO),
    );
    let web = only(&report);
    assert_eq!(web.outcome, Outcome::InPlace);
    assert_eq!(
        web.reason,
        "no rollout: kubelet refreshes the changed files of ConfigMap/app-env in place"
    );
    let source = only_source(web);
    assert_eq!(source.effect, Effect::InPlace);
    assert!(
        source
            .reason
            .contains("kubelet refreshes the files in place"),
        "{}",
        source.reason
    );
    assert!(!report.rolls_out());
    assert_eq!(report.summary.in_place, 1);
}

#[test]
fn sub_path_init_containers_and_immutable_objects_are_frozen() {
    let sub_path = "      containers:\n      - name: app\n        volumeMounts: [{name: files, mountPath: /etc/app/LEVEL, subPath: LEVEL}]\n      volumes: [{name: files, configMap: {name: app-env}}]\n";
    let init = "      initContainers:\n      - name: render\n        volumeMounts: [{name: files, mountPath: /in}]\n      containers: [{name: app}]\n      volumes: [{name: files, configMap: {name: app-env}}]\n";
    for (pod_spec, why) in [
        (
            sub_path,
            "subPath mount in container app: the bind mount keeps the old file",
        ),
        (
            init,
            "volume in init container render: init containers run once at pod start",
        ),
    ] {
        let report = impact(
            &with_env("LEVEL: info", pod_spec, AUTO),
            &with_env("LEVEL: debug", pod_spec, AUTO),
        );
        let source = only_source(only(&report));
        assert_eq!(source.effect, Effect::Rollout, "{report:#?}");
        assert!(source.reason.starts_with(why), "{}", source.reason);
    }

    let immutable = |level: &str| {
        format!("kind: ConfigMap\nmetadata: {{name: app-env}}\nimmutable: true\ndata: {{LEVEL: {level}}}\n---\n")
            + &deployment(AUTO, VOLUME)
    };
    let report = impact(&immutable("info"), &immutable("debug"));
    let web = only(&report);
    let source = only_source(web);
    assert_eq!(source.effect, Effect::Rollout);
    assert!(
        source
            .reason
            .ends_with("the ConfigMap is immutable and kubelet stops watching it"),
        "{}",
        source.reason
    );
    assert_eq!(
        web.warnings,
        vec!["ConfigMap/app-env is immutable: the API server refuses changes to its data, so it must be deleted and re-created (or given a new name)"]
    );
}

#[test]
fn a_source_named_in_a_list_annotation_rolls_out_however_it_is_consumed() {
    let listed = "envroll.dev/configmaps: app-env";
    let report = impact(
        &with_env("LEVEL: info", VOLUME, listed),
        &with_env("LEVEL: debug", VOLUME, listed),
    );
    let source = only_source(only(&report));
    assert_eq!(source.effect, Effect::Rollout);
    assert!(
        source
            .reason
            .starts_with("listed in envroll.dev/configmaps: rolls out on every change"),
        "{}",
        source.reason
    );
}

#[test]
fn without_envroll_frozen_changes_leave_pods_on_old_data() {
    let report = impact(
        &with_env("LEVEL: info", ENV_FROM, ""),
        &with_env("LEVEL: debug", ENV_FROM, ""),
    );
    let web = only(&report);
    assert!(!web.managed);
    assert_eq!(web.outcome, Outcome::Untouched);
    assert_eq!(
        web.reason,
        "no rollout; running pods keep the old data of ConfigMap/app-env until they restart"
    );
    let source = only_source(web);
    assert_eq!(source.effect, Effect::Stale);
    assert!(
        source.reason.starts_with(
            "envFrom in container app: env is read once at process start, but no rollout: workload is not managed"
        ),
        "{}",
        source.reason
    );

    // kubelet refreshes volumes whether or not envroll manages the workload.
    let report = impact(
        &with_env("LEVEL: info", VOLUME, ""),
        &with_env("LEVEL: debug", VOLUME, ""),
    );
    assert_eq!(only(&report).outcome, Outcome::InPlace);
}

#[test]
fn an_ignored_source_never_rolls_out() {
    let ignored = |level: &str| {
        format!("kind: ConfigMap\nmetadata: {{name: app-env, annotations: {{envroll.dev/ignore: \"true\"}}}}\ndata: {{LEVEL: {level}}}\n---\n")
            + &deployment(AUTO, ENV_FROM)
    };
    let report = impact(&ignored("info"), &ignored("debug"));
    let source = only_source(only(&report));
    assert_eq!(source.effect, Effect::Stale);
    assert!(
        source
            .reason
            .ends_with("but no rollout: the ConfigMap is annotated envroll.dev/ignore: \"true\""),
        "{}",
        source.reason
    );
    assert!(!report.rolls_out());
}

fn with_image(image: &str) -> String {
    format!("      containers:\n      - name: app\n        image: {image}\n        envFrom: [{{configMapRef: {{name: app-env}}}}]\n")
}

#[test]
fn a_template_edit_applied_after_the_config_carries_it() {
    let report = impact(
        &with_env("LEVEL: info", &with_image("app:1"), AUTO),
        &with_env("LEVEL: debug", &with_image("app:2"), AUTO),
    );
    let web = only(&report);
    assert_eq!(web.outcome, Outcome::Template);
    assert!(web.template_changed);
    assert_eq!(
        web.reason,
        "the pod template changes: its own rollout replaces the pods, which read the new data of ConfigMap/app-env"
    );
    assert_eq!(only_source(web).effect, Effect::Template);
    assert!(
        !report.rolls_out(),
        "the user's own rollout is no config rollout"
    );
    assert_eq!(report.summary.template, 1);
}

#[test]
fn a_template_edit_applied_before_the_config_gets_one_more_rollout() {
    let old = with_env("LEVEL: info", &with_image("app:1"), AUTO);
    // The workload first, then its ConfigMap: pods of the edit may start before the change.
    let new = deployment(AUTO, &with_image("app:2")) + &config_map("app-env", "LEVEL: debug");
    let report = impact(&old, &new);
    let web = only(&report);
    assert_eq!(web.outcome, Outcome::Rollout);
    assert!(web.template_changed);
    assert!(
        web.reason.ends_with("envroll rolls out once more"),
        "{}",
        web.reason
    );
    assert_eq!(only_source(web).effect, Effect::Rollout);
    assert!(report.rolls_out());
}

#[test]
fn a_renamed_config_map_rides_on_the_template_change() {
    // What a kustomize configMapGenerator does: a new name, so a new template.
    let named = |name: &str, level: &str| {
        config_map(name, &format!("LEVEL: {level}"))
            + &deployment(AUTO, &ENV_FROM.replace("app-env", name))
    };
    let report = impact(&named("app-env-1", "info"), &named("app-env-2", "debug"));
    let web = only(&report);
    assert_eq!(web.outcome, Outcome::Template);
    let source = only_source(web);
    assert_eq!(source.name, "app-env-2");
    assert_eq!(
        (source.change, source.effect),
        (Change::Created, Effect::Template)
    );
    assert_eq!(source.keys, keys(&["LEVEL"]));
}

#[test]
fn creating_an_optional_source_rolls_out_and_deleting_a_required_one_blocks() {
    let optional = "      containers:\n      - name: app\n        envFrom: [{configMapRef: {name: app-env, optional: true}}]\n";
    let absent = deployment(AUTO, optional);
    let present = with_env("LEVEL: info", optional, AUTO);
    let created = impact(&absent, &present);
    let source = only_source(only(&created));
    assert_eq!(
        (source.change, source.effect),
        (Change::Created, Effect::Rollout)
    );

    let deleted = impact(
        &with_env("LEVEL: info", ENV_FROM, AUTO),
        &deployment(AUTO, ENV_FROM),
    );
    let web = only(&deleted);
    assert_eq!(web.outcome, Outcome::Blocked);
    assert!(
        web.reason
            .starts_with("ConfigMap/app-env deleted but not optional"),
        "{}",
        web.reason
    );
    assert_eq!(only_source(web).change, Change::Deleted);
    assert!(!deleted.rolls_out());

    // And back: pods that could not start without it start with it, whatever else changed.
    let recreated = impact(
        &deployment(AUTO, ENV_FROM),
        &with_env("LEVEL: info", ENV_FROM, AUTO),
    );
    let web = only(&recreated);
    assert_eq!(web.outcome, Outcome::New);
    assert_eq!(
        web.reason,
        "no pod could run with the old manifests (ConfigMap/app-env missing, CreateContainerConfigError): its pods start with the config of the new ones"
    );
    let source = only_source(web);
    assert_eq!(
        (source.change, source.effect),
        (Change::Created, Effect::None)
    );
    assert!(!recreated.rolls_out());
}

#[test]
fn new_and_newly_managed_workloads_are_not_rolled_out() {
    let report = impact(
        &config_map("app-env", "LEVEL: info"),
        &with_env("LEVEL: debug", ENV_FROM, AUTO),
    );
    assert_eq!(only(&report).outcome, Outcome::New);
    assert!(only(&report).sources.is_empty());

    let report = impact(
        &with_env("LEVEL: info", ENV_FROM, ""),
        &with_env("LEVEL: debug", ENV_FROM, AUTO),
    );
    let source = only_source(only(&report));
    assert_eq!(source.effect, Effect::Stale);
    assert!(
        source.reason.ends_with(
            "but no rollout: envroll starts managing the workload with this change, and records its state without a rollout"
        ),
        "{}",
        source.reason
    );
}

#[test]
fn a_change_only_a_volume_reads_is_in_place_even_when_other_keys_are_frozen() {
    let both = "      containers:\n      - name: app\n        env: [{name: LEVEL, valueFrom: {configMapKeyRef: {name: app-env, key: LEVEL}}}]\n        volumeMounts: [{name: files, mountPath: /etc/app}]\n      volumes: [{name: files, configMap: {name: app-env}}]\n";
    let old = with_env("LEVEL: info, page: a", both, AUTO);
    let page = impact(&old, &with_env("LEVEL: info, page: b", both, AUTO));
    let source = only_source(only(&page));
    assert_eq!(
        (source.effect, &source.keys),
        (Effect::InPlace, &keys(&["page"]))
    );
    assert!(source
        .reason
        .ends_with("the frozen keys (LEVEL) did not change"));
    let level = impact(&old, &with_env("LEVEL: debug, page: a", both, AUTO));
    assert_eq!(only_source(only(&level)).effect, Effect::Rollout);
}

#[test]
fn secrets_are_compared_by_digest_and_never_shown() {
    let secret = |password: &str| {
        format!("kind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {password}, user: shop}}\n---\n")
            + &deployment(
                AUTO,
                "      containers:\n      - name: app\n        env: [{name: PW, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n",
            )
    };
    let report = impact(&secret("hunter2"), &secret("correct-horse"));
    let source = only_source(only(&report));
    assert_eq!(
        (source.kind, source.effect, &source.keys),
        (SourceKind::Secret, Effect::Rollout, &keys(&["password"]))
    );
    for shown in [
        render_table(&report),
        render_json(&report),
        format!("{report:?}"),
    ] {
        for value in ["hunter2", "aHVudGVyMg", "correct-horse", "Y29ycmVjdC1ob3Jz"] {
            assert!(!shown.contains(value), "{value} shown in {shown}");
        }
        let hex_runs = shown
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|run| run.len() >= 16);
        assert_eq!(hex_runs.count(), 0, "something like a digest in {shown}");
    }

    // The same value written as data (base64) or stringData is the same data.
    let as_data = secret("hunter2").replace(
        "stringData: {password: hunter2, user: shop}",
        "data: {password: aHVudGVyMg==, user: c2hvcA==}",
    );
    let report = impact(&secret("hunter2"), &as_data);
    assert_eq!(only(&report).outcome, Outcome::Untouched);
    assert!(only(&report).sources.is_empty());
}

#[test]
fn sources_outside_the_manifests_are_taken_as_unchanged() {
    // The ConfigMap lives elsewhere (another repository, an operator): this change leaves it be.
    let report = impact(&deployment(AUTO, ENV_FROM), &deployment(AUTO, ENV_FROM));
    let web = only(&report);
    assert_eq!(web.outcome, Outcome::Untouched);
    assert_eq!(web.reason, "no consumed ConfigMap or Secret changes");
}

#[test]
fn the_namespace_given_to_objects_without_one_lines_references_up() {
    // A chart rendering that names the namespace on its workload only.
    let render = |level: &str| {
        config_map("app-env", &format!("LEVEL: {level}"))
            + &deployment(AUTO, ENV_FROM).replace("name: web,", "name: web, namespace: shop,")
    };
    let (old, new) = (render("info"), render("debug"));
    let read_in = |namespace: Option<&str>, yaml: &str| {
        let mut manifests = Manifests::in_namespace(namespace);
        manifests.add_yaml("test.yaml", yaml).unwrap();
        manifests
    };
    let defaulted = compare(&read_in(Some("shop"), &old), &read_in(Some("shop"), &new));
    assert_eq!(only(&defaulted).outcome, Outcome::Rollout);
    // Without it the ConfigMap lands in `default`, out of the workload's sight.
    let apart = compare(&read_in(None, &old), &read_in(None, &new));
    assert_eq!(only(&apart).outcome, Outcome::Untouched);
}

#[test]
fn on_delete_workloads_are_warned_about() {
    let on_delete = |level: &str| {
        with_env(&format!("LEVEL: {level}"), ENV_FROM, AUTO).replace(
            "  selector: {}\n",
            "  selector: {}\n  strategy: {type: OnDelete}\n",
        )
    };
    let report = impact(&on_delete("info"), &on_delete("debug"));
    assert_eq!(
        only(&report).warnings,
        vec!["updateStrategy is OnDelete: the pod template changes, but pods are replaced only when deleted"]
    );
}

#[test]
fn the_table_shows_each_workload_its_changed_sources_and_a_summary() {
    let old = with_env("LEVEL: info, MODE: a", ENV_FROM, AUTO)
        + "kind: StatefulSet\nmetadata: {name: db}\nspec: {selector: {}, template: {spec: {containers: [{name: db}]}}}\n";
    let new = with_env("LEVEL: debug, MODE: a", ENV_FROM, AUTO)
        + "kind: StatefulSet\nmetadata: {name: db}\nspec: {selector: {}, template: {spec: {containers: [{name: db}]}}}\n";
    let expected = "\
Deployment shop/web: rollout
  envroll replaces the pods: ConfigMap/app-env changed
  SOURCE             CHANGE    KEYS   EFFECT   REASON
  ConfigMap/app-env  modified  LEVEL  rollout  envFrom in container app: env is read once at process start

StatefulSet shop/db: untouched
  no consumed ConfigMap or Secret changes

2 workloads: 1 would roll out because of config, 1 untouched
";
    assert_eq!(render_table(&impact(&old, &new)), expected);
}

#[test]
fn json_has_the_documented_shape() {
    let report = impact(
        &with_env("LEVEL: info", ENV_FROM, AUTO),
        &with_env("LEVEL: debug", ENV_FROM, AUTO),
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "workloads": [{
                "kind": "Deployment", "namespace": "shop", "name": "web", "managed": true,
                "outcome": "rollout", "templateChanged": false,
                "reason": "envroll replaces the pods: ConfigMap/app-env changed",
                "sources": [{
                    "kind": "ConfigMap", "name": "app-env", "change": "modified",
                    "keys": ["LEVEL"], "effect": "rollout",
                    "reason": "envFrom in container app: env is read once at process start"
                }],
                "warnings": []
            }],
            "summary": {"workloads": 1, "rollout": 1, "template": 0, "blocked": 0, "new": 0,
                        "inPlace": 0, "untouched": 0}
        })
    );
}

#[test]
fn an_empty_comparison_says_so() {
    let report = impact("", "");
    assert_eq!(
        render_table(&report),
        "no Deployment, StatefulSet or DaemonSet in the new manifests\n"
    );
}
