use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::policy;

fn cached<W: Workload>(object: &Value) -> (Observed<W>, Cached<W>) {
    let observed = Observed::<W>::from_json(object.clone()).unwrap();
    let cached: Cached<W> = serde_json::from_value(object.clone()).unwrap();
    (observed, cached)
}

fn known(kind: SourceKind, name: &str) -> Option<SourceMeta> {
    // Some sources exist (one of them immutable), others do not.
    match (kind, name) {
        (_, "frozen") => Some(SourceMeta {
            immutable: true,
            ..SourceMeta::default()
        }),
        (_, "missing") => None,
        _ => Some(SourceMeta::default()),
    }
}

fn assert_same_analysis<W: Workload>(object: &Value) -> Result<(), TestCaseError> {
    let (observed, cached) = cached::<W>(object);
    for reloader in [false, true] {
        let dialects = AnnotationDialects { reloader };
        let full = with_input(&observed.workload, |input| {
            analyse_with(input, dialects, known)
        });
        prop_assert_eq!(&cached.analyse_with(dialects, known), &full);
    }
    prop_assert_eq!(&cached.template_fingerprint, &observed.template_fingerprint);
    Ok(())
}

fn workload(kind: &str, api_version: &str, annotations: Value, template: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                     "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    })
}

#[test]
fn only_what_the_analysis_reads_is_kept() {
    let object = workload(
        "Deployment",
        "apps/v1",
        json!({"envroll.dev/auto": "true"}),
        json!({
            "metadata": {"labels": {"app": "web"},
                         "annotations": {policy::CONFIG_HASH: "abc"}},
            "spec": {
                "containers": [{
                    "name": "app", "image": "shop/web:1", "args": ["--serve"],
                    "resources": {"requests": {"memory": "64Mi"}},
                    "envFrom": [{"configMapRef": {"name": "settings"}}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"},
                                     {"name": "conf", "mountPath": "/etc/web"}],
                }],
                "volumes": [{"name": "scratch", "emptyDir": {}},
                            {"name": "conf", "configMap": {"name": "files"}}],
                "nodeSelector": {"disk": "ssd"},
            },
        }),
    );
    let (observed, cached) = cached::<Deployment>(&object);
    let template = cached.workload().template().unwrap();
    assert_eq!(template.spec, None);
    assert_eq!(cached.workload().template_config_hash(), Some("abc"));
    assert_eq!(
        cached.workload().metadata,
        observed.workload.metadata,
        "the workload's own metadata is kept whole"
    );
    let spec = cached.consumed.to_pod_spec();
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(spec.containers[0].image, None);
    assert_eq!(spec.containers[0].resources, None);
    assert_eq!(spec.node_selector, None);
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["conf"]);
    assert_same_analysis::<Deployment>(&object).unwrap();
}

#[test]
fn a_workload_without_a_pod_spec_stays_without_one() {
    let object = workload("DaemonSet", "apps/v1", json!({}), json!({"metadata": {}}));
    assert_same_analysis::<DaemonSet>(&object).unwrap();
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["settings", "db", "frozen", "missing"])
}

fn optional() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![json!(null), json!(true), json!(false)])
}

fn env_var() -> impl Strategy<Value = Value> {
    (name(), any::<bool>(), "[a-c]", optional()).prop_map(|(source, secret, key, optional)| {
        let reference = json!({"name": source, "key": key, "optional": optional});
        let from = if secret {
            json!({"secretKeyRef": reference})
        } else {
            json!({"configMapKeyRef": reference})
        };
        json!({"name": format!("V_{key}"), "valueFrom": from})
    })
}

fn env_from() -> impl Strategy<Value = Value> {
    (name(), any::<bool>(), optional()).prop_map(|(source, secret, optional)| {
        let reference = json!({"name": source, "optional": optional});
        if secret {
            json!({"secretRef": reference})
        } else {
            json!({"configMapRef": reference})
        }
    })
}

fn volume(index: usize) -> impl Strategy<Value = Value> {
    (0..5u8, name(), prop::option::of("[a-c]")).prop_map(move |(shape, source, item)| {
        let items = item.map(|key| json!([{"key": key, "path": key}]));
        let body = match shape {
            0 => json!({"configMap": {"name": source, "items": items}}),
            1 => json!({"secret": {"secretName": source, "items": items}}),
            2 => json!({"projected": {"sources": [
                {"configMap": {"name": source, "items": items}},
                {"secret": {"name": "db"}},
                {"downwardAPI": {"items": [{"path": "labels",
                                            "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            ]}}),
            3 => json!({"emptyDir": {}}),
            _ => json!({"persistentVolumeClaim": {"claimName": "data"}}),
        };
        let mut volume = body;
        volume["name"] = json!(format!("vol-{index}"));
        volume
    })
}

fn mount() -> impl Strategy<Value = Value> {
    (0..5usize, prop::option::of("[a-c]"), any::<bool>()).prop_map(|(index, sub_path, expr)| {
        let mut mount = json!({"name": format!("vol-{index}"), "mountPath": format!("/m/{index}")});
        if let Some(path) = sub_path {
            mount[if expr { "subPathExpr" } else { "subPath" }] = json!(path);
        }
        mount
    })
}

fn container(index: usize, init: bool) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(env_var(), 0..3),
        prop::collection::vec(env_from(), 0..2),
        prop::collection::vec(mount(), 0..3),
        any::<bool>(),
    )
        .prop_map(move |(env, env_from, mounts, sidecar)| {
            let mut container = json!({
                "name": format!("{}-{index}", if init { "init" } else { "app" }),
                "image": "shop/web:1", "ports": [{"containerPort": 8080}],
                "env": env, "envFrom": env_from, "volumeMounts": mounts,
            });
            if init && sidecar {
                container["restartPolicy"] = json!("Always");
            }
            container
        })
}

fn annotations() -> impl Strategy<Value = Value> {
    prop::sample::subsequence(
        vec![
            ("envroll.dev/auto", "true"),
            ("envroll.dev/configmaps", "settings"),
            ("envroll.dev/volumes", "in-place"),
            ("reloader.stakater.com/auto", "true"),
            ("secret.reloader.stakater.com/reload", "db"),
        ],
        0..4,
    )
    .prop_map(|pairs| {
        Value::Object(
            pairs
                .into_iter()
                .map(|(key, value)| (key.to_string(), json!(value)))
                .collect(),
        )
    })
}

fn template() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(any::<bool>(), 0..3),
        prop::collection::vec(any::<bool>(), 1..3),
        annotations(),
    )
        .prop_flat_map(|(init, main, template_annotations)| {
            let init: Vec<_> = (0..init.len()).map(|i| container(i, true)).collect();
            let main: Vec<_> = (0..main.len()).map(|i| container(i, false)).collect();
            let volumes: Vec<_> = (0..5).map(volume).collect();
            (init, main, volumes, Just(template_annotations))
        })
        .prop_map(|(init, main, volumes, template_annotations)| {
            json!({
                "metadata": {"annotations": template_annotations},
                "spec": {"initContainers": init, "containers": main, "volumes": volumes},
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cached_workload_analyses_as_the_full_one(
        annotations in annotations(),
        template in template(),
        kind in 0..3u8,
    ) {
        match kind {
            0 => assert_same_analysis::<Deployment>(
                &workload("Deployment", "apps/v1", annotations, template))?,
            1 => assert_same_analysis::<StatefulSet>(
                &workload("StatefulSet", "apps/v1", annotations, template))?,
            _ => assert_same_analysis::<DaemonSet>(
                &workload("DaemonSet", "apps/v1", annotations, template))?,
        }
    }
}
