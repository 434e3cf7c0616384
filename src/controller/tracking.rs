//! envroll's rollouts after the patch: followed until the workload's controller finishes them
//! (`RolloutSucceeded`) or they stall (`RolloutStalled`, naming what the new pods report), and
//! the gate a new rollout passes first: never on top of one in progress, never over the budget.
//! The judgement is `lifecycle`'s (pure); this room reads the status and the pods.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::core::Selector;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::context::InFlight;
use super::report;
use super::Context;
use crate::analysis::WorkloadAnalysis;
use crate::lifecycle::{failing_reason, gate, progress, Budget, Gate, Progress};
use crate::notify::RolloutEvent;
use crate::store::WorkloadKey;
use crate::workload::{Cached, Workload};

/// How often a rollout in progress is looked at. Status changes do not trigger reconciles (they
/// would push the debounce back), so the controller comes back on its own; it reads its cache.
pub(super) const PROGRESS_POLL: Duration = Duration::from_secs(2);
/// New pods get this long to start before their states are read: a pod still pulling or
/// creating is not failing.
const PODS_CHECKED_AFTER: Duration = Duration::from_secs(30);
const PODS_CHECKED_EVERY: Duration = Duration::from_secs(15);
/// Clocks of the node running envroll and of the API server may differ this much.
const CLOCK_SKEW: i64 = 5;

/// Follows envroll's rollout of this workload, if one is in flight, and reports its outcome.
/// Says whether it is still in progress.
pub(super) async fn follow<W: Workload>(
    observed: &Cached<W>,
    key: &WorkloadKey,
    context: &Context,
) -> bool {
    let workload = observed.workload();
    let Some(in_flight) = context
        .state()
        .memos
        .get(key)
        .and_then(|m| m.in_flight.clone())
    else {
        return false;
    };
    if observed.template_fingerprint != in_flight.template {
        // Someone edited the template since: theirs is the rollout now, and its pods read the
        // config of their start. Waiting for it would hold envroll's next change for as long as
        // edits keep coming.
        info!(workload = %key, "the pod template was edited during envroll's rollout: no longer followed");
        context.state().memo(key).in_flight = None;
        return false;
    }
    let elapsed = in_flight.started.elapsed();
    let mut outcome = progress(&workload.rollout_status(), in_flight.generation, elapsed);
    if outcome == Progress::InProgress && pods_due(&in_flight) {
        if let Some(in_flight) = context.state().memo(key).in_flight.as_mut() {
            in_flight.pods_checked = Some(Instant::now());
        }
        if let Some(failing) = failing_pods(workload, key, &in_flight, context).await {
            outcome = Progress::Stalled(failing);
        }
    }
    let changed = in_flight.changed.join(", ");
    let event = match outcome {
        Progress::InProgress => return true,
        Progress::Done => {
            let message = format!(
                "rollout for {changed} finished in {:.1}s: the new pods are available",
                elapsed.as_secs_f64()
            );
            info!(workload = %key, "{message}");
            context
                .metrics()
                .rollout_finished(W::KIND.as_str(), elapsed);
            report::publish(
                workload,
                EventType::Normal,
                "RolloutSucceeded",
                message,
                context,
            )
            .await;
            RolloutEvent::Succeeded { duration: elapsed }
        }
        Progress::Stalled(cause) => {
            let message = format!("rollout for {changed} stalled: {cause}");
            warn!(workload = %key, "{message}");
            context.metrics().rollout_stalled(W::KIND.as_str());
            report::publish(
                workload,
                EventType::Warning,
                "RolloutStalled",
                message,
                context,
            )
            .await;
            RolloutEvent::Stalled { cause }
        }
    };
    report::notify::<W>(key, event, &in_flight.changed, in_flight.carried, context);
    context.state().memo(key).in_flight = None;
    false
}

fn pods_due(in_flight: &InFlight) -> bool {
    in_flight.started.elapsed() >= PODS_CHECKED_AFTER
        && in_flight
            .pods_checked
            .is_none_or(|checked| checked.elapsed() >= PODS_CHECKED_EVERY)
}

/// The first pod started by the rollout whose containers keep failing, with the reason.
/// A pod list that cannot be read (for example not allowed by RBAC) only leaves the deadline to
/// tell a stall.
async fn failing_pods<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    in_flight: &InFlight,
    context: &Context,
) -> Option<String> {
    let selector = Selector::try_from(workload.selector()?.clone()).ok()?;
    let api: Api<Pod> = Api::namespaced(context.client().clone(), &key.namespace);
    let pods = match api
        .list(&ListParams::default().labels_from(&selector))
        .await
    {
        Ok(pods) => pods,
        Err(problem) => {
            warn!(workload = %key, error = %problem, "cannot read the workload's pods; a stall is told by its deadline only");
            return None;
        }
    };
    pods.items.iter().find_map(|pod| {
        let created = pod.metadata.creation_timestamp.as_ref()?.0.as_second();
        if created + CLOCK_SKEW < in_flight.started_unix {
            return None;
        }
        let status = pod.status.as_ref()?;
        let waiting = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .filter_map(|container| {
                container
                    .state
                    .as_ref()?
                    .waiting
                    .as_ref()?
                    .reason
                    .as_deref()
            });
        failing_reason(waiting).map(|reason| format!("pod {} is in {reason}", pod.name_any()))
    })
}

/// Whether the rollout the decision asks for may start now. A change that may not is
/// remembered, so the rollout that finally carries it can say so.
pub(super) fn admit<W: Workload>(
    key: &WorkloadKey,
    analysis: &WorkloadAnalysis,
    hash: &str,
    context: &Context,
) -> Gate {
    let budget = analysis
        .max_rollouts_per_hour
        .map(Budget::per_hour)
        .unwrap_or(context.settings().budget);
    let mut state = context.state();
    let memo = state.memo(key);
    let in_progress = memo.in_flight.is_some();
    let admitted = gate(in_progress, budget, &mut memo.rollouts, Instant::now());
    if admitted != Gate::Go && memo.waiting.insert(hash.to_string()) {
        match &admitted {
            Gate::Hold => {
                context.metrics().rollout_held(W::KIND.as_str());
                info!(workload = %key, "a rollout envroll triggered is in progress: the change waits for it and joins the next rollout");
            }
            Gate::Throttle(wait) => {
                context.metrics().rollout_throttled(W::KIND.as_str());
                info!(workload = %key, retry_in = ?wait, "rollouts per hour used up: the change waits");
            }
            Gate::Go => {}
        }
    }
    admitted
}

/// Records a rollout envroll has just made and returns how many config states it carries (the
/// ones that waited, and its own).
pub(super) fn started(
    key: &WorkloadKey,
    generation: i64,
    template: &str,
    changed: &[String],
    context: &Context,
) -> usize {
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs() as i64)
        .unwrap_or_default();
    let mut state = context.state();
    let memo = state.memo(key);
    let carried = memo.waiting.len().max(1);
    memo.waiting.clear();
    memo.rollouts.push_back(Instant::now());
    memo.in_flight = Some(InFlight {
        generation,
        started: Instant::now(),
        started_unix,
        template: template.to_string(),
        changed: changed.to_vec(),
        carried,
        pods_checked: None,
    });
    carried
}
