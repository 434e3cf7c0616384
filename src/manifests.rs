//! Reading Kubernetes manifests (multi-document YAML, `kind: List`) for offline `explain`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use serde_json::Value;

use crate::analysis::{SourceKind, SourceMeta, WorkloadAnalysis};
use crate::workload::{analyse_workload, namespace_or_default, Workload};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {location}: {message}")]
    Document {
        file: String,
        location: String,
        message: String,
    },
}

#[derive(Clone, Debug)]
enum AnyWorkload {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
}

/// Everything read from a set of manifests that matters to the analysis.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    workloads: Vec<AnyWorkload>,
    sources: BTreeMap<(String, SourceKind, String), SourceMeta>,
    /// Things worth telling the user that do not stop the analysis (skipped kinds, bad
    /// annotations on ConfigMaps and Secrets).
    pub notes: Vec<String>,
}

impl Manifests {
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

    fn add_value(&mut self, file: &str, location: &str, value: Value) -> Result<(), ManifestError> {
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
        match kind.as_str() {
            "List" => {
                let items = match value.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => return Err(fail("a List whose items is not a sequence".into())),
                };
                for (index, item) in items.into_iter().enumerate() {
                    self.add_value(file, &format!("{location}, item {}", index + 1), item)?;
                }
            }
            "Deployment" => {
                let workload = parse::<Deployment>(value).map_err(fail)?;
                self.workloads
                    .push(AnyWorkload::Deployment(Box::new(workload)));
            }
            "StatefulSet" => {
                let workload = parse::<StatefulSet>(value).map_err(fail)?;
                self.workloads
                    .push(AnyWorkload::StatefulSet(Box::new(workload)));
            }
            "DaemonSet" => {
                let workload = parse::<DaemonSet>(value).map_err(fail)?;
                self.workloads
                    .push(AnyWorkload::DaemonSet(Box::new(workload)));
            }
            "ConfigMap" => {
                let object = parse::<ConfigMap>(value).map_err(fail)?;
                self.add_source(
                    SourceKind::ConfigMap,
                    object.metadata,
                    object.immutable,
                    file,
                    location,
                );
            }
            "Secret" => {
                let object = parse::<Secret>(value).map_err(fail)?;
                self.add_source(
                    SourceKind::Secret,
                    object.metadata,
                    object.immutable,
                    file,
                    location,
                );
            }
            other => self
                .notes
                .push(format!("{file}: {location}: skipping kind {other}")),
        }
        Ok(())
    }

    fn add_source(
        &mut self,
        kind: SourceKind,
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        immutable: Option<bool>,
        file: &str,
        location: &str,
    ) {
        let annotations = metadata.annotations.unwrap_or_default();
        let (meta, problem) = SourceMeta::from_object(&annotations, immutable);
        let name = metadata.name.unwrap_or_default();
        if let Some(problem) = problem {
            self.notes
                .push(format!("{file}: {location}: {kind} {name}: {problem}"));
        }
        let namespace = namespace_or_default(metadata.namespace);
        self.sources.insert((namespace, kind, name), meta);
    }

    /// Analyses every workload read so far, in input order.
    pub fn analyse(&self) -> Vec<WorkloadAnalysis> {
        self.workloads
            .iter()
            .map(|workload| match workload {
                AnyWorkload::Deployment(w) => self.analyse_one(w.as_ref()),
                AnyWorkload::StatefulSet(w) => self.analyse_one(w.as_ref()),
                AnyWorkload::DaemonSet(w) => self.analyse_one(w.as_ref()),
            })
            .collect()
    }

    fn analyse_one<W: Workload>(&self, workload: &W) -> WorkloadAnalysis {
        let namespace = namespace_or_default(workload.meta().namespace.clone());
        analyse_workload(workload, |kind, name| {
            self.sources
                .get(&(namespace.clone(), kind, name.to_string()))
                .copied()
        })
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
fn parse<K: DeserializeOwned + kube::Resource<DynamicType = ()>>(
    value: Value,
) -> Result<K, String> {
    let object: K =
        serde_json::from_value(value).map_err(|e| format!("invalid {}: {e}", K::kind(&())))?;
    if object.meta().name.as_deref().unwrap_or_default().is_empty() {
        return Err(format!("{} has no metadata.name", K::kind(&())));
    }
    Ok(object)
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
