//! One waiter per client request: proposes or reads, then resolves to exactly one reply.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::connection::{ReplyBudget, Reserved, WaiterDone};
use super::consensus::{
    refusal_to_reply, Admin, AdminDone, Consensus, Propose, ReadInbox, ReadIndex, Refusal,
};
use super::registry::ScanCursors;
use crate::protocol::command::{encode_entry, Command, CommandResult, Proposal, SessionTag, MAX_ENTRY_BYTES};
use crate::protocol::request::AdminRequest;
use crate::protocol::resp::Reply;

/// Source of request ids, unique within this process (with the term, unique within the log).
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// What became of a watched index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The watcher's own entry was applied there, with this result.
    Applied(CommandResult),
    /// Another entry was applied there, or the term moved on first: the outcome is unknown.
    Superseded,
    /// Consensus did not take the proposal (nothing was appended).
    Refused(Refusal),
}

/// Sent to a watcher when its index is settled.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct WatchFired(pub WatchOutcome);

/// Why a read was not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// Consensus did not take it.
    Refused(Refusal),
    /// It was taken but could not be confirmed or served, for this reason (answered `-TRYAGAIN`).
    Failed(String),
}

/// The answer to a read: served by the applier, or refused or failed by consensus.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReadDone {
    /// The result, or why the read was not served.
    pub result: Result<CommandResult, ReadFailure>,
    /// What was reserved for the reply in the connection's [`ReplyBudget`].
    pub reserved: Reserved,
}

impl ReadDone {
    /// A read that could not be served, for `why`.
    pub fn failed(why: impl Into<String>) -> ReadDone {
        ReadDone { result: Err(ReadFailure::Failed(why.into())), reserved: Reserved::default() }
    }

    /// A read consensus did not take.
    pub fn refused(refusal: Refusal) -> ReadDone {
        ReadDone { result: Err(ReadFailure::Refused(refusal)), reserved: Reserved::default() }
    }
}

/// Sent by the connection when the request's deadline passed (or the connection ended): the
/// waiter answers `-TRYAGAIN` unless it already answered. One sweep per connection keeps the
/// deadlines, so a request costs no timer of its own.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct DeadlinePassed;

/// What a waiter does.
pub enum WaiterTask {
    /// Propose a write through the log.
    Write {
        /// The exactly-once tag, if the client sent `REQ`.
        session: Option<SessionTag>,
        /// The state-changing command.
        command: Command,
    },
    /// Serve a linearizable read, its reply bounded by the connection's budget.
    Read(Command, Arc<ReplyBudget>),
    /// Change the membership or move the leader; answered once that took effect.
    Admin(AdminRequest),
}

/// Waits for one request's outcome.
pub struct Waiter {
    seq: u64,
    task: Option<WaiterTask>,
    /// Shared with the connection's other waiters: cloning an actix address allocates.
    consensus: Rc<Addr<Consensus>>,
    /// Where reads go to consensus, if not as a message each.
    read_inbox: Option<Arc<ReadInbox>>,
    /// Its read must follow the writes its connection sent before it (see [`Waiter::after_writes`]).
    after_writes: bool,
    /// Its write must not be seen by the reads its connection sent before it (see
    /// [`Waiter::after_reads`]).
    after_reads: bool,
    /// The connection's address, shared by its waiters like `consensus`.
    reply_to: Rc<Recipient<WaiterDone>>,
    done: bool,
    /// What was reserved for the reply (given back by the connection once written, or here if
    /// the reply never goes).
    reserved: Reserved,
    /// Where SCAN pages that go on get their cursor.
    cursors: Arc<ScanCursors>,
}

fn try_again(why: &str) -> Reply {
    Reply::Error(format!("TRYAGAIN {why}"))
}

fn refusal_reply(r: Refusal) -> Reply {
    refusal_to_reply(r)
}

impl Waiter {
    /// A waiter for request `seq` of a connection, answering `reply_to` once there is an outcome
    /// or it is sent [`DeadlinePassed`]; both addresses are shared with the connection's other
    /// waiters (it runs on the connection's thread).
    pub fn new(
        seq: u64,
        task: WaiterTask,
        consensus: Rc<Addr<Consensus>>,
        reply_to: Rc<Recipient<WaiterDone>>,
        cursors: Arc<ScanCursors>,
    ) -> Waiter {
        Waiter {
            seq,
            task: Some(task),
            consensus,
            read_inbox: None,
            after_writes: false,
            after_reads: false,
            reply_to,
            done: false,
            reserved: Reserved::default(),
            cursors,
        }
    }

    /// Hands its read to consensus through `inbox` (see [`ReadInbox`]) rather than as a message.
    pub fn with_read_inbox(mut self, inbox: Arc<ReadInbox>) -> Waiter {
        self.read_inbox = Some(inbox);
        self
    }

    /// Its read is served only after the writes consensus took before it (on a leader, every
    /// entry appended before it; on a follower, every write forwarded before it), as a message
    /// behind the proposals of the connection's writes ahead of it (waiters started earlier on
    /// the same thread send theirs first).
    pub fn after_writes(mut self) -> Waiter {
        self.after_writes = true;
        self.read_inbox = None;
        self
    }

    /// Its write is applied only after the reads consensus holds when it arrives, those of its
    /// connection ahead of it among them (they were handed over first).
    pub fn after_reads(mut self) -> Waiter {
        self.after_reads = true;
        self
    }

    /// The reply for `result`; a SCAN page that goes on gets a cursor for where it stopped.
    fn reply_for(&self, result: CommandResult) -> Reply {
        match result {
            CommandResult::ScanPage { next: Some(next), keys } => {
                let cursor = self.cursors.register(next);
                Reply::Array(Some(vec![
                    Reply::bulk(cursor.to_string().into_bytes()),
                    Reply::Array(Some(keys.into_iter().map(|k| Reply::Bulk(Some(k))).collect())),
                ]))
            }
            CommandResult::Array(results) => {
                Reply::Array(Some(results.into_iter().map(|r| self.reply_for(r)).collect()))
            }
            other => Reply::from(other),
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>, reply: Reply) {
        if !self.done {
            self.done = true;
            let reserved = std::mem::take(&mut self.reserved);
            self.reply_to.do_send(WaiterDone { seq: self.seq, reply, reserved });
        }
        ctx.stop();
    }
}

impl Actor for Waiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Proposals and reads are one-way messages: a consensus that is gone would never answer.
        if !self.consensus.connected() {
            return self.finish(ctx, try_again("replica is shutting down"));
        }
        match self.task.take() {
            Some(WaiterTask::Write { session, command }) => {
                let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
                let proposal = Proposal { request_id, session, command };
                let data = match encode_entry(&proposal) {
                    Ok(data) if data.len() > MAX_ENTRY_BYTES => {
                        let why = format!(
                            "request too large to replicate (max {MAX_ENTRY_BYTES} bytes as one entry)"
                        );
                        return self.finish(ctx, Reply::err(why));
                    }
                    Ok(data) => data,
                    Err(e) => return self.finish(ctx, Reply::err(format!("cannot encode request: {e}"))),
                };
                // No answer to wait for: a refusal comes back as a WatchFired like any outcome.
                let after_reads = self.after_reads;
                let watcher = ctx.address().recipient();
                self.consensus.do_send(Propose { data, request_id, watcher, after_reads });
            }
            Some(WaiterTask::Read(command, budget)) => {
                // The answer, a refusal included, comes back as a ReadDone.
                let after_writes = self.after_writes;
                let read = ReadIndex { command, budget, reply_to: ctx.address().recipient(), after_writes };
                match &self.read_inbox {
                    Some(inbox) => inbox.submit(read, &self.consensus),
                    None => self.consensus.do_send(read),
                }
            }
            Some(WaiterTask::Admin(request)) => {
                self.consensus.do_send(Admin { request, reply_to: ctx.address().recipient() });
            }
            None => {}
        }
    }
}

impl Handler<DeadlinePassed> for Waiter {
    type Result = ();

    fn handle(&mut self, _msg: DeadlinePassed, ctx: &mut Self::Context) {
        self.finish(ctx, try_again("no outcome within the request timeout"));
    }
}

impl Handler<AdminDone> for Waiter {
    type Result = ();

    fn handle(&mut self, msg: AdminDone, ctx: &mut Self::Context) {
        self.finish(ctx, msg.0);
    }
}

impl Handler<WatchFired> for Waiter {
    type Result = ();

    fn handle(&mut self, msg: WatchFired, ctx: &mut Self::Context) {
        let reply = match msg.0 {
            WatchOutcome::Applied(result) => self.reply_for(result),
            WatchOutcome::Superseded => try_again("leader changed before the write was applied"),
            WatchOutcome::Refused(refusal) => refusal_reply(refusal),
        };
        self.finish(ctx, reply);
    }
}

impl Handler<ReadDone> for Waiter {
    type Result = ();

    fn handle(&mut self, msg: ReadDone, ctx: &mut Self::Context) {
        let reply = match msg.result {
            Ok(result) => self.reply_for(result),
            Err(ReadFailure::Refused(refusal)) => refusal_reply(refusal),
            Err(ReadFailure::Failed(why)) => try_again(&why),
        };
        self.reserved = msg.reserved;
        self.finish(ctx, reply);
    }
}
