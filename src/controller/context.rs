//! The state shared by the watches and the reconciles, behind one lock that is never held across
//! an await, and the routes by which a change reaches the reconcile of a workload.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use tracing::debug;

use super::Settings;
use crate::analysis::WorkloadKind;
use crate::debounce::Pending;
use crate::leader::LeaseGuard;
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier};
use crate::rollout::Applied;
use crate::store::{ReverseIndex, SourceKey, SourceStore, TemplateEdits, WorkloadKey};
use crate::workload::{namespace_or_default, Workload};

pub(super) const FIELD_MANAGER: &str = "envroll";

pub(super) fn workload_key<W: Workload>(workload: &W) -> WorkloadKey {
    WorkloadKey {
        kind: W::KIND,
        namespace: namespace_or_default(workload.namespace()),
        name: workload.name_any(),
    }
}

/// What the operator remembers per workload between reconciles, outside the cluster.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// Warnings already published, so a workload is not flooded with the same Event.
    pub warnings: HashSet<String>,
    /// In dry-run mode the baseline cannot be written to the workload.
    pub dry_run_baseline: Option<Applied>,
    /// Reconciles in a row that waited for an unknown source.
    pub waits: u32,
    /// Patches in a row that failed with something other than a conflict.
    pub patch_failures: u32,
    /// The revision of envroll's last rollout of the workload (`PodsStartedAfter::rollout`).
    pub rolled_out_at: Option<u64>,
    /// envroll's rollout that has not finished yet.
    pub in_flight: Option<InFlight>,
    /// When envroll rolled the workload out within the last hour, for the budget.
    pub rollouts: VecDeque<Instant>,
    /// Config hashes that waited (held or throttled) since the last rollout: the next carries them.
    pub waiting: BTreeSet<String>,
}

/// A rollout envroll triggered, followed until the workload's controller finishes or gives up.
#[derive(Clone, Debug)]
pub(super) struct InFlight {
    /// The workload's generation the rollout produced.
    pub generation: i64,
    pub started: Instant,
    /// Seconds since the Unix epoch at the start, to tell the rollout's pods from older ones.
    pub started_unix: i64,
    /// The template fingerprint it rolled out; another means a user's edit took over.
    pub template: String,
    /// The labels of the sources whose change it carries, for the Events that follow.
    pub changed: Vec<String>,
    /// How many config states it carries (`tracking::started`).
    pub carried: usize,
    pub pods_checked: Option<Instant>,
}

pub(super) struct State {
    pub store: SourceStore,
    pub index: ReverseIndex,
    pub edits: TemplateEdits,
    pub pending: Pending<WorkloadKey>,
    pub memos: HashMap<WorkloadKey, Memo>,
}

impl State {
    pub fn memo(&mut self, workload: &WorkloadKey) -> &mut Memo {
        self.memos.entry(workload.clone()).or_default()
    }
}

/// Routes reconcile requests to the controller that owns a workload's kind and namespace.
#[derive(Default)]
struct Triggers {
    senders: HashMap<(WorkloadKind, Option<String>), mpsc::UnboundedSender<WorkloadKey>>,
}

impl Triggers {
    fn send(&self, workload: &WorkloadKey) {
        let namespaced = (workload.kind, Some(workload.namespace.clone()));
        let sender = self
            .senders
            .get(&namespaced)
            .or_else(|| self.senders.get(&(workload.kind, None)));
        if let Some(sender) = sender {
            let _ = sender.unbounded_send(workload.clone());
        }
    }
}

pub struct Context {
    client: Client,
    settings: Settings,
    /// Who publishes Events; each Event gets a recorder of its own (see `report::publish`).
    reporter: Reporter,
    metrics: Arc<Metrics>,
    /// Present with leader election: patches are made only while it holds.
    lease: Option<LeaseGuard>,
    state: Mutex<State>,
    triggers: Mutex<Triggers>,
    notifier: Option<Notifier>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        identity: &str,
        lease: Option<LeaseGuard>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(identity.to_string()),
        };
        let state = State {
            store: SourceStore::default(),
            index: ReverseIndex::default(),
            edits: TemplateEdits::default(),
            pending: Pending::new(settings.debounce),
            memos: HashMap::new(),
        };
        Context {
            client,
            settings,
            reporter,
            metrics,
            lease,
            state: Mutex::new(state),
            triggers: Mutex::default(),
            notifier: None,
        }
    }

    /// Sends rollout notifications (`notify`) through this notifier.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub(super) fn notify(&self, notification: Notification) {
        if let Some(notifier) = &self.notifier {
            notifier.notify(notification);
        }
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(super) fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether this replica may patch: always without leader election, else while the lease is
    /// provably held.
    pub(super) fn may_patch(&self) -> bool {
        self.lease.as_ref().is_none_or(LeaseGuard::is_held)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    pub(super) fn tracked_sources(&self) -> usize {
        self.state().store.len()
    }

    /// Opens the channel on which a controller receives reconcile requests.
    pub(super) fn open_triggers(
        &self,
        kind: WorkloadKind,
        namespace: Option<String>,
    ) -> mpsc::UnboundedReceiver<WorkloadKey> {
        let (sender, receiver) = mpsc::unbounded();
        self.triggers
            .lock()
            .expect("triggers lock")
            .senders
            .insert((kind, namespace), sender);
        receiver
    }

    /// Asks for the consumers of changed sources to be decided again, after the debounce.
    pub(super) fn sources_changed(&self, changed: &[SourceKey]) {
        if changed.is_empty() {
            return;
        }
        let now = Instant::now();
        let consumers: HashSet<WorkloadKey> = {
            let mut state = self.state();
            let consumers: HashSet<WorkloadKey> = changed
                .iter()
                .flat_map(|source| state.index.consumers(source))
                .collect();
            for workload in &consumers {
                state.pending.touch(workload, now);
            }
            consumers
        };
        let triggers = self.triggers.lock().expect("triggers lock");
        for workload in &consumers {
            debug!(%workload, "a source changed; deciding the consumer again");
            triggers.send(workload);
        }
    }

    /// The workload's spec or annotations changed: decide it after the debounce.
    pub(super) fn workload_changed(&self, workload: &WorkloadKey) {
        self.state().pending.touch(workload, Instant::now());
    }

    /// How much longer a workload's changes must settle before it is decided, if at all.
    pub(super) fn debounce_wait(&self, workload: &WorkloadKey) -> Option<Duration> {
        self.state().pending.take_due(workload, Instant::now())
    }

    pub(super) fn forget(&self, workload: &WorkloadKey) {
        let managed = {
            let mut state = self.state();
            state.index.remove(workload);
            state.edits.forget(workload);
            state.pending.forget(workload);
            state.memos.remove(workload);
            state.index.workloads()
        };
        self.metrics.set_managed_workloads(managed);
    }
}
