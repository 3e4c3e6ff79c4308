//! The backup file (`resetgate backup` / `resetgate restore`): every record
//! of a store as of one moment ([`Store::export`]), as JSON lines.
//!
//! The first line is a header (`{"header":{"format":"resetgate-backup",
//! "version":1,"backend":...,"schema":...,"created_ms":...}}`), then one
//! line per record (`{"flow":{...}}`, `lockout`, `enrollment`, `kv`,
//! `work`, `audit` — audit entries with their chain, sequence number and
//! hashes, so the restored log verifies as the original did), and last
//! `{"end":{"records":N}}`: a file without it was cut short and is refused.
//! Byte values are base64. What a store holds is already safe to copy
//! (secrets are sealed under the data key, users are keyed by digest), so
//! the backup is too — and, like the store, useless without the data key,
//! which it does not contain.

use std::io::{BufRead, Write};

use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{AuditEntry, FlowRecord, Item, Queue, Store, StoreError, WorkItem};

/// The `format` a backup's header names.
pub const FORMAT: &str = "resetgate-backup";
/// The version of the file format this binary writes and reads.
pub const VERSION: u32 = 1;

/// What to remember about a backup (said when one is taken).
pub const KEY_NOTE: &str = "enrollment data in the backup is sealed under this gateway's data key: \
     keep the key (`data.key` in the data folder, or `data_key_secret`) with the backup, apart \
     from it";

/// What a backup's first line says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file format's version ([`VERSION`]).
    pub version: u32,
    /// The backend it was taken from (`sled`, `postgres`).
    pub backend: String,
    /// That store's schema version.
    pub schema: u32,
    /// When it was taken (ms since the Unix epoch).
    pub created_ms: u64,
}

/// Why a backup could not be written or read. Never holds a stored value.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing or reading the file failed.
    #[error("{0}")]
    Io(String),
    /// The file is not a backup this binary reads.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum Line {
    Header(Header),
    Flow {
        id: String,
        user: String,
        version: String,
        in_progress: bool,
        due_ms: u64,
        #[serde(with = "b64")]
        body: Vec<u8>,
    },
    Lockout {
        user: String,
        #[serde(with = "b64")]
        history: Vec<u8>,
    },
    Enrollment {
        user: String,
        gate: String,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    Kv {
        namespace: String,
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
    },
    Work {
        queue: String,
        id: String,
        due_ms: u64,
        #[serde(with = "b64")]
        payload: Vec<u8>,
        attempts: u32,
        lease_until_ms: Option<u64>,
    },
    Audit(AuditEntry),
    End {
        records: u64,
    },
}

mod b64 {
    use super::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        STANDARD
            .decode(text)
            .map_err(|_| serde::de::Error::custom("a value is not base64"))
    }
}

impl Line {
    fn of(item: Item) -> Line {
        match item {
            Item::Flow(f) => Line::Flow {
                id: f.id,
                user: f.user,
                version: f.version,
                in_progress: f.in_progress,
                due_ms: f.due_ms,
                body: f.body,
            },
            Item::Lockout { user, history } => Line::Lockout { user, history },
            Item::Enrollment { user, gate, data } => Line::Enrollment { user, gate, data },
            Item::Kv {
                namespace,
                key,
                value,
            } => Line::Kv {
                namespace,
                key,
                value,
            },
            Item::Work {
                item,
                attempts,
                lease_until_ms,
            } => Line::Work {
                queue: item.queue.name().to_owned(),
                id: item.id,
                due_ms: item.due_ms,
                payload: item.payload,
                attempts,
                lease_until_ms,
            },
            Item::Audit(entry) => Line::Audit(entry),
        }
    }

    /// The record, if the line is one (`Err`: an unknown queue).
    fn item(self) -> Result<Option<Item>, String> {
        Ok(Some(match self {
            Line::Header(_) | Line::End { .. } => return Ok(None),
            Line::Flow {
                id,
                user,
                version,
                in_progress,
                due_ms,
                body,
            } => Item::Flow(FlowRecord {
                id,
                user,
                version,
                in_progress,
                due_ms,
                body,
            }),
            Line::Lockout { user, history } => Item::Lockout { user, history },
            Line::Enrollment { user, gate, data } => Item::Enrollment { user, gate, data },
            Line::Kv {
                namespace,
                key,
                value,
            } => Item::Kv {
                namespace,
                key,
                value,
            },
            Line::Work {
                queue,
                id,
                due_ms,
                payload,
                attempts,
                lease_until_ms,
            } => Item::Work {
                item: WorkItem {
                    queue: Queue::ALL
                        .into_iter()
                        .find(|q| q.name() == queue)
                        .ok_or_else(|| format!("unknown queue `{queue}`"))?,
                    id,
                    due_ms,
                    payload,
                },
                attempts,
                lease_until_ms,
            },
            Line::Audit(entry) => Item::Audit(entry),
        }))
    }
}

fn write_line(out: &mut (dyn Write + Send), line: &Line) -> Result<(), BackupError> {
    let mut bytes = serde_json::to_vec(line)
        .map_err(|e| BackupError::Io(format!("cannot encode a record: {e}")))?;
    bytes.push(b'\n');
    out.write_all(&bytes)
        .map_err(|e| BackupError::Io(format!("cannot write the backup: {e}")))
}

/// Writes a backup of `store` to `out`: the header, every record as of
/// one moment, the end line. Returns how many records it holds.
pub fn write(
    store: &dyn Store,
    out: &mut (dyn Write + Send),
    created_ms: u64,
) -> Result<u64, BackupError> {
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        backend: store.backend().to_owned(),
        schema: store.schema_version()?,
        created_ms,
    };
    write_line(out, &Line::Header(header))?;
    let mut records = 0u64;
    let mut failed = None;
    let exported = store.export(&mut |item| {
        records += 1;
        write_line(out, &Line::of(item)).map_err(|e| {
            failed = Some(e);
            // Stops the export; the write's error is the one to report.
            StoreError::Closed
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    exported?;
    write_line(out, &Line::End { records })?;
    out.flush()
        .map_err(|e| BackupError::Io(format!("cannot write the backup: {e}")))?;
    Ok(records)
}

/// Reads a backup from `input`, handing each record to `visit`; its header.
/// Refuses a file that is not a backup, of a newer format, damaged, or cut
/// short (no end line, or fewer records than it says) — `visit` may have
/// been handed records before that is found, so restore into a store that
/// is thrown away on failure.
pub fn read(
    input: &mut dyn BufRead,
    visit: &mut dyn FnMut(Item) -> Result<(), StoreError>,
) -> Result<Header, BackupError> {
    let mut header = None;
    let mut records = 0u64;
    let mut number = 0u64;
    let mut text = String::new();
    loop {
        text.clear();
        let read = input
            .read_line(&mut text)
            .map_err(|e| BackupError::Io(format!("cannot read the backup: {e}")))?;
        number += 1;
        let malformed = |reason: String| BackupError::Malformed {
            line: number,
            reason,
        };
        if read == 0 {
            return Err(malformed(
                "the file ends without its end line: the backup was cut short".to_owned(),
            ));
        }
        // Never quote the line: it holds stored values.
        let line: Line = serde_json::from_str(&text).map_err(|e| {
            malformed(format!(
                "not a backup record ({})",
                e.to_string().split(" at line").next().unwrap_or("invalid")
            ))
        })?;
        match (&header, line) {
            (None, Line::Header(h)) => {
                if h.format != FORMAT {
                    return Err(malformed(format!(
                        "not a resetgate backup (`{}`)",
                        h.format
                    )));
                }
                if h.version > VERSION {
                    return Err(malformed(format!(
                        "the backup's format is version {}, newer than this resetgate's {VERSION}: \
                         restore it with a newer resetgate",
                        h.version
                    )));
                }
                header = Some(h);
            }
            (None, _) => {
                return Err(malformed(
                    "the file does not start with a backup header".to_owned(),
                ));
            }
            (Some(h), Line::End { records: said }) => {
                if said != records {
                    return Err(malformed(format!(
                        "the end line says {said} records, the file holds {records}"
                    )));
                }
                text.clear();
                let more = input
                    .read_line(&mut text)
                    .map_err(|e| BackupError::Io(format!("cannot read the backup: {e}")))?;
                if more != 0 {
                    return Err(BackupError::Malformed {
                        line: number + 1,
                        reason: "there is more after the end line".to_owned(),
                    });
                }
                return Ok(h.clone());
            }
            (Some(_), Line::Header(_)) => {
                return Err(malformed("a second header".to_owned()));
            }
            (Some(_), line) => {
                if let Some(item) = line.item().map_err(malformed)? {
                    records += 1;
                    visit(item)?;
                }
            }
        }
    }
}

/// Writes a backup file at `path` with `fill`, safely: `path` must not
/// exist; the file is written under a temporary name beside it (readable by
/// its owner only), read back whole to check it (a stream cut short has no
/// end line), synced, and only then given its name. Returns its header.
pub fn save(
    path: &std::path::Path,
    fill: &mut dyn FnMut(&mut (dyn Write + Send)) -> Result<(), BackupError>,
) -> Result<Header, BackupError> {
    if path.exists() {
        return Err(BackupError::Io(
            "it exists already: a backup never overwrites a file".to_owned(),
        ));
    }
    let name = path
        .file_name()
        .map_or("backup".into(), |n| n.to_string_lossy());
    let partial = path.with_file_name(format!(".{name}.partial"));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&partial)
            .map_err(|e| BackupError::Io(format!("cannot create it: {e}")))?;
        let mut writer = std::io::BufWriter::new(file);
        fill(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| BackupError::Io(format!("cannot write it: {}", e.error())))?;
        file.sync_all()
            .map_err(|e| BackupError::Io(format!("cannot write it: {e}")))?;
        let written = std::fs::File::open(&partial)
            .map_err(|e| BackupError::Io(format!("cannot read it back: {e}")))?;
        let header = read(&mut std::io::BufReader::new(written), &mut |_| Ok(()))?;
        std::fs::rename(&partial, path)
            .map_err(|e| BackupError::Io(format!("cannot name it: {e}")))?;
        Ok(header)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
