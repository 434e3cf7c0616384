use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::PartialObjectMeta;

use super::*;
use crate::hash::Section;
use crate::test_support::analyse_deployment;

fn config_map(name: &str, version: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("shop".into());
    cm.metadata.resource_version = Some(version.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

fn secret(name: &str, version: &str, password: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some("shop".into());
    secret.metadata.uid = Some(format!("uid-{name}"));
    secret.metadata.resource_version = Some(version.into());
    secret.data = Some(BTreeMap::from([(
        "password".into(),
        ByteString(password.as_bytes().to_vec()),
    )]));
    secret
}

fn secret_metadata(name: &str, version: &str) -> PartialObjectMeta<Secret> {
    let mut meta = PartialObjectMeta::<Secret>::default();
    meta.metadata.name = Some(name.into());
    meta.metadata.namespace = Some("shop".into());
    meta.metadata.resource_version = Some(version.into());
    meta
}

fn key(kind: SourceKind, name: &str) -> SourceKey {
    SourceKey::new(kind, "shop", name)
}

#[test]
fn records_keep_digests_not_values() {
    let (key, record) = config_map_record(&config_map("app", "1", &[("LEVEL", "debug")]));
    assert_eq!(key, SourceKey::new(SourceKind::ConfigMap, "shop", "app"));
    let (section, digest) = record.digests().unwrap().keys["LEVEL"];
    assert_eq!(section, Section::Data);
    assert_ne!(digest.as_slice(), b"debug");
}

#[test]
fn secrets_are_salted_with_their_uid() {
    let digest = |uid: &str| {
        let mut s = secret("db", "1", "pw");
        s.metadata.uid = Some(uid.into());
        secret_record(&s).unwrap().1.data
    };
    assert_ne!(digest("a"), digest("b"));
    assert_eq!(digest("a"), digest("a"));
}

#[test]
fn a_secret_without_uid_is_refused_not_digested_unsalted() {
    for uid in [None, Some(String::new())] {
        let mut s = secret("db", "1", "pw");
        s.metadata.uid = uid;
        let problem = secret_record(&s).unwrap_err();
        assert_eq!(problem.name, "db");
        assert!(problem.to_string().contains("has no UID"), "{problem}");
    }
}

#[test]
fn string_data_counts_like_data() {
    let mut from_data = secret("db", "1", "v");
    from_data.data = Some(BTreeMap::from([("k".into(), ByteString(b"v".to_vec()))]));
    let mut from_string = secret("db", "1", "v");
    from_string.data = None;
    from_string.string_data = Some(BTreeMap::from([("k".into(), "v".into())]));
    assert_eq!(
        secret_record(&from_data).unwrap().1.data,
        secret_record(&from_string).unwrap().1.data
    );
}

#[test]
fn upsert_reports_only_real_changes() {
    let mut store = SourceStore::default();
    let (key, record) = config_map_record(&config_map("app", "1", &[("a", "1")]));
    assert!(store.upsert(key.clone(), record.clone()));
    assert!(!store.upsert(key.clone(), record));
    let (_, changed) = config_map_record(&config_map("app", "2", &[("a", "2")]));
    assert!(store.upsert(key, changed));
}

#[test]
fn sources_are_known_absent_or_unknown() {
    let mut store = SourceStore::default();
    let (cm, record) = config_map_record(&config_map("app", "7", &[("a", "1")]));
    store.upsert(cm.clone(), record);
    assert!(matches!(
        store.view(&cm),
        SourceView::Known {
            revision: Some(7),
            ..
        }
    ));
    assert_eq!(
        store.view(&key(SourceKind::ConfigMap, "nope")),
        SourceView::Absent
    );
    // A Secret seen by its metadata only is present, but what it holds is not known.
    let (db, record) = secret_metadata_record(&secret_metadata("db", "3"));
    store.upsert(db.clone(), record);
    assert!(matches!(store.view(&db), SourceView::Unknown(_)));
    assert_eq!(store.meta(&db), None);
    // A scope that could not be listed has no absent sources, only unknown ones.
    store.mark_unlisted(SourceKind::Secret, Some("shop"), "forbidden".into());
    assert_eq!(
        store.view(&key(SourceKind::Secret, "other")),
        SourceView::Unknown("forbidden")
    );
    store.retain_listed(
        SourceKind::Secret,
        Some("shop"),
        &HashSet::from([db.clone()]),
    );
    assert_eq!(
        store.view(&key(SourceKind::Secret, "other")),
        SourceView::Absent
    );
}

#[test]
fn a_failed_read_is_unknown_until_a_read_succeeds() {
    let mut store = SourceStore::default();
    let (db, record) = secret_metadata_record(&secret_metadata("db", "3"));
    store.upsert(db.clone(), record);
    store.record_unreadable(&db, Some("3"), "throttled".into());
    assert_eq!(store.view(&db), SourceView::Unknown("throttled"));
    // The same version reported again by a re-list keeps the failure: it is read again anyway.
    let (_, again) = secret_metadata_record(&secret_metadata("db", "3"));
    assert!(!store.upsert(db.clone(), again));
    let (_, read) = secret_record(&secret("db", "3", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert!(matches!(store.view(&db), SourceView::Known { .. }));
}

#[test]
fn a_failure_of_an_older_read_does_not_touch_a_newer_version() {
    let mut store = SourceStore::default();
    let (db, record) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), record);
    store.record_unreadable(&db, Some("4"), "throttled".into());
    assert_eq!(store.view(&db), SourceView::Unknown(NOT_READ_YET));
}

#[test]
fn a_slow_read_never_overwrites_a_newer_version() {
    let mut store = SourceStore::default();
    let (db, listed) = secret_metadata_record(&secret_metadata("db", "10"));
    store.upsert(db.clone(), listed);
    let (_, old) = secret_record(&secret("db", "10", "old")).unwrap();
    assert!(store.record_read(db.clone(), old));
    // The watch reports version 12 while a read of version 11 is on its way.
    let (_, newer) = secret_metadata_record(&secret_metadata("db", "12"));
    assert!(store.upsert(db.clone(), newer));
    let (_, stale) = secret_record(&secret("db", "11", "stale")).unwrap();
    assert!(!store.record_read(db.clone(), stale));
    assert!(matches!(store.view(&db), SourceView::Unknown(_)));
    let (_, current) = secret_record(&secret("db", "12", "new")).unwrap();
    assert!(store.record_read(db.clone(), current.clone()));
    assert_eq!(store.get(&db), Some(&current));
    // Metadata of the version already read keeps its digests.
    let (_, same) = secret_metadata_record(&secret_metadata("db", "12"));
    assert!(!store.upsert(db.clone(), same));
    assert!(matches!(
        store.view(&db),
        SourceView::Known {
            revision: Some(12),
            ..
        }
    ));
}

#[test]
fn a_read_never_brings_back_a_deleted_source() {
    // The watch reported the delete while the read of the last version was on its way.
    let mut store = SourceStore::default();
    let (db, listed) = secret_metadata_record(&secret_metadata("db", "3"));
    store.upsert(db.clone(), listed);
    store.remove(&db);
    let (_, read) = secret_record(&secret("db", "3", "pw")).unwrap();
    assert!(!store.record_read(db.clone(), read));
    assert_eq!(store.view(&db), SourceView::Absent);
}

#[test]
fn revisions_that_are_not_numbers_cannot_be_ordered() {
    assert_eq!(revision(Some("42")), Some(42));
    assert_eq!(revision(Some("abc")), None);
    assert_eq!(revision(None), None);
    let mut store = SourceStore::default();
    let (db, listed) = secret_metadata_record(&secret_metadata("db", "x"));
    store.upsert(db.clone(), listed);
    let (_, read) = secret_record(&secret("db", "x", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    let (_, other) = secret_record(&secret("db", "y", "pw")).unwrap();
    assert!(!store.record_read(db, other));
}

#[test]
fn a_watch_reports_which_sources_changed() {
    let mut store = SourceStore::default();
    let mut sync = SourceSync::new(SourceKind::ConfigMap, Some("shop".into()));
    let listed = |name: &str, value: &str| {
        let (key, record) = config_map_record(&config_map(name, "1", &[("a", value)]));
        SourceEvent::Listed(key, record)
    };
    assert!(sync.apply(&mut store, SourceEvent::ListStarted).is_empty());
    assert_eq!(
        sync.apply(&mut store, listed("app", "1")),
        vec![key(SourceKind::ConfigMap, "app")]
    );
    sync.apply(&mut store, listed("gone", "1"));
    assert!(sync.apply(&mut store, SourceEvent::ListDone).is_empty());
    // An unchanged object says nothing; a changed one names itself.
    let (app, same) = config_map_record(&config_map("app", "1", &[("a", "1")]));
    assert!(sync
        .apply(&mut store, SourceEvent::Applied(app.clone(), same))
        .is_empty());
    let (_, changed) = config_map_record(&config_map("app", "2", &[("a", "2")]));
    assert_eq!(
        sync.apply(&mut store, SourceEvent::Applied(app.clone(), changed)),
        vec![app.clone()]
    );
    // A re-list that no longer returns an object: it was deleted while the watch was down.
    sync.apply(&mut store, SourceEvent::ListStarted);
    sync.apply(&mut store, listed("app", "2"));
    assert_eq!(
        sync.apply(&mut store, SourceEvent::ListDone),
        vec![key(SourceKind::ConfigMap, "gone")]
    );
    assert_eq!(
        sync.apply(&mut store, SourceEvent::Deleted(app.clone())),
        vec![app.clone()]
    );
    assert!(sync.apply(&mut store, SourceEvent::Deleted(app)).is_empty());
    assert!(store.is_empty());
}

#[test]
fn a_relist_forgets_objects_deleted_meanwhile_in_its_own_scope_only() {
    let mut store = SourceStore::default();
    for name in ["kept", "deleted"] {
        let (key, record) = config_map_record(&config_map(name, "1", &[]));
        store.upsert(key, record);
    }
    let mut elsewhere = config_map("other-ns", "1", &[]);
    elsewhere.metadata.namespace = Some("other".into());
    let (key, record) = config_map_record(&elsewhere);
    store.upsert(key, record);
    let listed = HashSet::from([SourceKey::new(SourceKind::ConfigMap, "shop", "kept")]);
    let gone = store.retain_listed(SourceKind::ConfigMap, Some("shop"), &listed);
    assert_eq!(
        gone,
        vec![SourceKey::new(SourceKind::ConfigMap, "shop", "deleted")]
    );
    assert_eq!(store.len(), 2);
}

fn web() -> WorkloadKey {
    WorkloadKey {
        kind: WorkloadKind::Deployment,
        namespace: "shop".into(),
        name: "web".into(),
    }
}

#[test]
fn the_index_follows_the_latest_analysis_of_managed_workloads_only() {
    let template =
        "spec: {containers: [{name: a, envFrom: [{configMapRef: {name: one}}, {secretRef: {name: two}}]}]}";
    let managed = analyse_deployment(&[("envroll.dev/auto", "true")], template, |_, _| None);
    let mut index = ReverseIndex::default();
    index.set(&web(), &managed);
    let one = SourceKey::new(SourceKind::ConfigMap, "shop", "one");
    assert_eq!(index.consumers(&one), vec![web()]);
    assert!(index.is_consumed(&one));
    assert_eq!((index.workloads(), index.tracked_sources()), (1, 2));
    // The opt-in annotation removed: nothing of it stays indexed.
    let unmanaged = analyse_deployment(&[], template, |_, _| None);
    index.set(&web(), &unmanaged);
    assert!(index.consumers(&one).is_empty());
    assert_eq!((index.workloads(), index.tracked_sources()), (0, 0));
    index.set(&web(), &managed);
    index.remove(&web());
    assert_eq!((index.workloads(), index.tracked_sources()), (0, 0));
}

#[test]
fn a_template_edit_is_dated_only_when_the_watch_saw_it_happen() {
    let mut edits = TemplateEdits::default();
    // First sight, from a list or a watch: the edit that made it is not known.
    edits.observe(&web(), "v2:a", Some(10), true);
    assert_eq!(edits.edited_at(&web(), "v2:a"), None);
    // Other events of the same template change nothing.
    edits.observe(&web(), "v2:a", Some(11), true);
    assert_eq!(edits.edited_at(&web(), "v2:a"), None);
    // A watched edit is dated by its revision.
    edits.observe(&web(), "v2:b", Some(20), true);
    assert_eq!(edits.edited_at(&web(), "v2:b"), Some(20));
    assert_eq!(edits.edited_at(&web(), "v2:a"), None);
    edits.observe(&web(), "v2:b", Some(25), false);
    assert_eq!(edits.edited_at(&web(), "v2:b"), Some(20));
    // An edit found by a re-list happened at some unknown revision before it.
    edits.observe(&web(), "v2:c", Some(30), false);
    assert_eq!(edits.edited_at(&web(), "v2:c"), None);
    edits.observe(&web(), "v2:d", Some(40), true);
    edits.forget(&web());
    assert_eq!(edits.edited_at(&web(), "v2:d"), None);
}
