//! Initializing a data dir from a backup file, as a member of a new cluster that starts with the
//! backed-up state (`quorumkv-server restore`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::{io_err, StorageError};
use super::snapshot_file::read_snapshot_file_with;
use super::wal::sync_dir;
use super::{DataDir, SnapshotStore, StateMachine, Wal, WalOptions};
use crate::protocol::raft::{HardState, Membership, NodeId, SnapshotMeta};

/// Why a data dir was not restored (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a valid snapshot.
    #[error("{path}: not a valid snapshot file: {why}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The data dir already holds something.
    #[error("{path}: the data dir is not empty; restore only initializes a new one")]
    NotEmpty {
        /// The data dir.
        path: PathBuf,
    },
    /// The arguments do not make a member of a cluster.
    #[error("{0}")]
    Config(String),
    /// Writing the new data dir failed (what was written is removed).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a restore wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The log position the state stands for (the new cluster's log starts after it).
    pub meta: SnapshotMeta,
    /// Keys in the state.
    pub keys: u64,
    /// The state's digest, as INFO's `state_digest` shows it.
    pub digest: u64,
}

/// Initializes `data_dir` (missing or empty) as member `member_id` of a new cluster
/// `cluster_name` of `peers` (id to peer address), holding the state of the snapshot `file`.
///
/// The state keeps its keys, versions, expiries and sessions; its membership becomes `peers`.
/// Every member of the new cluster is restored from the same file, each with its own id. The dir
/// is built beside its final path and renamed into place once durable, so a failed or
/// interrupted restore never leaves a half-made data dir under that name.
pub fn restore_data_dir(
    file: &Path,
    data_dir: &Path,
    cluster_name: &str,
    member_id: NodeId,
    peers: &BTreeMap<NodeId, String>,
) -> Result<Restored, RestoreError> {
    let bad = |why: String| RestoreError::BadFile { path: file.to_path_buf(), why };
    // Decoded as it is read, and written back as it is encoded: the image is never whole in memory.
    let (meta, mut state) =
        read_snapshot_file_with(file, StateMachine::restore_from).map_err(|e| bad(e.to_string()))?;
    if meta.index == 0 {
        return Err(bad("the header says index 0: an image of nothing".to_string()));
    }
    state.check_taken_at(meta.index).map_err(bad)?;
    if !peers.contains_key(&member_id) {
        return Err(RestoreError::Config(format!("--peers does not list this member (id {member_id})")));
    }
    if fs::read_dir(data_dir).is_ok_and(|mut items| items.next().is_some()) || data_dir.is_file() {
        return Err(RestoreError::NotEmpty { path: data_dir.to_path_buf() });
    }
    state.replace_membership(Membership::from_peers(peers));

    let (data_dir, building) = building_path(data_dir)?;
    if building.exists() {
        // Left by an interrupted restore of this same dir: never a live data dir (it has no lock holder).
        fs::remove_dir_all(&building).map_err(io_err("remove", &building))?;
    }
    let written = write_dir(&building, cluster_name, member_id, meta, &state).and_then(|()| {
        if data_dir.exists() {
            fs::remove_dir(&data_dir).map_err(io_err("remove", &data_dir))?;
        }
        fs::rename(&building, &data_dir).map_err(io_err("rename", &building))
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&building);
        return Err(e.into());
    }
    // The rename made durable: `q` is in the current directory.
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(parent)?;
    Ok(Restored { meta, keys: state.engine().len() as u64, digest: state.engine().digest() })
}

/// The data dir's path by its name (`q/` as `q`, `.` as the directory it is), and where it is
/// built: a sibling named after it. The path as given plus a suffix would be inside it for `q/`.
fn building_path(data_dir: &Path) -> Result<(PathBuf, PathBuf), RestoreError> {
    let named = if data_dir.file_name().is_some() {
        data_dir.to_path_buf()
    } else {
        fs::canonicalize(data_dir).map_err(io_err("resolve", data_dir))?
    };
    let Some(name) = named.file_name() else {
        return Err(RestoreError::Config(format!(
            "{}: not a directory a data dir can be",
            data_dir.display()
        )));
    };
    let mut building = name.to_owned();
    building.push(".restoring");
    let building = named.with_file_name(building);
    Ok((named, building))
}

/// A data dir at `root` whose log is empty after a snapshot of `state` at `meta`.
fn write_dir(
    root: &Path,
    cluster_name: &str,
    member_id: NodeId,
    meta: SnapshotMeta,
    state: &StateMachine,
) -> Result<(), StorageError> {
    let dir = DataDir::open(root, cluster_name, member_id)?;
    SnapshotStore::open(dir.snap_dir())?
        .save_streaming(meta, |file| state.write_image(&mut |bytes| file.write(bytes)))?;
    let (mut wal, _) = Wal::open_witnessed(dir.wal_dir(), WalOptions::default(), Some(&dir.wal_witness()))?;
    wal.compact(meta)?;
    wal.append(Some(HardState { term: meta.term, vote: 0, commit: meta.index }), &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::{Command, Proposal};

    /// A snapshot file in `dir` of a state holding `k`, and the state's digest.
    fn backup(dir: &Path) -> (PathBuf, u64) {
        let mut state = StateMachine::default();
        let append = Command::Append { key: b"k".to_vec(), value: b"v".to_vec() };
        state.apply(1, &Proposal { request_id: 1, session: None, command: append });
        let meta = SnapshotMeta { index: 1, term: 1 };
        let image = state.snapshot().expect("image");
        let path = SnapshotStore::open(dir).expect("store").save(meta, &image).expect("save");
        (path, state.engine().digest())
    }

    // `--data-dir q/` (as shell completion writes it) is restored as `q`, built beside it: the
    // path plus a suffix, `q/.restoring`, was inside the new dir, which then could not be moved
    // into place, and left it holding a stray dir no server would start on.
    #[test]
    fn a_data_dir_given_with_a_trailing_slash_is_restored_in_place() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (file, digest) = backup(&tmp.path().join("backup"));
        let peers: BTreeMap<NodeId, String> = [(1, "127.0.0.1:7380".to_string())].into();
        for (name, given) in [("empty", "empty/"), ("missing", "missing/")] {
            if name == "empty" {
                fs::create_dir(tmp.path().join(name)).expect("mkdir");
            }
            let given = PathBuf::from(format!("{}/{given}", tmp.path().display()));
            let restored = restore_data_dir(&file, &given, "c", 1, &peers).expect("restored");
            assert_eq!(restored.digest, digest);
            let mut left: Vec<String> = fs::read_dir(tmp.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert!(!left.iter().any(|n| n.ends_with(".restoring")), "{left:?}");
            assert!(!tmp.path().join(name).join(".restoring").exists());
            DataDir::open(tmp.path().join(name), "c", 1).expect("a data dir a server starts on");
        }
    }
}
