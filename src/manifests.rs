//! Reading Kubernetes manifests (multi-document YAML, `kind: List`) for offline `explain -f` and
//! `impact`: files, directories and standard input in, workloads and per-key digests of the
//! ConfigMaps and Secrets out. The digests are made by the operator's own code (`store`), so an
//! offline comparison sees a change exactly where the operator would.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use serde_json::Value;

use crate::analysis::{
    AnnotationDialects, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadInput,
};
use crate::hash::SourceDigests;
use crate::store::{config_map_record, secret_record, SourceKey, SourceRecord, WorkloadKey};
use crate::workload::{
    analyse_workload, analyse_workload_with, namespace_or_default, with_input, Observed, Workload,
};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: no .yaml, .yml or .json file in this directory")]
    EmptyDirectory { file: String },
    #[error("{file}: {location}: {message}")]
    Document {
        file: String,
        location: String,
        message: String,
    },
}

/// The name standard input goes by in messages.
pub const STDIN: &str = "<stdin>";

/// Reads manifests as `kubectl apply -f` takes them: each path a file, a directory (its `.yaml`,
/// `.yml` and `.json` files in name order, not recursive) or `-` for `stdin`. Objects are kept in
/// the order read, which is the order `kubectl apply` would write them.
pub fn read_paths(
    paths: &[String],
    default_namespace: Option<&str>,
    stdin: &mut dyn Read,
) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::in_namespace(default_namespace);
    for path in paths {
        if path == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    file: STDIN.to_string(),
                    source,
                })?;
            manifests.add_yaml(STDIN, &text)?;
            continue;
        }
        let files = files_of(path)?;
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                file: file.clone(),
                source,
            })?;
            manifests.add_yaml(&file, &text)?;
        }
    }
    Ok(manifests)
}

/// The files a path stands for: itself, or a directory's manifest files in name order.
fn files_of(path: &str) -> Result<Vec<String>, ManifestError> {
    let cannot_read = |source| ManifestError::Read {
        file: path.to_string(),
        source,
    };
    if !std::fs::metadata(path).map_err(cannot_read)?.is_dir() {
        return Ok(vec![path.to_string()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(cannot_read)? {
        let entry = entry.map_err(cannot_read)?;
        let is_manifest = Path::new(&entry.file_name())
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| matches!(extension, "yaml" | "yml" | "json"));
        if is_manifest && !entry.file_type().map_err(cannot_read)?.is_dir() {
            files.push(entry.path().to_string_lossy().into_owned());
        }
    }
    if files.is_empty() {
        return Err(ManifestError::EmptyDirectory {
            file: path.to_string(),
        });
    }
    files.sort();
    Ok(files)
}

#[derive(Clone, Debug)]
enum AnyWorkload {
    Deployment(Box<Observed<Deployment>>),
    StatefulSet(Box<Observed<StatefulSet>>),
    DaemonSet(Box<Observed<DaemonSet>>),
}

/// Evaluates `$body` with `$observed` bound to the `Observed<W>` inside an [`AnyWorkload`], so
/// generic code runs on each kind without a trait object (`Workload` is not object safe).
macro_rules! with_observed {
    ($any:expr, $observed:ident => $body:expr) => {
        match $any {
            AnyWorkload::Deployment($observed) => $body,
            AnyWorkload::StatefulSet($observed) => $body,
            AnyWorkload::DaemonSet($observed) => $body,
        }
    };
}

/// A ConfigMap or Secret as read from manifests: what the analysis needs, the digests of its
/// values (never the values), and its position in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestSource {
    pub meta: SourceMeta,
    pub digests: SourceDigests,
    pub position: u64,
}

/// A workload as read from manifests.
#[derive(Clone, Copy, Debug)]
pub struct ManifestWorkload<'a> {
    workload: &'a AnyWorkload,
    /// Where it stood in the input, counted over every object read (1 for the first).
    pub position: u64,
}

impl ManifestWorkload<'_> {
    pub fn key(&self) -> WorkloadKey {
        with_observed!(self.workload, observed => key_of(&observed.workload))
    }

    /// The fingerprint of the pod template as written, computed as the operator computes it.
    pub fn template_fingerprint(&self) -> &str {
        with_observed!(self.workload, observed => &observed.template_fingerprint)
    }

    pub fn updates_on_delete(&self) -> bool {
        with_observed!(self.workload, observed => observed.workload.updates_on_delete())
    }

    /// The analysis of this workload, with `known` answering for the ConfigMaps and Secrets.
    pub fn analyse(
        &self,
        known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
    ) -> WorkloadAnalysis {
        with_observed!(self.workload, observed => analyse_workload(&observed.workload, known))
    }

    /// The analysis of this workload honouring `dialects` besides envroll's own annotations.
    pub fn analyse_with(
        &self,
        dialects: AnnotationDialects,
        known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
    ) -> WorkloadAnalysis {
        with_observed!(self.workload, observed => {
            analyse_workload_with(&observed.workload, dialects, known)
        })
    }

    /// Runs `f` on the workload as the analysis sees it (annotations, pod template).
    pub fn with_input<R>(&self, f: impl FnOnce(WorkloadInput<'_>) -> R) -> R {
        with_observed!(self.workload, observed => with_input(&observed.workload, f))
    }

    /// The analysis of the same pod template under other workload annotations: asks the
    /// operator's own rules a "what if" (for example, which consumption is frozen, whatever the
    /// workload opted into).
    pub fn analyse_annotated(
        &self,
        annotations: BTreeMap<String, String>,
        known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
    ) -> WorkloadAnalysis {
        with_observed!(self.workload, observed => {
            let mut other = observed.workload.clone();
            other.meta_mut().annotations = Some(annotations);
            analyse_workload(&other, known)
        })
    }
}

fn key_of<W: Workload>(workload: &W) -> WorkloadKey {
    WorkloadKey {
        kind: W::KIND,
        namespace: namespace_or_default(workload.namespace()),
        name: workload.name_any(),
    }
}

/// Everything read from a set of manifests that matters to the analysis.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Given to objects that do not name their namespace, as `kubectl apply -n` does; `None`
    /// leaves them in `default`.
    default_namespace: Option<String>,
    workloads: Vec<(AnyWorkload, u64)>,
    sources: BTreeMap<SourceKey, ManifestSource>,
    /// ConfigMaps and Secrets known not to exist (read from a cluster, where a missing object is
    /// known to be missing; a set of files only ever knows what it holds).
    absent: BTreeSet<SourceKey>,
    /// Objects read so far, so each gets its position.
    objects: u64,
    /// Things worth telling the user that do not stop the analysis (skipped kinds, bad
    /// annotations on ConfigMaps and Secrets).
    pub notes: Vec<String>,
}

/// The salt of every Secret digest made from manifests. Those digests are only compared with each
/// other inside one run, never shown or stored, so one salt for all keeps two inputs comparable
/// (a UID, where a manifest even has one, differs between a cluster export and a rendering).
const MANIFEST_SECRET_SALT: &str = "envroll-manifests";

impl Manifests {
    /// Manifests whose objects without `metadata.namespace` go to `namespace` (`None`: `default`).
    pub fn in_namespace(namespace: Option<&str>) -> Self {
        Manifests {
            default_namespace: namespace.map(str::to_string),
            ..Manifests::default()
        }
    }

    /// Reads one file's worth of YAML. `file` only names the input in messages.
    pub fn add_yaml(&mut self, file: &str, text: &str) -> Result<(), ManifestError> {
        let limit = text.len().saturating_add(ALIAS_ALLOWANCE);
        let mut budget = Budget {
            remaining: limit,
            exceeded: false,
        };
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let location = format!("document {}", index + 1);
            let value = Bounded(&mut budget).deserialize(document).map_err(|e| {
                ManifestError::Document {
                    file: file.to_string(),
                    location: location.clone(),
                    message: if budget.exceeded {
                        format!(
                            "YAML aliases expand the file to more than {limit} values \
                             (its length in bytes plus {ALIAS_ALLOWANCE})"
                        )
                    } else {
                        format!("malformed YAML: {e}")
                    },
                }
            })?;
            self.add_value(file, &location, value)?;
        }
        Ok(())
    }

    /// Adds one object given as JSON (for example read from a cluster and serialized), as if it
    /// were the next document of a file. `origin` names it in messages.
    pub fn add_json(&mut self, origin: &str, value: Value) -> Result<(), ManifestError> {
        self.add_value(origin, "object", value)
    }

    fn add_value(
        &mut self,
        file: &str,
        location: &str,
        mut value: Value,
    ) -> Result<(), ManifestError> {
        let fail = |message: String| ManifestError::Document {
            file: file.to_string(),
            location: location.to_string(),
            message,
        };
        if value.is_null() {
            return Ok(());
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("not a Kubernetes object: it has no kind".into()))?
            .to_string();
        if kind == "List" {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(fail("a List whose items is not a sequence".into())),
            };
            for (index, item) in items.into_iter().enumerate() {
                self.add_value(file, &format!("{location}, item {}", index + 1), item)?;
            }
            return Ok(());
        }
        self.objects += 1;
        let position = self.objects;
        if matches!(
            kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ConfigMap" | "Secret"
        ) {
            self.default_namespace_of(&mut value);
        }
        match kind.as_str() {
            "Deployment" => {
                let workload = parse::<Observed<Deployment>>(value).map_err(fail)?;
                self.workloads
                    .push((AnyWorkload::Deployment(Box::new(workload)), position));
            }
            "StatefulSet" => {
                let workload = parse::<Observed<StatefulSet>>(value).map_err(fail)?;
                self.workloads
                    .push((AnyWorkload::StatefulSet(Box::new(workload)), position));
            }
            "DaemonSet" => {
                let workload = parse::<Observed<DaemonSet>>(value).map_err(fail)?;
                self.workloads
                    .push((AnyWorkload::DaemonSet(Box::new(workload)), position));
            }
            "ConfigMap" => {
                let object = parse::<ConfigMap>(value).map_err(fail)?;
                let (key, record) = config_map_record(&object);
                self.add_source(key, record, file, location, position);
            }
            "Secret" => {
                check_secret_values(&value).map_err(fail)?;
                let mut object = parse::<Secret>(value).map_err(fail)?;
                object.metadata.uid = Some(MANIFEST_SECRET_SALT.to_string());
                let (key, record) = secret_record(&object)
                    .expect("a Secret with a UID always has its values digested");
                self.add_source(key, record, file, location, position);
            }
            other => self
                .notes
                .push(format!("{file}: {location}: skipping kind {other}")),
        }
        Ok(())
    }

    /// Sets the namespace of an object that has none (or an empty one), as `kubectl apply -n`
    /// does, so that workloads and the sources they reference meet in the same namespace.
    fn default_namespace_of(&self, object: &mut Value) {
        let Some(namespace) = &self.default_namespace else {
            return;
        };
        let Some(Value::Object(metadata)) = object.get_mut("metadata") else {
            return;
        };
        let has_namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .is_some_and(|set| !set.is_empty());
        if !has_namespace {
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
        }
    }

    fn add_source(
        &mut self,
        key: SourceKey,
        record: SourceRecord,
        file: &str,
        location: &str,
        position: u64,
    ) {
        if let Some(problem) = &record.annotation_problem {
            self.notes.push(format!(
                "{file}: {location}: {} {}: {problem}",
                key.kind, key.name
            ));
        }
        let digests = record
            .digests()
            .cloned()
            .expect("a ConfigMap or Secret read from a manifest has its values digested");
        let source = ManifestSource {
            meta: record.meta,
            digests,
            position,
        };
        self.absent.remove(&key);
        self.sources.insert(key, source);
    }

    /// Records that a ConfigMap or Secret does not exist (as a GET on a cluster found), unless
    /// these manifests hold it.
    pub fn mark_absent(&mut self, key: SourceKey) {
        if !self.sources.contains_key(&key) {
            self.absent.insert(key);
        }
    }

    /// Whether the source is known not to exist (see [`Self::mark_absent`]).
    pub fn is_absent(&self, key: &SourceKey) -> bool {
        self.absent.contains(key)
    }

    /// Every ConfigMap and Secret held, by key.
    pub fn sources(&self) -> impl Iterator<Item = (&SourceKey, &ManifestSource)> {
        self.sources.iter()
    }

    /// These manifests with the objects of `proposed` written over them, as applying `proposed`
    /// (objects in its order, after everything here) would leave them: a workload replaces its
    /// namesake where it stands, a source replaces its namesake or is added, and the positions
    /// of `proposed`'s objects come after every object here. Notes are those of `proposed`.
    pub fn overlay(&self, proposed: &Manifests) -> Manifests {
        let mut merged = self.clone();
        let base = merged.objects;
        for (workload, position) in &proposed.workloads {
            let key = with_observed!(workload, observed => key_of(&observed.workload));
            let entry = (workload.clone(), base + position);
            let existing = merged.workloads.iter().position(|(held, _)| {
                with_observed!(held, observed => key_of(&observed.workload)) == key
            });
            match existing {
                Some(index) => merged.workloads[index] = entry,
                None => merged.workloads.push(entry),
            }
        }
        for (key, source) in &proposed.sources {
            merged.absent.remove(key);
            let source = ManifestSource {
                position: base + source.position,
                ..source.clone()
            };
            merged.sources.insert(key.clone(), source);
        }
        merged.objects = base + proposed.objects;
        merged.notes = proposed.notes.clone();
        merged
    }

    /// Removes every workload and returns their keys, in input order.
    pub fn take_workloads(&mut self) -> Vec<WorkloadKey> {
        std::mem::take(&mut self.workloads)
            .iter()
            .map(|(workload, _)| with_observed!(workload, observed => key_of(&observed.workload)))
            .collect()
    }

    /// Every workload read so far, in input order.
    pub fn workloads(&self) -> impl Iterator<Item = ManifestWorkload<'_>> {
        self.workloads
            .iter()
            .map(|(workload, position)| ManifestWorkload {
                workload,
                position: *position,
            })
    }

    /// The workload with this kind, namespace and name; the last one when the input repeats it,
    /// as applying the input would leave it.
    pub fn workload(&self, key: &WorkloadKey) -> Option<ManifestWorkload<'_>> {
        self.workloads().filter(|w| &w.key() == key).last()
    }

    /// A ConfigMap or Secret of the input; the last one when the input repeats it.
    pub fn source(&self, key: &SourceKey) -> Option<&ManifestSource> {
        self.sources.get(key)
    }

    /// What the analysis knows of a source: `None` when the input does not hold it.
    pub fn meta(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<SourceMeta> {
        self.source(&SourceKey::new(kind, namespace, name))
            .map(|source| source.meta)
    }

    /// Analyses one workload against the ConfigMaps and Secrets of this input.
    pub fn analyse_workload(&self, workload: &ManifestWorkload<'_>) -> WorkloadAnalysis {
        let namespace = workload.key().namespace;
        workload.analyse(|kind, name| self.meta(kind, &namespace, name))
    }

    /// Analyses one workload against the ConfigMaps and Secrets of this input, honouring
    /// `dialects` besides envroll's own annotations.
    pub fn analyse_workload_with(
        &self,
        workload: &ManifestWorkload<'_>,
        dialects: AnnotationDialects,
    ) -> WorkloadAnalysis {
        let namespace = workload.key().namespace;
        workload.analyse_with(dialects, |kind, name| self.meta(kind, &namespace, name))
    }

    /// Analyses every workload read so far, in input order, honouring `dialects`.
    pub fn analyse_with(&self, dialects: AnnotationDialects) -> Vec<WorkloadAnalysis> {
        self.workloads()
            .map(|workload| self.analyse_workload_with(&workload, dialects))
            .collect()
    }

    /// Analyses every workload read so far, in input order.
    pub fn analyse(&self) -> Vec<WorkloadAnalysis> {
        self.workloads()
            .map(|workload| self.analyse_workload(&workload))
            .collect()
    }
}

/// How many values a file may hold beyond one per byte of its text. Without aliases a YAML file
/// holds fewer values than bytes; with nested aliases a few kilobytes expand to billions of
/// values (the "billion laughs"), which would exhaust memory long before the YAML library's own
/// repetition limit stops it. This leaves ordinary anchors and aliases plenty of room.
const ALIAS_ALLOWANCE: usize = 100_000;

struct Budget {
    remaining: usize,
    exceeded: bool,
}

/// Reads a YAML document into a [`Value`] as `Value::deserialize` does, but spends one unit of
/// the budget per value so that alias expansion fails early instead of allocating without bound.
struct Bounded<'a>(&'a mut Budget);

impl Bounded<'_> {
    fn spend<E: de::Error>(&mut self) -> Result<(), E> {
        match self.0.remaining.checked_sub(1) {
            Some(remaining) => {
                self.0.remaining = remaining;
                Ok(())
            }
            None => {
                self.0.exceeded = true;
                Err(E::custom("YAML aliases expand to too many values"))
            }
        }
    }

    fn scalar<E: de::Error>(mut self, value: Value) -> Result<Value, E> {
        self.spend()?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.scalar(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.scalar(v.into())
    }

    // Integers beyond 64 bits do not fit a JSON number; `Value::deserialize` rejects them too.
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Err(E::custom(format_args!("integer {v} is out of range")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Err(E::custom(format_args!("integer {v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.scalar(v.into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.scalar(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.scalar(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded(&mut *self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Bounded(&mut *self.0))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Workloads and sources must be named: an unnamed object is a broken manifest.
fn parse<K: DeserializeOwned + Resource<DynamicType = ()>>(value: Value) -> Result<K, String> {
    let object: K =
        serde_json::from_value(value).map_err(|e| format!("invalid {}: {e}", K::kind(&())))?;
    if object.meta().name.as_deref().unwrap_or_default().is_empty() {
        return Err(format!("{} has no metadata.name", K::kind(&())));
    }
    Ok(object)
}

/// serde's messages quote the value they could not read, and in a Secret that value may be the
/// secret itself (`password: 1234` unquoted is an integer). So a Secret's values are checked
/// first, key by key, with messages that name the key and never show the value.
fn check_secret_values(secret: &Value) -> Result<(), String> {
    for (field, expected) in [("data", "base64-encoded text"), ("stringData", "a string")] {
        let values = match secret.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(values)) => values,
            Some(_) => return Err(format!("invalid Secret: {field} is not a mapping")),
        };
        for (key, value) in values {
            let readable = match field {
                "data" => serde_json::from_value::<ByteString>(value.clone()).is_ok(),
                _ => value.is_string(),
            };
            if !readable {
                return Err(format!(
                    "invalid Secret: {field}.{key} is not {expected} (the value is not shown)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifests, ManifestError> {
        let mut manifests = Manifests::default();
        manifests.add_yaml("test.yaml", text)?;
        Ok(manifests)
    }

    const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {envroll.dev/auto: "true"}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        envFrom: [{configMapRef: {name: app-env}}]
        volumeMounts: [{name: certs, mountPath: /certs}]
      volumes:
      - name: certs
        secret: {secretName: tls}
"#;

    #[test]
    fn reads_multi_document_yaml_and_uses_sources_from_the_same_input() {
        let text = format!(
            "{WEB}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls}}\nimmutable: true\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n"
        );
        let manifests = load(&text).unwrap();
        let analyses = manifests.analyse();
        assert_eq!(analyses.len(), 1);
        assert_eq!(analyses[0].namespace, "default");
        let tls = analyses[0]
            .sources
            .iter()
            .find(|s| s.name == "tls")
            .unwrap();
        assert!(tls.rollout, "immutable Secret from the same input: {tls:?}");
        assert_eq!(
            manifests.notes,
            vec!["test.yaml: document 4: skipping kind Service"]
        );
    }

    #[test]
    fn sources_in_another_namespace_do_not_count() {
        let text = format!(
            "{WEB}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls, namespace: other}}\nimmutable: true\n"
        );
        let analyses = load(&text).unwrap().analyse();
        assert!(
            !analyses[0]
                .sources
                .iter()
                .find(|s| s.name == "tls")
                .unwrap()
                .rollout
        );
    }

    #[test]
    fn expands_lists() {
        let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: agent, namespace: infra}
  spec:
    selector: {matchLabels: {app: agent}}
    template:
      metadata: {labels: {app: agent}}
      spec: {containers: [{name: agent}]}
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db, namespace: infra}
  spec:
    selector: {matchLabels: {app: db}}
    template:
      metadata: {labels: {app: db}}
      spec: {containers: [{name: db}]}
"#;
        let analyses = load(list).unwrap().analyse();
        let names: Vec<_> = analyses
            .iter()
            .map(|a| format!("{}/{}/{}", a.kind, a.namespace, a.name))
            .collect();
        assert_eq!(names, vec!["DaemonSet/infra/agent", "StatefulSet/infra/db"]);
    }

    #[test]
    fn malformed_yaml_names_file_and_document() {
        let error = load(&format!("{WEB}---\nkind: [unclosed\n")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("test.yaml: document 2: malformed YAML"),
            "{message}"
        );
    }

    #[test]
    fn an_object_that_does_not_parse_names_file_and_document() {
        let error = load("kind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.yaml: document 1: invalid Deployment"),
            "{error}"
        );
        let error = load("- just\n- a list\n").unwrap_err().to_string();
        assert_eq!(
            error,
            "test.yaml: document 1: not a Kubernetes object: it has no kind"
        );
        let error = load("kind: List\nitems:\n- {kind: Deployment, metadata: {}}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "test.yaml: document 1, item 1: Deployment has no metadata.name"
        );
    }

    #[test]
    fn objects_without_a_namespace_get_the_one_given() {
        let text = format!(
            "{WEB}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls}}\nimmutable: true\n---\nkind: ConfigMap\nmetadata: {{name: app-env, namespace: other}}\n"
        );
        let mut manifests = Manifests::in_namespace(Some("shop"));
        manifests.add_yaml("test.yaml", &text).unwrap();
        let analyses = manifests.analyse();
        assert_eq!(analyses[0].namespace, "shop");
        assert!(manifests.meta(SourceKind::Secret, "shop", "tls").is_some());
        // An object that names its namespace keeps it.
        assert!(manifests
            .meta(SourceKind::ConfigMap, "other", "app-env")
            .is_some());
        assert!(manifests
            .meta(SourceKind::ConfigMap, "shop", "app-env")
            .is_none());
    }

    #[test]
    fn secret_values_are_digested_and_never_quoted_in_errors() {
        let secret = |body: &str| format!("kind: Secret\nmetadata: {{name: db}}\n{body}\n");
        for (body, message) in [
            (
                "stringData: {password: 1234}",
                "test.yaml: document 1: invalid Secret: stringData.password is not a string (the value is not shown)",
            ),
            (
                "data: {password: \"s3cr!t\"}",
                "test.yaml: document 1: invalid Secret: data.password is not base64-encoded text (the value is not shown)",
            ),
        ] {
            let error = load(&secret(body)).unwrap_err().to_string();
            assert_eq!(error, message);
        }
        let manifests = load(&secret("stringData: {password: hunter2}")).unwrap();
        let db = manifests
            .source(&SourceKey::new(SourceKind::Secret, "default", "db"))
            .unwrap();
        assert_eq!(db.digests.keys.len(), 1);
        assert!(!format!("{manifests:?}").contains("hunter2"));
    }

    #[test]
    fn positions_follow_the_input_across_lists_and_files() {
        let mut manifests = load(&format!(
            "kind: ConfigMap\nmetadata: {{name: a}}\n---\nkind: List\nitems: [{{kind: ConfigMap, metadata: {{name: b}}}}]\n---\n{WEB}"
        ))
        .unwrap();
        manifests
            .add_yaml("more.yaml", "kind: ConfigMap\nmetadata: {name: c}\n")
            .unwrap();
        let position = |name| {
            manifests
                .source(&SourceKey::new(SourceKind::ConfigMap, "default", name))
                .unwrap()
                .position
        };
        assert_eq!((position("a"), position("b"), position("c")), (1, 2, 4));
        assert_eq!(manifests.workloads().next().unwrap().position, 3);
    }

    #[test]
    fn paths_are_files_directories_in_name_order_or_stdin() {
        let dir = std::env::temp_dir().join(format!("envroll-manifests-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("b.yml"), "kind: ConfigMap\nmetadata: {name: b}\n").unwrap();
        std::fs::write(dir.join("a.yaml"), WEB).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest: [").unwrap();
        std::fs::write(
            dir.join("nested/c.yaml"),
            "kind: ConfigMap\nmetadata: {name: c}\n",
        )
        .unwrap();
        let dir_path = dir.to_string_lossy().into_owned();
        let stdin = "kind: ConfigMap\nmetadata: {name: d}\n";
        let manifests = read_paths(
            &[dir_path.clone(), "-".to_string()],
            Some("shop"),
            &mut stdin.as_bytes(),
        )
        .unwrap();
        let position = |name| {
            manifests
                .source(&SourceKey::new(SourceKind::ConfigMap, "shop", name))
                .map(|source| source.position)
        };
        assert_eq!(
            manifests.workloads().next().unwrap().position,
            1,
            "a.yaml first"
        );
        assert_eq!(
            (position("b"), position("c"), position("d")),
            (Some(2), None, Some(3))
        );

        let empty = dir.join("nested/empty");
        std::fs::create_dir_all(&empty).unwrap();
        let empty = empty.to_string_lossy().into_owned();
        let error = read_paths(std::slice::from_ref(&empty), None, &mut "".as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{empty}: no .yaml, .yml or .json file in this directory")
        );
        let missing = format!("{dir_path}/missing.yaml");
        let error =
            read_paths(std::slice::from_ref(&missing), None, &mut "".as_bytes()).unwrap_err();
        assert!(error
            .to_string()
            .starts_with(&format!("{missing}: cannot read")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_overlay_writes_objects_over_their_namesakes_after_everything_else() {
        let mut base = load(&format!(
            "{WEB}---\nkind: ConfigMap\nmetadata: {{name: app-env}}\ndata: {{A: '1'}}\n"
        ))
        .unwrap();
        let gone = SourceKey::new(SourceKind::Secret, "default", "tls");
        base.mark_absent(gone.clone());
        assert!(base.is_absent(&gone));
        // A source the manifests hold is never absent.
        let app_env = SourceKey::new(SourceKind::ConfigMap, "default", "app-env");
        base.mark_absent(app_env.clone());
        assert!(!base.is_absent(&app_env));

        let mut proposed = Manifests::default();
        proposed
            .add_json(
                "proposed",
                serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "app-env"},
                                   "data": {"A": "2"}}),
            )
            .unwrap();
        proposed
            .add_yaml(
                "p.yaml",
                &format!("kind: Secret\nmetadata: {{name: tls}}\n---\n{WEB}"),
            )
            .unwrap();
        let merged = base.overlay(&proposed);
        let position = |key: &SourceKey| merged.source(key).unwrap().position;
        // Two objects before, then the proposal's in its order.
        assert_eq!((position(&app_env), position(&gone)), (3, 4));
        assert!(!merged.is_absent(&gone));
        assert_ne!(
            merged.source(&app_env).unwrap().digests,
            base.source(&app_env).unwrap().digests
        );
        // The workload is replaced where it stands, not added.
        let workloads: Vec<u64> = merged.workloads().map(|w| w.position).collect();
        assert_eq!(workloads, vec![5]);
        // The base is untouched.
        assert!(base.is_absent(&gone));
        assert_eq!(base.source(&app_env).unwrap().position, 2);
    }

    #[test]
    fn a_malformed_ignore_annotation_is_a_note_and_does_not_ignore() {
        let text = format!(
            "{WEB}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-env, annotations: {{envroll.dev/ignore: maybe}}}}\n"
        );
        let manifests = load(&text).unwrap();
        assert!(
            manifests.notes[0].contains("envroll.dev/ignore"),
            "{:?}",
            manifests.notes
        );
        assert!(
            manifests.analyse()[0]
                .sources
                .iter()
                .find(|s| s.name == "app-env")
                .unwrap()
                .rollout
        );
    }
}
