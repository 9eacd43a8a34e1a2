//! Snapshot files: atomic save, newest wins, torn temp files ignored, corruption is an error.

use quorumkv::protocol::raft::SnapshotMeta;
use quorumkv::storage::{SnapshotStore, StorageError};
use std::fs;

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn newest_wins_and_older_files_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    assert_eq!(store.load_latest().expect("load"), None);
    store.save(SnapshotMeta { index: 10, term: 1 }, b"first").expect("save");
    let path = store.save(SnapshotMeta { index: 25, term: 2 }, b"second image").expect("save");
    assert_eq!(snapshot_files(dir.path()).len(), 1, "older snapshot removed");
    assert_eq!(
        store.load_latest().expect("load"),
        Some((SnapshotMeta { index: 25, term: 2 }, b"second image".to_vec()))
    );
    let latest = store.latest_path().expect("latest").expect("some");
    assert_eq!(latest.path, path);
    assert_eq!(latest.size_bytes, fs::metadata(&path).expect("stat").len());
    // A fresh store over the same directory finds it too (restart).
    let again = SnapshotStore::open(dir.path()).expect("reopen");
    assert_eq!(again.load_latest().expect("load").map(|(m, _)| m.index), Some(25));
}

#[test]
fn a_torn_temp_file_is_ignored_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    store.save(SnapshotMeta { index: 5, term: 1 }, b"good").expect("save");
    // A crash in the middle of writing a newer snapshot leaves a partial temp file.
    let temp = dir.path().join(format!("snap-{:020}-{:020}.snap.tmp", 9, 1));
    fs::write(&temp, b"QKVSNAP\0\x01\x00").expect("write temp");
    assert_eq!(
        store.load_latest().expect("load"),
        Some((SnapshotMeta { index: 5, term: 1 }, b"good".to_vec()))
    );
    assert!(!temp.exists(), "temp file removed");
}

#[test]
fn a_corrupt_snapshot_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let path = store.save(SnapshotMeta { index: 7, term: 3 }, &[0xab; 1000]).expect("save");
    let clean = fs::read(&path).expect("read");
    for at in [0, 10, 20, 40, 500, clean.len() - 1] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        fs::write(&path, &bytes).expect("write");
        match store.load_latest() {
            Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("flip at {at}: expected corruption, got {:?}", other.map(|o| o.map(|(m, _)| m))),
        }
    }
    fs::write(&path, &clean[..clean.len() - 3]).expect("truncate");
    assert!(matches!(store.load_latest(), Err(StorageError::Corrupt { .. })));
}

// A snapshot of the local state that finishes after a newer one received from the leader must
// not delete it: the log may already be compacted up to the newer one.
#[test]
fn saving_an_older_snapshot_keeps_the_newer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    store.save(SnapshotMeta { index: 40, term: 3 }, b"received").expect("save");
    store.save(SnapshotMeta { index: 25, term: 2 }, b"local, taken earlier").expect("save");
    assert_eq!(
        store.load_latest().expect("load"),
        Some((SnapshotMeta { index: 40, term: 3 }, b"received".to_vec()))
    );
    // The next newer save clears both.
    store.save(SnapshotMeta { index: 50, term: 3 }, b"next").expect("save");
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

#[test]
fn a_streamed_image_makes_the_same_file_as_a_whole_one_and_a_failed_one_leaves_none() {
    let image: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let meta = SnapshotMeta { index: 9, term: 2 };
    let whole_dir = tempfile::tempdir().expect("tempdir");
    let whole = SnapshotStore::open(whole_dir.path()).expect("open");
    let whole_path = whole.save(meta, &image).expect("save");
    let streamed_dir = tempfile::tempdir().expect("tempdir");
    let streamed = SnapshotStore::open(streamed_dir.path()).expect("open");
    // Pieces of uneven sizes, some bigger than the writer's buffer.
    let len = streamed
        .save_streaming(meta, |file| {
            let mut rest = &image[..];
            for size in [1, 7, 2_000_000, 65_536].into_iter().cycle() {
                if rest.is_empty() {
                    return Ok(());
                }
                let (piece, after) = rest.split_at(size.min(rest.len()));
                file.write(piece)?;
                rest = after;
            }
            Ok(())
        })
        .expect("save streaming");
    assert_eq!(len, image.len() as u64);
    let streamed_path = streamed.latest_path().expect("latest").expect("some").path;
    assert_eq!(fs::read(&streamed_path).expect("read"), fs::read(&whole_path).expect("read"), "same bytes");
    assert_eq!(streamed.load_latest().expect("load"), Some((meta, image.clone())));

    // A write that fails midway leaves the older snapshot alone and no file of its own.
    let failed = streamed.save_streaming(SnapshotMeta { index: 20, term: 2 }, |file| {
        file.write(&image[..1000])?;
        Err(StorageError::BadImage("encoding failed".into()))
    });
    assert!(failed.is_err());
    assert_eq!(
        snapshot_files(streamed_dir.path()),
        vec![streamed_path.file_name().expect("name").to_string_lossy().into_owned()]
    );
    assert_eq!(streamed.load_latest().expect("load").map(|(m, _)| m), Some(meta));
}

#[test]
fn an_image_sent_from_its_file_arrives_whole_though_a_newer_snapshot_replaces_it_midway() {
    use quorumkv::protocol::snapshot_transfer::{
        AckOutcome, SnapshotReceiver, SnapshotSender, TransferConfig,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let (meta, newer) = (SnapshotMeta { index: 40, term: 3 }, SnapshotMeta { index: 90, term: 3 });
    let image: Vec<u8> = (0..(5u64 << 20) + 99).map(|i| (i * 31 % 253) as u8).collect();
    store.save(meta, &image).expect("save");
    let source = store.open_latest().expect("open").expect("a snapshot");
    let limit = 64 << 20;
    let config =
        TransferConfig { chunk_bytes: 1 << 20, resend_ticks: 3, give_up_ticks: 10, max_image_bytes: limit };
    let mut sender = SnapshotSender::new(config);
    let mut receiver = SnapshotReceiver::new(limit);
    // The leader's loop: each chunk read from the file as its order comes.
    let mut order = sender.start(2, meta, source.len(), ());
    let mut chunks = 0;
    let received = loop {
        if chunks == 2 {
            store.save(newer, b"newer image").expect("a newer snapshot, mid-transfer");
        }
        let data = source.read(order.offset, order.len).expect("read");
        let outcome = receiver.on_chunk(order.frame(1, 3, source.len(), source.crc32(), data), 3);
        chunks += 1;
        if let Some(snapshot) = outcome.complete {
            break snapshot;
        }
        match sender.on_ack(2, meta, outcome.ack.expect("an ack")) {
            AckOutcome::Send(next) => order = next,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(chunks, 6, "five whole chunks and a short one");
    assert_eq!(received.meta, meta);
    assert!(received.data == image, "the image the transfer started with, byte for byte");
    assert_eq!(sender.on_ack(2, meta, source.len()), AckOutcome::Delivered((), 0));
    drop(source);
    store.remove_released().expect("sweep");
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("snap-{:020}-{:020}.snap", newer.index, newer.term)],
        "the older image is gone once the transfer let it go"
    );
}
