//! Data dir: first start creates it, identity is checked on every start, one process at a time.

use quorumkv::storage::{DataDir, StorageError};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Every file under `dir` with its bytes (directories as empty entries).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for item in fs::read_dir(dir).expect("list") {
        let path = item.expect("entry").path();
        let name = path.strip_prefix(dir).expect("prefix").display().to_string();
        if path.is_dir() {
            out.insert(format!("{name}/"), Vec::new());
        } else {
            out.insert(name, fs::read(&path).expect("read"));
        }
    }
    out
}

#[test]
fn first_start_creates_the_layout_and_later_starts_accept_it() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("data");
    {
        let dir = DataDir::open(&root, "prod", 3).expect("first start");
        assert!(dir.wal_dir().is_dir() && dir.snap_dir().is_dir());
    }
    let meta = fs::read_to_string(root.join("quorumkv.meta")).expect("meta");
    assert_eq!(meta, "format_version=1\ncluster_name=prod\nmember_id=3\n");
    DataDir::open(&root, "prod", 3).expect("second start");
}

#[test]
fn a_mismatch_is_a_clear_error_and_touches_nothing() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("data");
    drop(DataDir::open(&root, "prod", 3).expect("first start"));
    fs::write(root.join("wal").join("00000000000000000001.wal"), b"log bytes").expect("write");
    let before = contents(&root);
    for (cluster, member, field) in [("prod", 4, "member_id"), ("staging", 3, "cluster_name")] {
        let err = DataDir::open(&root, cluster, member).expect_err("mismatch");
        assert!(matches!(err, StorageError::Mismatch { field: f, .. } if f == field), "{err}");
        let message = err.to_string();
        assert!(message.contains(&root.display().to_string()) && message.contains(field), "{message}");
        assert_eq!(contents(&root), before, "nothing changed");
    }
}

#[test]
fn a_foreign_non_empty_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("thesis.tex"), b"precious").expect("write");
    let err = DataDir::open(dir.path(), "prod", 1).expect_err("refused");
    assert!(matches!(err, StorageError::NotADataDir { .. }), "{err}");
    assert_eq!(contents(dir.path()).len(), 1);
}

#[test]
fn a_second_opener_is_locked_out_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = DataDir::open(dir.path(), "prod", 1).expect("first");
    let err = DataDir::open(dir.path(), "prod", 1).expect_err("second opener");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("is in use by another process"), "{err}");
    drop(first);
    DataDir::open(dir.path(), "prod", 1).expect("lock released on drop");
}
