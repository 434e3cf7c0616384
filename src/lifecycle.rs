//! What happens to a rollout after envroll triggered it, from plain values: whether the
//! workload's own controller has finished it, given up on it, or is still at it; whether another
//! rollout may start now (never on top of one in progress, and at most so many an hour); which
//! pod states mean the new pods keep failing. Pure: the controller reads the workload's status
//! and its pods, and acts on the answers.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The status fields of a Deployment, StatefulSet or DaemonSet that tell how far its rollout is,
/// in one shape (`workload::Workload::rollout_status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutStatus {
    pub generation: i64,
    pub observed_generation: i64,
    /// Pods the workload wants (`spec.replicas`, or the nodes a DaemonSet should run on).
    pub desired: i32,
    /// Pods of the current template.
    pub updated: i32,
    /// Pods of the current template that are available (ready, for a StatefulSet).
    pub available: i32,
    /// Pods of any template still running, for a Deployment (old ones not yet scaled down).
    pub total: i32,
    /// A StatefulSet's partition: pods below this ordinal keep the old template.
    pub partition: i32,
    /// A StatefulSet that has not moved every pod to its update revision.
    pub revisions_differ: bool,
    /// `OnDelete`, or a paused Deployment: the template change replaces nothing until someone
    /// acts, so there is nothing to wait for.
    pub waits_for_user: bool,
    /// A Deployment whose controller has given up (`ProgressDeadlineExceeded`), with its message.
    pub deadline_exceeded: Option<String>,
    /// For kinds whose controller never gives up (StatefulSet, DaemonSet): how long envroll
    /// waits before it calls the rollout stalled.
    pub own_deadline: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    InProgress,
    Done,
    /// The workload's controller reports that the rollout will not finish by itself.
    Stalled(String),
}

/// How far the rollout that produced `generation`, started `elapsed` ago, has come. A newer
/// generation (a user's edit on top) finishing finishes it too: its pods read at least as new a
/// config.
pub fn progress(status: &RolloutStatus, generation: i64, elapsed: Duration) -> Progress {
    if let Some(message) = &status.deadline_exceeded {
        if status.observed_generation >= generation {
            return Progress::Stalled(message.clone());
        }
    }
    if status.waits_for_user && status.observed_generation >= generation {
        return Progress::Done;
    }
    let in_progress = status.observed_generation < generation.max(status.generation)
        || status.updated < (status.desired - status.partition).max(0)
        // Pods of an older template beyond the partitioned ones are still running.
        || status.total > status.updated + status.partition
        || status.available < status.desired
        || (status.partition == 0 && status.revisions_differ);
    if !in_progress {
        return Progress::Done;
    }
    match status.own_deadline {
        Some(deadline) if elapsed >= deadline => Progress::Stalled(format!(
            "no complete rollout within {}s",
            deadline.as_secs()
        )),
        _ => Progress::InProgress,
    }
}

/// Waiting reasons of a container that will not start without someone changing something.
const FAILING_REASONS: [&str; 7] = [
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "RunContainerError",
];

/// The first reason that says a pod's containers keep failing, from the waiting reasons of its
/// containers (init containers included).
pub fn failing_reason<'a>(waiting_reasons: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    waiting_reasons
        .into_iter()
        .find(|reason| FAILING_REASONS.contains(reason))
}

/// How many rollouts envroll may trigger for one workload within an hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    per_hour: Option<NonZeroU32>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Budget {
    /// `0` means no limit.
    pub fn per_hour(limit: u32) -> Self {
        Budget {
            per_hour: NonZeroU32::new(limit),
        }
    }

    pub fn limit(&self) -> Option<u32> {
        self.per_hour.map(NonZeroU32::get)
    }

    /// Forgets rollouts older than an hour and says how long until the next one is allowed
    /// (`None`: now).
    pub fn wait(&self, rollouts: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
        while rollouts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= HOUR)
        {
            rollouts.pop_front();
        }
        let limit = self.per_hour?.get() as usize;
        if rollouts.len() < limit {
            return None;
        }
        let oldest_that_counts = rollouts[rollouts.len() - limit];
        Some((oldest_that_counts + HOUR).saturating_duration_since(now))
    }
}

/// Whether a rollout the decision asks for may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// A rollout envroll triggered is still in progress: the change waits for it and joins the
    /// next rollout.
    Hold,
    /// The workload used its budget: the change waits this long.
    Throttle(Duration),
}

pub fn gate(
    in_progress: bool,
    budget: Budget,
    rollouts: &mut VecDeque<Instant>,
    now: Instant,
) -> Gate {
    if in_progress {
        return Gate::Hold;
    }
    match budget.wait(rollouts, now) {
        Some(wait) => Gate::Throttle(wait),
        None => Gate::Go,
    }
}

#[cfg(test)]
mod tests;
