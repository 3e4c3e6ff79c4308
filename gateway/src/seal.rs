//! The gateway's data key, and sealing values at rest with it.
//!
//! What the gateway must keep that is secret — a gate's enrollment data (a
//! TOTP key), the enrollment round a flow in `enrolling` shows, later the
//! sync outbox — is sealed with XChaCha20-Poly1305 under one 256-bit data
//! key before it reaches the store, so the data folder never holds it in
//! clear.
//!
//! The key is `data.key` in the data folder (64 hexadecimal characters and
//! a newline), made on the first start with mode 0600 and refused unless it
//! is a regular file the gateway's user owns that nobody else may read or
//! write; or it is given through the config (`data_key_secret: NAME`, one
//! of the config's `secrets`, 64 hexadecimal characters). It is read once at
//! start, never logged, and kept in memory that is zeroised when dropped.
//!
//! A sealed value is a version byte ([`VERSION`]), a random 24-byte nonce,
//! and the ciphertext with its 16-byte tag. The associated data names where
//! the value is stored (e.g. the tree and key), so a sealed value copied to
//! another place does not open; the version byte is authenticated too.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::config::GatewayConfig;
use crate::plugin::secrets::Secrets;
use crate::secret::Secret;

/// The key file's name in the data folder.
pub const KEY_FILE: &str = "data.key";
/// The format byte every sealed value starts with.
pub const VERSION: u8 = 1;
/// Length of the random nonce.
const NONCE: usize = 24;
/// Length of the authentication tag.
const TAG: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE + TAG;

/// Why the data key could not be had, or a value not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be created, opened or read.
    #[error("cannot use the data key {path}: {reason}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why (the OS error, and what to do).
        reason: String,
    },
    /// The key file is not a regular file.
    #[error(
        "the data key {path} is not a regular file; it must be a file of the gateway's own in \
         the data folder (or give the key with `data_key_secret` in the gateway config)"
    )]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// Someone other than the gateway's user owns the key file.
    #[error(
        "the data key {path} is owned by user {owner}, but the gateway runs as user {me}: run \
         `chown {me} {path}` (and keep it mode 600)"
    )]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The gateway's user.
        me: u32,
    },
    /// Group or others may read or write the key file.
    #[error(
        "the data key {path} is open to group or others (mode {mode:03o}); it must be the \
         gateway's alone: run `chmod 600 {path}`"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key's text is not 64 hexadecimal characters.
    #[error(
        "the data key from {origin} is not 64 hexadecimal characters (a 256-bit key); restore \
         the key the data was sealed with (a new one is made with `openssl rand -hex 32` only \
         for a new data folder: sealed enrollments do not open under another key)"
    )]
    Malformed {
        /// Where it came from (the file, or the secret's name).
        origin: String,
    },
    /// The operating system gave no randomness.
    #[error("no randomness for the data key or a nonce: {0}")]
    Random(String),
    /// A sealed value is too short or has an unknown version byte.
    #[error(
        "a stored value is not sealed in a format this gateway knows ({0}); values stored \
         before sealing, or by a newer gateway, are refused rather than misread"
    )]
    Format(String),
    /// A sealed value did not open: another key, another place, or altered.
    #[error(
        "a sealed value does not open with the data key ({origin}): sealed with another data \
         key? (restore the key it was sealed with), or altered or moved in the store"
    )]
    Open {
        /// Where the data key came from.
        origin: String,
    },
    /// The secret `data_key_secret` names could not be read.
    #[error("cannot read the secret `{name}` that `data_key_secret` names: {reason}")]
    Secret {
        /// The secret's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Encryption itself failed (a plaintext beyond the cipher's limit).
    #[error("cannot seal a value of {0} bytes")]
    Seal(usize),
}

/// The gateway's data key. Its `Debug` shows where it came from, never the
/// key; the key is zeroised when dropped.
pub struct DataKey {
    key: Zeroizing<[u8; 32]>,
    origin: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Where the gateway's data key came from at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `data.key` was made now (a new data folder).
    Created,
    /// `data.key` was read.
    File,
    /// The config's `data_key_secret`.
    Secret,
}

impl DataKey {
    /// The gateway's data key as `config` says: the secret its
    /// `data_key_secret` names (from `secrets`, the config's secrets as
    /// read), else `data.key` in its data folder (made if missing; the
    /// folder must exist).
    pub fn from_config(
        config: &GatewayConfig,
        secrets: &Secrets,
    ) -> Result<(DataKey, Source), SealError> {
        match &config.data_key_secret {
            Some(name) => {
                let value = secrets.get(name).ok_or_else(|| SealError::Secret {
                    name: name.clone(),
                    reason: "`secrets` does not define it".to_owned(),
                })?;
                Ok((DataKey::from_secret(name, value)?, Source::Secret))
            }
            None => DataKey::load_or_create(&config.data_dir).map(|(key, created)| {
                (
                    key,
                    if created {
                        Source::Created
                    } else {
                        Source::File
                    },
                )
            }),
        }
    }

    /// `data.key` in the data folder `dir`: created (32 random bytes, as
    /// hex, mode 0600) if there is none, otherwise read and checked.
    /// Returns the key and whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(DataKey, bool), SealError> {
        let path = dir.join(KEY_FILE);
        match create(&path) {
            Ok(key) => Ok((key, true)),
            Err(CreateError::Exists) => read(&path).map(|k| (k, false)),
            Err(CreateError::Other(e)) => Err(e),
        }
    }

    /// The key from a config secret `name` (64 hexadecimal characters;
    /// surrounding whitespace is ignored).
    pub fn from_secret(name: &str, value: &Secret) -> Result<DataKey, SealError> {
        parse(
            value.expose(),
            format!("the secret `{name}` (`data_key_secret`)"),
        )
    }

    /// A fresh random key kept only in memory (tests and tools: what it
    /// seals does not open in another process).
    pub fn generate() -> Result<DataKey, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(DataKey {
            key,
            origin: "a key kept in memory".to_owned(),
        })
    }

    /// Where the key came from, for messages: its file or its secret.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Seals `plaintext` for the place `aad` names (the same `aad` opens it).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ad = associated(aad);
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::Seal(plaintext.len()))?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`DataKey::seal`] sealed for `aad`. Another key, another
    /// `aad`, a changed byte or an unknown version is an error, never
    /// garbage.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(SealError::Format("empty".to_owned()));
        };
        if version != VERSION {
            return Err(SealError::Format(format!("version byte {version:#04x}")));
        }
        if rest.len() < NONCE + TAG {
            return Err(SealError::Format(format!("{} bytes", sealed.len())));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE);
        let ad = associated(aad);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &ad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open {
                origin: self.origin.clone(),
            })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // The cipher's copy of the key is zeroised when it is dropped.
        XChaCha20Poly1305::new(Key::from_slice(self.key.as_ref()))
    }
}

/// The associated data: the version byte, then the caller's place.
fn associated(aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(1 + aad.len());
    ad.push(VERSION);
    ad.extend_from_slice(aad);
    ad
}

/// 64 hexadecimal characters, surrounding whitespace ignored.
fn parse(text: &str, origin: String) -> Result<DataKey, SealError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let text = text.trim();
    if text.len() != 64 || hex::decode_to_slice(text, key.as_mut()).is_err() {
        return Err(SealError::Malformed { origin });
    }
    Ok(DataKey { key, origin })
}

enum CreateError {
    Exists,
    Other(SealError),
}

/// Makes a new key file at `path`: written whole to a temporary file
/// (O_CREAT|O_EXCL, mode 0600) and synced, then linked to `path` — which
/// fails if `path` exists — so the key file is never seen half-written, and
/// the folder synced so the key outlives a crash before anything is sealed
/// with it.
fn create(path: &Path) -> Result<DataKey, CreateError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(CreateError::Exists);
    }
    let io = |e: std::io::Error, what: &str| {
        CreateError::Other(SealError::Io {
            path: path.to_owned(),
            reason: format!("{what}: {e}"),
        })
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
    // A temporary file a crash left behind under this process id.
    let _ = std::fs::remove_file(&tmp);
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|e| CreateError::Other(SealError::Random(e.to_string())))?;
    let mut text = Zeroizing::new(hex::encode(key.as_ref()));
    text.push('\n');
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e, "cannot write a new key file"));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CreateError::Exists);
        }
        Err(e) => return Err(io(e, "cannot put the new key file in place")),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(e, "cannot sync the data folder"))?;
    Ok(DataKey {
        key,
        origin: path.display().to_string(),
    })
}

/// Reads the key file at `path`, refusing a link, a non-regular file, a
/// file another user owns, and one group or others may use; the checks are
/// made on the open file, so what is checked is what is read.
fn read(path: &Path) -> Result<DataKey, SealError> {
    let io = |e: std::io::Error| SealError::Io {
        path: path.to_owned(),
        reason: if e.raw_os_error() == Some(libc::ELOOP) {
            "it is a symbolic link; the data key must be a file of the gateway's own in the \
             data folder (or give it with `data_key_secret`)"
                .to_owned()
        } else {
            e.to_string()
        },
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(SealError::NotAFile {
            path: path.to_owned(),
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(SealError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SealError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    // 64 characters and a newline; anything much longer is not a key.
    let mut text = Zeroizing::new(String::new());
    file.take(256).read_to_string(&mut text).map_err(io)?;
    parse(&text, path.display().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_key_is_created_0600_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = DataKey::load_or_create(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(KEY_FILE);
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65, "64 hex characters and a newline");
        assert!(text.ends_with('\n'));
        assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);

        let (again, created) = DataKey::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "unchanged");
        let sealed = first.seal(b"here", b"canary").unwrap();
        assert_eq!(&*again.open(b"here", &sealed).unwrap(), b"canary");
        assert_eq!(again.origin(), path.display().to_string());
    }

    #[test]
    fn a_key_file_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        DataKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        for bits in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
            let e = DataKey::load_or_create(dir.path()).unwrap_err();
            assert!(matches!(e, SealError::Permissions { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("mode {bits:03o}"))
                    && text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        // Fixed as told, it is read again.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!DataKey::load_or_create(dir.path()).unwrap().1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(!DataKey::load_or_create(dir.path()).unwrap().1);
    }

    #[test]
    fn links_folders_and_malformed_keys_are_refused_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        // A symbolic link, even to a good key.
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        DataKey::load_or_create(&dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere").join(KEY_FILE), &path).unwrap();
        let e = DataKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(&path).unwrap();
        // A folder.
        std::fs::create_dir(&path).unwrap();
        let e = DataKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, SealError::NotAFile { .. }), "{e}");
        std::fs::remove_dir(&path).unwrap();
        // Not 64 hex characters (a truncated key): refused, left as it is.
        for text in ["", "abc\n", &"g".repeat(64), &"a".repeat(66)] {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = DataKey::load_or_create(dir.path()).unwrap_err();
            assert!(matches!(e, SealError::Malformed { .. }), "{e}");
            assert!(e.to_string().contains("64 hexadecimal"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_key_from_a_secret_is_64_hex_characters() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = DataKey::from_secret("data-key", &Secret::from(&*format!("{hex64}\n"))).unwrap();
        assert!(key.origin().contains("`data-key`"));
        let e = DataKey::from_secret("data-key", &Secret::from("not a key at all")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`data-key`") && text.contains("64 hexadecimal"),
            "{text}"
        );
        assert!(
            !text.contains("not a key at all"),
            "the value is never shown"
        );
        assert!(
            !format!("{key:?}").contains("0011"),
            "Debug never shows the key"
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let sealed = key
            .seal(b"enrollments/alice/totp", b"JBSWY3DPEHPK3PXP")
            .unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 16);
        assert_eq!(sealed[0], VERSION);
        assert!(
            !sealed.windows(8).any(|w| w == b"JBSWY3DP"),
            "no clear text in the sealed value"
        );
        assert_eq!(
            &*key.open(b"enrollments/alice/totp", &sealed).unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        // Two seals of the same value differ (a fresh nonce each time).
        assert_ne!(
            sealed,
            key.seal(b"enrollments/alice/totp", b"JBSWY3DPEHPK3PXP")
                .unwrap()
        );

        let e = other.open(b"enrollments/alice/totp", &sealed).unwrap_err();
        assert!(matches!(e, SealError::Open { .. }));
        assert!(
            e.to_string().contains("sealed with another data key?"),
            "{e}"
        );
        assert!(
            e.to_string().contains("a key kept in memory"),
            "names the key: {e}"
        );
        let e = key.open(b"enrollments/mallory/totp", &sealed).unwrap_err();
        assert!(matches!(e, SealError::Open { .. }), "another place: {e}");
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    key.open(b"enrollments/alice/totp", &bad),
                    Err(SealError::Open { .. })
                ),
                "byte {i} changed"
            );
        }
        // An unknown version, and values too short to be sealed (such as
        // data stored before sealing), are refused as such.
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert!(matches!(
            key.open(b"enrollments/alice/totp", &v2),
            Err(SealError::Format(_))
        ));
        for short in [&b""[..], b"$argon2id$v=19", &sealed[..OVERHEAD - 1]] {
            assert!(matches!(key.open(b"x", short), Err(SealError::Format(_))));
        }
        // The empty value seals and opens.
        let empty = key.seal(b"x", b"").unwrap();
        assert!(key.open(b"x", &empty).unwrap().is_empty());
    }
}
