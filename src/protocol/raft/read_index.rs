//! ReadIndex bookkeeping (Raft §6.4): reads confirmed by a heartbeat round, released once applied.

use std::collections::{BTreeSet, VecDeque};

use super::ready::ReadState;

/// A read waiting for a heartbeat quorum to confirm this leader's leadership.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    /// Its place in the order reads arrived (see [`ReadQueue::pending_upto`]).
    seq: u64,
    /// The index it is served at: the leader's commit index when the read arrived, or higher if
    /// it asked to follow entries appended before it.
    index: u64,
    /// The heartbeat round whose acknowledgements confirm it.
    round: u64,
}

/// A leader's queue of reads, from arrival to release.
#[derive(Debug, Default)]
pub struct ReadQueue {
    /// Reads that arrived before this leader committed an entry of its own term: its commit
    /// index might still be behind the previous leader's, so no index can be recorded yet. Each
    /// with the lowest index it may be served at (`index`) and no round yet.
    before_first_commit: Vec<PendingRead>,
    /// Reads waiting for a round's quorum, in round order.
    unconfirmed: VecDeque<PendingRead>,
    /// Reads confirmed, waiting for the state machine to reach their index, in index order (a
    /// read with a floor above the commit index is placed among them by its index).
    confirmed: VecDeque<PendingRead>,
    /// The places in arrival order of the confirmed reads, for [`Self::pending_upto`].
    confirmed_seqs: BTreeSet<u64>,
    /// The last read's place in arrival order (0 before any).
    last_seq: u64,
    /// The last round broadcast. Never decreases.
    round: u64,
    /// Reads that arrived since the last round started: if any, the next `Ready` starts one.
    next_round_reads: usize,
    /// Ticks the round in flight has been out.
    round_ticks: u32,
}

/// Ticks a read round may wait for the followers it was sent to before it goes to every peer.
pub const ROUND_PATIENCE_TICKS: u32 = 2;

impl ReadQueue {
    /// Queues a read that must wait for the leader's first commit in its term, to be served at
    /// the term's first entry (see [`Self::first_commit`]) or at `floor` if higher.
    pub fn wait_for_commit(&mut self, ctx: u64, floor: u64) {
        self.last_seq += 1;
        self.before_first_commit.push(PendingRead { ctx, seq: self.last_seq, index: floor, round: 0 });
    }

    /// Queues a read to be served at `index` (the commit index when it arrived, or its floor),
    /// to be confirmed by the next round.
    pub fn push(&mut self, ctx: u64, index: u64) {
        self.last_seq += 1;
        self.queue_for_round(PendingRead { ctx, seq: self.last_seq, index, round: 0 });
    }

    fn queue_for_round(&mut self, mut read: PendingRead) {
        read.round = self.round + 1;
        self.unconfirmed.push_back(read);
        self.next_round_reads += 1;
    }

    /// The leader committed in its own term, whose first entry is at `term_start`: reads held
    /// for that get an index now, that entry's (everything committed before they arrived is
    /// below it) or their floor if higher.
    pub fn first_commit(&mut self, term_start: u64) {
        for mut read in std::mem::take(&mut self.before_first_commit) {
            read.index = read.index.max(term_start);
            self.queue_for_round(read);
        }
    }

    /// The place in arrival order of the last read queued (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether a read that arrived at or before place `seq` is still waiting (not yet released
    /// or dropped).
    pub fn pending_upto(&self, seq: u64) -> bool {
        // The first two are in arrival order; the confirmed ones are in index order.
        self.before_first_commit.first().is_some_and(|r| r.seq <= seq)
            || self.unconfirmed.front().is_some_and(|r| r.seq <= seq)
            || self.confirmed_seqs.first().is_some_and(|&first| first <= seq)
    }

    /// If reads wait for a round and none is in flight, starts one and returns its number (to
    /// put in heartbeats) and how many reads it is for.
    ///
    /// One round at a time, as etcd's read loop does: reads that arrive while a round is out
    /// share the next one, so a burst of reads costs one heartbeat per follower per round trip
    /// rather than one per arrival, at the price of waiting up to two round trips instead of one.
    pub fn start_round(&mut self) -> Option<(u64, usize)> {
        if self.next_round_reads == 0 || self.round_in_flight() {
            return None;
        }
        let reads = std::mem::take(&mut self.next_round_reads);
        self.round += 1;
        self.round_ticks = 0;
        Some((self.round, reads))
    }

    /// Called every tick: true once the round in flight ([`Self::round`]) has waited
    /// [`ROUND_PATIENCE_TICKS`], for the caller to send it to every peer (once per round).
    ///
    /// A round for a single read first goes only to as many followers as make a quorum; if one
    /// of them is slow or gone, this bounds how long its read waits (a full tick at least,
    /// whenever the round started). A round for more reads went to every peer at the start.
    pub fn tick(&mut self) -> bool {
        if !self.round_in_flight() {
            return false;
        }
        self.round_ticks = self.round_ticks.saturating_add(1);
        self.round_ticks == ROUND_PATIENCE_TICKS
    }

    /// A started round still waits for its quorum (a read of it is unconfirmed).
    pub fn round_in_flight(&self) -> bool {
        self.unconfirmed.front().is_some_and(|r| r.round <= self.round)
    }

    /// The last round started (0 before any).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Confirms every read whose round is acknowledged by a quorum; `acked` says for a round
    /// whether a quorum (the leader included) has acknowledged it or a later one.
    pub fn confirm(&mut self, acked: impl Fn(u64) -> bool) {
        // Reads share rounds, and are in round order: each round is asked about once.
        let mut acked_round = None;
        while let Some(read) = self.unconfirmed.front() {
            if acked_round != Some(read.round) {
                if !acked(read.round) {
                    break;
                }
                acked_round = Some(read.round);
            }
            // Mostly at the back: only a read with a floor can have an index above a later one's.
            let at = self.confirmed.partition_point(|r| r.index <= read.index);
            self.confirmed.insert(at, *read);
            self.confirmed_seqs.insert(read.seq);
            self.unconfirmed.pop_front();
        }
    }

    /// Removes and returns the confirmed reads whose index is at or below `applied`.
    pub fn release(&mut self, applied: u64) -> Vec<ReadState> {
        let mut out = Vec::new();
        while let Some(read) = self.confirmed.pop_front() {
            if read.index > applied {
                self.confirmed.push_front(read);
                break;
            }
            self.confirmed_seqs.remove(&read.seq);
            out.push(ReadState { ctx: read.ctx, index: read.index });
        }
        out
    }

    /// Whether `release(applied)` would return something, or a round should start.
    pub fn has_work(&self, applied: u64) -> bool {
        (self.next_round_reads > 0 && !self.round_in_flight())
            || self.confirmed.front().is_some_and(|r| r.index <= applied)
    }

    /// Leadership is lost: returns the tokens of reads not yet confirmed, and of confirmed
    /// reads whose index is above `committed`.
    ///
    /// Confirmed reads at or below it stay: leadership was proven after they arrived, and that
    /// index of the log is settled, so it is still a correct lower bound and they may be served
    /// once it is applied. One above it is a floor naming entries of this leader's that a new
    /// leader may replace: its read is failed rather than left to wait for whatever comes to
    /// fill those indexes (and, should this replica lead again, to hold the apply barrier of an
    /// entry below its index forever).
    pub fn drop_unsettled(&mut self, committed: u64) -> Vec<u64> {
        self.next_round_reads = 0;
        let mut dropped: Vec<u64> = self.before_first_commit.drain(..).map(|r| r.ctx).collect();
        dropped.extend(self.unconfirmed.drain(..).map(|r| r.ctx));
        // In index order: the reads above `committed` are the last ones.
        let settled = self.confirmed.partition_point(|r| r.index <= committed);
        for read in self.confirmed.drain(settled..) {
            self.confirmed_seqs.remove(&read.seq);
            dropped.push(read.ctx);
        }
        dropped
    }

    /// Leadership is lost while a proposal waits for the reads before it: returns every read's
    /// token, the confirmed ones' too (they would be served at whatever state the replica
    /// reaches next, a received snapshot's included, which may hold that proposal).
    pub fn drop_all(&mut self) -> Vec<u64> {
        let mut dropped = self.drop_unsettled(0);
        dropped.extend(self.confirmed.drain(..).map(|r| r.ctx));
        self.confirmed_seqs.clear();
        dropped
    }

    /// Number of reads not yet released.
    pub fn len(&self) -> usize {
        self.before_first_commit.len() + self.unconfirmed.len() + self.confirmed.len()
    }

    /// True when no read is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(queue: &mut ReadQueue, applied: u64) -> Vec<(u64, u64)> {
        queue.release(applied).into_iter().map(|r| (r.ctx, r.index)).collect()
    }

    #[test]
    fn a_read_with_a_floor_waits_for_it_without_holding_up_later_reads() {
        let mut queue = ReadQueue::default();
        queue.push(1, 10);
        queue.push(2, 14); // its floor: entries appended up to 14 before it
        queue.push(3, 10);
        assert_eq!(queue.start_round(), Some((1, 3)));
        queue.confirm(|round| round >= 1);
        assert_eq!(released(&mut queue, 12), vec![(1, 10), (3, 10)], "read 3 passes read 2's floor");
        assert!(!queue.pending_upto(1) && queue.pending_upto(2) && queue.pending_upto(3));
        assert_eq!(released(&mut queue, 13), vec![]);
        assert_eq!(released(&mut queue, 14), vec![(2, 14)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_read_before_the_first_commit_keeps_its_floor() {
        let mut queue = ReadQueue::default();
        queue.wait_for_commit(1, 0);
        queue.wait_for_commit(2, 9);
        queue.first_commit(7);
        assert_eq!(queue.start_round(), Some((1, 2)));
        queue.confirm(|_| true);
        assert_eq!(released(&mut queue, 8), vec![(1, 7)]);
        assert_eq!(released(&mut queue, 9), vec![(2, 9)]);
        queue.wait_for_commit(3, 5);
        assert_eq!(queue.drop_unsettled(9), vec![3]);
    }

    #[test]
    fn a_step_down_fails_confirmed_reads_whose_floor_is_not_committed() {
        let mut queue = ReadQueue::default();
        queue.push(1, 10);
        queue.push(2, 14); // a floor over entries 11..=14, not committed
        queue.push(3, 10);
        assert_eq!(queue.start_round(), Some((1, 3)));
        queue.confirm(|_| true);
        queue.push(4, 10); // not yet in a round
        let mut dropped = queue.drop_unsettled(12);
        dropped.sort();
        assert_eq!(dropped, vec![2, 4]);
        assert_eq!(released(&mut queue, 20), vec![(1, 10), (3, 10)], "settled reads are still served");
        assert!(!queue.pending_upto(queue.last_seq()));
    }
}
