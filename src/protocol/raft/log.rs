//! The in-memory Raft log: a compacted prefix, then entries, with the stable, commit and apply marks.
//!
//! ```text
//!   snapshot.index ... start.index | first ...... applied .... committed .... stabled .... persisting .... last
//!   (compacted)       (trimmed)    | <---------------------------- entries ------------------------------------>
//! ```
//! Entries between the snapshot and `start` were trimmed from memory: every peer that needed them
//! had them, and they stay in stable storage until the next snapshot covers them. A follower
//! that turns out to need them after all is sent a snapshot taken for it.
//! `persisting` is what has been handed to stable storage, `stabled` what storage confirmed
//! durable. Both may lag or lead `committed`: a committed entry (durable on a quorum) may be
//! applied before this node's own copy is durable, and a leader's entries are durable here
//! before a quorum has them.

use std::collections::VecDeque;

use super::message::{Entry, SnapshotMeta};
use crate::protocol::chunked::ChunkedDeque;

/// Entries a compaction took out of the log, still allocated: dropping this frees them.
#[derive(Debug, Default)]
pub struct Compacted(Vec<Vec<Entry>>);

impl Compacted {
    /// Number of entries held, counting the head of a chunk dropped by an earlier compaction.
    pub fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// True when there is nothing to free.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Entries an append list is sized for up front at most (a long catch-up grows past it).
const MAX_PRESIZED_ENTRIES: usize = 256;

/// The log held by one Raft node.
#[derive(Debug, Clone)]
pub struct RaftLog {
    /// The compacted prefix: every index <= `snapshot.index` lives only in the snapshot.
    snapshot: SnapshotMeta,
    /// The last entry not held in memory (compacted or trimmed): >= `snapshot`, <= applied.
    start: SnapshotMeta,
    /// Consecutive entries from `start.index + 1`.
    entries: ChunkedDeque<Entry>,
    /// Highest index confirmed on stable storage. <= persisting.
    stabled: u64,
    /// Highest index handed to stable storage (written or being written). <= last_index().
    persisting: u64,
    /// Highest index known committed. Never decreases.
    committed: u64,
    /// Highest index handed to the state machine. Never decreases; <= committed.
    applied: u64,
    /// Sum of `size_bytes` over `entries`, kept as entries come and go (read on every Ready).
    entries_bytes: usize,
    /// Sum of `size_bytes` over the entries after `committed` (the leader's proposal budget).
    uncommitted_bytes: usize,
    /// Trims since the snapshot, oldest first: (last index trimmed, bytes trimmed).
    trims: VecDeque<(u64, usize)>,
    /// Sum of the bytes in `trims`, kept because it is read at every drive and trims can be many.
    trimmed_bytes: usize,
}

impl RaftLog {
    /// A log recovered from storage: a snapshot position, the entries after it, and the commit mark.
    ///
    /// Everything passed in is stable; the state machine is assumed restored up to `snapshot.index`.
    pub fn restore(snapshot: SnapshotMeta, entries: Vec<Entry>, committed: u64) -> RaftLog {
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                snapshot.index + 1 + offset as u64,
                "recovered entries must be consecutive"
            );
        }
        let last = snapshot.index + entries.len() as u64;
        let committed = committed.clamp(snapshot.index, last);
        let entries_bytes = entries.iter().map(Entry::size_bytes).sum();
        let uncommitted_bytes = entries.iter().filter(|e| e.index > committed).map(Entry::size_bytes).sum();
        RaftLog {
            snapshot,
            start: snapshot,
            entries: ChunkedDeque::from_vec(entries),
            stabled: last,
            persisting: last,
            committed,
            applied: snapshot.index,
            entries_bytes,
            uncommitted_bytes,
            trims: VecDeque::new(),
            trimmed_bytes: 0,
        }
    }

    /// The compacted prefix's position.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// Index of the first entry held in memory.
    pub fn first_index(&self) -> u64 {
        self.start.index + 1
    }

    /// True when entries after the snapshot were trimmed from memory: a follower that needs
    /// them must be sent a newer snapshot than the one there is.
    pub fn has_trimmed(&self) -> bool {
        self.start.index > self.snapshot.index
    }

    /// The entry at `index`, if it is held in memory.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.start.index + 1)?;
        self.entries.get(offset as usize)
    }

    /// Index of the last entry (the snapshot index when no entries follow it).
    pub fn last_index(&self) -> u64 {
        self.start.index + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.start.term, |e| e.term)
    }

    /// Highest index confirmed on stable storage.
    pub fn stabled(&self) -> u64 {
        self.stabled
    }

    /// Highest index handed to stable storage, durable or not yet.
    pub fn persisting(&self) -> u64 {
        self.persisting
    }

    /// Highest index known committed.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Highest index handed to the state machine.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The term of the entry at `index`, if the log still knows it (0 for index 0).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        if index < self.start.index || index > self.last_index() {
            return None;
        }
        self.entries.get((index - self.start.index - 1) as usize).map(|e| e.term)
    }

    /// True if the entry at `index` exists and has `term` (Raft §5.3 log matching).
    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// True if a log ending at (`last_index`, `last_term`) is at least as up to date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The largest index <= `index` whose term is <= `term`, or the first unknown index below the log.
    ///
    /// Used on both sides of the fast back-off: it skips a whole run of entries from a wrong term.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut index = index.min(self.last_index());
        while index > self.start.index {
            match self.term(index) {
                Some(t) if t > term => index -= 1,
                _ => break,
            }
        }
        index
    }

    /// Entries in `[from, last]`, at most `max_bytes` (but always at least one if any exist).
    ///
    /// Returns `None` if `from` is no longer held in memory (compacted or trimmed).
    pub fn entries_from(&self, from: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        if from <= self.start.index {
            return None;
        }
        let start = (from - self.start.index - 1) as usize;
        let mut out = Vec::with_capacity(self.entries.len().saturating_sub(start).min(MAX_PRESIZED_ENTRIES));
        let mut bytes = 0;
        for entry in self.entries.iter_from(start) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Appends `entries` (consecutive, starting at most one past the end), replacing any conflicting suffix.
    ///
    /// Entries already present with the same term are kept; the first one with a different term and
    /// everything after it is dropped (Raft §5.3). Returns the last index now in the log.
    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        for entry in entries {
            match self.term(entry.index) {
                Some(t) if t == entry.term => continue,
                _ => {}
            }
            assert!(entry.index > self.committed, "a committed entry can never be replaced");
            assert!(entry.index > self.start.index && entry.index <= self.last_index() + 1, "gap in append");
            let keep = (entry.index - self.start.index - 1) as usize;
            // Everything dropped lies past the commit mark (asserted above).
            let dropped = self.entries.iter_from(keep).map(Entry::size_bytes).sum::<usize>();
            self.entries_bytes -= dropped;
            self.uncommitted_bytes -= dropped;
            self.entries.truncate(keep);
            self.stabled = self.stabled.min(entry.index - 1);
            self.persisting = self.persisting.min(entry.index - 1);
            self.entries_bytes += entry.size_bytes();
            self.uncommitted_bytes += entry.size_bytes();
            self.entries.push_back(entry.clone());
        }
        self.last_index()
    }

    /// Entries not yet handed to stable storage.
    pub fn unstable_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter_from(self.unstable_from())
    }

    /// Some entry has not been handed to stable storage yet.
    pub fn has_unstable_entries(&self) -> bool {
        self.unstable_from() < self.entries.len()
    }

    /// Position in `entries` of the first entry not handed to storage.
    fn unstable_from(&self) -> usize {
        (self.persisting.max(self.start.index) - self.start.index) as usize
    }

    /// Records that every entry up to the last one is being written to stable storage.
    pub fn persisting_to_last(&mut self) {
        self.persisting = self.last_index();
    }

    /// Marks everything up to `index` stable if the entry there still has `term`.
    ///
    /// The term check ignores a write of entries that a newer leader replaced meanwhile (their
    /// replacement is written later and confirmed by its own call); a write whose last entry was
    /// compacted away meanwhile is ignored too, which only makes `stabled` lag.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index > self.stabled && self.matches(index, term) {
            assert!(index <= self.persisting, "stable {index} beyond what was handed to storage");
            self.stabled = index;
        }
    }

    /// Committed entries not yet handed to the state machine, up to index `upto` and `max_bytes`
    /// (at least one).
    pub fn next_committed_entries(&self, upto: u64, max_bytes: usize) -> Vec<Entry> {
        let upto = upto.min(self.committed);
        if upto <= self.applied {
            return Vec::new();
        }
        let mut out = self.entries_from(self.applied + 1, max_bytes).unwrap_or_default();
        out.retain(|e| e.index <= upto);
        out
    }

    /// Raises the commit mark to `index` (never lowers it); returns whether it moved.
    ///
    /// Panics past the last entry: committing what the log does not hold is a broken invariant,
    /// so callers bound what a peer tells them before they get here.
    pub fn commit_to(&mut self, index: u64) -> bool {
        assert!(index <= self.last_index(), "commit {index} past the last index {}", self.last_index());
        if index > self.committed {
            let from = (self.committed.max(self.start.index) - self.start.index) as usize;
            let to = (index - self.start.index) as usize;
            self.uncommitted_bytes -= self.entries.range(from, to).map(Entry::size_bytes).sum::<usize>();
            self.committed = index;
            return true;
        }
        false
    }

    /// Bytes of the entries after the commit mark.
    pub fn uncommitted_bytes(&self) -> usize {
        debug_assert_eq!(
            self.uncommitted_bytes,
            self.entries.iter().filter(|e| e.index > self.committed).map(Entry::size_bytes).sum::<usize>()
        );
        self.uncommitted_bytes
    }

    /// Records that the state machine has been handed everything up to `index`.
    pub fn applied_to(&mut self, index: u64) {
        assert!(index <= self.committed, "applied {index} past committed {}", self.committed);
        self.applied = self.applied.max(index);
    }

    /// Replaces the whole log with a snapshot's position (a follower installing a snapshot).
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.committed, "installing a snapshot older than the commit mark");
        self.snapshot = meta;
        self.start = meta;
        self.entries.clear();
        self.entries_bytes = 0;
        self.uncommitted_bytes = 0;
        self.trims.clear();
        self.trimmed_bytes = 0;
        // The snapshot is written with the Ready that hands it out; its write confirms `stabled`.
        self.stabled = self.stabled.min(meta.index);
        self.persisting = meta.index;
        self.committed = meta.index;
        self.applied = meta.index;
    }

    /// Records a snapshot of the applied state at `meta` and drops the entries it covers.
    ///
    /// Returns the memory that held them, for the caller to free off its own thread.
    pub fn compact(&mut self, meta: SnapshotMeta) -> Compacted {
        if meta.index <= self.snapshot.index {
            return Compacted::default();
        }
        assert!(meta.index <= self.applied, "compacting {} past applied {}", meta.index, self.applied);
        // Applied entries were handed to storage in the Ready that handed them out, or earlier.
        assert!(meta.index <= self.persisting, "compacting {} past what storage was given", meta.index);
        if meta.index <= self.start.index {
            // Trimmed from memory already: only the snapshot's position moves.
            self.snapshot = meta;
            self.trims.retain(|&(last, _)| last > meta.index);
            self.trimmed_bytes = self.trims.iter().map(|&(_, bytes)| bytes).sum();
            return Compacted::default();
        }
        let term = self.term(meta.index);
        assert_eq!(term, Some(meta.term), "snapshot at {} disagrees with the log's term", meta.index);
        let (_, freed) = self.drop_through(meta);
        self.trims.clear();
        self.trimmed_bytes = 0;
        self.snapshot = meta;
        freed
    }

    /// Drops entries up to `index` from memory, though no snapshot covers them: every peer that
    /// needs them has them, and stable storage keeps them until a snapshot does.
    ///
    /// Returns the memory that held them, for the caller to free off its own thread.
    pub fn trim_to(&mut self, index: u64) -> Compacted {
        if index <= self.start.index {
            return Compacted::default();
        }
        assert!(index <= self.applied, "trimming {index} past applied {}", self.applied);
        assert!(index <= self.persisting, "trimming {index} past what storage was given");
        let Some(term) = self.term(index) else { return Compacted::default() };
        let (bytes, freed) = self.drop_through(SnapshotMeta { index, term });
        self.trims.push_back((index, bytes));
        self.trimmed_bytes += bytes;
        freed
    }

    /// Takes the entries up to `last` (held, after `start`) out of memory and makes `last` the
    /// new start; returns their bytes and their memory.
    fn drop_through(&mut self, last: SnapshotMeta) -> (usize, Compacted) {
        let count = (last.index - self.start.index) as usize;
        let bytes = self.entries.range(0, count).map(Entry::size_bytes).sum::<usize>();
        let freed = self.entries.drop_front(count);
        self.entries_bytes -= bytes;
        self.start = last;
        (bytes, Compacted(freed))
    }

    /// Bytes of the entries after the snapshot, held or trimmed: what the next snapshot lets go.
    ///
    /// A trim that straddles the snapshot counts whole until the next one (approximate).
    pub fn bytes_since_snapshot(&self) -> usize {
        self.entries_bytes + self.trimmed_bytes
    }

    /// Bytes held by the entries in memory (approximate).
    pub fn entries_bytes(&self) -> usize {
        debug_assert_eq!(self.entries_bytes, self.entries.iter().map(Entry::size_bytes).sum::<usize>());
        self.entries_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8].into(), ..Entry::default() }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, &t)| entry(i as u64 + 1, t)).collect();
        RaftLog::restore(SnapshotMeta::default(), entries, 0)
    }

    #[test]
    fn append_replaces_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.stabled(), 4);
        // Raft §5.3: 3 matches (term 2), 4 conflicts (term 3): drop 4, keep 1..=3.
        log.append(&[entry(3, 2), entry(4, 3), entry(5, 3)]);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term(4), Some(3));
        assert_eq!(log.stabled(), 3);
        assert_eq!(log.unstable_entries().count(), 2);
        log.persisting_to_last();
        assert!(!log.has_unstable_entries(), "handed to storage, not yet durable");
        // A stale acknowledgement for the old entry 4 (term 2) does not mark the new one stable.
        log.stable_to(4, 2);
        assert_eq!(log.stabled(), 3);
        log.stable_to(5, 3);
        assert_eq!(log.stabled(), 5);
    }

    #[test]
    fn compacted_prefix_answers_terms_and_refuses_entries() {
        let mut log =
            RaftLog::restore(SnapshotMeta { index: 10, term: 3 }, vec![entry(11, 3), entry(12, 4)], 12);
        assert_eq!(log.first_index(), 11);
        assert_eq!(log.term(10), Some(3));
        assert_eq!(log.term(9), None);
        assert_eq!(log.term(13), None);
        assert!(log.entries_from(10, usize::MAX).is_none());
        assert_eq!(log.next_committed_entries(u64::MAX, usize::MAX).len(), 2);
        log.applied_to(12);
        log.compact(SnapshotMeta { index: 11, term: 3 });
        assert_eq!(log.first_index(), 12);
        assert_eq!(log.term(11), Some(3));
        assert_eq!(log.last_index(), 12);
    }

    #[test]
    fn trimmed_entries_leave_memory_but_count_until_a_snapshot_covers_them() {
        let entries = (1..=6).map(|i| entry(i, if i < 4 { 1 } else { 2 })).collect();
        let mut log = RaftLog::restore(SnapshotMeta::default(), entries, 6);
        let all = log.entries_bytes();
        log.applied_to(6);
        assert!(log.trim_to(3).len() <= 3);
        assert!(log.has_trimmed());
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.snapshot_meta(), SnapshotMeta::default(), "the snapshot has not moved");
        assert_eq!((log.term(3), log.term(2)), (Some(1), None));
        assert!(log.entries_from(3, usize::MAX).is_none());
        assert_eq!(log.entries_from(4, usize::MAX).map(|v| v.len()), Some(3));
        assert!(log.entries_bytes() < all);
        assert_eq!(log.bytes_since_snapshot(), all);
        // A snapshot below the trim point moves only the snapshot and lets go of whole trims.
        log.compact(SnapshotMeta { index: 2, term: 1 });
        assert_eq!((log.snapshot_meta().index, log.first_index()), (2, 4));
        assert!(log.has_trimmed());
        assert_eq!(log.bytes_since_snapshot(), all, "the trim of 1..=3 straddles 2 and still counts");
        log.compact(SnapshotMeta { index: 3, term: 1 });
        assert!(!log.has_trimmed());
        assert_eq!(log.bytes_since_snapshot(), log.entries_bytes());
        // One past the trim point drops from memory again.
        log.trim_to(4);
        log.compact(SnapshotMeta { index: 5, term: 2 });
        assert_eq!((log.snapshot_meta().index, log.first_index(), log.last_index()), (5, 6, 6));
        assert_eq!(log.bytes_since_snapshot(), log.entries_bytes());
        assert_eq!(log.term(5), Some(2));
    }

    #[test]
    fn find_conflict_by_term_skips_a_run_of_higher_terms() {
        let log = log_with_terms(&[1, 1, 2, 4, 4, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3), 3);
        assert_eq!(log.find_conflict_by_term(6, 4), 6);
        assert_eq!(log.find_conflict_by_term(9, 1), 2);
        assert_eq!(log.find_conflict_by_term(6, 0), 0);
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(3, 2));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn entries_from_respects_byte_budget_but_returns_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(1, 0).map(|v| v.len()), Some(1));
        assert_eq!(log.entries_from(1, usize::MAX).map(|v| v.len()), Some(4));
        assert_eq!(log.entries_from(5, usize::MAX).map(|v| v.len()), Some(0));
    }
}
