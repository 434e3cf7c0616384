//! What the operator remembers between events, as plain data: every ConfigMap and Secret in scope
//! reduced to per-key digests (never values), and the reverse index from each source to the
//! managed workloads that reference it. Watch events reach it through [`SourceSync::apply`],
//! which says which sources changed; nothing here does I/O, so all of it is unit-tested.
//!
//! A source is known (its digests are here), absent (the watch listed its scope and it was not
//! there), or unknown (its scope could not be listed, or its data has not been read yet, or the
//! read failed). Decisions never treat unknown as absent.
//!
//! A known source's data is dated by the revision since which the object has held it, not by its
//! current version: a write that changed only a label or an annotation must not look like a config
//! change made after a template edit (`rollout::plan`), or it would roll out once more. The date
//! may come late (an extra rollout) but never early (a missed one): data is dated back only across
//! versions whose data the store saw, one after the other.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::ResourceExt;

use crate::analysis::{SourceKind, SourceMeta, WorkloadAnalysis, WorkloadKind};
use crate::hash::{salt_for, Section, SourceDigests};
use crate::workload::namespace_or_default;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
}

impl SourceKey {
    pub fn new(kind: SourceKind, namespace: &str, name: &str) -> Self {
        SourceKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn of(kind: SourceKind, metadata: &ObjectMeta) -> Self {
        SourceKey {
            kind,
            namespace: namespace_or_default(metadata.namespace.clone()),
            name: metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A `resourceVersion`. Kubernetes calls it opaque; every etcd-backed API server uses the etcd
/// revision, one counter for the whole cluster, which is what lets envroll order a template edit
/// against a config change. Anything that is not such a number cannot be ordered.
pub fn revision(resource_version: Option<&str>) -> Option<u64> {
    resource_version?.parse().ok()
}

/// A ConfigMap or Secret reduced to what decisions and hashes need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub meta: SourceMeta,
    /// A malformed `envroll.dev/ignore`, reported on the workloads that consume the object.
    pub annotation_problem: Option<String>,
    /// The version this record describes.
    pub resource_version: Option<String>,
    /// Digests of that version, when its data has been read. A Secret's watch carries only its
    /// metadata: its data is read while a managed workload consumes it.
    pub data: Data,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Digests(DatedDigests),
    NotRead {
        /// The data read of the version just before this one, which a Secret's metadata-only
        /// watch replaced: once this version is read, data found the same keeps its date, so a
        /// label change does not cost a rollout. Boxed, and kept only while the version is not
        /// read, so that records do not carry it otherwise. `None` once a version has passed
        /// unread: its data, never seen, may have changed and changed back, and a template edit
        /// in between would have read the other data.
        last_read: Option<Box<DatedDigests>>,
    },
    /// Reading this version failed, for the reason given.
    Unreadable {
        reason: String,
        /// As for `NotRead`; or this version's own data, when a read of it had succeeded.
        last_read: Option<Box<DatedDigests>>,
    },
}

/// The digests of a version's data, and since when the object has held that data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatedDigests {
    pub digests: SourceDigests,
    /// The revision of the write that gave the object this data, as far as the store saw: later
    /// writes that left the data as it was do not move it. Never earlier than that write (an
    /// early date could skip a rollout a template edit did not make); it may be later, up to the
    /// version itself, when the store could not see that the data stayed the same. `None` when
    /// the version cannot be ordered.
    pub since: Option<u64>,
}

impl DatedDigests {
    /// Data seen on its own dates from its own version: the store dates it back when it saw the
    /// object hold the same data before.
    fn of_version(digests: SourceDigests, metadata: &ObjectMeta) -> Self {
        DatedDigests {
            digests,
            since: revision(metadata.resource_version.as_deref()),
        }
    }

    /// `before` is data the object held up to this version, with no unseen write between them:
    /// if this version holds the same, it has held it since then.
    fn continue_from(&mut self, before: &DatedDigests) {
        if self.digests == before.digests {
            // `min`: a `before` dated after this version (only out of order) dates nothing.
            self.since = self
                .since
                .map(|own| before.since.map_or(own, |since| since.min(own)));
        }
    }
}

impl Data {
    /// A version whose data is not read yet, with nothing read to compare it with.
    pub const NOT_READ: Data = Data::NotRead { last_read: None };

    /// The read data that this version's data, once read, is compared with to date it.
    fn last_read(&self) -> Option<&DatedDigests> {
        match self {
            Data::Digests(read) => Some(read),
            Data::NotRead { last_read } | Data::Unreadable { last_read, .. } => {
                last_read.as_deref()
            }
        }
    }

    fn into_last_read(self) -> Option<Box<DatedDigests>> {
        match self {
            Data::Digests(read) => Some(Box::new(read)),
            Data::NotRead { last_read } | Data::Unreadable { last_read, .. } => last_read,
        }
    }

    /// Dates the data of a new version by `before`, what the store last read of the object when
    /// no write came between: read data is dated back, unread data keeps it to compare with.
    fn continue_from(&mut self, before: Option<&DatedDigests>) {
        match self {
            Data::Digests(read) => {
                if let Some(before) = before {
                    read.continue_from(before);
                }
            }
            Data::NotRead { last_read } | Data::Unreadable { last_read, .. } => {
                *last_read = before.cloned().map(Box::new);
            }
        }
    }
}

impl SourceRecord {
    fn new(
        kind: SourceKind,
        metadata: &ObjectMeta,
        immutable: Option<bool>,
        data: Data,
    ) -> (SourceKey, Self) {
        let annotations = metadata.annotations.clone().unwrap_or_default();
        let (meta, problem) = SourceMeta::from_object(&annotations, immutable);
        let record = SourceRecord {
            meta,
            annotation_problem: problem.map(|p| p.to_string()),
            resource_version: metadata.resource_version.clone(),
            data,
        };
        (SourceKey::of(kind, metadata), record)
    }

    pub fn digests(&self) -> Option<&SourceDigests> {
        match &self.data {
            Data::Digests(read) => Some(&read.digests),
            _ => None,
        }
    }
}

/// The digests of a ConfigMap's values: unsalted, ConfigMaps are not secret.
pub fn config_map_record(config_map: &ConfigMap) -> (SourceKey, SourceRecord) {
    let text = config_map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), Section::Data, v.as_bytes()));
    let binary = config_map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), Section::BinaryData, v.0.as_slice()));
    let digests =
        SourceDigests::from_values(salt_for(SourceKind::ConfigMap, ""), text.chain(binary));
    SourceRecord::new(
        SourceKind::ConfigMap,
        &config_map.metadata,
        config_map.immutable,
        Data::Digests(DatedDigests::of_version(digests, &config_map.metadata)),
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "Secret {namespace}/{name} has no UID: its values cannot be salted, so they are not digested"
)]
pub struct SecretWithoutUid {
    pub namespace: String,
    pub name: String,
}

/// The digests of a Secret's values, salted with its UID so that a digest in an annotation
/// cannot be looked up in a table of common values (docs/hash.md). A Secret without a UID (never
/// one the API server returns) is refused rather than digested without salt.
pub fn secret_record(secret: &Secret) -> Result<(SourceKey, SourceRecord), SecretWithoutUid> {
    let uid = secret.uid().filter(|uid| !uid.is_empty()).ok_or_else(|| {
        let key = SourceKey::of(SourceKind::Secret, &secret.metadata);
        SecretWithoutUid {
            namespace: key.namespace,
            name: key.name,
        }
    })?;
    // The API server folds stringData into data; a Secret read from a file may still carry it.
    let string_data: BTreeMap<&str, &[u8]> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let data = secret
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| !string_data.contains_key(k.as_str()))
        .map(|(k, v)| (k.as_str(), v.0.as_slice()));
    let values = data
        .chain(string_data.iter().map(|(k, v)| (*k, *v)))
        .map(|(k, v)| (k, Section::Data, v));
    let digests = SourceDigests::from_values(salt_for(SourceKind::Secret, &uid), values);
    Ok(SourceRecord::new(
        SourceKind::Secret,
        &secret.metadata,
        secret.immutable,
        Data::Digests(DatedDigests::of_version(digests, &secret.metadata)),
    ))
}

/// A Secret as its metadata-only watch sees it: present, data not read.
pub fn secret_metadata_record(secret: &PartialObjectMeta<Secret>) -> (SourceKey, SourceRecord) {
    SourceRecord::new(SourceKind::Secret, &secret.metadata, None, Data::NOT_READ)
}

/// What is known of one source when a decision is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceView<'a> {
    Known {
        digests: &'a SourceDigests,
        meta: SourceMeta,
        /// Since when the source has held these digests ([`DatedDigests::since`]), to order its
        /// change against a template edit.
        revision: Option<u64>,
    },
    Absent,
    Unknown(&'a str),
}

/// Why a source is unknown, for a scope that could not be listed.
const NOT_READ_YET: &str = "its data has not been read yet";

#[derive(Debug, Default)]
pub struct SourceStore {
    sources: HashMap<SourceKey, SourceRecord>,
    /// Scopes (kind, namespace; `None` is every namespace) whose list failed, with the reason.
    /// Until they list, nothing in them is known to be absent.
    unlisted: HashMap<(SourceKind, Option<String>), String>,
}

/// How a watch came to report a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reported {
    /// A watch event: a watch delivers every version of an object in order, so the version the
    /// store held is the one just before (or this one again).
    Watched,
    /// A (re-)list: it shows the current version, not the writes since the one the store held.
    Listed,
}

impl SourceStore {
    /// Stores what a watch event reported and says whether anything a decision depends on
    /// changed. The version must be the one after the version held (or the same), as a running
    /// watch reports them: data unchanged from the version held keeps its date. A metadata-only
    /// report of the version already read keeps its digests.
    pub fn upsert(&mut self, key: SourceKey, record: SourceRecord) -> bool {
        self.store_reported(key, record, Reported::Watched)
    }

    /// Stores what a (re-)list reported. Writes between the version held and the listed one went
    /// unseen, so unchanged-looking data of a new version is dated by that version.
    pub fn upsert_listed(&mut self, key: SourceKey, record: SourceRecord) -> bool {
        self.store_reported(key, record, Reported::Listed)
    }

    fn store_reported(&mut self, key: SourceKey, mut record: SourceRecord, how: Reported) -> bool {
        if let Some(existing) = self.sources.get(&key) {
            let same_version = existing.resource_version == record.resource_version;
            if same_version && matches!(record.data, Data::NotRead { .. }) {
                record.data = existing.data.clone();
                record.meta.immutable = existing.meta.immutable;
            }
            let before = if same_version {
                existing.data.last_read()
            } else {
                // Only the held version's own data, read: an unread version's data is unseen.
                match (&existing.data, how) {
                    (Data::Digests(read), Reported::Watched) => Some(read),
                    _ => None,
                }
            };
            record.data.continue_from(before);
            if *existing == record {
                return false;
            }
        }
        self.sources.insert(key, record);
        true
    }

    /// Stores data read with a GET for a source the watch knows, unless the watch has meanwhile
    /// reported a newer version: a slow read must not overwrite newer data, nor bring back an
    /// object whose deletion the watch has reported. Says whether it was stored. A read of a
    /// version the watch has not reported yet is dated by that version: the writes before it
    /// went unseen.
    pub fn record_read(&mut self, key: SourceKey, mut record: SourceRecord) -> bool {
        let Some(existing) = self.sources.get(&key) else {
            return false;
        };
        let newer_known = match (
            revision(existing.resource_version.as_deref()),
            revision(record.resource_version.as_deref()),
        ) {
            (Some(known), Some(read)) => known > read,
            _ => existing.resource_version != record.resource_version,
        };
        if newer_known {
            return false;
        }
        let before = if existing.resource_version == record.resource_version {
            existing.data.last_read()
        } else {
            None
        };
        record.data.continue_from(before);
        self.sources.insert(key, record);
        true
    }

    /// A read of this version failed: decisions wait for a successful one, which is still
    /// compared with the data last read.
    pub fn record_unreadable(&mut self, key: &SourceKey, version: Option<&str>, reason: String) {
        if let Some(existing) = self.sources.get_mut(key) {
            if existing.resource_version.as_deref() == version {
                let last_read = std::mem::replace(&mut existing.data, Data::NOT_READ);
                existing.data = Data::Unreadable {
                    reason,
                    last_read: last_read.into_last_read(),
                };
            }
        }
    }

    /// A source that could not be read at all (for example forbidden): unknown, with the reason,
    /// and no version whose data could date a later read.
    pub fn record_failed_read(&mut self, key: SourceKey, reason: String) {
        let record = SourceRecord {
            meta: SourceMeta::default(),
            annotation_problem: None,
            resource_version: None,
            data: Data::Unreadable {
                reason,
                last_read: None,
            },
        };
        self.sources.insert(key, record);
    }

    /// Forgets the object with the dates of its data: a namesake created later holds its data
    /// since its own creation.
    pub fn remove(&mut self, key: &SourceKey) -> bool {
        self.sources.remove(key).is_some()
    }

    pub fn get(&self, key: &SourceKey) -> Option<&SourceRecord> {
        self.sources.get(key)
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// A source as a decision sees it.
    pub fn view(&self, key: &SourceKey) -> SourceView<'_> {
        match self.sources.get(key) {
            Some(record) => match &record.data {
                Data::Digests(read) => SourceView::Known {
                    digests: &read.digests,
                    meta: record.meta,
                    revision: read.since,
                },
                Data::NotRead { .. } => SourceView::Unknown(NOT_READ_YET),
                Data::Unreadable { reason, .. } => SourceView::Unknown(reason),
            },
            None => match self.unlisted_reason(key) {
                Some(reason) => SourceView::Unknown(reason),
                None => SourceView::Absent,
            },
        }
    }

    /// The metadata the analysis needs (`ignore`, `immutable`), for sources whose record is
    /// complete. A Secret known by its metadata only is left out: its `immutable` is not known.
    pub fn meta(&self, key: &SourceKey) -> Option<SourceMeta> {
        self.sources
            .get(key)
            .filter(|record| record.digests().is_some())
            .map(|record| record.meta)
    }

    fn unlisted_reason(&self, key: &SourceKey) -> Option<&str> {
        self.unlisted
            .get(&(key.kind, Some(key.namespace.clone())))
            .or_else(|| self.unlisted.get(&(key.kind, None)))
            .map(String::as_str)
    }

    /// A scope's list failed (for example forbidden by RBAC): its sources are unknown.
    pub fn mark_unlisted(&mut self, kind: SourceKind, namespace: Option<&str>, reason: String) {
        self.unlisted
            .insert((kind, namespace.map(str::to_string)), reason);
    }

    /// After a (re-)list, forgets the objects of one scope that the list no longer returned: they
    /// were deleted while the watch was down (with the dates of their data, as `remove`). The
    /// scope is known again.
    pub fn retain_listed(
        &mut self,
        kind: SourceKind,
        namespace: Option<&str>,
        listed: &HashSet<SourceKey>,
    ) -> Vec<SourceKey> {
        self.unlisted.remove(&(kind, namespace.map(str::to_string)));
        let gone: Vec<SourceKey> = self
            .sources
            .keys()
            .filter(|key| key.kind == kind)
            .filter(|key| namespace.is_none_or(|ns| key.namespace == ns))
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        for key in &gone {
            self.sources.remove(key);
        }
        gone
    }
}

/// One event of a source watch, reduced to records (kube-runtime's `watcher::Event`).
#[derive(Debug)]
pub enum SourceEvent {
    /// A (re-)list begins.
    ListStarted,
    Listed(SourceKey, SourceRecord),
    ListDone,
    Applied(SourceKey, SourceRecord),
    Deleted(SourceKey),
}

/// The bookkeeping of one source watch (a kind in one namespace, or in all of them).
#[derive(Debug)]
pub struct SourceSync {
    kind: SourceKind,
    namespace: Option<String>,
    /// What the current re-list has returned so far.
    listing: Option<HashSet<SourceKey>>,
}

impl SourceSync {
    pub fn new(kind: SourceKind, namespace: Option<String>) -> Self {
        SourceSync {
            kind,
            namespace,
            listing: None,
        }
    }

    /// Applies one event to the store and returns the sources whose state changed, whose
    /// consumers must be decided again.
    pub fn apply(&mut self, store: &mut SourceStore, event: SourceEvent) -> Vec<SourceKey> {
        match event {
            SourceEvent::ListStarted => {
                self.listing = Some(HashSet::new());
                Vec::new()
            }
            SourceEvent::Listed(key, record) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(key.clone());
                }
                changed(store.upsert_listed(key.clone(), record), key)
            }
            SourceEvent::Applied(key, record) => changed(store.upsert(key.clone(), record), key),
            SourceEvent::Deleted(key) => changed(store.remove(&key), key),
            SourceEvent::ListDone => {
                let listed = self.listing.take().unwrap_or_default();
                store.retain_listed(self.kind, self.namespace.as_deref(), &listed)
            }
        }
    }
}

fn changed(changed: bool, key: SourceKey) -> Vec<SourceKey> {
    if changed {
        vec![key]
    } else {
        Vec::new()
    }
}

/// When each workload's pod template took its current form, as far as the workload watch saw
/// it happen. This orders a template edit against config changes (`rollout::plan`).
#[derive(Debug, Default)]
pub struct TemplateEdits {
    by_workload: HashMap<WorkloadKey, (String, Option<u64>)>,
}

impl TemplateEdits {
    /// The watch reported the workload with this template fingerprint at this revision.
    /// `watched` is false for objects of a (re-)list: a list shows the current state, not the
    /// edit, so a template that differs from the last one seen was edited at some unknown
    /// revision before.
    pub fn observe(
        &mut self,
        workload: &WorkloadKey,
        fingerprint: &str,
        revision: Option<u64>,
        watched: bool,
    ) {
        match self.by_workload.get(workload) {
            Some((known, _)) if known == fingerprint => {}
            Some(_) => {
                let edited_at = revision.filter(|_| watched);
                self.by_workload
                    .insert(workload.clone(), (fingerprint.to_string(), edited_at));
            }
            None => {
                self.by_workload
                    .insert(workload.clone(), (fingerprint.to_string(), None));
            }
        }
    }

    /// The revision of the edit that gave the template this fingerprint, if it was watched.
    pub fn edited_at(&self, workload: &WorkloadKey, fingerprint: &str) -> Option<u64> {
        self.by_workload
            .get(workload)
            .filter(|(known, _)| known == fingerprint)
            .and_then(|(_, edited_at)| *edited_at)
    }

    pub fn forget(&mut self, workload: &WorkloadKey) {
        self.by_workload.remove(workload);
    }
}

/// Which managed workloads reference which sources, so a source change reaches exactly its
/// consumers without asking the API server.
#[derive(Debug, Default)]
pub struct ReverseIndex {
    by_source: HashMap<SourceKey, HashSet<WorkloadKey>>,
    by_workload: HashMap<WorkloadKey, Vec<SourceKey>>,
}

impl ReverseIndex {
    /// Replaces what a workload references with the sources of its latest analysis. Workloads
    /// that did not opt in are not indexed: their sources are none of envroll's business.
    pub fn set(&mut self, workload: &WorkloadKey, analysis: &WorkloadAnalysis) {
        self.remove(workload);
        if !analysis.managed {
            return;
        }
        let sources: Vec<SourceKey> = analysis
            .sources
            .iter()
            .map(|s| SourceKey::new(s.kind, &analysis.namespace, &s.name))
            .collect();
        for source in &sources {
            self.by_source
                .entry(source.clone())
                .or_default()
                .insert(workload.clone());
        }
        self.by_workload.insert(workload.clone(), sources);
    }

    pub fn remove(&mut self, workload: &WorkloadKey) {
        for source in self.by_workload.remove(workload).unwrap_or_default() {
            if let Some(consumers) = self.by_source.get_mut(&source) {
                consumers.remove(workload);
                if consumers.is_empty() {
                    self.by_source.remove(&source);
                }
            }
        }
    }

    pub fn consumers(&self, source: &SourceKey) -> Vec<WorkloadKey> {
        self.by_source
            .get(source)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_consumed(&self, source: &SourceKey) -> bool {
        self.by_source.contains_key(source)
    }

    /// Managed workloads.
    pub fn workloads(&self) -> usize {
        self.by_workload.len()
    }

    pub fn tracked_sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests;
