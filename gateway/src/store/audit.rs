//! The audit log's records and its hash chain.
//!
//! Every entry has a sequence number, from 0 without gaps, and carries the
//! hash of the previous entry; its own hash is
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
//! On disk, the entries appended together (one request's records) are
//! stored as one *group*, under the key of the group's first entry (8
//! bytes, big endian, so key order is sequence order):
//!
//! ```text
//! group = 0x01 ‖ count (u32 BE, at least 1) ‖ entry × count
//! entry = seq (u64 BE) ‖ prev_hash (32 bytes) ‖ hash (32 bytes)
//!         ‖ length (u32 BE) ‖ canonical JSON of the record (length bytes)
//! ```
//!
//! The hashes are stored as the 32 bytes of the digest; the chain and the
//! API use their hex form. Every entry of a group is chained and checked on
//! its own, exactly as if it were stored alone. The format before groups
//! (one JSON object per entry, so its first byte is `{`) is recognised and
//! refused, never misread.
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

/// One entry of the audit log: a record and its place in its chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The chain it belongs to: sled keeps one ([`LOCAL_CHAIN`]); several
    /// gateways on one database each append to chains of their own.
    #[serde(default)]
    pub chain: String,
    /// Its position in the whole log (every chain), in the order entries
    /// were appended: what [`AuditLog::entries`](super::AuditLog::entries)
    /// pages by. Not covered by the hash.
    #[serde(default)]
    pub position: u64,
    /// Position in its chain, from 0, without gaps.
    pub seq: u64,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first entry).
    pub prev_hash: String,
    /// This entry's hash (see the module documentation).
    pub hash: String,
    /// What happened.
    pub record: AuditRecord,
}

/// The name of sled's one chain.
pub const LOCAL_CHAIN: &str = "local";

/// The state of a verified chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChainSummary {
    /// The chain's name.
    pub chain: String,
    /// How many entries the chain holds.
    pub entries: u64,
    /// The last entry's hash ([`GENESIS_HASH`] when the chain is empty).
    pub head: String,
}

/// The state of a verified audit log: every chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditSummary {
    /// How many entries the chains hold together.
    pub entries: u64,
    /// Each chain, by name.
    pub chains: Vec<ChainSummary>,
}

impl AuditSummary {
    /// The summary of `chains` (sorted by name).
    pub fn of(mut chains: Vec<ChainSummary>) -> AuditSummary {
        chains.sort_by(|a, b| a.chain.cmp(&b.chain));
        AuditSummary {
            entries: chains.iter().map(|c| c.entries).sum(),
            chains,
        }
    }
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
    /// The entry is stored in the format of a resetgate from before audit
    /// groups (one JSON object per key), which this version does not read.
    #[error("the entry is in an older on-disk format, which this version does not read")]
    OldFormat,
    /// A group's key is a sequence number that an earlier group already
    /// holds (groups overlap).
    #[error("the entry is stored twice")]
    Duplicate,
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
    #[error("the audit chain `{chain}` is broken at entry {seq}: {why}")]
    Broken {
        /// The chain.
        chain: String,
        /// The first bad sequence number.
        seq: u64,
        /// What is wrong with it.
        why: ChainBreak,
    },
    /// The store failed while reading the log.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key of entry `seq` (of the group it starts).
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
    let mut out = Vec::new();
    write_canonical_json(&mut out, record)?;
    Ok(out)
}

/// Appends the record's canonical JSON to `out`.
fn write_canonical_json(out: &mut Vec<u8>, record: &AuditRecord) -> Result<(), serde_json::Error> {
    let value = canonical(serde_json::to_value(record)?);
    serde_json::to_writer(out, &value)
}

/// The hash of the entry `seq` holding `record` after `prev_hash`, by the
/// definition in the module documentation (a reference for tests).
#[cfg(test)]
pub(super) fn entry_hash(
    prev_hash: &str,
    seq: u64,
    record: &AuditRecord,
) -> Result<String, serde_json::Error> {
    let json = canonical_json(record)?;
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(&json);
    Ok(hex::encode(hasher.finalize()))
}

/// A sha256 digest, as stored.
type Digest32 = [u8; DIGEST_LEN];

/// The hash of the entry `seq` whose record's canonical JSON is `json`,
/// after the entry whose hash is `prev`. No allocation: it runs under the
/// chain-head lock.
fn json_hash(prev: &Digest32, seq: u64, json: &[u8]) -> Digest32 {
    let mut prev_hex = [0u8; 2 * DIGEST_LEN];
    // Cannot fail: the output is exactly twice the input's length.
    let _ = hex::encode_to_slice(prev, &mut prev_hex);
    let mut hasher = Sha256::new();
    hasher.update(prev_hex);
    hasher.update(seq.to_be_bytes());
    hasher.update(json);
    hasher.finalize().into()
}

/// The first byte of a stored group.
const GROUP_FORMAT: u8 = 0x01;
/// The first byte of a stored group whose commit a flow record carries
/// (sled, schema 6): the same layout, then the flow's id and its length
/// (one byte) at the end ([`mark_carried`]).
const CARRIED_FORMAT: u8 = 0x02;
/// The first byte of an entry stored in the format before groups (a JSON
/// object).
const OLD_FORMAT: u8 = b'{';
/// The length of a sha256 digest.
const DIGEST_LEN: usize = 32;
/// The group's header: format and count.
const GROUP_HEADER: usize = 1 + 4;
/// An entry's fixed part: seq, prev_hash, hash, length of the JSON.
const ENTRY_HEADER: usize = 8 + DIGEST_LEN + DIGEST_LEN + 4;

/// Where each entry of a group laid out by [`prepare`] sits in its bytes:
/// the offset of its fixed part and the length of its JSON.
pub(super) struct Layout {
    entries: Vec<(usize, usize)>,
}

/// Lays out `records` as one group, outside the chain-head lock: every
/// record is serialised canonically into its place, and only the chain
/// fields (seq, prev_hash, hash) are left for [`Layout::link`] to fill in
/// under the lock. `None` if there are no records.
pub(super) fn prepare(
    records: &[AuditRecord],
) -> Result<Option<(Vec<u8>, Layout)>, serde_json::Error> {
    let Ok(count) = u32::try_from(records.len()) else {
        return Err(serde::ser::Error::custom("too many audit records at once"));
    };
    if count == 0 {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(GROUP_HEADER + records.len() * (ENTRY_HEADER + 320));
    bytes.push(GROUP_FORMAT);
    bytes.extend_from_slice(&count.to_be_bytes());
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        let at = bytes.len();
        bytes.resize(at + ENTRY_HEADER, 0);
        write_canonical_json(&mut bytes, record)?;
        let len = bytes.len() - at - ENTRY_HEADER;
        let Ok(len32) = u32::try_from(len) else {
            return Err(serde::ser::Error::custom("an audit record is too large"));
        };
        if let Some(slot) = bytes.get_mut(at + ENTRY_HEADER - 4..at + ENTRY_HEADER) {
            slot.copy_from_slice(&len32.to_be_bytes());
        }
        entries.push((at, len));
    }
    Ok(Some((bytes, Layout { entries })))
}

/// A group holding `entries` exactly as given (their sequence numbers and
/// hashes kept, records in canonical JSON): how a copied log is stored, so
/// that it verifies exactly as the original. Refuses an entry whose hashes
/// are not 64 hex digits.
pub(super) fn encode_entries(entries: &[AuditEntry]) -> Result<Vec<u8>, String> {
    let count = u32::try_from(entries.len()).map_err(|_| "too many audit entries".to_owned())?;
    let mut bytes = vec![GROUP_FORMAT];
    bytes.extend_from_slice(&count.to_be_bytes());
    let digest = |hex_text: &str, seq: u64| -> Result<Digest32, String> {
        let mut out = [0u8; DIGEST_LEN];
        hex::decode_to_slice(hex_text, &mut out)
            .map_err(|_| format!("audit entry {seq} has a hash that is not 64 hex digits"))?;
        Ok(out)
    };
    for e in entries {
        let json = canonical_json(&e.record).map_err(|err| err.to_string())?;
        let len = u32::try_from(json.len()).map_err(|_| "an audit record is too large")?;
        bytes.extend_from_slice(&e.seq.to_be_bytes());
        bytes.extend_from_slice(&digest(&e.prev_hash, e.seq)?);
        bytes.extend_from_slice(&digest(&e.hash, e.seq)?);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&json);
    }
    Ok(bytes)
}

impl Layout {
    /// Chains the group's entries after `head`, in place in `bytes` (the
    /// bytes [`prepare`] returned with this layout), and moves `head` past
    /// them. Returns the group's key: its first entry's sequence number.
    /// Hashing and copying only, no allocation: the caller holds the
    /// chain-head lock. `None` if `bytes` do not fit the layout.
    pub(super) fn link(&self, head: &mut Head, bytes: &mut [u8]) -> Option<u64> {
        let first = head.next_seq;
        for &(at, len) in &self.entries {
            let seq = head.next_seq;
            let entry = bytes.get_mut(at..at + ENTRY_HEADER + len)?;
            let (fixed, json) = entry.split_at_mut(ENTRY_HEADER);
            let hash = json_hash(&head.hash, seq, json);
            fixed.get_mut(..8)?.copy_from_slice(&seq.to_be_bytes());
            fixed
                .get_mut(8..8 + DIGEST_LEN)?
                .copy_from_slice(&head.hash);
            fixed
                .get_mut(8 + DIGEST_LEN..8 + 2 * DIGEST_LEN)?
                .copy_from_slice(&hash);
            head.next_seq = seq.saturating_add(1);
            head.hash = hash;
        }
        Some(first)
    }
}

/// One entry of a stored group, borrowed from the group's bytes.
#[derive(Debug)]
pub(super) struct Stored<'a> {
    /// The entry's sequence number.
    pub(super) seq: u64,
    prev_hash: Digest32,
    hash: Digest32,
    json: &'a [u8],
}

impl Stored<'_> {
    /// Whether the stored hash is the hash of the stored contents.
    fn hash_matches(&self) -> bool {
        json_hash(&self.prev_hash, self.seq, self.json) == self.hash
    }

    /// The record it holds, if its JSON is one.
    fn record(&self) -> Option<AuditRecord> {
        serde_json::from_slice(self.json).ok()
    }

    /// The user its record names, read without building the record (what
    /// the index by user needs); `None` if it names none or is not one.
    pub(super) fn user(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct UserOnly<'a> {
            #[serde(borrow, default)]
            user: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_slice::<UserOnly<'_>>(self.json)
            .ok()?
            .user
            .map(std::borrow::Cow::into_owned)
    }

    /// The entry as the API shows it; `None` if the record is not one.
    pub(super) fn entry(&self, chain: &str, position: u64) -> Option<AuditEntry> {
        Some(AuditEntry {
            chain: chain.to_owned(),
            position,
            seq: self.seq,
            prev_hash: hex::encode(self.prev_hash),
            hash: hex::encode(self.hash),
            record: self.record()?,
        })
    }
}

/// Why stored bytes are not a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// An entry of the format before groups.
    OldFormat,
    /// Anything else that is not a group.
    Undecodable,
}

impl Unreadable {
    /// How the chain is broken by such an entry.
    fn chain_break(self) -> ChainBreak {
        match self {
            Unreadable::OldFormat => ChainBreak::OldFormat,
            Unreadable::Undecodable => ChainBreak::Undecodable,
        }
    }

    /// What to say about entry `seq` (or an entry, if the key is not a
    /// sequence number); never quotes the bytes.
    pub(super) fn describe(self, seq: Option<u64>) -> String {
        let what = match seq {
            Some(seq) => format!("entry {seq}"),
            None => "an entry".to_owned(),
        };
        match self {
            Unreadable::OldFormat => format!(
                "{what} is in the audit log format of an older resetgate (one entry per key), \
                 which this version does not read"
            ),
            Unreadable::Undecodable => format!("{what} cannot be decoded"),
        }
    }
}

/// Splits `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

/// Marks the group laid out in `bytes` (by [`prepare`]) as one whose commit
/// the record of flow `flow` carries: sled's recovery reads which flow
/// from the newest group ([`carried_flow`]). Fails, leaving `bytes` as
/// they are, if the id is longer than 255 bytes or `bytes` is no group.
pub(super) fn mark_carried(bytes: &mut Vec<u8>, flow: &[u8]) -> bool {
    let Ok(len) = u8::try_from(flow.len()) else {
        return false;
    };
    let Some(format) = bytes.first_mut().filter(|f| **f == GROUP_FORMAT) else {
        return false;
    };
    *format = CARRIED_FORMAT;
    bytes.extend_from_slice(flow);
    bytes.push(len);
    true
}

/// The flow whose record carries the commit of the group stored as
/// `bytes`, if [`mark_carried`] marked it.
pub(super) fn carried_flow(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&CARRIED_FORMAT) {
        return None;
    }
    let (&len, rest) = bytes.split_last()?;
    let at = rest.len().checked_sub(usize::from(len))?;
    rest.get(GROUP_HEADER.max(at)..)
        .filter(|f| f.len() == usize::from(len))
}

/// The entries of the group stored as `bytes`, in order. Checks the layout
/// only (every byte accounted for), not the chain.
pub(super) fn decode_group(bytes: &[u8]) -> Result<Vec<Stored<'_>>, Unreadable> {
    let undecodable = Unreadable::Undecodable;
    let mut rest = bytes;
    match take(&mut rest, 1) {
        Some([GROUP_FORMAT]) => {}
        Some([CARRIED_FORMAT]) => {
            // The group, without the flow's id at its end.
            let flow = carried_flow(bytes).ok_or(undecodable)?;
            rest = rest.get(..rest.len() - flow.len() - 1).ok_or(undecodable)?;
        }
        Some([OLD_FORMAT]) => return Err(Unreadable::OldFormat),
        _ => return Err(undecodable),
    }
    let count = take(&mut rest, 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(undecodable)?;
    if count == 0 {
        return Err(undecodable);
    }
    let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(64));
    for _ in 0..count {
        let fixed = take(&mut rest, ENTRY_HEADER).ok_or(undecodable)?;
        let (seq, fixed) = fixed.split_at(8);
        let (prev_hash, fixed) = fixed.split_at(DIGEST_LEN);
        let (hash, len) = fixed.split_at(DIGEST_LEN);
        let len = len
            .try_into()
            .ok()
            .map(u32::from_be_bytes)
            .and_then(|len| usize::try_from(len).ok())
            .ok_or(undecodable)?;
        entries.push(Stored {
            seq: seq
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
                .ok_or(undecodable)?,
            prev_hash: prev_hash.try_into().map_err(|_| undecodable)?,
            hash: hash.try_into().map_err(|_| undecodable)?,
            json: take(&mut rest, len).ok_or(undecodable)?,
        });
    }
    if !rest.is_empty() {
        return Err(undecodable);
    }
    Ok(entries)
}

/// The end of the chain: where the next entry goes and what it links to.
/// `Copy`: the chain-head lock never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// The next entry's sequence number (the number of entries).
    pub(super) next_seq: u64,
    /// The last entry's hash.
    hash: Digest32,
}

impl Head {
    /// The head of an empty log.
    pub(super) fn empty() -> Head {
        Head {
            next_seq: 0,
            hash: [0; DIGEST_LEN],
        }
    }

    /// The head after the stored entry `last`.
    pub(super) fn after(last: &Stored<'_>) -> Head {
        Head {
            next_seq: last.seq.saturating_add(1),
            hash: last.hash,
        }
    }

    /// Reads the head from the last group of the log; `Err` if the group
    /// cannot be read. Logs a warning if the last entry does not match its
    /// hash (the log then needs verifying; appending goes on after it).
    pub(super) fn from_last_group(bytes: &[u8]) -> Result<Head, Unreadable> {
        let entries = decode_group(bytes)?;
        let last = entries.last().ok_or(Unreadable::Undecodable)?;
        if !last.hash_matches() {
            tracing::warn!(
                seq = last.seq,
                "the last audit entry does not match its hash; the audit log needs verifying"
            );
        }
        Ok(Head::after(last))
    }

    /// The head whose next entry is `next_seq` and whose last entry's hash
    /// is `hash` (as stored); `None` if `hash` is not a sha256 digest.
    pub(super) fn from_parts(next_seq: u64, hash: &[u8]) -> Option<Head> {
        Some(Head {
            next_seq,
            hash: hash.try_into().ok()?,
        })
    }

    /// The last entry's hash, as stored.
    pub(super) fn hash_bytes(&self) -> &[u8] {
        &self.hash
    }

    /// The head's hash in hex.
    pub(super) fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Walks a chain group by group, in key order, and stops at the first
/// break.
#[derive(Debug)]
pub(super) struct ChainVerifier {
    chain: String,
    expected: Head,
}

impl ChainVerifier {
    /// A verifier of chain `chain`, expecting it to start at entry 0.
    pub(super) fn new(chain: &str) -> ChainVerifier {
        ChainVerifier {
            chain: chain.to_owned(),
            expected: Head::empty(),
        }
    }

    /// Checks the next stored group, entry by entry.
    pub(super) fn feed(&mut self, key: &[u8], value: &[u8]) -> Result<(), AuditError> {
        let expected = self.expected.next_seq;
        let chain = self.chain.clone();
        let broken = |seq, why| {
            Err(AuditError::Broken {
                chain: chain.clone(),
                seq,
                why,
            })
        };
        let Some(first) = key_seq(key) else {
            return broken(expected, ChainBreak::BadKey);
        };
        if first > expected {
            // Keys come in order, so a larger key means `expected` is gone.
            return broken(expected, ChainBreak::Missing);
        }
        if first < expected {
            // An earlier group already held `first`.
            return broken(first, ChainBreak::Duplicate);
        }
        let entries = match decode_group(value) {
            Ok(entries) => entries,
            Err(why) => return broken(first, why.chain_break()),
        };
        for stored in &entries {
            let seq = self.expected.next_seq;
            if stored.seq != seq {
                return broken(seq, ChainBreak::SeqMismatch { found: stored.seq });
            }
            if stored.prev_hash != self.expected.hash {
                return broken(seq, ChainBreak::PrevHashMismatch);
            }
            if !stored.hash_matches() {
                return broken(seq, ChainBreak::HashMismatch);
            }
            if stored.record().is_none() {
                return broken(seq, ChainBreak::Undecodable);
            }
            self.expected = Head::after(stored);
        }
        Ok(())
    }

    /// Ends the walk. With `head`, the head the running store recorded, the
    /// chain must end exactly there (this catches a deleted tail).
    pub(super) fn finish(self, head: Option<&Head>) -> Result<ChainSummary, AuditError> {
        if let Some(head) = head {
            if self.expected.next_seq < head.next_seq {
                return Err(AuditError::Broken {
                    chain: self.chain,
                    seq: self.expected.next_seq,
                    why: ChainBreak::Missing,
                });
            }
            if self.expected.hash != head.hash {
                let seq = self.expected.next_seq.saturating_sub(1);
                return Err(AuditError::Broken {
                    chain: self.chain,
                    seq,
                    why: ChainBreak::HeadMismatch,
                });
            }
        }
        Ok(ChainSummary {
            chain: self.chain,
            entries: self.expected.next_seq,
            head: self.expected.hash_hex(),
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

    /// An entry of a group, owned, for tests that take groups apart.
    #[derive(Clone)]
    struct Raw {
        seq: u64,
        prev_hash: Digest32,
        hash: Digest32,
        json: Vec<u8>,
    }

    fn raw(value: &[u8]) -> Vec<Raw> {
        decode_group(value)
            .unwrap()
            .into_iter()
            .map(|s| Raw {
                seq: s.seq,
                prev_hash: s.prev_hash,
                hash: s.hash,
                json: s.json.to_vec(),
            })
            .collect()
    }

    /// Encodes entries as a group, whatever they hold.
    fn encode_raw(entries: &[Raw]) -> Vec<u8> {
        let mut out = vec![GROUP_FORMAT];
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            out.extend_from_slice(&e.seq.to_be_bytes());
            out.extend_from_slice(&e.prev_hash);
            out.extend_from_slice(&e.hash);
            out.extend_from_slice(&(e.json.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.json);
        }
        out
    }

    /// Takes a stored group apart, changes it and puts it back together.
    fn rewrite(value: &[u8], change: impl FnOnce(&mut Vec<Raw>)) -> Vec<u8> {
        let mut entries = raw(value);
        change(&mut entries);
        encode_raw(&entries)
    }

    /// The same JSON with one word changed (still valid JSON).
    fn edited(json: &[u8]) -> Vec<u8> {
        String::from_utf8(json.to_vec())
            .unwrap()
            .replacen("flow.started", "flow.stopped", 1)
            .into_bytes()
    }

    /// A chain stored as groups of the given sizes; records are numbered
    /// by their sequence number.
    fn chain_of(sizes: &[usize]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = Head::empty();
        let mut out = Vec::new();
        for &size in sizes {
            let records: Vec<_> = (head.next_seq..head.next_seq + size as u64)
                .map(record)
                .collect();
            let (mut bytes, layout) = prepare(&records).unwrap().unwrap();
            let first = layout.link(&mut head, &mut bytes).unwrap();
            out.push((seq_key(first).to_vec(), bytes));
        }
        out
    }

    /// A chain of `n` groups of one entry each.
    fn chain(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        chain_of(&vec![1; n])
    }

    fn verify(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<ChainSummary, AuditError> {
        let mut verifier = ChainVerifier::new("c");
        for (k, v) in entries {
            verifier.feed(k, v)?;
        }
        verifier.finish(None)
    }

    fn broken_at(result: Result<ChainSummary, AuditError>) -> (u64, ChainBreak) {
        match result {
            Err(AuditError::Broken { seq, why, .. }) => (seq, why),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    fn entries_of(stored: &[(Vec<u8>, Vec<u8>)]) -> Vec<AuditEntry> {
        stored
            .iter()
            .flat_map(|(_, v)| decode_group(v).unwrap())
            .map(|s| s.entry("c", s.seq).unwrap())
            .collect()
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
    fn grouped_entries_are_chained_one_by_one_by_the_reference_definition() {
        let stored = chain_of(&[1, 3, 2]);
        assert_eq!(
            stored
                .iter()
                .map(|(k, _)| key_seq(k).unwrap())
                .collect::<Vec<_>>(),
            vec![0, 1, 4]
        );
        let entries = entries_of(&stored);
        let mut prev = GENESIS_HASH.to_owned();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64);
            assert_eq!(entry.record, record(i as u64));
            assert_eq!(entry.prev_hash, prev);
            assert_eq!(
                entry.hash,
                entry_hash(&entry.prev_hash, entry.seq, &entry.record).unwrap()
            );
            prev = entry.hash.clone();
        }
        let summary = verify(&stored).unwrap();
        assert_eq!(summary.entries, 6);
        assert_eq!(summary.head, prev);
        // The head read back from the last group is where linking stopped.
        let mut linked = Head::empty();
        for (_, v) in &stored {
            linked = Head::from_last_group(v).unwrap();
        }
        assert_eq!(linked.next_seq, 6);
        assert_eq!(linked.hash_hex(), prev);
        assert_eq!(prepare(&[]).unwrap().map(|(b, _)| b), None);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let summary = verify(&chain(5)).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.head, entries_of(&chain(5))[4].hash);
        assert_eq!(
            verify(&[]).unwrap(),
            ChainSummary {
                chain: "c".to_owned(),
                entries: 0,
                head: GENESIS_HASH.to_owned()
            }
        );
    }

    #[test]
    fn every_kind_of_damage_names_the_first_bad_entry() {
        // Modified record.
        let mut entries = chain(5);
        entries[2].1 = rewrite(&entries[2].1, |g| g[0].json = edited(&g[0].json));
        assert_eq!(broken_at(verify(&entries)), (2, ChainBreak::HashMismatch));

        // Modified record with a recomputed hash: the next link breaks.
        entries[2].1 = rewrite(&entries[2].1, |g| {
            g[0].hash = json_hash(&g[0].prev_hash, 2, &g[0].json)
        });
        assert_eq!(
            broken_at(verify(&entries)),
            (3, ChainBreak::PrevHashMismatch)
        );

        // A record that is not one, with a matching hash.
        let mut entries = chain(5);
        entries[4].1 = rewrite(&entries[4].1, |g| {
            g[0].json = b"[]".to_vec();
            g[0].hash = json_hash(&g[0].prev_hash, 4, &g[0].json);
        });
        assert_eq!(broken_at(verify(&entries)), (4, ChainBreak::Undecodable));

        // Garbage bytes.
        let mut entries = chain(5);
        entries[1].1 = b"not json".to_vec();
        assert_eq!(broken_at(verify(&entries)), (1, ChainBreak::Undecodable));

        // An entry of the format before groups.
        let mut entries = chain(5);
        let old = entries_of(&entries)[1].clone();
        entries[1].1 = serde_json::to_vec(&old).unwrap();
        assert_eq!(broken_at(verify(&entries)), (1, ChainBreak::OldFormat));

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
    fn damage_inside_a_group_names_the_entry() {
        // Groups hold entries 0–1, 2–4 and 5–6; entry 3 is a middle record.
        let intact = chain_of(&[2, 3, 2]);
        verify(&intact).unwrap();

        // A tampered middle record.
        let mut entries = intact.clone();
        entries[1].1 = rewrite(&entries[1].1, |g| g[1].json = edited(&g[1].json));
        assert_eq!(broken_at(verify(&entries)), (3, ChainBreak::HashMismatch));

        // ... with its hash recomputed: the record after it breaks.
        entries[1].1 = rewrite(&entries[1].1, |g| {
            g[1].hash = json_hash(&g[1].prev_hash, 3, &g[1].json)
        });
        assert_eq!(
            broken_at(verify(&entries)),
            (4, ChainBreak::PrevHashMismatch)
        );

        // ... and the rest of the group rehashed: the next group breaks.
        entries[1].1 = rewrite(&entries[1].1, |g| {
            g[2].prev_hash = g[1].hash;
            g[2].hash = json_hash(&g[2].prev_hash, 4, &g[2].json);
        });
        assert_eq!(
            broken_at(verify(&entries)),
            (5, ChainBreak::PrevHashMismatch)
        );

        // A middle record removed.
        let mut entries = intact.clone();
        entries[1].1 = rewrite(&entries[1].1, |g| {
            g.remove(1);
        });
        assert_eq!(
            broken_at(verify(&entries)),
            (3, ChainBreak::SeqMismatch { found: 4 })
        );

        // The first record of a group removed.
        let mut entries = intact.clone();
        entries[1].1 = rewrite(&entries[1].1, |g| {
            g.remove(0);
        });
        assert_eq!(
            broken_at(verify(&entries)),
            (2, ChainBreak::SeqMismatch { found: 3 })
        );

        // Two records of a group swapped.
        let mut entries = intact.clone();
        entries[1].1 = rewrite(&entries[1].1, |g| g.swap(1, 2));
        assert_eq!(
            broken_at(verify(&entries)),
            (3, ChainBreak::SeqMismatch { found: 4 })
        );

        // A whole group deleted.
        let mut entries = intact.clone();
        entries.remove(1);
        assert_eq!(broken_at(verify(&entries)), (2, ChainBreak::Missing));

        // A group stored again under the key of one of its middle records.
        let mut entries = intact.clone();
        entries.insert(2, (seq_key(3).to_vec(), entries[1].1.clone()));
        assert_eq!(broken_at(verify(&entries)), (3, ChainBreak::Duplicate));

        // Layouts that do not add up.
        let bytes = &intact[1].1;
        let mut damaged: Vec<Vec<u8>> = vec![
            bytes[..bytes.len() - 1].to_vec(),
            [bytes.as_slice(), b"x"].concat(),
            vec![],
            vec![GROUP_FORMAT, 0, 0, 0, 0],
        ];
        let mut more = bytes.clone();
        more[4] += 1; // one entry more than it holds
        damaged.push(more);
        let mut less = bytes.clone();
        less[4] -= 1; // one entry less: bytes left over
        damaged.push(less);
        for value in damaged {
            let mut entries = intact.clone();
            entries[1].1 = value;
            assert_eq!(broken_at(verify(&entries)), (2, ChainBreak::Undecodable));
        }
    }

    #[test]
    fn the_format_before_groups_is_refused_not_misread() {
        let old = entries_of(&chain(1))[0].clone();
        let bytes = serde_json::to_vec(&old).unwrap();
        assert_eq!(decode_group(&bytes).unwrap_err(), Unreadable::OldFormat);
        assert_eq!(
            Head::from_last_group(&bytes).unwrap_err(),
            Unreadable::OldFormat
        );
        let said = Unreadable::OldFormat.describe(Some(0));
        assert!(said.contains("entry 0") && said.contains("older"), "{said}");
    }

    #[test]
    fn a_deleted_tail_is_caught_against_the_recorded_head() {
        let entries = chain_of(&[1, 2, 2]);
        let head = Head::from_last_group(&entries[2].1).unwrap();
        let mut verifier = ChainVerifier::new("c");
        for (k, v) in &entries[..2] {
            verifier.feed(k, v).unwrap();
        }
        assert_eq!(
            broken_at(verifier.finish(Some(&head))),
            (3, ChainBreak::Missing)
        );

        let mut verifier = ChainVerifier::new("c");
        for (k, v) in &entries {
            verifier.feed(k, v).unwrap();
        }
        assert_eq!(verifier.finish(Some(&head)).unwrap().entries, 5);
    }

    #[test]
    fn errors_do_not_quote_entries() {
        let mut entries = chain_of(&[1, 2]);
        entries[1].1 = rewrite(&entries[1].1, |g| {
            let mut record: AuditRecord = serde_json::from_slice(&g[1].json).unwrap();
            record.detail = serde_json::json!({ "note": "CANARY-3f9a" });
            g[1].json = canonical_json(&record).unwrap();
        });
        let err = verify(&entries).unwrap_err();
        assert!(matches!(
            err,
            AuditError::Broken {
                chain: _,
                seq: 2,
                why: ChainBreak::HashMismatch
            }
        ));
        assert!(!err.to_string().contains("CANARY-3f9a"));
        assert!(!format!("{err:?}").contains("CANARY-3f9a"));
    }
}
