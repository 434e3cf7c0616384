//! The canonical config hash (see `docs/hash.md` for the encoding and golden vectors).
//!
//! Values are reduced to per-key digests as soon as an object is seen, so nothing downstream ever
//! holds ConfigMap or Secret data. A Secret's digests are salted with its UID: whoever can read the
//! workload but not the Secret cannot test guesses of a low-entropy value against the annotation.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::analysis::{SourceKind, WorkloadAnalysis};

const HASH_DOMAIN: &[u8] = b"envroll.dev/config-hash/v1";
const VALUE_DOMAIN: &[u8] = b"envroll.dev/value/v1";

pub type KeyDigest = [u8; 32];

/// Where a key lives in its object. ConfigMaps have both; a Secret only has `data` once the API
/// server has merged `stringData` into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Data,
    BinaryData,
}

impl Section {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Section::Data => b"data",
            Section::BinaryData => b"binaryData",
        }
    }
}

/// Everything envroll keeps about one ConfigMap or Secret: 32 bytes a key, whatever the size of
/// the values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceDigests {
    pub keys: KeyDigests,
}

/// Each key with its section and the digest of its value, sorted by key. Most objects hold one
/// or a few keys: a sorted vector costs a tenth of a map's node, which is sized for eleven.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDigests(Vec<(Box<str>, Section, KeyDigest)>);

impl KeyDigests {
    pub const fn new() -> Self {
        KeyDigests(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<(Section, &KeyDigest)> {
        let at = self
            .0
            .binary_search_by(|(name, ..)| (**name).cmp(key))
            .ok()?;
        let (_, section, digest) = &self.0[at];
        Some((*section, digest))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Section, &KeyDigest)> {
        self.0
            .iter()
            .map(|(name, section, digest)| (&**name, *section, digest))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, ..)| &**name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// As a map would collect them: the last value given for a key wins.
impl<'a> FromIterator<(&'a str, Section, KeyDigest)> for KeyDigests {
    fn from_iter<I: IntoIterator<Item = (&'a str, Section, KeyDigest)>>(entries: I) -> Self {
        let mut entries: Vec<_> = entries
            .into_iter()
            .map(|(name, section, digest)| (Box::<str>::from(name), section, digest))
            .collect();
        // Stable, so equal keys keep their order and the last of each run is the one given last.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        entries.shrink_to_fit();
        KeyDigests(entries)
    }
}

impl SourceDigests {
    /// Digests every value. `salt` is empty for ConfigMaps and the object's UID for Secrets.
    pub fn from_values<'a>(
        salt: &[u8],
        values: impl IntoIterator<Item = (&'a str, Section, &'a [u8])>,
    ) -> Self {
        let keys = values
            .into_iter()
            .map(|(key, section, value)| (key, section, value_digest(salt, value)))
            .collect();
        SourceDigests { keys }
    }
}

/// The salt for a source's values: only Secrets need one, and their UID is something a reader of
/// the workload does not see.
pub fn salt_for(kind: SourceKind, uid: &str) -> &[u8] {
    match kind {
        SourceKind::ConfigMap => b"",
        SourceKind::Secret => uid.as_bytes(),
    }
}

pub fn value_digest(salt: &[u8], value: &[u8]) -> KeyDigest {
    let mut hasher = Sha256::new();
    field(&mut hasher, VALUE_DOMAIN);
    field(&mut hasher, salt);
    field(&mut hasher, value);
    hasher.finalize().into()
}

/// Every field is length-prefixed, so no two different inputs share an encoding.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// What is known of a rollout source when the hash is computed.
#[derive(Clone, Copy, Debug)]
pub enum SourceState<'a> {
    Present(&'a SourceDigests),
    /// Missing and referenced as optional (or not referenced at all): a state of its own, so
    /// creating or deleting the object changes the hash.
    Missing,
}

#[derive(Clone, Copy, Debug)]
pub struct HashInput<'a> {
    pub kind: SourceKind,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `None` counts every key.
    pub keys: Option<&'a BTreeSet<String>>,
    pub state: SourceState<'a>,
}

/// SHA-256 over the canonical encoding of the inputs, as lowercase hex. Order of the inputs does
/// not matter.
pub fn config_hash(inputs: &[HashInput<'_>]) -> String {
    let mut sorted: Vec<&HashInput<'_>> = inputs.iter().collect();
    sorted.sort_by(|a, b| (a.kind, a.namespace, a.name).cmp(&(b.kind, b.namespace, b.name)));
    let mut hasher = Sha256::new();
    field(&mut hasher, HASH_DOMAIN);
    for input in sorted {
        field(&mut hasher, b"source");
        field(&mut hasher, input.kind.as_str().as_bytes());
        field(&mut hasher, input.namespace.as_bytes());
        field(&mut hasher, input.name.as_bytes());
        match input.state {
            SourceState::Missing => field(&mut hasher, b"missing"),
            SourceState::Present(digests) => {
                field(&mut hasher, b"present");
                encode_counted_keys(&mut hasher, digests, input.keys);
            }
        }
    }
    hex::encode(hasher.finalize())
}

fn encode_counted_keys(
    hasher: &mut Sha256,
    digests: &SourceDigests,
    keys: Option<&BTreeSet<String>>,
) {
    let Some(counted) = keys else {
        for (key, section, digest) in digests.keys.iter() {
            encode_key(hasher, key, section, digest);
        }
        return;
    };
    // A referenced key that does not exist yet is recorded as absent, so adding it rolls out.
    for key in counted {
        match digests.keys.get(key) {
            Some((section, digest)) => encode_key(hasher, key, section, digest),
            None => {
                field(hasher, b"absent-key");
                field(hasher, key.as_bytes());
            }
        }
    }
}

fn encode_key(hasher: &mut Sha256, key: &str, section: Section, digest: &KeyDigest) {
    field(hasher, b"key");
    field(hasher, key.as_bytes());
    field(hasher, section.as_bytes());
    field(hasher, digest);
}

/// Why no hash can be computed for a workload right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingRequired {
    pub sources: Vec<(SourceKind, String)>,
}

/// A workload's config hash, and one short hash per rollout source so a later change can be
/// traced to the source that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadHash {
    pub total: String,
    /// `Kind/name` → the first 16 hex characters of that source's own config hash.
    pub sources: BTreeMap<String, String>,
}

/// Length of a per-source hash: 64 bits is plenty to notice a change, and keeps the baseline
/// annotation short for workloads with many sources.
const SOURCE_HASH_LEN: usize = 16;

pub fn source_label(kind: SourceKind, name: &str) -> String {
    format!("{kind}/{name}")
}

/// The kind and name a [`source_label`] was made of.
pub fn parse_source_label(label: &str) -> Option<(SourceKind, &str)> {
    match label.split_once('/')? {
        ("ConfigMap", name) => Some((SourceKind::ConfigMap, name)),
        ("Secret", name) => Some((SourceKind::Secret, name)),
        _ => None,
    }
}

/// The config hash of a workload: its rollout sources and their counted keys. A required source
/// that is missing blocks the hash, because new pods would fail with CreateContainerConfigError.
pub fn workload_hash<'a>(
    analysis: &WorkloadAnalysis,
    digests: impl Fn(SourceKind, &str) -> Option<&'a SourceDigests>,
) -> Result<WorkloadHash, MissingRequired> {
    let mut inputs = Vec::new();
    let mut missing = Vec::new();
    for source in analysis.rollout_sources() {
        let state = match digests(source.kind, &source.name) {
            Some(found) => SourceState::Present(found),
            None if source.optional => SourceState::Missing,
            None => {
                missing.push((source.kind, source.name.clone()));
                continue;
            }
        };
        inputs.push(HashInput {
            kind: source.kind,
            namespace: &analysis.namespace,
            name: &source.name,
            keys: source.keys.as_ref(),
            state,
        });
    }
    if !missing.is_empty() {
        return Err(MissingRequired { sources: missing });
    }
    let sources = inputs
        .iter()
        .map(|input| {
            let mut own = config_hash(std::slice::from_ref(input));
            own.truncate(SOURCE_HASH_LEN);
            (source_label(input.kind, input.name), own)
        })
        .collect();
    Ok(WorkloadHash {
        total: config_hash(&inputs),
        sources,
    })
}

#[cfg(test)]
mod tests;
