//! Snapshot files: a state-machine image with the log position it stands for, written atomically.
//!
//! File layout (integers little-endian): `[magic 8][version u32][index u64][term u64][len u64]
//! [data: len bytes][crc32 u32 of everything before it]`, named `snap-{index:020}-{term:020}.snap`.

use super::error::{io_err, Result, StorageError};
use super::segment_remover::cut_and_unlink;
use crate::protocol::raft::SnapshotMeta;
use std::fs;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, Weak};

const MAGIC: [u8; 8] = *b"QKVSNAP\0";
const FORMAT_VERSION: u32 = 1;
/// Bytes before the data: magic, version, index, term, length.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
const TRAILER_BYTES: usize = 4;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";
/// What sets apart the temp name an image received from the leader is written under while it
/// arrives and until Raft takes it (`snap-{index}-{term}-received-{n}.snap.tmp`): a name of its
/// own, so a receipt never meets the temp file of a local snapshot at the same position, nor
/// another receipt of the same image still on its way to disk. Only a start removes them.
const RECEIVING_MARK: &str = "-received-";
/// An older image a transfer still read when a newer one was saved: renamed so, and cut down
/// and removed once nothing reads it (or at the next start).
const RELEASED_SUFFIX: &str = ".snap.released";

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
/// storage under its final name and [`read_latest`](SnapshotStore::read_latest) (as
/// [`load_latest`](SnapshotStore::load_latest)) will return it after a crash; a crash during
/// `save` leaves the previous snapshot in place and at most a temp file, which is removed on
/// the next load.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Files opened by [`open_latest`](SnapshotStore::open_latest) or
    /// [`adopt`](SnapshotStore::adopt) and maybe still read from, under their current names.
    /// Only the snapshotter's thread opens, saves and removes snapshots (a follower's consensus
    /// writes received images under temp names of their own), so a file is never cut down
    /// between its opening and its listing here.
    sources: Mutex<Vec<(PathBuf, Weak<fs::File>)>>,
}

impl SnapshotStore {
    /// Uses `dir` (created if missing) for snapshot files.
    pub fn open(dir: impl AsRef<Path>) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(SnapshotStore { dir, sources: Mutex::new(Vec::new()) })
    }

    /// Writes `data` as the snapshot at `meta` durably, then removes every older snapshot file.
    ///
    /// A newer file is kept: a snapshot of the local state may finish after one received from
    /// the leader at a later index, and deleting that one would leave the log compacted past
    /// the newest image (a replica that then refuses to restart).
    pub fn save(&self, meta: SnapshotMeta, data: &[u8]) -> Result<PathBuf> {
        let path = self.dir.join(file_name(meta));
        write_snapshot_file(&path, meta, data)?;
        self.remove_older(meta)?;
        Ok(path)
    }

    /// Like [`save`](Self::save), with the image written by `write` piece by piece straight to
    /// the file (never whole in memory); returns the image's length.
    pub fn save_streaming(
        &self,
        meta: SnapshotMeta,
        write: impl FnOnce(&mut SnapshotFileWriter) -> Result<()>,
    ) -> Result<u64> {
        let mut writer = SnapshotFileWriter::create_unsized(&self.dir.join(file_name(meta)), meta)?;
        write(&mut writer)?;
        let len = writer.written;
        writer.finish()?;
        self.remove_older(meta)?;
        Ok(len)
    }

    /// Where images received from the leader are written as they arrive.
    pub fn inbox(&self) -> SnapshotInbox {
        SnapshotInbox { dir: self.dir.clone(), started: 0 }
    }

    /// Makes a received image (every byte written, see [`SnapshotInbox`], and maybe
    /// [sealed](SnapshotFileWriter::seal)) the snapshot at its position, durably, as
    /// [`save`](Self::save) does, and opens it as [`open_latest`](Self::open_latest) does for
    /// whoever restores the state from it: while that lives, a newer snapshot sets the file aside
    /// uncut.
    ///
    /// The image is not read back: its checksums are the ones taken as it was written, and every
    /// later read of it is checked against them as an opened file's are.
    pub fn adopt(&self, image: SnapshotFileWriter) -> Result<SnapshotSource> {
        let source = image.finish_open()?;
        self.remove_older(source.meta)?;
        Ok(self.register(source))
    }

    /// Removes every snapshot file older than `meta`, each cut down a step at a time first.
    ///
    /// Unlinking an image of tens of MB frees its blocks in one go, and on a file system mounted
    /// with `discard` the WAL's fdatasyncs wait behind their discards: under 64 × 16 pipelined
    /// writes nearly every write over 22 ms of a one-at-a-time probe client (20 and 25 in 40 s
    /// runs) overlapped the ~20 ms of that unlink, on whichever replica was snapshotting; cut as
    /// the log's released segments are, 1 and 2 were left (`PIPE=16 LINE=22 THRESH=33554432
    /// scripts/snapshot_window_probe.sh BIN 40`).
    /// The cut adds about 5 ms per 4 MiB to the snapshotter's turn. A crash mid-cut leaves a
    /// short older file: never loaded (only the newest is, durable by now) and removed by the
    /// next snapshot.
    fn remove_older(&self, meta: SnapshotMeta) -> Result<()> {
        for old in self.list()? {
            if (old.meta.index, old.meta.term) < (meta.index, meta.term) {
                if self.set_aside_if_read(&old.path)? {
                    continue;
                }
                if let Err(e) = cut_and_unlink(&old.path, &AtomicBool::new(false)) {
                    // Cutting needs the file open for writing, unlinking only the directory: a
                    // file that cannot be cut (made read-only, say) still goes.
                    log::warn!("snapshot: cannot cut {} down before removing it: {e}", old.path.display());
                    fs::remove_file(&old.path).map_err(io_err("remove", &old.path))?;
                }
            }
        }
        Ok(())
    }

    /// The newest snapshot, its image whole in memory, checked as
    /// [`read_latest`](Self::read_latest) checks it; `None` if there is none.
    ///
    /// A newest file that fails its checks is an error, never an empty state: the log before it
    /// may already be compacted away.
    pub fn load_latest(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.read_latest(read_whole)
    }

    /// The newest snapshot, its image read a piece at a time by `decode` (given a reader of the
    /// image and its length: never the whole image in memory) and the file's checksum taken on
    /// the way; `None` if there is none. Leftover temp and set-aside files are removed.
    ///
    /// A newest file that fails its checks is an error, never an empty state (the log before it
    /// may already be compacted away): a damaged one is `Corrupt` even when `decode` took its
    /// bytes, and when `decode` fails on a file whose checksum fails too, the damage is what is
    /// reported.
    pub fn read_latest<T>(
        &self,
        decode: impl FnOnce(&mut dyn Read, u64) -> Result<T>,
    ) -> Result<Option<(SnapshotMeta, T)>> {
        self.remove_temp_files(true)?;
        self.remove_released_at_start();
        let Some(latest) = self.latest_path()? else {
            return Ok(None);
        };
        read_checked(&latest.path, Some(latest.meta), decode).map(Some)
    }

    /// The newest snapshot, checked and open to be read a piece at a time; `None` if there is
    /// none. While the returned source lives, a newer snapshot sets the file aside uncut (see
    /// [`remove_released`](Self::remove_released)), so every read returns the image it opened.
    /// Leftover temp files of local snapshots are removed (never images being received).
    pub fn open_latest(&self) -> Result<Option<SnapshotSource>> {
        self.remove_temp_files(false)?;
        let Some(latest) = self.latest_path()? else {
            return Ok(None);
        };
        self.open_source(latest.path, latest.meta).map(Some)
    }

    /// Opens and checks the snapshot file at `path`, listed as read until the source is dropped.
    fn open_source(&self, path: PathBuf, meta: SnapshotMeta) -> Result<SnapshotSource> {
        SnapshotSource::open(&path, meta).map(|source| self.register(source))
    }

    /// Lists `source` as read until it is dropped.
    fn register(&self, source: SnapshotSource) -> SnapshotSource {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.retain(|(_, file)| file.strong_count() > 0);
        sources.push((source.path.clone(), Arc::downgrade(&source.file)));
        source
    }

    /// Renames `path` out of the way if a transfer still reads it (cut down, it would lose the
    /// bytes the transfer reads from its open file); whether it did.
    fn set_aside_if_read(&self, path: &Path) -> Result<bool> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut read =
            sources.iter_mut().filter(|(held, file)| held == path && file.strong_count() > 0).peekable();
        if read.peek().is_none() {
            return Ok(false);
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(".released"); // a `.snap` name becomes one ending in RELEASED_SUFFIX
        let aside = PathBuf::from(aside);
        fs::rename(path, &aside).map_err(io_err("rename", path))?;
        for (held, _) in read {
            held.clone_from(&aside);
        }
        log::info!("snapshot: {} set aside while a transfer still reads it", path.display());
        Ok(true)
    }

    /// [`remove_released`](Self::remove_released), a failure only logged: a leftover that cannot
    /// be removed takes disk space, and must not keep the replica from starting.
    fn remove_released_at_start(&self) {
        if let Err(e) = self.remove_released() {
            log::warn!("snapshot: an image set aside for a transfer not removed: {e}");
        }
    }

    /// Cuts down and removes the older images set aside for transfers that no longer read them.
    /// The snapshotter calls it when a transfer lets an image go; a start removes them all.
    pub fn remove_released(&self) -> Result<()> {
        for item in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let item = item.map_err(io_err("list", &self.dir))?;
            if !item.file_name().to_str().is_some_and(|n| n.ends_with(RELEASED_SUFFIX)) {
                continue;
            }
            let path = item.path();
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            sources.retain(|(_, file)| file.strong_count() > 0);
            if sources.iter().any(|(held, _)| *held == path) {
                continue;
            }
            drop(sources);
            if let Err(e) = cut_and_unlink(&path, &AtomicBool::new(false)) {
                log::warn!("snapshot: cannot cut {} down before removing it: {e}", path.display());
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
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

    /// Removes unfinished snapshot files; `received_too` (at a start) those of images being
    /// received as well, which at any other time a follower's consensus may be writing.
    fn remove_temp_files(&self, received_too: bool) -> Result<()> {
        for item in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let item = item.map_err(io_err("list", &self.dir))?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else { continue };
            if name.ends_with(TEMP_SUFFIX) && (received_too || !name.contains(RECEIVING_MARK)) {
                let path = item.path();
                log::warn!("removing unfinished snapshot {}", path.display());
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }
}

/// A snapshot file's image section as [`SnapshotStore::read_latest`] hands it to its decoder:
/// at most the image's bytes, each added to the file's checksum as it is read.
struct CheckedImage {
    reader: BufReader<fs::File>,
    left: u64,
    crc: crc32fast::Hasher,
    /// The disk's error, if a read failed (the decoder sees it only as a bad image).
    failure: Option<std::io::Error>,
}

impl Read for CheckedImage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.reader.read(&mut buf[..want]) {
            Ok(n) => {
                self.crc.update(&buf[..n]);
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // The decoder gets a copy; the disk's own error (with its OS code) is reported.
                let copy = std::io::Error::new(e.kind(), e.to_string());
                self.failure = Some(e);
                Err(copy)
            }
        }
    }
}

/// How much of an image [`SnapshotSource::open`] reads at a time to check it: a transfer's chunk,
/// so each chunk a transfer reads is one step, read and checked once.
const CHECK_STEP_BYTES: u64 = crate::protocol::peer_wire::SNAPSHOT_CHUNK_BYTES as u64;

/// A snapshot file open for reading its image a piece at a time (sent to a follower chunk by
/// chunk, never whole in memory), checked whole when opened and a step at a time when read.
#[derive(Debug)]
pub struct SnapshotSource {
    file: Arc<fs::File>,
    path: PathBuf,
    meta: SnapshotMeta,
    len: u64,
    crc32: u32,
    /// The CRC-32 of each [`CHECK_STEP_BYTES`] of the image as checked at the opening, so a
    /// later read that differs (a failing disk) is an error, never a chunk sent.
    step_crcs: Vec<u32>,
}

impl SnapshotSource {
    /// Opens the snapshot file at `path`, named for `meta`, and checks it as
    /// [`SnapshotStore::load_latest`] does, reading it through once.
    fn open(path: &Path, meta: SnapshotMeta) -> Result<SnapshotSource> {
        let (file, head, len, _) = open_file(path, Some(meta))?;
        let mut data_crc = crc32fast::Hasher::new();
        let mut step_crcs = Vec::with_capacity(len.div_ceil(CHECK_STEP_BYTES) as usize);
        let mut piece = vec![0u8; CHECK_STEP_BYTES.min(len) as usize];
        let mut at = 0;
        while at < len {
            let step = &mut piece[..CHECK_STEP_BYTES.min(len - at) as usize];
            file.read_exact_at(step, HEADER_BYTES as u64 + at).map_err(io_err("read", path))?;
            data_crc.update(step);
            step_crcs.push(crc32fast::hash(step));
            at += step.len() as u64;
        }
        let mut stored = [0u8; TRAILER_BYTES];
        file.read_exact_at(&mut stored, HEADER_BYTES as u64 + len).map_err(io_err("read", path))?;
        let mut whole = crc32fast::Hasher::new();
        whole.update(&head);
        whole.combine(&data_crc);
        if whole.finalize() != u32::from_le_bytes(stored) {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: HEADER_BYTES as u64 + len,
                reason: "snapshot checksum mismatch".into(),
            });
        }
        let crc32 = data_crc.finalize();
        Ok(SnapshotSource { file: Arc::new(file), path: path.to_path_buf(), meta, len, crc32, step_crcs })
    }

    /// The log position the image stands for.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The image's length, in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC-32 of the whole image (what a receiver checks it against).
    pub fn crc32(&self) -> u32 {
        self.crc32
    }

    /// The image's bytes `[offset, offset + len)`, cut at its end; an error if they differ from
    /// what the opening checked.
    ///
    /// Reads the whole check steps the range touches (a transfer's chunks are steps), then asks
    /// the kernel to read the next step ahead, so the next chunk is seldom a wait on the disk.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = offset.min(self.len);
        let end = start.saturating_add(len as u64).min(self.len);
        if start == end {
            return Ok(Vec::new());
        }
        let first = start / CHECK_STEP_BYTES;
        let steps_end = end.div_ceil(CHECK_STEP_BYTES);
        let from = first * CHECK_STEP_BYTES;
        let to = (steps_end * CHECK_STEP_BYTES).min(self.len);
        let mut bytes = vec![0u8; (to - from) as usize];
        self.file
            .read_exact_at(&mut bytes, HEADER_BYTES as u64 + from)
            .map_err(io_err("read", &self.path))?;
        for (i, step) in bytes.chunks(CHECK_STEP_BYTES as usize).enumerate() {
            let index = first as usize + i;
            if self.step_crcs.get(index) != Some(&crc32fast::hash(step)) {
                return Err(StorageError::Corrupt {
                    path: self.path.clone(),
                    offset: HEADER_BYTES as u64 + index as u64 * CHECK_STEP_BYTES,
                    reason: "image changed since it was checked".into(),
                });
            }
        }
        if to < self.len {
            super::writeback::read_ahead(&self.file, HEADER_BYTES as u64 + to, CHECK_STEP_BYTES);
        }
        if (from, to) != (start, end) {
            bytes = bytes[(start - from) as usize..(end - from) as usize].to_vec();
        }
        Ok(bytes)
    }

    /// The image from its start as a reader, a step at a time, each step checked as
    /// [`read`](Self::read) checks it.
    pub fn reader(&self) -> SourceReader<'_> {
        SourceReader { source: self, at: 0, step: Vec::new(), used: 0 }
    }
}

/// A [`SnapshotSource`]'s image read in order (what a replica restores its state from).
pub struct SourceReader<'a> {
    source: &'a SnapshotSource,
    /// Where the next step starts in the image.
    at: u64,
    step: Vec<u8>,
    /// How much of `step` was read.
    used: usize,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.used == self.step.len() {
            if self.at >= self.source.len {
                return Ok(0);
            }
            self.step =
                self.source.read(self.at, CHECK_STEP_BYTES as usize).map_err(std::io::Error::other)?;
            self.at += self.step.len() as u64;
            self.used = 0;
        }
        let n = buf.len().min(self.step.len() - self.used);
        buf[..n].copy_from_slice(&self.step[self.used..self.used + n]);
        self.used += n;
        Ok(n)
    }
}

/// Where a follower writes the images the leader sends it, a chunk at a time, so an image is
/// never whole in memory; the snapshotter adopts a finished one ([`SnapshotStore::adopt`]) once
/// Raft took it.
#[derive(Debug)]
pub struct SnapshotInbox {
    dir: PathBuf,
    /// Images begun so far (each file's name has its number).
    started: u64,
}

impl SnapshotInbox {
    /// Starts the file for an image at `meta` of `len` bytes: under a temp name of its own until
    /// adopted, removed if the writer is dropped (or [discarded](SnapshotFileWriter::discard))
    /// first. Refused as a full disk if the file system has less room than the file and
    /// [`ROOM_LEFT_BYTES`] beside it.
    pub fn begin(&mut self, meta: SnapshotMeta, len: u64) -> Result<SnapshotFileWriter> {
        self.begin_freeing(meta, len, 0)
    }

    /// [`begin`](Self::begin), counting `freeing` bytes of files being removed (a receipt given
    /// up for this one, cut down a step at a time) as room.
    pub fn begin_freeing(
        &mut self,
        meta: SnapshotMeta,
        len: u64,
        freeing: u64,
    ) -> Result<SnapshotFileWriter> {
        self.started += 1;
        let temp = self.dir.join(format!(
            "snap-{:020}-{:020}{RECEIVING_MARK}{}{TEMP_SUFFIX}",
            meta.index, meta.term, self.started
        ));
        // An image the disk cannot hold is refused before a byte of it is written, rather than
        // after filling the disk (the log's room too). Only checked, not taken: a file of its
        // whole size would be cut down at that size however little of it came, and a failed
        // fallocate keeps what it took. Space taken by others meanwhile fails a write instead.
        let size = (HEADER_BYTES + TRAILER_BYTES) as u64 + len;
        let room = |free: &u64| free.saturating_add(freeing) >= size.saturating_add(ROOM_LEFT_BYTES);
        if let Some(free) = free_bytes(&self.dir).filter(|free| !room(free)) {
            let why = format!("an image of {size} bytes, {free} free");
            let full = std::io::Error::new(std::io::ErrorKind::StorageFull, why);
            return Err(io_err("find room in", &self.dir)(full));
        }
        SnapshotFileWriter::start(&self.dir.join(file_name(meta)), temp, meta, Some(len))
    }
}

/// Room a received image must leave on its file system: the log's next reservation ahead.
pub const ROOM_LEFT_BYTES: u64 = 4 << 20;

/// Bytes an unprivileged writer may still take on the file system of `dir`, if it says (one
/// that reports no size at all, as some network and FUSE ones do, says nothing).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` a writable statvfs for the call.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    if stat.f_blocks == 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // narrower than u64 on 32-bit targets
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Writes `data`, the image at `meta`, to `path` as a standalone snapshot file (the layout
/// above: what `quorumkv-cli snapshot save` writes and `quorumkv-server restore` reads).
///
/// Durability: when it returns `Ok` the file is complete on stable storage under `path`; before,
/// `path` is untouched (a temp file beside it is renamed over it at the end).
pub fn write_snapshot_file(path: &Path, meta: SnapshotMeta, data: &[u8]) -> Result<()> {
    let mut writer = SnapshotFileWriter::create(path, meta, data.len() as u64)?;
    writer.write(data)?;
    writer.finish()
}

/// A snapshot file being written piece by piece (a download, an image received from the leader,
/// or an image streamed from the state), with the same layout and durability as
/// [`write_snapshot_file`]: nothing is under `path` until [`finish`](Self::finish), and a writer
/// dropped unfinished removes its temp file.
pub struct SnapshotFileWriter {
    path: PathBuf,
    temp: PathBuf,
    file: BufWriter<fs::File>,
    meta: SnapshotMeta,
    /// Checksum of the image's whole check steps so far (the header's is added at the end, when
    /// it is final, and the last step's).
    hasher: crc32fast::Hasher,
    /// Checksum of the check step being written.
    step: crc32fast::Hasher,
    /// The CRC-32 of each whole [`CHECK_STEP_BYTES`] written, as [`SnapshotSource`] keeps them.
    step_crcs: Vec<u32>,
    /// The announced length, if it was known up front.
    expected: Option<u64>,
    written: u64,
    /// Where the file's writeback was last started (see [`WRITEBACK_STEP_BYTES`]).
    writeback_from: u64,
    /// A write or the seal failed (or the length was wrong): what the file holds is unknown, and
    /// it is never finished.
    failed: bool,
    /// Its bytes are complete and durable under the temp name (see [`seal`](Self::seal)).
    sealed: bool,
    finished: bool,
}

/// How many bytes of an image may sit dirty in the page cache before the writer starts their
/// writeback and waits for the step before. Left to the final fsync, a 100 MB image went to the
/// disk in one burst, and the WAL's fdatasyncs queued behind it: a small write+fdatasync loop
/// beside a 300 MB file written and fsynced saw a worst of 47-99 ms, against 4-9 ms when the
/// file was pushed out every 4 MiB (three runs each on this machine's disk). A WAL fsync still
/// waits behind the up to two steps on their way to the disk, so the step is 1 MiB: that loop's
/// p99 1.9-2.4 ms against 6.2-6.7 ms with 4 MiB steps (in a third 4 MiB run the big file took 2 s
/// and the loop ran beside a trickle), the big file written in 268-302 ms against 236-253 ms
/// (`scripts/writeback_probe.py sfr 1` and `sfr 4`).
const WRITEBACK_STEP_BYTES: u64 = 1 << 20;

/// How much of an image is gathered before it goes to the file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

impl SnapshotFileWriter {
    /// Starts the file for an image at `meta` of exactly `len` bytes.
    pub fn create(path: &Path, meta: SnapshotMeta, len: u64) -> Result<SnapshotFileWriter> {
        SnapshotFileWriter::start(path, temp_path(path), meta, Some(len))
    }

    /// Starts the file for an image at `meta` whose length is known only at the end.
    pub fn create_unsized(path: &Path, meta: SnapshotMeta) -> Result<SnapshotFileWriter> {
        SnapshotFileWriter::start(path, temp_path(path), meta, None)
    }

    fn start(
        path: &Path,
        temp: PathBuf,
        meta: SnapshotMeta,
        expected: Option<u64>,
    ) -> Result<SnapshotFileWriter> {
        // Readable too: a received image's first parts are read back before Raft takes it.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err("create", &temp))?;
        let mut writer = SnapshotFileWriter {
            path: path.to_path_buf(),
            temp,
            file: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            meta,
            hasher: crc32fast::Hasher::new(),
            step: crc32fast::Hasher::new(),
            step_crcs: Vec::new(),
            expected,
            written: 0,
            writeback_from: 0,
            failed: false,
            sealed: false,
            finished: false,
        };
        // Rewritten by `seal` when the length was not known.
        let head = header(meta, expected.unwrap_or(0));
        writer.file.write_all(&head).map_err(io_err("write", &writer.temp))?;
        Ok(writer)
    }

    /// Appends the next bytes of the image; after an error, the writer can only be dropped or
    /// [discarded](Self::discard). A [sealed](Self::seal) image takes no more.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.sealed {
            return Err(self.unusable("bytes written after the image was sealed".into()));
        }
        let written = self.write_steps(bytes);
        self.failed |= written.is_err();
        written
    }

    fn write_steps(&mut self, bytes: &[u8]) -> Result<()> {
        // A whole image in one call (a backup's) is paced like one streamed in pieces.
        for step in bytes.chunks(WRITEBACK_STEP_BYTES as usize) {
            self.file.write_all(step).map_err(io_err("write", &self.temp))?;
            self.add_to_checksums(step);
            self.written += step.len() as u64;
            let end = HEADER_BYTES as u64 + self.written;
            if end - self.writeback_from >= WRITEBACK_STEP_BYTES {
                self.file.flush().map_err(io_err("write", &self.temp))?;
                pace_writeback(self.file.get_ref(), self.writeback_from, end)
                    .map_err(io_err("write back", &self.temp))?;
                self.writeback_from = end;
            }
        }
        Ok(())
    }

    /// The log position of the image being written.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Bytes of the image written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The image's bytes written so far, read back from the file (not from memory).
    pub fn image_reader(&mut self) -> Result<impl Read + '_> {
        if let Err(e) = self.file.flush() {
            self.failed = true;
            return Err(io_err("write", &self.temp)(e));
        }
        Ok(RangeReader {
            file: self.file.get_ref(),
            at: HEADER_BYTES as u64,
            end: HEADER_BYTES as u64 + self.written,
        })
    }

    /// Gives the file up: cut down a step at a time and removed, as older images are (an unlink
    /// in one go holds up the log's fsyncs); for the snapshotter's thread.
    pub fn discard(mut self) {
        if let Err(e) = cut_and_unlink(&self.temp, &AtomicBool::new(false)) {
            log::warn!("snapshot: cannot cut {} down before removing it: {e}", self.temp.display());
            let _ = fs::remove_file(&self.temp);
        }
        self.finished = true;
    }

    /// Adds `bytes`, the image's next, to its checksums, closing each check step they complete.
    fn add_to_checksums(&mut self, mut bytes: &[u8]) {
        let mut at = self.written;
        while !bytes.is_empty() {
            let room = CHECK_STEP_BYTES - at % CHECK_STEP_BYTES;
            let (now, rest) = bytes.split_at(bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
            self.step.update(now);
            at += now.len() as u64;
            if at.is_multiple_of(CHECK_STEP_BYTES) {
                self.close_step();
            }
            bytes = rest;
        }
    }

    /// Ends the check step being written: its CRC kept, its bytes added to the image's checksum.
    fn close_step(&mut self) {
        let step = std::mem::take(&mut self.step);
        self.step_crcs.push(step.clone().finalize());
        self.hasher.combine(&step);
    }

    /// Ends the file: checksum, fsync (unless [sealed](Self::seal) already), rename into place,
    /// directory fsync. Fails (removing the temp file) if the image was not exactly the announced
    /// length.
    pub fn finish(self) -> Result<()> {
        self.finish_checked().map(drop)
    }

    /// [`finish`](Self::finish)es the file and opens it as a [`SnapshotSource`] whose checks are
    /// the checksums taken as it was written.
    fn finish_open(self) -> Result<SnapshotSource> {
        let file = self.file.get_ref().try_clone().map_err(io_err("open", &self.temp))?;
        let (path, meta, len) = (self.path.clone(), self.meta, self.written);
        let (crc32, step_crcs) = self.finish_checked()?;
        Ok(SnapshotSource { file: Arc::new(file), path, meta, len, crc32, step_crcs })
    }

    /// [`finish`](Self::finish), returning the image's CRC-32 and its check steps'.
    fn finish_checked(mut self) -> Result<(u32, Vec<u32>)> {
        self.seal()?;
        fs::rename(&self.temp, &self.path).map_err(io_err("rename", &self.temp))?;
        self.finished = true;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::wal::sync_dir(dir)?;
        }
        let step_crcs = std::mem::take(&mut self.step_crcs);
        Ok((self.hasher.clone().finalize(), step_crcs))
    }

    /// Completes the file's bytes durably under its temp name (checksum, fsync), the part of
    /// [`finish`](Self::finish) that needs room on the disk: a follower seals a received image
    /// before Raft takes it, so a disk that filled meanwhile refuses the image (the leader sends
    /// it again) instead of failing its adoption, after which the replica could only stop.
    /// Fails if the image was not exactly the announced length; after a failure the writer can
    /// only be dropped or discarded. Sealing a sealed image again does nothing.
    pub fn seal(&mut self) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        let sealed = self.write_seal();
        self.failed |= sealed.is_err();
        self.sealed = sealed.is_ok();
        sealed
    }

    /// Why the image cannot be written on or finished, at the end of what it holds.
    fn unusable(&self, reason: String) -> StorageError {
        StorageError::Corrupt { path: self.path.clone(), offset: self.written, reason }
    }

    fn write_seal(&mut self) -> Result<()> {
        if self.failed {
            return Err(self.unusable("a write of the image failed; it cannot be finished".into()));
        }
        if let Some(announced) = self.expected.filter(|&len| len != self.written) {
            return Err(self.unusable(format!("image of {} bytes, {announced} announced", self.written)));
        }
        if !self.written.is_multiple_of(CHECK_STEP_BYTES) {
            self.close_step();
        }
        let head = header(self.meta, self.written);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.combine(&self.hasher);
        self.file.write_all(&crc.finalize().to_le_bytes()).map_err(io_err("write", &self.temp))?;
        self.file.flush().map_err(io_err("write", &self.temp))?;
        let file = self.file.get_ref();
        if self.expected.is_none() {
            file.write_all_at(&head, 0).map_err(io_err("write", &self.temp))?;
        }
        file.sync_all().map_err(io_err("fsync", &self.temp))
    }
}

/// Where `path` is written before it is complete.
fn temp_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    PathBuf::from(temp)
}

/// Bytes `[at, end)` of a file, read with `pread` (the file's own position is left alone).
struct RangeReader<'a> {
    file: &'a fs::File,
    at: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.end - self.at).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Starts the writeback of `from..to` of `file` and waits for everything before `from` to be on
/// disk, so a long write reaches the disk at its pace instead of in one burst at the fsync.
/// An error fails the image: the wait took it from the file, so the final fsync would not see it.
fn pace_writeback(file: &fs::File, from: u64, to: u64) -> std::io::Result<()> {
    super::writeback::start(file, from, to);
    super::writeback::write_and_wait(file, 0, from)
}

impl Drop for SnapshotFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Reads a standalone snapshot file and checks it whole: the position it stands for and its image.
pub fn read_snapshot_file(path: &Path) -> Result<(SnapshotMeta, Vec<u8>)> {
    read_snapshot_file_with(path, read_whole)
}

/// A decoder for [`read_checked`] that keeps the image's `len` bytes as they are.
fn read_whole(image: &mut dyn Read, len: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    image.read_to_end(&mut bytes).map_err(|e| StorageError::BadImage(format!("unreadable: {e}")))?;
    Ok(bytes)
}

/// Reads a standalone snapshot file as [`SnapshotStore::read_latest`] reads the newest snapshot:
/// its image a piece at a time by `decode`, the file's checksum taken on the way.
pub fn read_snapshot_file_with<T>(
    path: &Path,
    decode: impl FnOnce(&mut dyn Read, u64) -> Result<T>,
) -> Result<(SnapshotMeta, T)> {
    read_checked(path, None, decode)
}

/// Opens the snapshot file at `path` (named for `named`, if it is a store's) and hands its image
/// to `decode` through a reader that takes the file's checksum on the way; returns the position
/// it stands for and what `decode` made of it.
///
/// A damaged file is `Corrupt` even when `decode` took its bytes, and when `decode` fails on a
/// file whose checksum fails too, the damage is what is reported.
fn read_checked<T>(
    path: &Path,
    named: Option<SnapshotMeta>,
    decode: impl FnOnce(&mut dyn Read, u64) -> Result<T>,
) -> Result<(SnapshotMeta, T)> {
    let (mut file, head, len, meta) = open_file(path, named)?;
    file.seek(SeekFrom::Start(HEADER_BYTES as u64)).map_err(io_err("seek", path))?;
    let reader = BufReader::with_capacity(CHECK_STEP_BYTES as usize, file);
    let mut image = CheckedImage { reader, left: len, crc: crc32fast::Hasher::new(), failure: None };
    image.crc.update(&head);
    let decoded = decode(&mut image, len);
    if let Some(failure) = image.failure.take() {
        return Err(StorageError::Io { op: "read", path: path.to_path_buf(), source: failure });
    }
    // What the decoder left (nothing, for an image it took whole) counts toward the checksum.
    std::io::copy(&mut image, &mut std::io::sink()).map_err(io_err("read", path))?;
    if image.left > 0 {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: HEADER_BYTES as u64 + len - image.left,
            reason: "the file ended inside its image (it shrank while read)".into(),
        });
    }
    let mut stored = [0u8; TRAILER_BYTES];
    image.reader.read_exact(&mut stored).map_err(io_err("read", path))?;
    if image.crc.finalize() != u32::from_le_bytes(stored) {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: HEADER_BYTES as u64 + len,
            reason: "snapshot checksum mismatch".into(),
        });
    }
    // A trailing byte past the checksum is refused by the header's length check at the opening.
    Ok((meta, decoded?))
}

/// The header of a snapshot file holding `len` bytes of image at `meta`.
fn header(meta: SnapshotMeta, len: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&meta.index.to_le_bytes());
    header.extend_from_slice(&meta.term.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header
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

/// Opens the snapshot file at `path` (a store's is `named` for a position) and checks its header
/// against its size and name (not its image: the caller reads that); returns it with the header,
/// the image's length and the position the header records.
fn open_file(
    path: &Path,
    named: Option<SnapshotMeta>,
) -> Result<(fs::File, [u8; HEADER_BYTES], u64, SnapshotMeta)> {
    let file = fs::File::open(path).map_err(io_err("open", path))?;
    let stat = file.metadata().map_err(io_err("stat", path))?;
    if !stat.is_file() {
        // Read in place, at offsets: a pipe would look like an empty file.
        let why = "not a regular file (a pipe or a device is not read in place; copy it to a file first)";
        return Err(StorageError::Io {
            op: "open",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        });
    }
    let size = stat.len();
    if size < (HEADER_BYTES + TRAILER_BYTES) as u64 {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("file of {size} bytes is shorter than header and checksum"),
        });
    }
    let mut head = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut head, 0).map_err(io_err("read", path))?;
    let (inside, len) = parse_header(path, &head, size)?;
    if let Some(meta) = named.filter(|&meta| meta != inside) {
        return Err(named_for(path, inside, meta));
    }
    Ok((file, head, len, inside))
}

fn named_for(path: &Path, inside: SnapshotMeta, meta: SnapshotMeta) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: 12,
        reason: format!("holds {inside:?} but is named for {meta:?}"),
    }
}

/// Checks the header `head` of a snapshot file of `file_bytes` bytes (at least a header and a
/// trailer): magic, version, and a data length that fills the file; returns position and length.
fn parse_header(path: &Path, head: &[u8], file_bytes: u64) -> Result<(SnapshotMeta, u64)> {
    let corrupt =
        |offset: u64, reason: String| StorageError::Corrupt { path: path.to_path_buf(), offset, reason };
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(word)
    };
    if head[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&head[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(corrupt(8, format!("format version {version}, expected {FORMAT_VERSION}")));
    }
    let inside = SnapshotMeta { index: u64_at(12), term: u64_at(20) };
    let len = u64_at(28);
    if len != file_bytes - (HEADER_BYTES + TRAILER_BYTES) as u64 {
        return Err(corrupt(28, format!("data length {len} does not match the file size")));
    }
    Ok((inside, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_files_round_trip_and_damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("qkv-snapfile-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("backup.qkv");
        let meta = SnapshotMeta { index: 40, term: 3 };
        write_snapshot_file(&path, meta, b"an image").expect("write");
        assert_eq!(read_snapshot_file(&path).expect("read"), (meta, b"an image".to_vec()));
        let streamed = dir.join("streamed.qkv");
        let mut writer = SnapshotFileWriter::create(&streamed, meta, 8).expect("create");
        writer.write(b"an ").expect("write");
        writer.write(b"image").expect("write");
        writer.finish().expect("finish");
        assert_eq!(fs::read(&streamed).expect("streamed"), fs::read(&path).expect("whole"), "same bytes");
        let mut short = SnapshotFileWriter::create(&dir.join("short.qkv"), meta, 8).expect("create");
        short.write(b"an").expect("write");
        assert!(short.finish().is_err(), "fewer bytes than announced");
        assert!(!dir.join("short.qkv").exists() && !dir.join("short.qkv.tmp").exists());
        let mut bytes = fs::read(&path).expect("bytes");
        bytes[HEADER_BYTES] ^= 1;
        fs::write(&path, &bytes).expect("damage");
        assert!(matches!(read_snapshot_file(&path), Err(StorageError::Corrupt { .. })));
        fs::write(&path, b"short").expect("truncate");
        assert!(matches!(read_snapshot_file(&path), Err(StorageError::Corrupt { .. })));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn an_image_longer_than_a_writeback_step_streams_intact() {
        // Pieces of odd sizes, so the writer pushes its buffer out mid-image at uneven offsets;
        // the header of an unsized image is rewritten at the end, after those pushes.
        let dir = std::env::temp_dir().join(format!("qkv-snapstep-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let store = SnapshotStore::open(&dir).expect("store");
        let image: Vec<u8> = (0..(2 * WRITEBACK_STEP_BYTES + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        let meta = SnapshotMeta { index: 9, term: 2 };
        let len = store
            .save_streaming(meta, |file| image.chunks(100_003).try_for_each(|piece| file.write(piece)))
            .expect("save");
        assert_eq!(len, image.len() as u64);
        assert_eq!(store.load_latest().expect("load"), Some((meta, image.clone())));
        // And in one piece, as a backup is saved.
        let whole = dir.join("whole.qkv");
        write_snapshot_file(&whole, meta, &image).expect("write");
        assert_eq!(read_snapshot_file(&whole).expect("read"), (meta, image));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_newer_image_removes_older_ones_of_several_cut_steps_and_a_half_cut_one_is_never_loaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let (old, new, newest) = (
            SnapshotMeta { index: 5, term: 1 },
            SnapshotMeta { index: 9, term: 2 },
            SnapshotMeta { index: 12, term: 2 },
        );
        // Over two of the remover's 4 MiB steps, so it is cut more than once before the unlink.
        let big = vec![3u8; 9 << 20];
        let old_path = store.save(old, &big).expect("save old");
        let new_path = store.save(new, b"newer").expect("save new");
        assert!(!old_path.exists(), "the older image is removed");
        assert_eq!(store.load_latest().expect("load"), Some((new, b"newer".to_vec())));
        // A crash in the middle of a cut leaves a short file under an older image's name.
        let half_cut = dir.path().join(file_name(old));
        fs::write(&half_cut, &fs::read(&new_path).expect("read")[..20]).expect("write");
        assert_eq!(
            store.load_latest().expect("load"),
            Some((new, b"newer".to_vec())),
            "only the newest is read"
        );
        store.save(newest, b"newest").expect("save newest");
        assert!(!half_cut.exists() && !new_path.exists(), "both older files removed");
        assert_eq!(store.load_latest().expect("load"), Some((newest, b"newest".to_vec())));
    }

    #[test]
    fn an_open_source_reads_its_image_in_pieces_and_outlives_a_newer_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        assert!(store.open_latest().expect("open").is_none(), "no snapshot yet");
        // Over two of the remover's 4 MiB steps and of the check's 1 MiB steps.
        let image: Vec<u8> = (0..(9u64 << 20) + 777).map(|i| (i * 13 % 251) as u8).collect();
        let (old, new, newest) = (
            SnapshotMeta { index: 5, term: 1 },
            SnapshotMeta { index: 9, term: 2 },
            SnapshotMeta { index: 12, term: 2 },
        );
        let old_path = store.save(old, &image).expect("save");
        let source = store.open_latest().expect("open").expect("a snapshot");
        assert_eq!((source.meta(), source.len()), (old, image.len() as u64));
        assert_eq!(source.crc32(), crc32fast::hash(&image), "the image's own checksum");
        let len = image.len();
        assert_eq!(source.read(0, 100).expect("read"), image[..100]);
        assert_eq!(source.read(1 << 20, 1 << 20).expect("read"), image[1 << 20..2 << 20], "a whole step");
        assert_eq!(source.read(len as u64 - 10, 100).expect("read"), image[len - 10..], "cut at the end");
        assert!(source.read(len as u64 + 5, 10).expect("read").is_empty(), "past the end: nothing");

        // A newer snapshot sets the file aside, uncut: a transfer reading it gets the same bytes.
        store.save(new, b"newer").expect("save newer");
        assert!(!old_path.exists(), "no longer under its name");
        let mut aside = old_path.clone().into_os_string();
        aside.push(".released");
        let aside = PathBuf::from(aside);
        let whole = (HEADER_BYTES + len + TRAILER_BYTES) as u64;
        assert_eq!(fs::metadata(&aside).expect("set aside").len(), whole, "not cut down");
        let middle = (4u64 << 20) + 3;
        assert_eq!(source.read(middle, 1 << 20).expect("read"), image[middle as usize..][..1 << 20]);
        assert_eq!(source.read(len as u64 - 7, 7).expect("read"), image[len - 7..]);
        store.remove_released().expect("sweep");
        assert!(aside.exists(), "kept while a transfer reads it");

        // Let go, it is cut down (not only unlinked) and removed.
        let watcher = fs::File::open(&aside).expect("open");
        drop(source);
        store.remove_released().expect("sweep");
        assert!(!aside.exists(), "removed once nothing reads it");
        assert_eq!(watcher.metadata().expect("stat").len(), 0, "cut down before its unlink");

        // An image nobody reads is cut down and removed by the next snapshot, as before.
        let new_path = dir.path().join(file_name(new));
        let watcher = fs::File::open(&new_path).expect("open");
        store.save(newest, b"newest").expect("save newest");
        assert!(!new_path.exists());
        assert_eq!(watcher.metadata().expect("stat").len(), 0, "cut down before its unlink");
    }

    #[test]
    fn a_source_refuses_an_image_damaged_before_or_after_it_was_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let meta = SnapshotMeta { index: 12, term: 2 };
        let image: Vec<u8> = (0..(3u64 << 20)).map(|i| (i % 241) as u8).collect();
        let path = store.save(meta, &image).expect("save");
        let source = store.open_latest().expect("open").expect("a snapshot");
        // A byte of the second step changes under the open file (a failing disk, say).
        let file = fs::OpenOptions::new().write(true).open(&path).expect("open for writing");
        let at = HEADER_BYTES as u64 + (1 << 20) + 17;
        file.write_all_at(&[image[(1 << 20) + 17] ^ 1], at).expect("damage");
        assert_eq!(source.read(0, 1 << 20).expect("the first step is intact"), image[..1 << 20]);
        assert!(matches!(source.read(1 << 20, 1 << 20), Err(StorageError::Corrupt { .. })), "never sent");
        assert!(matches!(source.read((1 << 20) + 100, 10), Err(StorageError::Corrupt { .. })), "nor a part");
        drop(source);
        // Opened now, the damage is found at once, as it is in a shorter file.
        assert!(matches!(store.open_latest(), Err(StorageError::Corrupt { .. })));
        file.set_len(30).expect("truncate");
        assert!(matches!(store.open_latest(), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn the_newest_image_is_read_through_a_decoder_and_checked_on_the_way() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let whole = |image: &mut dyn Read, len: u64| {
            let mut bytes = Vec::new();
            image.read_to_end(&mut bytes).map_err(|e| StorageError::BadImage(e.to_string()))?;
            assert_eq!(bytes.len() as u64, len, "exactly the image");
            Ok(bytes)
        };
        assert!(store.read_latest(whole).expect("read").is_none());
        let meta = SnapshotMeta { index: 12, term: 2 };
        let image: Vec<u8> = (0..(3u64 << 20) + 5).map(|i| (i % 239) as u8).collect();
        let path = store.save(meta, &image).expect("save");
        assert_eq!(store.read_latest(whole).expect("read"), Some((meta, image.clone())));
        // A decoder that stops early still has the rest checked, and its answer kept.
        let first = |image: &mut dyn Read, _len: u64| {
            let mut byte = [0u8; 1];
            image.read_exact(&mut byte).map_err(|e| StorageError::BadImage(e.to_string()))?;
            Ok(byte[0])
        };
        assert_eq!(store.read_latest(first).expect("read"), Some((meta, image[0])));
        // A file cut short while it is read (past what the reader had buffered) is damage too.
        let shrink = |image: &mut dyn Read, _len: u64| {
            let file = fs::OpenOptions::new().write(true).open(&path).expect("open for writing");
            file.set_len(HEADER_BYTES as u64 + (2 << 20)).expect("shrink");
            let mut byte = [0u8; 1];
            image.read_exact(&mut byte).map_err(|e| StorageError::BadImage(e.to_string()))?;
            Ok(())
        };
        assert!(matches!(store.read_latest(shrink), Err(StorageError::Corrupt { .. })));
        store.save(meta, &image).expect("save again");
        // A decoder's own refusal of an intact file is what comes back.
        let refuse = |_: &mut dyn Read, _: u64| -> Result<()> { Err(StorageError::BadImage("no".into())) };
        assert!(matches!(store.read_latest(refuse), Err(StorageError::BadImage(_))));
        // Damage past what a decoder reads, or that it reads without noticing, is found.
        let mut bytes = fs::read(&path).expect("read");
        bytes[HEADER_BYTES + (2 << 20)] ^= 1;
        fs::write(&path, &bytes).expect("damage");
        assert!(matches!(store.read_latest(whole), Err(StorageError::Corrupt { .. })));
        assert!(matches!(store.read_latest(first), Err(StorageError::Corrupt { .. })));
        assert!(matches!(store.read_latest(refuse), Err(StorageError::Corrupt { .. })), "damage first");
        fs::write(&path, &bytes[..30]).expect("truncate");
        assert!(matches!(store.read_latest(whole), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn a_start_removes_images_set_aside_for_transfers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = SnapshotMeta { index: 12, term: 2 };
        let store = SnapshotStore::open(dir.path()).expect("store");
        store.save(meta, b"kept").expect("save");
        // Left by a crash while a transfer read an older image.
        let aside = dir.path().join(format!("{}.released", file_name(SnapshotMeta { index: 9, term: 2 })));
        fs::write(&aside, b"older").expect("write");
        let restarted = SnapshotStore::open(dir.path()).expect("store");
        assert_eq!(restarted.load_latest().expect("load"), Some((meta, b"kept".to_vec())));
        assert!(!aside.exists());
    }

    #[test]
    fn names_round_trip_and_strays_are_ignored() {
        let meta = SnapshotMeta { index: 12, term: 3 };
        assert_eq!(parse_name(&file_name(meta)), Some(meta));
        assert_eq!(parse_name("snap-12-3.snap"), None);
        assert_eq!(parse_name("notes.txt"), None);
    }
}
