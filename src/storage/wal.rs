//! The write-ahead log: Raft's hard state, log entries and snapshot markers in segment files.
//!
//! Records are framed as [`super::record`] describes. Segments are named `{seq:020}.wal`, `seq`
//! counting up from 1 without gaps; each segment starts with the hard state and snapshot marker that
//! were current when it was created, so deleting older segments never loses them.

use super::error::{io_err, is_disk_full, Result, StorageError};
use super::log_tail::{check_follows, Slot, Tail};
use super::record::{self, Damage, RecordKind, HEADER_BYTES, MAX_PAYLOAD_BYTES};
use super::segment_remover::{self, SegmentRemover};
use super::segment_zeroer::{SegmentZeroer, ZeroFront};
use crate::protocol::codec;
use crate::protocol::raft::{Entry, EntryKind, HardState, SnapshotMeta};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// An entry as a record holds it; the record's kind says whether it is a membership change
/// (so records written before entries had kinds read back unchanged).
#[derive(Deserialize)]
struct StoredEntry {
    term: u64,
    index: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The same fields, borrowed, for writing.
#[derive(Serialize)]
struct StoredEntryRef<'a> {
    term: u64,
    index: u64,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

/// Bytes the record of `entry` takes in a segment (0 if it cannot be encoded).
pub(crate) fn entry_record_bytes(entry: &Entry) -> u64 {
    encode_entry(entry).map_or(0, |(_, payload)| (HEADER_BYTES + payload.len()) as u64)
}

/// An entry's record kind and payload.
fn encode_entry(entry: &Entry) -> Result<(RecordKind, Vec<u8>)> {
    let kind = match entry.kind {
        EntryKind::Normal => RecordKind::Entry,
        EntryKind::ConfChange => RecordKind::ConfEntry,
    };
    let payload = codec::encode(&StoredEntryRef { term: entry.term, index: entry.index, data: &entry.data })?;
    Ok((kind, payload))
}
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes an entry's record takes beyond its data, at most: the record's header (length,
/// checksum, kind) and the term, index and data length the payload encodes before the data.
const ENTRY_RECORD_SLACK: usize = 9 + 3 * 9;

/// Default size at which the active segment is closed and a new one started, in bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Room reserved ahead of the active segment's records, in bytes (capped at the segment size);
/// more is reserved once less than half of it is left. Appending into space already allocated
/// spares each fsync the journal commit that growing the file needs: on this project's ext4 VM a
/// 200-byte write+fdatasync took ~200 µs instead of ~300 µs. The space is then overwritten with
/// zeros ahead of the appends (see `segment_zeroer`).
const PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;

/// File name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".wal";

/// How a [`Wal`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that has reached this size is closed before the next write, in bytes.
    pub segment_bytes: u64,
    /// Whether writes are made durable (fsync); `false` is the server's `--no-fsync` mode.
    pub fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: DEFAULT_SEGMENT_BYTES, fsync: true }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// The newest hard state written (default if none).
    pub hard_state: HardState,
    /// The newest snapshot marker: the log is compacted up to here (0/0 if never).
    pub snapshot: SnapshotMeta,
    /// The entries after `snapshot.index`, consecutive and in order.
    pub entries: Vec<Entry>,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Position in the sequence of segments, from 1.
    seq: u64,
    /// The file.
    path: PathBuf,
    /// Highest entry index recorded in this segment, if it holds any entry.
    max_index: Option<u64>,
}

/// The write-ahead log of one replica: hard state, entries and snapshot markers.
///
/// Durability: with `fsync: true`, when [`append`](Wal::append) or [`compact`](Wal::compact)
/// returns `Ok`, everything it was given is on stable storage and [`Wal::open`] will recover it
/// after a crash. With `fsync: false` it is only handed to the operating system: it survives a
/// process crash but not a machine crash. After an I/O error the log refuses further writes
/// ([`StorageError::Poisoned`]); reopen it to recover what is on disk.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// The file recording the newest segment, if this log has one.
    witness: Option<PathBuf>,
    options: WalOptions,
    /// Closed segments, oldest first; their `seq`s are consecutive and end at `active.seq - 1`.
    closed: VecDeque<Segment>,
    /// The segment being written; never deleted.
    active: Segment,
    active_file: File,
    /// Where the active segment's records end, in bytes.
    active_bytes: u64,
    /// Size of the active segment file: records, then zeros reserved for the next writes.
    allocated: u64,
    /// Whether the file system reserves space for us (`fallocate`); if not, writes grow the file.
    preallocating: bool,
    /// The newest hard state written. Its term never decreases.
    hard_state: HardState,
    /// The newest snapshot marker. Its index never decreases.
    snapshot: SnapshotMeta,
    /// Terms of the entries after `snapshot`; `tail.base == snapshot.index + 1`.
    tail: Tail<()>,
    /// Set by a failed write or fsync: what is on disk is unknown until reopened.
    poisoned: bool,
    /// Makes the next fsync of the active segment fail, as a disk error would (for tests).
    #[cfg(test)]
    fail_next_sync: bool,
    /// Deletes released segments; started at the first compaction that releases one.
    remover: Option<SegmentRemover>,
    /// Zeroes the space reserved ahead of the records (only when fsyncing: it speeds fsyncs).
    zeroer: Option<SegmentZeroer>,
    /// What of the active segment the zeroer may still write.
    front: Arc<ZeroFront>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, replays it, and cuts off a torn tail.
    ///
    /// A damaged record at the very end of the last segment is a write cut short by a crash: it is
    /// truncated away with a warning. Any other damage is an error naming the file and offset (see
    /// [`record::scan`] for the rule). Replay starts a new active segment.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, WalRecovery)> {
        Wal::open_witnessed(dir, options, None)
    }

    /// Like [`open`](Wal::open), with a witness: a file outside the log's directory that records the
    /// newest segment every time one is created, so a log that lost segments (deleted, emptied, or
    /// the whole directory gone) is refused with [`StorageError::Missing`] instead of replayed as an
    /// older or empty log (which would forget acknowledged writes and let this replica vote twice
    /// in one term).
    ///
    /// The witness must exist before the first open (see [`init_witness`]); a missing witness is
    /// accepted only beside a log that has segments (a data dir from before witnesses).
    pub fn open_witnessed(
        dir: impl AsRef<Path>,
        options: WalOptions,
        witness: Option<&Path>,
    ) -> Result<(Wal, WalRecovery)> {
        let dir = dir.as_ref().to_path_buf();
        assert!(options.segment_bytes > 0, "segment_bytes must be positive");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mut segments = list_segments(&dir)?;
        // The newest segment that was complete (head durable) before this open; 0 if unknown.
        let recorded = match witness {
            Some(path) => read_witness(path, &dir, &segments)?,
            None => 0,
        };
        let mut replay = Replay::default();
        let count = segments.len();
        for i in 0..count {
            let (earlier, rest) = segments.split_at_mut(i);
            let segment = &mut rest[0];
            let witnessed = segment.seq <= recorded;
            replay.segment(earlier, segment, i + 1 == count, witnessed, options.fsync)?;
        }
        let recovery = replay.finish(&dir)?;
        // A last segment left empty (a crash right after it was created) is dropped, so the
        // segment sequence never holds an empty file in the middle.
        if let Some(last) = segments.last().filter(|s| s.seq > recorded) {
            let empty = fs::metadata(&last.path).map_err(io_err("stat", &last.path))?.len() == 0;
            if empty {
                fs::remove_file(&last.path).map_err(io_err("remove", &last.path))?;
                sync_dir(&dir)?;
                segments.pop();
            }
        }
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let mut tail = Tail::new(recovery.snapshot.index + 1);
        for entry in &recovery.entries {
            let bytes = (HEADER_BYTES + encode_entry(entry)?.1.len()) as u64;
            let put = tail.put(entry.index, Slot { term: entry.term, bytes, value: () });
            assert!(put.is_ok(), "recovered entries are consecutive");
        }
        let (active, active_file, active_bytes) = create_segment(
            &dir,
            next_seq,
            &head_records(&recovery.hard_state, &recovery.snapshot)?,
            options.fsync,
        )?;
        if let Some(path) = witness {
            write_witness(path, next_seq)?;
        }
        let mut wal = Wal {
            dir,
            witness: witness.map(Path::to_path_buf),
            options,
            closed: segments.into(),
            active,
            active_file,
            active_bytes,
            allocated: active_bytes,
            preallocating: true,
            hard_state: recovery.hard_state,
            snapshot: recovery.snapshot,
            tail,
            poisoned: false,
            #[cfg(test)]
            fail_next_sync: false,
            remover: None,
            zeroer: if options.fsync { SegmentZeroer::start() } else { None },
            front: ZeroFront::new(active_bytes),
        };
        // Segments a compaction released and a crash left half deleted.
        let leftovers = segment_remover::set_aside_files(&wal.dir)?;
        if !leftovers.is_empty() {
            wal.release(leftovers);
        }
        Ok((wal, recovery))
    }

    /// Writes a new hard state (if any) and `entries`, then makes them durable with one fsync.
    ///
    /// An entry at an index already in the log replaces that entry and every later one. The
    /// entries must be consecutive and the first must be at most `last_index() + 1` and at least
    /// `first_index()`; otherwise nothing is written and [`StorageError::NotContiguous`] returned.
    pub fn append(&mut self, hard_state: Option<HardState>, entries: &[Entry]) -> Result<()> {
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.check_usable()?;
        let (first, last) = (self.first_index(), self.last_index());
        check_follows(first, last, entries)?;
        // Room for every record at once: growing the buffer copied it again at each doubling.
        let mut buf =
            Vec::with_capacity(entries.iter().map(|e| e.data.len() + ENTRY_RECORD_SLACK).sum::<usize>() + 64);
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in entries {
            let before = buf.len();
            let (kind, payload) = encode_entry(entry)?;
            push_record(&mut buf, kind, &payload)?;
            sizes.push((buf.len() - before) as u64);
        }
        // The hard state goes last. Were it first, a write torn between it and the entries would
        // recover its commit mark over the old entries this write was replacing.
        if let Some(hs) = &hard_state {
            assert!(
                hs.term >= self.hard_state.term,
                "hard state term went back: {hs:?} after {:?}",
                self.hard_state
            );
            push_record(&mut buf, RecordKind::HardState, &codec::encode(hs)?)?;
        }
        self.write_durably(&buf)?;
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if let Some(head) = entries.first().filter(|e| e.index <= last) {
            // The entries from `head.index` on were replaced: no segment still holds a live entry
            // there, so a segment whose live entries all lie below it can go at the next compaction
            // (without this, a deposed leader's overwritten tail pinned its segments for ever).
            cap_max_index(self.closed.iter_mut().chain(std::iter::once(&mut self.active)), head.index);
        }
        for (entry, bytes) in entries.iter().zip(sizes) {
            let put = self.tail.put(entry.index, Slot { term: entry.term, bytes, value: () });
            assert!(put.is_ok(), "append was validated above");
            self.active.max_index = Some(self.active.max_index.map_or(entry.index, |m| m.max(entry.index)));
        }
        Ok(())
    }

    /// Records that the log is compacted up to `meta` (durably), then releases old segments: they
    /// are deleted on a thread of the log's own (see [`wait_for_removals`](Wal::wait_for_removals)).
    ///
    /// Entries after `meta.index` are kept if the log holds `meta.index` with `meta.term`;
    /// otherwise the whole log is discarded (Raft §7, a follower installing a snapshot). Deleted
    /// are the oldest closed segments whose live entries all lie at or below `meta.index`; when
    /// the log is discarded, a [`RecordKind::LogCleared`] record says so (replay cannot tell from
    /// what is left which entries were dropped) and every closed segment goes. The active segment
    /// never is deleted. A marker at or below the current one is ignored.
    pub fn compact(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta.index <= self.snapshot.index {
            return Ok(());
        }
        self.check_usable()?;
        let kept_suffix = self.tail.matches(meta);
        let kind = if kept_suffix { RecordKind::SnapshotMarker } else { RecordKind::LogCleared };
        let mut buf = Vec::new();
        push_record(&mut buf, kind, &codec::encode(&meta)?)?;
        self.write_durably(&buf)?;
        self.tail.compact(meta);
        self.snapshot = meta;
        assert_eq!(self.tail.base, meta.index + 1, "the tail starts right after the snapshot");
        let mut released = Vec::new();
        while let Some(oldest) = self.closed.front() {
            let covered = match oldest.max_index {
                None => true,
                Some(max) => !kept_suffix || max <= meta.index,
            };
            if !covered {
                break;
            }
            released.extend(self.closed.pop_front().map(|segment| segment.path));
        }
        if !released.is_empty() {
            self.release(released);
        }
        Ok(())
    }

    /// Deletes released segments (oldest first) off this thread.
    fn release(&mut self, paths: Vec<PathBuf>) {
        let sync = self.options.fsync;
        self.remover.get_or_insert_with(|| SegmentRemover::start(&self.dir, sync)).remove(paths);
    }

    /// Returns once the segments released by compactions so far are deleted from disk.
    pub fn wait_for_removals(&self) {
        if let Some(remover) = &self.remover {
            remover.flush();
        }
    }

    /// Bytes of log entries after the newest snapshot marker (framing included).
    pub fn log_bytes(&self) -> u64 {
        self.tail.bytes
    }

    /// Index of the last entry, or of the snapshot if the log after it is empty.
    pub fn last_index(&self) -> u64 {
        self.tail.last().unwrap_or(self.snapshot.index)
    }

    /// The lowest index the log can hold: one past the snapshot.
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// Term of the entry at `index`, or of the snapshot at `snapshot().index`; `None` if unknown.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.tail.term(index)
    }

    /// The newest hard state written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The newest snapshot marker.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// Number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    /// Writes `buf` to the active segment (rolling first if it is full) and fsyncs once.
    ///
    /// A write the disk has no room for is undone: the segment is cut back to its last good
    /// record and [`StorageError::DiskFull`] returned; the log is as before and the same write
    /// may be retried. Any other failure poisons the log.
    fn write_durably(&mut self, buf: &[u8]) -> Result<()> {
        if self.active_bytes >= self.options.segment_bytes {
            self.roll()?;
        }
        let end = self.active_bytes + buf.len() as u64;
        if self.preallocating && end.saturating_add(PREALLOCATE_BYTES / 2) > self.allocated {
            self.reserve(end)?;
        }
        self.front.claim(end);
        if let Err(e) = self.active_file.write_all_at(buf, self.active_bytes) {
            // Nothing of this write was synced, and no later write builds on it once it is cut
            // off; the next successful fsync makes the cut durable with the file's new contents.
            self.front.stop();
            if is_disk_full(&e) && self.active_file.set_len(self.active_bytes).is_ok() {
                self.allocated = self.active_bytes;
                return Err(StorageError::DiskFull { path: self.active.path.clone() });
            }
            self.poison_and_cut();
            return Err(io_err("write", &self.active.path)(e));
        }
        if self.options.fsync {
            if let Err(e) = self.sync_active() {
                // After a failed fsync the file's contents are unknown (and a retried fsync may
                // report success for lost pages), so no further write may build on it.
                self.poison_and_cut();
                return Err(io_err("fsync", &self.active.path)(e));
            }
        }
        self.active_bytes = end;
        self.allocated = self.allocated.max(end);
        Ok(())
    }

    /// Makes the active segment's new bytes durable.
    fn sync_active(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.active_file.sync_data()
    }

    /// Stops the log after a write or fsync failed, and cuts the active segment back to the
    /// bytes last made durable.
    ///
    /// Linux keeps the pages whose writeback failed in its cache, clean and readable: a restart
    /// in the same boot would replay the failed write's records from there as if on disk, and
    /// acknowledge them to a leader again. Cut off, they are gone from the cache; on the disk,
    /// whatever of them did land is harmless (a record on disk but never acknowledged).
    fn poison_and_cut(&mut self) {
        self.poisoned = true;
        // Before the cut, which a late zero would undo by writing past the new end.
        self.front.stop();
        if let Err(e) = truncate(&self.active_file, self.active_bytes, self.options.fsync) {
            log::error!(
                "{}: cannot cut the failed write off ({e}); restart only after checking the disk",
                self.active.path.display()
            );
        }
        self.allocated = self.active_bytes;
    }

    /// Allocates the active segment up to at least `end` bytes, a chunk ahead if there is room,
    /// and hands the new space to the zeroer.
    ///
    /// The new space reads back as zeros, which replay takes for the end of the log. Without
    /// room even for `end`, nothing is written and [`StorageError::DiskFull`] returned; a file
    /// system that cannot reserve space is simply written to (the file grows with each write).
    fn reserve(&mut self, end: u64) -> Result<()> {
        let from = self.allocated;
        let ahead = end.saturating_add(PREALLOCATE_BYTES).min(self.options.segment_bytes);
        // No room (or a file-size limit) for a chunk ahead: just this write is tried.
        if ahead > end && ahead > from && self.allocate_to(ahead).is_ok() {
            self.zero_ahead(from);
            return Ok(());
        }
        if end <= from {
            return Ok(());
        }
        match self.allocate_to(end) {
            Ok(()) => Ok(()),
            Err(e) if is_disk_full(&e) => Err(StorageError::DiskFull { path: self.active.path.clone() }),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.preallocating = false;
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(io_err("allocate", &self.active.path)(e))
            }
        }
    }

    /// Has the zeroer write zeros over the active segment's reserved space from `from` on.
    fn zero_ahead(&self, from: u64) {
        if let Some(zeroer) = &self.zeroer {
            zeroer.zero(&self.active.path, &self.front, from, self.allocated);
        }
    }

    /// Grows the active segment's reserved space to `target` bytes, or leaves it as it was.
    fn allocate_to(&mut self, target: u64) -> std::io::Result<()> {
        match allocate(&self.active_file, self.allocated, target - self.allocated) {
            Ok(()) => {
                self.allocated = target;
                Ok(())
            }
            Err(e) => {
                // Whatever part was reserved is given back: the file ends where it did.
                let _ = self.active_file.set_len(self.allocated);
                Err(e)
            }
        }
    }

    /// Closes the active segment and starts the next one with the current hard state and marker.
    fn roll(&mut self) -> Result<()> {
        // Before the cut below, which a late zero would undo by writing past the new end.
        self.front.stop();
        if self.allocated > self.active_bytes {
            // A closed segment ends at its last record: replay takes zeros only at the very end.
            if let Err(e) = truncate(&self.active_file, self.active_bytes, self.options.fsync) {
                self.poisoned = true;
                return Err(io_err("truncate", &self.active.path)(e));
            }
            self.allocated = self.active_bytes;
        }
        let head = head_records(&self.hard_state, &self.snapshot)?;
        let created = create_segment(&self.dir, self.active.seq + 1, &head, self.options.fsync);
        let (segment, file, bytes) = match created {
            Ok(created) => created,
            // Not named by the witness yet: the new segment file can simply go again.
            Err(StorageError::Io { source, path, .. }) if is_disk_full(&source) => {
                let _ = fs::remove_file(&path);
                return Err(StorageError::DiskFull { path });
            }
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        if let Some(path) = &self.witness {
            match write_witness(path, segment.seq) {
                Ok(()) => {}
                // The witness is replaced by rename: a failed write leaves the old one naming
                // the current active segment, so the new file can go and the log is as before.
                Err(StorageError::Io { source, .. }) if is_disk_full(&source) => {
                    let _ = fs::remove_file(&segment.path);
                    let _ = fs::remove_file(path.with_extension("tmp"));
                    return Err(StorageError::DiskFull { path: path.clone() });
                }
                Err(e) => {
                    self.poisoned = true;
                    return Err(e);
                }
            }
        }
        let old = std::mem::replace(&mut self.active, segment);
        assert_eq!(old.seq + 1, self.active.seq, "segment seqs are consecutive");
        self.closed.push_back(old);
        self.active_file = file;
        self.active_bytes = bytes;
        self.allocated = bytes;
        self.front = ZeroFront::new(bytes);
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Whoever opens the directory next writes this segment's space; no zero may follow.
        self.front.stop();
    }
}

/// Lowers the highest live index of `segments` below `overwritten_from`, where an overwrite began.
fn cap_max_index<'a>(segments: impl Iterator<Item = &'a mut Segment>, overwritten_from: u64) {
    for segment in segments {
        segment.max_index = segment.max_index.and_then(|max| match overwritten_from {
            0 | 1 => None,
            from => Some(max.min(from - 1)),
        });
    }
}

/// Frames a record, refusing payloads over the limit.
fn push_record(buf: &mut Vec<u8>, kind: RecordKind, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(StorageError::TooLarge { size_bytes: payload.len(), limit_bytes: MAX_PAYLOAD_BYTES });
    }
    record::frame(buf, kind, payload);
    Ok(())
}

/// The records every segment starts with.
fn head_records(hard_state: &HardState, snapshot: &SnapshotMeta) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    push_record(&mut buf, RecordKind::HardState, &codec::encode(hard_state)?)?;
    push_record(&mut buf, RecordKind::SnapshotMarker, &codec::encode(snapshot)?)?;
    Ok(buf)
}

/// Creates segment `seq` holding `head`, and makes its directory entry durable.
fn create_segment(dir: &Path, seq: u64, head: &[u8], fsync: bool) -> Result<(Segment, File, u64)> {
    let path = dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"));
    // Written at explicit offsets (the file may be longer than its records: space reserved ahead).
    let mut file =
        OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err("create", &path))?;
    file.write_all(head).map_err(io_err("write", &path))?;
    if fsync {
        file.sync_data().map_err(io_err("fsync", &path))?;
        sync_dir(dir)?;
    }
    Ok((Segment { seq, path, max_index: None }, file, head.len() as u64))
}

/// Whether the valid records after damage at `offset` can all belong to the write it is in, so
/// that the damage can be that write torn by a crash. A write's hard state, if it has one, is its
/// last record, and a marker is written alone: such a record with another after it means a later
/// write follows, and (with fsync) a write begins only once the one before it is synced, perhaps
/// acknowledged, so the damage is then corruption of synced bytes, not a torn write, and cutting
/// there would lose them. Writes of entries only cannot be told apart this way: damage before
/// them is still taken for a torn write. (A log written without fsync can be refused here after
/// a power loss: its replica lost writes it had acknowledged to its peers, and is better rebuilt
/// than let back in.)
fn at_most_one_write_after(buf: &[u8], offset: usize) -> bool {
    let kinds = record::kinds_after_damage(buf, offset);
    kinds.iter().rev().skip(1).all(|kind| matches!(kind, RecordKind::Entry | RecordKind::ConfEntry))
}

/// Cuts `file` to `len` bytes, durably if `fsync`.
fn truncate(file: &File, len: u64, fsync: bool) -> std::io::Result<()> {
    file.set_len(len)?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// Cuts the file at `path` to `len` bytes, durably if `fsync`.
fn truncate_at(path: &Path, len: u64, fsync: bool) -> Result<()> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_err("open", path))?;
    truncate(&file, len, fsync).map_err(io_err("truncate", path))
}

/// Reserves `len` bytes of `file` from `offset` (zeros, counted in its size).
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: the descriptor is open for writing for as long as `file` lives; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Writes `parts` to `path` so that a crash leaves the old file or the new one, never a mix: into
/// `temp` first, fsync, rename over `path`, fsync the directory.
pub(crate) fn write_atomically(path: &Path, temp: &Path, parts: &[&[u8]]) -> Result<()> {
    let mut file = File::create(temp).map_err(io_err("create", temp))?;
    for part in parts {
        file.write_all(part).map_err(io_err("write", temp))?;
    }
    file.sync_all().map_err(io_err("fsync", temp))?;
    drop(file);
    fs::rename(temp, path).map_err(io_err("rename", temp))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Creates the witness of a log that has no segment yet (a data dir's first start).
pub fn init_witness(path: &Path) -> Result<()> {
    write_witness(path, 0)
}

/// Records durably that segment `seq` exists with its head records (temp file, fsync, rename).
fn write_witness(path: &Path, seq: u64) -> Result<()> {
    write_atomically(path, &path.with_extension("tmp"), &[format!("newest_segment={seq}\n").as_bytes()])
}

/// The newest segment the witness at `path` records, checked against the segments in `dir`.
fn read_witness(path: &Path, dir: &Path, segments: &[Segment]) -> Result<u64> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !segments.is_empty() => return Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::Missing {
                path: path.to_path_buf(),
                what: format!(
                    "the record of the log's newest segment is gone and {} holds no segment",
                    dir.display()
                ),
            })
        }
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let recorded =
        text.trim().strip_prefix("newest_segment=").and_then(|n| n.parse::<u64>().ok()).ok_or_else(|| {
            StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                reason: format!("expected newest_segment=N, found {text:?}"),
            }
        })?;
    let newest = segments.last().map_or(0, |s| s.seq);
    if newest < recorded {
        return Err(StorageError::Missing {
            path: dir.join(format!("{recorded:020}{SEGMENT_SUFFIX}")),
            what: format!(
                "{} records log segment {recorded}, but the newest segment in {} is {newest}: \
                 segments were deleted, and starting from an older log would forget acknowledged \
                 writes and this replica's vote",
                path.display(),
                dir.display()
            ),
        });
    }
    Ok(recorded)
}

/// The segment files in `dir`, by seq; a gap in the seqs is an error.
fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let item = item.map_err(io_err("list", dir))?;
        let name = item.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        let path = item.path();
        let seq = stem.parse::<u64>().map_err(|_| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: "segment file name is not a number".to_string(),
        })?;
        segments.push(Segment { seq, path, max_index: None });
    }
    segments.sort_by_key(|s| s.seq);
    for pair in segments.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(StorageError::Corrupt {
                path: dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "segment {} is missing between {:?} and {:?}",
                    pair[0].seq + 1,
                    pair[0].path,
                    pair[1].path
                ),
            });
        }
    }
    Ok(segments)
}

/// Replay state while reading segments in order.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    tail: Option<Tail<Entry>>,
}

impl Replay {
    /// Reads one segment's records into the replay state, cutting a torn tail if it is the last.
    ///
    /// A `witnessed` segment was complete when recorded: it must begin with its head records (hard
    /// state, snapshot marker), so an emptied or cut-down segment is refused, not taken as new.
    fn segment(
        &mut self,
        earlier: &mut [Segment],
        segment: &mut Segment,
        is_last: bool,
        witnessed: bool,
        fsync: bool,
    ) -> Result<()> {
        let path = segment.path.clone();
        let buf = fs::read(&path).map_err(io_err("read", &path))?;
        let (records, damage) = record::scan(&buf);
        let head: Vec<RecordKind> = records.iter().take(2).map(|r| r.kind).collect();
        if witnessed && head != [RecordKind::HardState, RecordKind::SnapshotMarker] {
            return Err(StorageError::Missing {
                path,
                what: format!(
                    "log segment {} ({} bytes) lacks the hard state and snapshot marker it was \
                     created with: it was emptied or cut, and replaying it would forget \
                     acknowledged writes and this replica's vote",
                    segment.seq,
                    buf.len()
                ),
            });
        }
        match damage {
            None => {}
            Some(Damage::Corrupt { offset, reason })
                if is_last
                    && record::torn_into_reserved_space(&buf, offset)
                    && at_most_one_write_after(&buf, offset) =>
            {
                log::warn!(
                    "{}: write torn at offset {offset} ({reason}, with a zero sector it never \
                     reached); truncating {} bytes",
                    path.display(),
                    buf.len() - offset
                );
                truncate_at(&path, offset as u64, fsync)?;
            }
            Some(Damage::TornTail { offset, reason }) if is_last => {
                // Cut off either way: this segment is not the last one after this open.
                if buf[offset..].iter().all(|&b| b == 0) {
                    // Space reserved ahead of the writes (or a write that never reached it).
                    log::debug!(
                        "{}: releasing {} unused bytes at the end",
                        path.display(),
                        buf.len() - offset
                    );
                } else {
                    log::warn!(
                        "{}: torn write at offset {offset} ({reason}); truncating {} bytes",
                        path.display(),
                        buf.len() - offset
                    );
                }
                truncate_at(&path, offset as u64, fsync)?;
            }
            Some(Damage::TornTail { offset, reason } | Damage::Corrupt { offset, reason }) => {
                return Err(StorageError::Corrupt { path, offset: offset as u64, reason });
            }
        }
        for raw in records {
            let corrupt = |reason: String| StorageError::Corrupt {
                path: path.clone(),
                offset: raw.offset as u64,
                reason,
            };
            match raw.kind {
                RecordKind::HardState => {
                    self.hard_state =
                        codec::decode(raw.payload).map_err(|e| corrupt(format!("hard state: {e}")))?;
                }
                RecordKind::SnapshotMarker | RecordKind::LogCleared => {
                    let meta: SnapshotMeta =
                        codec::decode(raw.payload).map_err(|e| corrupt(format!("snapshot marker: {e}")))?;
                    if meta.index < self.snapshot.index {
                        return Err(corrupt(format!(
                            "snapshot marker {meta:?} older than {:?}",
                            self.snapshot
                        )));
                    }
                    if meta.index > self.snapshot.index {
                        if raw.kind == RecordKind::LogCleared {
                            // Nothing written before this record survives past the snapshot.
                            self.tail = None;
                        } else if let Some(tail) = self.tail.as_mut() {
                            tail.compact(meta);
                        }
                        self.snapshot = meta;
                    }
                }
                RecordKind::Entry | RecordKind::ConfEntry => {
                    let stored: StoredEntry =
                        codec::decode(raw.payload).map_err(|e| corrupt(format!("entry: {e}")))?;
                    let kind =
                        if raw.kind == RecordKind::Entry { EntryKind::Normal } else { EntryKind::ConfChange };
                    let entry =
                        Entry { term: stored.term, index: stored.index, data: stored.data.into(), kind };
                    if entry.index <= self.snapshot.index {
                        return Err(corrupt(format!(
                            "entry {} at or below snapshot {:?}",
                            entry.index, self.snapshot
                        )));
                    }
                    let index = entry.index;
                    let bytes = (HEADER_BYTES + raw.payload.len()) as u64;
                    let tail = self.tail.get_or_insert_with(|| Tail::new(index));
                    let last = tail.last();
                    if last.is_some_and(|last| index <= last) {
                        // An overwrite: what earlier records held from `index` on is dead, as in
                        // `Wal::append`, so the same segments become deletable after a restart.
                        cap_max_index(earlier.iter_mut().chain(std::iter::once(&mut *segment)), index);
                    }
                    tail.put(index, Slot { term: entry.term, bytes, value: entry })
                        .map_err(|()| corrupt(format!("entry {index} leaves a gap after {last:?}")))?;
                    segment.max_index = Some(segment.max_index.map_or(index, |m| m.max(index)));
                }
            }
        }
        Ok(())
    }

    /// Checks that the entries follow the snapshot and hands out what was recovered.
    fn finish(self, dir: &Path) -> Result<WalRecovery> {
        let mut entries = Vec::new();
        if let Some(tail) = self.tail {
            if !tail.slots.is_empty() && tail.base != self.snapshot.index + 1 {
                return Err(StorageError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "log starts at index {} but the snapshot ends at {}: a segment is missing",
                        tail.base, self.snapshot.index
                    ),
                });
            }
            entries.extend(tail.slots.into_items().map(|slot| slot.value));
        }
        Ok(WalRecovery { hard_state: self.hard_state, snapshot: self.snapshot, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("entry {index}/{term}").into_bytes().into(), ..Entry::default() }
    }

    fn small() -> WalOptions {
        WalOptions { segment_bytes: 256, fsync: false }
    }

    #[test]
    fn append_then_reopen_recovers_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hs = HardState { term: 2, vote: 1, commit: 3 };
        {
            let (mut wal, recovery) = Wal::open(dir.path(), small()).expect("open");
            assert_eq!(recovery, WalRecovery::default());
            wal.append(Some(hs), &[entry(1, 1), entry(2, 1), entry(3, 2)]).expect("append");
            assert_eq!((wal.first_index(), wal.last_index()), (1, 3));
        }
        let (wal, recovery) = Wal::open(dir.path(), small()).expect("reopen");
        assert_eq!(recovery.hard_state, hs);
        assert_eq!(recovery.entries, vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
        assert_eq!(wal.last_index(), 3);
        assert_eq!(wal.term(3), Some(2));
    }

    #[test]
    fn gaps_and_compacted_indexes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), small()).expect("open");
        assert!(matches!(
            wal.append(None, &[entry(2, 1)]),
            Err(StorageError::NotContiguous { index: 2, .. })
        ));
        wal.append(None, &[entry(1, 1), entry(2, 1)]).expect("append");
        assert!(wal.append(None, &[entry(3, 1), entry(5, 1)]).is_err());
        wal.compact(SnapshotMeta { index: 2, term: 1 }).expect("compact");
        assert!(matches!(wal.append(None, &[entry(2, 2)]), Err(StorageError::NotContiguous { .. })));
        wal.append(None, &[entry(3, 2)]).expect("append after snapshot");
    }

    #[test]
    fn snapshot_with_other_term_discards_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), small()).expect("open");
        wal.append(None, &(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>()).expect("append");
        wal.compact(SnapshotMeta { index: 3, term: 2 }).expect("compact");
        assert_eq!(wal.last_index(), 3);
        drop(wal);
        let (_, recovery) = Wal::open(dir.path(), small()).expect("reopen");
        assert!(recovery.entries.is_empty());
        assert_eq!(recovery.snapshot, SnapshotMeta { index: 3, term: 2 });
    }

    #[test]
    fn space_reserved_ahead_reads_as_the_end_and_closed_segments_end_at_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = WalOptions { segment_bytes: 4096, fsync: false };
        let entries: Vec<Entry> = (1..=1000).map(|i| entry(i, 1)).collect();
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        for e in &entries {
            wal.append(None, std::slice::from_ref(e)).expect("append");
        }
        assert!(wal.segment_count() > 3, "the log rolled");
        let active_len = fs::metadata(&wal.active.path).expect("stat").len();
        if wal.preallocating {
            assert_eq!(active_len, 4096, "the active segment is reserved up to the segment size");
            assert!(wal.active_bytes < active_len);
        }
        for closed in &wal.closed {
            let buf = fs::read(&closed.path).expect("read");
            let (records, damage) = record::scan(&buf);
            assert_eq!(damage, None, "{}: no reserved zeros left in a closed segment", closed.path.display());
            assert!(records.len() > 2);
        }
        let reserved = wal.active.path.clone();
        let records_end = wal.active_bytes;
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
        assert_eq!(recovery.entries, entries, "the zeros after the last record are not entries");
        assert_eq!(fs::metadata(&reserved).expect("stat").len(), records_end, "cut back on reopen");
        drop(wal);
        let (_, recovery) = Wal::open(dir.path(), options).expect("reopen again");
        assert_eq!(recovery.entries, entries);
    }

    /// Bytes of `path` that ext4 (or another file system with `FIEMAP`) holds as allocated but
    /// unwritten, after syncing it; `None` where the file system cannot say.
    #[cfg(target_os = "linux")]
    fn unwritten_bytes(path: &Path) -> Option<u64> {
        use std::os::fd::AsRawFd;
        // struct fiemap with room for 64 struct fiemap_extent, as <linux/fiemap.h> lays them out.
        #[repr(C)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Map {
            start: u64,
            length: u64,
            flags: u32,
            mapped_extents: u32,
            extent_count: u32,
            reserved: u32,
            extents: [Extent; 64],
        }
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const FIEMAP_FLAG_SYNC: u32 = 1;
        const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
        let file = File::open(path).ok()?;
        // SAFETY: an all-zero `Map` is valid (integers only).
        let mut map: Map = unsafe { std::mem::zeroed() };
        map.length = u64::MAX;
        map.flags = FIEMAP_FLAG_SYNC;
        map.extent_count = 64;
        // SAFETY: `map` is a live, writable struct fiemap with room for `extent_count` extents.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map as *mut Map) };
        if rc != 0 {
            return None;
        }
        let extents = &map.extents[..(map.mapped_extents as usize).min(64)];
        Some(extents.iter().filter(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0).map(|e| e.length).sum())
    }

    #[test]
    fn a_failed_fsync_cuts_its_write_out_of_the_file_so_a_restart_cannot_replay_it() {
        // The failed write's bytes stay readable in the page cache; a reopen in the same boot
        // must not take them for durable records.
        let dir = tempfile::tempdir().expect("tempdir");
        let options = WalOptions { segment_bytes: 1 << 20, fsync: true };
        let hs = HardState { term: 1, vote: 1, commit: 2 };
        {
            let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
            wal.append(Some(hs), &[entry(1, 1), entry(2, 1)]).expect("append");
            wal.fail_next_sync = true;
            let failed = wal.append(Some(HardState { term: 2, vote: 3, commit: 2 }), &[entry(3, 2)]);
            assert!(matches!(failed, Err(StorageError::Io { .. })), "{failed:?}");
            assert!(matches!(wal.append(None, &[entry(3, 1)]), Err(StorageError::Poisoned)));
        }
        let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
        assert_eq!(recovery.entries, vec![entry(1, 1), entry(2, 1)]);
        assert_eq!(recovery.hard_state, hs, "the failed write's vote is not replayed");
        assert_eq!(wal.last_index(), 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn appends_racing_the_zeroer_replay_intact_and_the_space_ahead_gets_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A few reserved chunks per segment and a roll or two, all while the zeroer works.
        let options = WalOptions { segment_bytes: 6 << 20, fsync: true };
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        assert!(wal.zeroer.is_some(), "a log that fsyncs zeroes its reserved space");
        let entries: Vec<Entry> = (1..=4000u64)
            .map(|i| Entry {
                data: vec![(i % 251) as u8 + 1; 1000 + (i as usize * 7919) % 3000].into(),
                ..entry(i, 1)
            })
            .collect();
        for batch in entries.chunks(3) {
            wal.append(None, batch).expect("append");
        }
        assert!(wal.segment_count() >= 2, "the log rolled while zeroing");
        for closed in &wal.closed {
            let buf = fs::read(&closed.path).expect("read");
            let (records, damage) = record::scan(&buf);
            assert_eq!(
                damage,
                None,
                "{}: no zeros in or after a closed segment's records",
                closed.path.display()
            );
            assert!(records.len() > 2);
        }
        if wal.preallocating {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while wal.front.claimed_to() < wal.allocated {
                assert!(std::time::Instant::now() < deadline, "the zeroer reached the reserved end");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            match unwritten_bytes(&wal.active.path) {
                Some(unwritten) => assert_eq!(unwritten, 0, "every reserved block was written with zeros"),
                None => eprintln!("this file system does not map extents: the zeros are not checked"),
            }
        }
        drop(wal);
        let (_, recovery) = Wal::open(dir.path(), options).expect("reopen");
        assert_eq!(recovery.entries.len(), entries.len());
        assert!(recovery.entries == entries, "every entry replays as written");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn without_the_zeroer_reserved_space_stays_unwritten() {
        // The check above can fail: space only reserved is reported unwritten.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reserved");
        let file = File::create(&path).expect("create");
        if allocate(&file, 0, 1 << 20).is_err() {
            return eprintln!("no fallocate here: nothing to check");
        }
        match unwritten_bytes(&path) {
            Some(unwritten) => assert_eq!(unwritten, 1 << 20),
            None => eprintln!("this file system does not map extents: nothing to check"),
        }
    }
}
