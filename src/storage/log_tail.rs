//! The log after the snapshot, in memory: the overwrite and compaction rules shared by the WAL's
//! replay, the live WAL and its in-memory twin, so all three decide alike.

use super::error::{Result, StorageError};
use crate::protocol::chunked::ChunkedDeque;
use crate::protocol::raft::{Entry, SnapshotMeta};

/// Checks that `entries` are consecutive and that the first follows or overwrites a log holding
/// `first..=last` (`last = first - 1` when empty).
pub(crate) fn check_follows(first: u64, last: u64, entries: &[Entry]) -> Result<()> {
    if let Some(head) = entries.first() {
        // The first entry follows or overwrites the log; the rest follow it one by one.
        let follows = (first..=last + 1).contains(&head.index);
        let bad = entries.iter().zip(head.index..).find(|(e, want)| !follows || e.index != *want);
        if let Some((entry, _)) = bad {
            return Err(StorageError::NotContiguous { index: entry.index, first, last });
        }
    }
    Ok(())
}

/// An entry (or just its term) in the in-memory view of the log, with the bytes it took on disk.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    pub(crate) term: u64,
    pub(crate) bytes: u64,
    pub(crate) value: T,
}

/// The log's suffix after the snapshot: the same rules for replay (`T = Entry`) and live (`T = ()`).
#[derive(Debug)]
pub(crate) struct Tail<T> {
    /// Index of `slots[0]` (when empty: the index the next entry would get, if known).
    pub(crate) base: u64,
    /// Consecutive entries from `base` (in chunks: a million of them never move to grow).
    pub(crate) slots: ChunkedDeque<Slot<T>>,
    /// Sum of `slots[..].bytes`.
    pub(crate) bytes: u64,
}

impl<T> Tail<T> {
    pub(crate) fn new(base: u64) -> Self {
        Tail { base, slots: ChunkedDeque::default(), bytes: 0 }
    }

    pub(crate) fn last(&self) -> Option<u64> {
        (!self.slots.is_empty()).then(|| self.base + self.slots.len() as u64 - 1)
    }

    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        let at = index.checked_sub(self.base)?;
        self.slots.get(usize::try_from(at).ok()?).map(|slot| slot.term)
    }

    /// Drops every entry at `index` and above.
    pub(crate) fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.base) as usize;
        self.bytes -= self.slots.iter_from(keep).map(|slot| slot.bytes).sum::<u64>();
        self.slots.truncate(keep);
    }

    /// Adds an entry; one at an index already present replaces it and everything after it.
    ///
    /// An index below `base` replaces the whole tail (on replay, what came before it is in a
    /// deleted segment); the caller checks that live appends never do that. A gap is refused.
    pub(crate) fn put(&mut self, index: u64, slot: Slot<T>) -> std::result::Result<(), ()> {
        match self.last() {
            None => self.base = index,
            Some(last) if index > last + 1 => return Err(()),
            Some(_) if index < self.base => {
                self.truncate_from(self.base);
                self.base = index;
            }
            Some(_) => self.truncate_from(index),
        }
        self.bytes += slot.bytes;
        self.slots.push_back(slot);
        assert_eq!(self.last(), Some(index), "tail must end at the entry just put");
        Ok(())
    }

    /// Whether the entry at `meta.index` is present with `meta.term` (or lies before this tail).
    pub(crate) fn matches(&self, meta: SnapshotMeta) -> bool {
        self.term(meta.index) == Some(meta.term) || meta.index < self.base && !self.slots.is_empty()
    }

    /// Applies a snapshot marker (Raft §7): entries after `meta` survive only if the entry at
    /// `meta.index` is present with `meta.term` (or lies before this tail).
    pub(crate) fn compact(&mut self, meta: SnapshotMeta) {
        let keeps_suffix = match self.last() {
            Some(last) if meta.index < last => {
                meta.index < self.base || self.term(meta.index) == Some(meta.term)
            }
            _ => false,
        };
        if keeps_suffix {
            if meta.index >= self.base {
                let dropped = (meta.index + 1 - self.base) as usize;
                self.bytes -= self.slots.range(0, dropped).map(|slot| slot.bytes).sum::<u64>();
                self.slots.drop_front(dropped);
                self.base = meta.index + 1;
            }
        } else {
            self.truncate_from(self.base);
            self.base = meta.index + 1;
        }
    }
}
