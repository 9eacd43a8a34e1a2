//! The WAL's in-memory twin, for tests and simulation.

use super::error::Result;
use super::log_store::LogStore;
use super::log_tail::{check_follows, Slot, Tail};
use super::wal::WalRecovery;
use crate::protocol::raft::{Entry, HardState, SnapshotMeta};

/// A [`LogStore`] in memory that follows the same rules as [`Wal`](super::Wal), byte counts included.
///
/// Durability: everything appended is "durable" at once; [`recovery`](MemLog::recovery) gives
/// what [`Wal::open`](super::Wal::open) would return after a clean stop, to simulate a restart.
#[derive(Debug)]
pub struct MemLog {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Entries after `snapshot`; `tail.base == snapshot.index + 1`.
    tail: Tail<Entry>,
}

impl Default for MemLog {
    fn default() -> Self {
        MemLog::from_recovery(WalRecovery::default())
    }
}

impl MemLog {
    /// An empty log.
    pub fn new() -> Self {
        MemLog::default()
    }

    /// A log holding what a restart recovered.
    pub fn from_recovery(recovery: WalRecovery) -> Self {
        let mut log = MemLog {
            hard_state: recovery.hard_state,
            snapshot: recovery.snapshot,
            tail: Tail::new(recovery.snapshot.index + 1),
        };
        for entry in recovery.entries {
            let put = log.tail.put(entry.index, slot(entry));
            assert!(put.is_ok(), "recovered entries are consecutive");
        }
        log
    }

    /// What a restart would recover: hard state, snapshot marker and entries after it.
    pub fn recovery(&self) -> WalRecovery {
        WalRecovery {
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            entries: self.tail.slots.iter().map(|s| s.value.clone()).collect(),
        }
    }
}

fn slot(entry: Entry) -> Slot<Entry> {
    // The same count as the WAL: the framed record's size.
    let bytes = super::wal::entry_record_bytes(&entry);
    Slot { term: entry.term, bytes, value: entry }
}

impl LogStore for MemLog {
    fn append(&mut self, hard_state: Option<HardState>, entries: &[Entry]) -> Result<()> {
        check_follows(self.first_index(), self.last_index(), entries)?;
        if let Some(hs) = hard_state {
            assert!(hs.term >= self.hard_state.term, "hard state term went back");
            self.hard_state = hs;
        }
        for entry in entries {
            let put = self.tail.put(entry.index, slot(entry.clone()));
            assert!(put.is_ok(), "append was validated above");
        }
        Ok(())
    }

    fn compact(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta.index > self.snapshot.index {
            self.tail.compact(meta);
            self.snapshot = meta;
        }
        Ok(())
    }

    fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    fn last_index(&self) -> u64 {
        self.tail.last().unwrap_or(self.snapshot.index)
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.tail.term(index)
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    fn log_bytes(&self) -> u64 {
        self.tail.bytes
    }
}
