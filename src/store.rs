//! What the operator remembers between events: per-key digests of every ConfigMap and Secret in
//! scope (never their values), and the reverse index from each source to the workloads that
//! reference it.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use crate::analysis::{SourceKind, SourceMeta, WorkloadAnalysis, WorkloadKind};
use crate::hash::{salt_for, workload_hash, MissingRequired, Section, SourceDigests, WorkloadHash};
use crate::workload::{analyse_workload, namespace_or_default, Workload};

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
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// A ConfigMap or Secret reduced to what decisions and hashes need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub meta: SourceMeta,
    pub digests: SourceDigests,
    /// A malformed `envroll.dev/ignore`, reported on the workloads that consume the object.
    pub annotation_problem: Option<String>,
    /// The version the record was made from, so an unchanged object is not fetched again.
    pub resource_version: Option<String>,
}

/// A workload's analysis and config hash, as of one look at the store.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub analysis: WorkloadAnalysis,
    pub hash: Result<WorkloadHash, MissingRequired>,
}

/// A watched object type (ConfigMap or Secret) that can be reduced to a [`SourceRecord`].
pub trait SourceObject:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: SourceKind;
    fn into_record(self) -> (SourceKey, SourceRecord);
}

fn record(
    kind: SourceKind,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    immutable: Option<bool>,
    digests: SourceDigests,
) -> (SourceKey, SourceRecord) {
    let annotations = metadata.annotations.clone().unwrap_or_default();
    let (meta, problem) = SourceMeta::from_object(&annotations, immutable);
    let key = SourceKey {
        kind,
        namespace: namespace_or_default(metadata.namespace.clone()),
        name: metadata.name.clone().unwrap_or_default(),
    };
    let record = SourceRecord {
        meta,
        digests,
        annotation_problem: problem.map(|p| p.to_string()),
        resource_version: metadata.resource_version.clone(),
    };
    (key, record)
}

impl SourceObject for ConfigMap {
    const KIND: SourceKind = SourceKind::ConfigMap;

    fn into_record(self) -> (SourceKey, SourceRecord) {
        let text = self
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), Section::Data, v.as_bytes()));
        let binary = self
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), Section::BinaryData, v.0.as_slice()));
        let digests = SourceDigests::from_values(salt_for(Self::KIND, ""), text.chain(binary));
        record(Self::KIND, &self.metadata, self.immutable, digests)
    }
}

impl SourceObject for Secret {
    const KIND: SourceKind = SourceKind::Secret;

    fn into_record(self) -> (SourceKey, SourceRecord) {
        let uid = self.uid().unwrap_or_default();
        // The API server folds stringData into data; a Secret read from a file may still carry it.
        let string_data: BTreeMap<&str, &[u8]> = self
            .string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let data = self
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| !string_data.contains_key(k.as_str()))
            .map(|(k, v)| (k.as_str(), v.0.as_slice()));
        let values = data
            .chain(string_data.iter().map(|(k, v)| (*k, *v)))
            .map(|(k, v)| (k, Section::Data, v));
        let digests = SourceDigests::from_values(salt_for(Self::KIND, &uid), values);
        record(Self::KIND, &self.metadata, self.immutable, digests)
    }
}

#[derive(Debug, Default)]
pub struct SourceStore {
    sources: HashMap<SourceKey, SourceRecord>,
}

impl SourceStore {
    /// Stores a record and says whether anything a decision depends on changed.
    pub fn upsert(&mut self, key: SourceKey, record: SourceRecord) -> bool {
        match self.sources.get(&key) {
            Some(existing) if *existing == record => false,
            _ => {
                self.sources.insert(key, record);
                true
            }
        }
    }

    pub fn remove(&mut self, key: &SourceKey) -> bool {
        self.sources.remove(key).is_some()
    }

    pub fn get_key(&self, key: &SourceKey) -> Option<&SourceRecord> {
        self.sources.get(key)
    }

    pub fn get(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<&SourceRecord> {
        self.sources.get(&SourceKey::new(kind, namespace, name))
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Analyses a workload against what the store knows and computes its config hash.
    pub fn evaluate<W: Workload>(&self, workload: &W) -> Evaluation {
        let namespace = namespace_or_default(workload.namespace());
        let analysis = analyse_workload(workload, |kind, name| {
            self.get(kind, &namespace, name).map(|r| r.meta)
        });
        let hash = workload_hash(&analysis, |kind, name| {
            self.get(kind, &namespace, name).map(|r| &r.digests)
        });
        Evaluation { analysis, hash }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// After a re-list, forgets the objects of one kind (and namespace, for a namespaced watch)
    /// that the list no longer returned: they were deleted while the watch was down.
    pub fn retain_listed(
        &mut self,
        kind: SourceKind,
        namespace: Option<&str>,
        listed: &HashSet<SourceKey>,
    ) -> Vec<SourceKey> {
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

/// Which workloads reference which sources, so a source change reaches exactly its consumers
/// without asking the API server.
#[derive(Debug, Default)]
pub struct ReverseIndex {
    by_source: HashMap<SourceKey, HashSet<WorkloadKey>>,
    by_workload: HashMap<WorkloadKey, Vec<SourceKey>>,
}

impl ReverseIndex {
    /// Replaces what a workload references with the sources of its latest analysis.
    pub fn set(&mut self, workload: &WorkloadKey, analysis: &WorkloadAnalysis) {
        self.remove(workload);
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

    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadKey> {
        self.by_workload.keys()
    }

    pub fn tracked_sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::analyse_deployment;
    use k8s_openapi::ByteString;

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("shop".into());
        cm.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cm
    }

    #[test]
    fn records_keep_digests_not_values() {
        let (key, record) = config_map("app", &[("LEVEL", "debug")]).into_record();
        assert_eq!(key, SourceKey::new(SourceKind::ConfigMap, "shop", "app"));
        let (section, digest) = record.digests.keys["LEVEL"];
        assert_eq!(section, Section::Data);
        assert_ne!(digest.as_slice(), b"debug");
    }

    #[test]
    fn secrets_are_salted_with_their_uid() {
        let secret = |uid: &str| {
            let mut s = Secret::default();
            s.metadata.name = Some("db".into());
            s.metadata.uid = Some(uid.into());
            s.data = Some(BTreeMap::from([(
                "password".into(),
                ByteString(b"pw".to_vec()),
            )]));
            s.into_record().1
        };
        assert_ne!(secret("a").digests, secret("b").digests);
        assert_eq!(secret("a").digests, secret("a").digests);
    }

    #[test]
    fn string_data_counts_like_data() {
        let from_data = Secret {
            data: Some(BTreeMap::from([("k".into(), ByteString(b"v".to_vec()))])),
            ..Secret::default()
        };
        let from_string = Secret {
            string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Secret::default()
        };
        assert_eq!(
            from_data.into_record().1.digests,
            from_string.into_record().1.digests
        );
    }

    #[test]
    fn upsert_reports_only_real_changes() {
        let mut store = SourceStore::default();
        let (key, record) = config_map("app", &[("a", "1")]).into_record();
        assert!(store.upsert(key.clone(), record.clone()));
        assert!(!store.upsert(key.clone(), record));
        let (_, changed) = config_map("app", &[("a", "2")]).into_record();
        assert!(store.upsert(key, changed));
    }

    #[test]
    fn a_relist_forgets_objects_deleted_meanwhile_in_its_own_scope_only() {
        let mut store = SourceStore::default();
        for name in ["kept", "deleted"] {
            let (key, record) = config_map(name, &[]).into_record();
            store.upsert(key, record);
        }
        let mut elsewhere = config_map("other-ns", &[]);
        elsewhere.metadata.namespace = Some("other".into());
        let (key, record) = elsewhere.into_record();
        store.upsert(key, record);
        let listed = HashSet::from([SourceKey::new(SourceKind::ConfigMap, "shop", "kept")]);
        let gone = store.retain_listed(SourceKind::ConfigMap, Some("shop"), &listed);
        assert_eq!(
            gone,
            vec![SourceKey::new(SourceKind::ConfigMap, "shop", "deleted")]
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn the_index_follows_the_latest_analysis() {
        let analysis = analyse_deployment(
            &[("envroll.dev/auto", "true")],
            "spec: {containers: [{name: a, envFrom: [{configMapRef: {name: one}}, {secretRef: {name: two}}]}]}",
            |_, _| None,
        );
        let web = WorkloadKey {
            kind: WorkloadKind::Deployment,
            namespace: "shop".into(),
            name: "web".into(),
        };
        let mut index = ReverseIndex::default();
        index.set(&web, &analysis);
        let one = SourceKey::new(SourceKind::ConfigMap, "shop", "one");
        assert_eq!(index.consumers(&one), vec![web.clone()]);
        assert_eq!(index.tracked_sources(), 2);
        index.remove(&web);
        assert!(index.consumers(&one).is_empty());
        assert_eq!(index.tracked_sources(), 0);
    }
}
