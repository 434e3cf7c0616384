//! `envroll status`: every managed workload in scope, read from the cluster with the caller's
//! identity: its sources, the config hash its pod template runs, whether the operator's decision
//! on the live state is a rollout (the decision `explain` shows), whether a rollout envroll
//! triggered is still in progress, and the last outcome envroll reported.
//!
//! Read-only. Two things live only in the operator's memory and are not shown as such: a change
//! held back while a rollout is in progress (it shows as pending and in progress), and the hourly
//! budget (a throttled change shows as pending, with `RolloutThrottled` as the last outcome).
//!
//! The pure part (`workload_status`, `rollout_in_progress`, rendering) is unit-tested; `status`
//! does the reads.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::analysis::{Keys, SourceKind, Via, WorkloadKind};
use crate::explain::write_table;
use crate::lifecycle::{progress, Progress, RolloutStatus};
use crate::live::{
    explain_observed, failure, referenced_sources, LiveExplanation, LiveState, SourceRead,
    SourceReader,
};
use crate::store::SourceKey;
use crate::workload::{analyse_workload, namespace_or_default, Observed, Workload};

/// The reporting controller of envroll's Events.
pub const REPORTING_CONTROLLER: &str = "envroll";
/// envroll patched the workload's pod template.
pub const TRIGGERED: &str = "RolloutTriggered";
/// The outcomes envroll reports after a rollout, and the budget's.
pub const SUCCEEDED: &str = "RolloutSucceeded";
pub const STALLED: &str = "RolloutStalled";
pub const THROTTLED: &str = "RolloutThrottled";

/// Which workloads `status` looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
    Workload {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
}

impl Scope {
    fn namespace(&self) -> Option<&str> {
        match self {
            Scope::AllNamespaces => None,
            Scope::Namespace(namespace) | Scope::Workload { namespace, .. } => Some(namespace),
        }
    }
}

/// The whole report, as `status -o json` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Managed workloads (or the one asked for), by namespace, kind and name.
    pub workloads: Vec<WorkloadStatus>,
    /// Workloads, or lists of them, the caller could not read, with the reason: their state is
    /// unknown (never taken for "none").
    pub unknown: Vec<Unreadable>,
}

impl StatusReport {
    /// Whether every workload in scope could be read.
    pub fn complete(&self) -> bool {
        self.unknown.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    pub kind: WorkloadKind,
    /// `null`: every namespace.
    pub namespace: Option<String>,
    /// `null`: the list of that kind.
    pub name: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// The operator's decision on the live state, in one word.
    pub state: LiveState,
    /// The decision on the live state is a rollout (the operator rolls out, or, with a rollout of
    /// its own in progress, holds the change until that one is done).
    pub rollout_pending: bool,
    /// A rollout envroll triggered has not finished: its `RolloutTriggered` Event is newer than
    /// its last `RolloutSucceeded`/`RolloutStalled`, and the workload's status says its rollout is
    /// still going. `null` when envroll's Events could not be read.
    pub rollout_in_progress: Option<bool>,
    /// The config hash the pod template runs (`envroll.dev/config-hash`).
    pub template_hash: Option<String>,
    /// The config hash of the sources now; `null` when it cannot be computed (a source is
    /// missing or unreadable).
    pub config_hash: Option<String>,
    /// The decision in words, as `explain` says it.
    pub decision: String,
    pub sources: Vec<SourceStatus>,
    /// envroll's newest `RolloutTriggered` Event.
    pub last_rollout: Option<EventSummary>,
    /// envroll's newest `RolloutSucceeded`, `RolloutStalled` or `RolloutThrottled` Event.
    pub last_outcome: Option<EventSummary>,
    /// Why envroll's Events could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_unknown: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Whether a source exists, as the caller could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourcePresence {
    Present,
    /// The API server says it does not exist.
    Missing,
    /// It could not be read (`readError` says why): it may well exist.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub kind: SourceKind,
    pub name: String,
    pub optional: bool,
    /// How the pod template consumes it, each way once.
    pub via: Vec<Via>,
    /// The keys that count; `null` is every key.
    pub keys: Keys,
    /// A change to it rolls the workload out.
    pub rollout: bool,
    pub reason: String,
    pub presence: SourcePresence,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
}

/// One of envroll's Events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    pub reason: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When it last happened (RFC 3339, seconds), if the Event says.
    pub time: Option<String>,
    pub note: String,
}

/// An Event of envroll about a workload, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The UID of the object it is about, when recorded: a namesake created later is another
    /// object.
    pub uid: Option<String>,
    pub reason: String,
    pub type_: String,
    pub time: Option<Timestamp>,
    pub note: String,
}

impl RecordedEvent {
    /// envroll's Events only; `None` for any other.
    pub fn from_event(event: &Event) -> Option<Self> {
        if event.reporting_controller.as_deref() != Some(REPORTING_CONTROLLER) {
            return None;
        }
        let regarding = event.regarding.as_ref()?;
        let time = event
            .series
            .as_ref()
            .map(|series| series.last_observed_time.0)
            .or_else(|| event.event_time.as_ref().map(|time| time.0))
            .or_else(|| event.deprecated_last_timestamp.as_ref().map(|time| time.0))
            .or_else(|| {
                event
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|time| time.0)
            });
        Some(RecordedEvent {
            kind: regarding.kind.clone().unwrap_or_default(),
            namespace: regarding
                .namespace
                .clone()
                .or_else(|| event.metadata.namespace.clone())
                .unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            uid: regarding.uid.clone().filter(|uid| !uid.is_empty()),
            reason: event.reason.clone().unwrap_or_default(),
            type_: event.type_.clone().unwrap_or_default(),
            time,
            note: event.note.clone().unwrap_or_default(),
        })
    }

    fn is_about(&self, kind: WorkloadKind, namespace: &str, name: &str, uid: Option<&str>) -> bool {
        self.kind == kind.as_str()
            && self.namespace == namespace
            && self.name == name
            && match (self.uid.as_deref(), uid) {
                (Some(recorded), Some(uid)) => recorded == uid,
                _ => true,
            }
    }

    fn summary(&self) -> EventSummary {
        EventSummary {
            reason: self.reason.clone(),
            type_: self.type_.clone(),
            time: self
                .time
                .and_then(|time| Timestamp::from_second(time.as_second()).ok())
                .map(|time| time.to_string()),
            note: self.note.clone(),
        }
    }
}

/// The newest of `events` with one of `reasons` (the later one in the list when two have the
/// same time, or none).
fn newest<'a>(events: &[&'a RecordedEvent], reasons: &[&str]) -> Option<&'a RecordedEvent> {
    events
        .iter()
        .copied()
        .filter(|event| reasons.contains(&event.reason.as_str()))
        .max_by_key(|event| event.time)
}

/// Whether envroll's last rollout, triggered at `triggered`, is still in progress: not followed
/// by an outcome (`finished`, the newest `RolloutSucceeded`/`RolloutStalled`), and not done by
/// the workload's status, judged as the operator judges it (`lifecycle::progress`: a stalled
/// rollout is not in progress).
pub fn rollout_in_progress(
    status: &RolloutStatus,
    triggered: Option<Timestamp>,
    finished: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let Some(triggered) = triggered else {
        return false;
    };
    if finished.is_some_and(|finished| finished >= triggered) {
        return false;
    }
    let elapsed = Duration::from_secs(
        u64::try_from(now.as_second().saturating_sub(triggered.as_second())).unwrap_or(0),
    );
    progress(status, status.generation, elapsed) == Progress::InProgress
}

/// What `status` says of one workload, from its live explanation, how its sources read, its
/// rollout status and envroll's Events about it (`Err`: why they could not be read).
pub fn workload_status(
    explanation: LiveExplanation,
    source_read: impl Fn(&SourceKey) -> Option<SourcePresenceRead>,
    rollout: &RolloutStatus,
    events: Result<Vec<&RecordedEvent>, &str>,
    now: Timestamp,
) -> WorkloadStatus {
    let analysis = explanation.analysis;
    let sources = analysis
        .sources
        .iter()
        .map(|source| {
            let key = SourceKey::new(source.kind, &analysis.namespace, &source.name);
            let (presence, read_error) = match source_read(&key) {
                Some(SourcePresenceRead::Present) => (SourcePresence::Present, None),
                Some(SourcePresenceRead::Missing) => (SourcePresence::Missing, None),
                Some(SourcePresenceRead::Unreadable(reason)) => {
                    (SourcePresence::Unknown, Some(reason))
                }
                None => (SourcePresence::Unknown, Some("not read".to_string())),
            };
            let via: BTreeSet<Via> = source.consumers.iter().map(|c| c.via).collect();
            SourceStatus {
                kind: source.kind,
                name: source.name.clone(),
                optional: source.optional,
                via: via.into_iter().collect(),
                keys: source.keys.clone(),
                rollout: source.rollout,
                reason: source.reason.clone(),
                presence,
                read_error,
            }
        })
        .collect();
    let (last_rollout, last_outcome, in_progress, events_unknown) = match events {
        Ok(events) => {
            let triggered = newest(&events, &[TRIGGERED]);
            let finished = newest(&events, &[SUCCEEDED, STALLED]);
            let outcome = newest(&events, &[SUCCEEDED, STALLED, THROTTLED]);
            let in_progress = rollout_in_progress(
                rollout,
                triggered.and_then(|event| event.time),
                finished.and_then(|event| event.time),
                now,
            );
            (
                triggered.map(RecordedEvent::summary),
                outcome.map(RecordedEvent::summary),
                Some(in_progress),
                None,
            )
        }
        Err(reason) => (None, None, None, Some(reason.to_string())),
    };
    WorkloadStatus {
        kind: analysis.kind,
        namespace: analysis.namespace,
        name: analysis.name,
        state: explanation.state,
        rollout_pending: explanation.rollout_pending,
        rollout_in_progress: in_progress,
        template_hash: explanation.template_hash,
        config_hash: explanation.config_hash,
        decision: explanation.status,
        sources,
        last_rollout,
        last_outcome,
        events_unknown,
        warnings: analysis.warnings,
    }
}

/// How a source read, for [`workload_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePresenceRead {
    Present,
    Missing,
    Unreadable(String),
}

impl SourcePresenceRead {
    fn of(read: &SourceRead) -> Self {
        match read {
            Ok(Some(_)) => SourcePresenceRead::Present,
            Ok(None) => SourcePresenceRead::Missing,
            Err(reason) => SourcePresenceRead::Unreadable(reason.clone()),
        }
    }
}

/// Reads the workloads in scope, their sources and envroll's Events, and reports. A target
/// that does not exist is an error; anything the caller may not read is reported as unknown.
pub async fn status(client: Client, scope: &Scope) -> Result<StatusReport, String> {
    let events = read_events(&client, scope.namespace()).await;
    let events = events.as_ref().map(Vec::as_slice).map_err(String::as_str);
    let mut reader = SourceReader::new(client.clone());
    let mut report = StatusReport::default();
    let kinds = match scope {
        Scope::Workload { kind, .. } => vec![*kind],
        _ => WorkloadKind::ALL.to_vec(),
    };
    let now = Timestamp::now();
    for kind in kinds {
        let reading = Reading {
            client: &client,
            scope,
            events,
            now,
        };
        match kind {
            WorkloadKind::Deployment => {
                reading
                    .collect::<Deployment>(&mut reader, &mut report)
                    .await?
            }
            WorkloadKind::StatefulSet => {
                reading
                    .collect::<StatefulSet>(&mut reader, &mut report)
                    .await?
            }
            WorkloadKind::DaemonSet => {
                reading
                    .collect::<DaemonSet>(&mut reader, &mut report)
                    .await?
            }
        }
    }
    report
        .workloads
        .sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));
    Ok(report)
}

struct Reading<'a> {
    client: &'a Client,
    scope: &'a Scope,
    events: Result<&'a [RecordedEvent], &'a str>,
    now: Timestamp,
}

impl Reading<'_> {
    async fn collect<W: Workload>(
        &self,
        reader: &mut SourceReader,
        report: &mut StatusReport,
    ) -> Result<(), String> {
        let unreadable =
            |namespace: Option<&str>, name: Option<&str>, problem: kube::Error| Unreadable {
                kind: W::KIND,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                reason: failure(&problem),
            };
        let observed: Vec<Observed<W>> = match self.scope {
            Scope::Workload {
                namespace, name, ..
            } => {
                let api: Api<Observed<W>> = Api::namespaced(self.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(found)) => vec![found],
                    Ok(None) => return Err(format!("{} {namespace}/{name} not found", W::KIND)),
                    Err(problem) => {
                        report
                            .unknown
                            .push(unreadable(Some(namespace), Some(name), problem));
                        return Ok(());
                    }
                }
            }
            Scope::Namespace(namespace) => {
                let api: Api<Observed<W>> = Api::namespaced(self.client.clone(), namespace);
                match api.list(&ListParams::default()).await {
                    Ok(list) => managed(list.items),
                    Err(problem) => {
                        report
                            .unknown
                            .push(unreadable(Some(namespace), None, problem));
                        return Ok(());
                    }
                }
            }
            Scope::AllNamespaces => {
                let api: Api<Observed<W>> = Api::all(self.client.clone());
                match api.list(&ListParams::default()).await {
                    Ok(list) => managed(list.items),
                    Err(problem) => {
                        report.unknown.push(unreadable(None, None, problem));
                        return Ok(());
                    }
                }
            }
        };
        reader
            .prefetch(
                observed
                    .iter()
                    .flat_map(|observed| referenced_sources(&observed.workload)),
            )
            .await;
        for observed in &observed {
            let workload = &observed.workload;
            let (namespace, name) = (
                namespace_or_default(workload.namespace()),
                workload.name_any(),
            );
            let uid = workload.uid();
            let explanation = explain_observed(reader, observed).await;
            let events = self.events.map(|events| {
                events
                    .iter()
                    .filter(|event| event.is_about(W::KIND, &namespace, &name, uid.as_deref()))
                    .collect()
            });
            report.workloads.push(workload_status(
                explanation,
                |key| reader.get(key).map(SourcePresenceRead::of),
                &workload.rollout_status(),
                events,
                self.now,
            ));
        }
        Ok(())
    }
}

/// The workloads that opted in.
fn managed<W: Workload>(workloads: Vec<Observed<W>>) -> Vec<Observed<W>> {
    workloads
        .into_iter()
        .filter(|observed| analyse_workload(&observed.workload, |_, _| None).managed)
        .collect()
}

/// envroll's Events in the namespace (or every namespace), or why they could not be read. Asks
/// the API server for envroll's only; a server that cannot select by reporting controller gets
/// the plain list, filtered here.
async fn read_events(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<RecordedEvent>, String> {
    let api: Api<Event> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let selected =
        ListParams::default().fields(&format!("reportingController={REPORTING_CONTROLLER}"));
    let list = match api.list(&selected).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 400 => api
            .list(&ListParams::default())
            .await
            .map_err(|problem| failure(&problem))?,
        Err(problem) => return Err(failure(&problem)),
    };
    Ok(list
        .items
        .iter()
        .filter_map(RecordedEvent::from_event)
        .collect())
}

/// The time now, for [`render_table`]'s ages.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// `45s`, `12m`, `3h`, `5d`: how long ago, as kubectl prints ages.
pub fn age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172_800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// The STATE column: the decision, and whether envroll's rollout is in progress.
pub fn state_cell(workload: &WorkloadStatus) -> String {
    let decision = match workload.state {
        LiveState::NotManaged => "not managed",
        LiveState::Unknown => "unknown",
        LiveState::Blocked => "blocked",
        LiveState::NotAdopted => "not adopted",
        LiveState::UpToDate => "up to date",
        LiveState::Pending => "pending",
    };
    match workload.rollout_in_progress {
        Some(true) if workload.state == LiveState::UpToDate => "in progress".to_string(),
        Some(true) => format!("{decision}, in progress"),
        _ => decision.to_string(),
    }
}

fn source_cell(source: &SourceStatus) -> String {
    let via: Vec<&str> = source.via.iter().map(|via| via_name(*via)).collect();
    let mut parts = Vec::new();
    if !via.is_empty() {
        parts.push(via.join("+"));
    }
    let refreshed = !source.via.is_empty()
        && source
            .via
            .iter()
            .all(|via| matches!(via, Via::Volume | Via::Projected));
    parts.push(
        match (source.rollout, refreshed) {
            (true, _) => "rolls out",
            (false, true) => "in place",
            (false, false) => "no rollout",
        }
        .to_string(),
    );
    if source.optional {
        parts.push("optional".to_string());
    }
    match source.presence {
        SourcePresence::Present => {}
        SourcePresence::Missing => parts.push("missing".to_string()),
        SourcePresence::Unknown => parts.push("unknown".to_string()),
    }
    format!("{}/{} ({})", source.kind, source.name, parts.join(", "))
}

/// As `-o json` spells it.
fn via_name(via: Via) -> &'static str {
    match via {
        Via::Env => "env",
        Via::EnvFrom => "envFrom",
        Via::Volume => "volume",
        Via::Projected => "projected",
        Via::SubPath => "subPath",
    }
}

fn outcome_cell(workload: &WorkloadStatus, now: Timestamp) -> String {
    if workload.events_unknown.is_some() {
        return "unknown".to_string();
    }
    let Some(outcome) = &workload.last_outcome else {
        return "-".to_string();
    };
    let when = outcome
        .time
        .as_deref()
        .and_then(|time| time.parse::<Timestamp>().ok())
        .map(|time| format!(" {} ago", age(now.as_second() - time.as_second())))
        .unwrap_or_default();
    format!("{}{when}: {}", outcome.reason, outcome.note)
}

/// Twelve characters of a hash, as the table shows it.
fn short(hash: &Option<String>) -> String {
    hash.as_deref()
        .map(|hash| hash.chars().take(12).collect())
        .unwrap_or_else(|| "-".to_string())
}

/// The report as a table: a row per workload, one more per further source; then one line per
/// thing that could not be read. `namespaces` adds the NAMESPACE column (`-A`).
pub fn render_table(report: &StatusReport, namespaces: bool, now: Timestamp) -> String {
    let mut out = String::new();
    let mut rows: Vec<[String; 6]> = Vec::new();
    for workload in &report.workloads {
        let mut sources = workload.sources.iter().map(source_cell);
        rows.push([
            workload.namespace.clone(),
            format!(
                "{}/{}",
                workload.kind.as_str().to_ascii_lowercase(),
                workload.name
            ),
            sources.next().unwrap_or_else(|| "-".to_string()),
            short(&workload.template_hash),
            state_cell(workload),
            outcome_cell(workload, now),
        ]);
        for source in sources {
            rows.push([
                String::new(),
                String::new(),
                source,
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    if !rows.is_empty() {
        let header = [
            "NAMESPACE",
            "WORKLOAD",
            "SOURCES",
            "HASH",
            "STATE",
            "LAST OUTCOME",
        ];
        let mut table = String::new();
        if namespaces {
            write_table(&mut table, header, &rows);
        } else {
            let rows: Vec<[String; 5]> = rows
                .into_iter()
                .map(|[_, workload, sources, hash, state, outcome]| {
                    [workload, sources, hash, state, outcome]
                })
                .collect();
            let [_, header @ ..] = header;
            write_table(&mut table, header, &rows);
        }
        // `write_table` indents for the blocks of `explain`; a status table starts at the margin.
        for line in table.lines() {
            let _ = writeln!(out, "{}", line.strip_prefix("  ").unwrap_or(line));
        }
    } else if report.unknown.is_empty() {
        out.push_str("no managed Deployment, StatefulSet or DaemonSet found\n");
    }
    // Reasons are long: each is told once, below the table.
    let mut reasons = BTreeSet::new();
    for workload in &report.workloads {
        for source in &workload.sources {
            if let Some(reason) = &source.read_error {
                reasons.insert(format!(
                    "unknown: {} {}/{}: {reason}",
                    source.kind, workload.namespace, source.name
                ));
            }
        }
        if let Some(reason) = &workload.events_unknown {
            reasons.insert(format!("unknown: envroll's Events: {reason}"));
        }
    }
    for reason in reasons {
        let _ = writeln!(out, "{reason}");
    }
    for unknown in &report.unknown {
        let what = match (&unknown.namespace, &unknown.name) {
            (Some(namespace), Some(name)) => format!("{} {namespace}/{name}", unknown.kind),
            (Some(namespace), None) => format!("{}s in namespace {namespace}", unknown.kind),
            (None, _) => format!("{}s in every namespace", unknown.kind),
        };
        let _ = writeln!(out, "unknown: {what}: {}", unknown.reason);
    }
    out
}

/// The report as JSON: `{"workloads": [...], "unknown": [...]}` (README, "`envroll status`").
pub fn render_json(report: &StatusReport) -> String {
    serde_json::to_string_pretty(report).expect("a status report always serializes")
}

#[cfg(test)]
mod tests;
