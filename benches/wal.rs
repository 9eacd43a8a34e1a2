//! WAL append throughput: batch sizes 1, 16 and 256 of ~100-byte entries, with and without fsync.
//!
//! Run with `cargo bench --bench wal`. Each case stops at a time or entry budget, so the whole run
//! stays under a minute on a slow disk.

use quorumkv::protocol::raft::Entry;
use quorumkv::storage::{Wal, WalOptions};
use std::time::{Duration, Instant};

/// Data bytes per entry.
const ENTRY_DATA_BYTES: usize = 100;
/// Longest time one case runs.
const CASE_BUDGET: Duration = Duration::from_secs(4);
/// Most entries one case writes (keeps the disk footprint small).
const CASE_MAX_ENTRIES: u64 = 400_000;

fn main() {
    println!("quorumkv WAL append: entries of {ENTRY_DATA_BYTES} data bytes, 64 MiB segments");
    for fsync in [true, false] {
        for batch_size in [1u64, 16, 256] {
            run_case(fsync, batch_size);
        }
    }
}

fn run_case(fsync: bool, batch_size: u64) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let (mut wal, _) =
        Wal::open(dir.path(), WalOptions { fsync, ..WalOptions::default() }).expect("open wal");
    let mut batch: Vec<Entry> = (0..batch_size)
        .map(|i| Entry {
            term: 1,
            index: 0,
            data: vec![i as u8; ENTRY_DATA_BYTES].into(),
            ..Entry::default()
        })
        .collect();
    let mut next_index = 1;
    let mut appends = 0u64;
    let start = Instant::now();
    while start.elapsed() < CASE_BUDGET && next_index <= CASE_MAX_ENTRIES {
        for entry in &mut batch {
            entry.index = next_index;
            next_index += 1;
        }
        wal.append(None, &batch).expect("append");
        appends += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let entries = next_index - 1;
    let megabytes = wal.log_bytes() as f64 / 1e6;
    println!(
        "fsync={:<3} batch={batch_size:>3}: {:>10.0} entries/s {:>8.2} MB/s {:>8.0} fsyncs/s  ({entries} entries, {appends} appends, {seconds:.2} s)",
        if fsync { "on" } else { "off" },
        entries as f64 / seconds,
        megabytes / seconds,
        if fsync { appends as f64 / seconds } else { 0.0 },
    );
}
