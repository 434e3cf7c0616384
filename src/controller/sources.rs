//! The ConfigMap and Secret watches. Each event is reduced to a record and applied to the store
//! through `SourceSync`; the consumers of what changed are triggered. No request other than the
//! watch itself is made here: a Secret's data is read by the reconcile that needs it.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::{api_for, Context, LIST_PAGE_SIZE};
use crate::analysis::SourceKind;
use crate::store::{
    config_map_record, secret_metadata_record, SourceEvent, SourceKey, SourceRecord, SourceSync,
};

/// Secrets Helm uses to store releases: large, never consumed by applications, and the reason
/// operators that cache every Secret run out of memory. They are filtered out by the API server.
pub(super) const HELM_RELEASE_SECRETS: &str = "type!=helm.sh/release.v1";

/// How one kind of source is watched and reduced to records.
trait WatchedSource: Send + Sync + 'static {
    type Object: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + 'static;
    const KIND: SourceKind;

    fn config() -> watcher::Config {
        watcher::Config::default().page_size(LIST_PAGE_SIZE)
    }

    fn record(object: &Self::Object) -> (SourceKey, SourceRecord);
}

/// ConfigMaps arrive whole and are digested as they arrive.
struct ConfigMaps;

impl WatchedSource for ConfigMaps {
    type Object = ConfigMap;
    const KIND: SourceKind = SourceKind::ConfigMap;

    fn record(object: &ConfigMap) -> (SourceKey, SourceRecord) {
        config_map_record(object)
    }
}

/// Secrets can be large (certificates, bundles, Helm-style payloads): the watch carries only
/// their metadata, so memory and traffic follow the Secrets managed workloads consume.
struct SecretMetadata;

impl WatchedSource for SecretMetadata {
    type Object = PartialObjectMeta<Secret>;
    const KIND: SourceKind = SourceKind::Secret;

    fn config() -> watcher::Config {
        watcher::Config::default()
            .page_size(LIST_PAGE_SIZE)
            .fields(HELM_RELEASE_SECRETS)
    }

    fn record(object: &PartialObjectMeta<Secret>) -> (SourceKey, SourceRecord) {
        secret_metadata_record(object)
    }
}

/// Starts the ConfigMap and Secret watches of one namespace (`None`: all of them). Each comes
/// with a receiver that resolves once its first list is complete (or cannot be made).
pub(super) fn spawn_watches(
    context: &Arc<Context>,
    namespace: &Option<String>,
) -> Vec<(JoinHandle<()>, oneshot::Receiver<()>)> {
    vec![
        spawn::<ConfigMaps>(context, namespace),
        spawn::<SecretMetadata>(context, namespace),
    ]
}

fn spawn<S: WatchedSource>(
    context: &Arc<Context>,
    namespace: &Option<String>,
) -> (JoinHandle<()>, oneshot::Receiver<()>) {
    let (listed, on_listed) = oneshot::channel();
    let api = api_for::<S::Object>(context.client(), namespace);
    let task = tokio::spawn(watch::<S>(api, namespace.clone(), context.clone(), listed));
    (task, on_listed)
}

async fn watch<S: WatchedSource>(
    api: Api<S::Object>,
    namespace: Option<String>,
    context: Arc<Context>,
    listed: oneshot::Sender<()>,
) {
    let scope = namespace.clone().unwrap_or_else(|| "all namespaces".into());
    let mut listed = Some(listed);
    let mut sync = SourceSync::new(S::KIND, namespace.clone());
    let mut events = watcher(api, S::config()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(problem) => {
                context.metrics().watch_error(S::KIND.as_str());
                if is_forbidden(&problem) {
                    let message = format!("cannot list {}s in {scope}: forbidden by RBAC", S::KIND);
                    error!(kind = %S::KIND, namespace = %scope, "{message}");
                    context
                        .state()
                        .store
                        .mark_unlisted(S::KIND, namespace.as_deref(), message);
                    // Start anyway: workloads that need these sources wait and say why.
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                } else {
                    warn!(kind = %S::KIND, namespace = %scope, error = %problem, "watch failed; retrying");
                }
                continue;
            }
        };
        context.metrics().watch_event(S::KIND.as_str());
        let list_done = matches!(event, watcher::Event::InitDone);
        let event = match event {
            watcher::Event::Init => SourceEvent::ListStarted,
            watcher::Event::InitApply(object) => {
                let (key, record) = S::record(&object);
                SourceEvent::Listed(key, record)
            }
            watcher::Event::Apply(object) => {
                let (key, record) = S::record(&object);
                SourceEvent::Applied(key, record)
            }
            watcher::Event::Delete(object) => SourceEvent::Deleted(S::record(&object).0),
            watcher::Event::InitDone => SourceEvent::ListDone,
        };
        let (changed, tracked) = {
            let mut state = context.state();
            let changed = sync.apply(&mut state.store, event);
            (changed, state.store.len())
        };
        context.metrics().set_tracked_sources(tracked);
        context.sources_changed(&changed);
        if list_done {
            if let Some(listed) = listed.take() {
                info!(kind = %S::KIND, namespace = %scope, "listed");
                let _ = listed.send(());
            }
        }
    }
}

/// A list refused by RBAC. Only a failed list counts: it is retried as a list, whose end
/// (`ListDone`) clears the mark; a refused watch resumes without a list and would leave its
/// scope unknown for good.
fn is_forbidden(problem: &watcher::Error) -> bool {
    matches!(problem, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 403)
}
