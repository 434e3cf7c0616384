//! A workload as the operator's cache keeps it. k8s-openapi's pod types are sized for every
//! field Kubernetes has (a `Container` takes 2 KiB and a `Volume` 3 KiB before any of their
//! strings), so a cached Deployment with a few containers and volumes costs tens of KiB. The
//! cache keeps the workload's own fields and the pod template's metadata, and of the pod spec
//! only what the analysis reads: each container's name, restart policy, env, envFrom and
//! volume mounts, and the volumes that are ConfigMaps, Secrets or projections of them.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, PodSpec, PodTemplateSpec,
    ProjectedVolumeSource, SecretVolumeSource, Volume, VolumeMount,
};

use super::{with_input, with_template, Observed, Workload};
use crate::analysis::{analyse_with, AnnotationDialects, SourceKind, SourceMeta, WorkloadAnalysis};

/// The workload without its pod spec, which the analysis sees rebuilt from `consumed`.
#[derive(Clone, Debug)]
pub struct Cached<W> {
    workload: W,
    pub template_fingerprint: String,
    consumed: ConsumedPodSpec,
}

impl<W: Workload> Cached<W> {
    pub fn new(observed: Observed<W>) -> Self {
        let Observed {
            mut workload,
            template_fingerprint,
        } = observed;
        let spec = workload
            .template_mut()
            .and_then(|template| template.spec.take());
        Cached {
            workload,
            template_fingerprint,
            consumed: spec.as_ref().map(ConsumedPodSpec::of).unwrap_or_default(),
        }
    }

    /// The workload's metadata, spec and status. Its pod template has no spec here: analyse it
    /// with [`Cached::analyse_with`].
    pub fn workload(&self) -> &W {
        &self.workload
    }

    pub fn workload_mut(&mut self) -> &mut W {
        &mut self.workload
    }

    /// The analysis of the workload as the API server holds it.
    pub fn analyse_with(
        &self,
        dialects: AnnotationDialects,
        known: impl Fn(SourceKind, &str) -> Option<SourceMeta>,
    ) -> WorkloadAnalysis {
        let Some(template) = self.workload.template() else {
            return with_input(&self.workload, |input| analyse_with(input, dialects, known));
        };
        let template = PodTemplateSpec {
            metadata: template.metadata.clone(),
            spec: Some(self.consumed.to_pod_spec()),
        };
        with_template(&self.workload, &template, |input| {
            analyse_with(input, dialects, known)
        })
    }
}

impl<'de, W: Workload> serde::Deserialize<'de> for Cached<W> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Observed::deserialize(deserializer).map(Cached::new)
    }
}

workload_resource!(Cached);

/// What the analysis reads of a pod spec.
#[derive(Clone, Debug, Default, PartialEq)]
struct ConsumedPodSpec {
    init_containers: Vec<ConsumingContainer>,
    containers: Vec<ConsumingContainer>,
    volumes: Vec<ConfigVolume>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ConsumingContainer {
    name: String,
    restart_policy: Option<String>,
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFromSource>>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

/// A volume that can hold a ConfigMap or a Secret; other volumes (emptyDir, claims, the
/// downward API alone) consume no config.
#[derive(Clone, Debug, Default, PartialEq)]
struct ConfigVolume {
    name: String,
    config_map: Option<ConfigMapVolumeSource>,
    secret: Option<SecretVolumeSource>,
    projected: Option<ProjectedVolumeSource>,
}

impl ConsumedPodSpec {
    fn of(spec: &PodSpec) -> Self {
        let containers = |list: Option<&Vec<Container>>| {
            list.into_iter()
                .flatten()
                .map(ConsumingContainer::of)
                .collect()
        };
        ConsumedPodSpec {
            init_containers: containers(spec.init_containers.as_ref()),
            containers: containers(Some(&spec.containers)),
            volumes: spec
                .volumes
                .iter()
                .flatten()
                .filter_map(ConfigVolume::of)
                .collect(),
        }
    }

    fn to_pod_spec(&self) -> PodSpec {
        let containers = |list: &[ConsumingContainer]| {
            list.iter().map(ConsumingContainer::to_container).collect()
        };
        PodSpec {
            init_containers: Some(containers(&self.init_containers)),
            containers: containers(&self.containers),
            volumes: Some(self.volumes.iter().map(ConfigVolume::to_volume).collect()),
            ..PodSpec::default()
        }
    }
}

impl ConsumingContainer {
    fn of(container: &Container) -> Self {
        ConsumingContainer {
            name: container.name.clone(),
            restart_policy: container.restart_policy.clone(),
            env: container.env.clone(),
            env_from: container.env_from.clone(),
            volume_mounts: container.volume_mounts.clone(),
        }
    }

    fn to_container(&self) -> Container {
        Container {
            name: self.name.clone(),
            restart_policy: self.restart_policy.clone(),
            env: self.env.clone(),
            env_from: self.env_from.clone(),
            volume_mounts: self.volume_mounts.clone(),
            ..Container::default()
        }
    }
}

impl ConfigVolume {
    fn of(volume: &Volume) -> Option<Self> {
        let holds_config =
            volume.config_map.is_some() || volume.secret.is_some() || volume.projected.is_some();
        holds_config.then(|| ConfigVolume {
            name: volume.name.clone(),
            config_map: volume.config_map.clone(),
            secret: volume.secret.clone(),
            projected: volume.projected.clone(),
        })
    }

    fn to_volume(&self) -> Volume {
        Volume {
            name: self.name.clone(),
            config_map: self.config_map.clone(),
            secret: self.secret.clone(),
            projected: self.projected.clone(),
            ..Volume::default()
        }
    }
}

#[cfg(test)]
mod tests;
