//! One workload's decision: wait out the debounce, read the Secrets it consumes that are not
//! known yet, decide (`rollout::decide`, pure), then patch and report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{workload_key, FIELD_MANAGER};
use super::report::{self, Warning};
use super::tracking::{self, PROGRESS_POLL};
use super::{backoff, Context};
use crate::analysis::{SourceKind, WorkloadAnalysis};
use crate::lifecycle::Gate;
use crate::notify::RolloutEvent;
use crate::policy;
use crate::rollout::{
    decide, patch_body, Applied, Decision, Plan, PodsStartedAfter, RebaselineCause, Template,
};
use crate::store::{revision, secret_record, Data, SourceKey, WorkloadKey};
use crate::workload::{Cached, Workload};

/// Level-triggered safety net: every workload is decided again this often even without events.
const RESYNC: Duration = Duration::from_secs(600);
/// A patch that lost a race with another writer is decided again this soon on the newer version.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);
/// Waiting for an unknown source: the first retry, doubling up to the cap.
const UNKNOWN_RETRY: Duration = Duration::from_millis(500);
const UNKNOWN_RETRY_CAP: Duration = Duration::from_secs(30);
/// Waits in a row before the workload gets a Warning Event: a blip is only logged.
const UNKNOWN_REPORTED: u32 = 3;
/// Failed patches in a row before the workload gets a Warning Event.
pub(super) const PATCH_FAILURES_REPORTED: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching {workload} failed: {source}")]
    Patch {
        workload: WorkloadKey,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Patch { .. } => "patch",
        }
    }
}

pub(super) async fn reconcile<W: Workload>(
    observed: Arc<Cached<W>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let workload = observed.workload();
    let key = workload_key(workload);
    // Before the debounce: a rollout's outcome is reported when it happens, changes or not.
    let in_progress = tracking::follow(&observed, &key, &context).await;
    if let Some(wait) = context.debounce_wait(&key) {
        return Ok(Action::requeue(if in_progress {
            wait.min(PROGRESS_POLL)
        } else {
            wait
        }));
    }
    let started = Instant::now();
    let first_look = analyse_and_index(&observed, &key, &context);
    if first_look.managed {
        read_unknown_secrets(&first_look, &context).await;
    }
    let (analysis, decision, mut warnings) = look(&observed, &key, &context);
    if !matches!(decision, Decision::Wait(_)) {
        context.state().memo(&key).waits = 0;
    }
    let action = match decision {
        Decision::Unmanaged => Ok(Action::requeue(RESYNC)),
        Decision::Wait(unknown) => {
            let attempt = {
                let mut state = context.state();
                let memo = state.memo(&key);
                memo.waits += 1;
                memo.waits
            };
            let names: Vec<String> = unknown
                .iter()
                .map(|s| format!("{} {} ({})", s.kind, s.name, s.reason))
                .collect();
            info!(workload = %key, "not deciding until these are known: {}", names.join(", "));
            if attempt >= UNKNOWN_REPORTED {
                warnings.extend(unknown.iter().map(Warning::source_unreadable));
            }
            context.metrics().skipped("source_unknown");
            Ok(Action::requeue(backoff(
                UNKNOWN_RETRY,
                UNKNOWN_RETRY_CAP,
                attempt,
            )))
        }
        Decision::Blocked(missing) => {
            for (kind, name) in missing.sources {
                warnings.push(Warning::source_missing(kind, &name));
            }
            context.metrics().skipped("missing_required");
            Ok(Action::requeue(RESYNC))
        }
        Decision::Act { plan, applied } => {
            apply(
                workload,
                &key,
                &analysis,
                plan,
                applied,
                &mut warnings,
                &context,
            )
            .await
        }
    };
    report::publish_new_warnings(workload, &key, warnings, &context).await;
    context.metrics().observe_reconcile(started.elapsed());
    let in_flight = context
        .state()
        .memos
        .get(&key)
        .is_some_and(|memo| memo.in_flight.is_some());
    match action {
        Ok(_) if in_flight => Ok(Action::requeue(PROGRESS_POLL)),
        other => other,
    }
}

/// Analyses the workload with what is known now and indexes its sources, before any Secret is
/// read: a change to one of them meanwhile then triggers this workload instead of being missed.
fn analyse_and_index<W: Workload>(
    observed: &Cached<W>,
    key: &WorkloadKey,
    context: &Context,
) -> WorkloadAnalysis {
    let mut state = context.state();
    let namespace = key.namespace.clone();
    let analysis = observed.analyse_with(context.settings().dialects, |kind, name| {
        state.store.meta(&SourceKey::new(kind, &namespace, name))
    });
    state.index.set(key, &analysis);
    let managed = state.index.workloads();
    drop(state);
    context.metrics().set_managed_workloads(managed);
    analysis
}

/// Reads the Secrets the workload references whose current version has not been read. A failed
/// read leaves the Secret unknown, with the reason, and the decision waits.
pub(super) async fn read_unknown_secrets(analysis: &WorkloadAnalysis, context: &Context) {
    let wanted: Vec<(SourceKey, Option<String>)> = {
        let state = context.state();
        analysis
            .sources
            .iter()
            .filter(|source| source.kind == SourceKind::Secret)
            .map(|source| SourceKey::new(SourceKind::Secret, &analysis.namespace, &source.name))
            .filter_map(|key| {
                let record = state.store.get(&key)?;
                (!matches!(record.data, Data::Digests(_)))
                    .then(|| (key, record.resource_version.clone()))
            })
            .collect()
    };
    for (key, version) in wanted {
        context.metrics().source_fetch(SourceKind::Secret.as_str());
        let api: Api<Secret> = Api::namespaced(context.client().clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(secret)) => match secret_record(&secret) {
                Ok((key, record)) => {
                    context.state().store.record_read(key, record);
                }
                Err(problem) => {
                    context.metrics().source_fetch_error("no_uid");
                    warn!(secret = %key, "{problem}");
                    let reason = problem.to_string();
                    context
                        .state()
                        .store
                        .record_unreadable(&key, version.as_deref(), reason);
                }
            },
            // Deleted since the watch reported it; its delete event follows and settles it.
            Ok(None) => {
                context.state().store.record_unreadable(
                    &key,
                    version.as_deref(),
                    "deleted while being read".into(),
                );
            }
            Err(problem) => {
                let reason = fetch_error_reason(&problem);
                context.metrics().source_fetch_error(reason);
                warn!(secret = %key, error = %problem, "cannot read Secret; its consumers wait");
                context.state().store.record_unreadable(
                    &key,
                    version.as_deref(),
                    format!("{reason}: {problem}"),
                );
            }
        }
    }
}

/// Counts a failed patch; a few in a row are reported on the workload.
fn patch_failed(
    key: &WorkloadKey,
    source: kube::Error,
    warnings: &mut Vec<Warning>,
    context: &Context,
) -> Error {
    let failures = {
        let mut state = context.state();
        let memo = state.memo(key);
        memo.patch_failures += 1;
        memo.patch_failures
    };
    if failures >= PATCH_FAILURES_REPORTED {
        warnings.push(Warning::patch_failed(failures, &source));
    }
    Error::Patch {
        workload: key.clone(),
        source,
    }
}

/// A failed read, as a metric label.
fn fetch_error_reason(problem: &kube::Error) -> &'static str {
    match problem {
        kube::Error::Api(status) => match status.code {
            403 => "forbidden",
            429 => "throttled",
            500..=599 => "server_error",
            _ => "client_error",
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => "connection",
        _ => "other",
    }
}

/// Everything the decision needs, taken under one lock, and the decision.
fn look<W: Workload>(
    observed: &Cached<W>,
    key: &WorkloadKey,
    context: &Context,
) -> (WorkloadAnalysis, Decision, Vec<Warning>) {
    let workload = observed.workload();
    let mut warnings: Vec<Warning> = Vec::new();
    let baseline = if context.settings().dry_run {
        let state = context.state();
        state
            .memos
            .get(key)
            .and_then(|memo| memo.dry_run_baseline.clone())
    } else {
        Applied::parse(workload.annotations().get(policy::APPLIED)).unwrap_or_else(|problem| {
            warnings.push(Warning::invalid_baseline(problem));
            None
        })
    };
    let mut state = context.state();
    let namespace = key.namespace.clone();
    let store = &state.store;
    let analysis = observed.analyse_with(context.settings().dialects, |kind, name| {
        store.meta(&SourceKey::new(kind, &namespace, name))
    });
    warnings.extend(
        analysis
            .warnings
            .iter()
            .cloned()
            .map(Warning::invalid_annotation),
    );
    if analysis.managed {
        for source in &analysis.sources {
            let problem = store
                .get(&SourceKey::new(source.kind, &namespace, &source.name))
                .and_then(|record| record.annotation_problem.clone());
            if let Some(problem) = problem {
                warnings.push(Warning::invalid_annotation(format!(
                    "{} {}: {problem}",
                    source.kind, source.name
                )));
            }
        }
    }
    // In a dry run another tool does the rollouts (run beside Reloader to compare Events):
    // its template patches must not count as carrying the change envroll would roll out for.
    let started_after = if context.settings().dry_run {
        PodsStartedAfter::default()
    } else {
        PodsStartedAfter {
            edit: state.edits.edited_at(key, &observed.template_fingerprint),
            rollout: state.memos.get(key).and_then(|memo| memo.rolled_out_at),
        }
    };
    let template = Template {
        fingerprint: &observed.template_fingerprint,
        started_after,
    };
    let decision = decide(&analysis, template, baseline.as_ref(), |kind, name| {
        store.view(&SourceKey::new(kind, &namespace, name))
    });
    state.index.set(key, &analysis);
    (analysis, decision, warnings)
}

/// Applies a plan: records the baseline (and, for a rollout, the new hash in the template) with
/// one patch guarded by the version the decision was made on.
async fn apply<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    analysis: &WorkloadAnalysis,
    plan: Plan,
    applied: Applied,
    warnings: &mut Vec<Warning>,
    context: &Context,
) -> Result<Action, Error> {
    match &plan {
        Plan::UpToDate => return Ok(Action::requeue(RESYNC)),
        Plan::Rebaseline(RebaselineCause::TemplateChanged) => {
            context.metrics().skipped("template_changed")
        }
        Plan::Rebaseline(RebaselineCause::TemplateEditedAfterConfig) => {
            context.metrics().skipped("template_edited_after_config")
        }
        Plan::Rebaseline(RebaselineCause::RolledOutAfterConfig) => {
            context.metrics().skipped("rolled_out_after_config")
        }
        Plan::Rebaseline(RebaselineCause::SourcesChanged) => {
            context.metrics().skipped("sources_changed")
        }
        Plan::Adopt | Plan::Rollout { .. } => {}
    }
    if !plan.rolls_out() {
        info!(workload = %key, hash = %applied.hash, "{}", plan.describe());
    }
    let mut patched_generation = None;
    if context.settings().dry_run {
        context.state().memo(key).dry_run_baseline = Some(applied.clone());
    } else {
        if plan.rolls_out() {
            match tracking::admit::<W>(key, analysis, &applied.hash, context) {
                Gate::Go => {}
                Gate::Hold => return Ok(Action::requeue(PROGRESS_POLL)),
                Gate::Throttle(wait) => {
                    warnings.push(Warning::rollout_throttled());
                    return Ok(Action::requeue(wait.clamp(CONFLICT_RETRY, RESYNC)));
                }
            }
        }
        if !context.may_patch() {
            // The lease may have passed to another replica, which decides from here on.
            warn!(workload = %key, "not patching: leadership is not provably held");
            return Ok(Action::requeue(CONFLICT_RETRY));
        }
        let api: Api<W> = Api::namespaced(context.client().clone(), &key.namespace);
        let body = patch_body(
            &applied,
            workload.meta().resource_version.as_deref(),
            plan.rolls_out(),
            workload.template_config_hash(),
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let patched = match api.patch(&key.name, &params, &Patch::Merge(&body)).await {
            Ok(patched) => patched,
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                // The workload changed under us. Its new version does not necessarily trigger a
                // reconcile (status and label updates are filtered out), so decide again soon.
                debug!(workload = %key, "conflict while patching; deciding again on the newer version");
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
            Err(source) => return Err(patch_failed(key, source, warnings, context)),
        };
        let mut state = context.state();
        let memo = state.memo(key);
        memo.patch_failures = 0;
        if plan.rolls_out() {
            memo.rolled_out_at = revision(patched.meta().resource_version.as_deref());
            patched_generation = patched.meta().generation;
        }
    }
    if let Plan::Rollout {
        changed,
        template_edited,
    } = &plan
    {
        let carried = if context.settings().dry_run {
            1
        } else {
            let generation = patched_generation.unwrap_or_default();
            let carried = tracking::started(key, generation, &applied.template, changed, context);
            report::notify::<W>(key, RolloutEvent::Triggered, changed, carried, context);
            carried
        };
        report::announce_rollout(
            workload,
            key,
            analysis,
            changed,
            *template_edited,
            carried,
            context,
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("injected", "Injected")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn failed_reads_are_labelled_by_cause() {
        assert_eq!(fetch_error_reason(&api_error(403)), "forbidden");
        assert_eq!(fetch_error_reason(&api_error(429)), "throttled");
        assert_eq!(fetch_error_reason(&api_error(500)), "server_error");
        assert_eq!(fetch_error_reason(&api_error(503)), "server_error");
        assert_eq!(fetch_error_reason(&api_error(404)), "client_error");
    }
}
