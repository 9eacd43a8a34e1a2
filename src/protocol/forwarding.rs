//! Forwarding rules: what a follower keeps while the leader works on requests it forwarded, and
//! how a leader tells a forwarded request it has not seen from a repeat.
//!
//! A follower gives every forward an id, increasing within its run, and keeps the request's
//! waiter under it until the leader answers, the leader changes, or the request is too old to
//! matter (its waiter has timed out). Reads are forwarded in batches: every read that arrives
//! between two drives shares one read-index request, and once the leader answers an index they
//! wait, by index, for the follower's own state machine to reach it.
//!
//! A leader takes a follower's forwarded writes in the order the follower sent them (the order
//! of its forward ids): one that arrives after a later one of the same run is refused, nothing
//! appended. The follower numbers a client's pipelined writes in the order the client sent them,
//! so they take effect in that order even where the network reorders frames (a reconnecting peer
//! link's old and new connections; the test suites' simulated network).
//!
//! A read behind writes (a client's pipeline: `SET k v` then `GET k`) also waits for the indexes
//! of the writes forwarded before it: the leader answers a forwarded write with its index as
//! soon as it is appended, so those answers usually come back before the read index does, and
//! the read is then served once this replica has applied the higher of the read index and the
//! highest index the leader gave a write (its floor), without waiting for the writes' replies.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::mem;

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
    /// Reads given up.
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

/// A read held in the outbox.
#[derive(Debug)]
struct HeldRead<R> {
    read: R,
    /// Its place in arrival order among reads (a barrier waits for the reads before it).
    seq: u64,
    /// Set for a read behind writes: it must also follow the writes forwarded before it, those
    /// whose forward ids are below this.
    after: Option<u64>,
}

/// A write forwarded behind reads: nothing from its entry on is applied here until the reads
/// held when it was forwarded are served or failed, so none of them sees it.
#[derive(Debug)]
struct Barrier {
    /// The write's forward id.
    write: u64,
    /// The tick it was forwarded at (a barrier outlives no request).
    tick: u64,
    /// The last index handed out to be applied when it was forwarded: nothing past it is until
    /// the leader gives the write's index (its entry may arrive first on a link that reorders).
    frozen_at: u64,
    /// The write's index, once the leader gave it.
    index: Option<u64>,
    /// The reads before it: those whose seq is below this.
    reads_below: u64,
}

/// Indexes kept in [`Outbox`]'s `proposed` before the ones no read needs are folded.
const PROPOSED_KEPT: usize = 256;

/// Ticks (500 ms at the default tick) a write forwarded behind reads may hold this replica's
/// applies while it or those reads still wait on the leader, or a read behind writes wait for
/// their indexes, before the reads (or writes) concerned are given up: a forward or its answer
/// lost on the way (nothing is resent) would otherwise hold them for a request's whole timeout.
pub const ORDER_PATIENCE_TICKS: u64 = 50;

/// Why a read left the outbox unserved, to keep its order (see [`Outbox::take_unservable`]).
pub const INDEX_PAST_WRITE: &str = "the read's index came at or after a write pipelined behind it";
/// See [`INDEX_PAST_WRITE`].
pub const ORDER_TIMED_OUT: &str = "no answer from the leader in time to keep the read's order";

/// A follower's forwarded requests, by forward id: writes `W`, reads `R`, admin requests `A`.
#[derive(Debug)]
pub struct Outbox<W, R, A> {
    next_id: u64,
    /// By id, so the oldest write still unanswered is the first.
    writes: BTreeMap<u64, Sent<W>>,
    write_bytes: usize,
    /// For each forward id answered since the leader last changed and not yet folded, the
    /// highest index the leader gave the writes kept here up to it (a running maximum), for the
    /// floors of reads behind writes. Every one is in that leader's log.
    proposed: BTreeMap<u64, u64>,
    /// The highest index given to the writes no longer in `proposed` (folded once no waiting
    /// read needs them apart), which every later read follows.
    proposed_base: u64,
    /// `proposed` is folded once it holds more than this.
    fold_at: usize,
    next_read_seq: u64,
    /// The seqs of the reads held, at whatever stage.
    held_seqs: BTreeSet<u64>,
    /// Reads that arrived since the last batch went out.
    unsent_reads: Vec<HeldRead<R>>,
    /// Batches at the leader, waiting for a read index.
    read_batches: HashMap<u64, Sent<Vec<HeldRead<R>>>>,
    /// Reads behind writes with a read index, waiting for the indexes of the writes before them.
    unfloored_reads: Vec<(u64, HeldRead<R>)>,
    /// Reads with a read index (and, behind writes, a floor), waiting for this replica to apply
    /// the higher of the two, by that index.
    confirmed_reads: BTreeMap<u64, Vec<HeldRead<R>>>,
    /// Writes forwarded behind reads, in forward order.
    barriers: VecDeque<Barrier>,
    /// Reads that cannot be served in their order, with why: their index came out at or past
    /// the entry of a write forwarded behind them (a link that reordered their frames), or
    /// what they wait for has not come for [`ORDER_PATIENCE_TICKS`].
    unservable: Vec<(R, &'static str)>,
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
            writes: BTreeMap::new(),
            write_bytes: 0,
            proposed: BTreeMap::new(),
            proposed_base: 0,
            fold_at: PROPOSED_KEPT,
            next_read_seq: 0,
            held_seqs: BTreeSet::new(),
            unsent_reads: Vec::new(),
            read_batches: HashMap::new(),
            unfloored_reads: Vec::new(),
            confirmed_reads: BTreeMap::new(),
            barriers: VecDeque::new(),
            unservable: Vec::new(),
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
        self.held_seqs.len()
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

    /// [`add_write`](Self::add_write) for a write that none of the reads held now may see (a
    /// client's pipelined reads ahead of it among them): until they are served or failed,
    /// nothing from its entry on is applied here, and until the leader gives its index nothing
    /// past `handed_out` (the last index handed out to be applied so far). The caller sends
    /// the reads still unsent before the write, so on a link that keeps order their read
    /// indexes are below its entry (a read whose index is not is failed: `take_unservable`).
    pub fn add_write_after_reads(
        &mut self,
        tick: u64,
        bytes: usize,
        write: W,
        handed_out: u64,
    ) -> Result<u64, W> {
        let id = self.add_write(tick, bytes, write)?;
        if !self.held_seqs.is_empty() {
            let reads_below = self.next_read_seq;
            self.barriers.push_back(Barrier {
                write: id,
                tick,
                frozen_at: handed_out,
                index: None,
                reads_below,
            });
        }
        Ok(id)
    }

    /// The write forwarded as `id`, once it was refused (nothing was appended) or given up
    /// (`None`: unknown or already settled).
    pub fn take_write(&mut self, id: u64) -> Option<W> {
        let sent = self.writes.remove(&id)?;
        self.write_bytes -= sent.bytes;
        self.barriers.retain(|b| b.write != id);
        self.settle_floors();
        Some(sent.item)
    }

    /// The write forwarded as `id`, once the leader appended it at `index` (`None`: unknown or
    /// already settled, and then its index is not taken either).
    pub fn write_proposed(&mut self, id: u64, index: u64) -> Option<W> {
        let sent = self.writes.remove(&id)?;
        self.write_bytes -= sent.bytes;
        self.note_proposed(id, index);
        if let Some(barrier) = self.barriers.iter_mut().find(|b| b.write == id) {
            barrier.index = Some(index);
            let below = barrier.reads_below;
            // Reads before it whose index is already known to be at or past its entry.
            let confirmed = self.confirmed_reads.range_mut(index..).map(|(_, reads)| reads);
            let mut stuck: Vec<_> =
                confirmed.flat_map(|reads| reads.extract_if(.., |r| r.seq < below)).collect();
            self.confirmed_reads.retain(|_, reads| !reads.is_empty());
            let unfloored = self.unfloored_reads.extract_if(.., |(r, held)| *r >= index && held.seq < below);
            stuck.extend(unfloored.map(|(_, held)| held));
            self.give_up(stuck, INDEX_PAST_WRITE);
        }
        self.settle_floors();
        Some(sent.item)
    }

    /// Records that write `id` went to `index`: the running maximum at `id`, and at the ids after
    /// it already answered (a link that reordered the answers).
    fn note_proposed(&mut self, id: u64, index: u64) {
        if self.unsent_reads.is_empty() && self.read_batches.is_empty() && self.unfloored_reads.is_empty() {
            // No read waits for a floor: every later one follows this write (a pipeline of writes
            // alone keeps no map).
            let kept = self.proposed.values().next_back().copied().unwrap_or(0);
            self.proposed_base = self.proposed_base.max(kept).max(index);
            self.proposed.clear();
            self.fold_at = PROPOSED_KEPT;
            return;
        }
        let before = self.proposed.range(..id).next_back().map_or(0, |(_, &high)| high);
        self.proposed.insert(id, before.max(index));
        for (_, high) in self.proposed.range_mut(id + 1..) {
            if *high >= index {
                break;
            }
            *high = index;
        }
    }

    /// The lowest index a write forwarded behind read `seq` was given: the read must be served
    /// below it.
    fn served_below(&self, seq: u64) -> Option<u64> {
        let behind = self.barriers.iter().rev().take_while(|b| b.reads_below > seq);
        behind.filter_map(|b| b.index).min()
    }

    /// Queues `held` to be served once `index` is applied, or, if a write forwarded behind it
    /// has its entry there or below, to be failed.
    fn confirm(&mut self, index: u64, held: HeldRead<R>) {
        if self.served_below(held.seq).is_some_and(|limit| index >= limit) {
            return self.give_up(vec![held], INDEX_PAST_WRITE);
        }
        self.confirmed_reads.entry(index).or_default().push(held);
    }

    /// Fails reads that cannot keep their order (see `unservable`).
    fn give_up(&mut self, reads: Vec<HeldRead<R>>, why: &'static str) {
        self.settle(&reads);
        self.unservable.extend(reads.into_iter().map(|held| (held.read, why)));
    }

    /// The reads that cannot be served in their order, each with why, to be failed.
    pub fn take_unservable(&mut self) -> Vec<(R, &'static str)> {
        mem::take(&mut self.unservable)
    }

    /// Gives up what a forward unanswered since before `tick` holds up: the reads before a write
    /// forwarded behind reads then, if the write or one of those reads still waits on the leader
    /// (it holds this replica's applies meanwhile; reads that wait only for this replica to
    /// apply are left to it), and the writes unanswered since then that reads behind writes
    /// wait for: returned, to be abandoned as at a request's timeout (their clients told
    /// `-TRYAGAIN`, those reads then need not see them).
    pub fn lose_patience(&mut self, tick: u64) -> Vec<W> {
        let asking = self.unsent_reads.iter().chain(self.read_batches.values().flat_map(|b| &b.item));
        let asking =
            asking.chain(self.unfloored_reads.iter().map(|(_, held)| held)).map(|held| held.seq).min();
        let asking = asking.unwrap_or(u64::MAX);
        let stale = |b: &Barrier| b.tick < tick && (b.index.is_none() || asking < b.reads_below);
        if let Some(last_stale) = self.barriers.iter().rposition(stale) {
            let failed = self.break_barriers_through(last_stale);
            self.unservable.extend(failed.into_iter().map(|read| (read, ORDER_TIMED_OUT)));
        }
        let Some(latest) = self.unfloored_reads.iter().filter_map(|(_, held)| held.after).max() else {
            return Vec::new();
        };
        // Unanswered, so without a barrier left (broken above, stale with no index).
        let old: Vec<u64> =
            self.writes.range(..latest).filter(|(_, sent)| sent.tick < tick).map(|(&id, _)| id).collect();
        old.into_iter().filter_map(|id| self.take_write(id)).collect()
    }

    /// The highest index the leader gave a write forwarded before forward id `after`.
    fn floor(&self, after: u64) -> u64 {
        let kept = self.proposed.range(..after).next_back().map_or(0, |(_, &high)| high);
        kept.max(self.proposed_base)
    }

    /// Queues a read for the next batch.
    pub fn add_read(&mut self, read: R) {
        self.hold(read, None);
    }

    /// Queues a read for the next batch that must also follow every write forwarded so far: it
    /// is released only once this replica has applied the indexes the leader gives them.
    pub fn add_read_after_writes(&mut self, read: R) {
        let after = Some(self.next_id);
        self.hold(read, after);
    }

    fn hold(&mut self, read: R, after: Option<u64>) {
        let seq = self.next_read_seq;
        self.next_read_seq += 1;
        self.held_seqs.insert(seq);
        self.unsent_reads.push(HeldRead { read, seq, after });
    }

    /// Makes the reads queued since the last call one batch sent at `tick`; returns its id.
    pub fn send_reads(&mut self, tick: u64) -> Option<u64> {
        if self.unsent_reads.is_empty() {
            return None;
        }
        let id = self.take_id();
        let batch = mem::take(&mut self.unsent_reads);
        self.read_batches.insert(id, Sent { tick, item: batch, bytes: 0 });
        Some(id)
    }

    /// The leader gave `index` for batch `id`: its reads wait for this replica to apply it (and
    /// those behind writes, for their floor too).
    pub fn confirm_reads(&mut self, id: u64, index: u64) {
        let Some(batch) = self.read_batches.remove(&id) else { return };
        for held in batch.item {
            match held.after {
                None => self.confirm(index, held),
                Some(_) => self.unfloored_reads.push((index, held)),
            }
        }
        self.settle_floors();
    }

    /// Gives a floor to the confirmed reads behind writes whose writes are all answered: the
    /// highest index the leader gave one of them, which is at least theirs.
    fn settle_floors(&mut self) {
        if !self.unfloored_reads.is_empty() {
            // No write below this forward id is still unanswered.
            let answered_below = self.writes.keys().next().copied().unwrap_or(u64::MAX);
            let settled: Vec<_> = self
                .unfloored_reads
                .extract_if(.., |(_, held)| held.after.is_some_and(|after| after <= answered_below))
                .collect();
            for (index, held) in settled {
                let floor = self.floor(held.after.unwrap_or(0));
                self.confirm(index.max(floor), held);
            }
        }
        if self.proposed.len() > self.fold_at {
            // Indexes below every waiting read's mark count for all of them alike.
            let waiting = self.unsent_reads.iter().chain(self.read_batches.values().flat_map(|b| &b.item));
            let marks = waiting.chain(self.unfloored_reads.iter().map(|(_, held)| held));
            let lowest = marks.filter_map(|held| held.after).min().unwrap_or(u64::MAX);
            let kept = self.proposed.split_off(&lowest);
            let folded = mem::replace(&mut self.proposed, kept);
            let high = folded.values().next_back().copied().unwrap_or(0);
            self.proposed_base = self.proposed_base.max(high);
            // A read pinning what is kept costs one scan per as many answers again.
            self.fold_at = PROPOSED_KEPT.max(2 * self.proposed.len());
        }
    }

    /// Forgets reads that leave the outbox, and lifts the barriers no read is left behind.
    fn settle<'a>(&mut self, gone: impl IntoIterator<Item = &'a HeldRead<R>>)
    where
        R: 'a,
    {
        for held in gone {
            self.held_seqs.remove(&held.seq);
        }
        let first_held = self.held_seqs.first().copied().unwrap_or(u64::MAX);
        // Each barrier waits for the reads before it, so a later one never lifts first.
        while self.barriers.front().is_some_and(|b| b.reads_below <= first_held) {
            self.barriers.pop_front();
        }
    }

    /// The leader could not confirm batch `id`: its reads, to be failed.
    pub fn fail_reads(&mut self, id: u64) -> Vec<R> {
        let batch = self.read_batches.remove(&id).map(|b| b.item).unwrap_or_default();
        self.settle(&batch);
        batch.into_iter().map(|held| held.read).collect()
    }

    /// The confirmed reads whose index (and floor) is at or below `applied`: they may be served
    /// now.
    pub fn release_reads(&mut self, applied: u64) -> Vec<R> {
        let mut out = Vec::new();
        while let Some(entry) = self.confirmed_reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            out.extend(entry.remove());
        }
        self.settle(&out);
        out.into_iter().map(|held| held.read).collect()
    }

    /// The last index that may be handed out to be applied here now (`None`: any): below the
    /// entry of every write forwarded behind reads still held, and, for such a write whose
    /// index is not known yet, no further than when it was forwarded.
    pub fn apply_ceiling(&self) -> Option<u64> {
        self.barriers.iter().map(|b| b.index.map_or(b.frozen_at, |index| index - 1)).min()
    }

    /// Takes every read held before a write forwarded behind reads and drops those writes'
    /// barriers: for when their order can no longer be kept (a snapshot installed here may hold
    /// those writes' entries).
    pub fn break_barriers(&mut self) -> Vec<R> {
        match self.barriers.len() {
            0 => Vec::new(),
            len => self.break_barriers_through(len - 1),
        }
    }

    /// [`break_barriers`](Self::break_barriers) for the first `last + 1` barriers only (those
    /// after keep waiting, for the reads between).
    fn break_barriers_through(&mut self, last: usize) -> Vec<R> {
        let below = self.barriers[last].reads_below;
        self.barriers.drain(..=last);
        let mut out: Vec<_> =
            self.unfloored_reads.extract_if(.., |(_, held)| held.seq < below).map(|(_, held)| held).collect();
        let batches = self.read_batches.values_mut().map(|batch| &mut batch.item);
        for reads in
            [&mut self.unsent_reads].into_iter().chain(batches).chain(self.confirmed_reads.values_mut())
        {
            out.extend(reads.extract_if(.., |held| held.seq < below));
        }
        self.confirmed_reads.retain(|_, reads| !reads.is_empty());
        self.settle(&out);
        out.into_iter().map(|held| held.read).collect()
    }

    /// Every read still held, whatever its stage (consensus stopped: each is failed).
    pub fn take_all_reads(&mut self) -> Vec<R> {
        let mut out = mem::take(&mut self.unsent_reads);
        for (_, batch) in self.read_batches.drain() {
            out.extend(batch.item);
        }
        out.extend(mem::take(&mut self.unfloored_reads).into_iter().map(|(_, held)| held));
        out.extend(mem::take(&mut self.confirmed_reads).into_values().flatten());
        self.settle(&out);
        let mut out: Vec<R> = out.into_iter().map(|held| held.read).collect();
        out.extend(mem::take(&mut self.unservable).into_iter().map(|(read, _)| read));
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
    /// Confirmed plain reads stay (their index was confirmed by a leader after they arrived, so
    /// it is still a correct lower bound), and so do admin requests already done. Reads behind
    /// writes confirmed and not yet released go back to be sent again, as plain reads: their
    /// floor names the old leader's log, which the new one may not have, while the new leader's
    /// read index (given after it committed in its term) is past every entry of an earlier term
    /// that ever commits, the writes before them among them. (A write whose forward reaches a
    /// leader only after that is appended after the read; but it was abandoned here, its
    /// client told `-TRYAGAIN`, so the read need not see it.) Reads whose batch the old leader
    /// had not answered, and reads before a write forwarded behind reads (which may yet commit,
    /// under the new leader's read index), are abandoned.
    pub fn leader_changed(&mut self) -> Abandoned<W, R, A> {
        let mut reads = self.break_barriers();
        self.write_bytes = 0;
        self.proposed.clear();
        self.proposed_base = 0;
        self.fold_at = PROPOSED_KEPT;
        let mut again: Vec<HeldRead<R>> =
            mem::take(&mut self.unfloored_reads).into_iter().map(|(_, r)| r).collect();
        for reads in self.confirmed_reads.values_mut() {
            again.extend(reads.extract_if(.., |r| r.after.is_some()));
        }
        self.confirmed_reads.retain(|_, reads| !reads.is_empty());
        self.unsent_reads.extend(again);
        for held in &mut self.unsent_reads {
            held.after = None;
        }
        let batches: Vec<HeldRead<R>> = self.read_batches.drain().flat_map(|(_, s)| s.item).collect();
        self.settle(&batches);
        reads.extend(batches.into_iter().map(|held| held.read));
        Abandoned {
            writes: mem::take(&mut self.writes).into_values().map(|s| s.item).collect(),
            reads,
            admins: self.admins.drain().map(|(_, s)| s.item).collect(),
        }
    }

    /// Requests sent before `tick` that are still unanswered: abandoned (their waiters have
    /// given up by now), so a leader that never answers cannot make the outbox grow; and the
    /// reads before a write forwarded behind reads before `tick`, if it still holds them.
    pub fn expire(&mut self, tick: u64) -> Abandoned<W, R, A> {
        let mut out = Abandoned::none();
        if let Some(last_stale) = self.barriers.iter().rposition(|b| b.tick < tick) {
            // First, so a write given up here does not lift its barrier as a refused one would.
            out.reads = self.break_barriers_through(last_stale);
        }
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
            && self.held_seqs.is_empty()
            && self.unservable.is_empty()
            && self.admins.is_empty()
            && self.applied_admins.is_empty()
    }
}

/// What a leader remembers of one follower run's forward ids.
#[derive(Debug, Default)]
struct SeenIds {
    run: u64,
    highest: u64,
    /// The highest id of a write taken.
    highest_write: u64,
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
    /// A write that a later write of the same run overtook on the way: refuse it (nothing is
    /// appended), or the two would take effect in the other order.
    Overtaken,
}

/// A leader's record of the forward ids it has taken, per follower: a request is carried out at
/// most once even if the network delivers its frame twice.
#[derive(Debug, Default)]
pub struct RepeatFilter {
    by_follower: HashMap<NodeId, SeenIds>,
}

impl RepeatFilter {
    /// Records forward `id` of `follower`'s run `run` (a write when `write`), and says whether it
    /// is new.
    pub fn check(&mut self, follower: NodeId, run: u64, id: u64, write: bool) -> Freshness {
        let ids = self.by_follower.entry(follower).or_default();
        if ids.run != run {
            // A restarted follower: its ids start again.
            *ids = SeenIds { run, ..SeenIds::default() };
        }
        if id + REPEAT_WINDOW <= ids.highest {
            return Freshness::TooOld;
        }
        if !ids.seen.insert(id) {
            return Freshness::Repeat;
        }
        if write {
            if id < ids.highest_write {
                return Freshness::Overtaken;
            }
            ids.highest_write = id;
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
    fn a_read_behind_writes_waits_for_their_indexes_and_is_served_past_them() {
        let mut outbox = Box3::new();
        let early = outbox.add_write(0, 10, "early").expect("room");
        outbox.add_read_after_writes(1);
        let later = outbox.add_write(0, 10, "later").expect("room");
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 5);
        assert!(outbox.release_reads(100).is_empty(), "the index of the write before it is not known yet");
        assert_eq!(outbox.reads_len(), 1);
        // A write sent after the read neither holds it nor raises its floor.
        assert_eq!(outbox.write_proposed(later, 9), Some("later"));
        assert!(outbox.release_reads(100).is_empty());
        assert_eq!(outbox.write_proposed(early, 8), Some("early"));
        assert!(outbox.release_reads(7).is_empty(), "its floor is the write before it: 8");
        assert_eq!(outbox.release_reads(8), vec![1]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_read_behind_writes_is_served_at_its_read_index_when_that_is_higher() {
        let mut outbox = Box3::new();
        let write = outbox.add_write(0, 10, "w").expect("room");
        assert_eq!(outbox.write_proposed(write, 4), Some("w"));
        outbox.add_read_after_writes(1);
        outbox.add_read(2);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 6);
        assert!(outbox.release_reads(5).is_empty());
        assert_eq!(outbox.release_reads(6), vec![2, 1]);
    }

    #[test]
    fn refused_or_abandoned_writes_no_longer_hold_the_reads_behind_them() {
        let mut outbox = Box3::new();
        let refused = outbox.add_write(0, 10, "refused").expect("room");
        outbox.add_read_after_writes(1);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 3);
        assert!(outbox.release_reads(3).is_empty());
        assert_eq!(outbox.take_write(refused), Some("refused"));
        assert_eq!(outbox.release_reads(3), vec![1]);
        outbox.add_write(1, 10, "expired").expect("room");
        outbox.add_read_after_writes(2);
        let batch = outbox.send_reads(5).expect("batch");
        outbox.confirm_reads(batch, 3);
        let gone = outbox.expire(2);
        assert_eq!(gone.writes, vec!["expired"]);
        assert_eq!(outbox.release_reads(3), vec![2]);
    }

    #[test]
    fn a_leader_change_sends_reads_behind_writes_again_as_plain_reads() {
        let mut outbox = Box3::new();
        let write = outbox.add_write(0, 10, "w").expect("room");
        assert_eq!(outbox.write_proposed(write, 50), Some("w"));
        // Confirmed with its floor (50, a position of the old leader's log) not yet applied.
        outbox.add_read_after_writes(1);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 40);
        // Confirmed, its floor still unknown.
        let unanswered = outbox.add_write(0, 10, "u").expect("room");
        outbox.add_read_after_writes(2);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 40);
        // Not sent yet.
        let another = outbox.add_write(0, 10, "v").expect("room");
        outbox.add_read_after_writes(3);
        let gone = outbox.leader_changed();
        assert_eq!(gone.writes, vec!["u", "v"]);
        assert!(gone.reads.is_empty());
        assert_eq!(outbox.write_proposed(unanswered, 60), None, "an answer from the old leader");
        assert_eq!(outbox.write_proposed(another, 60), None);
        assert!(outbox.release_reads(u64::MAX).is_empty(), "none is served on the old leader's word");
        assert_eq!(outbox.reads_len(), 3);
        // The new leader's read index is all they wait for.
        let batch = outbox.send_reads(1).expect("sent again");
        outbox.confirm_reads(batch, 45);
        assert!(outbox.release_reads(44).is_empty());
        let mut served = outbox.release_reads(45);
        served.sort();
        assert_eq!(served, vec![1, 2, 3]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn every_read_held_is_taken_when_consensus_stops() {
        let mut outbox = Box3::new();
        outbox.add_write(0, 10, "w").expect("room");
        outbox.add_read(1);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 3);
        outbox.add_read_after_writes(2);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 3);
        outbox.add_read(3);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.add_read(4);
        let mut taken = outbox.take_all_reads();
        taken.sort();
        assert_eq!(taken, vec![1, 2, 3, 4]);
        assert_eq!(outbox.reads_len(), 0);
        assert!(outbox.fail_reads(batch).is_empty());
    }

    #[test]
    fn a_write_behind_reads_holds_applies_until_they_are_served() {
        let mut outbox = Box3::new();
        assert_eq!(outbox.add_write_after_reads(0, 10, "alone", 7).ok(), Some(1));
        assert_eq!(outbox.apply_ceiling(), None, "no read held: nothing to hold");
        outbox.add_read(1);
        let batch = outbox.send_reads(0).expect("batch");
        let write = outbox.add_write_after_reads(0, 10, "w", 7).expect("room");
        // Its index unknown, nothing past what was handed out when it was forwarded.
        assert_eq!(outbox.apply_ceiling(), Some(7));
        outbox.add_read(2); // after it: not waited for
        assert_eq!(outbox.write_proposed(write, 12), Some("w"));
        assert_eq!(outbox.apply_ceiling(), Some(11), "everything below its entry");
        outbox.confirm_reads(batch, 10);
        assert_eq!(outbox.release_reads(10), vec![1]);
        assert_eq!(outbox.apply_ceiling(), None, "the read before it was served");
        assert_eq!(outbox.reads_len(), 1);
    }

    #[test]
    fn barriers_lift_in_order_and_the_lowest_ceiling_holds() {
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let first_batch = outbox.send_reads(0).expect("batch");
        let first = outbox.add_write_after_reads(0, 10, "first", 3).expect("room");
        outbox.add_read(2);
        let second_batch = outbox.send_reads(0).expect("batch");
        let second = outbox.add_write_after_reads(0, 10, "second", 4).expect("room");
        assert_eq!(outbox.apply_ceiling(), Some(3));
        outbox.write_proposed(second, 9);
        assert_eq!(outbox.apply_ceiling(), Some(3), "the first's index is still unknown");
        outbox.write_proposed(first, 6);
        assert_eq!(outbox.apply_ceiling(), Some(5));
        outbox.confirm_reads(second_batch, 7);
        outbox.confirm_reads(first_batch, 5);
        assert_eq!(outbox.release_reads(5), vec![1]);
        // The first lifts; the second still waits for the read between them.
        assert_eq!(outbox.apply_ceiling(), Some(8));
        assert_eq!(outbox.release_reads(7), vec![2]);
        assert_eq!(outbox.apply_ceiling(), None);
    }

    #[test]
    fn a_refused_write_behind_reads_holds_nothing() {
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let write = outbox.add_write_after_reads(0, 10, "w", 3).expect("room");
        assert_eq!(outbox.apply_ceiling(), Some(3));
        assert_eq!(outbox.take_write(write), Some("w"));
        assert_eq!(outbox.apply_ceiling(), None);
    }

    #[test]
    fn a_read_behind_writes_is_floored_by_the_writes_before_it_only() {
        let mut outbox = Box3::new();
        let before = outbox.add_write(0, 10, "before").expect("room");
        outbox.add_read_after_writes(1);
        let batch = outbox.send_reads(0).expect("batch");
        let behind = outbox.add_write_after_reads(0, 10, "behind", 0).expect("room");
        // Answers in any order: the write forwarded after the read gives a higher index, which
        // must not become the read's floor (the read would then wait for the entry it must not see).
        outbox.write_proposed(behind, 20);
        outbox.write_proposed(before, 15);
        outbox.confirm_reads(batch, 12);
        assert_eq!(outbox.apply_ceiling(), Some(19));
        assert!(outbox.release_reads(14).is_empty());
        assert_eq!(outbox.release_reads(15), vec![1]);
        assert_eq!(outbox.apply_ceiling(), None);
    }

    #[test]
    fn reads_before_a_write_behind_reads_are_failed_when_its_order_cannot_hold() {
        // A leader change: the write may yet commit under the new leader's read index.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let batch = outbox.send_reads(0).expect("batch");
        outbox.confirm_reads(batch, 5);
        let write = outbox.add_write_after_reads(0, 10, "w", 3).expect("room");
        outbox.write_proposed(write, 8);
        outbox.add_read(2);
        let gone = outbox.leader_changed();
        assert_eq!(gone.reads, vec![1]);
        assert_eq!(outbox.apply_ceiling(), None);
        assert_eq!(outbox.reads_len(), 1, "the read after it stays");
        // A snapshot installed here.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        outbox.add_write_after_reads(0, 10, "w", 3).expect("room");
        outbox.add_read(2);
        assert_eq!(outbox.break_barriers(), vec![1]);
        assert_eq!((outbox.apply_ceiling(), outbox.reads_len()), (None, 1));
        // No answer for as long as a request may wait.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let batch = outbox.send_reads(5).expect("batch");
        outbox.confirm_reads(batch, 5);
        outbox.add_write_after_reads(1, 10, "w", 3).expect("room");
        let gone = outbox.expire(2);
        assert_eq!((gone.writes, gone.reads), (vec!["w"], vec![1]));
        assert_eq!(outbox.apply_ceiling(), None);
    }

    #[test]
    fn a_read_whose_index_reaches_a_write_forwarded_behind_it_is_failed() {
        // Its index known first, then the write's.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let batch = outbox.send_reads(0).expect("batch");
        let write = outbox.add_write_after_reads(0, 10, "w", 3).expect("room");
        outbox.confirm_reads(batch, 9);
        assert!(outbox.take_unservable().is_empty(), "the write's index is not known yet");
        outbox.write_proposed(write, 9);
        assert_eq!(outbox.take_unservable(), vec![(1, INDEX_PAST_WRITE)]);
        assert_eq!((outbox.apply_ceiling(), outbox.reads_len()), (None, 0));
        // The write's index known first; a read above it stays.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        outbox.add_read(2);
        let batch = outbox.send_reads(0).expect("batch");
        let write = outbox.add_write_after_reads(0, 10, "w", 3).expect("room");
        outbox.add_read(3);
        let after = outbox.send_reads(0).expect("batch");
        outbox.write_proposed(write, 8);
        outbox.confirm_reads(after, 8);
        outbox.confirm_reads(batch, 8);
        assert_eq!(outbox.take_unservable(), vec![(1, INDEX_PAST_WRITE), (2, INDEX_PAST_WRITE)]);
        assert_eq!(outbox.release_reads(8), vec![3]);
        // A read behind writes whose floor (a write before it, answered out of order) reaches it.
        let mut outbox = Box3::new();
        let before = outbox.add_write(0, 10, "before").expect("room");
        outbox.add_read_after_writes(1);
        let batch = outbox.send_reads(0).expect("batch");
        let behind = outbox.add_write_after_reads(0, 10, "behind", 3).expect("room");
        outbox.write_proposed(behind, 6);
        outbox.confirm_reads(batch, 4);
        outbox.write_proposed(before, 7);
        assert_eq!(outbox.take_unservable(), vec![(1, INDEX_PAST_WRITE)]);
        assert!(outbox.take_all_reads().is_empty());
    }

    #[test]
    fn what_waits_on_a_silent_leader_is_given_up_after_a_while() {
        // A write behind reads never answered holds applies at what was handed out.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let batch = outbox.send_reads(1).expect("batch");
        outbox.confirm_reads(batch, 9);
        outbox.add_write_after_reads(2, 10, "old", 3).expect("room");
        outbox.add_read(2);
        outbox.add_write_after_reads(8, 10, "young", 3).expect("room");
        assert!(outbox.lose_patience(2).is_empty());
        assert!(outbox.take_unservable().is_empty(), "not yet");
        assert!(outbox.lose_patience(5).is_empty(), "a write behind reads is not given up");
        assert_eq!(outbox.take_unservable(), vec![(1, ORDER_TIMED_OUT)], "the young one's read stays");
        assert_eq!(outbox.apply_ceiling(), Some(3));
        assert_eq!(outbox.reads_len(), 1);
        // A read behind writes whose write before it is never answered: the write is given up
        // (its client told so), and the read then follows the writes answered.
        let mut outbox = Box3::new();
        let answered = outbox.add_write(1, 10, "answered").expect("room");
        outbox.write_proposed(answered, 6);
        outbox.add_write(1, 10, "silent").expect("room");
        outbox.add_read_after_writes(1);
        outbox.add_read(2);
        let batch = outbox.send_reads(1).expect("batch");
        outbox.confirm_reads(batch, 4);
        assert!(outbox.release_reads(100).len() == 1, "the plain read only");
        assert_eq!(outbox.lose_patience(5), vec!["silent"]);
        assert!(outbox.take_unservable().is_empty());
        assert!(outbox.release_reads(5).is_empty());
        assert_eq!(outbox.release_reads(6), vec![1]);
        // A barrier whose write has its index, with its reads confirmed below it, only waits for
        // this replica to apply: it stays.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        let batch = outbox.send_reads(1).expect("batch");
        let write = outbox.add_write_after_reads(1, 10, "w", 3).expect("room");
        outbox.write_proposed(write, 9);
        outbox.confirm_reads(batch, 7);
        assert!(outbox.lose_patience(5).is_empty());
        assert!(outbox.take_unservable().is_empty());
        assert_eq!(outbox.apply_ceiling(), Some(8));
        // One still waiting for its read index is given up.
        let mut outbox = Box3::new();
        outbox.add_read(1);
        outbox.send_reads(1).expect("batch");
        let write = outbox.add_write_after_reads(1, 10, "w", 3).expect("room");
        outbox.write_proposed(write, 9);
        assert!(outbox.lose_patience(5).is_empty());
        assert_eq!(outbox.take_unservable(), vec![(1, ORDER_TIMED_OUT)]);
        assert_eq!(outbox.apply_ceiling(), None);
    }

    #[test]
    fn floors_stay_exact_when_many_writes_are_answered_around_an_old_read() {
        let mut outbox = Box3::new();
        let first = outbox.add_write(0, 1, "first").expect("room");
        outbox.add_read_after_writes(1);
        let batch = outbox.send_reads(0).expect("batch");
        // Hundreds of writes after it answered, at higher indexes, before the one before it.
        for i in 0..300 {
            let id = outbox.add_write(0, 1, "later").expect("room");
            outbox.write_proposed(id, 100 + i);
        }
        outbox.add_read_after_writes(2);
        let second = outbox.send_reads(0).expect("batch");
        outbox.write_proposed(first, 50);
        outbox.confirm_reads(batch, 10);
        outbox.confirm_reads(second, 10);
        assert_eq!(outbox.release_reads(50), vec![1], "its floor is the one write before it");
        assert!(outbox.release_reads(398).is_empty(), "the second follows all 301");
        assert_eq!(outbox.release_reads(399), vec![2]);
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
        assert_eq!(filter.check(2, 1, 5, false), Freshness::New);
        assert_eq!(filter.check(2, 1, 5, false), Freshness::Repeat);
        assert_eq!(filter.check(2, 1, 3, false), Freshness::New, "reordered, not repeated");
        assert_eq!(filter.check(3, 1, 5, false), Freshness::New, "another follower");
        assert_eq!(filter.check(2, 1, 5 + REPEAT_WINDOW, false), Freshness::New);
        assert_eq!(filter.check(2, 1, 5, false), Freshness::TooOld);
        assert_eq!(filter.check(2, 9, 5, false), Freshness::New, "a new run starts again");
        filter.forget(2);
        assert_eq!(filter.check(2, 9, 5, false), Freshness::New);
    }

    #[test]
    fn a_write_overtaken_by_a_later_write_of_its_run_is_refused() {
        let mut filter = RepeatFilter::default();
        assert_eq!(filter.check(2, 1, 4, true), Freshness::New);
        assert_eq!(filter.check(2, 1, 7, true), Freshness::New);
        assert_eq!(filter.check(2, 1, 5, true), Freshness::Overtaken, "sent before 7, arrived after it");
        assert_eq!(filter.check(2, 1, 5, true), Freshness::Repeat, "answered once");
        assert_eq!(filter.check(2, 1, 6, false), Freshness::New, "reads are not ordered against writes here");
        assert_eq!(filter.check(2, 1, 8, true), Freshness::New);
        assert_eq!(filter.check(3, 1, 6, true), Freshness::New, "another follower's writes");
        assert_eq!(filter.check(2, 2, 1, true), Freshness::New, "a restarted follower numbers from 1 again");
    }
}
