//! Snapshot files: atomic save, newest wins, torn temp files ignored, corruption is an error.

use quorumkv::protocol::raft::SnapshotMeta;
use quorumkv::storage::{SnapshotStore, StorageError};
use std::fs;
use std::io::Write;

#[path = "common/small_disk.rs"]
mod small_disk;
use small_disk::SmallDisk;

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
    let mut receiver = SnapshotReceiver::new(config);
    // The follower writes what arrives into a file of its own store, as the replica does.
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let follower = SnapshotStore::open(follower_dir.path()).expect("open");
    let mut inbox = follower.inbox();
    let mut file = None;
    // The leader's loop: each chunk read from the file as its order comes.
    let mut order = sender.start(2, meta, source.len(), ());
    let mut chunks = 0;
    loop {
        if chunks == 2 {
            store.save(newer, b"newer image").expect("a newer snapshot, mid-transfer");
        }
        let data = source.read(order.offset, order.len).expect("read");
        let outcome = receiver.on_chunk(order.frame(1, 3, source.len(), source.crc32(), data), 3);
        chunks += 1;
        if let Some(start) = outcome.start {
            file = Some(inbox.begin(start.meta, start.total_bytes).expect("begin"));
        }
        file.as_mut().expect("a file").write(&outcome.append).expect("write");
        if outcome.complete.is_some() {
            assert_eq!(outcome.complete, Some(meta));
            break;
        }
        match sender.on_ack(2, meta, outcome.ack.expect("an ack")) {
            AckOutcome::Send(next) => order = next,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(chunks, 6, "five whole chunks and a short one");
    // Read back from the file (the replica reads the image's membership so before Raft takes it).
    let mut written = Vec::new();
    let file_ref = file.as_mut().expect("the file");
    std::io::Read::read_to_end(&mut file_ref.image_reader().expect("reader"), &mut written).expect("read");
    assert!(written == image, "read back as written");
    // Whole but not yet taken: under a temp name a start removes, never as a snapshot.
    assert!(follower.latest_path().expect("list").is_none());
    assert_eq!(
        snapshot_files(follower_dir.path()),
        vec![format!("snap-{:020}-{:020}-received-1.snap.tmp", 40, 3)]
    );
    let adopted = follower.adopt(file.take().expect("the file")).expect("adopt");
    assert_eq!(follower.latest_path().expect("list").map(|f| f.meta), Some(meta));
    assert_eq!(follower.load_latest().expect("load").map(|(m, _)| m), Some(meta));
    // A newer snapshot saved while the applier still restores from it leaves its bytes alone.
    follower.save(newer, b"newer image").expect("a newer snapshot, mid-restore");
    let mut restored = Vec::new();
    std::io::Read::read_to_end(&mut adopted.reader(), &mut restored).expect("read back");
    assert!(restored == image, "the image the transfer started with, byte for byte");
    drop(adopted);
    follower.remove_released().expect("sweep");
    assert_eq!(snapshot_files(follower_dir.path()), vec![format!("snap-{:020}-{:020}.snap", 90, 3)]);
    assert_eq!(sender.on_ack(2, meta, source.len()), AckOutcome::Delivered((), 0));
    drop(source);
    store.remove_released().expect("sweep");
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("snap-{:020}-{:020}.snap", newer.index, newer.term)],
        "the older image is gone once the transfer let it go"
    );
}

#[test]
fn received_images_keep_their_own_files_until_taken_and_a_crash_leftover_goes_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let mut inbox = store.inbox();
    let meta = SnapshotMeta { index: 12, term: 2 };
    let mut refused = inbox.begin(meta, 8).expect("begin");
    refused.write(b"12345678").expect("write");
    assert_eq!(snapshot_files(dir.path()).len(), 1, "being received");
    drop(refused);
    assert!(snapshot_files(dir.path()).is_empty(), "dropped with its writer");
    // The same image received again while the first receipt waits to be saved: two files, and
    // the first is saved whole (one name for both, the second would have emptied it).
    let mut first = inbox.begin(meta, 8).expect("begin");
    first.write(b"12345678").expect("write");
    drop(first.image_reader().expect("flushed to the file"));
    let mut second = inbox.begin(meta, 8).expect("begin");
    second.write(b"1234").expect("write");
    // A leader's opening of its newest image (none here) leaves images being received alone.
    assert!(store.open_latest().expect("open").is_none());
    assert_eq!(snapshot_files(dir.path()).len(), 2);
    second.discard();
    store.adopt(first).expect("adopt");
    assert_eq!(store.load_latest().expect("load"), Some((meta, b"12345678".to_vec())));
    assert_eq!(snapshot_files(dir.path()), vec![format!("snap-{:020}-{:020}.snap", 12, 2)]);
    // A short image is refused at adoption, and the snapshot in place stays.
    let newer = SnapshotMeta { index: 20, term: 2 };
    let mut short = inbox.begin(newer, 8).expect("begin");
    short.write(b"1234").expect("write");
    assert!(store.adopt(short).is_err());
    assert_eq!(snapshot_files(dir.path()), vec![format!("snap-{:020}-{:020}.snap", 12, 2)]);
    // What a crash left mid-transfer is removed by the next start's load.
    let leftover = inbox.begin(newer, 8).expect("begin");
    std::mem::forget(leftover);
    assert_eq!(snapshot_files(dir.path()).len(), 2);
    assert_eq!(store.load_latest().expect("load").map(|(m, _)| m), Some(meta));
    assert_eq!(snapshot_files(dir.path()), vec![format!("snap-{:020}-{:020}.snap", 12, 2)]);
}

#[test]
fn an_adopted_image_is_checked_by_the_checksums_taken_as_it_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let step = quorumkv::protocol::peer_wire::SNAPSHOT_CHUNK_BYTES;
    // Two and a half check steps, written in pieces that straddle the steps' ends.
    let image: Vec<u8> = (0..step * 5 / 2).map(|i| (i * 7 + i / 251) as u8).collect();
    let meta = SnapshotMeta { index: 30, term: 4 };
    let mut file = store.inbox().begin(meta, image.len() as u64).expect("begin");
    for piece in image.chunks(300_007) {
        file.write(piece).expect("write");
    }
    let adopted = store.adopt(file).expect("adopt");
    assert_eq!(adopted.len(), image.len() as u64);
    assert_eq!(adopted.crc32(), crc32fast::hash(&image), "the image's CRC, as the sender announces it");
    let opened = store.open_latest().expect("open").expect("a snapshot");
    assert_eq!(opened.crc32(), adopted.crc32(), "as a leader's opening reads it from the file");
    let mut restored = Vec::new();
    std::io::Read::read_to_end(&mut adopted.reader(), &mut restored).expect("read");
    assert!(restored == image, "read whole through the steps' checks");
    // A byte changed on the disk after adoption: the read of its step fails, the others pass.
    let path = store.latest_path().expect("list").expect("the file").path;
    let on_disk = fs::OpenOptions::new().write(true).open(&path).expect("open for writing");
    let header_bytes = fs::metadata(&path).expect("stat").len() - image.len() as u64 - 4;
    let changed = step + step / 2;
    std::os::unix::fs::FileExt::write_all_at(&on_disk, &[image[changed] ^ 1], header_bytes + changed as u64)
        .expect("change a byte");
    assert_eq!(adopted.read(0, step).expect("the first step is intact"), image[..step]);
    assert!(matches!(adopted.read(step as u64, 10), Err(StorageError::Corrupt { .. })), "the changed step");
    assert_eq!(adopted.read(2 * step as u64, step).expect("the last, short step"), image[2 * step..]);
    // An image of whole steps only, and an empty one, read back as an opening reads them.
    for (index, len) in [(40, 2 * step), (50, 0)] {
        let meta = SnapshotMeta { index, term: 4 };
        let image = &image[..len];
        let mut file = store.inbox().begin(meta, len as u64).expect("begin");
        file.write(image).expect("write");
        let adopted = store.adopt(file).expect("adopt");
        assert_eq!(adopted.crc32(), crc32fast::hash(image), "{len} bytes");
        let mut restored = Vec::new();
        std::io::Read::read_to_end(&mut adopted.reader(), &mut restored).expect("read");
        assert!(restored == image, "{len} bytes read whole");
        let opened = store.open_latest().expect("open").expect("a snapshot");
        assert_eq!((opened.meta(), opened.crc32()), (meta, adopted.crc32()), "{len} bytes");
    }
}

#[test]
fn a_received_image_larger_than_the_free_space_is_refused_before_a_byte_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let meta = SnapshotMeta { index: 7, term: 1 };
    // An exbibyte: more than any disk has free.
    let refused = store.inbox().begin(meta, 1 << 60).err().expect("no room for an exbibyte");
    assert!(refused.is_disk_full(), "{refused}");
    assert!(refused.to_string().contains("free"), "says what was wanted and what is free: {refused}");
    assert!(snapshot_files(dir.path()).is_empty(), "no file begun");
    // One that fits begins, its file growing only as the image comes.
    let mut file = store.inbox().begin(meta, 3 << 20).expect("begin");
    file.write(&[7; 1000]).expect("write");
    drop(file.image_reader().expect("flushed"));
    let temp = dir.path().join(&snapshot_files(dir.path())[0]);
    assert_eq!(fs::metadata(&temp).expect("stat").len(), 36 + 1000, "header and what came");
}

#[test]
fn a_received_image_that_meets_a_full_disk_at_its_seal_is_refused_and_the_next_one_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::mount(dir.path(), "8m");
    let store = SnapshotStore::open(dir.path()).expect("open");
    let meta = SnapshotMeta { index: 9, term: 2 };
    // Header (36 bytes) and image end on a page boundary: the checksum after them needs a page
    // of its own.
    let image: Vec<u8> = (0..(1 << 20) - 36).map(|i| (i % 251) as u8).collect();
    let mut file = store.inbox().begin(meta, image.len() as u64).expect("room for it at the start");
    file.write(&image).expect("write");
    drop(file.image_reader().expect("every byte of the image in the file"));
    // Others take the rest of the disk meanwhile.
    let mut filler = fs::File::create(dir.path().join("filler")).expect("create the filler");
    let block = vec![0u8; 64 << 10];
    while let Ok(1..) = filler.write(&block) {}
    let refused = file.seal().expect_err("no room for the checksum");
    assert!(refused.is_disk_full(), "{refused}");
    assert!(store.adopt(file).is_err(), "an image whose seal failed is never adopted");
    assert_eq!(snapshot_files(dir.path()), vec!["filler".to_string()], "its file removed, no snapshot");
    // Room again: the image sent again is sealed, takes no more bytes, and is adopted.
    disk.grow("16m");
    let mut file = store.inbox().begin(meta, image.len() as u64).expect("begin");
    file.write(&image).expect("write");
    file.seal().expect("sealed");
    file.seal().expect("sealing again does nothing");
    assert!(file.write(&[1]).is_err(), "a sealed image takes no more bytes");
    let adopted = store.adopt(file).expect("adopt");
    assert_eq!((adopted.meta(), adopted.crc32()), (meta, crc32fast::hash(&image)));
    let opened = store.open_latest().expect("open").expect("a snapshot");
    assert_eq!((opened.meta(), opened.crc32()), (meta, adopted.crc32()), "as a leader reads it");
}
