use proptest::prelude::*;

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

/// A Deployment of three replicas whose rollout of generation 2 has finished.
fn finished() -> RolloutStatus {
    RolloutStatus {
        generation: 2,
        observed_generation: 2,
        desired: 3,
        updated: 3,
        available: 3,
        total: 3,
        ..RolloutStatus::default()
    }
}

#[test]
fn a_finished_rollout_is_done() {
    assert_eq!(progress(&finished(), 2, MINUTE), Progress::Done);
}

#[test]
fn a_rollout_is_in_progress_until_every_pod_is_new_and_available() {
    let cases = [
        RolloutStatus {
            observed_generation: 1,
            ..finished()
        },
        RolloutStatus {
            updated: 2,
            ..finished()
        },
        RolloutStatus {
            total: 4,
            ..finished()
        },
        RolloutStatus {
            available: 2,
            ..finished()
        },
        RolloutStatus {
            revisions_differ: true,
            ..finished()
        },
    ];
    for status in cases {
        assert_eq!(
            progress(&status, 2, MINUTE),
            Progress::InProgress,
            "{status:?}"
        );
    }
}

#[test]
fn a_users_edit_on_top_must_finish_too() {
    let status = RolloutStatus {
        generation: 3,
        ..finished()
    };
    assert_eq!(progress(&status, 2, MINUTE), Progress::InProgress);
    let status = RolloutStatus {
        generation: 3,
        observed_generation: 3,
        ..finished()
    };
    assert_eq!(progress(&status, 2, MINUTE), Progress::Done);
}

#[test]
fn a_partitioned_statefulset_is_done_when_the_pods_above_the_partition_are_new() {
    let status = RolloutStatus {
        partition: 2,
        updated: 1,
        revisions_differ: true,
        ..finished()
    };
    assert_eq!(progress(&status, 2, MINUTE), Progress::Done);
    let status = RolloutStatus {
        partition: 1,
        updated: 1,
        revisions_differ: true,
        ..finished()
    };
    assert_eq!(progress(&status, 2, MINUTE), Progress::InProgress);
}

#[test]
fn on_delete_and_paused_wait_for_nobody_once_observed() {
    let status = RolloutStatus {
        waits_for_user: true,
        updated: 0,
        ..finished()
    };
    assert_eq!(progress(&status, 2, MINUTE), Progress::Done);
    assert_eq!(progress(&status, 3, MINUTE), Progress::InProgress);
}

#[test]
fn a_deployment_past_its_deadline_is_stalled_with_its_message() {
    let status = RolloutStatus {
        available: 2,
        deadline_exceeded: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
        ..finished()
    };
    assert_eq!(
        progress(&status, 2, MINUTE),
        Progress::Stalled("ReplicaSet \"web-1\" has timed out progressing.".into())
    );
    // A deadline exceeded by an older generation says nothing about this rollout.
    assert_eq!(progress(&status, 3, MINUTE), Progress::InProgress);
}

#[test]
fn kinds_without_a_deadline_get_envrolls_own() {
    let status = RolloutStatus {
        available: 2,
        own_deadline: Some(10 * MINUTE),
        ..finished()
    };
    assert_eq!(progress(&status, 2, 9 * MINUTE), Progress::InProgress);
    assert_eq!(
        progress(&status, 2, 10 * MINUTE),
        Progress::Stalled("no complete rollout within 600s".into())
    );
    let done = RolloutStatus {
        own_deadline: Some(10 * MINUTE),
        ..finished()
    };
    assert_eq!(progress(&done, 2, 11 * MINUTE), Progress::Done);
}

#[test]
fn failing_pods_are_told_from_starting_ones() {
    assert_eq!(
        failing_reason(["ContainerCreating", "CrashLoopBackOff"]),
        Some("CrashLoopBackOff")
    );
    assert_eq!(
        failing_reason(["CreateContainerConfigError"]),
        Some("CreateContainerConfigError")
    );
    assert_eq!(
        failing_reason(["ContainerCreating", "PodInitializing"]),
        None
    );
    assert_eq!(failing_reason([]), None);
}

#[test]
fn a_budget_counts_the_last_hour_only() {
    let start = Instant::now();
    let budget = Budget::per_hour(2);
    let mut rollouts: VecDeque<Instant> = [start, start + 10 * MINUTE].into();
    assert_eq!(
        budget.wait(&mut rollouts, start + 20 * MINUTE),
        Some(40 * MINUTE)
    );
    assert_eq!(budget.wait(&mut rollouts, start + 60 * MINUTE), None);
    assert_eq!(rollouts.len(), 1, "the rollout an hour old is forgotten");
    assert_eq!(
        Budget::per_hour(0).wait(&mut [start; 100].into(), start),
        None,
        "0 is no limit"
    );
}

#[test]
fn a_rollout_in_progress_holds_before_the_budget_is_asked() {
    let now = Instant::now();
    let budget = Budget::per_hour(1);
    assert_eq!(gate(true, budget, &mut VecDeque::new(), now), Gate::Hold);
    assert_eq!(gate(false, budget, &mut VecDeque::new(), now), Gate::Go);
    assert_eq!(
        gate(false, budget, &mut [now].into(), now),
        Gate::Throttle(60 * MINUTE)
    );
}

proptest! {
    /// However the rollouts are spread, no hour ever holds more than the budget allows when
    /// every rollout waits for the gate.
    #[test]
    fn the_budget_is_never_exceeded(
        limit in 1u32..6,
        attempts in proptest::collection::vec(0u64..7200, 1..60),
    ) {
        let start = Instant::now();
        let budget = Budget::per_hour(limit);
        let mut attempts = attempts;
        attempts.sort_unstable();
        let mut rollouts = VecDeque::new();
        let mut done: Vec<u64> = Vec::new();
        for at in attempts {
            let now = start + Duration::from_secs(at);
            if budget.wait(&mut rollouts, now).is_none() {
                rollouts.push_back(now);
                done.push(at);
            }
        }
        for (i, first) in done.iter().enumerate() {
            let in_hour = done[i..].iter().take_while(|at| **at < first + 3600).count();
            prop_assert!(in_hour <= limit as usize, "{done:?}");
        }
    }
}
