//! The controller's failure paths that a real API server cannot be made to produce on demand,
//! against a mocked HTTP service under the kube client. The same paths run for real in the e2e
//! suite and under `make chaos`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::client::Body;
use kube::Client;
use tokio::sync::{watch, Notify};

use super::reconcile::read_unknown_secrets;
use super::*;
use crate::analysis::SourceKind;
use crate::debounce::Debounce;
use crate::metrics::Metrics;
use crate::rollout::{decide, Decision, PodsStartedAfter, Template};
use crate::store::{config_map_record, secret_metadata_record, SourceKey};
use crate::test_support::analyse_deployment;
use crate::workload::Observed;

#[test]
fn backoff_doubles_up_to_its_cap() {
    let second = Duration::from_secs(1);
    let delays: Vec<u64> = (1..=7)
        .map(|attempt| backoff(second, 30 * second, attempt).as_secs())
        .collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(backoff(second, 30 * second, 0), second);
    assert_eq!(backoff(second, 30 * second, u32::MAX), 30 * second);
}

fn respond(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.as_bytes().to_vec()))
        .expect("a response")
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("injected {reason}"), "reason": reason, "code": code,
    });
    respond(StatusCode::from_u16(code).unwrap(), &body.to_string())
}

/// A client whose every request is answered by `answer`.
fn client<F, Fut>(answer: F) -> Client
where
    F: Fn(Request<Body>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let service = tower::service_fn(move |request: Request<Body>| {
        let answer = answer.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(request).await) }
    });
    Client::new(service, "shop")
}

fn context(client: Client) -> Arc<Context> {
    let settings = Settings {
        scope: Scope::Namespaces(vec!["shop".into()]),
        dry_run: false,
        debounce: Debounce::with_default_max_wait(Duration::ZERO),
        concurrency: 1,
    };
    Arc::new(Context::new(
        client,
        settings,
        Arc::new(Metrics::default()),
        "test",
        None,
    ))
}

const OPTIONAL_SECRET: &str =
    "spec: {containers: [{name: a, envFrom: [{secretRef: {name: db, optional: true}}]}]}";

/// Reads the Secret `shop/db` (known by its metadata only) through a client answering `answer`,
/// and returns what the store then knows and what the decision would be.
async fn read_db_secret<F, Fut>(answer: F) -> (Arc<Context>, String, Decision)
where
    F: Fn(Request<Body>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let context = context(client(answer));
    let mut metadata =
        kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::Secret>::default();
    metadata.metadata.name = Some("db".into());
    metadata.metadata.namespace = Some("shop".into());
    metadata.metadata.resource_version = Some("3".into());
    let (key, record) = secret_metadata_record(&metadata);
    context.state().store.upsert(key, record);
    let analysis = analyse_deployment(&[("envroll.dev/auto", "true")], OPTIONAL_SECRET, |_, _| {
        None
    });
    read_unknown_secrets(&analysis, &context).await;
    let state = context.state();
    let key = SourceKey::new(SourceKind::Secret, "shop", "db");
    let view = format!("{:?}", state.store.view(&key));
    let template = Template {
        fingerprint: "v2:0",
        started_after: PodsStartedAfter::default(),
    };
    let decision = decide(&analysis, template, None, |kind, name| {
        state.store.view(&SourceKey::new(kind, "shop", name))
    });
    drop(state);
    (context, view, decision)
}

#[tokio::test]
async fn a_failed_read_of_an_optional_secret_waits_instead_of_taking_it_for_deleted() {
    for (code, reason, label) in [
        (503, "ServiceUnavailable", "server_error"),
        (500, "InternalError", "server_error"),
        (429, "TooManyRequests", "throttled"),
    ] {
        let (context, view, decision) =
            read_db_secret(move |_| async move { status(code, reason) }).await;
        assert!(
            view.starts_with(&format!("Unknown(\"{label}")),
            "{code}: {view}"
        );
        assert!(
            matches!(decision, Decision::Wait(_)),
            "{code}: {decision:?}"
        );
        let metrics = context.metrics().encode();
        assert!(
            metrics.contains(&format!(
                "envroll_source_fetch_errors_total{{reason=\"{label}\"}} 1"
            )),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_secret_gone_while_being_read_waits_for_its_delete_event() {
    let (_, view, decision) = read_db_secret(|_| async { status(404, "NotFound") }).await;
    assert_eq!(view, "Unknown(\"deleted while being read\")");
    assert!(matches!(decision, Decision::Wait(_)), "{decision:?}");
}

#[tokio::test]
async fn a_secret_read_is_digested_and_decided() {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "uid": "u-1", "resourceVersion": "3"},
        "data": {"password": "cHc="},
    })
    .to_string();
    let (context, view, decision) = read_db_secret(move |request| {
        let secret = secret.clone();
        async move {
            assert_eq!(request.uri().path(), "/api/v1/namespaces/shop/secrets/db");
            respond(StatusCode::OK, &secret)
        }
    })
    .await;
    assert!(view.starts_with("Known"), "{view}");
    assert!(matches!(decision, Decision::Act { .. }), "{decision:?}");
    assert!(context
        .metrics()
        .encode()
        .contains("envroll_source_fetches_total{kind=\"Secret\"} 1"));
}

#[tokio::test]
async fn a_secret_without_uid_is_never_digested_unsalted() {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "3"},
        "data": {"password": "cHc="},
    })
    .to_string();
    let (context, view, _) = read_db_secret(move |_| {
        let secret = secret.clone();
        async move { respond(StatusCode::OK, &secret) }
    })
    .await;
    assert!(view.contains("has no UID"), "{view}");
    assert!(context
        .metrics()
        .encode()
        .contains("envroll_source_fetch_errors_total{reason=\"no_uid\"} 1"));
}

const EMPTY_LIST: &str =
    r#"{"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}"#;

#[tokio::test]
async fn ready_only_once_the_workload_watches_have_listed() {
    let deployments_listed = Arc::new(Notify::new());
    let release = deployments_listed.clone();
    let client = client(move |request: Request<Body>| {
        let release = release.clone();
        async move {
            let watching = request
                .uri()
                .query()
                .is_some_and(|query| query.contains("watch=true"));
            if watching {
                // A watch that stays open and quiet.
                return std::future::pending().await;
            }
            if request.uri().path().ends_with("/deployments") {
                release.notified().await;
            }
            respond(StatusCode::OK, EMPTY_LIST)
        }
    });
    let context = context(client);
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(run(context.clone(), stopped));
    // Sources listed, StatefulSets and DaemonSets listed, Deployments not yet.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!context.metrics().is_ready());
    deployments_listed.notify_one();
    let ready = async {
        while !context.metrics().is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ready)
        .await
        .expect("ready once every watch has listed");
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops when asked")
        .unwrap();
}

/// A Deployment `shop/web` reading the ConfigMaps `env` and `other` through `envFrom`.
fn web(resource_version: &str, applied: Option<&str>) -> Arc<Observed<Deployment>> {
    let mut annotations = serde_json::json!({ "envroll.dev/auto": "true" });
    if let Some(applied) = applied {
        annotations["envroll.dev/applied"] = applied.into();
    }
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": resource_version,
                     "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "image": "web:1", "envFrom": [
                    {"configMapRef": {"name": "env"}}, {"configMapRef": {"name": "other"}},
                ]}]},
            },
        },
    });
    Arc::new(serde_json::from_value(deployment).expect("a Deployment"))
}

fn store_config_map(context: &Context, name: &str, resource_version: &str, value: &str) {
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": resource_version},
        "data": {"key": value},
    }))
    .expect("a ConfigMap");
    let (key, record) = config_map_record(&config_map);
    context.state().store.upsert(key, record);
}

#[tokio::test]
async fn a_change_a_lagging_watch_reports_after_envrolls_rollout_is_not_rolled_out_again() {
    // Every PATCH is recorded and answered with the Deployment at `patched_version`.
    let patches = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let patched_version = Arc::new(Mutex::new(String::new()));
    let (recorded, version) = (patches.clone(), patched_version.clone());
    let context = context(client(move |request: Request<Body>| {
        let (recorded, version) = (recorded.clone(), version.clone());
        async move {
            if request.method() != "PATCH" {
                return status(404, "NotFound");
            }
            let body = request.into_body().collect_bytes().await.expect("a body");
            recorded
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).expect("JSON"));
            let version = version.lock().unwrap().clone();
            let deployment = serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "resourceVersion": version},
            });
            respond(StatusCode::OK, &deployment.to_string())
        }
    }));
    let last_applied = || {
        let patches = patches.lock().unwrap();
        let last = patches.last().expect("a patch");
        last["metadata"]["annotations"]["envroll.dev/applied"]
            .as_str()
            .expect("a baseline")
            .to_string()
    };
    let decide_at = |resource_version: &str, applied: Option<String>, patch_version: &str| {
        *patched_version.lock().unwrap() = patch_version.to_string();
        reconcile::reconcile(web(resource_version, applied.as_deref()), context.clone())
    };

    store_config_map(&context, "env", "10", "1");
    store_config_map(&context, "other", "11", "1");
    decide_at("20", None, "21").await.expect("adopted");
    // env changes at 30: envroll rolls out, and its patch makes revision 100.
    store_config_map(&context, "env", "30", "2");
    decide_at("21", Some(last_applied()), "100")
        .await
        .expect("rolled out");
    // The ConfigMap watch was behind: it reports `other`'s change at 90 only now. The pods of
    // the rollout at 100 started after it and read it.
    store_config_map(&context, "other", "90", "2");
    decide_at("100", Some(last_applied()), "101")
        .await
        .expect("re-baselined");
    // A change after the rollout does roll out.
    store_config_map(&context, "other", "120", "3");
    decide_at("101", Some(last_applied()), "130")
        .await
        .expect("rolled out");

    let rolled_out: Vec<bool> = patches
        .lock()
        .unwrap()
        .iter()
        .map(|patch| patch.get("spec").is_some())
        .collect();
    assert_eq!(rolled_out, vec![false, true, false, true]);
    assert!(context
        .metrics()
        .encode()
        .contains("reason=\"rolled_out_after_config\"} 1"));
}
