//! The `envroll.dev/*` annotations, parsed into a typed policy.
//!
//! Parsing never fails as a whole: every problem becomes a [`PolicyError`] value next to the best
//! policy that could be read, so one bad annotation produces a Warning Event instead of a crash and
//! the valid parts keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

pub mod reloader;

pub const AUTO: &str = "envroll.dev/auto";
pub const CONFIGMAPS: &str = "envroll.dev/configmaps";
pub const SECRETS: &str = "envroll.dev/secrets";
pub const VOLUMES: &str = "envroll.dev/volumes";
pub const IGNORE: &str = "envroll.dev/ignore";
/// Overrides `--max-rollouts-per-hour` for one workload; `0` is no limit.
pub const MAX_ROLLOUTS_PER_HOUR: &str = "envroll.dev/max-rollouts-per-hour";
/// Written into the pod template: changing it is what rolls the workload out.
pub const CONFIG_HASH: &str = "envroll.dev/config-hash";
/// Written into the pod template next to the hash when a rollout's hash is the one the template
/// already carries, so that the template still changes.
pub const ROLLOUT_MARK: &str = "envroll.dev/rollout";
/// Written into the workload's own metadata: the state envroll last acted on (see
/// `rollout::Applied`). Changing it never touches pods, which is why the baseline lives there and
/// not in the template.
pub const APPLIED: &str = "envroll.dev/applied";

const PREFIX: &str = "envroll.dev/";
const WORKLOAD_ANNOTATIONS: [&str; 6] = [
    AUTO,
    CONFIGMAPS,
    SECRETS,
    VOLUMES,
    MAX_ROLLOUTS_PER_HOUR,
    APPLIED,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumesMode {
    /// Plain and projected volume mounts are left to kubelet's in-place refresh (envroll's
    /// default).
    Reload,
    /// The same as `Reload`, under the name that reads best where Reloader's annotations would
    /// otherwise roll volume mounts out (`--reloader-annotations`).
    InPlace,
    /// The app cannot hot-reload: a volume-mounted change rolls out like an env change.
    Rollout,
}

impl VolumesMode {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumesMode::Reload => "reload",
            VolumesMode::InPlace => "in-place",
            VolumesMode::Rollout => "rollout",
        }
    }

    /// Whether a volume-mounted change rolls the workload out.
    pub fn rolls_out(self) -> bool {
        self == VolumesMode::Rollout
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub auto: bool,
    pub configmaps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// `envroll.dev/volumes`, when set: envroll's default is to reload in place, Reloader's
    /// annotations roll volume mounts out.
    pub volumes: Option<VolumesMode>,
    pub max_rollouts_per_hour: Option<u32>,
}

impl Policy {
    pub fn is_managed(&self) -> bool {
        self.auto || !self.configmaps.is_empty() || !self.secrets.is_empty()
    }
}

/// One annotation that could not be used as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub annotation: String,
    pub value: String,
    pub problem: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}: {:?} {}",
            self.annotation, self.value, self.problem
        )
    }
}

impl std::error::Error for PolicyError {}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPolicy {
    pub policy: Policy,
    pub errors: Vec<PolicyError>,
}

/// Reads a workload's annotations. Anything under `envroll.dev/` that is not understood is
/// reported, because a typo such as `envroll.dev/configmap` would otherwise silently disable
/// rollouts.
pub fn parse_workload_policy(annotations: &BTreeMap<String, String>) -> ParsedPolicy {
    let mut parsed = ParsedPolicy::default();
    for (key, value) in annotations.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        let result = match key.as_str() {
            AUTO => parse_bool(key, value).map(|auto| parsed.policy.auto = auto),
            CONFIGMAPS => parse_name_list(key, value, &mut parsed.policy.configmaps),
            SECRETS => parse_name_list(key, value, &mut parsed.policy.secrets),
            VOLUMES => parse_volumes(key, value).map(|mode| parsed.policy.volumes = Some(mode)),
            MAX_ROLLOUTS_PER_HOUR => value
                .trim()
                .parse::<u32>()
                .map(|limit| parsed.policy.max_rollouts_per_hour = Some(limit))
                .map_err(|_| error(key, value, "is not a whole number (0 is no limit)")),
            APPLIED => Ok(()),
            IGNORE => Err(error(
                key,
                value,
                "belongs on a ConfigMap or Secret, not on a workload",
            )),
            _ => Err(error(
                key,
                value,
                &format!(
                    "is not a known annotation (known: {})",
                    WORKLOAD_ANNOTATIONS.join(", ")
                ),
            )),
        };
        if let Err(problems) = result {
            parsed.errors.push(problems);
        }
    }
    parsed
}

/// Reads `envroll.dev/ignore` from a ConfigMap or Secret. A malformed value is reported and the
/// object is treated as not ignored, so a typo never hides a change.
pub fn parse_ignore(annotations: &BTreeMap<String, String>) -> Result<bool, PolicyError> {
    match annotations.get(IGNORE) {
        None => Ok(false),
        Some(value) => parse_bool(IGNORE, value),
    }
}

fn error(annotation: &str, value: &str, problem: &str) -> PolicyError {
    PolicyError {
        annotation: annotation.to_string(),
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, PolicyError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(error(key, value, "is not \"true\" or \"false\"")),
    }
}

fn parse_volumes(key: &str, value: &str) -> Result<VolumesMode, PolicyError> {
    match value.trim() {
        "rollout" => Ok(VolumesMode::Rollout),
        "reload" => Ok(VolumesMode::Reload),
        "in-place" => Ok(VolumesMode::InPlace),
        _ => Err(error(
            key,
            value,
            "is not \"rollout\", \"reload\" or \"in-place\"",
        )),
    }
}

/// Keeps every valid name even when others in the list are bad, and reports the bad ones.
fn parse_name_list(
    key: &str,
    value: &str,
    names: &mut BTreeSet<String>,
) -> Result<(), PolicyError> {
    let mut problems = Vec::new();
    for (position, name) in value.split(',').map(str::trim).enumerate() {
        if name.is_empty() {
            problems.push(format!("entry {} is empty", position + 1));
        } else if !is_object_name(name) {
            problems.push(format!("{name:?} is not a valid object name"));
        } else {
            names.insert(name.to_string());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(error(
            key,
            value,
            &format!("has bad entries: {}", problems.join("; ")),
        ))
    }
}

/// ConfigMap and Secret names are DNS-1123 subdomains.
fn is_object_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_annotations_is_unmanaged_without_errors() {
        let parsed = parse_workload_policy(&annotations(&[("app", "web")]));
        assert!(!parsed.policy.is_managed());
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn auto_true_manages() {
        let parsed = parse_workload_policy(&annotations(&[(AUTO, " True ")]));
        assert!(parsed.policy.auto);
        assert!(parsed.policy.is_managed());
    }

    #[test]
    fn malformed_auto_is_an_error_and_not_managed() {
        let parsed = parse_workload_policy(&annotations(&[(AUTO, "yes please")]));
        assert!(!parsed.policy.is_managed());
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(
            parsed.errors[0].to_string(),
            "annotation envroll.dev/auto: \"yes please\" is not \"true\" or \"false\""
        );
    }

    #[test]
    fn name_lists_tolerate_whitespace() {
        let parsed = parse_workload_policy(&annotations(&[
            (CONFIGMAPS, " a ,b,  c.d "),
            (SECRETS, "s"),
        ]));
        assert!(parsed.errors.is_empty());
        assert_eq!(
            parsed.policy.configmaps,
            BTreeSet::from(["a".into(), "b".into(), "c.d".into()])
        );
        assert_eq!(parsed.policy.secrets, BTreeSet::from(["s".into()]));
        assert!(parsed.policy.is_managed());
    }

    #[test]
    fn empty_and_invalid_names_are_reported_and_valid_ones_kept() {
        let parsed = parse_workload_policy(&annotations(&[(CONFIGMAPS, "a,, Bad_Name ,b")]));
        assert_eq!(
            parsed.policy.configmaps,
            BTreeSet::from(["a".into(), "b".into()])
        );
        let message = parsed.errors[0].to_string();
        assert!(message.contains("entry 2 is empty"), "{message}");
        assert!(
            message.contains("\"Bad_Name\" is not a valid object name"),
            "{message}"
        );
    }

    #[test]
    fn an_empty_list_is_an_error() {
        let parsed = parse_workload_policy(&annotations(&[(SECRETS, "")]));
        assert!(!parsed.policy.is_managed());
        assert_eq!(parsed.errors.len(), 1);
    }

    #[test]
    fn volumes_mode() {
        let parsed = parse_workload_policy(&annotations(&[(AUTO, "true"), (VOLUMES, "rollout")]));
        assert_eq!(parsed.policy.volumes, Some(VolumesMode::Rollout));
        let parsed = parse_workload_policy(&annotations(&[(VOLUMES, " in-place ")]));
        assert_eq!(parsed.policy.volumes, Some(VolumesMode::InPlace));
        assert!(!VolumesMode::InPlace.rolls_out() && !VolumesMode::Reload.rolls_out());
        let parsed = parse_workload_policy(&annotations(&[(VOLUMES, "sometimes")]));
        assert_eq!(parsed.policy.volumes, None);
        assert_eq!(
            parsed.errors[0].to_string(),
            "annotation envroll.dev/volumes: \"sometimes\" is not \"rollout\", \"reload\" or \"in-place\""
        );
    }

    #[test]
    fn the_rollout_budget_can_be_overridden_per_workload() {
        let parsed = parse_workload_policy(&annotations(&[(MAX_ROLLOUTS_PER_HOUR, " 3 ")]));
        assert_eq!(parsed.policy.max_rollouts_per_hour, Some(3));
        assert!(parsed.errors.is_empty());
        let parsed = parse_workload_policy(&annotations(&[(MAX_ROLLOUTS_PER_HOUR, "lots")]));
        assert_eq!(parsed.policy.max_rollouts_per_hour, None);
        assert_eq!(
            parsed.errors[0].to_string(),
            "annotation envroll.dev/max-rollouts-per-hour: \"lots\" is not a whole number (0 is no limit)"
        );
    }

    #[test]
    fn unknown_annotations_under_the_prefix_are_reported() {
        let parsed = parse_workload_policy(&annotations(&[
            ("envroll.dev/configmap", "a"),
            (APPLIED, "{}"),
        ]));
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0]
            .to_string()
            .contains("not a known annotation"));
    }

    #[test]
    fn ignore_on_objects() {
        assert_eq!(parse_ignore(&annotations(&[])), Ok(false));
        assert_eq!(parse_ignore(&annotations(&[(IGNORE, "true")])), Ok(true));
        assert!(parse_ignore(&annotations(&[(IGNORE, "please")])).is_err());
    }
}
