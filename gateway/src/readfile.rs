//! Reading a file whole with a bound that holds for what is read: regular
//! files only (a FIFO or a device is refused before it is opened for
//! reading, since opening a FIFO waits for a writer), at most a limit of
//! bytes however large the file grows meanwhile. Workflows, the gateway
//! config, blocklists, plugins and TLS files are all read this way.

use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It cannot be found or opened.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// It is a folder.
    #[error("{} is a folder, not a file", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
    },
    /// It is a FIFO, a socket or a device.
    #[error("{} is not a regular file (it is {what})", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. `a FIFO`.
        what: &'static str,
    },
    /// It holds more than the limit.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

impl ReadError {
    /// What to do about it.
    pub fn help(&self) -> &'static str {
        match self {
            ReadError::Io { .. } => "check the path and its permissions",
            ReadError::Folder { .. } => "name a file, or check the folder's files",
            ReadError::NotRegular { .. } => {
                "name a regular file: it is read whole, so pipes, sockets and devices are refused"
            }
            ReadError::TooLarge { .. } => "split it, or check that it is the right file",
        }
    }
}

/// What a file that is not a regular one is, for messages.
fn what(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Reads the regular file at `path` whole, up to `limit` bytes.
///
/// Anything else is refused before it is opened for reading (opening a
/// FIFO waits for a writer; a device may never end). The file is then
/// opened non-blocking and looked at again through the handle, in case the
/// path was swapped meanwhile, and read through a reader that stops after
/// `limit` bytes: the limit holds for what is read, not for what `stat`
/// said (a file may grow while it is read).
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let check = |meta: &std::fs::Metadata| {
        if meta.is_dir() {
            Err(ReadError::Folder {
                path: path.to_owned(),
            })
        } else if !meta.is_file() {
            Err(ReadError::NotRegular {
                path: path.to_owned(),
                what: what(meta.file_type()),
            })
        } else if meta.len() > limit {
            Err(ReadError::TooLarge { limit })
        } else {
            Ok(meta.len())
        }
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let len = check(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}
