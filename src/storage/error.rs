//! What can go wrong with bytes at rest.

use crate::protocol::codec::CodecError;
use std::io;
use std::path::PathBuf;

/// An error from the storage layer: the disk, a damaged file, or a data dir that is not ours.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed; `op` says which, `path` on what.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed ("open", "write", "fsync", ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file holds bytes that are not what we wrote (bad checksum, bad frame, bad encoding).
    #[error("corrupt {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first damaged record or field.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Something the data dir recorded as written is not there (a deleted or emptied WAL segment).
    #[error("{path}: {what}; refusing to start (nothing was changed)")]
    Missing {
        /// The missing or damaged file.
        path: PathBuf,
        /// What is missing, and why starting anyway would be unsafe.
        what: String,
    },
    /// The data dir was written by another cluster, member or format version.
    #[error(
        "data dir {path} was written with {field}={found:?}, but this server runs with \
         {field}={expected:?}; refusing to start (nothing was changed)"
    )]
    Mismatch {
        /// The data dir.
        path: PathBuf,
        /// Which metadata field differs.
        field: &'static str,
        /// The value this process was started with.
        expected: String,
        /// The value recorded in the data dir.
        found: String,
    },
    /// The directory holds files but is not a quorumkv data dir.
    #[error("{path} is not empty and is not a quorumkv data dir (no quorumkv.meta); refusing to use it")]
    NotADataDir {
        /// The directory.
        path: PathBuf,
    },
    /// The cluster name cannot be recorded (empty, or more than one line).
    #[error("cluster name {name:?} must be non-empty and on one line")]
    BadClusterName {
        /// The name given.
        name: String,
    },
    /// Another process holds the data dir's lock.
    #[error("data dir {path} is in use by another process")]
    Locked {
        /// The data dir.
        path: PathBuf,
    },
    /// Appended entries would leave a hole in the log or rewrite a compacted prefix.
    #[error("log append refused: entry index {index} does not follow the log (first {first}, last {last})")]
    NotContiguous {
        /// The offending entry's index.
        index: u64,
        /// The log's first index at the time.
        first: u64,
        /// The log's last index at the time.
        last: u64,
    },
    /// A record is larger than the format allows.
    #[error("record of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The record's size.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The disk is full: the write was undone (the log ends at its last good record as before)
    /// and may be retried once there is space.
    #[error("disk full writing {path}: the write was undone; it is retried once there is space")]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// An earlier write or fsync failed; the log refuses further writes until reopened.
    #[error("write-ahead log is unusable after an earlier I/O failure; restart to recover")]
    Poisoned,
    /// A state-machine image could not be decoded.
    #[error("bad state-machine image: {0}")]
    BadImage(String),
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl StorageError {
    /// True if the disk (or a quota) had no room for what was written.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::DiskFull { .. } => true,
            StorageError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }
}

/// Shorthand for storage results.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Builds a closure that wraps an `io::Error` with the operation and path, for `map_err`.
pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { op, path, source }
}

/// True if `error` says the disk (or a quota) is full.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || error.kind() == io::ErrorKind::StorageFull
}
