use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::EventSeries;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde_json::json;

use super::*;
use crate::test_support::analyse_deployment;

/// Seconds after an arbitrary epoch, as a timestamp.
fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

const TEMPLATE: &str = r#"
spec:
  containers:
  - name: web
    envFrom: [{configMapRef: {name: web-env}}]
    env: [{name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}]
    volumeMounts: [{name: files, mountPath: /srv}]
  volumes: [{name: files, configMap: {name: web-files}}]
"#;

fn explanation(state: LiveState) -> LiveExplanation {
    LiveExplanation {
        analysis: analyse_deployment(&[("envroll.dev/auto", "true")], TEMPLATE, |_, _| None),
        config_hash: Some("b".repeat(64)),
        template_hash: Some("a".repeat(64)),
        applied_hash: Some("a".repeat(64)),
        rollout_pending: state == LiveState::Pending,
        status: match state {
            LiveState::Pending => "rollout pending: ConfigMap/web-env changed".into(),
            _ => "up to date".into(),
        },
        state,
    }
}

fn event(reason: &str, second: i64, note: &str) -> RecordedEvent {
    RecordedEvent {
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "web".into(),
        uid: Some("uid-1".into()),
        reason: reason.into(),
        type_: if reason == STALLED || reason == THROTTLED {
            "Warning".into()
        } else {
            "Normal".into()
        },
        time: Some(at(second)),
        note: note.into(),
    }
}

/// A Deployment of one replica whose rollout is done (`done`) or still replacing its pod.
fn deployment_status(done: bool) -> RolloutStatus {
    RolloutStatus {
        generation: 3,
        observed_generation: 3,
        desired: 1,
        updated: 1,
        available: if done { 1 } else { 0 },
        total: if done { 1 } else { 2 },
        ..RolloutStatus::default()
    }
}

fn present(_: &SourceKey) -> Option<SourcePresenceRead> {
    Some(SourcePresenceRead::Present)
}

#[test]
fn a_rollout_is_in_progress_until_its_outcome_or_the_status_says_done() {
    let going = deployment_status(false);
    let done = deployment_status(true);
    // Never triggered by envroll: the workload's own rollout is not envroll's.
    assert!(!rollout_in_progress(&going, None, None, at(10)));
    assert!(rollout_in_progress(&going, Some(at(0)), None, at(10)));
    // An outcome at or after the trigger ends it, whatever the status says.
    assert!(!rollout_in_progress(
        &going,
        Some(at(5)),
        Some(at(5)),
        at(10)
    ));
    // An outcome of an earlier rollout does not.
    assert!(rollout_in_progress(
        &going,
        Some(at(5)),
        Some(at(1)),
        at(10)
    ));
    // Done by the status before envroll said so (it polls; or it restarted).
    assert!(!rollout_in_progress(&done, Some(at(0)), None, at(10)));
    // A StatefulSet or DaemonSet past envroll's own deadline is stalled, not in progress.
    let statefulset = RolloutStatus {
        own_deadline: Some(Duration::from_secs(600)),
        ..going.clone()
    };
    assert!(rollout_in_progress(
        &statefulset,
        Some(at(0)),
        None,
        at(599)
    ));
    assert!(!rollout_in_progress(
        &statefulset,
        Some(at(0)),
        None,
        at(600)
    ));
    // A Deployment past its progress deadline likewise.
    let exceeded = RolloutStatus {
        deadline_exceeded: Some("ReplicaSet has timed out progressing".into()),
        ..going
    };
    assert!(!rollout_in_progress(&exceeded, Some(at(0)), None, at(10)));
}

#[test]
fn a_change_held_behind_a_rollout_shows_as_pending_and_in_progress() {
    let events = [
        event(
            SUCCEEDED,
            0,
            "rollout for ConfigMap/web-env finished in 3.0s",
        ),
        event(TRIGGERED, 100, "ConfigMap web-env changed"),
    ];
    let status = workload_status(
        explanation(LiveState::Pending),
        present,
        &deployment_status(false),
        Ok(events.iter().collect()),
        at(110),
    );
    assert!(status.rollout_pending);
    assert_eq!(status.rollout_in_progress, Some(true));
    assert_eq!(state_cell(&status), "pending, in progress");
    assert_eq!(status.last_rollout.as_ref().unwrap().reason, TRIGGERED);
    // The outcome of the rollout before.
    assert_eq!(status.last_outcome.as_ref().unwrap().reason, SUCCEEDED);

    let up_to_date = workload_status(
        explanation(LiveState::UpToDate),
        present,
        &deployment_status(false),
        Ok(events.iter().collect()),
        at(110),
    );
    assert_eq!(state_cell(&up_to_date), "in progress");
}

#[test]
fn the_last_outcome_is_the_newest_success_stall_or_throttle() {
    let events = [
        event(TRIGGERED, 0, "first"),
        event(
            STALLED,
            30,
            "rollout for ConfigMap/web-env stalled: pod web-1 is in CrashLoopBackOff",
        ),
        event(TRIGGERED, 40, "second"),
        event(
            SUCCEEDED,
            50,
            "rollout for ConfigMap/web-env finished in 10.0s",
        ),
        event(
            THROTTLED,
            60,
            "envroll used this workload's rollouts for the last hour",
        ),
        event("InvalidAnnotation", 70, "not an outcome"),
    ];
    let status = workload_status(
        explanation(LiveState::Pending),
        present,
        &deployment_status(true),
        Ok(events.iter().collect()),
        at(80),
    );
    let outcome = status.last_outcome.unwrap();
    assert_eq!(
        (outcome.reason.as_str(), outcome.type_.as_str()),
        (THROTTLED, "Warning")
    );
    assert_eq!(outcome.time.as_deref(), Some("2027-01-15T08:01:00Z"));
    assert_eq!(status.last_rollout.unwrap().note, "second");
    assert_eq!(status.rollout_in_progress, Some(false));
    assert_eq!(
        state_cell(&{
            let mut s = workload_status(
                explanation(LiveState::Pending),
                present,
                &deployment_status(true),
                Ok(Vec::new()),
                at(80),
            );
            s.rollout_in_progress = Some(false);
            s
        }),
        "pending"
    );
}

#[test]
fn sources_that_cannot_be_read_are_unknown_with_the_reason_never_missing() {
    let status = workload_status(
        explanation(LiveState::Unknown),
        |key| match key.name.as_str() {
            "db" => Some(SourcePresenceRead::Unreadable(
                "secrets \"db\" is forbidden".into(),
            )),
            "web-files" => Some(SourcePresenceRead::Missing),
            _ => Some(SourcePresenceRead::Present),
        },
        &deployment_status(true),
        Err("events.events.k8s.io is forbidden"),
        at(0),
    );
    let by_name = |name: &str| status.sources.iter().find(|s| s.name == name).unwrap();
    assert_eq!(by_name("web-env").presence, SourcePresence::Present);
    assert_eq!(by_name("web-files").presence, SourcePresence::Missing);
    let db = by_name("db");
    assert_eq!(db.presence, SourcePresence::Unknown);
    assert_eq!(
        db.read_error.as_deref(),
        Some("secrets \"db\" is forbidden")
    );
    assert_eq!(db.via, vec![Via::Env]);
    // Without Events, whether envroll's rollout is in progress is not known.
    assert_eq!(status.rollout_in_progress, None);
    assert_eq!(
        status.events_unknown.as_deref(),
        Some("events.events.k8s.io is forbidden")
    );
    assert_eq!(state_cell(&status), "unknown");
}

#[test]
fn only_envrolls_events_about_this_very_object_count() {
    let mut other = Event {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        reason: Some(SUCCEEDED.into()),
        reporting_controller: Some("someone-else".into()),
        regarding: Some(ObjectReference {
            kind: Some("Deployment".into()),
            name: Some("web".into()),
            uid: Some("uid-1".into()),
            ..ObjectReference::default()
        }),
        event_time: Some(MicroTime(at(10))),
        ..Event::default()
    };
    assert!(RecordedEvent::from_event(&other).is_none());
    other.reporting_controller = Some(REPORTING_CONTROLLER.into());
    // A series is dated by its last occurrence.
    other.series = Some(EventSeries {
        count: 2,
        last_observed_time: MicroTime(at(20)),
    });
    let recorded = RecordedEvent::from_event(&other).unwrap();
    assert_eq!(recorded.time, Some(at(20)));
    assert_eq!(recorded.namespace, "shop");
    let deployment = WorkloadKind::Deployment;
    assert!(recorded.is_about(deployment, "shop", "web", Some("uid-1")));
    // A namesake created after the Event was recorded is another object.
    assert!(!recorded.is_about(deployment, "shop", "web", Some("uid-2")));
    assert!(!recorded.is_about(WorkloadKind::StatefulSet, "shop", "web", Some("uid-1")));
    assert!(!recorded.is_about(deployment, "other", "web", Some("uid-1")));
}

#[test]
fn ages_read_like_kubectls() {
    assert_eq!(age(-3), "0s");
    assert_eq!(age(45), "45s");
    assert_eq!(age(119), "119s");
    assert_eq!(age(600), "10m");
    assert_eq!(age(3 * 3600), "3h");
    assert_eq!(age(5 * 86_400), "5d");
}

fn report() -> StatusReport {
    let events = [
        event(
            SUCCEEDED,
            0,
            "rollout for ConfigMap/web-env finished in 3.0s: the new pods are available",
        ),
        event(TRIGGERED, -5, "ConfigMap web-env changed"),
    ];
    let web = workload_status(
        explanation(LiveState::UpToDate),
        |key| {
            Some(if key.name == "db" {
                SourcePresenceRead::Unreadable("forbidden".into())
            } else {
                SourcePresenceRead::Present
            })
        },
        &deployment_status(true),
        Ok(events.iter().collect()),
        at(130),
    );
    StatusReport {
        workloads: vec![web],
        unknown: vec![Unreadable {
            kind: WorkloadKind::DaemonSet,
            namespace: Some("shop".into()),
            name: None,
            reason: "daemonsets.apps is forbidden".into(),
        }],
    }
}

#[test]
fn the_table_has_a_row_per_workload_and_per_further_source() {
    let report = report();
    let expected = "\
WORKLOAD        SOURCES                                 HASH          STATE       LAST OUTCOME
deployment/web  ConfigMap/web-env (envFrom, rolls out)  aaaaaaaaaaaa  up to date  RolloutSucceeded 2m ago: rollout for ConfigMap/web-env finished in 3.0s: the new pods are available
                ConfigMap/web-files (volume, in place)
                Secret/db (env, rolls out, unknown)
unknown: Secret shop/db: forbidden
unknown: DaemonSets in namespace shop: daemonsets.apps is forbidden
";
    assert_eq!(render_table(&report, false, at(130)), expected);
    let wide = render_table(&report, true, at(130));
    assert!(
        wide.starts_with("NAMESPACE  WORKLOAD        SOURCES")
            && wide.contains("\nshop       deployment/web  ConfigMap/web-env"),
        "{wide}"
    );
    assert!(!report.complete());
    assert_eq!(
        render_table(&StatusReport::default(), false, at(0)),
        "no managed Deployment, StatefulSet or DaemonSet found\n"
    );
}

#[test]
fn the_json_shape_is_stable() {
    let json: serde_json::Value = serde_json::from_str(&render_json(&report())).unwrap();
    let web = &json["workloads"][0];
    let mut keys: Vec<&str> = web
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "configHash",
            "decision",
            "kind",
            "lastOutcome",
            "lastRollout",
            "name",
            "namespace",
            "rolloutInProgress",
            "rolloutPending",
            "sources",
            "state",
            "templateHash",
        ]
    );
    assert_eq!(web["state"], json!("up-to-date"));
    assert_eq!(web["rolloutInProgress"], json!(false));
    assert_eq!(
        web["lastOutcome"],
        json!({"reason": "RolloutSucceeded", "type": "Normal", "time": "2027-01-15T08:00:00Z",
               "note": "rollout for ConfigMap/web-env finished in 3.0s: the new pods are available"})
    );
    assert_eq!(
        web["sources"][2],
        json!({"kind": "Secret", "name": "db", "optional": false, "via": ["env"],
               "keys": ["password"], "rollout": true,
               "reason": "env (key password) in container web: env is read once at process start",
               "presence": "unknown", "readError": "forbidden"})
    );
    assert_eq!(
        json["unknown"],
        json!([{"kind": "DaemonSet", "namespace": "shop", "name": null,
                "reason": "daemonsets.apps is forbidden"}])
    );
}
