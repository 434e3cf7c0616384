//! Arbitrary annotation maps through every parser of `envroll.dev/*` annotations. Annotations are
//! written by users (and by other tools), so each parser must turn anything into a value or a
//! reported problem, and must be deterministic: the controller re-parses on every reconcile and
//! a flip-flopping answer would roll workloads out for nothing.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use envroll::analysis::SourceMeta;
use envroll::policy::reloader::{self, parse_reloader_policy, NamePattern};
use envroll::policy::{self, parse_ignore, parse_workload_policy};
use envroll::rollout::Applied;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Key {
    Auto,
    ConfigMaps,
    Secrets,
    Volumes,
    Ignore,
    Applied,
    /// Typos such as `envroll.dev/configmap` must be reported, not ignored.
    UnderPrefix(String),
    /// Stakater Reloader's annotations (`--reloader-annotations`).
    Reloader(ReloaderKey),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum ReloaderKey {
    Auto,
    ConfigMapAuto,
    SecretAuto,
    ConfigMapReload,
    SecretReload,
    ConfigMapsExclude,
    SecretsExclude,
    Search,
    Match,
    Ignore,
}

impl Key {
    fn render(&self) -> String {
        match self {
            Key::Auto => policy::AUTO.into(),
            Key::ConfigMaps => policy::CONFIGMAPS.into(),
            Key::Secrets => policy::SECRETS.into(),
            Key::Volumes => policy::VOLUMES.into(),
            Key::Ignore => policy::IGNORE.into(),
            Key::Applied => policy::APPLIED.into(),
            Key::UnderPrefix(rest) => format!("envroll.dev/{rest}"),
            Key::Reloader(key) => match key {
                ReloaderKey::Auto => reloader::AUTO,
                ReloaderKey::ConfigMapAuto => reloader::CONFIGMAP_AUTO,
                ReloaderKey::SecretAuto => reloader::SECRET_AUTO,
                ReloaderKey::ConfigMapReload => reloader::CONFIGMAP_RELOAD,
                ReloaderKey::SecretReload => reloader::SECRET_RELOAD,
                ReloaderKey::ConfigMapsExclude => reloader::CONFIGMAPS_EXCLUDE,
                ReloaderKey::SecretsExclude => reloader::SECRETS_EXCLUDE,
                ReloaderKey::Search => reloader::SEARCH,
                ReloaderKey::Match => reloader::MATCH,
                ReloaderKey::Ignore => reloader::IGNORE,
            }
            .into(),
            Key::Other(key) => key.clone(),
        }
    }
}

/// Values close to what users write, so the fuzzer spends its time near the accepted grammar.
#[derive(Arbitrary, Debug)]
enum Value {
    Word {
        word: Word,
        uppercase: bool,
        padding: u8,
    },
    Names {
        names: Vec<Name>,
        separator: Separator,
    },
    Applied {
        hash: String,
        template: String,
        sources: BTreeMap<String, String>,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Word {
    True,
    False,
    Rollout,
    Reload,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Valid(u8),
    Dotted(u8, u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Separator {
    Comma,
    CommaSpace,
    SpacedComma,
    Raw(String),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Word {
                word,
                uppercase,
                padding,
            } => {
                let word = match word {
                    Word::True => "true",
                    Word::False => "false",
                    Word::Rollout => "rollout",
                    Word::Reload => "reload",
                };
                let word = if *uppercase {
                    word.to_ascii_uppercase()
                } else {
                    word.to_string()
                };
                let pad = " ".repeat(usize::from(padding % 4));
                format!("{pad}{word}{pad}")
            }
            Value::Names { names, separator } => {
                let separator = match separator {
                    Separator::Comma => ",",
                    Separator::CommaSpace => ", ",
                    Separator::SpacedComma => " , ",
                    Separator::Raw(raw) => raw.as_str(),
                };
                names
                    .iter()
                    .map(|name| match name {
                        Name::Valid(n) => format!("app-{n}"),
                        Name::Dotted(a, b) => format!("{a}.config-{b}"),
                        Name::Raw(raw) => raw.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(separator)
            }
            Value::Applied {
                hash,
                template,
                sources,
            } => serde_json::json!({"hash": hash, "template": template, "sources": sources})
                .to_string(),
            Value::Raw(raw) => raw.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    annotations: Vec<(Key, Value)>,
    /// The pod template's, where Reloader also reads its annotations.
    template: Vec<(Key, Value)>,
    immutable: Option<bool>,
}

fuzz_target!(|input: Input| {
    let annotations: BTreeMap<String, String> = input
        .annotations
        .iter()
        .map(|(key, value)| (key.render(), value.render()))
        .collect();

    let parsed = parse_workload_policy(&annotations);
    assert_eq!(parsed, parse_workload_policy(&annotations), "deterministic");
    for error in &parsed.errors {
        assert_eq!(
            annotations.get(&error.annotation),
            Some(&error.value),
            "an error names an annotation and its value as written: {error}"
        );
        assert!(error.annotation.starts_with("envroll.dev/"));
        assert!(error.to_string().contains(&error.annotation));
    }
    for (names, key) in [
        (&parsed.policy.configmaps, policy::CONFIGMAPS),
        (&parsed.policy.secrets, policy::SECRETS),
    ] {
        let listed = annotations.get(key).map(String::as_str).unwrap_or_default();
        for name in names {
            assert!(
                !name.is_empty() && name.len() <= 253 && name.trim() == name,
                "accepted name {name:?}"
            );
            assert!(
                listed.split(',').any(|entry| entry.trim() == name),
                "accepted name {name:?} is listed in {listed:?}"
            );
        }
    }

    let ignore = parse_ignore(&annotations);
    assert_eq!(ignore, parse_ignore(&annotations), "deterministic");
    if let Ok(true) = ignore {
        assert_eq!(
            annotations[policy::IGNORE].trim().to_ascii_lowercase(),
            "true"
        );
    }
    let (meta, problem) = SourceMeta::from_object(&annotations, input.immutable);
    assert_eq!(meta.immutable, input.immutable == Some(true));
    match &ignore {
        Ok(ignore) => assert!(meta.ignore == *ignore && problem.is_none()),
        // A malformed ignore never hides a change.
        Err(error) => assert!(!meta.ignore && problem.as_ref() == Some(error)),
    }

    let template: BTreeMap<String, String> = input
        .template
        .iter()
        .map(|(key, value)| (key.render(), value.render()))
        .collect();
    let parsed = parse_reloader_policy(&annotations, &template);
    assert_eq!(
        parsed,
        parse_reloader_policy(&annotations, &template),
        "deterministic"
    );
    for error in &parsed.errors {
        // A problem of an annotation on the pod template says so, and quotes the template's value
        // (the workload may carry the same key with another value).
        let place = if error.problem.starts_with("on the pod template") {
            &template
        } else {
            &annotations
        };
        assert_eq!(
            place.get(&error.annotation),
            Some(&error.value),
            "an error quotes the annotation: {error}"
        );
        assert!(error.to_string().contains(&error.annotation));
    }
    for rules in [&parsed.policy.configmaps, &parsed.policy.secrets] {
        for pattern in &rules.reload {
            // Every accepted entry compiles again to the same pattern, within the limits.
            assert_eq!(NamePattern::compile(&pattern.entry).as_ref(), Ok(pattern));
            assert!(pattern.entry.len() <= reloader::MAX_PATTERN_LENGTH);
            if let Some(name) = pattern.literal_name() {
                assert!(pattern.matches(name), "a plain name matches itself: {name}");
            }
        }
    }
    assert_eq!(
        meta.reloader_ignore,
        annotations
            .get(reloader::IGNORE)
            .is_some_and(|v| v == "true")
    );
    assert_eq!(
        meta.reloader_match,
        annotations
            .get(reloader::MATCH)
            .is_some_and(|v| v == "true")
    );

    let applied = Applied::parse(annotations.get(policy::APPLIED));
    assert_eq!(
        applied,
        Applied::parse(annotations.get(policy::APPLIED)),
        "deterministic"
    );
    match applied {
        Ok(Some(applied)) => assert_eq!(
            Applied::parse(Some(&applied.to_annotation())),
            Ok(Some(applied)),
            "a baseline survives being written back"
        ),
        Ok(None) => assert!(!annotations.contains_key(policy::APPLIED)),
        Err(message) => assert!(message.contains(policy::APPLIED), "{message}"),
    }
});
