//! Prometheus metrics and the readiness flag served by `server`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    kind: String,
    namespace: String,
    source_kind: String,
    dry_run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    sink: String,
    event: String,
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    rollouts: Family<RolloutLabels, Counter>,
    skipped: Family<ReasonLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    watch_events: Family<WatchLabels, Counter>,
    watch_errors: Family<WatchLabels, Counter>,
    source_fetches: Family<WatchLabels, Counter>,
    source_fetch_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    rollout_duration: Family<WatchLabels, Histogram>,
    rollouts_stalled: Family<WatchLabels, Counter>,
    rollouts_held: Family<WatchLabels, Counter>,
    rollouts_throttled: Family<WatchLabels, Counter>,
    managed_workloads: Gauge,
    tracked_sources: Gauge,
    notifications: Family<NotificationLabels, Counter>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("envroll");
        let rollouts = Family::<RolloutLabels, Counter>::default();
        let skipped = Family::<ReasonLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let watch_events = Family::<WatchLabels, Counter>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let source_fetches = Family::<WatchLabels, Counter>::default();
        let source_fetch_errors = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let rollout_duration = Family::<WatchLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 12))) as fn() -> Histogram,
        );
        let rollouts_stalled = Family::<WatchLabels, Counter>::default();
        let rollouts_held = Family::<WatchLabels, Counter>::default();
        let rollouts_throttled = Family::<WatchLabels, Counter>::default();
        let managed_workloads = Gauge::default();
        let tracked_sources = Gauge::default();
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "rollouts",
            "Rollouts triggered, by workload kind, namespace and the kind of source that changed",
            rollouts.clone(),
        );
        registry.register(
            "skipped_changes",
            "Changes that did not roll a workload out, by reason",
            skipped.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error type",
            reconcile_errors.clone(),
        );
        registry.register(
            "watch_events",
            "Watch events received, by kind",
            watch_events.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch errors, by kind",
            watch_errors.clone(),
        );
        registry.register(
            "source_fetches",
            "Reads of a consumed source's data (Secrets are watched by metadata only), by kind",
            source_fetches.clone(),
        );
        registry.register(
            "source_fetch_errors",
            "Failed reads of a consumed source's data, by reason; its consumers wait and retry",
            source_fetch_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent deciding and applying one workload",
            reconcile_duration.clone(),
        );
        registry.register(
            "rollout_duration_seconds",
            "Time from envroll's rollout to the workload's new pods being available, by kind",
            rollout_duration.clone(),
        );
        registry.register(
            "rollouts_stalled",
            "Rollouts envroll triggered that did not finish (deadline passed or new pods failing), by kind",
            rollouts_stalled.clone(),
        );
        registry.register(
            "rollouts_held",
            "Changes that waited for a rollout envroll triggered to finish, to join the next one, by kind",
            rollouts_held.clone(),
        );
        registry.register(
            "rollouts_throttled",
            "Changes that waited because the workload used its rollouts per hour, by kind",
            rollouts_throttled.clone(),
        );
        registry.register(
            "managed_workloads",
            "Workloads that opted in to envroll",
            managed_workloads.clone(),
        );
        registry.register(
            "tracked_sources",
            "ConfigMaps and Secrets known (a Secret by its metadata until a managed workload consumes it)",
            tracked_sources.clone(),
        );
        registry.register(
            "notifications",
            "Rollout notifications, by sink, event and outcome: delivered, failed (after its retries) or dropped (the sink's queue was full)",
            notifications.clone(),
        );
        Metrics {
            registry,
            rollouts,
            skipped,
            reconcile_errors,
            watch_events,
            watch_errors,
            source_fetches,
            source_fetch_errors,
            reconcile_duration,
            rollout_duration,
            rollouts_stalled,
            rollouts_held,
            rollouts_throttled,
            managed_workloads,
            tracked_sources,
            notifications,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn rollout(&self, kind: &str, namespace: &str, source_kind: &str, dry_run: bool) {
        self.rollouts
            .get_or_create(&RolloutLabels {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                source_kind: source_kind.to_string(),
                dry_run: dry_run.to_string(),
            })
            .inc();
    }

    pub fn rollout_finished(&self, kind: &str, duration: Duration) {
        self.rollout_duration
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .observe(duration.as_secs_f64());
    }

    pub fn rollout_stalled(&self, kind: &str) {
        self.rollouts_stalled
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn rollout_held(&self, kind: &str) {
        self.rollouts_held
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn rollout_throttled(&self, kind: &str) {
        self.rollouts_throttled
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn skipped(&self, reason: &str) {
        self.skipped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn reconcile_error(&self, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: error.to_string(),
            })
            .inc();
    }

    pub fn watch_event(&self, kind: &str) {
        self.watch_events
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn watch_error(&self, kind: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn source_fetch(&self, kind: &str) {
        self.source_fetches
            .get_or_create(&WatchLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn source_fetch_error(&self, reason: &str) {
        self.source_fetch_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn notification(&self, sink: &str, event: &str, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                sink: sink.to_string(),
                event: event.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    pub fn set_managed_workloads(&self, count: usize) {
        self.managed_workloads.set(count as i64);
    }

    pub fn set_tracked_sources(&self, count: usize) {
        self.tracked_sources.set(count as i64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let metrics = Metrics::default();
        metrics.rollout("Deployment", "shop", "ConfigMap", false);
        metrics.skipped("template_changed");
        metrics.reconcile_error("patch");
        metrics.set_managed_workloads(3);
        metrics.source_fetch("Secret");
        metrics.source_fetch_error("throttled");
        metrics.notification("slack", "stalled", "delivered");
        let text = metrics.encode();
        assert!(
            text.contains("envroll_rollouts_total{kind=\"Deployment\",namespace=\"shop\",source_kind=\"ConfigMap\",dry_run=\"false\"} 1"),
            "{text}"
        );
        assert!(text.contains("envroll_skipped_changes_total{reason=\"template_changed\"} 1"));
        assert!(text.contains("envroll_reconcile_errors_total{error=\"patch\"} 1"));
        assert!(text.contains("envroll_managed_workloads 3"));
        assert!(text.contains("envroll_source_fetches_total{kind=\"Secret\"} 1"));
        assert!(text.contains("envroll_source_fetch_errors_total{reason=\"throttled\"} 1"));
        assert!(text.contains("envroll_reconcile_duration_seconds_bucket"));
        assert!(text.contains(
            "envroll_notifications_total{sink=\"slack\",event=\"stalled\",outcome=\"delivered\"} 1"
        ));
    }
}
