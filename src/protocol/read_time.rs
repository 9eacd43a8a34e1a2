//! The time a read is judged at, for keys with a time to live: entries carry the leader's clock
//! (stamped when proposed), and a read is judged at a time between the stamps of the entries
//! around its place in the log, never earlier than a read that completed before it started.
//!
//! A read's place is the applied index it is served at. An entry appended before the read was
//! confirmed but applied after it carries an earlier stamp than the leader's clock when the read
//! is served, so the leader caps the read's time at the first stamp after that place: an
//! `EXPIRE` proposed a millisecond before a key's deadline, still in flight when a read of the
//! key is confirmed, must not find the key already gone.

use std::collections::BTreeMap;

use super::command::entry_stamp;
use super::raft::RaftLog;

/// Entries a leader looks through for the next stamp before it takes the earliest time there is.
pub const STAMP_LOOK_AHEAD: u64 = 64;

/// The times a follower judges its reads at: each read-index answer's clock, which the
/// leader capped at the stamp of its first entry after that index, counts for reads served at
/// or past that index, never before it.
///
/// So a read served with the state at applied index `a` is judged no later than the first entry
/// after `a` (whose writes come after it: an `EXPIRE` appended just before the read was confirmed
/// must not find the key already gone), and no earlier than any read confirmed at or below `a`.
#[derive(Debug, Default)]
pub struct ReadClocks {
    /// The latest clock of an answer at or below the applied index so far.
    floor: u64,
    /// Answers above it: index, clock.
    pending: BTreeMap<u64, u64>,
}

impl ReadClocks {
    /// Notes a read-index answer: `index` confirmed at the leader's `clock_ms`.
    pub fn confirmed(&mut self, index: u64, clock_ms: u64) {
        let clock = self.pending.entry(index).or_insert(clock_ms);
        *clock = (*clock).max(clock_ms);
    }

    /// The time for a read served with the state at `applied` (the applier never judges it
    /// earlier than its own clock there).
    pub fn at(&mut self, applied: u64) -> u64 {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > applied {
                break;
            }
            self.floor = self.floor.max(entry.remove());
        }
        self.floor
    }
}

/// The time a leader gives a read (or a read-index answer) at `index`: its clock now, but no
/// later than the stamp of its first stamped entry after `index` (`next_stamp`), whose writes
/// the read does not see.
pub fn read_time(now_ms: u64, next_stamp: Option<u64>) -> u64 {
    next_stamp.map_or(now_ms, |stamp| now_ms.min(stamp))
}

/// The stamp of the first stamped entry after `index` in `log` (`None`: none after it); one it
/// cannot tell (not in memory, or past [`STAMP_LOOK_AHEAD`] entries) counts as 0, the earliest.
pub fn next_stamp(log: &RaftLog, index: u64) -> Option<u64> {
    for at in index + 1..=log.last_index().min(index + STAMP_LOOK_AHEAD) {
        match log.entry(at) {
            Some(entry) => {
                if let Some(stamp) = entry_stamp(&entry.data) {
                    return Some(stamp);
                }
            }
            None => return Some(0),
        }
    }
    (log.last_index() > index + STAMP_LOOK_AHEAD).then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::{encode_entry, stamp_entry, Command, Proposal};
    use crate::protocol::raft::{Entry, EntryKind, SnapshotMeta};

    #[test]
    fn a_follower_judges_a_read_at_the_clock_of_answers_at_or_below_its_state() {
        let mut clocks = ReadClocks::default();
        clocks.confirmed(10, 1000);
        clocks.confirmed(20, 1500);
        assert_eq!(clocks.at(9), 0, "no answer at or below 9 yet: the applier's own clock rules");
        assert_eq!(clocks.at(15), 1000, "the answer at 20 may lie past entries after 15");
        assert_eq!(clocks.at(20), 1500);
        clocks.confirmed(25, 1200); // an older leader's, late
        assert_eq!(clocks.at(30), 1500, "never earlier than a read already judged");
        assert_eq!(read_time(1002, Some(998)), 998, "not past an entry appended before it");
        assert_eq!(read_time(1002, Some(1005)), 1002);
        assert_eq!(read_time(1002, None), 1002);
    }

    #[test]
    fn the_next_stamp_skips_unstamped_entries_and_is_earliest_when_unknown() {
        let stamped = |index: u64, stamp: u64| {
            let command = Command::ReclaimExpired { limit: 1 };
            let mut data = encode_entry(&Proposal { request_id: 0, session: None, command }).expect("encode");
            assert!(stamp_entry(&mut data, stamp));
            Entry { term: 1, index, data: data.into(), kind: EntryKind::Normal }
        };
        let noop = |index: u64| Entry { term: 1, index, data: Vec::new().into(), kind: EntryKind::Normal };
        let entries = vec![stamped(1, 900), noop(2), stamped(3, 998)];
        let log = RaftLog::restore(SnapshotMeta::default(), entries, 0);
        assert_eq!(next_stamp(&log, 0), Some(900));
        assert_eq!(next_stamp(&log, 1), Some(998), "a no-op moves no clock");
        assert_eq!(next_stamp(&log, 3), None, "nothing after the last entry");
        let long: Vec<Entry> = (1..=STAMP_LOOK_AHEAD + 2).map(noop).collect();
        let log = RaftLog::restore(SnapshotMeta::default(), long, 0);
        assert_eq!(next_stamp(&log, 0), Some(0), "past the look-ahead: the earliest time");
    }
}
