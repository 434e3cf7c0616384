//! What the operator tells people: Events on the workload and log lines, for rollouts and for
//! problems worth a Warning.

use std::collections::HashSet;
use std::time::SystemTime;

use kube::runtime::events::{Event, EventType, Recorder};
use tracing::{info, warn};

use super::Context;
use crate::analysis::{SourceKind, WorkloadAnalysis};
use crate::hash::{parse_source_label, source_label};
use crate::notify::{Notification, RolloutEvent, SourceRef, WorkloadRef};
use crate::rollout::UnknownSource;
use crate::store::WorkloadKey;
use crate::workload::Workload;

/// How Helm names its release Secrets, to explain why one of them looks missing.
const HELM_RELEASE_PREFIX: &str = "sh.helm.release.v1.";

/// One problem worth a Warning Event, with the Event's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Warning {
    pub reason: &'static str,
    pub message: String,
}

impl Warning {
    pub fn invalid_annotation(message: String) -> Self {
        Warning {
            reason: "InvalidAnnotation",
            message,
        }
    }

    pub fn invalid_baseline(problem: String) -> Self {
        Warning::invalid_annotation(format!(
            "{problem}; adopting the current state without a rollout"
        ))
    }

    pub fn source_missing(kind: SourceKind, name: &str) -> Self {
        let unwatched = if kind == SourceKind::Secret && name.starts_with(HELM_RELEASE_PREFIX) {
            " (Helm release Secrets are not watched)"
        } else {
            ""
        };
        Warning {
            reason: "SourceMissing",
            message: format!(
                "{kind} {name} is missing and not optional{unwatched}; not rolling out, new pods could not start (CreateContainerConfigError or FailedMount)"
            ),
        }
    }

    pub fn source_unreadable(source: &UnknownSource) -> Self {
        Warning {
            reason: "SourceUnreadable",
            message: format!(
                "{} {} cannot be read ({}); not deciding until it can be read",
                source.kind, source.name, source.reason
            ),
        }
    }

    pub fn rollout_throttled() -> Self {
        Warning {
            reason: "RolloutThrottled",
            message: "envroll used this workload's rollouts for the last hour (--max-rollouts-per-hour, annotation envroll.dev/max-rollouts-per-hour): the change waits until the budget allows, it is not dropped".to_string(),
        }
    }

    pub fn patch_failed(failures: u32, problem: &kube::Error) -> Self {
        Warning {
            reason: "PatchFailed",
            message: format!(
                "envroll could not patch this workload ({failures} tries): {problem}; retrying with backoff, the change is kept"
            ),
        }
    }
}

/// Publishes the warnings this workload has not been told about yet, and forgets the ones that
/// no longer apply, so they are published again if they come back.
pub(super) async fn publish_new_warnings<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    warnings: Vec<Warning>,
    context: &Context,
) {
    let current: HashSet<String> = warnings.iter().map(|w| w.message.clone()).collect();
    let fresh: Vec<Warning> = {
        let mut state = context.state();
        let memo = state.memo(key);
        let fresh = warnings
            .into_iter()
            .filter(|w| !memo.warnings.contains(&w.message))
            .collect();
        memo.warnings = current;
        fresh
    };
    for warning in fresh {
        warn!(workload = %key, reason = warning.reason, "{}", warning.message);
        publish(
            workload,
            EventType::Warning,
            warning.reason,
            warning.message,
            context,
        )
        .await;
    }
}

pub(super) async fn announce_rollout<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    analysis: &WorkloadAnalysis,
    changed: &[String],
    template_edited: bool,
    carried: usize,
    context: &Context,
) {
    let dry_run = context.settings().dry_run;
    let explanations: Vec<String> = changed
        .iter()
        .map(|label| {
            let source = analysis
                .rollout_sources()
                .find(|s| source_label(s.kind, &s.name) == *label);
            match source {
                Some(source) if source.listed => {
                    format!("{} {} changed; {}", source.kind, source.name, source.reason)
                }
                Some(source) => format!(
                    "{} {} changed; consumed via {}",
                    source.kind, source.name, source.reason
                ),
                None => format!("{label} changed"),
            }
        })
        .collect();
    let mut note = explanations.join("; ");
    if template_edited {
        note.push_str(
            "; the pod template was edited too, but not provably after this change, so its pods may hold the old config",
        );
    }
    if carried > 1 {
        note.push_str(&format!(
            "; carries {carried} config states that waited for the previous rollout or the budget"
        ));
    }
    if dry_run {
        note = format!("dry run, would roll out: {note}");
    }
    for label in changed {
        let source_kind = label.split('/').next().unwrap_or_default();
        context
            .metrics()
            .rollout(W::KIND.as_str(), &key.namespace, source_kind, dry_run);
    }
    info!(workload = %key, dry_run, "{note}");
    let reason = if dry_run {
        "DryRunRollout"
    } else {
        "RolloutTriggered"
    };
    publish(workload, EventType::Normal, reason, note, context).await;
    if workload.updates_on_delete() {
        let message = "updateStrategy is OnDelete: the template changed, but pods restart only when someone deletes them".to_string();
        warn!(workload = %key, "{message}");
        publish(
            workload,
            EventType::Warning,
            "OnDeleteStrategy",
            message,
            context,
        )
        .await;
    }
}

/// Tells the configured notification sinks (`notify`) what happened to a rollout.
pub(super) fn notify<W: Workload>(
    key: &WorkloadKey,
    event: RolloutEvent,
    changed: &[String],
    carried: usize,
    context: &Context,
) {
    let changed_sources = changed
        .iter()
        .filter_map(|label| parse_source_label(label))
        .map(|(kind, name)| SourceRef {
            kind,
            name: name.to_string(),
        })
        .collect();
    context.notify(Notification {
        event,
        workload: WorkloadRef {
            kind: W::KIND,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        },
        changed_sources,
        coalesced_changes: u32::try_from(carried).unwrap_or(u32::MAX),
        timestamp: SystemTime::now(),
    });
}

pub(super) async fn publish<W: Workload>(
    workload: &W,
    type_: EventType,
    reason: &str,
    note: String,
    context: &Context,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    // A shared Recorder folds every Event with the same type, reason and object into a series of
    // the first one for minutes, keeping the first note: a second rollout caused by another source
    // would be reported under the first one's note. Every decision is reported on its own instead
    // (warnings are already published once per message, see `publish_new_warnings`).
    let recorder = Recorder::new(context.client().clone(), context.reporter().clone());
    if let Err(problem) = recorder.publish(&event, &workload.object_ref(&())).await {
        warn!(reason, error = %problem, "could not record Event");
    }
}
