use super::*;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(workload: &[(&str, &str)], template: &[(&str, &str)]) -> ParsedReloaderPolicy {
    parse_reloader_policy(&annotations(workload), &annotations(template))
}

#[test]
fn no_reloader_annotations_manage_nothing() {
    let parsed = parse(&[("envroll.dev/auto", "true"), ("app", "web")], &[]);
    assert!(!parsed.policy.is_managed());
    assert!(parsed.errors.is_empty());
}

#[test]
fn auto_is_a_go_boolean() {
    for value in ["true", "True", "TRUE", "t", "T", "1"] {
        let parsed = parse(&[(AUTO, value)], &[]);
        assert!(parsed.policy.configmaps.auto.is_some(), "{value}");
        assert!(parsed.policy.secrets.auto.is_some(), "{value}");
        assert!(parsed.errors.is_empty(), "{value}");
    }
    for value in ["false", "0", "F"] {
        let parsed = parse(&[(AUTO, value)], &[]);
        assert!(!parsed.policy.is_managed(), "{value}");
        assert!(parsed.errors.is_empty(), "{value}");
    }
    // Reloader reads anything else as false, silently; envroll reads it as false and says so.
    let parsed = parse(&[(AUTO, "yes")], &[]);
    assert!(!parsed.policy.is_managed());
    assert_eq!(
        parsed.errors[0].to_string(),
        "annotation reloader.stakater.com/auto: \"yes\" is not a boolean (true, false, 1, 0, t, f); read as false, as Reloader does"
    );
}

#[test]
fn typed_auto_covers_its_kind_only() {
    let parsed = parse(&[(SECRET_AUTO, "true")], &[]);
    assert!(parsed.policy.secrets.typed_auto.is_some());
    assert!(parsed.policy.secrets.is_managed());
    assert!(!parsed.policy.configmaps.is_managed());
    let parsed = parse(&[(CONFIGMAP_AUTO, "true"), (AUTO, "false")], &[]);
    assert!(parsed.policy.configmaps.is_managed());
    assert!(!parsed.policy.secrets.is_managed());
}

#[test]
fn search_counts_only_when_exactly_true() {
    assert!(parse(&[(SEARCH, "true")], &[]).policy.configmaps.search);
    let parsed = parse(&[(SEARCH, "True")], &[]);
    assert!(!parsed.policy.configmaps.search);
    assert_eq!(
        parsed.errors[0].to_string(),
        "annotation reloader.stakater.com/search: \"True\" is not \"true\"; read as false, as Reloader does"
    );
    assert!(parse(&[(SEARCH, "false")], &[]).errors.is_empty());
}

#[test]
fn reload_entries_are_anchored_regular_expressions() {
    let parsed = parse(&[(CONFIGMAP_RELOAD, " app-conf , web-.* ,, ")], &[]);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let rules = &parsed.policy.configmaps;
    let entries: Vec<&str> = rules.reload.iter().map(|p| p.entry.as_str()).collect();
    assert_eq!(entries, ["app-conf", "web-.*"]);
    assert!(rules.listed("app-conf").is_some());
    assert!(rules.listed("web-v2").is_some());
    // Anchored at both ends, as Reloader's "^" + entry + "$".
    assert!(rules.listed("my-app-conf").is_none());
    assert!(rules.listed("app-conf-2").is_none());
    assert!(rules.listed("other").is_none());
    // Only the Secret list names Secrets.
    assert!(parsed.policy.secrets.listed("app-conf").is_none());
    // A plain name also counts unreferenced; a pattern cannot.
    assert_eq!(rules.reload[0].literal_name(), Some("app-conf"));
    assert_eq!(rules.reload[1].literal_name(), None);
}

#[test]
fn an_alternation_is_anchored_as_reloader_anchors_it() {
    // "^a|b$": names starting with a, or ending with b.
    let pattern = NamePattern::compile("a|b").unwrap();
    assert!(pattern.matches("a-thing"));
    assert!(pattern.matches("thing-b"));
    assert!(!pattern.matches("thing"));
}

#[test]
fn a_malformed_regular_expression_is_an_error_naming_the_annotation() {
    let parsed = parse(&[(SECRET_RELOAD, "db, (unclosed, ok-.*")], &[]);
    let entries: Vec<&str> = parsed
        .policy
        .secrets
        .reload
        .iter()
        .map(|p| p.entry.as_str())
        .collect();
    assert_eq!(entries, ["db", "ok-.*"], "the valid entries are kept");
    assert_eq!(parsed.errors.len(), 1);
    let message = parsed.errors[0].to_string();
    assert_eq!(
        message,
        "annotation secret.reloader.stakater.com/reload: \"db, (unclosed, ok-.*\" has bad entries: entry 2 \"(unclosed\" is not a valid regular expression: unclosed group"
    );
    assert_eq!(parsed.errors[0].annotation, SECRET_RELOAD);
}

#[test]
fn a_huge_regular_expression_is_refused_not_compiled() {
    let error = NamePattern::compile("(a{1000}){1000}").unwrap_err();
    assert!(error.starts_with("compiles to more than"), "{error}");
    let long = "a".repeat(MAX_PATTERN_LENGTH + 1);
    assert_eq!(
        NamePattern::compile(&long).unwrap_err(),
        format!("is longer than {MAX_PATTERN_LENGTH} characters")
    );
    let nested = format!("{}a{}", "(".repeat(100), ")".repeat(100));
    assert!(NamePattern::compile(&nested).is_err());
}

#[test]
fn exclude_lists_are_exact_names_read_on_the_workload_only() {
    let parsed = parse(
        &[(CONFIGMAPS_EXCLUDE, " a , b.* "), (AUTO, "true")],
        &[(SECRETS_EXCLUDE, "s")],
    );
    assert_eq!(
        parsed.policy.configmaps.exclude,
        BTreeSet::from(["a".to_string(), "b.*".to_string()])
    );
    assert!(parsed.policy.configmaps.excluded("a"));
    assert!(!parsed.policy.configmaps.excluded("b-1"), "not a pattern");
    assert!(parsed.policy.secrets.exclude.is_empty());
    assert_eq!(
        parsed.errors[0].to_string(),
        "annotation secrets.exclude.reloader.stakater.com/reload: \"s\" on the pod template is not read: Reloader reads it on the workload's metadata only, and so does envroll"
    );
}

#[test]
fn the_pod_template_is_read_per_kind_when_the_workload_has_none_of_the_four() {
    // The workload names Secrets: for Secrets Reloader stops there; for ConfigMaps it reads the
    // pod template.
    let parsed = parse(
        &[(SECRET_RELOAD, "db")],
        &[(CONFIGMAP_RELOAD, "conf"), (SECRET_AUTO, "true")],
    );
    let policy = &parsed.policy;
    assert_eq!(policy.configmaps.place, Place::PodTemplate);
    assert!(policy.configmaps.listed("conf").is_some());
    assert_eq!(policy.secrets.place, Place::Workload);
    assert!(policy.secrets.typed_auto.is_none(), "not read");
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!(
        parsed.errors[0].to_string(),
        "annotation secret.reloader.stakater.com/auto: \"true\" on the pod template is not read: the workload's metadata carries Reloader annotations, and then Reloader (and envroll) reads none on the pod template"
    );

    let parsed = parse(&[], &[(AUTO, "true")]);
    assert_eq!(
        parsed.policy.configmaps.auto,
        Some(Enabled {
            value: "true".into(),
            place: Place::PodTemplate
        })
    );
    assert!(parsed.policy.secrets.auto.is_some());
    assert!(parsed.errors.is_empty());
}

#[test]
fn unimplemented_and_misplaced_annotations_are_reported() {
    let parsed = parse(
        &[
            (AUTO, "true"),
            ("deployment.reloader.stakater.com/pause-period", "5m"),
            (MATCH, "true"),
            // Written by Reloader itself: not a user's annotation.
            ("reloader.stakater.com/last-reloaded-from", "{}"),
        ],
        &[("reloader.stakater.com/rollout-strategy", "restart")],
    );
    let messages: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "annotation deployment.reloader.stakater.com/pause-period: \"5m\" is a Reloader annotation envroll does not implement: ignored",
            "annotation reloader.stakater.com/match: \"true\" belongs on a ConfigMap or Secret, not on a workload",
            "annotation reloader.stakater.com/rollout-strategy: \"restart\" on the pod template is a Reloader annotation envroll does not implement: ignored",
        ]
    );
}

#[test]
fn source_annotations_count_only_when_exactly_true() {
    let read = |pairs: &[(&str, &str)]| parse_source_annotations(&annotations(pairs));
    assert_eq!(
        read(&[(IGNORE, "true"), (MATCH, "true")]),
        ReloaderSourceAnnotations {
            ignore: true,
            search_match: true
        }
    );
    assert_eq!(
        read(&[(IGNORE, "True"), (MATCH, "yes")]),
        ReloaderSourceAnnotations::default()
    );
}

#[test]
fn parsing_is_deterministic_and_errors_quote_the_annotation_as_written() {
    let workload = annotations(&[
        (AUTO, "maybe"),
        (CONFIGMAP_RELOAD, "[z-a]"),
        (SEARCH, "nope"),
    ]);
    // The same key on both, with other values: each problem quotes its own.
    let template = annotations(&[(CONFIGMAPS_EXCLUDE, "x"), (AUTO, "")]);
    let first = parse_reloader_policy(&workload, &template);
    assert_eq!(first, parse_reloader_policy(&workload, &template));
    assert_eq!(first.errors.len(), 5, "{:?}", first.errors);
    for error in &first.errors {
        let place = if error.problem.starts_with("on the pod template") {
            &template
        } else {
            &workload
        };
        assert_eq!(place.get(&error.annotation), Some(&error.value), "{error}");
        assert!(error.to_string().contains(&error.annotation));
    }
}
