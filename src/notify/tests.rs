use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use super::*;

/// 2026-01-01T00:00:00Z
const NEW_YEAR: u64 = 1_767_225_600;

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
        timestamp: UNIX_EPOCH + Duration::from_secs(NEW_YEAR),
    }
}

fn stalled() -> Notification {
    notification(RolloutEvent::Stalled {
        cause: "CrashLoopBackOff".to_string(),
    })
}

fn succeeded() -> Notification {
    notification(RolloutEvent::Succeeded {
        duration: Duration::from_millis(65_400),
    })
}

/// Two sources, three changes coalesced into one rollout.
fn coalesced(event: RolloutEvent) -> Notification {
    let mut notification = notification(event);
    notification.changed_sources.push(SourceRef {
        kind: SourceKind::Secret,
        name: "api-tls".to_string(),
    });
    notification.coalesced_changes = 3;
    notification
}

// --- payloads -------------------------------------------------------------------------------

#[test]
fn slack_gets_mrkdwn_text() {
    assert_eq!(
        render(SinkType::Slack, &notification(RolloutEvent::Triggered)),
        json!({ "text": "*Rollout triggered: Deployment shop/api*\nChanged: ConfigMap api-config" })
    );
    assert_eq!(
        render(SinkType::Slack, &succeeded()),
        json!({ "text": "*Rollout succeeded: Deployment shop/api in 1m 5s*\nChanged: ConfigMap api-config" })
    );
}

#[test]
fn slack_text_escapes_its_control_characters() {
    let mut notification = stalled();
    notification.event = RolloutEvent::Stalled {
        cause: "<probe & restart>".to_string(),
    };
    assert_eq!(
        render(SinkType::Slack, &notification),
        json!({ "text": "*Rollout stalled: Deployment shop/api: &lt;probe &amp; restart&gt;*\nChanged: ConfigMap api-config" })
    );
}

#[test]
fn google_chat_gets_text_with_the_coalesced_count() {
    assert_eq!(
        render(
            SinkType::GoogleChat,
            &coalesced(RolloutEvent::Stalled {
                cause: "CreateContainerConfigError".to_string()
            })
        ),
        json!({ "text": "*Rollout stalled: Deployment shop/api: CreateContainerConfigError*\nChanged: ConfigMap api-config, Secret api-tls (3 changes)" })
    );
}

fn teams_card(color: &str, headline: &str, facts: Value) -> Value {
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
                        "text": headline,
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

#[test]
fn teams_gets_an_adaptive_card_per_event() {
    assert_eq!(
        render(SinkType::Teams, &coalesced(RolloutEvent::Triggered)),
        teams_card(
            "Accent",
            "Rollout triggered: Deployment shop/api",
            json!([
                { "title": "Workload", "value": "Deployment shop/api" },
                { "title": "Changed", "value": "ConfigMap api-config, Secret api-tls (3 changes)" },
                { "title": "Time", "value": "2026-01-01T00:00:00Z" }
            ])
        )
    );
    assert_eq!(
        render(SinkType::Teams, &succeeded()),
        teams_card(
            "Good",
            "Rollout succeeded: Deployment shop/api in 1m 5s",
            json!([
                { "title": "Workload", "value": "Deployment shop/api" },
                { "title": "Changed", "value": "ConfigMap api-config" },
                { "title": "Duration", "value": "1m 5s" },
                { "title": "Time", "value": "2026-01-01T00:00:00Z" }
            ])
        )
    );
    assert_eq!(
        render(SinkType::Teams, &stalled()),
        teams_card(
            "Attention",
            "Rollout stalled: Deployment shop/api: CrashLoopBackOff",
            json!([
                { "title": "Workload", "value": "Deployment shop/api" },
                { "title": "Changed", "value": "ConfigMap api-config" },
                { "title": "Cause", "value": "CrashLoopBackOff" },
                { "title": "Time", "value": "2026-01-01T00:00:00Z" }
            ])
        )
    );
}

#[test]
fn the_webhook_gets_every_field() {
    assert_eq!(
        render(SinkType::Webhook, &coalesced(RolloutEvent::Triggered)),
        json!({
            "event": "triggered",
            "workload": { "kind": "Deployment", "namespace": "shop", "name": "api" },
            "changedSources": [
                { "kind": "ConfigMap", "name": "api-config" },
                { "kind": "Secret", "name": "api-tls" }
            ],
            "coalescedChanges": 3,
            "timestamp": "2026-01-01T00:00:00Z",
            "summary": "Rollout triggered: Deployment shop/api"
        })
    );
    assert_eq!(
        render(SinkType::Webhook, &succeeded()),
        json!({
            "event": "succeeded",
            "workload": { "kind": "Deployment", "namespace": "shop", "name": "api" },
            "changedSources": [{ "kind": "ConfigMap", "name": "api-config" }],
            "coalescedChanges": 1,
            "durationSeconds": 65.4,
            "timestamp": "2026-01-01T00:00:00Z",
            "summary": "Rollout succeeded: Deployment shop/api in 1m 5s"
        })
    );
    assert_eq!(
        render(SinkType::Webhook, &stalled()),
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
}

#[test]
fn a_rollout_without_known_sources_says_so() {
    let mut notification = notification(RolloutEvent::Triggered);
    notification.changed_sources.clear();
    assert_eq!(
        render(SinkType::GoogleChat, &notification),
        json!({ "text": "*Rollout triggered: Deployment shop/api*\nChanged: unknown" })
    );
}

// --- settings -------------------------------------------------------------------------------

const SLACK_URL: &str = "https://hooks.slack.com/services/T0/B0/secret-token";

fn settings(variables: &[(&str, &str)]) -> Result<NotifySettings, SettingsError> {
    let variables: HashMap<String, String> = variables
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    NotifySettings::from_env(|name| variables.get(name).cloned())
}

fn problem_of(variables: &[(&str, &str)]) -> String {
    let error = settings(variables).expect_err("the settings are refused");
    let message = error.to_string();
    assert!(
        !message.contains("secret-token"),
        "the error shows the URL: {message}"
    );
    message
}

/// A file in the temporary directory, unique to the test, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(test: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("envroll-notify-{test}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn nothing_set_means_no_sink_and_default_delivery() {
    assert_eq!(settings(&[]).unwrap(), NotifySettings::default());
    assert_eq!(settings(&[]).unwrap().to_string(), "none");
}

#[test]
fn a_url_from_env_gets_every_event() {
    let settings = settings(&[("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL)]).unwrap();
    assert_eq!(settings.sinks.len(), 1);
    assert_eq!(settings.sinks[0].sink, SinkType::Slack);
    assert_eq!(settings.sinks[0].url.0.as_str(), SLACK_URL);
    assert_eq!(
        settings.sinks[0].events,
        EventKind::ALL.into_iter().collect()
    );
}

#[test]
fn a_url_file_is_read_and_trimmed() {
    let file = TempFile::new("url-file", &format!("{SLACK_URL}\n"));
    let settings = settings(&[("ENVROLL_NOTIFY_TEAMS_URL_FILE", file.path())]).unwrap();
    assert_eq!(settings.sinks[0].sink, SinkType::Teams);
    assert_eq!(settings.sinks[0].url.0.as_str(), SLACK_URL);
}

#[test]
fn each_sink_selects_its_events() {
    let settings = settings(&[
        ("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL),
        ("ENVROLL_NOTIFY_SLACK_EVENTS", " Stalled, succeeded ,"),
        (
            "ENVROLL_NOTIFY_GOOGLE_CHAT_URL",
            "https://chat.googleapis.com/v1/spaces/A/messages?key=k&token=t",
        ),
        (
            "ENVROLL_NOTIFY_WEBHOOK_URL",
            "http://receiver.ops.svc:8080/envroll",
        ),
        ("ENVROLL_NOTIFY_WEBHOOK_EVENTS", "triggered"),
    ])
    .unwrap();
    let events: Vec<_> = settings
        .sinks
        .iter()
        .map(|sink| (sink.sink, sink.events.iter().copied().collect::<Vec<_>>()))
        .collect();
    assert_eq!(
        events,
        [
            (
                SinkType::Slack,
                vec![EventKind::Succeeded, EventKind::Stalled]
            ),
            (SinkType::GoogleChat, EventKind::ALL.to_vec()),
            (SinkType::Webhook, vec![EventKind::Triggered]),
        ]
    );
}

#[test]
fn empty_variables_count_as_unset() {
    let settings = settings(&[
        ("ENVROLL_NOTIFY_SLACK_URL", ""),
        ("ENVROLL_NOTIFY_SLACK_EVENTS", ""),
        ("ENVROLL_NOTIFY_TEAMS_URL", SLACK_URL),
        ("ENVROLL_NOTIFY_TEAMS_URL_FILE", " "),
        ("ENVROLL_NOTIFY_TIMEOUT", ""),
    ])
    .unwrap();
    assert_eq!(settings.sinks.len(), 1);
    assert_eq!(settings.sinks[0].sink, SinkType::Teams);
    assert_eq!(settings.delivery, DeliverySettings::default());
}

#[test]
fn the_timeout_is_a_duration() {
    let settings = settings(&[("ENVROLL_NOTIFY_TIMEOUT", "2500ms")]).unwrap();
    assert_eq!(
        settings.delivery.request_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(
        problem_of(&[("ENVROLL_NOTIFY_TIMEOUT", "soon")]),
        "ENVROLL_NOTIFY_TIMEOUT: \"soon\" is not a duration above zero, such as 5s"
    );
    assert!(problem_of(&[("ENVROLL_NOTIFY_TIMEOUT", "0s")]).starts_with("ENVROLL_NOTIFY_TIMEOUT: "));
}

#[test]
fn a_malformed_url_names_the_variable_but_not_the_value() {
    for malformed in [
        "hooks.slack.com/services/T0/B0/secret-token",
        "ftp://hooks.slack.com/services/T0/B0/secret-token",
        "https://hooks slack.com/services/T0/B0/secret-token",
    ] {
        assert_eq!(
            problem_of(&[("ENVROLL_NOTIFY_SLACK_URL", malformed)]),
            "ENVROLL_NOTIFY_SLACK_URL: does not hold an http or https URL with a host (value not shown: it is a credential)"
        );
    }
    let file = TempFile::new("malformed", "secret-token");
    assert!(
        problem_of(&[("ENVROLL_NOTIFY_WEBHOOK_URL_FILE", file.path())])
            .starts_with("ENVROLL_NOTIFY_WEBHOOK_URL_FILE: does not hold")
    );
}

#[test]
fn an_unreadable_file_names_the_variable_and_the_path() {
    let message = problem_of(&[("ENVROLL_NOTIFY_SLACK_URL_FILE", "/nonexistent/slack-url")]);
    assert!(
        message.starts_with("ENVROLL_NOTIFY_SLACK_URL_FILE: cannot read /nonexistent/slack-url: "),
        "{message}"
    );
}

#[test]
fn a_url_and_a_url_file_together_are_ambiguous() {
    assert_eq!(
        problem_of(&[
            ("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL),
            ("ENVROLL_NOTIFY_SLACK_URL_FILE", "/etc/envroll/slack-url"),
        ]),
        "ENVROLL_NOTIFY_SLACK_URL: is set together with ENVROLL_NOTIFY_SLACK_URL_FILE; set one of them"
    );
}

#[test]
fn events_without_a_url_are_a_mistake() {
    assert_eq!(
        problem_of(&[("ENVROLL_NOTIFY_TEAMS_EVENTS", "stalled")]),
        "ENVROLL_NOTIFY_TEAMS_EVENTS: is set but neither ENVROLL_NOTIFY_TEAMS_URL nor ENVROLL_NOTIFY_TEAMS_URL_FILE is"
    );
}

#[test]
fn unknown_or_no_events_name_the_variable() {
    assert_eq!(
        problem_of(&[
            ("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL),
            ("ENVROLL_NOTIFY_SLACK_EVENTS", "stalled,failed"),
        ]),
        "ENVROLL_NOTIFY_SLACK_EVENTS: unknown event \"failed\"; the events are triggered, succeeded and stalled"
    );
    assert_eq!(
        problem_of(&[
            ("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL),
            ("ENVROLL_NOTIFY_SLACK_EVENTS", " , "),
        ]),
        "ENVROLL_NOTIFY_SLACK_EVENTS: names no event; leave it unset for all of them"
    );
}

#[test]
fn debug_and_display_of_settings_redact_urls() {
    let settings = settings(&[
        ("ENVROLL_NOTIFY_SLACK_URL", SLACK_URL),
        ("ENVROLL_NOTIFY_SLACK_EVENTS", "stalled"),
        (
            "ENVROLL_NOTIFY_WEBHOOK_URL",
            "http://user:secret-token@receiver:8080/hook?secret-token",
        ),
    ])
    .unwrap();
    assert_eq!(
        settings.to_string(),
        "slack (https://hooks.slack.com/<redacted>): stalled; \
         webhook (http://receiver/<redacted>): triggered,succeeded,stalled"
    );
    let debug = format!("{settings:?} {settings:#?}");
    assert!(!debug.contains("secret-token"), "{debug}");
    assert!(
        debug.contains("WebhookUrl(https://hooks.slack.com/<redacted>)"),
        "{debug}"
    );
}

// --- delivery decisions ---------------------------------------------------------------------

#[test]
fn only_throttling_server_errors_and_transport_failures_are_retried() {
    let status = |code: u16| AttemptFailure::Status {
        status: StatusCode::from_u16(code).unwrap(),
        retry_after: None,
    };
    for retried in [429, 500, 502, 503, 504] {
        assert!(status(retried).is_retryable(), "{retried}");
    }
    for final_answer in [301, 400, 401, 403, 404, 410, 413] {
        assert!(!status(final_answer).is_retryable(), "{final_answer}");
    }
    assert!(AttemptFailure::Timeout(Duration::from_secs(1)).is_retryable());
    assert!(AttemptFailure::Connect("refused".to_string()).is_retryable());
    assert!(AttemptFailure::Transport("reset".to_string()).is_retryable());
}

#[test]
fn retry_after_is_read_in_seconds() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
}

#[test]
fn a_failure_says_why_and_how_often_without_the_url() {
    let url = WebhookUrl::parse(SLACK_URL).unwrap();
    assert_eq!(
        scrub(
            &format!("error sending request for url ({SLACK_URL})"),
            &url
        ),
        "error sending request for url (<redacted>)"
    );
    assert_eq!(
        scrub("POST /services/T0/B0/secret-token failed", &url),
        "POST /<redacted> failed"
    );
    let failure = DeliveryFailure {
        attempts: 3,
        last: AttemptFailure::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    };
    assert_eq!(
        failure.to_string(),
        "the receiver answered 503 Service Unavailable (3 tries)"
    );
    let failure = DeliveryFailure {
        attempts: 1,
        last: AttemptFailure::Timeout(Duration::from_millis(1500)),
    };
    assert_eq!(failure.to_string(), "no answer within 1s 500ms (1 try)");
}

#[test]
fn without_sinks_the_notifier_needs_no_runtime_and_does_nothing() {
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::start(NotifySettings::default(), metrics.clone()).unwrap();
    notifier.notify(stalled());
    assert!(!metrics.encode().contains("envroll_notifications_total{"));
}
