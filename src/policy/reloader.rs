//! Stakater Reloader's annotations, honoured with `--reloader-annotations`, read exactly where
//! and how Reloader reads them (`pkg/common/common.go`, `ShouldReload`):
//!
//! - For each kind of source, Reloader looks for the kind's reload list, `auto`, the kind's typed
//!   auto and `search` on the workload's metadata; when none of the four is there, it reads those
//!   four on the pod template instead. The exclude lists are read on the workload's metadata only.
//! - `auto` and the typed autos are Go booleans (`strconv.ParseBool`: `true`, `True`, `TRUE`, `t`,
//!   `T`, `1`); `search`, and `match` and `ignore` on a source, count only when exactly `"true"`.
//! - Reload list entries are trimmed and matched as the regular expression `^` + entry + `$` (Go's
//!   RE2 syntax, which the `regex` crate shares); exclude entries are trimmed exact names.
//!
//! A value Reloader would silently read as false, a regular expression that does not compile, or
//! an annotation Reloader would not read where it is written is reported next to the policy, so
//! a Reloader user sees why an annotation does nothing, instead of it doing nothing silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex::{Regex, RegexBuilder};

use super::{error, is_object_name, PolicyError};

pub const AUTO: &str = "reloader.stakater.com/auto";
pub const CONFIGMAP_AUTO: &str = "configmap.reloader.stakater.com/auto";
pub const SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
pub const CONFIGMAP_RELOAD: &str = "configmap.reloader.stakater.com/reload";
pub const SECRET_RELOAD: &str = "secret.reloader.stakater.com/reload";
pub const CONFIGMAPS_EXCLUDE: &str = "configmaps.exclude.reloader.stakater.com/reload";
pub const SECRETS_EXCLUDE: &str = "secrets.exclude.reloader.stakater.com/reload";
pub const SEARCH: &str = "reloader.stakater.com/search";
/// On a ConfigMap or Secret: found by workloads that set `search`.
pub const MATCH: &str = "reloader.stakater.com/match";
/// On a ConfigMap or Secret: never a source.
pub const IGNORE: &str = "reloader.stakater.com/ignore";

/// Reloader workload annotations envroll does not implement: reported, so that nobody relies on
/// them after switching.
const NOT_IMPLEMENTED: [&str; 5] = [
    "reloader.stakater.com/rollout-strategy",
    "deployment.reloader.stakater.com/pause-period",
    "secretproviderclass.reloader.stakater.com/reload",
    "secretproviderclass.reloader.stakater.com/auto",
    "secretproviderclasses.exclude.reloader.stakater.com/reload",
];

/// A regular expression's compiled program may take this many bytes at most. Object names are
/// at most 253 characters, so any sensible pattern fits many times over; a pathological one
/// (`(a{1000}){1000}`) is refused instead of eating the operator's memory.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Entries longer than this are refused before compiling.
pub const MAX_PATTERN_LENGTH: usize = 1024;
/// Nesting depth of a regular expression (groups, repetitions).
const REGEX_NEST_LIMIT: u32 = 32;

/// Where Reloader reads an annotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Place {
    #[default]
    Workload,
    PodTemplate,
}

impl Place {
    /// Appended to an annotation's name in reasons: nothing for the workload's own metadata.
    pub fn suffix(self) -> &'static str {
        match self {
            Place::Workload => "",
            Place::PodTemplate => " on the pod template",
        }
    }
}

/// One entry of a reload list.
#[derive(Clone, Debug)]
pub struct NamePattern {
    /// As written (trimmed).
    pub entry: String,
    regex: Regex,
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.entry == other.entry
    }
}

impl Eq for NamePattern {}

impl NamePattern {
    /// Anchored as Reloader anchors it: `^` + entry + `$`, so `a|b` is `^a|b$`, as in Reloader.
    pub fn compile(entry: &str) -> Result<Self, String> {
        if entry.len() > MAX_PATTERN_LENGTH {
            return Err(format!("is longer than {MAX_PATTERN_LENGTH} characters"));
        }
        let regex = RegexBuilder::new(&format!("^{entry}$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|problem| describe_regex_error(&problem))?;
        Ok(NamePattern {
            entry: entry.to_string(),
            regex,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// An entry that is an object name and nothing else also names a source the pod template
    /// need not reference (a `.` in it still matches any character, as in Reloader).
    pub fn literal_name(&self) -> Option<&str> {
        is_object_name(&self.entry).then_some(self.entry.as_str())
    }
}

/// One line, without the caret diagram `regex` draws for syntax errors.
fn describe_regex_error(problem: &regex::Error) -> String {
    match problem {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than the {limit} bytes allowed for a regular expression")
        }
        regex::Error::Syntax(text) => {
            let reason = text
                .lines()
                .rev()
                .find_map(|line| line.trim().strip_prefix("error: "))
                .unwrap_or("invalid syntax");
            format!("is not a valid regular expression: {reason}")
        }
        other => format!("is not a valid regular expression: {other}"),
    }
}

/// A true boolean annotation, with its value as written so that reasons can quote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enabled {
    pub value: String,
    pub place: Place,
}

/// Reloader's annotations that concern one kind of source, from where Reloader reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindRules {
    /// Where the reload list, `auto`, the typed auto and `search` were read.
    pub place: Place,
    /// `reloader.stakater.com/auto`, when true.
    pub auto: Option<Enabled>,
    /// `configmap.reloader.stakater.com/auto` or `secret.…/auto`, when true.
    pub typed_auto: Option<Enabled>,
    /// `reloader.stakater.com/search: "true"`.
    pub search: bool,
    /// `configmap.reloader.stakater.com/reload` or `secret.…/reload`, the entries that compiled.
    pub reload: Vec<NamePattern>,
    /// `configmaps.exclude.reloader.stakater.com/reload` or `secrets.exclude.…/reload`.
    pub exclude: BTreeSet<String>,
}

impl KindRules {
    /// Whether any annotation makes Reloader act on this kind of source.
    pub fn is_managed(&self) -> bool {
        self.auto.is_some() || self.typed_auto.is_some() || self.search || !self.reload.is_empty()
    }

    /// The reload list entry that matches this name, if any.
    pub fn listed(&self, name: &str) -> Option<&NamePattern> {
        self.reload.iter().find(|pattern| pattern.matches(name))
    }

    pub fn excluded(&self, name: &str) -> bool {
        self.exclude.contains(name)
    }
}

/// The annotation keys of one kind of source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindKeys {
    pub reload: &'static str,
    pub typed_auto: &'static str,
    pub exclude: &'static str,
    /// `ConfigMap` or `Secret`, in messages.
    pub noun: &'static str,
}

pub const CONFIGMAP_KEYS: KindKeys = KindKeys {
    reload: CONFIGMAP_RELOAD,
    typed_auto: CONFIGMAP_AUTO,
    exclude: CONFIGMAPS_EXCLUDE,
    noun: "ConfigMap",
};

pub const SECRET_KEYS: KindKeys = KindKeys {
    reload: SECRET_RELOAD,
    typed_auto: SECRET_AUTO,
    exclude: SECRETS_EXCLUDE,
    noun: "Secret",
};

/// Reloader's view of one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloaderPolicy {
    pub configmaps: KindRules,
    pub secrets: KindRules,
}

impl ReloaderPolicy {
    pub fn is_managed(&self) -> bool {
        self.configmaps.is_managed() || self.secrets.is_managed()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedReloaderPolicy {
    pub policy: ReloaderPolicy,
    pub errors: Vec<PolicyError>,
}

/// Reads Reloader's annotations from a workload's metadata and its pod template's metadata.
pub fn parse_reloader_policy(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
) -> ParsedReloaderPolicy {
    let mut errors = Errors::default();
    let configmaps = parse_kind(workload, template, CONFIGMAP_KEYS, &mut errors);
    let secrets = parse_kind(workload, template, SECRET_KEYS, &mut errors);
    // What Reloader would not read where it is written.
    for key in [CONFIGMAPS_EXCLUDE, SECRETS_EXCLUDE] {
        if let Some(value) = template.get(key) {
            errors.push(
                Place::PodTemplate,
                error(
                    key,
                    value,
                    "on the pod template is not read: Reloader reads it on the workload's metadata only, and so does envroll",
                ),
            );
        }
    }
    for (key, kinds) in [
        (AUTO, [Some(&configmaps), Some(&secrets)]),
        (SEARCH, [Some(&configmaps), Some(&secrets)]),
        (CONFIGMAP_RELOAD, [Some(&configmaps), None]),
        (CONFIGMAP_AUTO, [Some(&configmaps), None]),
        (SECRET_RELOAD, [None, Some(&secrets)]),
        (SECRET_AUTO, [None, Some(&secrets)]),
    ] {
        let Some(value) = template.get(key) else {
            continue;
        };
        if kinds
            .iter()
            .flatten()
            .all(|rules| rules.place == Place::Workload)
        {
            errors.push(
                Place::PodTemplate,
                error(
                    key,
                    value,
                    "on the pod template is not read: the workload's metadata carries Reloader annotations, and then Reloader (and envroll) reads none on the pod template",
                ),
            );
        }
    }
    for (place, annotations) in [(Place::Workload, workload), (Place::PodTemplate, template)] {
        for (key, value) in annotations {
            let problem = if NOT_IMPLEMENTED.contains(&key.as_str()) {
                "is a Reloader annotation envroll does not implement: ignored"
            } else if place == Place::Workload && (key == MATCH || key == IGNORE) {
                "belongs on a ConfigMap or Secret, not on a workload"
            } else {
                continue;
            };
            let problem = format!("{}{problem}", on(place));
            errors.push(place, error(key, value, &problem));
        }
    }
    ParsedReloaderPolicy {
        policy: ReloaderPolicy {
            configmaps,
            secrets,
        },
        errors: errors.into_vec(),
    }
}

/// `on the pod template ` before a problem, so that messages say where the annotation is.
fn on(place: Place) -> &'static str {
    match place {
        Place::Workload => "",
        Place::PodTemplate => "on the pod template ",
    }
}

/// Problems, each reported once even when both kinds of source read the same annotation.
#[derive(Default)]
struct Errors(BTreeMap<(String, bool), PolicyError>);

impl Errors {
    fn push(&mut self, place: Place, problem: PolicyError) {
        let key = (problem.annotation.clone(), place == Place::PodTemplate);
        self.0.entry(key).or_insert(problem);
    }

    fn into_vec(self) -> Vec<PolicyError> {
        self.0.into_values().collect()
    }
}

fn parse_kind(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
    keys: KindKeys,
    errors: &mut Errors,
) -> KindRules {
    let on_workload = [keys.reload, AUTO, keys.typed_auto, SEARCH]
        .iter()
        .any(|key| workload.contains_key(*key));
    let (place, annotations) = if on_workload {
        (Place::Workload, workload)
    } else {
        (Place::PodTemplate, template)
    };
    let mut rules = KindRules {
        place,
        ..KindRules::default()
    };
    let mut enabled = |key: &str| -> Option<Enabled> {
        let value = annotations.get(key)?;
        match go_bool(value) {
            Some(true) => Some(Enabled {
                value: value.clone(),
                place,
            }),
            Some(false) => None,
            None => {
                let problem = format!(
                    "{}is not a boolean (true, false, 1, 0, t, f); read as false, as Reloader does",
                    on(place)
                );
                errors.push(place, error(key, value, &problem));
                None
            }
        }
    };
    rules.auto = enabled(AUTO);
    rules.typed_auto = enabled(keys.typed_auto);
    if let Some(value) = annotations.get(SEARCH) {
        rules.search = value == "true";
        if !rules.search && value != "false" {
            let problem = format!(
                "{}is not \"true\"; read as false, as Reloader does",
                on(place)
            );
            errors.push(place, error(SEARCH, value, &problem));
        }
    }
    if let Some(value) = annotations.get(keys.reload) {
        let mut problems = Vec::new();
        for (position, entry) in value.split(',').map(str::trim).enumerate() {
            // Reloader compiles an empty entry to `^$`, which matches no name.
            if entry.is_empty() {
                continue;
            }
            match NamePattern::compile(entry) {
                Ok(pattern) => rules.reload.push(pattern),
                Err(problem) => {
                    problems.push(format!("entry {} {entry:?} {problem}", position + 1));
                }
            }
        }
        if !problems.is_empty() {
            let problem = format!("{}has bad entries: {}", on(place), problems.join("; "));
            errors.push(place, error(keys.reload, value, &problem));
        }
    }
    if let Some(value) = workload.get(keys.exclude) {
        rules.exclude = value
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
    }
    rules
}

/// Go's `strconv.ParseBool`, which Reloader reads `auto` with.
pub fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Reloader's annotations on a ConfigMap or Secret: each counts only when exactly `"true"`, as in
/// Reloader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloaderSourceAnnotations {
    pub ignore: bool,
    pub search_match: bool,
}

pub fn parse_source_annotations(
    annotations: &BTreeMap<String, String>,
) -> ReloaderSourceAnnotations {
    let is_true = |key: &str| annotations.get(key).is_some_and(|value| value == "true");
    ReloaderSourceAnnotations {
        ignore: is_true(IGNORE),
        search_match: is_true(MATCH),
    }
}

impl fmt::Display for Enabled {
    /// `: "true"` and where, to follow an annotation's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ": {:?}{}", self.value, self.place.suffix())
    }
}

#[cfg(test)]
mod tests;
