//! One small trait over the three workload kinds envroll rolls out.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::analysis::{
    analyse_with, AnnotationDialects, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadInput,
    WorkloadKind,
};
use crate::fingerprint::template_fingerprint;
use crate::lifecycle::RolloutStatus;
use crate::policy;

/// `Resource` for a wrapper that holds a workload `W` in its `workload` field: it is read and
/// written through the API as `W` is.
macro_rules! workload_resource {
    ($wrapper:ident) => {
        impl<W: Workload> kube::Resource for $wrapper<W> {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                W::kind(dt)
            }

            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                W::group(dt)
            }

            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                W::version(dt)
            }

            fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
                W::api_version(dt)
            }

            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                W::plural(dt)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                self.workload.meta()
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                self.workload.meta_mut()
            }
        }
    };
}

mod cached;

pub use cached::Cached;

pub trait Workload:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: WorkloadKind;

    fn template(&self) -> Option<&PodTemplateSpec>;

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec>;

    /// The update strategy type as written, when the workload sets one.
    fn strategy_type(&self) -> Option<&str>;

    /// The config hash envroll last wrote into the pod template, if any.
    fn template_config_hash(&self) -> Option<&str> {
        self.template()?
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(policy::CONFIG_HASH)
            .map(String::as_str)
    }

    /// With `OnDelete` a template change restarts nothing until someone deletes the pods.
    fn updates_on_delete(&self) -> bool {
        self.strategy_type() == Some("OnDelete")
    }

    /// How far its rollout is, from its status.
    fn rollout_status(&self) -> RolloutStatus;

    /// The selector of its pods.
    fn selector(&self) -> Option<&LabelSelector>;
}

/// StatefulSets and DaemonSets have no progress deadline of their own: envroll waits as long as a
/// Deployment does by default (`progressDeadlineSeconds`).
const OWN_ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

impl Workload for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        self.spec.as_mut().map(|spec| &mut spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec.as_ref()?.strategy.as_ref()?.type_.as_deref()
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|spec| &spec.selector)
    }

    fn rollout_status(&self) -> RolloutStatus {
        let spec = self.spec.as_ref();
        let status = self.status.clone().unwrap_or_default();
        let deadline_exceeded = status.conditions.iter().flatten().find(|condition| {
            condition.type_ == "Progressing"
                && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        RolloutStatus {
            generation: self.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            desired: spec.and_then(|spec| spec.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or_default(),
            available: status.available_replicas.unwrap_or_default(),
            total: status.replicas.unwrap_or_default(),
            partition: 0,
            revisions_differ: false,
            waits_for_user: spec.and_then(|spec| spec.paused).unwrap_or(false),
            deadline_exceeded: deadline_exceeded
                .map(|condition| condition.message.clone().unwrap_or_default()),
            own_deadline: None,
        }
    }
}

impl Workload for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        self.spec.as_mut().map(|spec| &mut spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .type_
            .as_deref()
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|spec| &spec.selector)
    }

    fn rollout_status(&self) -> RolloutStatus {
        let spec = self.spec.as_ref();
        let status = self.status.clone().unwrap_or_default();
        let partition = spec
            .and_then(|spec| {
                spec.update_strategy
                    .as_ref()?
                    .rolling_update
                    .as_ref()?
                    .partition
            })
            .unwrap_or(0);
        RolloutStatus {
            generation: self.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            desired: spec.and_then(|spec| spec.replicas).unwrap_or(1),
            updated: status.updated_replicas.unwrap_or_default(),
            available: status.ready_replicas.unwrap_or_default(),
            total: status.replicas,
            partition,
            revisions_differ: status.current_revision != status.update_revision,
            waits_for_user: self.updates_on_delete(),
            deadline_exceeded: None,
            own_deadline: Some(OWN_ROLLOUT_DEADLINE),
        }
    }
}

impl Workload for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        self.spec.as_mut().map(|spec| &mut spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .type_
            .as_deref()
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|spec| &spec.selector)
    }

    fn rollout_status(&self) -> RolloutStatus {
        let status = self.status.clone().unwrap_or_default();
        RolloutStatus {
            generation: self.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            desired: status.desired_number_scheduled,
            updated: status.updated_number_scheduled.unwrap_or_default(),
            available: status.number_available.unwrap_or_default(),
            total: status.current_number_scheduled,
            partition: 0,
            revisions_differ: false,
            waits_for_user: self.updates_on_delete(),
            deadline_exceeded: None,
            own_deadline: Some(OWN_ROLLOUT_DEADLINE),
        }
    }
}

/// Objects without a namespace in a manifest land in `default`, as `kubectl apply` would put them.
pub fn namespace_or_default(namespace: Option<String>) -> String {
    namespace.unwrap_or_else(|| "default".to_string())
}

fn empty_template() -> &'static PodTemplateSpec {
    static EMPTY: OnceLock<PodTemplateSpec> = OnceLock::new();
    EMPTY.get_or_init(PodTemplateSpec::default)
}

/// Analyses a workload under envroll's own annotations.
pub fn analyse_workload<W: Workload>(
    workload: &W,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    analyse_workload_with(workload, AnnotationDialects::default(), known)
}

/// Analyses a workload, honouring `dialects` besides envroll's own annotations.
pub fn analyse_workload_with<W: Workload>(
    workload: &W,
    dialects: AnnotationDialects,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    with_input(workload, |input| analyse_with(input, dialects, known))
}

/// Runs `f` on the workload as the analysis sees it.
pub fn with_input<W: Workload, R>(workload: &W, f: impl FnOnce(WorkloadInput<'_>) -> R) -> R {
    with_template(
        workload,
        workload.template().unwrap_or_else(|| empty_template()),
        f,
    )
}

/// [`with_input`], with the pod template given apart from the workload.
fn with_template<W: Workload, R>(
    workload: &W,
    template: &PodTemplateSpec,
    f: impl FnOnce(WorkloadInput<'_>) -> R,
) -> R {
    let namespace = namespace_or_default(workload.namespace());
    let annotations: &BTreeMap<String, String> = workload.annotations();
    f(WorkloadInput {
        kind: W::KIND,
        namespace: &namespace,
        name: &workload.name_any(),
        annotations,
        template,
    })
}

/// A workload as the operator watches it: the typed object, plus the fingerprint of its pod
/// template taken from the JSON the API server sent, before k8s-openapi dropped any field it
/// does not know (see `fingerprint`).
#[derive(Clone, Debug)]
pub struct Observed<W> {
    pub workload: W,
    pub template_fingerprint: String,
}

impl<W: Workload> Observed<W> {
    pub fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        let template_fingerprint = template_fingerprint(
            value
                .pointer("/spec/template")
                .unwrap_or(&serde_json::Value::Null),
        );
        let workload = serde_json::from_value(value)?;
        Ok(Observed {
            workload,
            template_fingerprint,
        })
    }
}

impl<'de, W: Workload> serde::Deserialize<'de> for Observed<W> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Observed::from_json(value).map_err(serde::de::Error::custom)
    }
}

workload_resource!(Observed);
