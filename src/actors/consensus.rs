//! The consensus actor: drives the Raft core, persists each Ready, sends, and hands out commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::applier::{Applier, ApplyEntries, ReadDone, ServeRead, TermChanged, Watch, WatchFired};
use super::disk::{DiskWriter, Persist};
use super::status::{ConsensusNumbers, StatusBoard};
use super::transport::Transport;
use crate::protocol::command::Command;
use crate::protocol::raft::{Message, MessageBody, ProposeError, RaftCore, Ready, Role};

/// Reads waiting for confirmation before new ones are refused with `-TRYAGAIN`.
pub const MAX_PENDING_READS: usize = 100_000;

/// A Raft message from a peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub Message);

/// Why consensus did not take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the leader; the leader's client address, or `?`.
    NotLeader(String),
    /// Too much is already waiting; try again.
    Busy,
}

/// Propose an encoded [`Proposal`](crate::protocol::command::Proposal); the watcher learns its fate.
#[derive(Message)]
#[rtype(result = "Result<(u64, u64), Refusal>")]
pub struct Propose {
    /// The encoded proposal.
    pub data: Vec<u8>,
    /// Its request id (to recognise it at apply time).
    pub request_id: u64,
    /// Who is told once the index is settled.
    pub watcher: Recipient<WatchFired>,
}

/// Start a linearizable read; the answer goes to `reply_to`.
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub struct ReadIndex {
    /// The read-only command.
    pub command: Command,
    /// Who to answer.
    pub reply_to: Recipient<ReadDone>,
}

/// Stop ticking and processing; the replica is shutting down (or crashing in a test).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopConsensus;

/// How the consensus actor is wired.
pub struct ConsensusParts {
    /// The Raft core, recovered from the WAL.
    pub core: RaftCore,
    /// Where Ready's entries and hard state are made durable.
    pub disk: Addr<DiskWriter>,
    /// Where committed entries go.
    pub applier: Addr<Applier>,
    /// How messages reach other members.
    pub transport: Box<dyn Transport>,
    /// The shared status board.
    pub status: Arc<StatusBoard>,
    /// Interval between Raft ticks.
    pub tick: Duration,
}

struct PendingRead {
    command: Command,
    reply_to: Recipient<ReadDone>,
}

/// Owns the Raft core of one replica.
pub struct Consensus {
    core: RaftCore,
    disk: Addr<DiskWriter>,
    applier: Addr<Applier>,
    transport: Box<dyn Transport>,
    status: Arc<StatusBoard>,
    tick: Duration,
    /// A Ready is being written to disk; the next one waits (and grows: group commit).
    persisting: bool,
    reads: HashMap<u64, PendingRead>,
    next_read_ctx: u64,
    /// Watches of terms below this have been abandoned.
    watch_term_floor: u64,
    stopped: bool,
}

impl Consensus {
    /// A consensus actor from its parts.
    pub fn new(parts: ConsensusParts) -> Consensus {
        Consensus {
            core: parts.core,
            disk: parts.disk,
            applier: parts.applier,
            transport: parts.transport,
            status: parts.status,
            tick: parts.tick,
            persisting: false,
            reads: HashMap::new(),
            next_read_ctx: 1,
            watch_term_floor: 0,
            stopped: false,
        }
    }

    fn refusal(&self, e: ProposeError) -> Refusal {
        match e {
            ProposeError::NotLeader { .. } => Refusal::NotLeader(self.status.leader_hint()),
            ProposeError::Busy => Refusal::Busy,
        }
    }

    /// Runs Readies until none is left or one is waiting for the disk.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while !self.persisting && !self.stopped && self.core.has_ready() {
            let mut ready = self.core.ready();
            self.publish(&ready);
            if ready.hard_state.is_none() && ready.entries.is_empty() {
                self.finish(ready);
                continue;
            }
            // Persist before send (see Ready): the rest of this Ready runs when the write is durable.
            self.persisting = true;
            let entries = std::mem::take(&mut ready.entries);
            let last = entries.last().cloned();
            let write = self.disk.send(Persist { hard_state: ready.hard_state, entries });
            ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return act.fail(ctx, &format!("WAL write failed: {e}")),
                    Err(e) => return act.fail(ctx, &format!("disk writer unreachable: {e}")),
                }
                act.persisting = false;
                // `advance` only needs the last entry written.
                ready.entries = last.into_iter().collect();
                act.finish(ready);
                act.drive(ctx);
            }));
        }
    }

    /// A replica that cannot write its log must not go on acknowledging: stop consensus.
    fn fail(&mut self, ctx: &mut Context<Self>, why: &str) {
        log::error!("replica {}: {why}; consensus stops", self.core.id());
        self.stopped = true;
        ctx.stop();
    }

    /// Carries out the rest of a Ready once its writes are durable.
    fn finish(&mut self, ready: Ready) {
        for message in &ready.messages {
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                // Snapshot transfer is not implemented yet; the log is never compacted, so a
                // leader never needs one. Dropped here rather than sent without its image.
                log::warn!("replica {}: dropping an InstallSnapshot (not supported yet)", self.core.id());
                continue;
            }
            self.transport.send(message.clone());
        }
        if !ready.committed_entries.is_empty() {
            self.applier.do_send(ApplyEntries(ready.committed_entries.clone()));
        }
        if let Some(role) = ready.role {
            // After this Ready's entries, so a watcher whose entry did commit hears that first.
            // A leader keeps its own term's watches; anyone else can no longer see them through.
            let keep_from = if role.role == Role::Leader { role.term } else { role.term + 1 };
            if keep_from != self.watch_term_floor {
                self.watch_term_floor = keep_from;
                self.applier.do_send(TermChanged(keep_from));
            }
        }
        for read in &ready.read_states {
            if let Some(pending) = self.reads.remove(&read.ctx) {
                self.applier.do_send(ServeRead { command: pending.command, reply_to: pending.reply_to });
            }
        }
        for ctx in &ready.dropped_reads {
            if let Some(pending) = self.reads.remove(ctx) {
                pending
                    .reply_to
                    .do_send(ReadDone(Err("leadership lost before the read was confirmed".into())));
            }
        }
        self.core.advance(&ready);
        self.publish_numbers();
    }

    fn publish(&mut self, ready: &Ready) {
        if let Some(role) = ready.role {
            log::info!(
                "replica {}: {} in term {} (leader {})",
                self.core.id(),
                role.role.name(),
                role.term,
                role.leader
            );
        }
        self.publish_numbers();
    }

    fn publish_numbers(&self) {
        let log = self.core.log();
        self.status.publish_consensus(ConsensusNumbers {
            role: Some(self.core.role()),
            term: self.core.term(),
            leader: self.core.leader(),
            commit_index: log.committed(),
            last_log_index: log.last_index(),
            snapshot_index: log.snapshot_meta().index,
            log_bytes: log.entries_bytes() as u64,
        });
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.publish_numbers();
        ctx.run_interval(self.tick, |act, ctx| {
            act.core.tick();
            act.drive(ctx);
        });
    }
}

impl Handler<Inbound> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        if matches!(msg.0.body, MessageBody::InstallSnapshot { .. }) {
            log::warn!(
                "replica {}: refused an InstallSnapshot from {} (not supported yet)",
                self.core.id(),
                msg.0.from
            );
            return;
        }
        if let Err(e) = self.core.step(msg.0) {
            log::warn!("replica {}: refused a peer message: {e}", self.core.id());
        }
        self.drive(ctx);
    }
}

impl Handler<Propose> for Consensus {
    type Result = Result<(u64, u64), Refusal>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        if self.stopped {
            return Err(Refusal::Busy);
        }
        let (index, term) = self.core.propose(msg.data).map_err(|e| self.refusal(e))?;
        // The watch goes out before any ApplyEntries that could hold `index` (DESIGN.md).
        self.applier.do_send(Watch { index, term, request_id: msg.request_id, watcher: msg.watcher });
        self.drive(ctx);
        Ok((index, term))
    }
}

impl Handler<ReadIndex> for Consensus {
    type Result = Result<(), Refusal>;

    fn handle(&mut self, msg: ReadIndex, ctx: &mut Self::Context) -> Self::Result {
        if self.stopped || self.reads.len() >= MAX_PENDING_READS {
            return Err(Refusal::Busy);
        }
        let read_ctx = self.next_read_ctx;
        self.core.read_index(read_ctx).map_err(|e| self.refusal(e))?;
        self.next_read_ctx += 1;
        self.reads.insert(read_ctx, PendingRead { command: msg.command, reply_to: msg.reply_to });
        self.drive(ctx);
        Ok(())
    }
}

impl Handler<StopConsensus> for Consensus {
    type Result = ();

    fn handle(&mut self, _msg: StopConsensus, ctx: &mut Self::Context) {
        self.stopped = true;
        ctx.stop();
    }
}
