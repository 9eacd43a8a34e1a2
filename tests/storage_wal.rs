//! Write-ahead log: crash consistency, corruption detection, overwrites and compaction.

use quorumkv::protocol::raft::{Entry, HardState, SnapshotMeta};
use quorumkv::storage::record;
use quorumkv::storage::{StorageError, Wal, WalOptions, WalRecovery};
use std::fs;
use std::path::{Path, PathBuf};

fn entry(index: u64, term: u64) -> Entry {
    // Sizes vary so records straddle segment boundaries at different offsets.
    Entry {
        index,
        term,
        data: vec![(index % 251) as u8; 20 + (index as usize * 7) % 60].into(),
        ..Entry::default()
    }
}

fn small(fsync: bool) -> WalOptions {
    WalOptions { segment_bytes: 512, fsync }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    paths.sort();
    paths
}

/// Where the records of a segment's bytes end (the space reserved after them reads as zeros).
fn records_end(bytes: &[u8]) -> usize {
    let (records, _) = record::scan(bytes);
    records.last().map_or(0, |r| r.offset + record::HEADER_BYTES + r.payload.len())
}

/// The bytes a crash can leave of `full` when its writes reached only `cut`: cut short (a file
/// that grew with its writes), or zeros from there on (a file whose space was reserved ahead).
fn crash_leftovers(full: &[u8], cut: usize) -> [Vec<u8>; 2] {
    let mut zeroed = full.to_vec();
    zeroed[cut..].fill(0);
    [full[..cut].to_vec(), zeroed]
}

fn copy_dir(from: &Path, to: &Path) {
    for path in segments(from) {
        fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
}

/// The expected (hard state, entries) after each prefix of the records written.
struct Model {
    hard_state: HardState,
    entries: Vec<Entry>,
    states: Vec<(HardState, Vec<Entry>)>,
}

impl Model {
    fn new() -> Self {
        Model { hard_state: HardState::default(), entries: Vec::new(), states: vec![Default::default()] }
    }

    fn append(&mut self, wal: &mut Wal, hs: Option<HardState>, batch: &[Entry]) {
        wal.append(hs, batch).expect("append");
        // Records in the order the WAL writes them: the entries, then the hard state.
        for e in batch {
            self.entries.truncate((e.index - 1) as usize);
            self.entries.push(e.clone());
            self.states.push((self.hard_state, self.entries.clone()));
        }
        if let Some(hs) = hs {
            self.hard_state = hs;
            self.states.push((self.hard_state, self.entries.clone()));
        }
    }
}

/// Writes a seeded mix of hard states, batches and overwrites; returns the model.
fn write_history(dir: &Path, seed: u64, batches: u64) -> Model {
    let (mut wal, _) = Wal::open(dir, small(false)).expect("open");
    let mut model = Model::new();
    let mut rng = seed;
    let mut next = || {
        // xorshift64: deterministic from the seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut term = 1;
    for _ in 0..batches {
        let roll = next();
        let hs = (roll % 3 == 0).then(|| {
            term += (roll >> 8) % 2;
            HardState { term, vote: roll % 4, commit: model.entries.len() as u64 / 2 }
        });
        let back = if roll % 7 == 0 { (roll >> 16) % 3 } else { 0 };
        let start = (model.entries.len() as u64 + 1).saturating_sub(back).max(1);
        let batch: Vec<Entry> = (start..start + 1 + (roll >> 24) % 4).map(|i| entry(i, term)).collect();
        model.append(&mut wal, hs, &batch);
    }
    assert!(wal.segment_count() >= 5, "the history should span several segments");
    model
}

#[test]
fn every_truncation_of_the_last_segment_recovers_an_exact_prefix() {
    let seed = 0x5eed_0001;
    let original = tempfile::tempdir().expect("tempdir");
    let model = write_history(original.path(), seed, 150);
    // The last segment with records in it (Wal::open starts a fresh one, so pick the last non-empty).
    let last = segments(original.path()).into_iter().rfind(|p| fs::metadata(p).expect("stat").len() > 0);
    let last = last.expect("a segment");
    let full = fs::read(&last).expect("read");
    let end = records_end(&full);
    let mut previous_prefix = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for cut in (0..=end).rev() {
        let mut prefixes = Vec::new();
        for (variant, bytes) in crash_leftovers(&full, cut).iter().enumerate() {
            let copy = tempfile::tempdir().expect("tempdir");
            copy_dir(original.path(), copy.path());
            let name = last.file_name().expect("name");
            fs::write(copy.path().join(name), bytes).expect("damage copy");
            let (_, recovery) = Wal::open(copy.path(), small(false))
                .unwrap_or_else(|e| panic!("seed {seed:#x}: cut at {cut} of {end} (variant {variant}): {e}"));
            let found = model
                .states
                .iter()
                .rposition(|(hs, entries)| *hs == recovery.hard_state && *entries == recovery.entries);
            let found = found.unwrap_or_else(|| {
                panic!("seed {seed:#x}: cut at {cut} (variant {variant}): not a prefix: {recovery:?}")
            });
            assert_eq!(recovery.snapshot, SnapshotMeta::default());
            prefixes.push(found);
        }
        assert_eq!(prefixes[0], prefixes[1], "seed {seed:#x}: cut at {cut}: zeros after it read as the end");
        let found = prefixes[0];
        if cut < end {
            assert!(found <= previous_prefix, "seed {seed:#x}: a shorter file recovered a longer prefix");
        } else {
            assert_eq!(found, model.states.len() - 1, "the untouched log recovers everything");
        }
        previous_prefix = found;
        distinct.insert(found);
    }
    assert!(distinct.len() >= 4, "the last segment should hold several records: {distinct:?}");
}

#[test]
fn a_flipped_byte_in_an_early_record_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 7, 60);
    let first = segments(dir.path()).remove(0);
    let bytes = fs::read(&first).expect("read");
    let (records, damage) = record::scan(&bytes);
    assert!(damage.is_none() && records.len() >= 4);
    let victim = &records[2];
    let mut damaged = bytes.clone();
    damaged[victim.offset + record::HEADER_BYTES + victim.payload.len() / 2] ^= 0x10;
    fs::write(&first, &damaged).expect("write");
    match Wal::open(dir.path(), small(false)) {
        Err(err @ StorageError::Corrupt { .. }) => {
            let StorageError::Corrupt { ref path, offset, .. } = err else { unreachable!() };
            assert_eq!(path, &first);
            assert_eq!(offset, victim.offset as u64);
            let message = err.to_string();
            assert!(message.contains(&first.display().to_string()), "{message}");
            assert!(message.contains(&format!("offset {}", victim.offset)), "{message}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Nothing was truncated: the damaged file is left for the operator.
    assert_eq!(fs::read(&first).expect("read"), damaged);
}

#[test]
fn a_bad_record_followed_by_data_in_the_last_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, _) =
            Wal::open(dir.path(), WalOptions { segment_bytes: 1 << 20, fsync: false }).expect("open");
        wal.append(None, &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>()).expect("append");
    }
    let last = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&last).expect("read");
    let (records, _) = record::scan(&bytes);
    let victim = records[5].offset;
    bytes[victim + record::HEADER_BYTES + 3] ^= 0xff;
    fs::write(&last, &bytes).expect("write");
    let err = Wal::open(dir.path(), WalOptions::default()).expect_err("corruption before the tail");
    assert!(matches!(err, StorageError::Corrupt { offset, .. } if offset == victim as u64), "{err}");
}

#[test]
fn zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, _) = Wal::open(dir.path(), small(false)).expect("open");
        wal.append(None, &[entry(1, 1), entry(2, 1)]).expect("append");
    }
    let last = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&last).expect("read");
    let clean = records_end(&bytes) as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&last, &bytes).expect("write");
    let (_, recovery) = Wal::open(dir.path(), small(false)).expect("zero tail is torn");
    assert_eq!(recovery.entries, vec![entry(1, 1), entry(2, 1)]);
    assert_eq!(fs::metadata(&last).expect("stat").len(), clean);
}

#[test]
fn overwritten_suffix_replays_with_the_later_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small(true);
    {
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(None, &(1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>()).expect("append");
        // A new leader's log replaces 15.. (Raft §5.3).
        wal.append(Some(HardState { term: 2, vote: 3, commit: 14 }), &[entry(15, 2), entry(16, 2)])
            .expect("overwrite");
        assert_eq!(wal.last_index(), 16);
        assert_eq!(wal.term(15), Some(2));
    }
    let (mut wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
    let expected: Vec<Entry> = (1..=14).map(|i| entry(i, 1)).chain([entry(15, 2), entry(16, 2)]).collect();
    assert_eq!(recovery.entries, expected);
    assert_eq!(recovery.hard_state, HardState { term: 2, vote: 3, commit: 14 });
    wal.append(None, &[entry(17, 2)]).expect("append after reopen");
    // An overwrite reaching into a closed segment.
    wal.append(None, &[entry(3, 3)]).expect("deep overwrite");
    drop(wal);
    let (_, recovery) = Wal::open(dir.path(), options).expect("reopen");
    let expected: Vec<Entry> = vec![entry(1, 1), entry(2, 1), entry(3, 3)];
    assert_eq!(recovery.entries, expected);
}

#[test]
fn compaction_deletes_segments_and_replay_keeps_hard_state_marker_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small(true);
    let hs = HardState { term: 4, vote: 2, commit: 150 };
    let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
    // The only hard state record is in the first segment, which compaction deletes.
    wal.append(Some(hs), &[]).expect("hard state");
    for i in 1..=200 {
        wal.append(None, &[entry(i, 4)]).expect("append");
    }
    let before = segments(dir.path()).len();
    let bytes_before = wal.log_bytes();
    let meta = SnapshotMeta { index: 150, term: 4 };
    wal.compact(meta).expect("compact");
    // Released segments are deleted on the log's remover thread.
    wal.wait_for_removals();
    let after = segments(dir.path()).len();
    assert!(after < before / 3, "segments {before} -> {after}");
    assert_eq!(wal.segment_count(), after);
    assert!(wal.log_bytes() < bytes_before / 3);
    assert_eq!((wal.first_index(), wal.last_index()), (151, 200));
    wal.append(None, &(201..=210).map(|i| entry(i, 4)).collect::<Vec<_>>()).expect("append");
    let log_bytes = wal.log_bytes();
    drop(wal);
    for _ in 0..2 {
        let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
        assert_eq!(
            recovery,
            WalRecovery {
                hard_state: hs,
                snapshot: meta,
                entries: (151..=210).map(|i| entry(i, 4)).collect()
            }
        );
        assert_eq!(wal.log_bytes(), log_bytes, "log_bytes is the same after replay");
        assert_eq!(wal.term(150), Some(4));
    }
    // Compacting everything and reopening leaves an empty log after the snapshot.
    let (mut wal, _) = Wal::open(dir.path(), options).expect("reopen");
    wal.compact(SnapshotMeta { index: 210, term: 4 }).expect("compact all");
    assert_eq!(wal.log_bytes(), 0);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert!(recovery.entries.is_empty());
    assert_eq!(wal.last_index(), 210);
    assert_eq!(recovery.hard_state, hs);
}

#[test]
fn snapshot_of_a_conflicting_log_replays_like_it_was_applied_live() {
    // A follower whose entries 40.. are from a deposed leader installs a snapshot at 60 from
    // another term: its whole log goes (Raft §7), and replay after segment deletion agrees.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small(false);
    let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
    for i in 1..=80 {
        wal.append(None, &[entry(i, 1)]).expect("append");
    }
    let meta = SnapshotMeta { index: 60, term: 2 };
    wal.compact(meta).expect("compact");
    assert_eq!(wal.last_index(), 60);
    wal.append(None, &[entry(61, 2), entry(62, 2)]).expect("append");
    drop(wal);
    let (_, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(recovery.snapshot, meta);
    assert_eq!(recovery.entries, vec![entry(61, 2), entry(62, 2)]);
}

#[test]
fn a_conflicting_snapshot_at_a_segment_end_does_not_resurrect_later_entries() {
    // Segment A ends exactly at the snapshot index and B holds 6..8. A snapshot at 5 in another
    // term discards the whole log; deleting A too would let replay keep 6..8, so A stays.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions { segment_bytes: 1, fsync: false };
    let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
    wal.append(None, &(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>()).expect("append");
    wal.append(None, &(6..=8).map(|i| entry(i, 1)).collect::<Vec<_>>()).expect("append");
    wal.compact(SnapshotMeta { index: 5, term: 2 }).expect("compact");
    assert_eq!(wal.last_index(), 5);
    drop(wal);
    let (_, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert!(recovery.entries.is_empty(), "{:?}", recovery.entries);
}

#[test]
fn a_missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 11, 60);
    let victim = segments(dir.path()).remove(2);
    fs::remove_file(&victim).expect("remove");
    let err = Wal::open(dir.path(), small(false)).expect_err("missing segment");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[derive(Clone, Debug)]
enum LogOp {
    /// Append `len` entries starting `back` below last + 1, maybe in a new term, maybe with a hard state.
    Append { back: u64, len: u64, new_term: bool, hard_state: bool },
    /// Compact at last + 2 - `back`, with the entry's own term or another one.
    Compact { back: u64, other_term: bool },
    /// Close and reopen the WAL (a restart).
    Reopen,
}

fn log_op() -> impl proptest::strategy::Strategy<Value = LogOp> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u64..4, 1u64..6, any::<bool>(), any::<bool>())
            .prop_map(|(back, len, new_term, hard_state)| LogOp::Append { back, len, new_term, hard_state }),
        2 => (0u64..8, proptest::bool::weighted(0.3)).prop_map(|(back, other_term)| LogOp::Compact { back, other_term }),
        2 => Just(LogOp::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 96, ..Default::default() })]

    /// The WAL (live and after every restart) agrees with its in-memory twin, including which
    /// entries survive a snapshot and what replay gives after segments were deleted.
    #[test]
    fn wal_agrees_with_mem_log(
        ops in proptest::collection::vec(log_op(), 1..60),
        segment_bytes in proptest::prop_oneof![proptest::strategy::Just(1u64), 100u64..400],
    ) {
        use quorumkv::storage::{LogStore, MemLog};
        let dir = tempfile::tempdir().expect("tempdir");
        // One byte: every write starts a segment, so segments end exactly where batches do.
        let options = WalOptions { segment_bytes, fsync: false };
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        let mut mem = MemLog::new();
        let mut term = 1;
        for op in ops {
            match op {
                LogOp::Append { back, len, new_term, hard_state } => {
                    term += u64::from(new_term);
                    let start = (mem.last_index() + 1).saturating_sub(back).max(mem.first_index());
                    let batch: Vec<Entry> = (start..start + len).map(|i| entry(i, term)).collect();
                    let hs = hard_state.then_some(HardState { term, vote: 1, commit: start - 1 });
                    wal.append(hs, &batch).expect("wal append");
                    mem.append(hs, &batch).expect("mem append");
                }
                LogOp::Compact { back, other_term } => {
                    let index = (mem.last_index() + 2).saturating_sub(back);
                    let own = mem.term(index).unwrap_or(term);
                    let meta = SnapshotMeta { index, term: if other_term { own + 1 } else { own } };
                    wal.compact(meta).expect("wal compact");
                    mem.compact(meta).expect("mem compact");
                }
                LogOp::Reopen => {
                    drop(wal);
                    let (reopened, recovery) = Wal::open(dir.path(), options).expect("reopen");
                    proptest::prop_assert_eq!(recovery, mem.recovery());
                    wal = reopened;
                }
            }
            proptest::prop_assert_eq!((wal.first_index(), wal.last_index()), (mem.first_index(), mem.last_index()));
            proptest::prop_assert_eq!(wal.log_bytes(), mem.log_bytes());
            proptest::prop_assert_eq!(wal.hard_state(), LogStore::hard_state(&mem));
            proptest::prop_assert_eq!(wal.snapshot(), LogStore::snapshot(&mem));
            for index in mem.first_index().saturating_sub(1)..=mem.last_index() {
                proptest::prop_assert_eq!(wal.term(index), mem.term(index));
            }
        }
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), options).expect("final reopen");
        proptest::prop_assert_eq!(recovery, mem.recovery());
        proptest::prop_assert_eq!(wal.log_bytes(), mem.log_bytes());
    }
}

/// A log with a witness beside it (as a data dir keeps one): several segments, a compaction marker.
fn witnessed_log(root: &Path) -> (PathBuf, PathBuf) {
    let (wal_dir, witness) = (root.join("wal"), root.join("quorumkv.wal"));
    quorumkv::storage::wal::init_witness(&witness).expect("init witness");
    let (mut wal, _) = Wal::open_witnessed(&wal_dir, small(true), Some(&witness)).expect("open");
    wal.append(Some(HardState { term: 7, vote: 2, commit: 0 }), &[]).expect("vote");
    for i in 1..=40 {
        wal.append(None, &[entry(i, 7)]).expect("append");
    }
    wal.compact(SnapshotMeta { index: 20, term: 7 }).expect("compact");
    assert!(segments(&wal_dir).len() > 2, "the test needs several segments");
    (wal_dir, witness)
}

fn refused_as_missing(wal_dir: &Path, witness: &Path) -> String {
    let err = Wal::open_witnessed(wal_dir, small(true), Some(witness)).expect_err("refused");
    assert!(matches!(err, StorageError::Missing { .. }), "{err}");
    err.to_string()
}

// A log emptied or deleted behind the replica's back is refused, never replayed as a fresh log (which
// would reset term and vote to 0 and forget acknowledged writes), and the refusal changes nothing.
#[test]
fn a_witnessed_log_that_lost_segments_is_refused() {
    type Damage = fn(&Path, &Path);
    let damages: [(&str, Damage); 5] = [
        ("every segment emptied", |wal, _| {
            for s in segments(wal) {
                fs::File::create(&s).expect("truncate");
            }
        }),
        ("every segment deleted", |wal, _| {
            for s in segments(wal) {
                fs::remove_file(&s).expect("remove");
            }
        }),
        ("the wal directory deleted", |wal, _| fs::remove_dir_all(wal).expect("remove dir")),
        ("the newest segment deleted", |wal, _| {
            fs::remove_file(segments(wal).last().expect("a segment")).expect("remove")
        }),
        ("segments and witness deleted", |wal, witness| {
            fs::remove_dir_all(wal).expect("remove dir");
            fs::remove_file(witness).expect("remove witness");
        }),
    ];
    for (what, damage) in damages {
        let root = tempfile::tempdir().expect("tempdir");
        let (wal_dir, witness) = witnessed_log(root.path());
        damage(&wal_dir, &witness);
        let before: Vec<_> = if wal_dir.exists() { segments(&wal_dir) } else { Vec::new() };
        let message = refused_as_missing(&wal_dir, &witness);
        assert!(message.contains("refusing to start"), "{what}: {message}");
        let after: Vec<_> = if wal_dir.exists() { segments(&wal_dir) } else { Vec::new() };
        assert_eq!(before, after, "{what}: nothing changed");
    }
}

// The witness does not get in the way of what a crash really leaves: a torn tail after the head
// records, or a segment created but left empty past the recorded one.
#[test]
fn a_witnessed_log_survives_crash_leftovers() {
    let root = tempfile::tempdir().expect("tempdir");
    let (wal_dir, witness) = witnessed_log(root.path());
    let newest = segments(&wal_dir).pop().expect("a segment");
    // A torn record at the end of the newest segment.
    let mut bytes = fs::read(&newest).expect("read");
    // Where the next write would have gone (the segment may hold reserved zeros after it).
    bytes.truncate(records_end(&bytes));
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    fs::write(&newest, &bytes).expect("write");
    let (_, recovery) = Wal::open_witnessed(&wal_dir, small(true), Some(&witness)).expect("torn tail");
    assert_eq!(recovery.hard_state.term, 7);
    assert_eq!(recovery.hard_state.vote, 2);
    assert_eq!(recovery.entries.last().map(|e| e.index), Some(40));
    // A crash right after creating a segment the witness does not name yet.
    let next = segments(&wal_dir).pop().expect("a segment");
    let stem: u64 = next.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("seq");
    fs::File::create(wal_dir.join(format!("{:020}.wal", stem + 1))).expect("create");
    let (_, recovery) = Wal::open_witnessed(&wal_dir, small(true), Some(&witness)).expect("empty newest");
    assert_eq!(recovery.entries.last().map(|e| e.index), Some(40));
    assert_eq!(recovery.snapshot, SnapshotMeta { index: 20, term: 7 });
}

// A deposed leader's tail, overwritten by the new leader at lower indexes, no longer pins its
// segments: compaction past the live entries releases them, live and after a restart alike.
#[test]
fn an_overwritten_tail_does_not_pin_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let count_after = |compact_at: u64, reopen: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), small(false)).expect("open");
        for i in 1..=200 {
            wal.append(None, &[entry(i, 1)]).expect("old leader's entries");
        }
        wal.append(None, &[entry(5, 2)]).expect("new leader overwrites from 5");
        for i in 6..=30 {
            wal.append(None, &[entry(i, 2)]).expect("new leader's entries");
        }
        if reopen {
            drop(wal);
            wal = Wal::open(dir.path(), small(false)).expect("reopen").0;
        }
        wal.compact(SnapshotMeta { index: compact_at, term: 2 }).expect("compact");
        wal.wait_for_removals();
        segments(dir.path()).len()
    };
    let _ = dir;
    for reopen in [false, true] {
        // Entries 26..=30 and the heads fit in a few 512-byte segments; the dead tail (31..=200 of
        // term 1) spans dozens.
        let left = count_after(25, reopen);
        assert!(left <= 4, "reopen {reopen}: {left} segments kept after compaction");
    }
}

// A write that replaces old entries and raises the commit mark, torn anywhere, never recovers a
// commit mark over entries it was replacing: the hard state is the write's last record.
#[test]
fn a_torn_write_never_commits_the_entries_it_replaces() {
    let original = tempfile::tempdir().expect("tempdir");
    let options = WalOptions { segment_bytes: 1 << 20, fsync: false };
    {
        let (mut wal, _) = Wal::open(original.path(), options).expect("open");
        let stale: Vec<Entry> = (1..=10).map(|i| entry(i, 2)).collect();
        wal.append(Some(HardState { term: 2, vote: 1, commit: 4 }), &stale).expect("append");
        // A new leader's entries replace 5..=8 and say 8 is committed.
        let fresh: Vec<Entry> = (5..=8).map(|i| entry(i, 3)).collect();
        wal.append(Some(HardState { term: 3, vote: 0, commit: 8 }), &fresh).expect("append");
    }
    let last = segments(original.path()).into_iter().rfind(|p| fs::metadata(p).expect("stat").len() > 0);
    let last = last.expect("a segment");
    // Its records and some of the zeros reserved after them (all of them would make each copy 1 MiB).
    let mut full = fs::read(&last).expect("read");
    full.truncate(records_end(&full) + 4096);
    fs::write(&last, &full).expect("trim");
    for cut in 0..=records_end(&full) {
        for bytes in crash_leftovers(&full, cut) {
            let copy = tempfile::tempdir().expect("tempdir");
            copy_dir(original.path(), copy.path());
            fs::write(copy.path().join(last.file_name().expect("name")), bytes).expect("damage copy");
            let (_, recovery) = Wal::open(copy.path(), options).expect("a torn tail is accepted");
            for e in recovery.entries.iter().filter(|e| e.index <= recovery.hard_state.commit) {
                assert!(
                    e.index <= 4 || e.term == 3,
                    "cut at {cut}: entry {} of term {} recovered as committed (commit {})",
                    e.index,
                    e.term,
                    recovery.hard_state.commit
                );
            }
        }
    }
}

// A write into the space reserved ahead, torn by a crash so that a sector in its middle never
// reached the disk while later ones did, is the end of the log in the last segment (everything
// before the write is recovered); the same hole in a closed segment is corruption.
#[test]
fn a_write_torn_around_a_zero_sector_ends_the_last_segment_but_not_a_closed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions { segment_bytes: 1 << 20, fsync: false };
    let before: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
    let big = |i: u64| Entry { index: i, term: 1, data: vec![7; 300].into(), ..Entry::default() };
    let torn: Vec<Entry> = (6..=12).map(big).collect();
    let start;
    {
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(None, &before).expect("append");
        start = records_end(&fs::read(&segments(dir.path())[0]).expect("read"));
        wal.append(None, &torn).expect("the write a crash tears");
    }
    let last = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&last).expect("read");
    let end = records_end(&bytes);
    // A whole sector inside the second write, with written sectors after it.
    let hole = (start / record::SECTOR_BYTES + 1) * record::SECTOR_BYTES;
    assert!(hole + 2 * record::SECTOR_BYTES < end, "the write spans several sectors");
    bytes[hole..hole + record::SECTOR_BYTES].fill(0);
    let (records, damage) = record::scan(&bytes);
    assert!(matches!(damage, Some(record::Damage::Corrupt { .. })), "valid records follow the hole");
    fs::write(&last, &bytes).expect("write");
    let (_, recovery) = Wal::open(dir.path(), options).expect("a torn write in the last segment");
    let kept = records.iter().filter(|r| r.offset < hole).count() - 2;
    assert!(kept >= before.len() && kept < before.len() + torn.len(), "{kept} entries kept");
    assert_eq!(recovery.entries.len(), kept, "everything before the hole, nothing after it");
    assert_eq!(recovery.entries[..before.len()], before[..]);

    // The same hole in a segment that is no longer the last: refused.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(None, &before).expect("append");
        wal.append(None, &torn).expect("append");
    }
    drop(Wal::open(dir.path(), options).expect("a clean reopen starts the next segment"));
    let first = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    assert_eq!(bytes.len(), end, "cut back to its records once it is not the last");
    bytes[hole..hole + record::SECTOR_BYTES].fill(0);
    fs::write(&first, &bytes).expect("write");
    let err = Wal::open(dir.path(), options).expect_err("a hole in a closed segment");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

// A zero sector in the last segment with valid records after it is taken for a torn write only
// if those records can be that one write: a hard state (a write's last record when it has one)
// followed by more records means a later write came after it, so the hole is in bytes that were
// synced (and maybe acknowledged), and cutting there would lose them.
#[test]
fn a_zero_sector_with_a_later_write_after_it_is_corruption_even_in_the_last_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    // With fsync, as a replica runs: each write reached the disk before the next began.
    let options = WalOptions { segment_bytes: 1 << 20, fsync: true };
    let before: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
    let big = |i: u64| Entry { index: i, term: 1, data: vec![7; 300].into(), ..Entry::default() };
    let start;
    {
        let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(None, &before).expect("append");
        start = records_end(&fs::read(&segments(dir.path())[0]).expect("read"));
        let synced = HardState { term: 1, vote: 1, commit: 12 };
        wal.append(Some(synced), &(6..=12).map(big).collect::<Vec<_>>()).expect("a synced write");
        wal.append(None, &[entry(13, 1)]).expect("a later write");
    }
    let last = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&last).expect("read");
    let hole = (start / record::SECTOR_BYTES + 1) * record::SECTOR_BYTES;
    bytes[hole..hole + record::SECTOR_BYTES].fill(0);
    let Some(record::Damage::Corrupt { offset, .. }) = record::scan(&bytes).1 else {
        panic!("valid records follow the hole")
    };
    assert!(record::torn_into_reserved_space(&bytes, offset), "a zero sector after the damage");
    fs::write(&last, &bytes).expect("write");
    let err = Wal::open(dir.path(), options).expect_err("a hole before a later write");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

// A crash can lose the sector that holds only the first few bytes of the last write (the rest of
// that sector was synced before it) and keep the write's later sectors: the write's first record
// header then starts with 1-8 zero bytes up to a sector's end, too few to be a zero piece a
// record header long. It is still a torn last write, and the log ends before it.
#[test]
fn a_write_whose_first_sector_never_landed_ends_the_last_segment() {
    let options = WalOptions { segment_bytes: 1 << 20, fsync: false };
    let big = |i: u64| Entry { index: i, term: 1, data: vec![7; 300].into(), ..Entry::default() };
    for in_lost_sector in 1..=8 {
        // A first entry sized so that the second write starts `in_lost_sector` bytes before a
        // sector's end.
        let (dir, before, start) = (0..2 * record::SECTOR_BYTES)
            .find_map(|pad| {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut before: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
                before[0].data = vec![1; pad].into();
                let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
                wal.append(None, &before).expect("append");
                let start = records_end(&fs::read(&segments(dir.path())[0]).expect("read"));
                if record::SECTOR_BYTES - start % record::SECTOR_BYTES != in_lost_sector {
                    return None;
                }
                wal.append(None, &(6..=12).map(big).collect::<Vec<_>>()).expect("the write a crash tears");
                Some((dir, before, start))
            })
            .expect("some padding puts the write's start there");
        let last = segments(dir.path()).remove(0);
        let mut bytes = fs::read(&last).expect("read");
        assert_eq!(records_end(&bytes[..start]), start, "the same layout");
        let sector_end = start + in_lost_sector;
        bytes[start..sector_end].fill(0);
        let (_, damage) = record::scan(&bytes);
        assert!(matches!(damage, Some(record::Damage::Corrupt { .. })), "valid records follow");
        fs::write(&last, &bytes).expect("write");
        let (_, recovery) = Wal::open(dir.path(), options)
            .unwrap_or_else(|e| panic!("{in_lost_sector} bytes in the lost sector: {e}"));
        assert_eq!(recovery.entries, before, "{in_lost_sector} bytes in the lost sector");
    }
}

// A compaction's released segment is renamed out of the log's way before it is cut down; one a
// crash left half cut is no longer read as a segment, and the next open deletes it.
#[test]
fn a_half_deleted_segment_left_by_a_crash_is_not_replayed_and_goes_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = small(true);
    let (mut wal, _) = Wal::open(dir.path(), options).expect("open");
    for i in 1..=40 {
        wal.append(None, &[entry(i, 3)]).expect("append");
    }
    drop(wal);
    let oldest = segments(dir.path()).into_iter().min().expect("a segment");
    // What a crash in the middle of deleting it leaves: a set-aside name, a cut record.
    let mut aside = oldest.clone().into_os_string();
    aside.push(".removing");
    let aside = PathBuf::from(aside);
    fs::write(&aside, b"\x01\x02torn").expect("write");
    let (wal, recovery) = Wal::open(dir.path(), options).expect("a set-aside file is not a segment");
    assert_eq!(recovery.entries.len(), 40);
    wal.wait_for_removals();
    assert!(!aside.exists(), "the set-aside file is deleted");
    assert!(oldest.exists(), "the segment itself is untouched");
}
