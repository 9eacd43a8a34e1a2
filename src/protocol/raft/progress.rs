//! What a leader knows about one follower's log, and how fast it may send to it.

use std::collections::VecDeque;

/// How the leader is currently replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The match point is unknown: one append at a time until one is accepted.
    Probe,
    /// The follower is in step: appends are pipelined up to the in-flight window.
    Replicate,
    /// The follower needs a snapshot at `index`; appends wait until it has it.
    Snapshot {
        /// The snapshot index sent.
        index: u64,
    },
}

/// A leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log. Never decreases within a term.
    pub matched: u64,
    /// Next index to send. > matched.
    pub next: u64,
    /// Replication mode.
    pub state: ProgressState,
    /// In Probe: an append is out and unanswered.
    pub probe_sent: bool,
    /// In Replicate: last index of each unacknowledged append, oldest first. len <= window.
    pub inflight: VecDeque<u64>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Ticks without an acknowledgement while appends or a snapshot are out, so lost ones are resent.
    pub stalled_ticks: u32,
    /// Highest read-index round this follower has acknowledged.
    pub read_round_acked: u64,
    /// Highest commit index sent to this follower, with an append or a heartbeat.
    pub commit_sent: u64,
    /// Highest index this follower waits to see committed (a request it forwarded is there):
    /// once committed, the commit index goes to it at once, even with no entries to carry it.
    pub commit_awaited: u64,
}

impl Progress {
    /// Whether the commit index must go to this follower now, even alone: `committed` covers
    /// what it awaits, or `floor` (an index everyone must hear of), and it was not sent that yet.
    pub fn is_owed_commit(&self, committed: u64, floor: u64) -> bool {
        self.commit_sent < self.commit_awaited.max(floor).min(committed)
    }

    /// A fresh progress for a new leader whose log ends at `last_index`.
    pub fn new(last_index: u64) -> Progress {
        Progress {
            matched: 0,
            next: last_index + 1,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            stalled_ticks: 0,
            read_round_acked: 0,
            commit_sent: 0,
            commit_awaited: 0,
        }
    }

    /// Panics if a field's documented invariant broke (`next > matched`).
    fn check(&self) {
        assert!(self.next > self.matched, "progress next {} not past matched {}", self.next, self.matched);
    }

    /// Whether the leader must hold further appends to this follower for now.
    pub fn is_paused(&self, window: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= window,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Switches to Probe, restarting from just after the known match.
    pub fn become_probe(&mut self) {
        self.stalled_ticks = 0;
        if let ProgressState::Snapshot { index } = self.state {
            self.next = self.matched.max(index) + 1;
        } else {
            self.next = self.matched + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.check();
    }

    /// Switches to Replicate (pipelined appends).
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.check();
    }

    /// Switches to Snapshot: the follower is being sent the snapshot at `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot { index };
        self.probe_sent = false;
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Records that an append ending at `last` was sent, with at most `window` appends in flight.
    pub fn sent(&mut self, last: u64, had_entries: bool, window: usize) {
        match self.state {
            ProgressState::Replicate if had_entries => {
                self.next = last + 1;
                self.inflight.push_back(last);
                assert!(
                    self.inflight.len() <= window,
                    "{} appends in flight, window {window}",
                    self.inflight.len()
                );
            }
            ProgressState::Probe => self.probe_sent = true,
            _ => {}
        }
        self.check();
    }

    /// Records an accepted append up to `index`; returns whether the match point moved.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let moved = index > self.matched;
        if moved {
            self.matched = index;
            self.probe_sent = false;
            self.stalled_ticks = 0;
        }
        self.next = self.next.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        self.check();
        moved
    }

    /// Handles a rejected append of `rejected` (its prev index); `hint` is where the logs may match.
    ///
    /// Returns false for a stale rejection (one that answers an append already superseded).
    pub fn maybe_decrease(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        self.check();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_pauses_and_frees() {
        let mut pr = Progress::new(5);
        pr.matched = 5;
        pr.become_replicate();
        pr.sent(7, true, 2);
        pr.sent(9, true, 2);
        assert!(pr.is_paused(2));
        assert_eq!(pr.next, 10);
        pr.maybe_update(7);
        assert!(!pr.is_paused(2));
        assert_eq!(pr.inflight.len(), 1);
    }

    #[test]
    fn probe_rejection_uses_hint_and_ignores_stale() {
        let mut pr = Progress::new(10);
        // Leader probed at prev index 10; follower says logs can match at most at 4.
        assert!(pr.maybe_decrease(10, 4));
        assert_eq!(pr.next, 5);
        // A duplicate of the same rejection is stale now.
        assert!(!pr.maybe_decrease(10, 4));
    }
}
