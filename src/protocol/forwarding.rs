//! Forwarding rules: what a follower keeps while the leader works on requests it forwarded, and
//! how a leader tells a forwarded request it has not seen from a repeat.
//!
//! A follower gives every forward an id, increasing within its run, and keeps the request's
//! waiter under it until the leader answers, the leader changes, or the request is too old to
//! matter (its waiter has timed out). Reads are forwarded in batches: every read that arrives
//! between two drives shares one read-index request, and once the leader answers an index they
//! wait, by index, for the follower's own state machine to reach it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::raft::NodeId;

/// Forwarded writes a follower keeps in flight before new ones are refused (`-TRYAGAIN` busy).
pub const MAX_FORWARDED_WRITES: usize = 4096;
/// Bytes of forwarded proposals a follower keeps in flight before new ones are refused.
pub const MAX_FORWARDED_BYTES: usize = 64 * 1024 * 1024;
/// Forwarded admin requests a follower keeps in flight.
pub const MAX_FORWARDED_ADMIN: usize = 64;
/// Forward ids a leader remembers per follower; an id further back than this is refused busy.
pub const REPEAT_WINDOW: u64 = 1 << 14;

/// Something a follower sent to the leader and is waiting on.
#[derive(Debug)]
struct Sent<T> {
    /// The tick it was sent at.
    tick: u64,
    item: T,
    /// Bytes it holds (proposals only).
    bytes: usize,
}

/// What was in flight when the leader changed or time ran out: each must be failed.
#[derive(Debug)]
pub struct Abandoned<W, R, A> {
    /// Writes whose fate is unknown.
    pub writes: Vec<W>,
    /// Reads not confirmed.
    pub reads: Vec<R>,
    /// Admin requests whose fate is unknown.
    pub admins: Vec<A>,
}

impl<W, R, A> Abandoned<W, R, A> {
    fn none() -> Abandoned<W, R, A> {
        Abandoned { writes: Vec::new(), reads: Vec::new(), admins: Vec::new() }
    }

    /// True when nothing was abandoned.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.reads.is_empty() && self.admins.is_empty()
    }
}

/// A follower's forwarded requests, by forward id: writes `W`, reads `R`, admin requests `A`.
#[derive(Debug)]
pub struct Outbox<W, R, A> {
    next_id: u64,
    writes: HashMap<u64, Sent<W>>,
    write_bytes: usize,
    /// Reads that arrived since the last batch went out.
    unsent_reads: Vec<R>,
    /// Batches at the leader, waiting for a read index.
    read_batches: HashMap<u64, Sent<Vec<R>>>,
    /// Reads with a read index, waiting for this replica to apply it, by index.
    confirmed_reads: BTreeMap<u64, Vec<R>>,
    confirmed_count: usize,
    admins: HashMap<u64, Sent<A>>,
    /// Admin requests done at the leader, waiting for this replica to apply their index.
    applied_admins: Vec<(u64, A)>,
}

impl<W, R, A> Default for Outbox<W, R, A> {
    fn default() -> Self {
        Outbox::new()
    }
}

impl<W, R, A> Outbox<W, R, A> {
    /// An empty outbox.
    pub fn new() -> Outbox<W, R, A> {
        Outbox {
            next_id: 1,
            writes: HashMap::new(),
            write_bytes: 0,
            unsent_reads: Vec::new(),
            read_batches: HashMap::new(),
            confirmed_reads: BTreeMap::new(),
            confirmed_count: 0,
            admins: HashMap::new(),
            applied_admins: Vec::new(),
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Reads held anywhere in the outbox.
    pub fn reads_len(&self) -> usize {
        self.unsent_reads.len()
            + self.read_batches.values().map(|b| b.item.len()).sum::<usize>()
            + self.confirmed_count
    }

    /// Keeps a write of `bytes` proposal bytes sent at `tick`; returns its forward id, or the
    /// write back when the outbox is full.
    pub fn add_write(&mut self, tick: u64, bytes: usize, write: W) -> Result<u64, W> {
        if self.writes.len() >= MAX_FORWARDED_WRITES
            || (self.write_bytes > 0 && self.write_bytes + bytes > MAX_FORWARDED_BYTES)
        {
            return Err(write);
        }
        let id = self.take_id();
        self.write_bytes += bytes;
        self.writes.insert(id, Sent { tick, item: write, bytes });
        Ok(id)
    }

    /// The write forwarded as `id`, once its answer came (`None`: unknown or already settled).
    pub fn take_write(&mut self, id: u64) -> Option<W> {
        let sent = self.writes.remove(&id)?;
        self.write_bytes -= sent.bytes;
        Some(sent.item)
    }

    /// Queues a read for the next batch.
    pub fn add_read(&mut self, read: R) {
        self.unsent_reads.push(read);
    }

    /// Makes the reads queued since the last call one batch sent at `tick`; returns its id.
    pub fn send_reads(&mut self, tick: u64) -> Option<u64> {
        if self.unsent_reads.is_empty() {
            return None;
        }
        let id = self.take_id();
        let batch = std::mem::take(&mut self.unsent_reads);
        self.read_batches.insert(id, Sent { tick, item: batch, bytes: 0 });
        Some(id)
    }

    /// The leader gave `index` for batch `id`: its reads wait for this replica to apply it.
    pub fn confirm_reads(&mut self, id: u64, index: u64) {
        if let Some(batch) = self.read_batches.remove(&id) {
            self.confirmed_count += batch.item.len();
            self.confirmed_reads.entry(index).or_default().extend(batch.item);
        }
    }

    /// The leader could not confirm batch `id`: its reads, to be failed.
    pub fn fail_reads(&mut self, id: u64) -> Vec<R> {
        self.read_batches.remove(&id).map(|b| b.item).unwrap_or_default()
    }

    /// The confirmed reads whose index is at or below `applied`: they may be served now.
    pub fn release_reads(&mut self, applied: u64) -> Vec<R> {
        let mut out = Vec::new();
        while let Some(entry) = self.confirmed_reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            out.extend(entry.remove());
        }
        self.confirmed_count -= out.len();
        out
    }

    /// Keeps an admin request sent at `tick`; returns its forward id, or the request back when
    /// the outbox is full.
    pub fn add_admin(&mut self, tick: u64, admin: A) -> Result<u64, A> {
        if self.admins.len() + self.applied_admins.len() >= MAX_FORWARDED_ADMIN {
            return Err(admin);
        }
        let id = self.take_id();
        self.admins.insert(id, Sent { tick, item: admin, bytes: 0 });
        Ok(id)
    }

    /// The admin request forwarded as `id`, once its answer came.
    pub fn take_admin(&mut self, id: u64) -> Option<A> {
        self.admins.remove(&id).map(|s| s.item)
    }

    /// An admin request done at the leader waits for this replica to apply `index`.
    pub fn admin_applied_at(&mut self, index: u64, admin: A) {
        self.applied_admins.push((index, admin));
    }

    /// The admin requests whose index is at or below `applied`.
    pub fn release_admins(&mut self, applied: u64) -> Vec<A> {
        let (done, waiting) =
            std::mem::take(&mut self.applied_admins).into_iter().partition(|(i, _)| *i <= applied);
        self.applied_admins = waiting;
        done.into_iter().map(|(_, a)| a).collect()
    }

    /// The leader this replica forwards to changed: everything the old one held is abandoned.
    ///
    /// Confirmed reads stay (their index was confirmed by a leader after they arrived, so it is
    /// still a correct lower bound), and so do admin requests already done.
    pub fn leader_changed(&mut self) -> Abandoned<W, R, A> {
        self.write_bytes = 0;
        Abandoned {
            writes: self.writes.drain().map(|(_, s)| s.item).collect(),
            reads: self.read_batches.drain().flat_map(|(_, s)| s.item).collect(),
            admins: self.admins.drain().map(|(_, s)| s.item).collect(),
        }
    }

    /// Requests sent before `tick` that are still unanswered: abandoned (their waiters have
    /// given up by now), so a leader that never answers cannot make the outbox grow.
    pub fn expire(&mut self, tick: u64) -> Abandoned<W, R, A> {
        let mut out = Abandoned::none();
        let old: Vec<u64> = self.writes.iter().filter(|(_, s)| s.tick < tick).map(|(&id, _)| id).collect();
        out.writes.extend(old.into_iter().filter_map(|id| self.take_write(id)));
        let old: Vec<u64> =
            self.read_batches.iter().filter(|(_, s)| s.tick < tick).map(|(&id, _)| id).collect();
        out.reads.extend(old.into_iter().flat_map(|id| self.fail_reads(id)));
        let old: Vec<u64> = self.admins.iter().filter(|(_, s)| s.tick < tick).map(|(&id, _)| id).collect();
        out.admins.extend(old.into_iter().filter_map(|id| self.take_admin(id)));
        out
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.unsent_reads.is_empty()
            && self.read_batches.is_empty()
            && self.confirmed_reads.is_empty()
            && self.admins.is_empty()
            && self.applied_admins.is_empty()
    }
}

/// What a leader remembers of one follower run's forward ids.
#[derive(Debug, Default)]
struct SeenIds {
    run: u64,
    highest: u64,
    /// Ids seen within [`REPEAT_WINDOW`] below `highest`.
    seen: BTreeSet<u64>,
}

/// Whether a forwarded request is new, a repeat, or too old to tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Not seen before: carry it out.
    New,
    /// Seen before (a duplicated frame): ignore it.
    Repeat,
    /// Too far behind the newest id to tell: refuse it (nothing is appended).
    TooOld,
}

/// A leader's record of the forward ids it has taken, per follower: a request is carried out at
/// most once even if the network delivers its frame twice.
#[derive(Debug, Default)]
pub struct RepeatFilter {
    by_follower: HashMap<NodeId, SeenIds>,
}

impl RepeatFilter {
    /// Records forward `id` of `follower`'s run `run`, and says whether it is new.
    pub fn check(&mut self, follower: NodeId, run: u64, id: u64) -> Freshness {
        let ids = self.by_follower.entry(follower).or_default();
        if ids.run != run {
            // A restarted follower: its ids start again.
            *ids = SeenIds { run, highest: 0, seen: BTreeSet::new() };
        }
        if id + REPEAT_WINDOW <= ids.highest {
            return Freshness::TooOld;
        }
        if !ids.seen.insert(id) {
            return Freshness::Repeat;
        }
        if id > ids.highest {
            ids.highest = id;
            let floor = ids.highest.saturating_sub(REPEAT_WINDOW);
            while ids.seen.first().is_some_and(|&first| first <= floor) {
                ids.seen.pop_first();
            }
        }
        Freshness::New
    }

    /// Forgets a follower (it left the membership).
    pub fn forget(&mut self, follower: NodeId) {
        self.by_follower.remove(&follower);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Box3 = Outbox<&'static str, u32, char>;

    #[test]
    fn writes_are_bounded_by_count_and_bytes_and_answered_once() {
        let mut outbox = Box3::new();
        let a = outbox.add_write(0, MAX_FORWARDED_BYTES, "a").expect("first always fits");
        assert_eq!(outbox.add_write(0, 1, "b"), Err("b"));
        assert_eq!(outbox.take_write(a), Some("a"));
        assert_eq!(outbox.take_write(a), None, "a duplicated answer finds nothing");
        for _ in 0..MAX_FORWARDED_WRITES {
            outbox.add_write(0, 1, "w").expect("room");
        }
        assert_eq!(outbox.add_write(0, 1, "x"), Err("x"));
    }

    #[test]
    fn reads_go_in_batches_and_are_released_by_applied_index() {
        let mut outbox = Box3::new();
        assert_eq!(outbox.send_reads(0), None);
        outbox.add_read(1);
        outbox.add_read(2);
        let first = outbox.send_reads(0).expect("a batch");
        outbox.add_read(3);
        let second = outbox.send_reads(1).expect("a batch");
        assert_ne!(first, second);
        outbox.confirm_reads(second, 7);
        outbox.confirm_reads(first, 5);
        assert_eq!(outbox.reads_len(), 3);
        assert!(outbox.release_reads(4).is_empty());
        assert_eq!(outbox.release_reads(6), vec![1, 2]);
        assert_eq!(outbox.release_reads(9), vec![3]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_leader_change_abandons_what_is_in_flight_but_keeps_confirmed_reads() {
        let mut outbox = Box3::new();
        outbox.add_write(0, 10, "w").expect("room");
        outbox.add_read(1);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 3);
        outbox.add_read(2);
        outbox.send_reads(0);
        let admin = outbox.add_admin(0, 'a').expect("room");
        let gone = outbox.leader_changed();
        assert_eq!((gone.writes, gone.reads, gone.admins), (vec!["w"], vec![2], vec!['a']));
        assert_eq!(outbox.take_admin(admin), None);
        assert_eq!(outbox.release_reads(3), vec![1]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn unanswered_requests_expire() {
        let mut outbox = Box3::new();
        outbox.add_write(1, 10, "old").expect("room");
        outbox.add_write(5, 10, "new").expect("room");
        outbox.add_read(1);
        outbox.send_reads(1);
        outbox.add_admin(1, 'a').expect("room");
        let gone = outbox.expire(3);
        assert_eq!((gone.writes, gone.reads, gone.admins), (vec!["old"], vec![1], vec!['a']));
        assert!(!outbox.is_empty(), "the newer write stays");
    }

    #[test]
    fn admin_requests_done_at_the_leader_wait_for_the_local_apply() {
        let mut outbox = Box3::new();
        let id = outbox.add_admin(0, 'a').expect("room");
        let admin = outbox.take_admin(id).expect("kept");
        outbox.admin_applied_at(9, admin);
        assert!(outbox.release_admins(8).is_empty());
        assert_eq!(outbox.release_admins(9), vec!['a']);
    }

    #[test]
    fn the_repeat_filter_takes_each_id_once_per_run() {
        let mut filter = RepeatFilter::default();
        assert_eq!(filter.check(2, 1, 5), Freshness::New);
        assert_eq!(filter.check(2, 1, 5), Freshness::Repeat);
        assert_eq!(filter.check(2, 1, 3), Freshness::New, "reordered, not repeated");
        assert_eq!(filter.check(3, 1, 5), Freshness::New, "another follower");
        assert_eq!(filter.check(2, 1, 5 + REPEAT_WINDOW), Freshness::New);
        assert_eq!(filter.check(2, 1, 5), Freshness::TooOld);
        assert_eq!(filter.check(2, 9, 5), Freshness::New, "a new run starts again");
        filter.forget(2);
        assert_eq!(filter.check(2, 9, 5), Freshness::New);
    }
}
