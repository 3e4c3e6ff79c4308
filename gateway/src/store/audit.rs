//! The audit log's records and its hash chain.
//!
//! Entries are append-only and keyed by their sequence number (8 bytes, big
//! endian, so key order is sequence order). Each entry carries the hash of
//! the previous one, and its own hash is
//!
//! ```text
//! hex(sha256(prev_hash as 64 ASCII hex digits ‖ seq as 8 bytes big endian ‖ canonical JSON of the record))
//! ```
//!
//! where the canonical JSON is the record serialised with every object's
//! keys sorted and no whitespace. The first entry's `prev_hash` is 64 zeros.
//! Changing, deleting or reordering an entry breaks the chain at that entry;
//! [`ChainVerifier`] finds the first break. Rewriting the whole tail with
//! fresh hashes is only detectable against a head recorded elsewhere, which
//! is what [`AuditSummary::head`] is for.
//!
//! This module knows nothing of the engine: the engine hands it keys and
//! stored bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as the audit log keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind of event (for example `flow.started`).
    pub kind: String,
    /// The flow it belongs to, if any.
    pub flow: Option<String>,
    /// The user key it concerns, if any.
    pub user: Option<String>,
    /// The workflow it ran under, if any.
    pub workflow: Option<String>,
    /// Event-specific details. Never a secret.
    pub detail: serde_json::Value,
}

/// One entry of the audit log: a record and its place in the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first entry).
    pub prev_hash: String,
    /// This entry's hash (see the module documentation).
    pub hash: String,
    /// What happened.
    pub record: AuditRecord,
}

/// The state of a verified chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditSummary {
    /// How many entries the chain holds.
    pub entries: u64,
    /// The last entry's hash ([`GENESIS_HASH`] when the log is empty).
    pub head: String,
}

/// Why an entry breaks the chain. Never quotes the entry's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// There is no entry with this sequence number, but there should be.
    #[error("the entry is missing")]
    Missing,
    /// A key in the audit tree is not an 8-byte sequence number.
    #[error("a key in the audit log is not a sequence number")]
    BadKey,
    /// The stored bytes are not an audit entry.
    #[error("the entry cannot be decoded")]
    Undecodable,
    /// The entry stored under this sequence number names another one
    /// (entries were moved or reordered).
    #[error("the entry stored here says it is entry {found}")]
    SeqMismatch {
        /// The sequence number inside the entry.
        found: u64,
    },
    /// The entry does not carry the previous entry's hash.
    #[error("the entry does not link to the previous entry's hash")]
    PrevHashMismatch,
    /// The entry's hash does not match its contents (it was modified).
    #[error("the entry's hash does not match its contents")]
    HashMismatch,
    /// The last entry's hash is not the head the running store recorded.
    #[error("the last entry is not the head the store recorded")]
    HeadMismatch,
}

/// Why the audit log cannot be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The chain is broken; `seq` is the first entry that does not verify.
    #[error("the audit chain is broken at entry {seq}: {why}")]
    Broken {
        /// The first bad sequence number.
        seq: u64,
        /// What is wrong with it.
        why: ChainBreak,
    },
    /// The store failed while reading the log.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key of entry `seq`.
pub(super) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number a key stands for, if it is one.
pub(super) fn key_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A JSON value with every object's keys in sorted order, whether or not
/// serde_json was built with `preserve_order`.
fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

/// The record as canonical JSON: sorted keys, no whitespace.
pub(super) fn canonical_json(record: &AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    let value = canonical(serde_json::to_value(record)?);
    serde_json::to_vec(&value)
}

/// The hash of the entry `seq` holding `record` after `prev_hash`.
pub(super) fn entry_hash(
    prev_hash: &str,
    seq: u64,
    record: &AuditRecord,
) -> Result<String, serde_json::Error> {
    Ok(json_hash(prev_hash, seq, &canonical_json(record)?))
}

/// The hash of the entry `seq` whose record's canonical JSON is `json`,
/// after `prev_hash`. Infallible, so that it can run under the chain-head
/// lock with the JSON prepared before the lock is taken.
fn json_hash(prev_hash: &str, seq: u64, json: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(json);
    hex::encode(hasher.finalize())
}

/// The bytes stored for an entry.
#[cfg(test)]
pub(super) fn encode(entry: &AuditEntry) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(entry)
}

/// A record made ready for the chain outside the chain-head lock: its
/// canonical JSON (the hash input, and what is stored as the entry's
/// record, so the record is serialised once).
pub(super) struct Prepared {
    json: Vec<u8>,
}

impl Prepared {
    /// Serialises `record` canonically.
    pub(super) fn new(record: &AuditRecord) -> Result<Prepared, serde_json::Error> {
        Ok(Prepared {
            json: canonical_json(record)?,
        })
    }
}

/// The bytes stored for entry `seq` with `prev_hash` and `hash` holding the
/// prepared record. Decodes to the same [`AuditEntry`] as [`encode`] of the
/// equivalent entry (the record's keys are merely sorted); infallible.
fn encode_prepared(seq: u64, prev_hash: &str, hash: &str, prepared: &Prepared) -> Vec<u8> {
    // The hashes are normally hex, but a head read back from disk could hold
    // anything: quote them as JSON strings rather than trusting them.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = Vec::with_capacity(prepared.json.len() + 200);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    out.extend_from_slice(quote(prev_hash).as_bytes());
    out.extend_from_slice(b",\"hash\":");
    out.extend_from_slice(quote(hash).as_bytes());
    out.extend_from_slice(b",\"record\":");
    out.extend_from_slice(&prepared.json);
    out.push(b'}');
    out
}

/// The entry stored as `bytes`, if they are one.
pub(super) fn decode(bytes: &[u8]) -> Option<AuditEntry> {
    serde_json::from_slice(bytes).ok()
}

/// The end of the chain: where the next entry goes and what it links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// The next entry's sequence number (the number of entries).
    pub(super) next_seq: u64,
    /// The last entry's hash.
    pub(super) hash: String,
}

impl Head {
    /// The head of an empty log.
    pub(super) fn empty() -> Head {
        Head {
            next_seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// The head after the last stored entry, `last`.
    pub(super) fn after(last: &AuditEntry) -> Head {
        Head {
            next_seq: last.seq.saturating_add(1),
            hash: last.hash.clone(),
        }
    }

    /// Appends the prepared record after the head and moves the head past
    /// it; returns the entry's sequence number and stored bytes. Only the
    /// hash is computed here (the caller holds the chain-head lock); the
    /// bytes are assembled after, from the links this returns.
    pub(super) fn link(&mut self, prepared: &Prepared) -> Link {
        let seq = self.next_seq;
        let hash = json_hash(&self.hash, seq, &prepared.json);
        let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
        self.next_seq = seq.saturating_add(1);
        Link {
            seq,
            prev_hash,
            hash,
        }
    }

    /// The entry that would follow the head.
    #[cfg(test)]
    pub(super) fn next_entry(&self, record: AuditRecord) -> Result<AuditEntry, serde_json::Error> {
        let hash = entry_hash(&self.hash, self.next_seq, &record)?;
        Ok(AuditEntry {
            seq: self.next_seq,
            prev_hash: self.hash.clone(),
            hash,
            record,
        })
    }

    /// Moves the head past `entry`, once it is stored.
    pub(super) fn advance(&mut self, entry: &AuditEntry) {
        self.next_seq = entry.seq.saturating_add(1);
        self.hash.clone_from(&entry.hash);
    }
}

/// An entry's place in the chain, as [`Head::link`] assigned it.
pub(super) struct Link {
    /// The entry's sequence number.
    pub(super) seq: u64,
    prev_hash: String,
    hash: String,
}

impl Link {
    /// The bytes stored for this entry holding `prepared` (the record
    /// [`Head::link`] was given).
    pub(super) fn encode(&self, prepared: &Prepared) -> Vec<u8> {
        encode_prepared(self.seq, &self.prev_hash, &self.hash, prepared)
    }
}

/// Walks a chain entry by entry, in key order, and stops at the first break.
#[derive(Debug)]
pub(super) struct ChainVerifier {
    expected: Head,
}

impl ChainVerifier {
    /// A verifier expecting the chain to start at entry 0.
    pub(super) fn new() -> ChainVerifier {
        ChainVerifier {
            expected: Head::empty(),
        }
    }

    /// Checks the next stored entry.
    pub(super) fn feed(&mut self, key: &[u8], value: &[u8]) -> Result<(), AuditError> {
        let expected = self.expected.next_seq;
        let broken = |seq, why| Err(AuditError::Broken { seq, why });
        let Some(seq) = key_seq(key) else {
            return broken(expected, ChainBreak::BadKey);
        };
        if seq != expected {
            // Keys come in order, so a larger key means `expected` is gone.
            return broken(expected, ChainBreak::Missing);
        }
        let Some(entry) = decode(value) else {
            return broken(seq, ChainBreak::Undecodable);
        };
        if entry.seq != seq {
            return broken(seq, ChainBreak::SeqMismatch { found: entry.seq });
        }
        if entry.prev_hash != self.expected.hash {
            return broken(seq, ChainBreak::PrevHashMismatch);
        }
        match entry_hash(&entry.prev_hash, seq, &entry.record) {
            Ok(hash) if hash == entry.hash => {}
            _ => return broken(seq, ChainBreak::HashMismatch),
        }
        self.expected.advance(&entry);
        Ok(())
    }

    /// Ends the walk. With `head`, the head the running store recorded, the
    /// chain must end exactly there (this catches a deleted tail).
    pub(super) fn finish(self, head: Option<&Head>) -> Result<AuditSummary, AuditError> {
        if let Some(head) = head {
            if self.expected.next_seq < head.next_seq {
                return Err(AuditError::Broken {
                    seq: self.expected.next_seq,
                    why: ChainBreak::Missing,
                });
            }
            if self.expected.hash != head.hash {
                let seq = self.expected.next_seq.saturating_sub(1);
                return Err(AuditError::Broken {
                    seq,
                    why: ChainBreak::HeadMismatch,
                });
            }
        }
        Ok(AuditSummary {
            entries: self.expected.next_seq,
            head: self.expected.hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            at_ms: 1_700_000_000_000 + i,
            kind: "flow.started".to_owned(),
            flow: Some(format!("flow-{i}")),
            user: Some("alice".to_owned()),
            workflow: None,
            detail: serde_json::json!({ "z": 1, "a": [ { "y": true, "b": null } ] }),
        }
    }

    fn chain(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = Head::empty();
        let mut out = Vec::new();
        for i in 0..n {
            let entry = head.next_entry(record(i)).unwrap();
            head.advance(&entry);
            out.push((seq_key(entry.seq).to_vec(), encode(&entry).unwrap()));
        }
        out
    }

    fn verify(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<AuditSummary, AuditError> {
        let mut verifier = ChainVerifier::new();
        for (k, v) in entries {
            verifier.feed(k, v)?;
        }
        verifier.finish(None)
    }

    fn broken_at(result: Result<AuditSummary, AuditError>) -> (u64, ChainBreak) {
        match result {
            Err(AuditError::Broken { seq, why }) => (seq, why),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let json = String::from_utf8(canonical_json(&record(0)).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"at_ms":1700000000000,"detail":{"a":[{"b":null,"y":true}],"z":1},"flow":"flow-0","kind":"flow.started","user":"alice","workflow":null}"#
        );
    }

    #[test]
    fn hash_covers_prev_hash_seq_and_record() {
        let base = entry_hash(GENESIS_HASH, 0, &record(0)).unwrap();
        assert_eq!(base.len(), 64);
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, &record(0)).unwrap());
        assert_ne!(base, entry_hash(&"1".repeat(64), 0, &record(0)).unwrap());
        assert_ne!(base, entry_hash(GENESIS_HASH, 0, &record(1)).unwrap());
        // Key order in `detail` does not matter; values do.
        let mut reordered = record(0);
        reordered.detail = serde_json::json!({ "a": [ { "b": null, "y": true } ], "z": 1 });
        assert_eq!(base, entry_hash(GENESIS_HASH, 0, &reordered).unwrap());
    }

    #[test]
    fn linked_entries_match_the_reference_encoding() {
        let mut reference = Head::empty();
        let mut linked = Head::empty();
        let mut verifier = ChainVerifier::new();
        for i in 0..4 {
            let entry = reference.next_entry(record(i)).unwrap();
            reference.advance(&entry);
            let prepared = Prepared::new(&record(i)).unwrap();
            let link = linked.link(&prepared);
            let bytes = link.encode(&prepared);
            assert_eq!(decode(&bytes).unwrap(), entry);
            verifier.feed(&seq_key(link.seq), &bytes).unwrap();
        }
        assert_eq!(linked, reference);
        assert_eq!(verifier.finish(Some(&linked)).unwrap().entries, 4);
        // A head read from a damaged store is quoted, not trusted.
        let mut odd = Head {
            next_seq: 7,
            hash: "a\"b".to_owned(),
        };
        let prepared = Prepared::new(&record(0)).unwrap();
        let bytes = odd.link(&prepared).encode(&prepared);
        assert_eq!(decode(&bytes).unwrap().prev_hash, "a\"b");
    }

    #[test]
    fn an_intact_chain_verifies() {
        let summary = verify(&chain(5)).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.head, decode(&chain(5)[4].1).unwrap().hash);
        assert_eq!(
            verify(&[]).unwrap(),
            AuditSummary {
                entries: 0,
                head: GENESIS_HASH.to_owned()
            }
        );
    }

    #[test]
    fn every_kind_of_damage_names_the_first_bad_entry() {
        // Modified record.
        let mut entries = chain(5);
        let mut entry = decode(&entries[2].1).unwrap();
        entry.record.kind = "flow.finished".to_owned();
        entries[2].1 = encode(&entry).unwrap();
        assert_eq!(broken_at(verify(&entries)), (2, ChainBreak::HashMismatch));

        // Modified record with a recomputed hash: the next link breaks.
        entry.hash = entry_hash(&entry.prev_hash, 2, &entry.record).unwrap();
        entries[2].1 = encode(&entry).unwrap();
        assert_eq!(
            broken_at(verify(&entries)),
            (3, ChainBreak::PrevHashMismatch)
        );

        // Garbage bytes.
        let mut entries = chain(5);
        entries[1].1 = b"not json".to_vec();
        assert_eq!(broken_at(verify(&entries)), (1, ChainBreak::Undecodable));

        // Deleted entry.
        let mut entries = chain(5);
        entries.remove(3);
        assert_eq!(broken_at(verify(&entries)), (3, ChainBreak::Missing));

        // Swapped values.
        let mut entries = chain(5);
        let (a, b) = (entries[1].1.clone(), entries[2].1.clone());
        entries[1].1 = b;
        entries[2].1 = a;
        assert_eq!(
            broken_at(verify(&entries)),
            (1, ChainBreak::SeqMismatch { found: 2 })
        );

        // A key that is not a sequence number.
        let mut entries = chain(2);
        entries.push((b"x".to_vec(), b"{}".to_vec()));
        assert_eq!(broken_at(verify(&entries)), (2, ChainBreak::BadKey));
    }

    #[test]
    fn a_deleted_tail_is_caught_against_the_recorded_head() {
        let entries = chain(5);
        let mut head = Head::empty();
        for (_, v) in &entries {
            head.advance(&decode(v).unwrap());
        }
        let mut verifier = ChainVerifier::new();
        for (k, v) in &entries[..3] {
            verifier.feed(k, v).unwrap();
        }
        assert_eq!(
            broken_at(verifier.finish(Some(&head))),
            (3, ChainBreak::Missing)
        );

        let mut verifier = ChainVerifier::new();
        for (k, v) in &entries {
            verifier.feed(k, v).unwrap();
        }
        assert_eq!(verifier.finish(Some(&head)).unwrap().entries, 5);
    }

    #[test]
    fn errors_do_not_quote_entries() {
        let mut entries = chain(3);
        let mut entry = decode(&entries[1].1).unwrap();
        entry.record.detail = serde_json::json!({ "note": "CANARY-3f9a" });
        entries[1].1 = encode(&entry).unwrap();
        let err = verify(&entries).unwrap_err();
        assert!(!err.to_string().contains("CANARY-3f9a"));
        assert!(!format!("{err:?}").contains("CANARY-3f9a"));
    }
}
