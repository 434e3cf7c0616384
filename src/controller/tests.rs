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

use super::context::workload_key;
use super::reconcile::read_unknown_secrets;
use super::*;
use crate::analysis::SourceKind;
use crate::debounce::Debounce;
use crate::lifecycle::Budget;
use crate::metrics::Metrics;
use crate::rollout::{decide, Decision, PodsStartedAfter, Template};
use crate::store::{config_map_record, secret_metadata_record, SourceKey};
use crate::test_support::analyse_deployment;
use crate::workload::Cached;

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
    context_in(client, false)
}

fn context_in(client: Client, dry_run: bool) -> Arc<Context> {
    let settings = Settings {
        scope: Scope::Namespaces(vec!["shop".into()]),
        dry_run,
        debounce: Debounce::with_default_max_wait(Duration::ZERO),
        concurrency: 1,
        budget: Budget::per_hour(0),
        dialects: Default::default(),
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

/// A Deployment `shop/web` (generation 1, three replicas, its rollout finished) reading the
/// ConfigMaps `env` and `other` through `envFrom`.
fn web_json(resource_version: &str, applied: Option<&str>) -> serde_json::Value {
    let mut annotations = serde_json::json!({ "envroll.dev/auto": "true" });
    if let Some(applied) = applied {
        annotations["envroll.dev/applied"] = applied.into();
    }
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": resource_version,
                     "generation": 1, "annotations": annotations},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "image": "web:1", "envFrom": [
                    {"configMapRef": {"name": "env"}}, {"configMapRef": {"name": "other"}},
                ]}]},
            },
        },
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                   "availableReplicas": 3},
    })
}

fn observed(deployment: serde_json::Value) -> Arc<Cached<Deployment>> {
    Arc::new(serde_json::from_value(deployment).expect("a Deployment"))
}

fn web(resource_version: &str, applied: Option<&str>) -> Arc<Cached<Deployment>> {
    observed(web_json(resource_version, applied))
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

/// An API server that records every request and answers a PATCH of `shop/web` with the
/// Deployment at the resource version and generation set in `patched`.
#[derive(Clone, Default)]
struct Recorder {
    requests: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
    patched: Arc<Mutex<(String, i64)>>,
}

impl Recorder {
    fn context(&self) -> Arc<Context> {
        self.context_in(false)
    }

    fn context_in(&self, dry_run: bool) -> Arc<Context> {
        let recorder = self.clone();
        context_in(
            client(move |request: Request<Body>| {
                let recorder = recorder.clone();
                async move {
                    let method = request.method().to_string();
                    let path = request.uri().path().to_string();
                    let body = request.into_body().collect_bytes().await.expect("a body");
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    recorder
                        .requests
                        .lock()
                        .unwrap()
                        .push((method.clone(), path, body.clone()));
                    if method != "PATCH" {
                        // Events are answered as created: what was sent is what the test checks.
                        return respond(StatusCode::CREATED, &body.to_string());
                    }
                    let (version, generation) = recorder.patched.lock().unwrap().clone();
                    let deployment = serde_json::json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": version,
                                     "generation": generation},
                    });
                    respond(StatusCode::OK, &deployment.to_string())
                }
            }),
            dry_run,
        )
    }

    fn will_patch_to(&self, resource_version: &str, generation: i64) {
        *self.patched.lock().unwrap() = (resource_version.to_string(), generation);
    }

    fn patches(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, _, _)| method == "PATCH")
            .map(|(_, _, body)| body.clone())
            .collect()
    }

    /// Whether each PATCH so far rolled out (changed the pod template).
    fn rollouts(&self) -> Vec<bool> {
        self.patches()
            .iter()
            .map(|patch| patch.get("spec").is_some())
            .collect()
    }

    fn last_applied(&self) -> String {
        let patches = self.patches();
        let last = patches.last().expect("a patch");
        last["metadata"]["annotations"]["envroll.dev/applied"]
            .as_str()
            .expect("a baseline")
            .to_string()
    }

    /// The notes of the Events with this reason.
    fn events(&self, reason: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(method, _, body)| method == "POST" && body["reason"] == reason)
            .map(|(_, _, body)| body["note"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[tokio::test]
async fn a_change_a_lagging_watch_reports_after_envrolls_rollout_is_not_rolled_out_again() {
    let api = Recorder::default();
    let context = api.context();
    let decide_at = |resource_version: &str, applied: Option<String>, patch_version: &str| {
        api.will_patch_to(patch_version, 1);
        reconcile::reconcile(web(resource_version, applied.as_deref()), context.clone())
    };

    store_config_map(&context, "env", "10", "1");
    store_config_map(&context, "other", "11", "1");
    decide_at("20", None, "21").await.expect("adopted");
    // env changes at 30: envroll rolls out, and its patch makes revision 100.
    store_config_map(&context, "env", "30", "2");
    decide_at("21", Some(api.last_applied()), "100")
        .await
        .expect("rolled out");
    // The ConfigMap watch was behind: it reports `other`'s change at 90 only now. The pods of
    // the rollout at 100 started after it and read it.
    store_config_map(&context, "other", "90", "2");
    decide_at("100", Some(api.last_applied()), "101")
        .await
        .expect("re-baselined");
    // A change after the rollout does roll out.
    store_config_map(&context, "other", "120", "3");
    decide_at("101", Some(api.last_applied()), "130")
        .await
        .expect("rolled out");

    assert_eq!(api.rollouts(), vec![false, true, false, true]);
    assert!(context
        .metrics()
        .encode()
        .contains("reason=\"rolled_out_after_config\"} 1"));
}

/// `web` adopted, then `env` changed at 30 and envroll rolled out: its patch made generation 2.
async fn rolling_out_generation_2() -> (Recorder, Arc<Context>) {
    let api = Recorder::default();
    let context = api.context();
    store_config_map(&context, "env", "10", "1");
    store_config_map(&context, "other", "11", "1");
    api.will_patch_to("21", 1);
    reconcile::reconcile(web("20", None), context.clone())
        .await
        .expect("adopted");
    store_config_map(&context, "env", "30", "2");
    api.will_patch_to("40", 2);
    reconcile::reconcile(web("21", Some(&api.last_applied())), context.clone())
        .await
        .expect("rolled out");
    (api, context)
}

#[tokio::test]
async fn changes_during_envrolls_rollout_wait_for_it_and_then_roll_out_once() {
    let (api, context) = rolling_out_generation_2().await;
    let rolled_out = api.last_applied();
    // Generation 2 is being rolled out: one new pod of three so far.
    let mut rolling = web_json("40", Some(&rolled_out));
    rolling["metadata"]["generation"] = 2.into();
    rolling["status"] = serde_json::json!({"observedGeneration": 2, "replicas": 4,
        "updatedReplicas": 1, "availableReplicas": 3});
    for (version, value) in [("50", "2"), ("51", "3")] {
        store_config_map(&context, "other", version, value);
        reconcile::reconcile(observed(rolling.clone()), context.clone())
            .await
            .expect("held");
    }
    assert_eq!(api.rollouts(), vec![false, true], "held while rolling out");
    assert!(api.events("RolloutSucceeded").is_empty());

    let mut finished = rolling.clone();
    finished["status"] = serde_json::json!({"observedGeneration": 2, "replicas": 3,
        "updatedReplicas": 3, "availableReplicas": 3});
    api.will_patch_to("60", 3);
    reconcile::reconcile(observed(finished), context.clone())
        .await
        .expect("rolled out");
    assert_eq!(
        api.rollouts(),
        vec![false, true, true],
        "one rollout for both"
    );
    let succeeded = api.events("RolloutSucceeded");
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert!(
        succeeded[0].starts_with("rollout for ConfigMap/env finished in"),
        "{succeeded:?}"
    );
    let triggered = api.events("RolloutTriggered");
    assert!(
        triggered[1].contains("carries 2 config states"),
        "{triggered:?}"
    );
    let metrics = context.metrics().encode();
    assert!(
        metrics.contains("envroll_rollouts_held_total{kind=\"Deployment\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("envroll_rollout_duration_seconds_count{kind=\"Deployment\"} 1"));
}

#[tokio::test]
async fn a_rollout_past_its_deadline_is_reported_stalled_and_frees_the_next() {
    let (api, context) = rolling_out_generation_2().await;

    let mut stalled = web_json("41", Some(&api.last_applied()));
    stalled["metadata"]["generation"] = 2.into();
    stalled["status"] = serde_json::json!({"observedGeneration": 2, "replicas": 4,
        "updatedReplicas": 1, "availableReplicas": 3, "conditions": [{"type": "Progressing",
        "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet \"web-2\" has timed out progressing."}]});
    store_config_map(&context, "other", "50", "2");
    api.will_patch_to("60", 3);
    reconcile::reconcile(observed(stalled), context.clone())
        .await
        .expect("rolled out");
    assert_eq!(
        api.events("RolloutStalled"),
        vec!["rollout for ConfigMap/env stalled: ReplicaSet \"web-2\" has timed out progressing."]
    );
    assert_eq!(
        api.rollouts(),
        vec![false, true, true],
        "the next change is not held"
    );
    assert!(context
        .metrics()
        .encode()
        .contains("envroll_rollouts_stalled_total{kind=\"Deployment\"} 1"));
}

#[tokio::test]
async fn over_its_budget_a_change_waits_and_is_reported() {
    let api = Recorder::default();
    let context = api.context();
    store_config_map(&context, "env", "10", "1");
    store_config_map(&context, "other", "11", "1");
    let mut limited = web_json("20", None);
    limited["metadata"]["annotations"]["envroll.dev/max-rollouts-per-hour"] = "1".into();
    api.will_patch_to("21", 1);
    reconcile::reconcile(observed(limited.clone()), context.clone())
        .await
        .expect("adopted");
    for (version, patched) in [("30", "40"), ("50", "60")] {
        store_config_map(&context, "env", version, version);
        limited["metadata"]["annotations"]["envroll.dev/applied"] = api.last_applied().into();
        // The rollout finished at once (generation 1 observed).
        api.will_patch_to(patched, 1);
        reconcile::reconcile(observed(limited.clone()), context.clone())
            .await
            .expect("decided");
    }
    assert_eq!(api.rollouts(), vec![false, true], "the second waits");
    assert_eq!(api.events("RolloutThrottled").len(), 1);
    assert!(context
        .metrics()
        .encode()
        .contains("envroll_rollouts_throttled_total{kind=\"Deployment\"} 1"));
}

#[tokio::test]
async fn a_users_template_edit_ends_the_hold_on_envrolls_rollout() {
    let (api, context) = rolling_out_generation_2().await;
    // A new image on top of envroll's rollout: generation 3, still rolling.
    let mut edited = web_json("45", Some(&api.last_applied()));
    edited["metadata"]["generation"] = 3.into();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2".into();
    edited["status"] = serde_json::json!({"observedGeneration": 3, "replicas": 4,
        "updatedReplicas": 1, "availableReplicas": 3});
    store_config_map(&context, "other", "50", "2");
    api.will_patch_to("60", 4);
    reconcile::reconcile(observed(edited), context.clone())
        .await
        .expect("rolled out");
    assert_eq!(
        api.rollouts(),
        vec![false, true, true],
        "not held behind the user's rollout"
    );
}

#[tokio::test]
async fn in_a_dry_run_another_tools_template_patch_does_not_carry_the_change() {
    // Beside Reloader: the config changes at 30, Reloader patches the template at 40. envroll
    // decides what it would do itself, so it reports the rollout it would make.
    let api = Recorder::default();
    let context = api.context_in(true);
    store_config_map(&context, "env", "10", "1");
    store_config_map(&context, "other", "11", "1");
    let adopted = web("20", None);
    let key = workload_key(adopted.workload());
    context
        .state()
        .edits
        .observe(&key, &adopted.template_fingerprint, Some(20), false);
    reconcile::reconcile(adopted, context.clone())
        .await
        .expect("adopted");
    store_config_map(&context, "env", "30", "2");
    let mut patched = web_json("40", None);
    patched["spec"]["template"]["metadata"]["annotations"] =
        serde_json::json!({"reloader.stakater.com/last-reloaded-from": "env"});
    let patched = observed(patched);
    context
        .state()
        .edits
        .observe(&key, &patched.template_fingerprint, Some(40), true);
    reconcile::reconcile(patched, context.clone())
        .await
        .expect("decided");
    let would = api.events("DryRunRollout");
    assert_eq!(would.len(), 1, "{would:?}");
    assert!(would[0].contains("ConfigMap env changed"), "{would:?}");
    assert!(api.patches().is_empty(), "a dry run never patches");
}
