//! The Deployment, StatefulSet and DaemonSet watches, one controller per kind and namespace
//! scope. The watch keeps the template-edit bookkeeping and the debounce informed; the
//! controller runs `reconcile` on the workload's own relevant changes and on triggers from its
//! sources.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use super::context::workload_key;
use super::reconcile::{reconcile, Error};
use super::{api_for, backoff, Context, LIST_PAGE_SIZE};
use crate::store::{revision, WorkloadKey};
use crate::workload::{Cached, Workload};

/// The first retry of a failed patch; later ones double, up to the cap.
const PATCH_RETRY: Duration = Duration::from_secs(1);
const PATCH_RETRY_CAP: Duration = Duration::from_secs(60);

/// Starts the controller of one kind in one namespace (`None`: all of them). The future resolves
/// once the workload watch has listed for the first time.
pub(super) fn spawn<W: Workload>(
    context: &Arc<Context>,
    namespace: &Option<String>,
    shutdown: &watch::Receiver<bool>,
) -> (JoinHandle<()>, BoxFuture<'static, ()>) {
    // Not the reflector's own readiness: its waiters share one waker, which the controller's
    // waiter takes.
    let (listed, on_listed) = oneshot::channel();
    let task = tokio::spawn(run::<W>(
        context.clone(),
        namespace.clone(),
        listed,
        shutdown.clone(),
    ));
    (task, on_listed.map(|_| ()).boxed())
}

async fn run<W: Workload>(
    context: Arc<Context>,
    namespace: Option<String>,
    listed: oneshot::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (reader, writer) = reflector::store::<Cached<W>>();
    let triggers = context.open_triggers(W::KIND, namespace.clone());
    let api = api_for::<Cached<W>>(context.client(), &namespace);
    let observer = context.clone();
    let touched = context.clone();
    let mut listed = Some(listed);
    let workloads = watcher(api, watcher::Config::default().page_size(LIST_PAGE_SIZE))
        .default_backoff()
        .modify(|cached: &mut Cached<W>| forget_unused_fields(cached.workload_mut()))
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            observe(&observer, event)
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change::<Cached<W>>, PredicateConfig::default())
        .inspect(move |workload| {
            if let Ok(observed) = workload {
                touched.workload_changed(&workload_key(observed.workload()));
            }
        });
    let requests = triggers
        .map(|key: WorkloadKey| ObjectRef::<Cached<W>>::new(&key.name).within(&key.namespace));
    // The debounce is envroll's own (`debounce::Pending`): kube-runtime's has no maximum wait.
    let config = controller::Config::default().concurrency(context.settings().concurrency);
    let on_result = context.clone();
    Controller::for_stream(workloads, reader)
        .reconcile_on(requests)
        .with_config(config)
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run(reconcile::<W>, error_policy::<W>, context)
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

/// Feeds the template-edit bookkeeping, forgets deleted workloads, and reports watch errors.
fn observe<W: Workload>(
    context: &Context,
    event: &Result<watcher::Event<Cached<W>>, watcher::Error>,
) {
    let (observed, watched) = match event {
        Ok(watcher::Event::Apply(observed)) => (observed, true),
        Ok(watcher::Event::InitApply(observed)) => (observed, false),
        Ok(watcher::Event::Delete(observed)) => {
            context.forget(&workload_key(observed.workload()));
            return;
        }
        Ok(watcher::Event::Init | watcher::Event::InitDone) => return,
        Err(problem) => {
            context.metrics().watch_error(W::KIND.as_str());
            warn!(kind = %W::KIND, error = %problem, "workload watch failed; retrying");
            return;
        }
    };
    context.metrics().watch_event(W::KIND.as_str());
    context.state().edits.observe(
        &workload_key(observed.workload()),
        &observed.template_fingerprint,
        revision(observed.workload().meta().resource_version.as_deref()),
        watched,
    );
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

/// What triggers a reconcile from the workload's own watch: spec changes (generation) and
/// annotation changes. Status updates during a rollout do not, which keeps the debounce from
/// being pushed back by the rollout envroll itself caused.
fn relevant_change<K: Resource>(workload: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    workload.meta().generation.hash(&mut hasher);
    workload.meta().annotations.hash(&mut hasher);
    workload.meta().uid.hash(&mut hasher);
    Some(hasher.finish())
}

fn error_policy<W: Workload>(
    observed: Arc<Cached<W>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let workload = workload_key(observed.workload());
    context.metrics().reconcile_error(error.metric_label());
    let failures = context.state().memo(&workload).patch_failures;
    let delay = backoff(PATCH_RETRY, PATCH_RETRY_CAP, failures);
    warn!(%workload, %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
