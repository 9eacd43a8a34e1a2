//! Snapshot files: a state-machine image with the log position it stands for, written atomically.
//!
//! File layout (integers little-endian): `[magic 8][version u32][index u64][term u64][len u64]
//! [data: len bytes][crc32 u32 of everything before it]`, named `snap-{index:020}-{term:020}.snap`.

use super::error::{io_err, Result, StorageError};
use super::wal::write_atomically;
use crate::protocol::raft::SnapshotMeta;
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 8] = *b"QKVSNAP\0";
const FORMAT_VERSION: u32 = 1;
/// Bytes before the data: magic, version, index, term, length.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
const TRAILER_BYTES: usize = 4;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot file on disk, for sending it to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
    /// The log position it stands for (from its name; checked when loaded).
    pub meta: SnapshotMeta,
    /// Its size, in bytes.
    pub size_bytes: u64,
}

/// The snapshot files of one replica, in one directory; only the newest is kept.
///
/// Durability: when [`save`](SnapshotStore::save) returns `Ok`, the new snapshot is on stable
/// storage under its final name and [`load_latest`](SnapshotStore::load_latest) will return it
/// after a crash; a crash during `save` leaves the previous snapshot in place and at most a
/// temp file, which is removed on the next load.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Uses `dir` (created if missing) for snapshot files.
    pub fn open(dir: impl AsRef<Path>) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(SnapshotStore { dir })
    }

    /// Writes `data` as the snapshot at `meta` durably, then removes every older snapshot file.
    ///
    /// A newer file is kept: a snapshot of the local state may finish after one received from
    /// the leader at a later index, and deleting that one would leave the log compacted past
    /// the newest image (a replica that then refuses to restart).
    pub fn save(&self, meta: SnapshotMeta, data: &[u8]) -> Result<PathBuf> {
        let name = file_name(meta);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&meta.index.to_le_bytes());
        header.extend_from_slice(&meta.term.to_le_bytes());
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        hasher.update(data);
        let crc = hasher.finalize();
        write_atomically(&path, &temp, &[&header, data, &crc.to_le_bytes()])?;
        for old in self.list()? {
            if (old.meta.index, old.meta.term) < (meta.index, meta.term) {
                fs::remove_file(&old.path).map_err(io_err("remove", &old.path))?;
            }
        }
        Ok(path)
    }

    /// The newest snapshot, checked; `None` if there is none. Leftover temp files are removed.
    ///
    /// A newest file that fails its checks is an error, never an empty state: the log before it
    /// may already be compacted away.
    pub fn load_latest(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.remove_temp_files()?;
        let Some(latest) = self.latest_path()? else {
            return Ok(None);
        };
        let bytes = fs::read(&latest.path).map_err(io_err("read", &latest.path))?;
        let data = check(&latest.path, latest.meta, &bytes)?;
        Ok(Some((latest.meta, data.to_vec())))
    }

    /// Where the newest snapshot file is and how big it is, without reading it.
    pub fn latest_path(&self) -> Result<Option<SnapshotFile>> {
        Ok(self.list()?.into_iter().max_by_key(|f| (f.meta.index, f.meta.term)))
    }

    fn list(&self) -> Result<Vec<SnapshotFile>> {
        let mut files = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let item = item.map_err(io_err("list", &self.dir))?;
            let path = item.path();
            let Some(meta) = item.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            let size_bytes = item.metadata().map_err(io_err("stat", &path))?.len();
            files.push(SnapshotFile { path, meta, size_bytes });
        }
        Ok(files)
    }

    fn remove_temp_files(&self) -> Result<()> {
        for item in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let item = item.map_err(io_err("list", &self.dir))?;
            if item.file_name().to_str().is_some_and(|n| n.ends_with(TEMP_SUFFIX)) {
                let path = item.path();
                log::warn!("removing unfinished snapshot {}", path.display());
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }
}

fn file_name(meta: SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}{SUFFIX}", meta.index, meta.term)
}

fn parse_name(name: &str) -> Option<SnapshotMeta> {
    let (index, term) = name.strip_prefix("snap-")?.strip_suffix(SUFFIX)?.split_once('-')?;
    let meta = SnapshotMeta { index: index.parse().ok()?, term: term.parse().ok()? };
    // Only names this store writes count, so a stray file cannot shadow the real one.
    (file_name(meta) == name).then_some(meta)
}

/// Checks a whole snapshot file and returns its data.
fn check<'a>(path: &Path, meta: SnapshotMeta, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(corrupt(0, format!("file of {} bytes is shorter than header and checksum", bytes.len())));
    }
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    if bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
    }
    let crc_at = bytes.len() - TRAILER_BYTES;
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[crc_at..]);
    if crc32fast::hash(&bytes[..crc_at]) != u32::from_le_bytes(stored) {
        return Err(corrupt(crc_at, "snapshot checksum mismatch".into()));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(corrupt(8, format!("format version {version}, expected {FORMAT_VERSION}")));
    }
    let inside = SnapshotMeta { index: u64_at(12), term: u64_at(20) };
    if inside != meta {
        return Err(corrupt(12, format!("holds {inside:?} but is named for {meta:?}")));
    }
    let len = u64_at(28);
    if len != (crc_at - HEADER_BYTES) as u64 {
        return Err(corrupt(28, format!("data length {len} does not match the file size")));
    }
    Ok(&bytes[HEADER_BYTES..crc_at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strays_are_ignored() {
        let meta = SnapshotMeta { index: 12, term: 3 };
        assert_eq!(parse_name(&file_name(meta)), Some(meta));
        assert_eq!(parse_name("snap-12-3.snap"), None);
        assert_eq!(parse_name("notes.txt"), None);
    }
}
