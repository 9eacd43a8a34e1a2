//! The applier: applies committed entries in log order and tells the waiters what happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use super::status::StatusBoard;
use crate::protocol::codec;
use crate::protocol::command::{Command, CommandResult, Proposal};
use crate::protocol::raft::Entry;
use crate::storage::StateMachine;

/// What became of a watched index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The watcher's own entry was applied there, with this result.
    Applied(CommandResult),
    /// Another entry was applied there, or the term moved on first: the outcome is unknown.
    Superseded,
}

/// Sent to a watcher when its index is settled.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct WatchFired(pub WatchOutcome);

/// The answer to a read served by the applier.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct ReadDone(pub Result<CommandResult, String>);

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
    /// Who to answer.
    pub reply_to: Recipient<ReadDone>,
}

/// Watches of terms below `0` can no longer be seen through by this replica: settle them as unknown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TermChanged(pub u64);

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
    watches: BTreeMap<u64, Vec<Watcher>>,
    status: Arc<StatusBoard>,
}

impl Applier {
    /// An applier over `state`, publishing its progress on `status`.
    pub fn new(state: StateMachine, status: Arc<StatusBoard>) -> Applier {
        Applier { state, watches: BTreeMap::new(), status }
    }

    fn apply(&mut self, entry: &Entry) {
        if entry.index <= self.state.applied_index() {
            // Already applied (a replay after restart starts from the snapshot): nothing to do.
            return;
        }
        let (request_id, result) = if entry.data.is_empty() {
            self.state.apply_empty(entry.index);
            (0, None)
        } else {
            match codec::decode::<Proposal>(&entry.data) {
                Ok(proposal) => {
                    let result = self.state.apply(entry.index, &proposal);
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
        // Settle every watch at or below this index; only the exact match succeeds.
        let settled: Vec<u64> = self.watches.range(..=entry.index).map(|(&i, _)| i).collect();
        for index in settled {
            for w in self.watches.remove(&index).unwrap_or_default() {
                let own = index == entry.index && w.term == entry.term && w.request_id == request_id;
                let outcome = match (&result, own) {
                    (Some(r), true) => WatchOutcome::Applied(r.clone()),
                    _ => WatchOutcome::Superseded,
                };
                w.watcher.do_send(WatchFired(outcome));
            }
        }
    }
}

impl Actor for Applier {
    type Context = Context<Self>;
}

impl Handler<Watch> for Applier {
    type Result = ();

    fn handle(&mut self, msg: Watch, _ctx: &mut Self::Context) {
        if msg.index <= self.state.applied_index() {
            // Cannot happen by construction (a new proposal is always past the applied index),
            // but if it did the outcome would be unknown, never a false success.
            msg.watcher.do_send(WatchFired(WatchOutcome::Superseded));
            return;
        }
        self.watches.entry(msg.index).or_default().push(Watcher {
            term: msg.term,
            request_id: msg.request_id,
            watcher: msg.watcher,
        });
    }
}

impl Handler<ApplyEntries> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ApplyEntries, _ctx: &mut Self::Context) {
        for entry in &msg.0 {
            self.apply(entry);
        }
        self.status.publish_applied(self.state.applied_index(), self.state.engine().len() as u64);
    }
}

impl Handler<ServeRead> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ServeRead, _ctx: &mut Self::Context) {
        msg.reply_to.do_send(ReadDone(Ok(self.state.read(&msg.command))));
    }
}

impl Handler<TermChanged> for Applier {
    type Result = ();

    fn handle(&mut self, msg: TermChanged, _ctx: &mut Self::Context) {
        for (_, watchers) in self.watches.iter_mut() {
            watchers.retain(|w| {
                if w.term < msg.0 {
                    w.watcher.do_send(WatchFired(WatchOutcome::Superseded));
                    false
                } else {
                    true
                }
            });
        }
        self.watches.retain(|_, w| !w.is_empty());
    }
}

impl Handler<StopApplier> for Applier {
    type Result = ();

    fn handle(&mut self, _msg: StopApplier, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
