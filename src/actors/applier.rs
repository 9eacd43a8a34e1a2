//! The applier: applies committed entries in log order and tells the waiters what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;

use super::connection::{ReplyBudget, Reserved};
use super::registry::HeldSnapshots;
use super::snapshotter::{DecodedState, EncodeState, SaveState, Snapshotter};
use super::status::StatusBoard;
use super::waiter::{ReadDone, WatchFired, WatchOutcome};
use crate::protocol::codec;
use crate::protocol::command::{decode_entry, Command, CommandResult};
use crate::protocol::raft::{ConfChange, Entry, EntryKind, SnapshotMeta};
use crate::protocol::watch::{watch_verdict, Applied, WatchKey, WatchVerdict};
use crate::storage::StateMachine;

/// Register interest in the entry proposed at `index` in `term` with `request_id`.
///
/// Sent by consensus right after the proposal is appended, so it always precedes the
/// `ApplyEntries` that carries that index (one sender, one ordered mailbox).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The log index of the proposal.
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// The proposal's request id.
    pub request_id: u64,
    /// Who to tell.
    pub watcher: Recipient<WatchFired>,
}

/// Several [`Watch`]es at once: those a drive of consensus released together.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watches(pub Vec<Watch>);

/// Start recording what entries carrying `request_id` answer: a follower forwards that proposal
/// to the leader and learns where it went only later, maybe after the entry was applied here.
///
/// Sent by consensus before the forward leaves, so it precedes every `ApplyEntries` that could
/// hold the entry (which cannot exist before the leader has the forward).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expect {
    /// The proposal's request id.
    pub request_id: u64,
}

/// Stop recording for `request_id` (the forward was refused or abandoned).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unexpect {
    /// The proposal's request id.
    pub request_id: u64,
}

/// Results an expectation keeps before its watch arrives (more than one only if request ids collide).
const MAX_RESULTS_PER_EXPECTATION: usize = 4;

/// Apply these committed entries, consecutive and in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyEntries(pub Vec<Entry>);

/// Serve a linearizable read: everything up to its read index has been sent to apply before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ServeRead {
    /// The read-only command.
    pub command: Command,
    /// The asking connection's reply budget.
    pub budget: Arc<ReplyBudget>,
    /// Who to answer.
    pub reply_to: Recipient<ReadDone>,
    /// The read's time (milliseconds): the leader's clock once the read index was confirmed.
    pub now_ms: u64,
}

/// Serve these reads, in order (one message for the reads one round confirmed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ServeReads(pub Vec<ServeRead>);

/// Watches of terms below `0` can no longer be seen through by this replica: settle them as unknown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TermChanged(pub u64);

/// Take a snapshot of the state at the applied index; answered with its position once it is durable on disk.
#[derive(Message)]
#[rtype(result = "Result<SnapshotMeta, String>")]
pub struct TakeSnapshot;

/// Entries applied per turn of the thread (see `Applier::apply_in_turns`): about 3 ms of 100-byte
/// writes. The batches of a loaded leader are far smaller and take one turn.
pub const APPLY_TURN: usize = 1024;

/// Writes moved back per drain turn (see `Applier::next_drain_turn`): about a millisecond of B-tree
/// inserts (measured).
const DRAIN_BATCH: usize = 1024;

/// Replace the state with a snapshot received from the leader, decoded by the snapshotter once
/// its file is durable (`state` brings it; nothing else is applied meanwhile).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The snapshot's log position.
    pub meta: SnapshotMeta,
    /// The state decoded from its image (dropped unsent if the save failed).
    pub state: tokio::sync::oneshot::Receiver<DecodedState>,
}

/// Stop the applier.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopApplier;

struct Watcher {
    term: u64,
    request_id: u64,
    watcher: Recipient<WatchFired>,
}

/// Owns the state machine of one replica.
pub struct Applier {
    state: StateMachine,
    /// Term of the entry at the applied index (for snapshot positions).
    applied_term: u64,
    /// By (index, arrival): one entry per watch, in index order.
    watches: BTreeMap<(u64, u64), Watcher>,
    /// Arrival number of the next watch (keeps watches at one index apart).
    next_watch: u64,
    /// Forwarded proposals whose position is not known yet: what entries with their request id
    /// answered, as (index, term, result).
    expected: HashMap<u64, Vec<(u64, u64, CommandResult)>>,
    status: Arc<StatusBoard>,
    snapshotter: Addr<Snapshotter>,
    /// Where images taken for `SNAPSHOT BEGIN` are held for download.
    held: Arc<HeldSnapshots>,
}

impl Applier {
    /// An applier over `state` (whose applied entry has `applied_term`), publishing progress on
    /// `status`, writing snapshots through `snapshotter` and holding backup images in `held`.
    pub fn new(
        state: StateMachine,
        applied_term: u64,
        status: Arc<StatusBoard>,
        snapshotter: Addr<Snapshotter>,
        held: Arc<HeldSnapshots>,
    ) -> Applier {
        Applier {
            state,
            applied_term,
            watches: BTreeMap::new(),
            next_watch: 0,
            expected: HashMap::new(),
            status,
            snapshotter,
            held,
        }
    }

    /// Schedules the next turn of moving writes held aside for a finished snapshot back into the
    /// state's maps, after the thread has run everything else that is ready.
    ///
    /// The applier shares its thread with the connections and waiters. A `notify` per turn would
    /// not let them run: actix polls an actor's own items and mailbox in one loop until both are
    /// empty, so the turns ran back to back (tens of ms at large states) while no reply went out.
    fn next_drain_turn(ctx: &mut Context<Applier>) {
        ctx.spawn(actix::fut::wrap_future(tokio::task::yield_now()).map(|(), act: &mut Applier, ctx| {
            if !act.state.drain_deferred(DRAIN_BATCH) {
                Applier::next_drain_turn(ctx);
            }
        }));
    }

    /// `SNAPSHOT BEGIN`, served at a linearizable point: a copy of the state now, encoded on the
    /// snapshotter's thread and held for download; answers its token and what to check it by.
    fn hold_image(&mut self, reply_to: Recipient<ReadDone>) {
        let Some(token) = self.held.reserve() else {
            let why = format!(
                "too many snapshots held for download (at most {}); finish one first",
                super::registry::MAX_HELD_SNAPSHOTS
            );
            let result = Ok(CommandResult::Error(why));
            return reply_to.do_send(ReadDone { result, reserved: Reserved::default() });
        };
        let (index, term) = (self.state.applied_index(), self.applied_term);
        let keys = self.state.engine().len() as u64;
        let digest = self.state.engine().digest();
        let encode = self.snapshotter.send(EncodeState(Box::new(self.state.clone())));
        let held = self.held.clone();
        actix::spawn(async move {
            let encoded = match encode.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let result = match encoded {
                // The asker gave up (its waiter timed out, its connection closed): nobody will
                // download this image, so its slot is freed now rather than after the idle time.
                Ok(_) if !reply_to.connected() => {
                    held.release(token);
                    return;
                }
                Ok(image) => {
                    let crc32 = crc32fast::hash(&image);
                    let size = image.len() as i64;
                    held.fill(token, Arc::new(image));
                    let int = |n: u64| CommandResult::Integer(i64::try_from(n).unwrap_or(i64::MAX));
                    CommandResult::Array(vec![
                        int(token),
                        int(index),
                        int(term),
                        CommandResult::Integer(size),
                        int(u64::from(crc32)),
                        int(keys),
                        CommandResult::Value(Some(format!("{digest:016x}").into_bytes())),
                    ])
                }
                Err(e) => {
                    held.release(token);
                    CommandResult::Error(format!("cannot take the snapshot: {e}"))
                }
            };
            reply_to.do_send(ReadDone { result: Ok(result), reserved: Reserved::default() });
        });
    }

    fn publish(&self) {
        let engine = self.state.engine();
        self.status.publish_applied(self.state.applied_index(), engine.len() as u64, engine.digest());
        let (expiring, earliest, mean) = self.state.expiring();
        let clock = self.state.clock_ms();
        let avg_ttl_ms = mean.map_or(0, |m| m.saturating_sub(clock));
        self.status.publish_clock(clock, expiring as u64, earliest, avg_ttl_ms);
        self.status.publish_data_bytes(engine.approximate_size_bytes());
    }

    /// Records a proposal's watch, or settles it at once if its entry was already applied.
    fn watch(&mut self, msg: Watch) {
        let expected = self.expected.remove(&msg.request_id);
        if msg.index <= self.state.applied_index() {
            // A forwarded proposal applied before the leader's answer got here: the recorded
            // result at exactly that position is its own, by the same rule as any watch. (For a
            // local proposal this cannot happen: it is always past the applied index.)
            let own = expected.into_iter().flatten().find(|(index, term, _)| {
                let key = WatchKey { index: msg.index, term: msg.term, request_id: msg.request_id };
                let applied = Applied { index: *index, proposal: Some((*term, msg.request_id)) };
                watch_verdict(key, applied) == WatchVerdict::Own
            });
            let outcome = match own {
                Some((_, _, result)) => WatchOutcome::Applied(result),
                None => WatchOutcome::Superseded,
            };
            msg.watcher.do_send(WatchFired(outcome));
            return;
        }
        let watcher = Watcher { term: msg.term, request_id: msg.request_id, watcher: msg.watcher };
        self.watches.insert((msg.index, self.next_watch), watcher);
        self.next_watch += 1;
    }

    /// Settles every watch at or below `index` by the waiter's success rule ([`watch_verdict`]).
    fn settle(&mut self, index: u64, own: Option<(u64, u64, &CommandResult)>) {
        let applied = Applied { index, proposal: own.map(|(term, request_id, _)| (term, request_id)) };
        while let Some(first) = self.watches.first_entry() {
            if first.key().0 > index {
                break;
            }
            let ((i, _), w) = first.remove_entry();
            let key = WatchKey { index: i, term: w.term, request_id: w.request_id };
            // Only watches at or below `index` are here, so none is still pending.
            let outcome = match (watch_verdict(key, applied), own) {
                (WatchVerdict::Own, Some((_, _, result))) => WatchOutcome::Applied(result.clone()),
                _ => WatchOutcome::Superseded,
            };
            w.watcher.do_send(WatchFired(outcome));
        }
    }

    fn apply(&mut self, entry: &Entry) {
        if entry.index <= self.state.applied_index() {
            // Already applied (a replay after restart starts from the snapshot): nothing to do.
            return;
        }
        let (request_id, result) = if entry.kind == EntryKind::ConfChange {
            // The core put it in force already; the state records it too, so snapshots carry it.
            match codec::decode::<ConfChange>(&entry.data) {
                Ok(change) => {
                    self.state.apply_conf_change(entry.index, &change);
                }
                Err(e) => {
                    log::error!("entry {} holds no membership change ({e}); applied as a no-op", entry.index);
                    self.state.apply_empty(entry.index);
                }
            }
            (0, None)
        } else if entry.data.is_empty() {
            self.state.apply_empty(entry.index);
            (0, None)
        } else {
            match decode_entry(&entry.data) {
                Ok((stamp, proposal)) => {
                    let result = self.state.apply_stamped(entry.index, stamp, &proposal);
                    if let Some(results) = self.expected.get_mut(&proposal.request_id) {
                        if results.len() < MAX_RESULTS_PER_EXPECTATION {
                            results.push((entry.index, entry.term, result.clone()));
                        }
                    }
                    (proposal.request_id, Some(result))
                }
                Err(e) => {
                    // Every replica decodes the same bytes the same way, so all skip it alike.
                    log::error!("entry {} does not decode ({e}); applied as a no-op", entry.index);
                    self.state.apply_empty(entry.index);
                    (0, None)
                }
            }
        };
        self.applied_term = entry.term;
        self.settle(entry.index, result.as_ref().map(|r| (entry.term, request_id, r)));
    }
}

impl Actor for Applier {
    type Context = Context<Self>;
}

impl Handler<Watch> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Watch, _ctx: &mut Self::Context) {
        self.watch(msg);
    }
}

impl Handler<Watches> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Watches, _ctx: &mut Self::Context) {
        for watch in msg.0 {
            self.watch(watch);
        }
    }
}

impl Handler<Expect> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Expect, _ctx: &mut Self::Context) {
        self.expected.insert(msg.request_id, Vec::new());
    }
}

impl Handler<Unexpect> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Unexpect, _ctx: &mut Self::Context) {
        self.expected.remove(&msg.request_id);
    }
}

impl Handler<ApplyEntries> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ApplyEntries, ctx: &mut Self::Context) {
        self.apply_in_turns(msg.0, 0, ctx);
    }
}

impl Applier {
    /// Applies `entries` from `from` on, [`APPLY_TURN`] at a time with the thread's other work
    /// run between turns. A long batch (the log replayed at a start, the entries after a
    /// snapshot a follower caught up by) took this thread's connections for its whole length:
    /// here a PING waited 308 ms while a restarted follower replayed 119,904 entries of 100-byte
    /// writes. Nothing else reaches the applier until the batch is done, so a read still finds
    /// everything before it applied.
    fn apply_in_turns(&mut self, entries: Vec<Entry>, from: usize, ctx: &mut Context<Self>) {
        let end = entries.len().min(from.saturating_add(APPLY_TURN));
        for entry in &entries[from..end] {
            self.apply(entry);
        }
        // Each turn's progress shown to the connections that run between turns (WATCH takes its
        // point from it, INFO its applied index).
        self.publish();
        if end == entries.len() {
            return;
        }
        let next_turn = actix::fut::wrap_future(tokio::task::yield_now());
        ctx.wait(next_turn.map(move |(), act: &mut Applier, ctx| act.apply_in_turns(entries, end, ctx)));
    }
}

impl Handler<TakeSnapshot> for Applier {
    type Result = ResponseActFuture<Self, Result<SnapshotMeta, String>>;

    fn handle(&mut self, _msg: TakeSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let meta = SnapshotMeta { index: self.state.applied_index(), term: self.applied_term };
        // A copy now; encoding and writing happen on the snapshotter's thread while we go on
        // applying, with our writes held aside until the snapshotter has dropped the copy.
        let state = Box::new(self.state.copy_for_snapshot());
        let save = self.snapshotter.send(SaveState { meta, state });
        Box::pin(save.into_actor(self).map(move |saved, act, ctx| {
            // The snapshotter dropped the copy before answering: the maps are ours alone again.
            act.state.release_snapshot_copy();
            Applier::next_drain_turn(ctx);
            if meta.index == 0 {
                return Err("nothing applied yet".to_string());
            }
            match saved {
                Ok(Ok(())) => Ok(meta),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }))
    }
}

impl Handler<Restore> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Restore, ctx: &mut Self::Context) {
        let meta = msg.meta;
        if meta.index <= self.state.applied_index() {
            return;
        }
        // Entries after the snapshot are already queued behind this message: none is applied
        // until the state is the snapshot's. Reads wait too, behind the image's save (which
        // waits out a full disk with the log writes before it) and its decode; the thread goes
        // on serving this replica's other clients meanwhile.
        let waiting = std::time::Instant::now();
        ctx.wait(msg.state.into_actor(self).map(move |decoded, act, ctx| match decoded {
            Ok(Ok(state)) => act.install(meta, state, waiting),
            Ok(Err(e)) => {
                // The image passed its checksum on the wire and each step is checked as read: a
                // failing disk or a bug. Stop rather than serve a wrong state.
                log::error!("applier: cannot restore snapshot at index {}: {e}; stopping", meta.index);
                ctx.stop();
            }
            Err(_) => {
                // The save failed (consensus stops too) or the replica is stopping.
                log::warn!(
                    "applier: snapshot at index {} was not saved or not decoded; stopping",
                    meta.index
                );
                ctx.stop();
            }
        }));
    }
}

impl Applier {
    /// Replaces the state with `state`, the snapshot's at `meta`.
    ///
    /// The old state is freed here, on the thread that allocated it: about 20 ms for 440,000
    /// keys. Freed on the snapshotter's thread instead, its memory came back to the allocator
    /// late: a follower catching up by a 52.6 MB image peaked at 272-332 MB RSS (mean 304, 7
    /// runs) against 246-322 MB (mean 279, 8 runs; `scripts/transfer_rss_probe.sh`).
    fn install(&mut self, meta: SnapshotMeta, state: Box<StateMachine>, waiting: std::time::Instant) {
        self.state = *state;
        self.applied_term = meta.term;
        self.settle(meta.index, None);
        self.publish();
        log::info!(
            "applier: installed snapshot at index {} term {} after {} ms (saved and decoded meanwhile)",
            meta.index,
            meta.term,
            waiting.elapsed().as_millis()
        );
    }
}

impl Handler<ServeRead> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ServeRead, _ctx: &mut Self::Context) {
        self.serve(msg);
    }
}

impl Handler<ServeReads> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ServeReads, _ctx: &mut Self::Context) {
        for read in msg.0 {
            self.serve(read);
        }
    }
}

impl Applier {
    /// Answers one read from the applied state.
    fn serve(&mut self, msg: ServeRead) {
        if msg.command == Command::SnapshotImage {
            return self.hold_image(msg.reply_to);
        }
        // Reserved before the value is copied out, so a client that does not read its replies
        // cannot make the applier copy more than its budget.
        let done =
            match self.state.read_within(&msg.command, msg.now_ms, |bytes| msg.budget.try_reserve(bytes)) {
                Some((result, reserved)) => {
                    ReadDone { result: Ok(result), reserved: Reserved::new(msg.budget, reserved) }
                }
                None => ReadDone::failed("the connection's reply buffer is full; it is being closed"),
            };
        msg.reply_to.do_send(done);
    }
}

impl Handler<TermChanged> for Applier {
    type Result = ();

    fn handle(&mut self, msg: TermChanged, _ctx: &mut Self::Context) {
        self.watches.retain(|_, w| {
            if w.term < msg.0 {
                w.watcher.do_send(WatchFired(WatchOutcome::Superseded));
                false
            } else {
                true
            }
        });
    }
}

impl Handler<StopApplier> for Applier {
    type Result = ();

    fn handle(&mut self, _msg: StopApplier, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
