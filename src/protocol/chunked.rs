//! A deque held in fixed-size chunks, so growing it never moves what it holds.
//!
//! The Raft log and the WAL's index of it hold an item per entry since the last snapshot, a
//! million and more under load. A `Vec` or `VecDeque` that size doubles by copying every item
//! into fresh memory, and on a virtual machine the first touch of that memory is slow: measured
//! here, the Raft log's `Vec<Entry>` growing from 48 to 96 MB stalled the consensus thread for
//! half a second (`clear_page_erms` under `RawVec::finish_grow`), and the WAL index's `VecDeque`
//! stalled the disk thread for 150 ms. In chunks, appending allocates at most one chunk and
//! dropping a compacted prefix frees whole chunks: neither copies the items that stay.

use std::collections::VecDeque;

/// Items per chunk: 4,096 (about 200 KB of log entries), small next to the log and big enough
/// that the deque of chunks stays short.
const CHUNK_ITEMS: usize = 4096;

/// A sequence addressed by position from 0: pushed and cut at the back, dropped from the front.
#[derive(Debug, Clone)]
pub struct ChunkedDeque<T> {
    /// Every chunk but the last holds exactly `CHUNK_ITEMS`; the last holds 1 to that many.
    chunks: VecDeque<Vec<T>>,
    /// Leading slots of the first chunk already dropped (freed with their chunk).
    dead: usize,
    /// Live items.
    len: usize,
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> Self {
        ChunkedDeque { chunks: VecDeque::new(), dead: 0, len: 0 }
    }
}

impl<T> ChunkedDeque<T> {
    /// Holds `items`, in order.
    pub fn from_vec(items: Vec<T>) -> ChunkedDeque<T> {
        let mut held = ChunkedDeque::default();
        for item in items {
            held.push_back(item);
        }
        held
    }

    /// Number of live items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No live item.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `position`, if held.
    pub fn get(&self, position: usize) -> Option<&T> {
        if position >= self.len {
            return None;
        }
        let slot = self.dead + position;
        Some(&self.chunks[slot / CHUNK_ITEMS][slot % CHUNK_ITEMS])
    }

    /// The last item.
    pub fn last(&self) -> Option<&T> {
        // No chunk is kept without a live item (emptying clears them all).
        self.chunks.back().and_then(|chunk| chunk.last())
    }

    /// Every item, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.iter_from(0)
    }

    /// The items from `position` to the end, in order.
    pub fn iter_from(&self, position: usize) -> impl Iterator<Item = &T> {
        let slot = self.dead + position.min(self.len);
        let (first, offset) = (slot / CHUNK_ITEMS, slot % CHUNK_ITEMS);
        self.chunks
            .range(first.min(self.chunks.len())..)
            .enumerate()
            .flat_map(move |(n, chunk)| chunk[if n == 0 { offset } else { 0 }..].iter())
    }

    /// The items in `[from, to)`, in order.
    pub fn range(&self, from: usize, to: usize) -> impl Iterator<Item = &T> {
        self.iter_from(from).take(to.saturating_sub(from))
    }

    /// Appends `item` at the back.
    pub fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < CHUNK_ITEMS => chunk.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_ITEMS);
                chunk.push(item);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Keeps the first `len` items and drops the rest.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        if len == 0 {
            return self.clear();
        }
        let slots = self.dead + len;
        let chunks = slots.div_ceil(CHUNK_ITEMS);
        self.chunks.truncate(chunks);
        if let Some(last) = self.chunks.back_mut() {
            last.truncate(slots - (chunks - 1) * CHUNK_ITEMS);
        }
        self.len = len;
    }

    /// Drops every item.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.dead = 0;
        self.len = 0;
    }

    /// Drops the first `count` items (all of them if there are fewer), handing back the chunks
    /// that no longer hold a live item so the caller can free them where it costs least.
    ///
    /// The dropped head of a chunk stays until its last item goes. Freeing a few hundred thousand
    /// log entries took the consensus thread 7-27 ms here, so callers on a hot thread pass the
    /// chunks to a background one.
    pub fn drop_front(&mut self, count: usize) -> Vec<Vec<T>> {
        let count = count.min(self.len);
        if count == self.len {
            let freed = std::mem::take(&mut self.chunks).into();
            self.clear();
            return freed;
        }
        let slots = self.dead + count;
        let freed = self.chunks.drain(..slots / CHUNK_ITEMS).collect();
        self.dead = slots % CHUNK_ITEMS;
        self.len -= count;
        freed
    }

    /// The live items, in order, by value.
    pub fn into_items(self) -> impl Iterator<Item = T> {
        self.chunks.into_iter().flatten().skip(self.dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::raft::Entry;

    fn entry(index: u64) -> Entry {
        Entry { index, term: 1, data: vec![index as u8; 3].into(), ..Entry::default() }
    }

    fn indexes<'a>(iter: impl Iterator<Item = &'a Entry>) -> Vec<u64> {
        iter.map(|e| e.index).collect()
    }

    /// Every operation, across chunk boundaries, against a plain `Vec` doing the same.
    #[test]
    fn chunked_entries_behave_like_a_vec() {
        let n = CHUNK_ITEMS as u64;
        let mut held = ChunkedDeque::from_vec((1..=2 * n + 5).map(entry).collect());
        let mut model: Vec<Entry> = (1..=2 * n + 5).map(entry).collect();
        let check = |held: &ChunkedDeque<Entry>, model: &[Entry]| {
            assert_eq!(held.len(), model.len());
            assert_eq!(held.last().map(|e| e.index), model.last().map(|e| e.index));
            assert_eq!(indexes(held.iter_from(0)), indexes(model.iter()));
            for at in [0, 1, CHUNK_ITEMS - 1, CHUNK_ITEMS, model.len().saturating_sub(1), model.len()] {
                assert_eq!(held.get(at).map(|e| e.index), model.get(at).map(|e| e.index), "get {at}");
                assert_eq!(indexes(held.iter_from(at)), indexes(model.iter().skip(at)), "from {at}");
                assert_eq!(indexes(held.range(at, at + 7)), indexes(model.iter().skip(at).take(7)));
            }
        };
        check(&held, &model);
        held.drop_front(CHUNK_ITEMS + 3);
        model.drain(..CHUNK_ITEMS + 3);
        check(&held, &model);
        held.truncate(CHUNK_ITEMS - 2);
        model.truncate(CHUNK_ITEMS - 2);
        check(&held, &model);
        for index in 0..n + 1 {
            held.push_back(entry(10_000 + index));
            model.push(entry(10_000 + index));
        }
        check(&held, &model);
        held.drop_front(CHUNK_ITEMS - 3);
        model.drain(..CHUNK_ITEMS - 3);
        check(&held, &model);
        held.truncate(1);
        model.truncate(1);
        check(&held, &model);
        held.drop_front(5);
        model.clear();
        check(&held, &model);
        held.push_back(entry(7));
        model.push(entry(7));
        check(&held, &model);
    }

    proptest::proptest! {
        /// Random pushes, cuts and dropped prefixes agree with a `Vec` at every step.
        #[test]
        fn any_sequence_of_operations_matches_a_vec(ops in proptest::collection::vec((0u8..3, 0usize..3 * CHUNK_ITEMS), 1..12)) {
            let (mut held, mut model, mut next) = (ChunkedDeque::default(), Vec::new(), 1u64);
            let mut dropped_up_to = 0;
            for (op, n) in ops {
                match op {
                    0 => for _ in 0..n {
                        held.push_back(entry(next));
                        model.push(entry(next));
                        next += 1;
                    },
                    1 => {
                        let keep = n % (model.len() + 1);
                        held.truncate(keep);
                        model.truncate(keep);
                    }
                    _ => {
                        let dropped = model.drain(..n.min(model.len())).map(|e| e.index).max();
                        dropped_up_to = dropped_up_to.max(dropped.unwrap_or(0));
                        let freed = held.drop_front(n);
                        // What is handed back holds only dropped items, never a live one.
                        proptest::prop_assert!(freed.iter().flatten().all(|e| e.index <= dropped_up_to));
                    }
                }
                proptest::prop_assert_eq!(held.len(), model.len());
                proptest::prop_assert_eq!(indexes(held.iter_from(0)), indexes(model.iter()));
                let at = n % (model.len() + 1);
                proptest::prop_assert_eq!(held.get(at).map(|e| e.index), model.get(at).map(|e| e.index));
                proptest::prop_assert_eq!(indexes(held.range(at, at + 5000)), indexes(model.iter().skip(at).take(5000)));
            }
        }
    }

    #[test]
    fn a_dropped_prefix_frees_whole_chunks_and_keeps_the_rest_in_place() {
        let mut held = ChunkedDeque::from_vec((1..=CHUNK_ITEMS as u64 * 3).map(entry).collect());
        let kept = held.get(CHUNK_ITEMS + 10).map(|e| e as *const Entry);
        let freed = held.drop_front(CHUNK_ITEMS + 10);
        assert_eq!(held.chunks.len(), 2, "the first chunk is freed");
        assert_eq!(freed.len(), 1, "and handed back");
        assert_eq!(indexes(freed[0].iter()), (1..=CHUNK_ITEMS as u64).collect::<Vec<_>>());
        assert_eq!(held.get(0).map(|e| e as *const Entry), kept, "the items that stay are not moved");
        assert_eq!(held.get(0).map(|e| e.index), Some(CHUNK_ITEMS as u64 + 11));
        assert_eq!(held.into_items().next().map(|e| e.index), Some(CHUNK_ITEMS as u64 + 11));
    }
}
