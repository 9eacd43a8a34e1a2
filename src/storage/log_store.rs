//! The interface the consensus layer uses to persist Raft's hard state and log.

use super::error::Result;
use crate::protocol::raft::{Entry, HardState, SnapshotMeta};

/// Stable storage for Raft's hard state and log, with the WAL's rules.
///
/// Durability: when [`append`](LogStore::append) or [`compact`](LogStore::compact) returns `Ok`,
/// what it was given survives a crash (for [`Wal`](super::Wal): only with `fsync` on; for
/// [`MemLog`](super::MemLog): survives [`MemLog::recovery`](super::MemLog::recovery)). Persist
/// before sending the messages that depend on it.
pub trait LogStore {
    /// Writes a new hard state (if any) and `entries` as one durable step. An entry at an index
    /// already present replaces it and every later one; a gap is refused.
    fn append(&mut self, hard_state: Option<HardState>, entries: &[Entry]) -> Result<()>;
    /// Records that the log is compacted up to `meta` (Raft §7); ignored if not newer.
    fn compact(&mut self, meta: SnapshotMeta) -> Result<()>;
    /// The lowest index the log can hold: one past the snapshot.
    fn first_index(&self) -> u64;
    /// Index of the last entry, or of the snapshot if none follows it.
    fn last_index(&self) -> u64;
    /// Term of the entry (or snapshot) at `index`, if known.
    fn term(&self, index: u64) -> Option<u64>;
    /// The newest hard state written.
    fn hard_state(&self) -> HardState;
    /// The newest snapshot marker.
    fn snapshot(&self) -> SnapshotMeta;
    /// Bytes of log entries after the snapshot (the snapshot trigger and INFO `log_bytes`).
    fn log_bytes(&self) -> u64;
}

impl LogStore for super::Wal {
    fn append(&mut self, hard_state: Option<HardState>, entries: &[Entry]) -> Result<()> {
        super::Wal::append(self, hard_state, entries)
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<()> {
        super::Wal::compact(self, meta)
    }
    fn first_index(&self) -> u64 {
        super::Wal::first_index(self)
    }
    fn last_index(&self) -> u64 {
        super::Wal::last_index(self)
    }
    fn term(&self, index: u64) -> Option<u64> {
        super::Wal::term(self, index)
    }
    fn hard_state(&self) -> HardState {
        super::Wal::hard_state(self)
    }
    fn snapshot(&self) -> SnapshotMeta {
        super::Wal::snapshot(self)
    }
    fn log_bytes(&self) -> u64 {
        super::Wal::log_bytes(self)
    }
}
