//! A fingerprint of a pod template that survives upgrades.
//!
//! The baseline records it so that envroll can tell a template edit (which replaces the pods
//! anyway) from a config change. It is computed from the template as the API server sent it, not
//! from a re-serialized k8s-openapi struct: a newer envroll (another k8s-openapi) must not see a
//! different template where nothing changed, and fields this build does not know are still part
//! of what the user wrote. The encoding is canonical (sorted keys, no nulls, no empty objects or
//! lists) and carries a version, so a future change of the encoding is recognised as such instead
//! of passing for a template edit.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::policy;

/// Prefix of fingerprints made by this encoding. A baseline with another (or no) prefix was made
/// by an older envroll: its template cannot be compared, only its sources.
pub const VERSION: &str = "v2";
/// 64 bits are plenty to notice an edit and keep the baseline annotation short.
const DIGEST_HEX_LEN: usize = 16;

/// The fingerprint of a pod template given as JSON (`spec.template` of a workload). envroll's
/// own annotations (`envroll.dev/config-hash`, `envroll.dev/rollout`) are left out, so a rollout
/// by envroll is not a template edit.
pub fn template_fingerprint(template: &Value) -> String {
    let mut template = canonical(template).unwrap_or(Value::Null);
    if let Some(annotations) = template
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(policy::CONFIG_HASH);
        annotations.remove(policy::ROLLOUT_MARK);
    }
    // Removing the annotation can leave empty objects behind.
    let template = canonical(&template).unwrap_or(Value::Null);
    let bytes = serde_json::to_vec(&template).expect("a JSON value always serializes");
    let digest = hex::encode(Sha256::digest(bytes));
    format!("{VERSION}:{}", &digest[..DIGEST_HEX_LEN])
}

/// Whether a recorded fingerprint was made by this encoding and can be compared with a new one.
pub fn is_current(fingerprint: &str) -> bool {
    fingerprint
        .split_once(':')
        .is_some_and(|(version, _)| version == VERSION)
}

/// The value with nulls and empty objects and lists removed, or `None` if nothing is left. The
/// API server may send `{}` or `null` where a struct would omit the field, and the reverse: both
/// mean "not set". Object keys are sorted because `serde_json::Map` is ordered by key.
fn canonical(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(fields) => {
            let kept: Map<String, Value> = fields
                .iter()
                .filter_map(|(key, field)| canonical(field).map(|field| (key.clone(), field)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            // Positions matter in a list: an emptied element stays as an empty object.
            let kept: Vec<Value> = items
                .iter()
                .map(|item| canonical(item).unwrap_or(Value::Object(Map::new())))
                .collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        scalar => Some(scalar.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"containers": [{
                "name": "web", "image": "nginx:1.27", "resources": {},
                "envFrom": [{"configMapRef": {"name": "web-env"}}]
            }]}
        })
    }

    #[test]
    fn golden_vectors_do_not_change_between_releases() {
        // A change here makes every baseline look like a template edit after an upgrade: bump
        // VERSION instead of editing these values.
        assert_eq!(template_fingerprint(&web()), "v2:c45fb9507c3fb757");
        assert_eq!(template_fingerprint(&json!({})), "v2:74234e98afe7498f");
    }

    #[test]
    fn key_order_nulls_and_empty_fields_do_not_matter() {
        let reordered: Value = serde_json::from_str(
            r#"{"spec": {"containers": [{"envFrom": [{"configMapRef": {"name": "web-env"}}],
                "image": "nginx:1.27", "name": "web"}]},
                "metadata": {"annotations": {}, "labels": {"app": "web"}}}"#,
        )
        .unwrap();
        assert_eq!(
            template_fingerprint(&web()),
            template_fingerprint(&reordered)
        );
    }

    #[test]
    fn envrolls_own_annotation_is_left_out_and_others_count() {
        let mut rolled = web();
        rolled["metadata"]["annotations"] =
            json!({policy::CONFIG_HASH: "abc", policy::ROLLOUT_MARK: "42"});
        assert_eq!(template_fingerprint(&web()), template_fingerprint(&rolled));
        let mut restarted = web();
        restarted["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-11-25T10:00:00Z"});
        assert_ne!(
            template_fingerprint(&web()),
            template_fingerprint(&restarted)
        );
    }

    #[test]
    fn fields_unknown_to_this_build_count() {
        let mut newer = web();
        newer["spec"]["someFutureField"] = json!({"enabled": true});
        assert_ne!(template_fingerprint(&web()), template_fingerprint(&newer));
    }

    #[test]
    fn list_positions_count() {
        let one = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let other = json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}});
        assert_ne!(template_fingerprint(&one), template_fingerprint(&other));
        let emptied = json!({"spec": {"containers": [{}, {"name": "b"}]}});
        let shorter = json!({"spec": {"containers": [{"name": "b"}]}});
        assert_ne!(
            template_fingerprint(&emptied),
            template_fingerprint(&shorter)
        );
    }

    #[test]
    fn only_this_encoding_is_comparable() {
        assert!(is_current(&template_fingerprint(&web())));
        // What envroll 0.1 recorded: a bare digest of the re-serialized struct.
        assert!(!is_current("1f0e3dad99908345"));
        assert!(!is_current("v1:1f0e3dad99908345"));
    }
}
