//! Opt-in notifications of rollouts to Slack, Microsoft Teams, Google Chat and a generic JSON
//! webhook (`docs/notifications.md`).
//!
//! The API the controller calls:
//! - [`NotifySettings::from_env`]`(|name| std::env::var(name).ok())` once at start-up: which
//!   sinks are configured, their URLs (from env or a mounted file, never a flag) and the events
//!   each one gets. No sink configured is the default and means no notification.
//! - [`Notifier::start`]`(settings, metrics)` inside the tokio runtime: one worker task and one
//!   bounded queue per sink.
//! - [`Notifier::notify`]`(`[`Notification`]`)` when a rollout is triggered, succeeds or stalls.
//!   It never waits, so a reconcile is never held up by a slow or unreachable receiver: a sink
//!   whose queue is full drops the notification, counts and logs it.
//!
//! Each worker renders its sink's payload, posts it with a per-request timeout and retries a
//! timeout, a connection error, a 429 or a 5xx with exponential backoff (honouring `Retry-After`
//! up to a cap). Outcomes are counted in `envroll_notifications_total{sink,event,outcome}`.
//! Webhook URLs are credentials: `Debug` and `Display` show only scheme and host, and no log line
//! or error carries the URL.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::analysis::{SourceKind, WorkloadKind};
use crate::metrics::Metrics;

/// What happened to a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutEvent {
    /// envroll patched the workload's template.
    Triggered,
    /// The new pods are available.
    Succeeded { duration: Duration },
    /// The rollout stopped progressing; `cause` is what the pods report (`CrashLoopBackOff`, …).
    Stalled { cause: String },
}

impl RolloutEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            RolloutEvent::Triggered => EventKind::Triggered,
            RolloutEvent::Succeeded { .. } => EventKind::Succeeded,
            RolloutEvent::Stalled { .. } => EventKind::Stalled,
        }
    }
}

/// The events a sink can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Triggered,
    Succeeded,
    Stalled,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::Triggered,
        EventKind::Succeeded,
        EventKind::Stalled,
    ];

    /// The name used in `…_EVENTS`, in the webhook payload and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Triggered => "triggered",
            EventKind::Succeeded => "succeeded",
            EventKind::Stalled => "stalled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A ConfigMap or Secret whose change caused the rollout, in the workload's namespace. Only its
/// name: a notification never carries a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: SourceKind,
    pub name: String,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// One rollout event as sent to every sink that subscribed to its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub event: RolloutEvent,
    pub workload: WorkloadRef,
    pub changed_sources: Vec<SourceRef>,
    /// How many changes this one rollout carries (changes held while an earlier rollout was in
    /// progress are coalesced).
    pub coalesced_changes: u32,
    pub timestamp: SystemTime,
}

/// A destination for notifications; each kind is configured at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkType {
    Slack,
    Teams,
    GoogleChat,
    Webhook,
}

impl SinkType {
    pub const ALL: [SinkType; 4] = [
        SinkType::Slack,
        SinkType::Teams,
        SinkType::GoogleChat,
        SinkType::Webhook,
    ];

    /// The name in logs and the `sink` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Slack => "slack",
            SinkType::Teams => "teams",
            SinkType::GoogleChat => "google_chat",
            SinkType::Webhook => "webhook",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            SinkType::Slack => "ENVROLL_NOTIFY_SLACK",
            SinkType::Teams => "ENVROLL_NOTIFY_TEAMS",
            SinkType::GoogleChat => "ENVROLL_NOTIFY_GOOGLE_CHAT",
            SinkType::Webhook => "ENVROLL_NOTIFY_WEBHOOK",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads: pure functions of a notification, the contract with each receiver.
// ---------------------------------------------------------------------------------------------

fn render(sink: SinkType, notification: &Notification) -> Value {
    match sink {
        SinkType::Slack => slack_payload(notification),
        SinkType::Teams => teams_payload(notification),
        SinkType::GoogleChat => google_chat_payload(notification),
        SinkType::Webhook => webhook_payload(notification),
    }
}

/// The first line of every chat message, e.g. `Rollout stalled: Deployment shop/api: CrashLoopBackOff`.
fn headline(notification: &Notification) -> String {
    let workload = &notification.workload;
    match &notification.event {
        RolloutEvent::Triggered => format!("Rollout triggered: {workload}"),
        RolloutEvent::Succeeded { duration } => {
            format!(
                "Rollout succeeded: {workload} in {}",
                whole_seconds(*duration)
            )
        }
        RolloutEvent::Stalled { cause } => format!("Rollout stalled: {workload}: {cause}"),
    }
}

/// What caused the rollout, e.g. `ConfigMap api-config, Secret api-tls (3 changes)`.
fn changes(notification: &Notification) -> String {
    let mut text = if notification.changed_sources.is_empty() {
        "unknown".to_string()
    } else {
        notification
            .changed_sources
            .iter()
            .map(SourceRef::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if notification.coalesced_changes > 1 {
        text.push_str(&format!(" ({} changes)", notification.coalesced_changes));
    }
    text
}

/// Chat messages round to seconds: sub-second precision is noise to a reader.
fn whole_seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

fn timestamp(notification: &Notification) -> String {
    humantime::format_rfc3339_seconds(notification.timestamp).to_string()
}

/// Chat text in the markup Slack (mrkdwn) and Google Chat share: `*bold*`.
fn chat_text(notification: &Notification) -> String {
    format!(
        "*{}*\nChanged: {}",
        headline(notification),
        changes(notification)
    )
}

/// Slack incoming webhook: `text` in mrkdwn, where `&`, `<` and `>` are control characters.
fn slack_payload(notification: &Notification) -> Value {
    let text = chat_text(notification)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    json!({ "text": text })
}

/// Google Chat incoming webhook: a plain `text` message.
fn google_chat_payload(notification: &Notification) -> Value {
    json!({ "text": chat_text(notification) })
}

/// Microsoft Teams: an Adaptive Card in a message, the format both a Workflows ("When a Teams
/// webhook request is received") URL and a legacy incoming webhook accept.
fn teams_payload(notification: &Notification) -> Value {
    let (color, detail) = match &notification.event {
        RolloutEvent::Triggered => ("Accent", None),
        RolloutEvent::Succeeded { duration } => {
            ("Good", Some(("Duration", whole_seconds(*duration))))
        }
        RolloutEvent::Stalled { cause } => ("Attention", Some(("Cause", cause.clone()))),
    };
    let mut facts = vec![
        json!({ "title": "Workload", "value": notification.workload.to_string() }),
        json!({ "title": "Changed", "value": changes(notification) }),
    ];
    if let Some((title, value)) = detail {
        facts.push(json!({ "title": title, "value": value }));
    }
    facts.push(json!({ "title": "Time", "value": timestamp(notification) }));
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
                        "text": headline(notification),
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": color,
                        "wrap": true
                    },
                    { "type": "FactSet", "facts": facts }
                ]
            }
        }]
    })
}

/// The generic webhook: every field of the notification, for machines, plus the chat headline.
fn webhook_payload(notification: &Notification) -> Value {
    let workload = &notification.workload;
    let mut payload = json!({
        "event": notification.event.kind().as_str(),
        "workload": {
            "kind": workload.kind.as_str(),
            "namespace": workload.namespace,
            "name": workload.name,
        },
        "changedSources": notification
            .changed_sources
            .iter()
            .map(|source| json!({ "kind": source.kind.as_str(), "name": source.name }))
            .collect::<Vec<_>>(),
        "coalescedChanges": notification.coalesced_changes,
        "timestamp": timestamp(notification),
        "summary": headline(notification),
    });
    match &notification.event {
        RolloutEvent::Triggered => {}
        RolloutEvent::Succeeded { duration } => {
            payload["durationSeconds"] = json!(duration.as_secs_f64());
        }
        RolloutEvent::Stalled { cause } => payload["cause"] = json!(cause),
    }
    payload
}

// ---------------------------------------------------------------------------------------------
// Settings: from env variables and mounted files, never from flags (a flag is visible in `ps`).
// ---------------------------------------------------------------------------------------------

/// A webhook URL. It is a credential (whoever has it can post), so `Debug` and `Display` show
/// only its scheme and host.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    fn parse(text: &str) -> Option<WebhookUrl> {
        let url = Url::parse(text).ok()?;
        let usable = matches!(url.scheme(), "http" | "https") && url.host_str().is_some();
        usable.then_some(WebhookUrl(url))
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.0.host_str().unwrap_or_default();
        write!(f, "{}://{host}/<redacted>", self.0.scheme())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSettings {
    pub sink: SinkType,
    pub url: WebhookUrl,
    pub events: BTreeSet<EventKind>,
}

/// How notifications are delivered; the same for every sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Notifications waiting per sink; more are dropped.
    pub queue_capacity: usize,
    /// One request, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// Tries of one notification, the first included.
    pub attempts: u32,
    /// The wait before the second try, doubled before each further one.
    pub first_backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub max_retry_after: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            queue_capacity: 64,
            request_timeout: Duration::from_secs(10),
            attempts: 3,
            first_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifySettings {
    pub sinks: Vec<SinkSettings>,
    pub delivery: DeliverySettings,
}

/// A variable whose value cannot be used. Never carries a URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    pub variable: String,
    pub problem: String,
}

/// Overrides `DeliverySettings::request_timeout`, as a duration such as `5s`.
const TIMEOUT_VARIABLE: &str = "ENVROLL_NOTIFY_TIMEOUT";

impl NotifySettings {
    /// Reads, for each sink `ENVROLL_NOTIFY_{SLACK,TEAMS,GOOGLE_CHAT,WEBHOOK}`, `…_URL` or
    /// `…_URL_FILE` (a file holding the URL, such as a mounted Secret key) and `…_EVENTS`
    /// (comma-separated `triggered`, `succeeded`, `stalled`; all when unset), and
    /// `ENVROLL_NOTIFY_TIMEOUT`. `lookup` returns a variable's value; an empty value counts as
    /// unset, so a chart can leave a sink's variable empty.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let lookup = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut settings = NotifySettings::default();
        for sink in SinkType::ALL {
            if let Some(sink_settings) = sink_from_env(sink, lookup)? {
                settings.sinks.push(sink_settings);
            }
        }
        if let Some(value) = lookup(TIMEOUT_VARIABLE) {
            settings.delivery.request_timeout = humantime::parse_duration(value.trim())
                .ok()
                .filter(|timeout| !timeout.is_zero())
                .ok_or_else(|| SettingsError {
                    variable: TIMEOUT_VARIABLE.to_string(),
                    problem: format!("{value:?} is not a duration above zero, such as 5s"),
                })?;
        }
        Ok(settings)
    }
}

fn sink_from_env(
    sink: SinkType,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<SinkSettings>, SettingsError> {
    let prefix = sink.env_prefix();
    let url_variable = format!("{prefix}_URL");
    let file_variable = format!("{prefix}_URL_FILE");
    let events_variable = format!("{prefix}_EVENTS");
    let error = |variable: &str, problem: String| SettingsError {
        variable: variable.to_string(),
        problem,
    };
    let (variable, url_text) = match (lookup(&url_variable), lookup(&file_variable)) {
        (Some(_), Some(_)) => {
            return Err(error(
                &url_variable,
                format!("is set together with {file_variable}; set one of them"),
            ))
        }
        (Some(url), None) => (&url_variable, url),
        (None, Some(path)) => {
            let path = path.trim();
            let contents = std::fs::read_to_string(path)
                .map_err(|err| error(&file_variable, format!("cannot read {path}: {err}")))?;
            (&file_variable, contents)
        }
        (None, None) => {
            return match lookup(&events_variable) {
                Some(_) => Err(error(
                    &events_variable,
                    format!("is set but neither {url_variable} nor {file_variable} is"),
                )),
                None => Ok(None),
            }
        }
    };
    let url = WebhookUrl::parse(url_text.trim()).ok_or_else(|| {
        error(
            variable,
            "does not hold an http or https URL with a host (value not shown: it is a credential)"
                .to_string(),
        )
    })?;
    let events = match lookup(&events_variable) {
        Some(list) => parse_events(&list).map_err(|problem| error(&events_variable, problem))?,
        None => EventKind::ALL.into_iter().collect(),
    };
    Ok(Some(SinkSettings { sink, url, events }))
}

fn parse_events(list: &str) -> Result<BTreeSet<EventKind>, String> {
    let mut events = BTreeSet::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let event = EventKind::ALL
            .into_iter()
            .find(|event| event.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("unknown event {name:?}; the events are triggered, succeeded and stalled")
            })?;
        events.insert(event);
    }
    if events.is_empty() {
        return Err("names no event; leave it unset for all of them".to_string());
    }
    Ok(events)
}

/// For the start-up log: each sink with its host and events, or `none`.
impl fmt::Display for NotifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sinks.is_empty() {
            return f.write_str("none");
        }
        for (index, sink) in self.sinks.iter().enumerate() {
            let events: Vec<_> = sink.events.iter().map(|event| event.as_str()).collect();
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} ({}): {}",
                sink.sink.as_str(),
                sink.url,
                events.join(",")
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery: one bounded queue and one worker per sink, so a sink that is down delays no other.
// ---------------------------------------------------------------------------------------------

/// The handle the controller keeps and clones; dropping every clone ends the workers once their
/// queues are empty.
#[derive(Clone)]
pub struct Notifier {
    queues: Arc<[SinkQueue]>,
    metrics: Arc<Metrics>,
}

struct SinkQueue {
    sink: SinkType,
    events: BTreeSet<EventKind>,
    sender: mpsc::Sender<Arc<Notification>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client for notifications: {0}")]
pub struct StartError(String);

const OUTCOME_DELIVERED: &str = "delivered";
const OUTCOME_FAILED: &str = "failed";
const OUTCOME_DROPPED: &str = "dropped";

impl Notifier {
    /// Spawns one worker per configured sink on the current tokio runtime (so it must be called
    /// inside one). With no sink it spawns nothing and `notify` does nothing.
    pub fn start(settings: NotifySettings, metrics: Arc<Metrics>) -> Result<Notifier, StartError> {
        let mut queues = Vec::with_capacity(settings.sinks.len());
        if !settings.sinks.is_empty() {
            let client = http_client(&settings.delivery)?;
            for sink in settings.sinks {
                let (sender, receiver) = mpsc::channel(settings.delivery.queue_capacity.max(1));
                let worker = Worker {
                    sink: sink.sink,
                    url: sink.url,
                    client: client.clone(),
                    delivery: settings.delivery,
                    metrics: metrics.clone(),
                };
                tokio::spawn(worker.run(receiver));
                queues.push(SinkQueue {
                    sink: sink.sink,
                    events: sink.events,
                    sender,
                });
            }
        }
        Ok(Notifier {
            queues: queues.into(),
            metrics,
        })
    }

    /// Queues `notification` for each sink that subscribed to its event, without waiting: a full
    /// queue drops it for that sink (counted as `dropped`, logged).
    pub fn notify(&self, notification: Notification) {
        let event = notification.event.kind();
        let notification = Arc::new(notification);
        for queue in self
            .queues
            .iter()
            .filter(|queue| queue.events.contains(&event))
        {
            if queue.sender.try_send(notification.clone()).is_err() {
                self.metrics
                    .notification(queue.sink.as_str(), event.as_str(), OUTCOME_DROPPED);
                tracing::warn!(
                    sink = queue.sink.as_str(),
                    event = event.as_str(),
                    workload = %notification.workload,
                    "notification dropped: the sink's queue is full"
                );
            }
        }
    }
}

fn http_client(delivery: &DeliverySettings) -> Result<reqwest::Client, StartError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    // The same crypto provider as the Kubernetes client, chosen here rather than installed
    // process-wide, which would be a side effect on every other TLS user.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|err| StartError(err.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(delivery.request_timeout)
        // A webhook that redirects is misconfigured; following it would send the payload
        // somewhere the operator did not name.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("envroll/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| StartError(err.without_url().to_string()))
}

struct Worker {
    sink: SinkType,
    url: WebhookUrl,
    client: reqwest::Client,
    delivery: DeliverySettings,
    metrics: Arc<Metrics>,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Arc<Notification>>) {
        while let Some(notification) = queue.recv().await {
            let event = notification.event.kind();
            let body = render(self.sink, &notification).to_string();
            match self.deliver(body).await {
                Ok(()) => {
                    self.metrics.notification(
                        self.sink.as_str(),
                        event.as_str(),
                        OUTCOME_DELIVERED,
                    );
                    tracing::debug!(
                        sink = self.sink.as_str(),
                        event = event.as_str(),
                        workload = %notification.workload,
                        "notification delivered"
                    );
                }
                Err(failure) => {
                    self.metrics
                        .notification(self.sink.as_str(), event.as_str(), OUTCOME_FAILED);
                    tracing::warn!(
                        sink = self.sink.as_str(),
                        event = event.as_str(),
                        workload = %notification.workload,
                        error = %failure,
                        "notification not delivered"
                    );
                }
            }
        }
    }

    async fn deliver(&self, body: String) -> Result<(), DeliveryFailure> {
        let mut backoff = self.delivery.first_backoff;
        let mut attempt = 1;
        loop {
            let failure = match self.post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !failure.is_retryable() || attempt >= self.delivery.attempts {
                return Err(DeliveryFailure {
                    attempts: attempt,
                    last: failure,
                });
            }
            let wait = failure
                .retry_after()
                .map_or(backoff, |asked| asked.min(self.delivery.max_retry_after));
            tracing::debug!(
                sink = self.sink.as_str(),
                attempt,
                error = %failure,
                wait = %humantime::format_duration(wait),
                "notification will be retried"
            );
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }

    async fn post(&self, body: String) -> Result<(), AttemptFailure> {
        let response = self
            .client
            .post(self.url.0.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| self.transport_failure(err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        Err(AttemptFailure::Status {
            status,
            retry_after,
        })
    }

    fn transport_failure(&self, err: reqwest::Error) -> AttemptFailure {
        if err.is_timeout() {
            return AttemptFailure::Timeout(self.delivery.request_timeout);
        }
        let connecting = err.is_connect();
        // reqwest's own message names the URL; its causes (hyper, io) do not, and the URL is
        // scrubbed from them all the same in case a future cause quotes it.
        let err = err.without_url();
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let detail = if causes.is_empty() {
            err.to_string()
        } else {
            causes.join(": ")
        };
        let detail = scrub(&detail, &self.url);
        if connecting {
            AttemptFailure::Connect(detail)
        } else {
            AttemptFailure::Transport(detail)
        }
    }
}

fn scrub(text: &str, url: &WebhookUrl) -> String {
    let mut text = text.replace(url.0.as_str(), "<redacted>");
    if url.0.path() != "/" {
        text = text.replace(url.0.path(), "/<redacted>");
    }
    text
}

/// `Retry-After` in seconds; the HTTP-date form is not used by the chat services and falls back
/// to the backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Why one try failed.
#[derive(Debug, PartialEq, Eq)]
enum AttemptFailure {
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    Timeout(Duration),
    Connect(String),
    Transport(String),
}

impl AttemptFailure {
    /// A 4xx other than 429 will fail the same way again (a revoked or wrong URL, a payload the
    /// receiver refuses); everything else may be transient.
    fn is_retryable(&self) -> bool {
        match self {
            AttemptFailure::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            AttemptFailure::Timeout(_)
            | AttemptFailure::Connect(_)
            | AttemptFailure::Transport(_) => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptFailure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Status { status, .. } => write!(f, "the receiver answered {status}"),
            AttemptFailure::Timeout(timeout) => {
                write!(
                    f,
                    "no answer within {}",
                    humantime::format_duration(*timeout)
                )
            }
            AttemptFailure::Connect(detail) => write!(f, "cannot connect: {detail}"),
            AttemptFailure::Transport(detail) => write!(f, "request failed: {detail}"),
        }
    }
}

#[derive(Debug)]
struct DeliveryFailure {
    attempts: u32,
    last: AttemptFailure,
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tries = if self.attempts == 1 { "try" } else { "tries" };
        write!(f, "{} ({} {tries})", self.last, self.attempts)
    }
}

#[cfg(test)]
mod tests;
