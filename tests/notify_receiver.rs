//! Notifications delivered to a real HTTP receiver on loopback: the payload each sink gets,
//! retries, a receiver that is down or slow, a full queue, and logs that never show a URL.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tracing_subscriber::fmt::MakeWriter;

use envroll::analysis::{SourceKind, WorkloadKind};
use envroll::metrics::Metrics;
use envroll::notify::{
    DeliverySettings, Notification, Notifier, NotifySettings, RolloutEvent, SourceRef, WorkloadRef,
};

/// The part of every test URL that stands for the credential; it must never reach a log line.
const TOKEN: &str = "T0/B0/secret-token";

#[derive(Clone, Copy)]
struct Answer {
    status: StatusCode,
    delay: Duration,
    retry_after: Option<&'static str>,
}

const OK: Answer = answer(StatusCode::OK);

const fn answer(status: StatusCode) -> Answer {
    Answer {
        status,
        delay: Duration::ZERO,
        retry_after: None,
    }
}

struct Received {
    path: String,
    content_type: Option<String>,
    body: Value,
}

struct ReceiverState {
    /// The answer to the n-th request; the last one answers every later request too.
    answers: Vec<Answer>,
    received: Mutex<Vec<Received>>,
}

struct Receiver {
    address: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(answers: Vec<Answer>) -> Receiver {
        let state = Arc::new(ReceiverState {
            answers,
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { address, state }
    }

    fn url(&self, sink: &str) -> String {
        format!("http://{}/{sink}/{TOKEN}", self.address)
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.state.received.lock().unwrap()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_string(),
            content_type: headers
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        state.answers[(received.len() - 1).min(state.answers.len() - 1)]
    };
    tokio::time::sleep(answer.delay).await;
    let mut response = answer.status.into_response();
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}

/// Log lines of the test's thread, which with the current-thread runtime includes the workers.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// No line, envroll's or a library's at debug level, holds the URL's credential part, and
    /// envroll's lines do not even name the receiver's address (hyper's debug lines do).
    fn assert_no_url(&self, receiver_address: &str) {
        let text = self.text();
        assert!(!text.contains("secret-token"), "{text}");
        for line in text.lines().filter(|line| line.contains("envroll::notify")) {
            assert!(!line.contains(receiver_address), "{line}");
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Short enough for tests; the structure (tries, backoff, cap) is the production one.
fn quick_delivery() -> DeliverySettings {
    DeliverySettings {
        queue_capacity: 8,
        request_timeout: Duration::from_secs(5),
        attempts: 3,
        first_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_millis(50),
    }
}

fn settings(variables: &[(&str, String)], delivery: DeliverySettings) -> NotifySettings {
    let variables: HashMap<&str, String> = variables.iter().cloned().collect();
    let mut settings = NotifySettings::from_env(|name| variables.get(name).cloned()).unwrap();
    settings.delivery = delivery;
    settings
}

fn start(settings: NotifySettings) -> (Notifier, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::start(settings, metrics.clone()).unwrap();
    (notifier, metrics)
}

fn notification(event: RolloutEvent) -> Notification {
    Notification {
        event,
        workload: WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: "shop".to_string(),
            name: "api".to_string(),
        },
        changed_sources: vec![SourceRef {
            kind: SourceKind::ConfigMap,
            name: "api-config".to_string(),
        }],
        coalesced_changes: 1,
        timestamp: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
    }
}

fn stalled() -> Notification {
    notification(RolloutEvent::Stalled {
        cause: "CrashLoopBackOff".to_string(),
    })
}

fn counted(sink: &str, event: &str, outcome: &str, count: u32) -> String {
    format!(
        "envroll_notifications_total{{sink=\"{sink}\",event=\"{event}\",outcome=\"{outcome}\"}} {count}\n"
    )
}

async fn wait_for_metric(metrics: &Metrics, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics.encode().contains(line) {
        assert!(
            Instant::now() < deadline,
            "never counted {line}{}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `notify` must return at once, whatever the receiver does.
fn notify_without_waiting(notifier: &Notifier, notification: Notification) {
    let started = Instant::now();
    notifier.notify(notification);
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "notify waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_sink_receives_its_payload() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start(vec![OK]).await;
    let (notifier, metrics) = start(settings(
        &[
            ("ENVROLL_NOTIFY_SLACK_URL", receiver.url("slack")),
            ("ENVROLL_NOTIFY_TEAMS_URL", receiver.url("teams")),
            (
                "ENVROLL_NOTIFY_GOOGLE_CHAT_URL",
                receiver.url("google-chat"),
            ),
            ("ENVROLL_NOTIFY_WEBHOOK_URL", receiver.url("webhook")),
        ],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, stalled());
    for sink in ["slack", "teams", "google_chat", "webhook"] {
        wait_for_metric(&metrics, &counted(sink, "stalled", "delivered", 1)).await;
    }

    let received = receiver.received();
    let body_at = |sink: &str| {
        let request = received
            .iter()
            .find(|request| request.path == format!("/{sink}/{TOKEN}"))
            .unwrap_or_else(|| panic!("nothing posted to {sink}"));
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        request.body.clone()
    };
    assert_eq!(received.len(), 4);
    assert_eq!(
        body_at("slack"),
        json!({ "text": "*Rollout stalled: Deployment shop/api: CrashLoopBackOff*\nChanged: ConfigMap api-config" })
    );
    assert_eq!(
        body_at("google-chat"),
        json!({ "text": "*Rollout stalled: Deployment shop/api: CrashLoopBackOff*\nChanged: ConfigMap api-config" })
    );
    assert_eq!(
        body_at("teams"),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "Rollout stalled: Deployment shop/api: CrashLoopBackOff",
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": "Attention",
                            "wrap": true
                        },
                        {
                            "type": "FactSet",
                            "facts": [
                                { "title": "Workload", "value": "Deployment shop/api" },
                                { "title": "Changed", "value": "ConfigMap api-config" },
                                { "title": "Cause", "value": "CrashLoopBackOff" },
                                { "title": "Time", "value": "2026-01-01T00:00:00Z" }
                            ]
                        }
                    ]
                }
            }]
        })
    );
    assert_eq!(
        body_at("webhook"),
        json!({
            "event": "stalled",
            "workload": { "kind": "Deployment", "namespace": "shop", "name": "api" },
            "changedSources": [{ "kind": "ConfigMap", "name": "api-config" }],
            "coalescedChanges": 1,
            "cause": "CrashLoopBackOff",
            "timestamp": "2026-01-01T00:00:00Z",
            "summary": "Rollout stalled: Deployment shop/api: CrashLoopBackOff"
        })
    );
    logs.assert_no_url(&receiver.address.to_string());
}

#[tokio::test]
async fn a_sink_gets_only_the_events_it_selected() {
    let receiver = Receiver::start(vec![OK]).await;
    let (notifier, metrics) = start(settings(
        &[
            ("ENVROLL_NOTIFY_WEBHOOK_URL", receiver.url("webhook")),
            ("ENVROLL_NOTIFY_WEBHOOK_EVENTS", "stalled".to_string()),
        ],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, notification(RolloutEvent::Triggered));
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("webhook", "stalled", "delivered", 1)).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["event"], "stalled");
    assert!(!metrics.encode().contains("event=\"triggered\""));
}

#[tokio::test]
async fn a_503_is_retried_and_delivered_once() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start(vec![answer(StatusCode::SERVICE_UNAVAILABLE), OK]).await;
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_SLACK_URL", receiver.url("slack"))],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("slack", "stalled", "delivered", 1)).await;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "one 503, then the delivery");
    assert_eq!(received[0].body, received[1].body);
    assert!(!metrics.encode().contains("outcome=\"failed\""));
    let logs_text = logs.text();
    assert!(
        logs_text.contains("notification will be retried")
            && logs_text.contains("503 Service Unavailable"),
        "{logs_text}"
    );
    logs.assert_no_url(&receiver.address.to_string());
}

#[tokio::test]
async fn retry_after_is_waited_for() {
    let throttled = Answer {
        retry_after: Some("1"),
        ..answer(StatusCode::TOO_MANY_REQUESTS)
    };
    let receiver = Receiver::start(vec![throttled, OK]).await;
    let delivery = DeliverySettings {
        first_backoff: Duration::from_millis(1),
        max_retry_after: Duration::from_secs(10),
        ..quick_delivery()
    };
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_TEAMS_URL", receiver.url("teams"))],
        delivery,
    ));
    let started = Instant::now();
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("teams", "stalled", "delivered", 1)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before the Retry-After of 1s",
        started.elapsed()
    );
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_long_retry_after_waits_only_the_cap() {
    let throttled = Answer {
        retry_after: Some("3600"),
        ..answer(StatusCode::TOO_MANY_REQUESTS)
    };
    let receiver = Receiver::start(vec![throttled, OK]).await;
    let (notifier, metrics) = start(settings(
        &[(
            "ENVROLL_NOTIFY_GOOGLE_CHAT_URL",
            receiver.url("google-chat"),
        )],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("google_chat", "stalled", "delivered", 1)).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start(vec![answer(StatusCode::NOT_FOUND)]).await;
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_SLACK_URL", receiver.url("slack"))],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("slack", "stalled", "failed", 1)).await;

    assert_eq!(receiver.received().len(), 1);
    let logs_text = logs.text();
    assert!(
        logs_text.contains("notification not delivered")
            && logs_text.contains("the receiver answered 404 Not Found (1 try)"),
        "{logs_text}"
    );
    logs.assert_no_url(&receiver.address.to_string());
}

#[tokio::test]
async fn a_receiver_that_is_down_fails_after_every_try_without_blocking_the_caller() {
    let (logs, _guard) = Logs::capture();
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{address}/webhook/{TOKEN}");
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_WEBHOOK_URL", url)],
        quick_delivery(),
    ));
    notify_without_waiting(&notifier, stalled());
    notify_without_waiting(&notifier, notification(RolloutEvent::Triggered));
    wait_for_metric(&metrics, &counted("webhook", "stalled", "failed", 1)).await;
    wait_for_metric(&metrics, &counted("webhook", "triggered", "failed", 1)).await;

    let logs_text = logs.text();
    assert!(
        logs_text.contains("notification not delivered")
            && logs_text.contains("cannot connect")
            && logs_text.contains("(3 tries)"),
        "{logs_text}"
    );
    logs.assert_no_url(&address.to_string());
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_counts_as_failed() {
    let (logs, _guard) = Logs::capture();
    let slow = Answer {
        delay: Duration::from_secs(30),
        ..OK
    };
    let receiver = Receiver::start(vec![slow]).await;
    let delivery = DeliverySettings {
        request_timeout: Duration::from_millis(100),
        attempts: 2,
        ..quick_delivery()
    };
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_SLACK_URL", receiver.url("slack"))],
        delivery,
    ));
    notify_without_waiting(&notifier, stalled());
    wait_for_metric(&metrics, &counted("slack", "stalled", "failed", 1)).await;

    assert_eq!(
        receiver.received().len(),
        2,
        "both tries reached the receiver"
    );
    let logs_text = logs.text();
    assert!(
        logs_text.contains("no answer within 100ms (2 tries)"),
        "{logs_text}"
    );
    logs.assert_no_url(&receiver.address.to_string());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start(vec![OK]).await;
    let delivery = DeliverySettings {
        queue_capacity: 1,
        ..quick_delivery()
    };
    let (notifier, metrics) = start(settings(
        &[("ENVROLL_NOTIFY_SLACK_URL", receiver.url("slack"))],
        delivery,
    ));
    // The worker cannot run between these calls (one thread, no await): the first fills the
    // queue, the others find it full.
    for _ in 0..3 {
        notify_without_waiting(&notifier, stalled());
    }
    assert!(metrics
        .encode()
        .contains(&counted("slack", "stalled", "dropped", 2)));
    wait_for_metric(&metrics, &counted("slack", "stalled", "delivered", 1)).await;

    assert_eq!(receiver.received().len(), 1);
    let logs_text = logs.text();
    assert!(
        logs_text.contains("notification dropped: the sink's queue is full"),
        "{logs_text}"
    );
    logs.assert_no_url(&receiver.address.to_string());
}
