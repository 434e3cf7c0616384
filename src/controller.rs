//! The operator: watches, the source store and reverse index, reconcile, patches and Events.
//!
//! Decisions are not made here: `analysis` says what is consumed and how, `hash` what the config
//! hash is, `rollout` what to do about it. This module only feeds them and applies the plan.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::analysis::{SourceKind, WorkloadAnalysis, WorkloadKind};
use crate::hash::{source_label, MissingRequired, WorkloadHash};
use crate::metrics::Metrics;
use crate::policy;
use crate::rollout::{patch_body, plan, Applied, Plan, RebaselineCause};
use crate::store::{
    Evaluation, ReverseIndex, SourceKey, SourceObject, SourceRecord, SourceStore, WorkloadKey,
};
use crate::workload::{namespace_or_default, Workload};

/// Secrets Helm uses to store releases: large, never consumed by applications, and the reason
/// operators that cache every Secret run out of memory. They are filtered out by the API server.
const HELM_RELEASE_SECRETS: &str = "type!=helm.sh/release.v1";
/// How Helm names its release Secrets, to explain why one of them looks missing.
const HELM_RELEASE_PREFIX: &str = "sh.helm.release.v1.";
/// Small list pages keep the transient memory of the initial list low, whatever the Secret sizes.
const LIST_PAGE_SIZE: u32 = 100;
/// Level-triggered safety net: every workload is re-evaluated this often even without events.
const RESYNC: Duration = Duration::from_secs(600);
/// A patch that lost a race with another writer is decided again this soon on the newer version.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);
const FIELD_MANAGER: &str = "envroll";

/// Where the operator looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// `None` stands for every namespace.
    fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            Scope::Cluster => vec![None],
            Scope::Namespaces(names) => names.iter().cloned().map(Some).collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::Cluster => "all namespaces (cluster-wide)".to_string(),
            Scope::Namespaces(names) => format!(
                "namespaces {} only; workloads and sources in any other namespace are ignored",
                names.join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub scope: Scope,
    pub dry_run: bool,
    pub debounce: Duration,
    pub concurrency: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching {workload} failed: {source}")]
    Patch {
        workload: String,
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

/// What the operator remembers per workload between reconciles, outside the cluster.
#[derive(Debug, Default)]
struct Memo {
    /// Warnings already published, so a workload is not flooded with the same Event.
    warnings: HashSet<String>,
    /// In dry-run mode the baseline cannot be written to the workload.
    dry_run_baseline: Option<Applied>,
}

/// Routes reconcile requests to the controller that owns a workload's kind and namespace.
#[derive(Default)]
struct Triggers {
    senders: HashMap<(WorkloadKind, Option<String>), mpsc::UnboundedSender<WorkloadKey>>,
}

impl Triggers {
    fn open(
        &mut self,
        kind: WorkloadKind,
        namespace: Option<String>,
    ) -> mpsc::UnboundedReceiver<WorkloadKey> {
        let (sender, receiver) = mpsc::unbounded();
        self.senders.insert((kind, namespace), sender);
        receiver
    }

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

/// State shared by the watchers and the reconcilers.
pub struct Shared {
    client: Client,
    settings: Settings,
    /// Who publishes Events; each Event gets a recorder of its own (see `publish`).
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    store: RwLock<SourceStore>,
    index: RwLock<ReverseIndex>,
    triggers: RwLock<Triggers>,
    memos: Mutex<HashMap<WorkloadKey, Memo>>,
    /// Sources that cannot be read at all (RBAC), by kind and namespace (`None`: cluster-wide).
    unreadable: RwLock<HashMap<(SourceKind, Option<String>), String>>,
}

impl Shared {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, identity: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(identity.to_string()),
        };
        Shared {
            reporter,
            client,
            settings,
            metrics,
            store: RwLock::default(),
            index: RwLock::default(),
            triggers: RwLock::default(),
            memos: Mutex::default(),
            unreadable: RwLock::default(),
        }
    }

    fn trigger_consumers(&self, source: &SourceKey) {
        let consumers = self.index.read().expect("index lock").consumers(source);
        let triggers = self.triggers.read().expect("triggers lock");
        for workload in consumers {
            debug!(source = ?source, workload = ?workload, "source changed, reconciling consumer");
            triggers.send(&workload);
        }
    }

    fn unreadable_reason(&self, kind: SourceKind, namespace: &str) -> Option<String> {
        let unreadable = self.unreadable.read().expect("unreadable lock");
        unreadable
            .get(&(kind, Some(namespace.to_string())))
            .or_else(|| unreadable.get(&(kind, None)))
            .cloned()
    }
}

/// Runs the operator until `shutdown` resolves. Sources are fully listed before any workload is
/// reconciled, so a restart never mistakes a not-yet-seen object for a missing one.
pub async fn run(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    info!(scope = %shared.settings.scope.describe(), dry_run = shared.settings.dry_run, "envroll watching");
    let mut ready = Vec::new();
    let mut tasks = Vec::new();
    for namespace in shared.settings.scope.namespaces() {
        let (config_maps, secrets) = (
            api_for::<ConfigMap>(&shared.client, &namespace),
            api_for::<PartialObjectMeta<Secret>>(&shared.client, &namespace),
        );
        let config_map_watch = watcher::Config::default().page_size(LIST_PAGE_SIZE);
        let secret_watch = config_map_watch.clone().fields(HELM_RELEASE_SECRETS);
        for (task, done) in [
            spawn_source_watch::<ConfigMapData>(
                config_maps,
                config_map_watch,
                namespace.clone(),
                shared.clone(),
            ),
            spawn_source_watch::<SecretMetadata>(
                secrets,
                secret_watch,
                namespace.clone(),
                shared.clone(),
            ),
        ] {
            tasks.push(task);
            ready.push(done);
        }
    }
    let mut stop = shutdown.clone();
    tokio::select! {
        _ = futures::future::join_all(ready) => {}
        _ = stop.wait_for(|stop| *stop) => {
            info!("stopped before the initial list completed");
            tasks.iter().for_each(|task| task.abort());
            return;
        }
    }
    info!(
        sources = shared.store.read().expect("store lock").len(),
        "initial list of ConfigMaps and Secrets complete; reconciling workloads"
    );
    let mut controllers = Vec::new();
    for namespace in shared.settings.scope.namespaces() {
        controllers.push(tokio::spawn(run_controller::<Deployment>(
            shared.clone(),
            namespace.clone(),
            shutdown.clone(),
        )));
        controllers.push(tokio::spawn(run_controller::<StatefulSet>(
            shared.clone(),
            namespace.clone(),
            shutdown.clone(),
        )));
        controllers.push(tokio::spawn(run_controller::<DaemonSet>(
            shared.clone(),
            namespace.clone(),
            shutdown.clone(),
        )));
    }
    shared.metrics.set_ready(true);
    for controller in controllers {
        let _ = controller.await;
    }
    for task in tasks {
        task.abort();
    }
}

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What loading an added or changed source gave.
enum Loaded {
    Record(SourceRecord),
    /// No workload consumes it: nothing of it is kept.
    NotNeeded,
    /// Reading it failed; the record already kept (if any) stays until the next event.
    Failed,
}

/// How one kind of source is watched and reduced to records.
trait SourceWatch: Send + Sync + 'static {
    type Object: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + 'static;
    const KIND: SourceKind;

    fn key(object: &Self::Object) -> SourceKey {
        let metadata = object.meta();
        SourceKey::new(
            Self::KIND,
            &namespace_or_default(metadata.namespace.clone()),
            metadata.name.as_deref().unwrap_or_default(),
        )
    }

    fn load(
        object: Self::Object,
        shared: &Shared,
    ) -> impl std::future::Future<Output = Loaded> + Send;
}

/// ConfigMaps are small: each one is digested as it arrives.
struct ConfigMapData;

impl SourceWatch for ConfigMapData {
    type Object = ConfigMap;
    const KIND: SourceKind = SourceKind::ConfigMap;

    async fn load(object: ConfigMap, _: &Shared) -> Loaded {
        Loaded::Record(object.into_record().1)
    }
}

/// Secrets can be large (certificates, bundles, Helm-style payloads): the watch carries only
/// their metadata, and a Secret's data is fetched only while a workload consumes it. Memory and
/// traffic then follow the consumed Secrets, not every Secret in the cluster.
struct SecretMetadata;

impl SourceWatch for SecretMetadata {
    type Object = PartialObjectMeta<Secret>;
    const KIND: SourceKind = SourceKind::Secret;

    async fn load(object: PartialObjectMeta<Secret>, shared: &Shared) -> Loaded {
        let key = Self::key(&object);
        if shared
            .index
            .read()
            .expect("index lock")
            .consumers(&key)
            .is_empty()
        {
            return Loaded::NotNeeded;
        }
        let version = object.metadata.resource_version;
        let known = shared
            .store
            .read()
            .expect("store lock")
            .get_key(&key)
            .cloned();
        match known {
            Some(record) if version.is_some() && record.resource_version == version => {
                Loaded::Record(record)
            }
            _ => shared.fetch_secret(&key).await,
        }
    }
}

impl Shared {
    async fn fetch_secret(&self, key: &SourceKey) -> Loaded {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(secret)) => Loaded::Record(secret.into_record().1),
            Ok(None) => Loaded::NotNeeded,
            Err(problem) => {
                warn!(secret = %format!("{}/{}", key.namespace, key.name), error = %problem, "cannot read Secret");
                Loaded::Failed
            }
        }
    }

    /// Fetches the Secrets a workload consumes that the store has not loaded yet: at start-up,
    /// and when a workload starts to reference a Secret nobody consumed before.
    async fn load_consumed_secrets(&self, analysis: &WorkloadAnalysis) {
        let wanted: Vec<SourceKey> = {
            let store = self.store.read().expect("store lock");
            analysis
                .sources
                .iter()
                .filter(|source| source.kind == SourceKind::Secret)
                .map(|source| SourceKey::new(SourceKind::Secret, &analysis.namespace, &source.name))
                .filter(|key| store.get_key(key).is_none())
                .collect()
        };
        for key in wanted {
            if let Loaded::Record(record) = self.fetch_secret(&key).await {
                self.store.write().expect("store lock").upsert(key, record);
            }
        }
    }
}

fn spawn_source_watch<S: SourceWatch>(
    api: Api<S::Object>,
    config: watcher::Config,
    namespace: Option<String>,
    shared: Arc<Shared>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (ready, done) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(watch_sources::<S>(api, config, namespace, shared, ready));
    (task, done)
}

/// Keeps the source store in step with one watch, and triggers the consumers of every source
/// whose digests or metadata really changed.
async fn watch_sources<S: SourceWatch>(
    api: Api<S::Object>,
    config: watcher::Config,
    namespace: Option<String>,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let scope_name = namespace.clone().unwrap_or_else(|| "all namespaces".into());
    let mut ready = Some(ready);
    let mut listed: Option<HashSet<SourceKey>> = None;
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(problem) => {
                shared.metrics.watch_error(S::KIND.as_str());
                if is_forbidden(&problem) {
                    let message = format!(
                        "cannot list {}s in {scope_name}: forbidden by RBAC",
                        S::KIND
                    );
                    error!(kind = %S::KIND, namespace = %scope_name, "{message}");
                    shared
                        .unreadable
                        .write()
                        .expect("unreadable lock")
                        .insert((S::KIND, namespace.clone()), message);
                    // Start anyway: workloads that need these sources get a Warning Event.
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                } else {
                    warn!(kind = %S::KIND, namespace = %scope_name, error = %problem, "watch failed; retrying");
                }
                continue;
            }
        };
        shared.metrics.watch_event(S::KIND.as_str());
        let changed: Vec<SourceKey> = match event {
            watcher::Event::Init => {
                listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let key = S::key(&object);
                if let Some(listed) = listed.as_mut() {
                    listed.insert(key.clone());
                }
                let loaded = S::load(object, &shared).await;
                let mut store = shared.store.write().expect("store lock");
                let changed = match loaded {
                    Loaded::Record(record) => store.upsert(key.clone(), record),
                    // Nobody consumes it, so nobody needs a trigger.
                    Loaded::NotNeeded => {
                        store.remove(&key);
                        false
                    }
                    Loaded::Failed => false,
                };
                if changed {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::Delete(object) => {
                let key = S::key(&object);
                let removed = shared.store.write().expect("store lock").remove(&key);
                if removed {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::InitDone => {
                let listed = listed.take().unwrap_or_default();
                let gone = shared.store.write().expect("store lock").retain_listed(
                    S::KIND,
                    namespace.as_deref(),
                    &listed,
                );
                shared
                    .unreadable
                    .write()
                    .expect("unreadable lock")
                    .remove(&(S::KIND, namespace.clone()));
                if let Some(ready) = ready.take() {
                    info!(kind = %S::KIND, namespace = %scope_name, objects = listed.len(), "listed");
                    let _ = ready.send(());
                }
                gone
            }
        };
        for key in &changed {
            shared.trigger_consumers(key);
        }
        let store = shared.store.read().expect("store lock");
        shared.metrics.set_tracked_sources(store.len());
    }
}

fn is_forbidden(problem: &watcher::Error) -> bool {
    match problem {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// What triggers a reconcile from the workload's own watch: spec changes (generation) and
/// annotation changes. Status updates during a rollout do not, which keeps the debounce from
/// being pushed back by the rollout envroll itself caused.
fn relevant_change<W: Resource>(workload: &W) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    workload.meta().generation.hash(&mut hasher);
    workload.meta().annotations.hash(&mut hasher);
    workload.meta().uid.hash(&mut hasher);
    Some(hasher.finish())
}

async fn run_controller<W: Workload>(
    shared: Arc<Shared>,
    namespace: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let triggers = shared
        .triggers
        .write()
        .expect("triggers lock")
        .open(W::KIND, namespace.clone());
    let api = api_for::<W>(&shared.client, &namespace);
    let (reader, writer) = reflector::store::<W>();
    let forget = shared.clone();
    let workloads = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(forget_unused_fields)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(workload)) = event {
                forget.forget(&workload_key(workload));
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change::<W>, PredicateConfig::default());
    let requests =
        triggers.map(|key: WorkloadKey| ObjectRef::<W>::new(&key.name).within(&key.namespace));
    let config = controller::Config::default()
        .debounce(shared.settings.debounce)
        .concurrency(shared.settings.concurrency);
    let on_result = shared.clone();
    Controller::for_stream(workloads, reader)
        .reconcile_on(requests)
        .with_config(config)
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run(reconcile::<W>, error_policy::<W>, shared)
        .for_each(move |result| {
            if let Err(controller::Error::ObjectNotFound(object)) = &result {
                // A trigger for a workload deleted while its watch was down.
                on_result.forget(&WorkloadKey {
                    kind: W::KIND,
                    namespace: object.namespace.clone().unwrap_or_default(),
                    name: object.name.clone(),
                });
            }
            futures::future::ready(())
        })
        .await;
}

/// The cached copy of a workload keeps what decisions need (metadata and the pod template):
/// field-manager bookkeeping and kubectl's copy of the last applied manifest are dropped, as they
/// can be as large as the workload itself.
fn forget_unused_fields<W: Workload>(workload: &mut W) {
    workload.managed_fields_mut().clear();
    workload
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

fn workload_key<W: Workload>(workload: &W) -> WorkloadKey {
    WorkloadKey {
        kind: W::KIND,
        namespace: namespace_or_default(workload.namespace()),
        name: workload.name_any(),
    }
}

impl Shared {
    fn forget(&self, workload: &WorkloadKey) {
        self.index.write().expect("index lock").remove(workload);
        self.memos.lock().expect("memo lock").remove(workload);
        self.metrics.set_managed_workloads(self.count_managed());
    }

    fn count_managed(&self) -> usize {
        self.index.read().expect("index lock").workloads().count()
    }
}

fn error_policy<W: Workload>(workload: Arc<W>, error: &Error, shared: Arc<Shared>) -> Action {
    shared.metrics.reconcile_error(error.metric_label());
    warn!(workload = %describe(&workload_key(&*workload)), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn describe(workload: &WorkloadKey) -> String {
    format!("{} {}/{}", workload.kind, workload.namespace, workload.name)
}

/// One problem worth a Warning Event, with the Event's reason.
struct Warning {
    reason: &'static str,
    message: String,
}

/// Everything read from the store for one reconcile, taken under one lock.
struct Assessment {
    analysis: WorkloadAnalysis,
    hash: Result<WorkloadHash, MissingRequired>,
    warnings: Vec<Warning>,
}

fn assess<W: Workload>(workload: &W, shared: &Shared) -> Assessment {
    let store = shared.store.read().expect("store lock");
    let namespace = namespace_or_default(workload.namespace());
    let Evaluation { analysis, hash } = store.evaluate(workload);
    let mut warnings: Vec<Warning> = analysis
        .warnings
        .iter()
        .map(|message| Warning {
            reason: "InvalidAnnotation",
            message: message.clone(),
        })
        .collect();
    if analysis.managed {
        for source in &analysis.sources {
            if let Some(problem) = store
                .get(source.kind, &namespace, &source.name)
                .and_then(|r| r.annotation_problem.clone())
            {
                warnings.push(Warning {
                    reason: "InvalidAnnotation",
                    message: format!("{} {}: {problem}", source.kind, source.name),
                });
            }
        }
    }
    Assessment {
        analysis,
        hash,
        warnings,
    }
}

async fn reconcile<W: Workload>(workload: Arc<W>, shared: Arc<Shared>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = workload_key(&*workload);
    // Indexed before the Secrets are fetched, so a change to one of them meanwhile is loaded by
    // its watch instead of being dropped as unconsumed.
    let first_look = shared
        .store
        .read()
        .expect("store lock")
        .evaluate(&*workload);
    shared
        .index
        .write()
        .expect("index lock")
        .set(&key, &first_look.analysis);
    shared.load_consumed_secrets(&first_look.analysis).await;
    let Assessment {
        analysis,
        hash,
        mut warnings,
    } = assess(&*workload, &shared);
    shared
        .index
        .write()
        .expect("index lock")
        .set(&key, &analysis);
    shared.metrics.set_managed_workloads(shared.count_managed());

    let result = if analysis.managed {
        decide_and_apply(&*workload, &key, &analysis, hash, &mut warnings, &shared).await
    } else {
        Ok(Outcome::Done)
    };
    publish_new_warnings(&*workload, &key, warnings, &shared).await;
    shared.metrics.observe_reconcile(started.elapsed());
    result.map(next_action)
}

/// What became of a reconcile's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Applied, or nothing to apply.
    Done,
    /// The workload changed between the read and the patch: nothing was applied.
    Conflict,
}

fn next_action(outcome: Outcome) -> Action {
    match outcome {
        Outcome::Done => Action::requeue(RESYNC),
        Outcome::Conflict => Action::requeue(CONFLICT_RETRY),
    }
}

async fn decide_and_apply<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    analysis: &WorkloadAnalysis,
    hash: Result<WorkloadHash, MissingRequired>,
    warnings: &mut Vec<Warning>,
    shared: &Shared,
) -> Result<Outcome, Error> {
    let unreadable: Vec<String> = analysis
        .rollout_sources()
        .filter_map(|source| shared.unreadable_reason(source.kind, &analysis.namespace))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !unreadable.is_empty() {
        for message in unreadable {
            warnings.push(Warning {
                reason: "SourceUnreadable",
                message: format!("{message}; not rolling out until it can be read"),
            });
        }
        shared.metrics.skipped("unreadable");
        return Ok(Outcome::Done);
    }
    let hash = match hash {
        Ok(hash) => hash,
        Err(missing) => {
            for (kind, name) in missing.sources {
                let unwatched =
                    if kind == SourceKind::Secret && name.starts_with(HELM_RELEASE_PREFIX) {
                        " (Helm release Secrets are not watched)"
                    } else {
                        ""
                    };
                warnings.push(Warning {
                    reason: "SourceMissing",
                    message: format!(
                        "{kind} {name} is missing and not optional{unwatched}; not rolling out, new pods would fail with CreateContainerConfigError"
                    ),
                });
            }
            shared.metrics.skipped("missing_required");
            return Ok(Outcome::Done);
        }
    };
    let template = workload.template().cloned().unwrap_or_default();
    let current = Applied::current(&hash, &template);
    let baseline = if shared.settings.dry_run {
        shared
            .memos
            .lock()
            .expect("memo lock")
            .get(key)
            .and_then(|memo| memo.dry_run_baseline.clone())
    } else {
        match Applied::parse(workload.annotations().get(policy::APPLIED)) {
            Ok(baseline) => baseline,
            Err(problem) => {
                warnings.push(Warning {
                    reason: "InvalidAnnotation",
                    message: format!("{problem}; adopting the current state without a rollout"),
                });
                None
            }
        }
    };
    let decision = plan(baseline.as_ref(), &current);
    match &decision {
        Plan::UpToDate => return Ok(Outcome::Done),
        Plan::Rebaseline(RebaselineCause::TemplateChanged) => {
            shared.metrics.skipped("template_changed")
        }
        Plan::Rebaseline(RebaselineCause::SourcesChanged) => {
            shared.metrics.skipped("sources_changed")
        }
        Plan::Adopt | Plan::Rollout { .. } => {}
    }
    if !decision.rolls_out() {
        info!(workload = %describe(key), hash = %current.hash, "{}", decision.describe());
    }
    let roll_out = decision.rolls_out();
    if shared.settings.dry_run {
        shared
            .memos
            .lock()
            .expect("memo lock")
            .entry(key.clone())
            .or_default()
            .dry_run_baseline = Some(current.clone());
    } else {
        let api: Api<W> = Api::namespaced(shared.client.clone(), &key.namespace);
        let body = patch_body(
            &current,
            workload.meta().resource_version.as_deref(),
            roll_out,
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        if let Err(source) = api.patch(&key.name, &params, &Patch::Merge(&body)).await {
            if matches!(&source, kube::Error::Api(status) if status.code == 409) {
                // The workload changed under us. Its new version does not necessarily trigger a
                // reconcile (status and label updates are filtered out), so decide again soon.
                debug!(workload = %describe(key), "conflict while patching; deciding again on the newer version");
                return Ok(Outcome::Conflict);
            }
            return Err(Error::Patch {
                workload: describe(key),
                source,
            });
        }
    }
    if let Plan::Rollout { changed } = decision {
        announce_rollout(workload, key, analysis, &changed, shared).await;
    }
    Ok(Outcome::Done)
}

async fn announce_rollout<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    analysis: &WorkloadAnalysis,
    changed: &[String],
    shared: &Shared,
) {
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
    if shared.settings.dry_run {
        note = format!("dry run, would roll out: {note}");
    }
    for label in changed {
        let source_kind = label.split('/').next().unwrap_or_default();
        shared.metrics.rollout(
            W::KIND.as_str(),
            &key.namespace,
            source_kind,
            shared.settings.dry_run,
        );
    }
    info!(workload = %describe(key), dry_run = shared.settings.dry_run, "{note}");
    let reason = if shared.settings.dry_run {
        "DryRunRollout"
    } else {
        "RolloutTriggered"
    };
    publish(workload, EventType::Normal, reason, note, shared).await;
    if workload.updates_on_delete() {
        let message = "updateStrategy is OnDelete: the template changed, but pods restart only when someone deletes them".to_string();
        warn!(workload = %describe(key), "{message}");
        publish(
            workload,
            EventType::Warning,
            "OnDeleteStrategy",
            message,
            shared,
        )
        .await;
    }
}

async fn publish_new_warnings<W: Workload>(
    workload: &W,
    key: &WorkloadKey,
    warnings: Vec<Warning>,
    shared: &Shared,
) {
    let current: HashSet<String> = warnings.iter().map(|w| w.message.clone()).collect();
    let fresh: Vec<Warning> = {
        let mut memos = shared.memos.lock().expect("memo lock");
        let memo = memos.entry(key.clone()).or_default();
        let fresh = warnings
            .into_iter()
            .filter(|w| !memo.warnings.contains(&w.message))
            .collect();
        memo.warnings = current;
        fresh
    };
    for warning in fresh {
        warn!(workload = %describe(key), reason = warning.reason, "{}", warning.message);
        publish(
            workload,
            EventType::Warning,
            warning.reason,
            warning.message,
            shared,
        )
        .await;
    }
}

async fn publish<W: Workload>(
    workload: &W,
    type_: EventType,
    reason: &str,
    note: String,
    shared: &Shared,
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
    let recorder = Recorder::new(shared.client.clone(), shared.reporter.clone());
    if let Err(problem) = recorder.publish(&event, &workload.object_ref(&())).await {
        warn!(reason, error = %problem, "could not record Event");
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_that_lost_a_race_is_decided_again_soon() {
        // The newer version of the workload may differ only in status or labels, which do not
        // trigger a reconcile: waiting for the resync would delay a rollout by minutes.
        assert_eq!(
            next_action(Outcome::Conflict),
            Action::requeue(CONFLICT_RETRY)
        );
        assert!(CONFLICT_RETRY <= Duration::from_secs(5));
        assert_eq!(next_action(Outcome::Done), Action::requeue(RESYNC));
    }
}
