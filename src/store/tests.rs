use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::PartialObjectMeta;
use proptest::prelude::*;

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
    let (section, digest) = record.digests().unwrap().keys.get("LEVEL").unwrap();
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

/// The revision a decision orders the source's change by; `None` when it is not known.
fn since(store: &SourceStore, key: &SourceKey) -> Option<Option<u64>> {
    match store.view(key) {
        SourceView::Known { revision, .. } => Some(revision),
        _ => None,
    }
}

fn labelled(mut config_map: ConfigMap) -> ConfigMap {
    config_map.metadata.labels = Some(BTreeMap::from([("team".into(), "shop".into())]));
    config_map
}

#[test]
fn a_config_maps_data_is_dated_by_the_write_that_changed_it() {
    let mut store = SourceStore::default();
    let (app, v5) = config_map_record(&config_map("app", "5", &[("LEVEL", "debug")]));
    store.upsert(app.clone(), v5);
    assert_eq!(since(&store, &app), Some(Some(5)));
    // A label added at 9: the data is the one written at 5.
    let (_, v9) = config_map_record(&labelled(config_map("app", "9", &[("LEVEL", "debug")])));
    store.upsert(app.clone(), v9.clone());
    assert_eq!(since(&store, &app), Some(Some(5)));
    // The same version again (a re-list, a repeated event) changes nothing.
    assert!(!store.upsert(app.clone(), v9.clone()));
    assert!(!store.upsert_listed(app.clone(), v9));
    assert_eq!(since(&store, &app), Some(Some(5)));
    let (_, v12) = config_map_record(&config_map("app", "12", &[("LEVEL", "info")]));
    assert!(store.upsert(app.clone(), v12));
    assert_eq!(since(&store, &app), Some(Some(12)));
    // Back to the data of 5: written again at 14.
    let (_, v14) = config_map_record(&config_map("app", "14", &[("LEVEL", "debug")]));
    assert!(store.upsert(app.clone(), v14));
    assert_eq!(since(&store, &app), Some(Some(14)));
}

#[test]
fn a_relisted_version_is_dated_by_itself_the_writes_before_it_went_unseen() {
    // Between 5 and 9 the data may have changed and changed back, unseen by the store.
    let mut store = SourceStore::default();
    let (app, v5) = config_map_record(&config_map("app", "5", &[("a", "1")]));
    store.upsert(app.clone(), v5);
    let (_, v9) = config_map_record(&config_map("app", "9", &[("a", "1")]));
    store.upsert_listed(app.clone(), v9);
    assert_eq!(since(&store, &app), Some(Some(9)));
    // Through `SourceSync`, as the watch applies a re-list.
    let mut sync = SourceSync::new(SourceKind::ConfigMap, Some("shop".into()));
    let (_, v20) = config_map_record(&config_map("app", "20", &[("a", "1")]));
    sync.apply(&mut store, SourceEvent::ListStarted);
    sync.apply(&mut store, SourceEvent::Listed(app.clone(), v20));
    sync.apply(&mut store, SourceEvent::ListDone);
    assert_eq!(since(&store, &app), Some(Some(20)));
    let (_, v21) = config_map_record(&labelled(config_map("app", "21", &[("a", "1")])));
    sync.apply(&mut store, SourceEvent::Applied(app.clone(), v21));
    assert_eq!(since(&store, &app), Some(Some(20)));
}

#[test]
fn a_secrets_data_read_again_unchanged_keeps_its_date() {
    let mut store = SourceStore::default();
    let (db, v5) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), v5);
    let (_, read) = secret_record(&secret("db", "5", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(5)));
    // A label change at 9: unknown until read, then the data is found as it was at 5.
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    assert!(store.upsert(db.clone(), v9));
    assert_eq!(store.view(&db), SourceView::Unknown(NOT_READ_YET));
    let (_, read) = secret_record(&secret("db", "9", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(5)));
    // Its own metadata reported again keeps both the digests and their date.
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    assert!(!store.upsert(db.clone(), v9));
    assert_eq!(since(&store, &db), Some(Some(5)));
    let (_, v11) = secret_metadata_record(&secret_metadata("db", "11"));
    store.upsert(db.clone(), v11);
    let (_, read) = secret_record(&secret("db", "11", "new")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(11)));
}

#[test]
fn a_failed_read_keeps_the_data_read_before_to_compare_with() {
    let mut store = SourceStore::default();
    let (db, v5) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), v5);
    let (_, read) = secret_record(&secret("db", "5", "pw")).unwrap();
    store.record_read(db.clone(), read);
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    store.upsert(db.clone(), v9);
    store.record_unreadable(&db, Some("9"), "throttled".into());
    assert_eq!(store.view(&db), SourceView::Unknown("throttled"));
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    assert!(!store.upsert_listed(db.clone(), v9));
    store.record_unreadable(&db, Some("9"), "throttled again".into());
    let (_, read) = secret_record(&secret("db", "9", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(5)));
    // A failure of the version already read, then a read of it again: still its date.
    store.record_unreadable(&db, Some("9"), "throttled".into());
    let (_, read) = secret_record(&secret("db", "9", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(5)));
}

#[test]
fn a_secret_version_that_passed_unread_dates_the_data_after_it() {
    // Version 9 was never read: it may have held another password, which a template edit
    // between 9 and 10 would have given its pods.
    let mut store = SourceStore::default();
    let (db, v5) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), v5);
    let (_, read) = secret_record(&secret("db", "5", "pw")).unwrap();
    store.record_read(db.clone(), read);
    for version in ["9", "10"] {
        let (_, metadata) = secret_metadata_record(&secret_metadata("db", version));
        store.upsert(db.clone(), metadata);
    }
    let (_, read) = secret_record(&secret("db", "10", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(10)));
    // Nor does a failed read of a version carry the data before it to the next version.
    let (_, v12) = secret_metadata_record(&secret_metadata("db", "12"));
    store.upsert(db.clone(), v12);
    store.record_unreadable(&db, Some("12"), "throttled".into());
    let (_, v13) = secret_metadata_record(&secret_metadata("db", "13"));
    store.upsert(db.clone(), v13);
    let (_, read) = secret_record(&secret("db", "13", "pw")).unwrap();
    store.record_read(db.clone(), read);
    assert_eq!(since(&store, &db), Some(Some(13)));
}

#[test]
fn a_read_ahead_of_the_watch_is_dated_by_its_own_version() {
    // The watch reported 9; the read returns 10, whose writes before it the store did not see.
    let mut store = SourceStore::default();
    let (db, v5) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), v5);
    let (_, read) = secret_record(&secret("db", "5", "pw")).unwrap();
    store.record_read(db.clone(), read);
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    store.upsert(db.clone(), v9);
    let (_, read) = secret_record(&secret("db", "10", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(10)));
    let (_, v10) = secret_metadata_record(&secret_metadata("db", "10"));
    assert!(!store.upsert(db.clone(), v10));
    assert_eq!(since(&store, &db), Some(Some(10)));
}

#[test]
fn a_deleted_source_re_created_with_the_same_data_is_dated_anew() {
    let mut store = SourceStore::default();
    let (app, v5) = config_map_record(&config_map("app", "5", &[("a", "1")]));
    store.upsert(app.clone(), v5);
    assert!(store.remove(&app));
    let (_, v9) = config_map_record(&config_map("app", "9", &[("a", "1")]));
    store.upsert(app.clone(), v9);
    assert_eq!(since(&store, &app), Some(Some(9)));
    // Deleted while the watch was down: the re-list no longer returns it.
    let mut sync = SourceSync::new(SourceKind::ConfigMap, Some("shop".into()));
    sync.apply(&mut store, SourceEvent::ListStarted);
    sync.apply(&mut store, SourceEvent::ListDone);
    let (_, v12) = config_map_record(&config_map("app", "12", &[("a", "1")]));
    sync.apply(&mut store, SourceEvent::Applied(app.clone(), v12));
    assert_eq!(since(&store, &app), Some(Some(12)));
    // A Secret's read data goes with it too (its UID is left the same here, as are its digests).
    let (db, v5) = secret_metadata_record(&secret_metadata("db", "5"));
    store.upsert(db.clone(), v5);
    let (_, read) = secret_record(&secret("db", "5", "pw")).unwrap();
    store.record_read(db.clone(), read);
    assert!(store.remove(&db));
    let (_, v9) = secret_metadata_record(&secret_metadata("db", "9"));
    store.upsert(db.clone(), v9);
    let (_, read) = secret_record(&secret("db", "9", "pw")).unwrap();
    assert!(store.record_read(db.clone(), read));
    assert_eq!(since(&store, &db), Some(Some(9)));
}

#[test]
fn a_source_that_could_not_be_read_dates_nothing() {
    let mut store = SourceStore::default();
    let app = key(SourceKind::ConfigMap, "app");
    store.record_failed_read(app.clone(), "forbidden".into());
    let (_, v9) = config_map_record(&config_map("app", "9", &[("a", "1")]));
    store.upsert(app.clone(), v9);
    assert_eq!(since(&store, &app), Some(Some(9)));
}

#[test]
fn data_of_versions_that_are_not_numbers_is_not_dated() {
    let mut store = SourceStore::default();
    let (app, first) = config_map_record(&config_map("app", "x", &[("a", "1")]));
    store.upsert(app.clone(), first);
    assert_eq!(since(&store, &app), Some(None));
    let (_, relabelled) = config_map_record(&labelled(config_map("app", "y", &[("a", "1")])));
    store.upsert(app.clone(), relabelled);
    assert_eq!(since(&store, &app), Some(None));
    // Nor is data first seen at a version that is not a number dated back to it.
    let (_, numbered) = config_map_record(&config_map("app", "12", &[("a", "1")]));
    store.upsert(app.clone(), numbered);
    assert_eq!(since(&store, &app), Some(Some(12)));
}

/// How one write reached the store.
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// By the running watch, right after the write before it.
    Watched,
    /// By a re-list: writes before it may have gone unseen.
    Listed,
    /// The object was deleted (the watch saw it) and this write created it again.
    Recreated,
}

/// What became of the reads of a Secret version.
#[derive(Clone, Copy, Debug)]
enum Reads {
    None,
    Read,
    Failed,
    FailedThenRead,
}

#[derive(Clone, Debug)]
struct Write {
    /// One of a few values, so that equal data comes up often.
    data: u8,
    gap: u64,
    seen: Seen,
    reads: Reads,
}

fn writes() -> impl Strategy<Value = Vec<Write>> {
    let seen = prop_oneof![
        6 => Just(Seen::Watched),
        1 => Just(Seen::Listed),
        1 => Just(Seen::Recreated),
    ];
    let reads = prop_oneof![
        1 => Just(Reads::None),
        3 => Just(Reads::Read),
        1 => Just(Reads::Failed),
        1 => Just(Reads::FailedThenRead),
    ];
    let write = (0u8..3, 1u64..4, seen, reads).prop_map(|(data, gap, seen, reads)| Write {
        data,
        gap,
        seen,
        reads,
    });
    prop::collection::vec(write, 1..12)
}

fn revisions(writes: &[Write]) -> Vec<u64> {
    writes
        .iter()
        .scan(0, |revision, write| {
            *revision += write.gap;
            Some(*revision)
        })
        .collect()
}

/// The revision of the first write of the trailing run of writes of equal data that `joins`
/// lets through: `joins(before, write)` says whether the store can see that `write` kept the data
/// of `before`.
fn first_of_run(writes: &[Write], joins: impl Fn(&Write, &Write) -> bool) -> u64 {
    let revisions = revisions(writes);
    let mut first = writes.len() - 1;
    while first > 0
        && writes[first - 1].data == writes[first].data
        && joins(&writes[first - 1], &writes[first])
    {
        first -= 1;
    }
    revisions[first]
}

/// The write that actually gave the object its data: never may a date be earlier.
fn truly_since(writes: &[Write]) -> u64 {
    first_of_run(writes, |_, write| !matches!(write.seen, Seen::Recreated))
}

proptest! {
    /// A ConfigMap's data is dated by the first of the trailing writes that kept it, as far as
    /// the watch saw them one after the other; never before the write that made it.
    #[test]
    fn a_config_maps_date_is_the_first_write_of_its_data_the_watch_saw(writes in writes()) {
        let mut store = SourceStore::default();
        let app = key(SourceKind::ConfigMap, "app");
        for (write, revision) in writes.iter().zip(revisions(&writes)) {
            let value = write.data.to_string();
            let object = labelled(config_map("app", &revision.to_string(), &[("a", &value)]));
            let (_, record) = config_map_record(&object);
            match write.seen {
                Seen::Watched => store.upsert(app.clone(), record),
                Seen::Listed => store.upsert_listed(app.clone(), record),
                Seen::Recreated => {
                    store.remove(&app);
                    store.upsert(app.clone(), record)
                }
            };
        }
        let expected = first_of_run(&writes, |_, write| matches!(write.seen, Seen::Watched));
        prop_assert_eq!(since(&store, &app), Some(Some(expected)));
        prop_assert!(expected >= truly_since(&writes));
    }

    /// A Secret's data is dated back across a write only when the version before it was read
    /// and the watch saw the write; never before the write that made it.
    #[test]
    fn a_secrets_date_is_the_first_read_write_of_its_data(writes in writes()) {
        let mut store = SourceStore::default();
        let db = key(SourceKind::Secret, "db");
        let password = |write: &Write| format!("pw{}", write.data);
        for (write, revision) in writes.iter().zip(revisions(&writes)) {
            let version = revision.to_string();
            let (_, metadata) = secret_metadata_record(&secret_metadata("db", &version));
            match write.seen {
                Seen::Watched => store.upsert(db.clone(), metadata),
                Seen::Listed => store.upsert_listed(db.clone(), metadata),
                Seen::Recreated => {
                    store.remove(&db);
                    store.upsert(db.clone(), metadata)
                }
            };
            if matches!(write.reads, Reads::Failed | Reads::FailedThenRead) {
                store.record_unreadable(&db, Some(&version), "throttled".into());
            }
            if matches!(write.reads, Reads::Read | Reads::FailedThenRead) {
                let (_, read) = secret_record(&secret("db", &version, &password(write))).unwrap();
                prop_assert!(store.record_read(db.clone(), read));
            }
        }
        let last = writes.last().unwrap();
        let version = revisions(&writes).last().unwrap().to_string();
        if matches!(last.reads, Reads::None | Reads::Failed) {
            prop_assert!(matches!(store.view(&db), SourceView::Unknown(_)));
            let (_, read) = secret_record(&secret("db", &version, &password(last))).unwrap();
            prop_assert!(store.record_read(db.clone(), read));
        }
        let read = |write: &Write| matches!(write.reads, Reads::Read | Reads::FailedThenRead);
        let expected = first_of_run(&writes, |before, write| {
            read(before) && matches!(write.seen, Seen::Watched)
        });
        prop_assert_eq!(since(&store, &db), Some(Some(expected)));
        prop_assert!(expected >= truly_since(&writes));
    }
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
