//! A replica's data directory: its identity (cluster, member) and the lock that makes it exclusive.

use super::error::{io_err, Result, StorageError};
use super::wal::{sync_dir, write_atomically};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Version of the data dir layout written in the metadata file.
pub const FORMAT_VERSION: u32 = 1;
const META_FILE: &str = "quorumkv.meta";
const META_TEMP: &str = "quorumkv.meta.tmp";
const LOCK_FILE: &str = "LOCK";
const WAL_WITNESS: &str = "quorumkv.wal";
const WAL_WITNESS_TEMP: &str = "quorumkv.tmp";
const WAL_DIR: &str = "wal";
const SNAP_DIR: &str = "snap";
const JOINING_FILE: &str = "JOINING";
const JOINING_TEMP: &str = "JOINING.tmp";

/// An open, locked data directory of one member of one cluster.
///
/// Layout: `quorumkv.meta` (format version, cluster name, member id), `quorumkv.wal` (the WAL's
/// newest segment), `LOCK`, `wal/`, `snap/`, and `JOINING` (the members' peer addresses) while a
/// replica started to join a cluster has not yet recorded its membership.
/// Durability: when [`open`](DataDir::open) returns on a first start, the metadata file and the
/// subdirectories are on stable storage. The lock is held until the `DataDir` is dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Holds the exclusive lock on `LOCK` for as long as this value lives.
    _lock: File,
}

impl DataDir {
    /// Opens (on first start: creates) the data dir at `path` for `member_id` of `cluster_name`.
    ///
    /// Fails, changing nothing, if the dir was written for another cluster, member or format
    /// version, if it holds files but no metadata, or if another process holds its lock.
    pub fn open(path: impl AsRef<Path>, cluster_name: &str, member_id: u64) -> Result<DataDir> {
        if cluster_name.is_empty() || cluster_name.contains(['\n', '\r']) {
            return Err(StorageError::BadClusterName { name: cluster_name.to_string() });
        }
        let root = path.as_ref().to_path_buf();
        let meta_path = root.join(META_FILE);
        // Check identity before touching anything, so a wrong start leaves the dir as it was.
        let existing = match fs::read_to_string(&meta_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &meta_path)(e)),
        };
        if let Some(text) = &existing {
            check_meta(&root, text, cluster_name, member_id)?;
        } else if root.exists() {
            let leftovers = [LOCK_FILE, META_TEMP, WAL_WITNESS, WAL_WITNESS_TEMP];
            for item in fs::read_dir(&root).map_err(io_err("list", &root))? {
                let item = item.map_err(io_err("list", &root))?;
                if !item.file_name().to_str().is_some_and(|n| leftovers.contains(&n)) {
                    return Err(StorageError::NotADataDir { path: root });
                }
            }
        }
        create_dir_durably(&root)?;
        let lock = lock(&root)?;
        // Another process may have initialized the dir between the check above and the lock.
        let raced = match fs::read_to_string(&meta_path) {
            Ok(text) if existing.is_none() => Some(text),
            _ => None,
        };
        if let Some(text) = &raced {
            check_meta(&root, text, cluster_name, member_id)?;
        }
        if existing.is_none() && raced.is_none() {
            // The witness first: once the metadata names this dir, its WAL is always accounted for.
            super::wal::init_witness(&root.join(WAL_WITNESS))?;
            let text = format!(
                "format_version={FORMAT_VERSION}\ncluster_name={cluster_name}\nmember_id={member_id}\n"
            );
            write_atomically(&meta_path, &root.join(META_TEMP), &[text.as_bytes()])?;
            log::info!(
                "initialized data dir {} for member {member_id} of cluster {cluster_name:?}",
                root.display()
            );
        }
        for sub in [WAL_DIR, SNAP_DIR] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        sync_dir(&root)?;
        Ok(DataDir { root, _lock: lock })
    }

    /// The data dir itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where the write-ahead log lives.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }

    /// The file that records the WAL's newest segment (see [`Wal::open_witnessed`](super::Wal::open_witnessed)).
    pub fn wal_witness(&self) -> PathBuf {
        self.root.join(WAL_WITNESS)
    }

    /// Where snapshot files live.
    pub fn snap_dir(&self) -> PathBuf {
        self.root.join(SNAP_DIR)
    }

    /// Whether this dir belongs to a join that has not recorded a membership yet.
    pub fn is_joining(&self) -> bool {
        is_joining(&self.root)
    }

    /// Marks this dir as a join in progress with the members' peer addresses `book` (on stable
    /// storage when it returns), or with `None` clears the mark.
    pub fn set_joining(&self, book: Option<&BTreeMap<u64, String>>) -> Result<()> {
        let path = self.root.join(JOINING_FILE);
        match book {
            Some(book) => {
                let text: String = book.iter().map(|(id, addr)| format!("{id} {addr}\n")).collect();
                write_atomically(&path, &self.root.join(JOINING_TEMP), &[text.as_bytes()])
            }
            None => match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.root),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("remove", &path)(e)),
            },
        }
    }

    /// The peer addresses a join in progress was started with (empty if none are readable).
    pub fn joining_book(&self) -> BTreeMap<u64, String> {
        let text = fs::read_to_string(self.root.join(JOINING_FILE)).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (id, addr) = line.split_once(' ')?;
                Some((id.parse().ok()?, addr.to_string()))
            })
            .collect()
    }
}

/// Whether the data dir at `path` belongs to a join that has not recorded a membership yet: a
/// restart goes on joining (no bootstrap, no membership taken from `--peers`, the peer addresses
/// it joined with).
pub fn is_joining(path: &Path) -> bool {
    path.join(JOINING_FILE).exists()
}

/// Takes the exclusive lock on the dir's `LOCK` file.
fn lock(root: &Path) -> Result<File> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked { path: root.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
    }
}

/// Compares the metadata file's fields with what this process was started with.
fn check_meta(root: &Path, text: &str, cluster_name: &str, member_id: u64) -> Result<()> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .unwrap_or("")
    };
    let expected = [
        ("format_version", FORMAT_VERSION.to_string()),
        ("cluster_name", cluster_name.to_string()),
        ("member_id", member_id.to_string()),
    ];
    for (name, want) in expected {
        let found = field(name);
        if found != want {
            return Err(StorageError::Mismatch {
                path: root.to_path_buf(),
                field: name,
                expected: want,
                found: found.to_string(),
            });
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each made durable in the directory holding it: a new
/// data dir's entry in its parent is otherwise on disk only when the file system gets to it, and
/// a crash before that would drop the whole dir, its vote and log with it.
fn create_dir_durably(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|at| !at.exists()).collect();
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}
