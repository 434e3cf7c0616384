//! One small trait over the three workload kinds envroll rolls out.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::analysis::{
    analyse, SourceKind, SourceMeta, WorkloadAnalysis, WorkloadInput, WorkloadKind,
};

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

    /// The update strategy type as written, when the workload sets one.
    fn strategy_type(&self) -> Option<&str>;

    /// With `OnDelete` a template change restarts nothing until someone deletes the pods.
    fn updates_on_delete(&self) -> bool {
        self.strategy_type() == Some("OnDelete")
    }
}

impl Workload for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec.as_ref()?.strategy.as_ref()?.type_.as_deref()
    }
}

impl Workload for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .type_
            .as_deref()
    }
}

impl Workload for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn strategy_type(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .type_
            .as_deref()
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

pub fn analyse_workload<W: Workload>(
    workload: &W,
    known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
) -> WorkloadAnalysis {
    let namespace = namespace_or_default(workload.namespace());
    let annotations: &BTreeMap<String, String> = workload.annotations();
    analyse(
        WorkloadInput {
            kind: W::KIND,
            namespace: &namespace,
            name: &workload.name_any(),
            annotations,
            template: workload.template().unwrap_or_else(|| empty_template()),
        },
        known,
    )
}
