use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::analysis::SourceMeta;
use crate::hash::{salt_for, Section, SourceDigests};
use crate::test_support::analyse_deployment;

const OLD_TEMPLATE: &str = "v2:0000000000000001";
const NEW_TEMPLATE: &str = "v2:0000000000000002";

fn applied(hash: &str, template: &str, sources: &[(&str, &str)]) -> Applied {
    Applied {
        hash: hash.into(),
        template: template.into(),
        sources: sources
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn revisions(pairs: &[(&str, Option<u64>)]) -> BTreeMap<String, Option<u64>> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn edited(at: u64) -> PodsStartedAfter {
    PodsStartedAfter {
        edit: Some(at),
        rollout: None,
    }
}

fn rolled_out(at: u64) -> PodsStartedAfter {
    PodsStartedAfter {
        edit: None,
        rollout: Some(at),
    }
}

fn rollout(changed: &[&str], template_edited: bool) -> Plan {
    Plan::Rollout {
        changed: changed.iter().map(|c| c.to_string()).collect(),
        template_edited,
    }
}

#[test]
fn first_sight_adopts() {
    let state = applied("h", OLD_TEMPLATE, &[]);
    assert_eq!(
        plan(None, &state, PodsStartedAfter::default(), &BTreeMap::new()),
        Plan::Adopt
    );
}

#[test]
fn same_state_is_up_to_date() {
    let state = applied("h", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    assert_eq!(
        plan(Some(&state), &state.clone(), edited(5), &BTreeMap::new()),
        Plan::UpToDate
    );
}

#[test]
fn a_changed_source_under_an_unchanged_template_rolls_out() {
    let before = applied(
        "h1",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("Secret/b", "2")],
    );
    let after = applied(
        "h2",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "9"), ("Secret/b", "2")],
    );
    let revs = revisions(&[("ConfigMap/a", Some(50)), ("Secret/b", Some(3))]);
    assert_eq!(
        plan(Some(&before), &after, edited(100), &revs),
        rollout(&["ConfigMap/a"], false)
    );
}

#[test]
fn a_template_edit_alone_rebaselines() {
    let before = applied("h", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    let after = applied("h", NEW_TEMPLATE, &[("ConfigMap/a", "1")]);
    assert_eq!(
        plan(
            Some(&before),
            &after,
            PodsStartedAfter::default(),
            &BTreeMap::new()
        ),
        Plan::Rebaseline(RebaselineCause::TemplateChanged)
    );
}

#[test]
fn a_template_edited_after_the_config_change_carries_it() {
    // `kubectl apply` of a changed ConfigMap (revision 100) and a new image (revision 101).
    let before = applied("h1", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    let after = applied("h2", NEW_TEMPLATE, &[("ConfigMap/a", "9")]);
    let revs = revisions(&[("ConfigMap/a", Some(100))]);
    assert_eq!(
        plan(Some(&before), &after, edited(101), &revs),
        Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig)
    );
}

#[test]
fn a_config_change_after_the_template_edit_rolls_out() {
    // `kubectl set image` (revision 100), then the ConfigMap changes (revision 150): the pods
    // started for the new image may already have read the old config.
    let before = applied("h1", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    let after = applied("h2", NEW_TEMPLATE, &[("ConfigMap/a", "9")]);
    let revs = revisions(&[("ConfigMap/a", Some(150))]);
    assert_eq!(
        plan(Some(&before), &after, edited(100), &revs),
        rollout(&["ConfigMap/a"], true)
    );
}

#[test]
fn when_the_order_cannot_be_told_it_rolls_out() {
    let before = applied(
        "h1",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("Secret/b", "1")],
    );
    let after = applied(
        "h2",
        NEW_TEMPLATE,
        &[("ConfigMap/a", "9"), ("Secret/b", "9")],
    );
    let ordered = revisions(&[("ConfigMap/a", Some(10)), ("Secret/b", Some(20))]);
    // The edit was not watched (first seen after a start or a re-list).
    assert_eq!(
        plan(Some(&before), &after, PodsStartedAfter::default(), &ordered),
        rollout(&["ConfigMap/a", "Secret/b"], true)
    );
    // One changed source cannot be ordered (absent now, or a revision that is not a number).
    let unordered = revisions(&[("ConfigMap/a", Some(10)), ("Secret/b", None)]);
    assert_eq!(
        plan(Some(&before), &after, edited(100), &unordered),
        rollout(&["ConfigMap/a", "Secret/b"], true)
    );
    // One change came after the edit.
    assert_eq!(
        plan(Some(&before), &after, edited(15), &ordered),
        rollout(&["ConfigMap/a", "Secret/b"], true)
    );
    // The baseline's fingerprint comes from an older envroll: templates cannot be compared.
    let legacy = applied(
        "h1",
        "1f0e3dad99908345",
        &[("ConfigMap/a", "1"), ("Secret/b", "1")],
    );
    assert_eq!(
        plan(Some(&legacy), &after, edited(100), &ordered),
        rollout(&["ConfigMap/a", "Secret/b"], true)
    );
}

#[test]
fn an_upgrade_of_envroll_alone_rolls_nothing() {
    let legacy = applied("h", "1f0e3dad99908345", &[("ConfigMap/a", "1")]);
    let after = applied("h", NEW_TEMPLATE, &[("ConfigMap/a", "1")]);
    assert!(!plan(
        Some(&legacy),
        &after,
        PodsStartedAfter::default(),
        &BTreeMap::new()
    )
    .rolls_out());
}

#[test]
fn sources_joining_or_leaving_the_set_rebaseline_without_rollout() {
    let before = applied("h1", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    let joined = applied(
        "h2",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("ConfigMap/b", "5")],
    );
    let left = applied("h3", OLD_TEMPLATE, &[]);
    for after in [joined, left] {
        assert_eq!(
            plan(
                Some(&before),
                &after,
                PodsStartedAfter::default(),
                &BTreeMap::new()
            ),
            Plan::Rebaseline(RebaselineCause::SourcesChanged)
        );
    }
}

proptest! {
    /// A config change is never left without a rollout unless a template edit or envroll's own
    /// last rollout provably came after every changed source.
    #[test]
    fn a_change_is_skipped_only_when_provably_carried(
        edited_at in proptest::option::of(0u64..100),
        rolled_out_at in proptest::option::of(0u64..100),
        changed_at in proptest::collection::vec(proptest::option::of(0u64..100), 1..4),
        template_edited in any::<bool>(),
    ) {
        let labels: Vec<String> = (0..changed_at.len()).map(|i| format!("ConfigMap/c{i}")).collect();
        let before = Applied {
            hash: "h1".into(),
            template: OLD_TEMPLATE.into(),
            sources: labels.iter().map(|l| (l.clone(), "old".to_string())).collect(),
        };
        let after = Applied {
            hash: "h2".into(),
            template: if template_edited { NEW_TEMPLATE } else { OLD_TEMPLATE }.into(),
            sources: labels.iter().map(|l| (l.clone(), "new".to_string())).collect(),
        };
        let revs: BTreeMap<String, Option<u64>> =
            labels.iter().cloned().zip(changed_at.iter().copied()).collect();
        let after_every_change =
            |at: Option<u64>| at.is_some_and(|at| changed_at.iter().all(|c| c.is_some_and(|c| c < at)));
        // Pods run now started after the template's last change: a watched edit or envroll's
        // own rollout, whichever came later.
        let edit = edited_at.filter(|_| template_edited);
        let started_after = PodsStartedAfter { edit: edited_at, rollout: rolled_out_at };
        let decided = plan(Some(&before), &after, started_after, &revs);
        let expected = if after_every_change(edit) {
            Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig)
        } else if after_every_change(edit.max(rolled_out_at)) {
            Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig)
        } else {
            rollout(&labels.iter().map(String::as_str).collect::<Vec<_>>(), template_edited)
        };
        prop_assert_eq!(decided, expected);
    }
}

fn digests(value: &str) -> SourceDigests {
    SourceDigests::from_values(
        salt_for(SourceKind::ConfigMap, ""),
        [("a", Section::Data, value.as_bytes())],
    )
}

const ENV_FROM: &str = "spec: {containers: [{name: a, envFrom: [{configMapRef: {name: env}}], volumeMounts: [{name: files, mountPath: /etc/app}]}], volumes: [{name: files, configMap: {name: files}}]}";
const OPTIONAL_ENV_FROM: &str =
    "spec: {containers: [{name: a, envFrom: [{configMapRef: {name: env, optional: true}}]}]}";

fn template() -> Template<'static> {
    Template {
        fingerprint: OLD_TEMPLATE,
        started_after: PodsStartedAfter::default(),
    }
}

#[test]
fn an_unmanaged_workload_is_not_decided() {
    let analysis = analyse_deployment(&[], ENV_FROM, |_, _| None);
    assert_eq!(
        decide(&analysis, template(), None, |_, _| SourceView::Absent),
        Decision::Unmanaged
    );
}

#[test]
fn an_unknown_source_waits_even_if_it_would_not_roll_out() {
    let analysis = analyse_deployment(&[("envroll.dev/auto", "true")], ENV_FROM, |_, _| None);
    let env = digests("1");
    let decision = decide(&analysis, template(), None, |_, name| match name {
        "env" => SourceView::Known {
            digests: &env,
            meta: SourceMeta::default(),
            revision: Some(1),
        },
        _ => SourceView::Unknown("throttled"),
    });
    assert_eq!(
        decision,
        Decision::Wait(vec![UnknownSource {
            kind: SourceKind::ConfigMap,
            name: "files".into(),
            reason: "throttled".into(),
        }])
    );
}

#[test]
fn a_missing_required_source_blocks_and_a_missing_optional_one_is_a_state() {
    let required = analyse_deployment(&[("envroll.dev/auto", "true")], ENV_FROM, |_, _| None);
    let decision = decide(&required, template(), None, |_, _| SourceView::Absent);
    // The volume is not a rollout source, but pods could not start without it either.
    assert!(
        matches!(&decision, Decision::Blocked(missing)
        if missing.sources == vec![
            (SourceKind::ConfigMap, "env".to_string()),
            (SourceKind::ConfigMap, "files".to_string()),
        ]),
        "{decision:?}"
    );

    let optional = analyse_deployment(
        &[("envroll.dev/auto", "true")],
        OPTIONAL_ENV_FROM,
        |_, _| None,
    );
    let Decision::Act {
        applied: absent, ..
    } = decide(&optional, template(), None, |_, _| SourceView::Absent)
    else {
        panic!("an absent optional source is decided");
    };
    let env = digests("1");
    let present = |_: SourceKind, _: &str| SourceView::Known {
        digests: &env,
        meta: SourceMeta::default(),
        revision: Some(9),
    };
    let decision = decide(&optional, template(), Some(&absent), present);
    assert!(
        matches!(&decision, Decision::Act { plan, .. } if *plan == rollout(&["ConfigMap/env"], false)),
        "{decision:?}"
    );
}

#[test]
fn a_decision_records_the_template_it_was_made_on() {
    let analysis = analyse_deployment(&[("envroll.dev/auto", "true")], ENV_FROM, |_, _| None);
    let env = digests("1");
    let known = |_: SourceKind, _: &str| SourceView::Known {
        digests: &env,
        meta: SourceMeta::default(),
        revision: Some(1),
    };
    let Decision::Act { plan, applied } = decide(&analysis, template(), None, known) else {
        panic!("decided");
    };
    assert_eq!(plan, Plan::Adopt);
    assert_eq!(applied.template, OLD_TEMPLATE);
    assert_eq!(
        applied.sources.keys().collect::<Vec<_>>(),
        vec!["ConfigMap/env"]
    );
}

#[test]
fn baseline_round_trips_and_malformed_is_an_error() {
    let state = applied("h", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    assert_eq!(
        Applied::parse(Some(&state.to_annotation())),
        Ok(Some(state))
    );
    assert_eq!(Applied::parse(None), Ok(None));
    let error = Applied::parse(Some(&"{not json".to_string())).unwrap_err();
    assert!(
        error.starts_with("annotation envroll.dev/applied is not valid"),
        "{error}"
    );
}

#[test]
fn patches_touch_only_envroll_annotations() {
    let state = applied("h", OLD_TEMPLATE, &[]);
    let adopt = patch_body(&state, Some("42"), false, Some("old"));
    assert_eq!(adopt["metadata"]["resourceVersion"], "42");
    assert!(adopt.get("spec").is_none());
    let rollout = patch_body(&state, Some("42"), true, Some("old"));
    let annotations = &rollout["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["envroll.dev/config-hash"], "h");
    assert!(annotations.get("envroll.dev/rollout").is_none());
}

#[test]
fn a_rollout_changes_the_template_even_when_it_already_holds_the_hash() {
    // The config went back to a state whose hash the template still carries (after a
    // re-baseline, or `kubectl rollout undo`): the hash alone would change nothing.
    let state = applied("h", OLD_TEMPLATE, &[]);
    let rollout = patch_body(&state, Some("42"), true, Some("h"));
    let annotations = &rollout["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["envroll.dev/config-hash"], "h");
    assert_eq!(annotations["envroll.dev/rollout"], "42");
}

#[test]
fn plans_explain_themselves() {
    assert!(rollout(&["ConfigMap/a"], true)
        .describe()
        .contains("not provably after"));
    assert_eq!(
        rollout(&["ConfigMap/a"], false).describe(),
        "rollout pending: ConfigMap/a changed"
    );
}

#[test]
fn a_deleted_immutable_volume_blocks_until_it_is_recreated_then_rolls_out() {
    // An immutable ConfigMap mounted as a volume is frozen. While it is deleted its immutability
    // is unknown; deciding then would drop it from the rollout sources and its re-creation would
    // only re-baseline.
    const IMMUTABLE_VOLUME: &str = "spec: {containers: [{name: a, volumeMounts: [{name: release, mountPath: /etc/release}]}], volumes: [{name: release, configMap: {name: release}}]}";
    let immutable = SourceMeta {
        ignore: false,
        immutable: true,
        ..SourceMeta::default()
    };
    let known = analyse_deployment(&[("envroll.dev/auto", "true")], IMMUTABLE_VOLUME, |_, _| {
        Some(immutable)
    });
    let first = digests("1");
    let Decision::Act {
        applied: baseline, ..
    } = decide(&known, template(), None, |_, _| SourceView::Known {
        digests: &first,
        meta: immutable,
        revision: Some(1),
    })
    else {
        panic!("decided");
    };
    assert_eq!(baseline.sources.len(), 1);
    let deleted = analyse_deployment(&[("envroll.dev/auto", "true")], IMMUTABLE_VOLUME, |_, _| {
        None
    });
    assert!(matches!(
        decide(&deleted, template(), Some(&baseline), |_, _| {
            SourceView::Absent
        }),
        Decision::Blocked(_)
    ));
    let second = digests("2");
    let decision = decide(&known, template(), Some(&baseline), |_, _| {
        SourceView::Known {
            digests: &second,
            meta: immutable,
            revision: Some(5),
        }
    });
    assert!(
        matches!(&decision, Decision::Act { plan, .. } if plan.rolls_out()),
        "{decision:?}"
    );
}

#[test]
fn decide_orders_a_template_edit_by_the_revisions_of_the_sources() {
    let analysis = analyse_deployment(
        &[("envroll.dev/auto", "true")],
        OPTIONAL_ENV_FROM,
        |_, _| None,
    );
    let old = digests("1");
    let known = |digests| {
        move |_: SourceKind, _: &str| SourceView::Known {
            digests,
            meta: SourceMeta::default(),
            revision: Some(100),
        }
    };
    let Decision::Act {
        applied: baseline, ..
    } = decide(&analysis, template(), None, known(&old))
    else {
        panic!("decided");
    };
    let new = digests("2");
    let edited = |edited_at| Template {
        fingerprint: NEW_TEMPLATE,
        started_after: edited(edited_at),
    };
    // The ConfigMap changed at revision 100: an edit at 101 carries it, one at 99 does not.
    let after = decide(&analysis, edited(101), Some(&baseline), known(&new));
    assert!(
        matches!(
            &after,
            Decision::Act {
                plan: Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig),
                ..
            }
        ),
        "{after:?}"
    );
    let before = decide(&analysis, edited(99), Some(&baseline), known(&new));
    assert!(
        matches!(&before, Decision::Act { plan, .. } if *plan == rollout(&["ConfigMap/env"], true)),
        "{before:?}"
    );
}

#[test]
fn a_change_older_than_envrolls_last_rollout_was_read_by_its_pods() {
    // A source watch that was behind (the API server was down) reports a change made before
    // envroll's last rollout: the pods of that rollout started after it and read it.
    let before = applied(
        "h1",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("ConfigMap/b", "1")],
    );
    let after = applied(
        "h2",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("ConfigMap/b", "2")],
    );
    let revs = revisions(&[("ConfigMap/a", Some(40)), ("ConfigMap/b", Some(90))]);
    assert_eq!(
        plan(Some(&before), &after, rolled_out(100), &revs),
        Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig)
    );
    for not_after in [rolled_out(90), rolled_out(80), PodsStartedAfter::default()] {
        assert_eq!(
            plan(Some(&before), &after, not_after, &revs),
            rollout(&["ConfigMap/b"], false)
        );
    }
    let unordered = revisions(&[("ConfigMap/a", Some(40)), ("ConfigMap/b", None)]);
    assert_eq!(
        plan(Some(&before), &after, rolled_out(100), &unordered),
        rollout(&["ConfigMap/b"], false)
    );
}

#[test]
fn an_edit_and_a_rollout_together_can_carry_what_neither_does_alone() {
    // The edit at 50 came after a's change, envroll's rollout at 100 after both: pods run now
    // started after the later of the two.
    let before = applied(
        "h1",
        OLD_TEMPLATE,
        &[("ConfigMap/a", "1"), ("ConfigMap/b", "1")],
    );
    let after = applied(
        "h2",
        NEW_TEMPLATE,
        &[("ConfigMap/a", "2"), ("ConfigMap/b", "2")],
    );
    let revs = revisions(&[("ConfigMap/a", Some(40)), ("ConfigMap/b", Some(90))]);
    let both = PodsStartedAfter {
        edit: Some(50),
        rollout: Some(100),
    };
    assert_eq!(
        plan(Some(&before), &after, both, &revs),
        Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig)
    );
    assert_eq!(
        plan(Some(&before), &after, edited(50), &revs),
        rollout(&["ConfigMap/a", "ConfigMap/b"], true)
    );
}

#[test]
fn one_revision_cannot_be_both_the_edit_and_the_change() {
    let before = applied("h1", OLD_TEMPLATE, &[("ConfigMap/a", "1")]);
    let after = applied("h2", NEW_TEMPLATE, &[("ConfigMap/a", "9")]);
    let revs = revisions(&[("ConfigMap/a", Some(100))]);
    assert_eq!(
        plan(Some(&before), &after, edited(100), &revs),
        rollout(&["ConfigMap/a"], true)
    );
}
