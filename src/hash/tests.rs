use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::test_support::analyse_deployment;

fn digests(salt: &str, values: &[(&str, &str)]) -> SourceDigests {
    SourceDigests::from_values(
        salt.as_bytes(),
        values
            .iter()
            .map(|(k, v)| (*k, Section::Data, v.as_bytes())),
    )
}

fn input<'a>(
    kind: SourceKind,
    name: &'a str,
    keys: Option<&'a BTreeSet<String>>,
    state: SourceState<'a>,
) -> HashInput<'a> {
    HashInput {
        kind,
        namespace: "shop",
        name,
        keys,
        state,
    }
}

// The golden vectors of docs/hash.md: any change to the encoding must change these on purpose.
#[test]
fn golden_value_digest() {
    assert_eq!(
        hex::encode(value_digest(b"", b"debug")),
        "dbc752b4e86dbc29f94e648e54a84d05478b7cf2bc17949fec5bf36e05e12cd2"
    );
}

#[test]
fn golden_empty_hash() {
    assert_eq!(
        config_hash(&[]),
        "b4139fbf8139e5fad362b79ea8c7bcc591010a53cf1450e605e174273529608c"
    );
}

#[test]
fn golden_config_map_and_secret() {
    let app_env = digests("", &[("LOG_LEVEL", "debug"), ("PORT", "8080")]);
    let db = digests(
        "6f1c1f0e-3b1a-4c55-9d8e-1f2a3b4c5d6e",
        &[("password", "hunter2")],
    );
    let password = BTreeSet::from(["password".to_string()]);
    let hash = config_hash(&[
        input(
            SourceKind::Secret,
            "db",
            Some(&password),
            SourceState::Present(&db),
        ),
        input(
            SourceKind::ConfigMap,
            "app-env",
            None,
            SourceState::Present(&app_env),
        ),
    ]);
    assert_eq!(
        hash,
        "6e8064cbe3ae4036eb2964e3bc795d2967de4a875c85110aa3e3d8a5eb00a474"
    );
}

#[test]
fn golden_missing_optional_and_absent_key() {
    let flags = digests("", &[]);
    let wanted = BTreeSet::from(["enabled".to_string()]);
    let hash = config_hash(&[
        input(
            SourceKind::ConfigMap,
            "optional-extra",
            None,
            SourceState::Missing,
        ),
        input(
            SourceKind::ConfigMap,
            "flags",
            Some(&wanted),
            SourceState::Present(&flags),
        ),
    ]);
    assert_eq!(
        hash,
        "0e4077f18e1f396b78d23c84815de6636f09e4f6fef829ecb45bc712acdfdb01"
    );
}

#[test]
fn missing_differs_from_present_but_empty() {
    let empty = digests("", &[]);
    assert_ne!(
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Missing
        )]),
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Present(&empty)
        )])
    );
}

#[test]
fn an_absent_counted_key_differs_from_an_empty_value() {
    let wanted = BTreeSet::from(["k".to_string()]);
    let without = digests("", &[]);
    let with_empty = digests("", &[("k", "")]);
    assert_ne!(
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            Some(&wanted),
            SourceState::Present(&without)
        )]),
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            Some(&wanted),
            SourceState::Present(&with_empty)
        )])
    );
}

#[test]
fn kind_namespace_and_name_are_part_of_the_hash() {
    let same = digests("", &[("k", "v")]);
    let base = input(
        SourceKind::ConfigMap,
        "x",
        None,
        SourceState::Present(&same),
    );
    let hashes = [
        config_hash(&[base]),
        config_hash(&[HashInput {
            kind: SourceKind::Secret,
            ..base
        }]),
        config_hash(&[HashInput {
            namespace: "other",
            ..base
        }]),
        config_hash(&[HashInput { name: "y", ..base }]),
    ];
    let distinct: BTreeSet<&String> = hashes.iter().collect();
    assert_eq!(distinct.len(), hashes.len(), "{hashes:?}");
}

#[test]
fn length_prefixes_keep_field_boundaries_apart() {
    let a = digests("", &[("ab", "c")]);
    let b = digests("", &[("a", "bc")]);
    assert_ne!(
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Present(&a)
        )]),
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Present(&b)
        )])
    );
}

#[test]
fn data_and_binary_data_are_told_apart() {
    let text = SourceDigests::from_values(b"", [("k", Section::Data, b"v".as_slice())]);
    let binary = SourceDigests::from_values(b"", [("k", Section::BinaryData, b"v".as_slice())]);
    assert_ne!(
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Present(&text)
        )]),
        config_hash(&[input(
            SourceKind::ConfigMap,
            "x",
            None,
            SourceState::Present(&binary)
        )])
    );
}

#[test]
fn a_secret_value_cannot_be_confirmed_without_the_uid() {
    // Someone who can read the workload knows kind, namespace, name and key, and can guess
    // "hunter2"; without the Secret's UID the guess cannot be checked.
    let real = digests("uid-only-secret-readers-see", &[("password", "hunter2")]);
    let guess = digests("", &[("password", "hunter2")]);
    assert_ne!(
        config_hash(&[input(
            SourceKind::Secret,
            "db",
            None,
            SourceState::Present(&real)
        )]),
        config_hash(&[input(
            SourceKind::Secret,
            "db",
            None,
            SourceState::Present(&guess)
        )])
    );
    assert_eq!(salt_for(SourceKind::Secret, "u-1"), b"u-1");
    assert_eq!(salt_for(SourceKind::ConfigMap, "u-1"), b"");
}

fn analysed(yaml: &str, pairs: &[(&str, &str)]) -> WorkloadAnalysis {
    analyse_deployment(pairs, yaml, |_, _| None)
}

const ENV_AND_VOLUME: &str = r#"
spec:
  containers:
  - name: app
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: settings, key: level}}
    - name: EXTRA
      valueFrom: {configMapKeyRef: {name: extra, key: x, optional: true}}
    volumeMounts: [{name: conf, mountPath: /etc/app}]
  volumes:
  - name: conf
    configMap: {name: files}
"#;

#[test]
fn workload_hash_blocks_on_a_missing_required_source_only() {
    let analysis = analysed(ENV_AND_VOLUME, &[("envroll.dev/auto", "true")]);
    let settings = digests("", &[("level", "info")]);
    let lookup_without_settings = |_: SourceKind, _: &str| None;
    assert_eq!(
        workload_hash(&analysis, lookup_without_settings),
        Err(MissingRequired {
            sources: vec![(SourceKind::ConfigMap, "settings".to_string())]
        })
    );
    let with_settings = |_: SourceKind, name: &str| (name == "settings").then_some(&settings);
    let optional_missing = workload_hash(&analysis, with_settings).unwrap();
    assert_eq!(
        optional_missing.sources.keys().collect::<Vec<_>>(),
        vec!["ConfigMap/extra", "ConfigMap/settings"]
    );
    let extra = digests("", &[("x", "1")]);
    let with_both = |_: SourceKind, name: &str| match name {
        "settings" => Some(&settings),
        "extra" => Some(&extra),
        _ => None,
    };
    assert_ne!(
        optional_missing,
        workload_hash(&analysis, with_both).unwrap(),
        "creating an optional source changes the hash"
    );
}

fn small_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-d]{1,2}", "[a-z0-9]{0,6}", 0..6)
}

proptest! {
    #[test]
    fn the_hash_does_not_depend_on_input_or_key_order(
        first in small_map(),
        second in small_map(),
        reverse_keys in any::<bool>(),
    ) {
        let digest_of = |map: &BTreeMap<String, String>| {
            let mut pairs: Vec<(&String, &String)> = map.iter().collect();
            if reverse_keys {
                pairs.reverse();
            }
            SourceDigests::from_values(b"", pairs.into_iter().map(|(k, v)| (k.as_str(), Section::Data, v.as_bytes())))
        };
        let (a, b) = (digest_of(&first), digest_of(&second));
        let forward = [
            input(SourceKind::ConfigMap, "a", None, SourceState::Present(&a)),
            input(SourceKind::Secret, "b", None, SourceState::Present(&b)),
        ];
        let backward = [forward[1], forward[0]];
        prop_assert_eq!(config_hash(&forward), config_hash(&backward));
    }

    #[test]
    fn the_hash_changes_iff_a_counted_value_changes(
        values in small_map(),
        counted in prop::option::of(prop::collection::btree_set("[a-d]{1,2}", 0..4)),
        key in "[a-d]{1,2}",
        new_value in "[a-z0-9]{0,6}",
    ) {
        let to_digests = |map: &BTreeMap<String, String>| {
            SourceDigests::from_values(b"", map.iter().map(|(k, v)| (k.as_str(), Section::Data, v.as_bytes())))
        };
        let mut changed = values.clone();
        changed.insert(key.clone(), new_value.clone());
        let (before, after) = (to_digests(&values), to_digests(&changed));
        let hash = |d| config_hash(&[input(SourceKind::ConfigMap, "x", counted.as_ref(), SourceState::Present(d))]);
        let is_counted = counted.as_ref().is_none_or(|c| c.contains(&key));
        let value_changed = values.get(&key) != Some(&new_value);
        prop_assert_eq!(hash(&before) != hash(&after), is_counted && value_changed);
    }

    #[test]
    fn only_rollout_sources_and_counted_keys_move_the_workload_hash(
        level in "[a-z]{1,5}",
        other_key_value in "[a-z]{1,5}",
        file_value in "[a-z]{1,5}",
        change in 0u8..3,
        new_value in "[A-Z]{1,5}",
    ) {
        let analysis = analysed(ENV_AND_VOLUME, &[("envroll.dev/auto", "true")]);
        let extra = digests("", &[]);
        let hash_with = |level: &str, other: &str, file: &str| {
            let settings = digests("", &[("level", level), ("unreferenced", other)]);
            let files = digests("", &[("app.yaml", file)]);
            workload_hash(&analysis, |_, name| match name {
                "settings" => Some(&settings),
                "files" => Some(&files),
                "extra" => Some(&extra),
                _ => None,
            })
            .map(|h| h.total)
            .unwrap()
        };
        let before = hash_with(&level, &other_key_value, &file_value);
        let after = match change {
            0 => hash_with(&new_value, &other_key_value, &file_value),
            1 => hash_with(&level, &new_value, &file_value),
            _ => hash_with(&level, &other_key_value, &new_value),
        };
        // Only the referenced key `level` counts; `unreferenced` is uncounted and `files` is a
        // hot-reloaded volume, not a rollout source.
        prop_assert_eq!(before != after, change == 0);
    }
}

fn digest_of(byte: u8) -> KeyDigest {
    [byte; 32]
}

#[test]
fn key_digests_are_sorted_and_the_last_value_of_a_key_wins() {
    let keys: KeyDigests = [
        ("b", Section::Data, digest_of(1)),
        ("a", Section::BinaryData, digest_of(2)),
        ("b", Section::BinaryData, digest_of(3)),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(keys.get("b"), Some((Section::BinaryData, &digest_of(3))));
    assert_eq!(keys.get("a"), Some((Section::BinaryData, &digest_of(2))));
    assert_eq!(keys.get("c"), None);
    assert!(KeyDigests::new().is_empty());
}

proptest! {
    #[test]
    fn key_digests_answer_as_a_map_collected_from_the_same_entries(
        entries in proptest::collection::vec(("[a-d]{1,2}", any::<bool>(), any::<u8>()), 0..12),
        probe in "[a-d]{1,2}",
    ) {
        let section = |binary: bool| if binary { Section::BinaryData } else { Section::Data };
        let model: BTreeMap<String, (Section, KeyDigest)> = entries
            .iter()
            .map(|(key, binary, byte)| (key.clone(), (section(*binary), digest_of(*byte))))
            .collect();
        let keys: KeyDigests = entries
            .iter()
            .map(|(key, binary, byte)| (key.as_str(), section(*binary), digest_of(*byte)))
            .collect();
        prop_assert_eq!(keys.len(), model.len());
        let listed: Vec<(String, Section, KeyDigest)> =
            keys.iter().map(|(key, section, digest)| (key.to_string(), section, *digest)).collect();
        let expected: Vec<(String, Section, KeyDigest)> =
            model.iter().map(|(key, (section, digest))| (key.clone(), *section, *digest)).collect();
        prop_assert_eq!(listed, expected);
        prop_assert_eq!(keys.get(&probe), model.get(&probe).map(|(section, digest)| (*section, digest)));
    }
}
