//! The consensus actor: drives the Raft core, sends at once, writes in order (one write at a
//! time, the next one growing meanwhile: a leader's on the disk writer's thread, a follower's on
//! this one), and hands out commits.
//!
//! On a follower it forwards what only the leader can do (writes, read-index confirmation,
//! membership changes) over the peer link and finishes each request itself, from its own
//! applier; on the leader it carries out what followers forward.
//!
//! It also owns the snapshot life cycle: it asks the applier for a snapshot once the log passes
//! the threshold and then compacts; it streams snapshots to followers that need one, in chunks
//! paced by `protocol::snapshot_transfer` (stop-and-wait, tick-driven); and it installs one it
//! receives once that module says the image is whole and checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;

use super::applier::{
    Applier, ApplyEntries, Expect, Restore, ServeRead, ServeReads, TakeSnapshot, TermChanged, Unexpect,
    Watch, Watches,
};
use super::connection::ReplyBudget;
use super::disk::{Disk, Persist, PersistError};
use super::snapshotter::{
    DecodedState, Discard, DiscardImage, OpenLatest, ReleaseImage, SaveImage, Snapshotter,
};
use super::status::{ConsensusNumbers, StatusBoard};
use super::transport::Transport;
use super::waiter::{ReadDone, WatchFired, WatchOutcome};
use super::wake_inbox::WakeInbox;
use crate::protocol::command::{encode_entry, stamp_entry, Command, Proposal, MAX_ENTRY_BYTES};
use crate::protocol::forwarding::{Abandoned, Freshness, Outbox, RepeatFilter, ORDER_PATIENCE_TICKS};
use crate::protocol::peer_wire::{
    ForwardAnswer, ForwardRefusal, Forwarded, PeerFrame, SnapshotChunk, SNAPSHOT_CHUNK_BYTES,
};
use crate::protocol::raft::{
    ChangeError, ChangeOp, Message, MessageBody, NodeId, ProposeError, RaftCore, Ready, Role, Snapshot,
    SnapshotMeta, TransferError,
};
use crate::protocol::read_time::{next_stamp, read_time, ReadClocks};
use crate::protocol::request::AdminRequest;
use crate::protocol::resp::Reply;
use crate::protocol::snapshot_schedule::SnapshotSchedule;
use crate::protocol::snapshot_transfer::{
    AckOutcome, SendChunk, SnapshotReceiver, SnapshotSender, TickOrder, TransferConfig,
};
use crate::storage::{SnapshotFileWriter, SnapshotInbox, SnapshotSource, StateMachine, StorageError};

/// Reads waiting for confirmation before new ones are refused with `-TRYAGAIN`.
pub const MAX_PENDING_READS: usize = 100_000;
/// Most expired keys one reclaiming entry removes (it is one step of the applier on every replica).
pub const MAX_RECLAIMED_PER_ENTRY: u64 = 1_000;
/// How often a leader looks for expired keys to reclaim.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(100);

/// The leader's clock, stamped into entries and read answers: wall-clock milliseconds, never
/// decreasing, never behind a clock this replica applied or was told by a leader.
#[derive(Debug, Default)]
struct StampClock {
    /// The largest time handed out or observed.
    last_ms: u64,
}

impl StampClock {
    /// A time for an entry or a read, at least `floor_ms` (the applied clock).
    fn stamp(&mut self, floor_ms: u64) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_ms = self.last_ms.max(wall).max(floor_ms);
        self.last_ms
    }

    /// Notes a time a leader handed out.
    fn observe(&mut self, ms: u64) {
        self.last_ms = self.last_ms.max(ms);
    }
}
/// A snapshot chunk unanswered this long is sent again.
pub const SNAPSHOT_RESEND_MS: u64 = 300;
/// A snapshot transfer without progress this long is abandoned (Raft will ask again).
pub const SNAPSHOT_GIVE_UP_MS: u64 = 10_000;
/// Largest snapshot image a follower accepts, in bytes.
pub const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// Membership changes a new leader holds until it has applied its election's no-op; more are
/// refused as in progress.
pub const MAX_HELD_CHANGES: usize = 16;

/// The transfer pacing for a consensus ticking every `tick`.
fn transfer_config(tick: Duration) -> TransferConfig {
    let ticks = |ms: u64| (ms / (tick.as_millis() as u64).max(1)).max(1) as u32;
    TransferConfig {
        chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        resend_ticks: ticks(SNAPSHOT_RESEND_MS),
        give_up_ticks: ticks(SNAPSHOT_GIVE_UP_MS),
        max_image_bytes: MAX_SNAPSHOT_BYTES,
    }
}

/// A frame from a peer: a Raft message or a piece of a snapshot transfer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub PeerFrame);

/// Why consensus did not take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the leader; the leader's client address, or `?`.
    NotLeader(String),
    /// Too much is already waiting; try again.
    Busy,
    /// Leadership is being handed over; try again.
    Transferring,
    /// No leader is known to forward to; try again.
    NoLeader,
    /// The replica forwarded to was no longer the leader; nothing was proposed.
    LeaderChanged,
    /// The disk of this replica (or of the leader) is full: writes are refused until there is room.
    DiskFull,
}

/// A heartbeat unanswered this long is taken as lost: the round trip is timed from the next one.
const HEARTBEAT_ANSWER_LOST: Duration = Duration::from_secs(1);

/// How long a replica whose disk is full waits before it tries the refused write again.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);

/// Change the membership or move the leader; `reply_to` hears once it took effect, or why not.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admin {
    /// What to do.
    pub request: AdminRequest,
    /// Who to answer.
    pub reply_to: Recipient<AdminDone>,
}

/// The answer to an [`Admin`] request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdminDone(pub Reply);

/// Who hears the outcome of an admin request: a local waiter, or a follower that forwarded it.
enum AdminReplyTo {
    Local(Recipient<AdminDone>),
    Remote { follower: NodeId, id: u64 },
}

impl AdminReplyTo {
    /// Sends `reply`; a follower is told `index`, the position it must apply before answering `+OK`.
    fn answer(&self, transport: &mut dyn Transport, me: NodeId, reply: Reply, index: u64) {
        match self {
            AdminReplyTo::Local(reply_to) => reply_to.do_send(AdminDone(reply)),
            AdminReplyTo::Remote { follower, id } => {
                let answer = match reply {
                    Reply::Error(line) => ForwardAnswer::Failed(line),
                    _ => ForwardAnswer::AdminDone(index),
                };
                transport.send(PeerFrame::ForwardAnswer { from: me, to: *follower, id: *id, answer });
            }
        }
    }

    /// Sends a refusal (for a follower: the structured kind, so it words the reply itself).
    fn refuse(&self, transport: &mut dyn Transport, me: NodeId, refusal: Refusal) {
        match self {
            AdminReplyTo::Local(reply_to) => reply_to.do_send(AdminDone(refusal_to_reply(refusal))),
            AdminReplyTo::Remote { follower, id } => {
                let answer = ForwardAnswer::Refused(forward_refusal(&refusal));
                transport.send(PeerFrame::ForwardAnswer { from: me, to: *follower, id: *id, answer });
            }
        }
    }
}

/// A membership change proposed and not yet applied.
struct ChangeWaiter {
    index: u64,
    term: u64,
    reply_to: AdminReplyTo,
}

/// A write this follower forwarded: the waiter to tell once the leader says where it went.
struct ForwardedWrite {
    request_id: u64,
    watcher: Recipient<WatchFired>,
}

/// An admin request this follower forwarded.
struct ForwardedAdmin {
    reply_to: Recipient<AdminDone>,
    /// For a leader transfer, its target: that member leading is its success, whoever says so.
    transfer_to: Option<NodeId>,
}

/// Propose an encoded [`Proposal`](crate::protocol::command::Proposal); the watcher learns its fate.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    /// The encoded proposal.
    pub data: Vec<u8>,
    /// Its request id (to recognise it at apply time).
    pub request_id: u64,
    /// Who is told once the index is settled, or at once if the proposal is refused.
    pub watcher: Recipient<WatchFired>,
    /// Not applied before the reads this replica holds are served (the asking connection's
    /// reads ahead of it among them): on a leader those in its read queue, on a follower those
    /// it forwarded. Refused, unproposed, by a leader still holding reads it forwarded before
    /// it led, or a follower still holding reads it took while it led.
    pub after_reads: bool,
}

/// Start a linearizable read; the answer goes to `reply_to`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadIndex {
    /// The read-only command.
    pub command: Command,
    /// The asking connection's reply budget.
    pub budget: Arc<ReplyBudget>,
    /// Who to answer.
    pub reply_to: Recipient<ReadDone>,
    /// Served only after the writes taken before it (the asking connection's writes ahead of
    /// it among them): on a leader, every entry it appended before the read arrived; on a
    /// follower, the entries the leader appended for every write it forwarded before.
    pub after_writes: bool,
}

/// Run the Readies that the messages handled since the last drive produced.
#[derive(Message)]
#[rtype(result = "()")]
struct DriveNow;

/// Reads wait in the [`ReadInbox`] and consensus asked to be told: take them.
#[derive(Message)]
#[rtype(result = "()")]
struct ReadsWaiting;

/// Reads handed to consensus without a message each. While a read round is out, consensus takes
/// what arrived when the round ends (it drives then anyway), so a burst of reads from clients
/// wakes its thread once rather than once per read; with no round out it asks to be woken.
#[derive(Default)]
pub struct ReadInbox(WakeInbox<ReadIndex>);

impl ReadInbox {
    /// Hands `read` to `consensus`, sending it a message only if it asked for one.
    pub fn submit(&self, read: ReadIndex, consensus: &Addr<Consensus>) {
        if self.0.push(read) {
            consensus.do_send(ReadsWaiting);
        }
    }
}

/// Messages handled without a drive before one is forced (a bound on a burst's batch).
const MAX_UNDRIVEN_MESSAGES: u32 = 256;

/// Default of `trim_batch_entries`: one chunk of the log's deque, so each trim frees whole chunks.
pub const DEFAULT_TRIM_BATCH_ENTRIES: u64 = 4096;

/// Stop ticking and processing; the replica is shutting down (or crashing in a test).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopConsensus;

/// How the consensus actor is wired.
pub struct ConsensusParts {
    /// The Raft core, recovered from the WAL.
    pub core: RaftCore,
    /// Where Ready's entries and hard state are made durable: through the disk writer while
    /// this replica leads, on consensus's own thread while it follows.
    pub disk: Disk,
    /// Where snapshot images are written and read.
    pub snapshotter: Addr<Snapshotter>,
    /// Where committed entries go.
    pub applier: Addr<Applier>,
    /// How frames reach other members.
    pub transport: Box<dyn Transport>,
    /// The shared status board.
    pub status: Arc<StatusBoard>,
    /// Interval between Raft ticks.
    pub tick: Duration,
    /// Log bytes since the last snapshot that trigger a new one.
    pub snapshot_threshold_bytes: u64,
    /// Entries dropped from memory at a time once no peer needs them.
    pub trim_batch_entries: u64,
    /// The newest snapshot on disk, opened, if any (sent to followers that need it).
    pub latest_snapshot: Option<Arc<SnapshotSource>>,
    /// Where images received from a leader are written as they arrive.
    pub snapshot_inbox: SnapshotInbox,
    /// Peer addresses known at start-up (`--peers`, or what a joining replica was told), used
    /// for members the recorded membership has no address for.
    pub address_book: BTreeMap<NodeId, String>,
    /// Forward what only the leader can do to it (false: answer `-NOTLEADER` instead).
    pub forward: bool,
    /// Test-only fault: serve reads from local state without a read index (stale reads).
    pub unsafe_local_reads: bool,
    /// How long a client request may wait (forwards unanswered for longer are dropped).
    pub request_timeout: Duration,
}

struct PendingRead {
    command: Command,
    budget: Arc<ReplyBudget>,
    reply_to: Recipient<ReadDone>,
}

/// A read waiting for the leader's confirmation: a client's here, or a follower's batch.
enum ReadWaiter {
    Local(PendingRead),
    Remote { follower: NodeId, id: u64 },
}

/// An image file opened for transfers (kept as the newest and with each transfer, read a chunk
/// at a time). Dropped, its handle goes to the snapshotter: the last close of an image a newer
/// snapshot set aside frees its blocks, which must not happen on this thread.
struct HeldImage {
    source: Option<Arc<SnapshotSource>>,
    snapshotter: Addr<Snapshotter>,
}

impl HeldImage {
    fn new(source: Arc<SnapshotSource>, snapshotter: Addr<Snapshotter>) -> HeldImage {
        HeldImage { source: Some(source), snapshotter }
    }

    /// The opened image (present until the drop).
    fn source(&self) -> Option<&Arc<SnapshotSource>> {
        self.source.as_ref()
    }
}

impl Clone for HeldImage {
    fn clone(&self) -> HeldImage {
        HeldImage { source: self.source.clone(), snapshotter: self.snapshotter.clone() }
    }
}

impl Drop for HeldImage {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            // If the snapshotter has stopped (the replica is stopping), it is dropped here.
            self.snapshotter.do_send(ReleaseImage(source));
        }
    }
}

/// Owns the Raft core of one replica.
pub struct Consensus {
    /// Reads submitted by waiters, taken at each drive.
    read_inbox: Arc<ReadInbox>,
    core: RaftCore,
    disk: Disk,
    snapshotter: Addr<Snapshotter>,
    applier: Addr<Applier>,
    transport: Box<dyn Transport>,
    status: Arc<StatusBoard>,
    tick: Duration,
    /// A `DriveNow` is on its way.
    drive_scheduled: bool,
    /// Messages handled since the last drive.
    undriven: u32,
    /// A write is with the disk writer.
    writing: bool,
    /// The disk was full: the write at the queue's head waits for its retry.
    disk_retry_pending: bool,
    /// When the oldest unanswered heartbeat to each peer left (for the round-trip metric).
    heartbeat_sent: HashMap<NodeId, Instant>,
    /// Writes waiting for it, in order; the last one grows while it waits (group commit).
    disk_queue: VecDeque<DiskWrite>,
    /// Watches of local proposals not yet sent: they go to the applier just before the next
    /// message to it, which is always before the `ApplyEntries` that could hold their index.
    held_watches: Vec<Watch>,
    reads: HashMap<u64, ReadWaiter>,
    next_read_ctx: u64,
    /// Watches of terms below this have been abandoned.
    watch_term_floor: u64,
    /// When the next snapshot is due (staggered across the members).
    snapshot_schedule: SnapshotSchedule,
    trim_batch_entries: u64,
    /// A snapshot is being taken.
    snapshotting: bool,
    latest_snapshot: Option<HeldImage>,
    outgoing: SnapshotSender<HeldImage>,
    /// The newest snapshot file is being opened and checked (for a transfer).
    loading_snapshot: bool,
    incoming: SnapshotReceiver,
    /// Where received images are written (numbering their files).
    snapshot_inbox: SnapshotInbox,
    /// The file the image being received is written to.
    receiving: Option<SnapshotFileWriter>,
    /// The tick at which an image being received last found the disk full, while the alarm it
    /// raised is up (see [`image_fitted`](Self::image_fitted)).
    image_disk_full: Option<u64>,
    /// A received image, whole and checked, from the InstallSnapshot it is stepped in as until
    /// the Ready that hands it out (in the same drive), or dropped if Raft refused it.
    received: Option<SnapshotFileWriter>,
    stopped: bool,
    address_book: BTreeMap<NodeId, String>,
    /// The peers the transport was last told to reach.
    peer_set: BTreeMap<NodeId, String>,
    /// The membership changed since the board and the links last heard of it.
    membership_dirty: bool,
    change_waiters: Vec<ChangeWaiter>,
    /// Membership changes that came before this new leader applied its election's no-op, held
    /// until it has (up to [`MAX_HELD_CHANGES`]), rather than refused as if a change were under
    /// way: `LEADER TRANSFER` then `MEMBER REMOVE` just works.
    held_changes: Vec<(Vec<ChangeOp>, AdminReplyTo)>,
    /// Leader transfers waiting for their target to lead.
    transfer_waiters: Vec<(NodeId, AdminReplyTo)>,
    /// Forward to the leader (`--no-forward` clears it).
    forward: bool,
    /// Test-only fault: reads are served from local state at once (see `ReplicaConfig`).
    unsafe_local_reads: bool,
    /// Identifies this run in forward frames.
    run: u64,
    /// Ticks since start (the clock of forwards).
    ticks: u64,
    /// Ticks a request may wait before its forward is dropped.
    request_timeout_ticks: u64,
    /// What this replica forwarded and waits on.
    outbox: Outbox<ForwardedWrite, PendingRead, ForwardedAdmin>,
    /// The (term, leader) the outbox's forwards went to.
    forwarded_to: (u64, NodeId),
    /// On the leader: the forward ids taken from each follower.
    repeats: RepeatFilter,
    /// Entry stamps and read times.
    clock: StampClock,
    /// On a follower, the times its reads are judged at (see [`ReadClocks`]).
    read_clocks: ReadClocks,
    /// The reclaiming entry proposed and not yet applied, as (index, term).
    reclaim_in_flight: Option<(u64, u64)>,
    /// Ticks between looks for expired keys.
    reclaim_interval_ticks: u64,
}

impl Consensus {
    /// A consensus actor from its parts.
    pub fn new(parts: ConsensusParts) -> Consensus {
        let snapshot_schedule = SnapshotSchedule::new(parts.snapshot_threshold_bytes, parts.core.id());
        let latest_snapshot = parts.latest_snapshot.map(|s| HeldImage::new(s, parts.snapshotter.clone()));
        Consensus {
            read_inbox: Arc::new(ReadInbox::default()),
            core: parts.core,
            disk: parts.disk,
            snapshotter: parts.snapshotter,
            applier: parts.applier,
            transport: parts.transport,
            status: parts.status,
            tick: parts.tick,
            drive_scheduled: false,
            undriven: 0,
            writing: false,
            disk_retry_pending: false,
            heartbeat_sent: HashMap::new(),
            disk_queue: VecDeque::new(),
            held_watches: Vec::new(),
            reads: HashMap::new(),
            next_read_ctx: 1,
            watch_term_floor: 0,
            snapshot_schedule,
            trim_batch_entries: parts.trim_batch_entries,
            snapshotting: false,
            latest_snapshot,
            outgoing: SnapshotSender::new(transfer_config(parts.tick)),
            loading_snapshot: false,
            incoming: SnapshotReceiver::new(transfer_config(parts.tick)),
            snapshot_inbox: parts.snapshot_inbox,
            receiving: None,
            image_disk_full: None,
            received: None,
            stopped: false,
            address_book: parts.address_book,
            peer_set: BTreeMap::new(),
            membership_dirty: true,
            change_waiters: Vec::new(),
            held_changes: Vec::new(),
            transfer_waiters: Vec::new(),
            forward: parts.forward,
            unsafe_local_reads: parts.unsafe_local_reads,
            run: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            ticks: 0,
            request_timeout_ticks: (parts.request_timeout.as_millis() / parts.tick.as_millis().max(1)) as u64
                + 1,
            outbox: Outbox::new(),
            forwarded_to: (0, 0),
            clock: StampClock::default(),
            read_clocks: ReadClocks::default(),
            reclaim_in_flight: None,
            reclaim_interval_ticks: (RECLAIM_INTERVAL.as_millis() / parts.tick.as_millis().max(1)).max(1)
                as u64,
            repeats: RepeatFilter::default(),
        }
    }

    /// Points the transport at everyone the core may talk to: the members (learners and
    /// just-removed ones included), or while no membership is known, the start-up address book.
    fn sync_peers(&mut self) {
        let membership = self.core.membership();
        let ids: Vec<NodeId> = if membership.is_empty() {
            self.address_book.keys().copied().collect()
        } else {
            let mut ids = self.core.replication_targets();
            // A follower answers whoever leads, and votes for whoever asks.
            ids.extend(membership.voter_ids());
            ids
        };
        let me = self.core.id();
        let peers: BTreeMap<NodeId, String> = ids
            .into_iter()
            .filter(|&id| id != me)
            .filter_map(|id| {
                let recorded =
                    membership.addrs.get(&id).map(|a| a.peer_addr.clone()).filter(|a| !a.is_empty());
                let addr = recorded
                    .or_else(|| self.peer_set.get(&id).cloned())
                    .or_else(|| self.address_book.get(&id).cloned())?;
                Some((id, addr))
            })
            .collect();
        if peers != self.peer_set || self.membership_dirty {
            self.membership_dirty = false;
            self.transport.set_peers(&peers);
            let leaving =
                self.core.replication_targets().into_iter().filter(|&id| !membership.contains(id)).collect();
            self.status.publish_membership(membership, leaving);
            self.peer_set = peers;
        }
    }

    /// Answers membership changes that were applied (or can no longer be), and transfers whose
    /// target now leads (or that were abandoned).
    fn settle_admin(&mut self) {
        let applied = self.core.log().applied();
        for admin in self.outbox.release_admins(applied) {
            admin.reply_to.do_send(AdminDone(Reply::ok()));
        }
        if self.change_waiters.is_empty() && self.transfer_waiters.is_empty() {
            return;
        }
        let (term, role, leader, me) =
            (self.core.term(), self.core.role(), self.core.leader(), self.core.id());
        let log = self.core.log();
        let transport = &mut *self.transport;
        let mut awaited = Vec::new();
        self.change_waiters.retain(|w| {
            let reply = if applied >= w.index {
                match log.term(w.index) {
                    Some(t) if t == w.term => Reply::ok(),
                    Some(_) => {
                        Reply::Error("TRYAGAIN leader changed before the membership change committed".into())
                    }
                    // Gone from memory (trimmed or compacted) by now. Still in the proposal's
                    // term, no other leader can have written at that index: it is the change.
                    None if term == w.term => Reply::ok(),
                    None => Reply::Error(
                        "TRYAGAIN leader changed; the membership change may or may not commit".into(),
                    ),
                }
            } else if term > w.term {
                Reply::Error("TRYAGAIN leader changed; the membership change may or may not commit".into())
            } else {
                return true;
            };
            if let AdminReplyTo::Remote { follower, .. } = &w.reply_to {
                // The follower answers its client once it has applied the change.
                awaited.push((*follower, w.index));
            }
            w.reply_to.answer(transport, me, reply, w.index);
            false
        });
        for (follower, index) in awaited {
            self.core.await_commit(follower, index);
        }
        let transferee = self.core.lead_transferee();
        self.transfer_waiters.retain(|(to, reply_to)| {
            let reply = if leader == *to {
                Reply::ok()
            } else if role == Role::Leader && transferee != Some(*to) {
                Reply::Error(format!(
                    "TRYAGAIN leader transfer to {to} did not complete in an election timeout"
                ))
            } else if leader != 0 && role != Role::Leader {
                Reply::Error(format!("TRYAGAIN leadership went to {leader}, not {to}"))
            } else {
                return true;
            };
            reply_to.answer(transport, me, reply, 0);
            false
        });
    }

    fn change_refusal(&self, e: ChangeError) -> Reply {
        match e {
            ChangeError::Propose(p) => refusal_to_reply(self.refusal(p)),
            ChangeError::Refused(e) => Reply::err(e),
            e @ ChangeError::NotCaughtUp { .. } => Reply::err(e),
        }
    }

    fn refusal(&self, e: ProposeError) -> Refusal {
        match e {
            ProposeError::NotLeader { .. } => Refusal::NotLeader(self.status.leader_hint()),
            ProposeError::Busy => Refusal::Busy,
            ProposeError::Transferring => Refusal::Transferring,
        }
    }

    /// Drives once the mailbox is drained (or after a bounded burst), so every proposal and
    /// peer message that arrived together goes out in one Ready: one append per follower
    /// carrying all of them, one write. actix handles a context's spawned items, where
    /// `notify` puts `DriveNow`, only after the mailbox has nothing more to give.
    fn drive_soon(&mut self, ctx: &mut Context<Self>) {
        self.undriven += 1;
        if self.undriven >= MAX_UNDRIVEN_MESSAGES {
            return self.drive(ctx);
        }
        if !self.drive_scheduled {
            self.drive_scheduled = true;
            ctx.notify(DriveNow);
        }
    }

    /// Takes the reads waiting in the inbox and runs Readies until neither is left, handing out
    /// no entry past the ceiling the forwarded reads and writes set (`Outbox::apply_ceiling`).
    fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            let ceiling = self.outbox.apply_ceiling();
            self.core.set_apply_ceiling(ceiling);
            self.run_readies(ctx);
            if self.outbox.apply_ceiling() != ceiling && !self.stopped {
                // Reads served (or a write's index given) at the end of that drive moved the
                // entries this follower may apply.
                continue;
            }
            // With a read round out, its answers (or the tick that resends it) bring the next
            // drive; with none, the next read must wake this actor.
            let reads = self.read_inbox.0.take(!self.core.read_round_out());
            if reads.is_empty() {
                return;
            }
            for read in reads {
                self.take_read(read);
            }
        }
    }

    /// Runs Readies until none is left: sends at once, queues writes, hands out commits.
    fn run_readies(&mut self, ctx: &mut Context<Self>) {
        self.undriven = 0;
        let mut ran = false;
        while !self.stopped && self.core.has_ready() {
            ran = true;
            let mut ready = self.core.ready();
            self.log_role(&ready);
            for message in std::mem::take(&mut ready.messages) {
                if let MessageBody::InstallSnapshot { snapshot } = &message.body {
                    self.start_transfer(ctx, message.to, snapshot.meta);
                    continue;
                }
                if matches!(message.body, MessageBody::Heartbeat { .. }) {
                    // The oldest unanswered heartbeat, unless it was lost (then start again).
                    let now = Instant::now();
                    let sent = self.heartbeat_sent.entry(message.to).or_insert(now);
                    if now.duration_since(*sent) > HEARTBEAT_ANSWER_LOST {
                        *sent = now;
                    }
                }
                self.transport.send(PeerFrame::Raft(message));
            }
            // On the wire now, before this Ready wakes the disk writer or the applier (a wake
            // costs this thread tens of µs on a VM): a leader's appends and a follower's acks
            // are on the commit's critical path, where the leader's own fsync seldom is.
            self.transport.flush();
            let mut received = None;
            if let Some(snapshot) = ready.snapshot.take() {
                // The reads ahead of writes forwarded behind them would be served on a state
                // that may hold those writes: they are failed.
                const WHY: &str = "a snapshot was installed while the writes after the read were in flight";
                for read in self.outbox.break_barriers() {
                    read.reply_to.do_send(ReadDone::failed(WHY));
                }
                // The image is the file it was received into (Raft carries only its position).
                let Some(file) = self.received.take().filter(|f| f.meta() == snapshot.meta) else {
                    return self.fail(ctx, "a snapshot to install came without its received image");
                };
                // The snapshotter puts the file (sealed, so its bytes are durable) under its
                // snapshot name, durably, then decodes the state for the applier.
                let (decoded, state) = tokio::sync::oneshot::channel();
                received = Some(ReceivedImage { file, decoded });
                // A leader-to-be opens the newest image from disk if a follower ever needs it.
                self.latest_snapshot = None;
                // Before the entries that follow it.
                self.status.metrics.snapshots_installed.inc();
                self.send_applier(Restore { meta: snapshot.meta, state });
            }
            let write = ready.must_persist().then(|| {
                let persist = Persist {
                    compact: received.as_ref().map(|r| r.file.meta()),
                    hard_state: ready.hard_state,
                    entries: std::mem::take(&mut ready.entries),
                };
                DiskWrite { image: received, persist, number: ready.number }
            });
            if !ready.committed_entries.is_empty() {
                self.send_applier(ApplyEntries(std::mem::take(&mut ready.committed_entries)));
            }
            if ready.membership.is_some() {
                // Links first: the next Ready may already send to a member just added.
                self.membership_dirty = true;
                self.sync_peers();
            }
            if let Some(role) = ready.role {
                // After this Ready's entries, so a watcher whose entry did commit hears that first.
                // A leader keeps its own term's watches, and a follower those it forwarded to
                // this term's leader; a candidate can see none through.
                let keep_from = match role.role {
                    Role::Leader | Role::Follower => role.term,
                    Role::Candidate | Role::PreCandidate => role.term + 1,
                };
                if keep_from != self.watch_term_floor {
                    self.watch_term_floor = keep_from;
                    self.send_applier(TermChanged(keep_from));
                }
                if role.role == Role::Leader {
                    // A leader is sent no image: an alarm one raised has no reason left.
                    self.image_fitted();
                }
                if role.role == Role::Leader && self.receiving.is_some() {
                    // A leader receives no images: one half-received from an earlier leader
                    // would hold its disk space until the next start.
                    self.incoming.abandon();
                    self.discard_receiving();
                }
            }
            let mut to_serve = Vec::new();
            for read in &ready.read_states {
                match self.reads.remove(&read.ctx) {
                    Some(ReadWaiter::Local(pending)) => {
                        to_serve.push(self.serve_order(pending, ready.applied_upto(), true))
                    }
                    Some(ReadWaiter::Remote { follower, id }) => {
                        let now = self.clock.stamp(self.status.applied_clock_ms());
                        let clock_ms = read_time(now, self.next_stamp(read.index));
                        self.answer_forward(
                            follower,
                            id,
                            ForwardAnswer::ReadIndex { index: read.index, clock_ms },
                        )
                    }
                    None => {}
                }
            }
            if !to_serve.is_empty() {
                // One message for the round's reads rather than one each.
                self.send_applier(ServeReads(to_serve));
            }
            for read_ctx in &ready.dropped_reads {
                const WHY: &str = "leadership lost before the read was confirmed";
                match self.reads.remove(read_ctx) {
                    Some(ReadWaiter::Local(pending)) => pending.reply_to.do_send(ReadDone::failed(WHY)),
                    Some(ReadWaiter::Remote { follower, id }) => {
                        self.answer_forward(follower, id, ForwardAnswer::Failed(format!("TRYAGAIN {WHY}")))
                    }
                    None => {}
                }
            }
            self.core.advance(ready);
            // After advance: a write done on this thread reports itself durable at once, and the
            // messages that waited for it leave with the next turn of this loop.
            if let Some(write) = write {
                self.queue_write(ctx, write);
            }
        }
        // Before the trim below: a membership change's answer looks up its entry's term.
        self.settle_admin();
        // Numbers and the log's size only move with a Ready (or with a compaction, which
        // publishes its own).
        if ran {
            self.publish_numbers();
            if self.core.trimmable_entries() >= self.trim_batch_entries {
                // Freed here: a few hundred µs per batch, where the snapshotter would hold them
                // for as long as it encodes an image (the moment memory peaks anyway).
                drop(self.core.trim_memory());
            }
        }
        if ran || self.core.wants_fresh_snapshot() {
            self.maybe_snapshot(ctx);
        }
        self.settle_forwards();
        self.release_held_changes(ctx);
        if self.core.has_ready() {
            // A follower's admin request was answered: the commit index it waits for goes now.
            self.drive_soon(ctx);
        }
    }

    /// Queues a write behind those already handed to the disk writer, merging where it can.
    fn queue_write(&mut self, ctx: &mut Context<Self>, write: DiskWrite) {
        let write = match self.disk_queue.back_mut() {
            Some(back) => back.absorb(write),
            None => Some(write),
        };
        self.disk_queue.extend(write);
        self.start_write(ctx);
    }

    /// Hands the oldest queued write to storage unless one is already there.
    ///
    /// One write at a time keeps them in order and lets the next one grow meanwhile (group
    /// commit); the disk writer's own mailbox is not used as the queue, so nothing merged
    /// there could overtake or be overtaken.
    ///
    /// A leader's write goes to the disk writer's thread, so that the leader goes on taking
    /// proposals and acknowledgements during the fsync (its followers write the same entries
    /// meanwhile). A follower has nothing to do during its fsync but wait for it (its
    /// acknowledgement needs it, and the appends that arrive meanwhile join the next write), so
    /// it writes here, without the two thread hand-offs. A write that brings a snapshot image
    /// waits for the snapshotter, so it always goes the long way. The caller drives afterwards
    /// (a write done here releases messages for the next Ready).
    fn start_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.stopped || self.disk_retry_pending {
            return;
        }
        let Some(DiskWrite { image, persist, number }) = self.disk_queue.pop_front() else { return };
        if image.is_none() && self.core.role() != Role::Leader {
            let result = self.disk.wal.persist(persist);
            return self.written(ctx, number, result);
        }
        self.writing = true;
        let disk = self.disk.writer.clone();
        let save_image = image.map(|r| {
            let (saved, save) = tokio::sync::oneshot::channel();
            self.snapshotter.do_send(SaveImage { image: r.file, saved, decoded: r.decoded });
            save
        });
        let write = async move {
            // A received snapshot's image is durable before the log says it starts after it.
            if let Some(save) = save_image {
                save.await.map_err(|_| "the snapshotter stopped".to_string())?.map_err(|e| e.to_string())?;
            }
            disk.send(persist).await.map_err(|e| e.to_string())
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Err(e) => act.fail(ctx, &format!("write to disk failed: {e}")),
                Ok(result) => {
                    act.written(ctx, number, result);
                    if !act.stopped {
                        act.drive(ctx);
                    }
                }
            }
        }));
    }

    /// Takes in the outcome of write `number` (0: a compaction) and starts the next one.
    fn written(&mut self, ctx: &mut Context<Self>, number: u64, result: Result<(), PersistError>) {
        match result {
            Err(PersistError::Failed(e)) => self.fail(ctx, &format!("write to disk failed: {e}")),
            Err(PersistError::DiskFull { persist, why }) => {
                self.disk_full(ctx, DiskWrite { image: None, persist, number }, &why)
            }
            Ok(()) => {
                // A log write fitting says nothing of an image that did not (the log's segments
                // have room taken ahead): the alarm stays while one waits.
                self.lower_disk_full_alarm();
                if number > 0 {
                    self.core.on_persisted(number);
                }
                self.start_write(ctx);
            }
        }
    }

    /// The disk had no room for `write` (nothing of it was kept): raise the alarm, refuse writes,
    /// and try it again, first in the queue, after [`DISK_FULL_RETRY`]. Reads go on being served;
    /// what this replica has not persisted it does not acknowledge (votes and acks wait for it).
    fn disk_full(&mut self, ctx: &mut Context<Self>, write: DiskWrite, why: &str) {
        if !self.status.is_disk_full() {
            log::error!(
                "replica {}: {why}; writes are refused (-ERR disk full) until there is space, \
                 reads are served",
                self.core.id()
            );
        }
        self.status.set_disk_full(Some(why.to_string()));
        // Its image, if it brought one, is already durable.
        self.disk_queue.push_front(write);
        self.disk_retry_pending = true;
        ctx.run_later(DISK_FULL_RETRY, |act, ctx| {
            act.disk_retry_pending = false;
            act.start_write(ctx);
            if !act.stopped {
                act.drive(ctx);
            }
        });
    }

    /// A replica that cannot write its log must not go on acknowledging: stop consensus.
    ///
    /// What it said before stays true, and nothing it says afterwards is a lie: the board stops
    /// calling it leader (so INFO and redirects do not point at it), pending reads and writes are
    /// answered `-TRYAGAIN` now (their outcome is unknown to this replica), and new ones too.
    fn fail(&mut self, ctx: &mut Context<Self>, why: &str) {
        log::error!("replica {}: {why}; consensus stops", self.core.id());
        self.stopped = true;
        self.status.mark_stopped(why);
        let reason = format!("consensus stopped on this replica: {why}");
        for (_, read) in self.reads.drain() {
            if let ReadWaiter::Local(read) = read {
                read.reply_to.do_send(ReadDone::failed(reason.clone()));
            }
        }
        let gone = self.outbox.leader_changed();
        self.abandon(gone, &reason);
        for read in self.outbox.take_all_reads() {
            read.reply_to.do_send(ReadDone::failed(reason.clone()));
        }
        // Every watch's term is below this: all settle as unknown.
        self.send_applier(TermChanged(u64::MAX));
        ctx.stop();
    }

    /// Once a snapshot is due (by the schedule, or for a follower), snapshots the applied state and
    /// then compacts.
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        let due = self.snapshot_schedule.due(self.core.log().bytes_since_snapshot() as u64);
        if self.snapshotting || !(due || self.core.wants_fresh_snapshot()) {
            return;
        }
        if self.status.is_disk_full() {
            // The image would not fit either; encoding the whole state at every drive to learn
            // that again would only burn CPU. Taken once writing resumes.
            return;
        }
        self.snapshotting = true;
        self.release_watches();
        ctx.spawn(self.applier.send(TakeSnapshot).into_actor(self).map(|result, act, ctx| {
            act.snapshotting = false;
            match result {
                // Overtaken by a snapshot received meanwhile (the file store keeps that one).
                Ok(Ok(meta)) if meta.index <= act.core.log().snapshot_meta().index => {
                    log::info!(
                        "replica {}: snapshot at index {} superseded by one at {}",
                        act.core.id(),
                        meta.index,
                        act.core.log().snapshot_meta().index
                    );
                }
                Ok(Ok(meta)) => {
                    act.snapshot_schedule.taken();
                    act.status.metrics.snapshots_taken.inc();
                    // The image went straight to its file; a follower that falls behind it (rare)
                    // gets it read from there. An older one opened for transfers is let go here
                    // (those under way keep it open until they end).
                    act.latest_snapshot = None;
                    let compacted = act.core.compact(meta);
                    act.snapshotter.do_send(Discard(compacted));
                    // Ordered after every write handed out before it, which holds the entries it covers.
                    let persist = Persist { compact: Some(meta), hard_state: None, entries: Vec::new() };
                    act.queue_write(ctx, DiskWrite { image: None, persist, number: 0 });
                    act.drive(ctx);
                    act.publish_numbers();
                    log::info!("replica {}: log compacted up to index {}", act.core.id(), meta.index);
                }
                Ok(Err(e)) => log::warn!("replica {}: snapshot not taken: {e}", act.core.id()),
                Err(e) => log::warn!("replica {}: snapshot not taken: {e}", act.core.id()),
            }
        }));
    }

    /// Proposes the membership changes held for this leader's no-op once it is applied (in the
    /// order they came: the first proposes, the next are refused as in progress); if this
    /// replica no longer leads, its own clients' go to the new leader as any would (or are
    /// refused with `--no-forward`), and a follower's are refused for it to retry.
    fn release_held_changes(&mut self, ctx: &mut Context<Self>) {
        if self.held_changes.is_empty() || self.core.change_awaits_noop() {
            return;
        }
        let me = self.core.id();
        for (ops, reply_to) in std::mem::take(&mut self.held_changes) {
            let request = AdminRequest::Change(ops);
            match reply_to {
                _ if self.core.role() == Role::Leader => self.admin(ctx, request, reply_to),
                AdminReplyTo::Local(reply_to) if self.forward => {
                    self.forward_admin(Admin { request, reply_to })
                }
                _ => reply_to.refuse(&mut *self.transport, me, Refusal::NotLeader(self.status.leader_hint())),
            }
        }
    }

    /// Carries out an admin request on the leader, for a client here or a follower.
    fn admin(&mut self, ctx: &mut Context<Self>, request: AdminRequest, reply_to: AdminReplyTo) {
        let me = self.core.id();
        let request = match request {
            AdminRequest::Change(ops)
                if self.core.change_awaits_noop() && self.held_changes.len() < MAX_HELD_CHANGES =>
            {
                return self.held_changes.push((ops, reply_to));
            }
            other => other,
        };
        match request {
            AdminRequest::Change(ops) => match self.core.propose_change(ops) {
                Ok((index, term)) => {
                    log::info!("replica {me}: membership change proposed at index {index}");
                    self.change_waiters.push(ChangeWaiter { index, term, reply_to });
                }
                Err(ChangeError::Propose(e)) => {
                    let refusal = self.refusal(e);
                    return reply_to.refuse(&mut *self.transport, me, refusal);
                }
                Err(e) => {
                    let reply = self.change_refusal(e);
                    return reply_to.answer(&mut *self.transport, me, reply, 0);
                }
            },
            AdminRequest::TransferLeader(to) => match self.core.transfer_leader(to) {
                Ok(()) => self.transfer_waiters.push((to, reply_to)),
                Err(TransferError::NotLeader { .. }) => {
                    let refusal = Refusal::NotLeader(self.status.leader_hint());
                    return reply_to.refuse(&mut *self.transport, me, refusal);
                }
                Err(e) => return reply_to.answer(&mut *self.transport, me, Reply::err(e), 0),
            },
        }
        self.drive_soon(ctx);
    }

    // ----- forwarding: the follower's side -----

    /// The leader to forward to, or why there is none.
    fn forward_target(&self) -> Result<NodeId, Refusal> {
        match self.core.leader() {
            0 => Err(Refusal::NoLeader),
            leader if leader == self.core.id() => Err(Refusal::NoLeader),
            leader => Ok(leader),
        }
    }

    fn send_forward(&mut self, to: NodeId, id: u64, request: Forwarded) {
        let (from, run) = (self.core.id(), self.run);
        self.status.metrics.forwarded.inc();
        self.transport.send(PeerFrame::Forward { from, to, run, id, request });
    }

    /// Hands a write to the leader. Its expectation reaches the applier before the forward
    /// leaves, so the entry, wherever it lands, is recognised even if it is applied here before
    /// the leader's answer arrives.
    fn forward_write(&mut self, msg: Propose) {
        let leader = match self.forward_target() {
            Ok(leader) => leader,
            Err(refusal) => return msg.watcher.do_send(WatchFired(WatchOutcome::Refused(refusal))),
        };
        self.note_forward_target();
        let Propose { data, request_id, watcher, after_reads } = msg;
        let write = ForwardedWrite { request_id, watcher };
        let added = if after_reads {
            // The connection's reads ahead of it were handed over first (their waiters started
            // first): those still in the inbox join the outbox, and every read not yet sent goes
            // to the leader before this write, so their read indexes are below its entry.
            for read in self.read_inbox.0.take(false) {
                self.take_read(read);
            }
            self.send_read_batch();
            self.outbox.add_write_after_reads(self.ticks, data.len(), write, self.core.log().applied())
        } else {
            self.outbox.add_write(self.ticks, data.len(), write)
        };
        match added {
            Ok(id) => {
                self.send_applier(Expect { request_id });
                self.send_forward(leader, id, Forwarded::Propose(data));
            }
            Err(write) => write.watcher.do_send(WatchFired(WatchOutcome::Refused(Refusal::Busy))),
        }
    }

    fn forward_admin(&mut self, msg: Admin) {
        let leader = match self.forward_target() {
            Ok(leader) => leader,
            Err(refusal) => return msg.reply_to.do_send(AdminDone(refusal_to_reply(refusal))),
        };
        self.note_forward_target();
        let transfer_to = match msg.request {
            AdminRequest::TransferLeader(to) => Some(to),
            AdminRequest::Change(_) => None,
        };
        match self.outbox.add_admin(self.ticks, ForwardedAdmin { reply_to: msg.reply_to, transfer_to }) {
            Ok(id) => self.send_forward(leader, id, Forwarded::Admin(msg.request)),
            Err(admin) => admin.reply_to.do_send(AdminDone(refusal_to_reply(Refusal::Busy))),
        }
    }

    /// Follows the leader the core knows now: whatever was forwarded to an earlier one is
    /// abandoned (its answer may never come, and a new leader knows nothing of it).
    fn note_forward_target(&mut self) {
        let now = (self.core.term(), self.core.leader());
        if now != self.forwarded_to {
            self.forwarded_to = now;
            let gone = self.outbox.leader_changed();
            if !gone.is_empty() {
                self.abandon(gone, "leader changed");
            }
        }
    }

    /// After a drive: abandons forwards if the leader changed, sends the reads gathered meanwhile
    /// as one batch, and serves the confirmed reads this replica has now applied far enough.
    fn settle_forwards(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        self.note_forward_target();
        self.send_read_batch();
        self.serve_released_reads();
    }

    /// Sends the reads gathered since the last batch to the leader as one read-index request.
    fn send_read_batch(&mut self) {
        let Some(id) = self.outbox.send_reads(self.ticks) else { return };
        match self.forward_target() {
            Ok(leader) if self.core.role() != Role::Leader => {
                self.send_forward(leader, id, Forwarded::ReadIndex)
            }
            // The leader went (or this replica leads now) since the reads arrived.
            _ => {
                for read in self.outbox.fail_reads(id) {
                    read.reply_to.do_send(ReadDone::failed("no leader to confirm the read"));
                }
            }
        }
    }

    /// Drives soon if the entries this follower may apply moved since the ceiling was `before`
    /// (the next drive sets the new one on the core, and hands out what it lets through).
    fn drive_if_ceiling_moved(&mut self, ctx: &mut Context<Self>, before: Option<u64>) {
        if self.outbox.apply_ceiling() != before {
            self.drive_soon(ctx);
        }
    }

    /// Serves the forwarded reads whose read index (and floor) this replica has applied.
    fn serve_released_reads(&mut self) {
        for read in self.outbox.release_reads(self.core.log().applied()) {
            self.serve(read);
        }
        for (read, why) in self.outbox.take_unservable() {
            read.reply_to.do_send(ReadDone::failed(why));
        }
    }

    /// Fails forwards whose fate this replica can no longer learn.
    fn abandon(&mut self, gone: Abandoned<ForwardedWrite, PendingRead, ForwardedAdmin>, why: &str) {
        for write in gone.writes {
            self.send_applier(Unexpect { request_id: write.request_id });
            write.watcher.do_send(WatchFired(WatchOutcome::Superseded));
        }
        for read in gone.reads {
            read.reply_to.do_send(ReadDone::failed(format!("{why} before the read was served")));
        }
        for admin in gone.admins {
            match admin.transfer_to {
                // The change of leader may be the transfer itself: judged here as on the leader.
                Some(to) => self.transfer_waiters.push((to, AdminReplyTo::Local(admin.reply_to))),
                None => admin.reply_to.do_send(AdminDone(Reply::Error(format!(
                    "TRYAGAIN {why}; the membership change may or may not commit"
                )))),
            }
        }
    }

    fn on_forward_answer(&mut self, id: u64, answer: ForwardAnswer) {
        match answer {
            ForwardAnswer::Proposed { index, term } => {
                if let Some(ForwardedWrite { request_id, watcher }) = self.outbox.write_proposed(id, index) {
                    // The applier checks what it recorded since the Expect if `index` is already applied.
                    self.send_applier(Watch { index, term, request_id, watcher });
                    // Reads behind writes may have their floor now.
                    self.serve_released_reads();
                }
            }
            ForwardAnswer::ReadIndex { index, clock_ms } => {
                // Every read served from `index` on is judged at this time or later; and should
                // this replica lead, it stamps nothing earlier.
                self.clock.observe(clock_ms);
                self.read_clocks.confirmed(index, clock_ms);
                self.outbox.confirm_reads(id, index);
                self.serve_released_reads();
            }
            ForwardAnswer::AdminDone(index) => {
                if let Some(admin) = self.outbox.take_admin(id) {
                    self.outbox.admin_applied_at(index, admin);
                    self.settle_admin();
                }
            }
            ForwardAnswer::Failed(line) => {
                // Taken, then failed: only reads and admin requests end so.
                if let Some(admin) = self.outbox.take_admin(id) {
                    return admin.reply_to.do_send(AdminDone(Reply::Error(line)));
                }
                let why = line.strip_prefix("TRYAGAIN ").unwrap_or(&line).to_string();
                for read in self.outbox.fail_reads(id) {
                    read.reply_to.do_send(ReadDone::failed(why.clone()));
                }
            }
            ForwardAnswer::Refused(refusal) => {
                // Nothing was proposed: the request may be retried as it is.
                let refusal = refusal_from(refusal);
                if let Some(write) = self.outbox.take_write(id) {
                    self.send_applier(Unexpect { request_id: write.request_id });
                    write.watcher.do_send(WatchFired(WatchOutcome::Refused(refusal)));
                    self.serve_released_reads();
                } else if let Some(admin) = self.outbox.take_admin(id) {
                    admin.reply_to.do_send(AdminDone(refusal_to_reply(refusal)));
                } else {
                    for read in self.outbox.fail_reads(id) {
                        read.reply_to.do_send(ReadDone::refused(refusal.clone()));
                    }
                }
            }
        }
    }

    /// Drops forwards unanswered for longer than a request may wait.
    fn expire_forwards(&mut self) {
        if let Some(before) = self.ticks.checked_sub(ORDER_PATIENCE_TICKS) {
            // The reads given up are failed with the next drive (this tick's).
            let writes = self.outbox.lose_patience(before);
            if !writes.is_empty() {
                let gone = Abandoned { writes, reads: Vec::new(), admins: Vec::new() };
                self.abandon(gone, "no answer from the leader");
            }
        }
        let Some(before) = self.ticks.checked_sub(self.request_timeout_ticks) else { return };
        let gone = self.outbox.expire(before);
        if !gone.is_empty() {
            self.abandon(gone, "no answer from the leader");
        }
    }

    /// Starts a read (or refuses it); returns whether a drive is due for it.
    fn take_read(&mut self, msg: ReadIndex) -> bool {
        if self.stopped || self.reads.len() + self.outbox.reads_len() >= MAX_PENDING_READS {
            msg.reply_to.do_send(ReadDone::refused(Refusal::Busy));
            return false;
        }
        let after_writes = msg.after_writes;
        let pending = PendingRead { command: msg.command, budget: msg.budget, reply_to: msg.reply_to };
        if self.unsafe_local_reads {
            // The injected fault: no read index, so nothing says this state is current.
            self.serve(pending);
            return false;
        }
        if self.forward && self.core.role() != Role::Leader {
            if let Err(refusal) = self.forward_target() {
                pending.reply_to.do_send(ReadDone::refused(refusal));
                return false;
            }
            // Sent with every other read of this burst as one batch, at the end of the drive. One
            // behind writes also waits for the indexes of the writes forwarded before it: theirs
            // among them, since their proposals came through this mailbox ahead of it. (Writes
            // this replica proposed while it led are covered by the new leader's read index.)
            self.note_forward_target();
            if after_writes {
                self.outbox.add_read_after_writes(pending);
            } else {
                self.outbox.add_read(pending);
            }
            return true;
        }
        let read_ctx = self.next_read_ctx;
        let started = if after_writes {
            self.core.read_index_after_appended(read_ctx)
        } else {
            self.core.read_index(read_ctx)
        };
        if let Err(e) = started {
            pending.reply_to.do_send(ReadDone::refused(self.refusal(e)));
            return false;
        }
        self.next_read_ctx += 1;
        self.reads.insert(read_ctx, ReadWaiter::Local(pending));
        true
    }

    /// Where waiters hand reads to this actor (see [`ReadInbox`]).
    pub fn read_inbox(&self) -> Arc<ReadInbox> {
        self.read_inbox.clone()
    }

    /// Hands a read confirmed through a leader's answer, whose index this replica has applied, to
    /// the applier (after those entries), judged at the latest time a leader confirmed a read
    /// index at or below its applied index with (see [`ReadClocks`]): no earlier than the
    /// confirmation of this read's own batch, no later than the entries after its state.
    ///
    /// A read this replica confirmed as leader is judged at its clock now (after the read
    /// arrived, before it is answered), but no later than the stamp of the first entry not yet
    /// applied (appended before the read was confirmed, stamped earlier: the read comes before it
    /// in the log, and must not find a key expired that this entry still finds alive).
    fn serve(&mut self, read: PendingRead) {
        // Confirmed by answers from a leader (forwarded), whatever this replica's role by now.
        let order = self.serve_order(read, self.core.log().applied(), false);
        self.send_applier(order);
    }

    /// What the applier is sent to serve `read` once it has applied up to `applied`, stamped with
    /// the read's time (see [`Self::serve`]): by the leader's rule when this replica confirmed it
    /// as leader (`by_leader`, whatever its role by now: a leader that stepped down still serves
    /// the reads it confirmed, never earlier than those it served before), else by the answers'.
    fn serve_order(&mut self, read: PendingRead, applied: u64, by_leader: bool) -> ServeRead {
        let PendingRead { command, budget, reply_to } = read;
        let applied_clock = self.status.applied_clock_ms();
        let now_ms = if by_leader {
            read_time(self.clock.stamp(applied_clock), self.next_stamp(applied))
        } else {
            self.read_clocks.at(applied).max(applied_clock)
        };
        ServeRead { command, budget, reply_to, now_ms }
    }

    /// The stamp of the first stamped entry after `index` in this replica's log.
    fn next_stamp(&self, index: u64) -> Option<u64> {
        next_stamp(self.core.log(), index)
    }

    /// Stamps an entry about to be proposed with the leader's clock.
    fn stamp(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        let now = self.clock.stamp(self.status.applied_clock_ms());
        // An entry without the header (none of ours) is proposed as it is, unstamped.
        stamp_entry(&mut data, now);
        data
    }

    /// On the leader, now and then: proposes the removal of keys whose time to live has passed,
    /// one bounded entry at a time, so every replica frees them at the same log position.
    fn reclaim_expired(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || self.core.role() != Role::Leader || self.status.is_disk_full() {
            self.reclaim_in_flight = None;
            return;
        }
        if let Some((index, term)) = self.reclaim_in_flight {
            if self.core.log().applied() < index && self.core.term() == term {
                return;
            }
            self.reclaim_in_flight = None;
        }
        if !self.ticks.is_multiple_of(self.reclaim_interval_ticks) {
            return;
        }
        let Some(earliest) = self.status.earliest_expiry_ms() else { return };
        let now = self.clock.stamp(self.status.applied_clock_ms());
        if earliest >= now {
            return;
        }
        let command = Command::ReclaimExpired { limit: MAX_RECLAIMED_PER_ENTRY };
        let Ok(data) = encode_entry(&Proposal { request_id: 0, session: None, command }) else { return };
        let data = self.stamp(data);
        if let Ok(position) = self.core.propose(data) {
            self.reclaim_in_flight = Some(position);
            self.drive_soon(ctx);
        }
    }

    // ----- forwarding: the leader's side -----

    fn answer_forward(&mut self, follower: NodeId, id: u64, answer: ForwardAnswer) {
        if let ForwardAnswer::Proposed { index, .. } | ForwardAnswer::ReadIndex { index, .. } = answer {
            // The follower answers its client once it has applied `index`.
            self.core.await_commit(follower, index);
        }
        let from = self.core.id();
        self.transport.send(PeerFrame::ForwardAnswer { from, to: follower, id, answer });
    }

    /// Carries out a request a follower forwarded, at most once however often its frame arrives,
    /// and a follower's writes only in the order it sent them.
    fn on_forward(&mut self, ctx: &mut Context<Self>, from: NodeId, run: u64, id: u64, request: Forwarded) {
        let write = matches!(request, Forwarded::Propose(_));
        match self.repeats.check(from, run, id, write) {
            Freshness::Repeat => return,
            Freshness::TooOld | Freshness::Overtaken => {
                return self.answer_forward(from, id, ForwardAnswer::Refused(ForwardRefusal::Busy))
            }
            Freshness::New => {}
        }
        if self.stopped {
            return self.answer_forward(from, id, ForwardAnswer::Refused(ForwardRefusal::Busy));
        }
        match request {
            Forwarded::Propose(_) | Forwarded::Admin(_) if self.status.is_disk_full() => {
                return self.answer_forward(from, id, ForwardAnswer::Refused(ForwardRefusal::DiskFull));
            }
            Forwarded::Propose(data) if data.len() > MAX_ENTRY_BYTES => {
                // A follower of this build checks first; past the bound, the Append frame carrying
                // it could not be sent, and commit would stop at it for good.
                log::warn!(
                    "replica {}: refused a forwarded entry of {} bytes from replica {from} (max {MAX_ENTRY_BYTES})",
                    self.core.id(),
                    data.len()
                );
                return self.answer_forward(from, id, ForwardAnswer::Refused(ForwardRefusal::Busy));
            }
            Forwarded::Propose(data) => {
                let data = self.stamp(data);
                let answer = match self.core.propose(data) {
                    Ok((index, term)) => ForwardAnswer::Proposed { index, term },
                    Err(e) => ForwardAnswer::Refused(forward_refusal(&self.refusal(e))),
                };
                self.answer_forward(from, id, answer);
            }
            Forwarded::ReadIndex => {
                if self.reads.len() >= MAX_PENDING_READS {
                    return self.answer_forward(from, id, ForwardAnswer::Refused(ForwardRefusal::Busy));
                }
                let read_ctx = self.next_read_ctx;
                if let Err(e) = self.core.read_index(read_ctx) {
                    let answer = ForwardAnswer::Refused(forward_refusal(&self.refusal(e)));
                    return self.answer_forward(from, id, answer);
                }
                self.next_read_ctx += 1;
                self.reads.insert(read_ctx, ReadWaiter::Remote { follower: from, id });
            }
            Forwarded::Admin(request) => {
                return self.admin(ctx, request, AdminReplyTo::Remote { follower: from, id })
            }
        }
        self.drive_soon(ctx);
    }

    // ----- sending a snapshot -----

    fn start_transfer(&mut self, ctx: &mut Context<Self>, to: NodeId, meta: SnapshotMeta) {
        if self.outgoing.is_sending(to, meta) {
            return; // already under way; the tick resends what is lost
        }
        match &self.latest_snapshot {
            Some(image) if image.source().is_some_and(|s| s.meta() == meta) => {
                let image = image.clone();
                let total = image.source().map_or(0, |s| s.len());
                log::info!(
                    "replica {}: sending snapshot at index {} ({total} bytes) to {to}",
                    self.core.id(),
                    meta.index,
                );
                self.status.metrics.snapshots_sent.inc();
                let first = self.outgoing.start(to, meta, total, image);
                self.send_chunk(first);
            }
            _ if !self.loading_snapshot => {
                // Not open (it is let go between transfers): open and check it, then start at
                // once; if the file holds another snapshot by then, Raft asks again for that one.
                self.loading_snapshot = true;
                ctx.spawn(self.snapshotter.send(OpenLatest).into_actor(self).map(move |result, act, ctx| {
                    act.loading_snapshot = false;
                    if let Ok(Ok(Some(source))) = result {
                        let wanted = source.meta() == meta;
                        let image = HeldImage::new(Arc::new(source), act.snapshotter.clone());
                        // Kept only by a leader (another lets it go at once).
                        if act.core.role() == Role::Leader {
                            act.latest_snapshot = Some(image);
                            if wanted {
                                act.start_transfer(ctx, to, meta);
                            }
                        }
                    }
                }));
            }
            _ => {}
        }
    }

    /// Reads the chunk `order` names from the image file kept with its transfer and sends it.
    ///
    /// A read here is at most a chunk (1 MiB), from a file the snapshotter read through when it
    /// opened it, so mostly from the page cache.
    fn send_chunk(&mut self, order: SendChunk) {
        let (from, term) = (self.core.id(), self.core.term());
        let Some(source) = self.outgoing.payload(order.to).and_then(HeldImage::source).cloned() else {
            return;
        };
        match source.read(order.offset, order.len) {
            Ok(data) => {
                let chunk = order.frame(from, term, source.len(), source.crc32(), data);
                self.transport.send(PeerFrame::SnapshotChunk(chunk));
            }
            Err(e) => {
                // Nothing sent: the transfer makes no progress and is abandoned by the tick,
                // and Raft asks again; the next try opens the file afresh.
                log::warn!("replica {}: snapshot chunk for {} not read: {e}", from, order.to);
                let newest = self.latest_snapshot.as_ref().and_then(HeldImage::source);
                if newest.is_some_and(|s| Arc::ptr_eq(s, &source)) {
                    self.latest_snapshot = None;
                }
            }
        }
    }

    fn on_snapshot_ack(&mut self, from: NodeId, meta: SnapshotMeta, received: u64) {
        match self.outgoing.on_ack(from, meta, received) {
            AckOutcome::Ignored => {}
            AckOutcome::Send(order) => self.send_chunk(order),
            AckOutcome::Delivered(image, ticks) => {
                log::info!(
                    "replica {}: snapshot at index {} ({} bytes) delivered to {from} in {} ms",
                    self.core.id(),
                    meta.index,
                    image.source().map_or(0, |s| s.len()),
                    u128::from(ticks) * self.tick.as_millis()
                );
                self.core.report_snapshot(from, true);
                self.release_image_if_idle();
            }
        }
    }

    /// Lets go of the image file opened for followers once no transfer is under way: while it is
    /// open, a newer snapshot sets it aside uncut, and its blocks stay in use.
    fn release_image_if_idle(&mut self) {
        if self.outgoing.is_empty() {
            self.latest_snapshot = None;
        }
    }

    fn tick_transfers(&mut self) {
        if self.core.role() != Role::Leader {
            // Only a leader sends images: one that stepped down lets its files go.
            self.outgoing.clear();
            self.latest_snapshot = None;
            return;
        }
        for order in self.outgoing.tick() {
            match order {
                TickOrder::Resend(order) => self.send_chunk(order),
                TickOrder::Abandon(to) => {
                    log::warn!(
                        "replica {}: snapshot transfer to {to} made no progress; abandoned",
                        self.core.id()
                    );
                    self.core.report_snapshot(to, false);
                    self.release_image_if_idle();
                }
            }
        }
    }

    // ----- receiving a snapshot -----

    /// Takes a chunk, its bytes written to the image's file before they are acknowledged; once
    /// the image is whole, checked and sealed (durable under its temp name), returns it as an
    /// InstallSnapshot (the file kept as `received` for the Ready that installs it).
    fn on_snapshot_chunk(&mut self, chunk: SnapshotChunk) -> Option<Message> {
        let (from, meta, term) = (chunk.from, chunk.meta, chunk.term);
        let outcome = self.incoming.on_chunk(chunk, self.core.term());
        if let Some(start) = outcome.start {
            // Written on this thread, as a follower's log is: the ack waits for the bytes anyway.
            let freeing = self.receiving.as_ref().map_or(0, SnapshotFileWriter::written);
            self.discard_receiving();
            match self.snapshot_inbox.begin_freeing(start.meta, start.total_bytes, freeing) {
                Ok(file) => self.receiving = Some(file),
                Err(e) if e.is_disk_full() => return self.no_room_for_image(from, 0, &e),
                Err(e) => return self.refuse_image(from, &format!("cannot start its file: {e}")),
            }
        }
        if !outcome.append.is_empty() {
            let Some(file) = self.receiving.as_mut() else {
                return self.refuse_image(from, "no file to write it to");
            };
            if let Err(e) = file.write(&outcome.append) {
                if e.is_disk_full() {
                    let written = file.written();
                    return self.no_room_for_image(from, written, &e);
                }
                return self.refuse_image(from, &format!("cannot write it: {e}"));
            }
        }
        if outcome.corrupt {
            log::warn!("replica {}: snapshot from {from} failed its checksum; asking again", self.core.id());
            self.discard_receiving();
        }
        // The last ack waits for the checks below: an image refused there is sent again.
        let Some(meta) = outcome.complete else {
            if let Some(received) = outcome.ack {
                self.ack(from, meta, received);
            }
            return None;
        };
        let Some(mut file) = self.receiving.take_if(|f| f.meta() == meta) else {
            return self.refuse_image(from, "its file is missing");
        };
        let len = file.written();
        // Sealed (its last bytes and checksum written, fsynced) before Raft takes it: the free
        // space checked at the start may have been taken by others since, and an image refused
        // here is asked for again, where one the snapshotter cannot save stops consensus.
        let sealing = Instant::now();
        let sealed_membership = file.seal().and_then(|()| {
            let mut image = file.image_reader()?;
            StateMachine::image_membership(&mut image, len)
        });
        let membership = match sealed_membership {
            Ok(m) => m,
            Err(e) => {
                let no_room = e.is_disk_full();
                self.discard_image(Some(file));
                if no_room {
                    return self.no_room_for_image(from, len, &e);
                }
                return self.refuse_image(from, &format!("cannot seal it or read its membership: {e}"));
            }
        };
        log::info!(
            "replica {}: received snapshot at index {} ({len} bytes) from {from}, sealed in {} ms",
            self.core.id(),
            meta.index,
            sealing.elapsed().as_millis()
        );
        self.image_fitted();
        self.ack(from, meta, len);
        self.received = Some(file);
        let snapshot = Snapshot { meta, membership, data: Vec::new() };
        Some(Message { from, to: self.core.id(), term, body: MessageBody::InstallSnapshot { snapshot } })
    }

    /// Gives up the image being received from `from` (its file removed): the leader's next chunk
    /// is answered with 0, and it starts over.
    fn refuse_image(&mut self, from: NodeId, why: &str) -> Option<Message> {
        log::warn!("replica {}: snapshot from {from} not kept: {why}", self.core.id());
        self.incoming.abandon();
        self.discard_receiving();
        None
    }

    /// The disk had no room for the image being received from `from`: it is given up, the
    /// disk-full alarm raised (writes are refused here meanwhile, as for a log write that does not
    /// fit), and no chunk is answered for [`DISK_FULL_RETRY`], so the leader's retries come at
    /// that pace instead of refilling the disk as fast as it can send.
    fn no_room_for_image(&mut self, from: NodeId, written: u64, e: &StorageError) -> Option<Message> {
        let why = format!("no room for the snapshot image from replica {from} after {written} bytes: {e}");
        if self.status.is_disk_full() {
            log::warn!("replica {}: {why}; asking for it again in {DISK_FULL_RETRY:?}", self.core.id());
        } else {
            log::error!(
                "replica {}: {why}; writes are refused (-ERR disk full) until there is space (reads \
                 wait for the image); asking for it again in {DISK_FULL_RETRY:?}",
                self.core.id()
            );
        }
        // The image's reason, even over the log's: the log's retry lowers the alarm only once no
        // image waits for room.
        self.status.set_disk_full(Some(why));
        self.image_disk_full = Some(self.ticks);
        let pause = DISK_FULL_RETRY.as_millis() / self.tick.as_millis().max(1);
        self.incoming.refuse_for(u32::try_from(pause).unwrap_or(u32::MAX).max(1));
        self.discard_receiving();
        None
    }

    /// Lowers the alarm [`no_room_for_image`](Self::no_room_for_image) raised once no image
    /// waits for room: one fitted, or none came for twice a leader's give-up (the leader no
    /// longer needs to send one, or this replica is cut off or removed); unless the log's own
    /// writes wait for room too.
    fn image_fitted(&mut self) {
        if self.image_disk_full.take().is_some() {
            self.lower_disk_full_alarm();
        }
    }

    /// Lowers the disk-full alarm once nothing waits for room: neither the log's write to be
    /// tried again nor an image.
    fn lower_disk_full_alarm(&mut self) {
        if self.status.is_disk_full() && !self.disk_retry_pending && self.image_disk_full.is_none() {
            log::info!("replica {}: the disk has room again; writes resume", self.core.id());
            self.status.set_disk_full(None);
        }
    }

    /// Ticks after the last image that found no room before its alarm is lowered: twice a
    /// leader's give-up on a transfer without progress, as for a half-received image.
    fn image_alarm_ticks(&self) -> u64 {
        2 * SNAPSHOT_GIVE_UP_MS / (self.tick.as_millis() as u64).max(1)
    }

    /// Gives up the file of the image being received, if any.
    fn discard_receiving(&mut self) {
        let file = self.receiving.take();
        self.discard_image(file);
    }

    /// Hands the file of a received image that will not be used to the snapshotter to remove
    /// (an image's unlink in one go, here, would hold up this follower's log fsyncs).
    fn discard_image(&self, file: Option<SnapshotFileWriter>) {
        if let Some(file) = file {
            self.snapshotter.do_send(DiscardImage(file));
        }
    }

    fn ack(&mut self, to: NodeId, meta: SnapshotMeta, received: u64) {
        let from = self.core.id();
        self.transport.send(PeerFrame::SnapshotAck { from, to, meta, received });
    }

    // ----- status -----

    fn log_role(&self, ready: &Ready) {
        if let Some(role) = ready.role {
            log::info!(
                "replica {}: {} in term {} (leader {})",
                self.core.id(),
                role.role.name(),
                role.term,
                role.leader
            );
        }
    }

    /// Sends `msg` to the applier, after the watches held for it.
    fn send_applier<M>(&mut self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Applier: Handler<M>,
    {
        self.release_watches();
        self.applier.do_send(msg);
    }

    /// Sends the held watches to the applier, in the order of their proposals.
    fn release_watches(&mut self) {
        if !self.held_watches.is_empty() {
            // One message for the drive's watches rather than one each.
            self.applier.do_send(Watches(std::mem::take(&mut self.held_watches)));
        }
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
            log_bytes: log.bytes_since_snapshot() as u64,
            elections: self.core.stats().elections,
        });
    }
}

/// One write for the disk writer: what one or more Readies (or a compaction) hand to storage.
struct DiskWrite {
    /// A received snapshot's image, saved before the log records that it starts after it.
    image: Option<ReceivedImage>,
    /// The log records.
    persist: Persist,
    /// The highest Ready number it covers, 0 for none (a compaction).
    number: u64,
}

/// An image received from the leader and taken by Raft, on its way to disk and the applier.
struct ReceivedImage {
    /// Every byte written; made durable under its final name by the snapshotter.
    file: SnapshotFileWriter,
    /// Where the state decoded from it goes, for the applier to install.
    decoded: tokio::sync::oneshot::Sender<DecodedState>,
}

impl DiskWrite {
    /// Folds `later` into this write if that keeps the order of their effects; else returns it.
    ///
    /// The disk writer applies a write's compaction first, so a later write that compacts (or
    /// brings an image) cannot join; one that only appends can.
    fn absorb(&mut self, later: DiskWrite) -> Option<DiskWrite> {
        if later.image.is_some() || later.persist.compact.is_some() {
            return Some(later);
        }
        let Persist { hard_state, entries, .. } = later.persist;
        if let Some(first) = entries.first() {
            // A later entry at an index already queued replaces it and everything after it.
            let first = first.index;
            self.persist.entries.retain(|e| e.index < first);
            self.persist.entries.extend(entries);
        }
        if hard_state.is_some() {
            self.persist.hard_state = hard_state;
        }
        self.number = self.number.max(later.number);
        None
    }
}

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.publish_numbers();
        self.sync_peers();
        ctx.run_interval(self.tick, |act, ctx| {
            act.ticks += 1;
            act.expire_forwards();
            act.core.tick();
            if act.image_disk_full.is_some_and(|at| act.ticks.saturating_sub(at) > act.image_alarm_ticks()) {
                act.image_fitted();
            }
            if act.incoming.tick() {
                log::warn!(
                    "replica {}: no chunk of the snapshot image under way for {} ms; dropped",
                    act.core.id(),
                    2 * SNAPSHOT_GIVE_UP_MS
                );
                act.discard_receiving();
            }
            act.tick_transfers();
            act.reclaim_expired(ctx);
            act.drive(ctx);
            // Just-removed members stop being sent to after a while, without a Ready. (A
            // membership change itself syncs the links in the drive that hands it out.)
            act.sync_peers();
        });
    }
}

impl Handler<Inbound> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        let message = match msg.0 {
            PeerFrame::Raft(m) => {
                if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
                    // Images only arrive in checked chunks, never inside a Raft frame.
                    log::warn!(
                        "replica {}: refused an InstallSnapshot frame from {}",
                        self.core.id(),
                        m.from
                    );
                    return;
                }
                if matches!(m.body, MessageBody::HeartbeatResponse { .. }) {
                    if let Some(sent) = self.heartbeat_sent.remove(&m.from) {
                        self.status.metrics.peer_round_trip(m.from, sent.elapsed());
                    }
                }
                m
            }
            PeerFrame::SnapshotChunk(chunk) => {
                let Some(install) = self.on_snapshot_chunk(chunk) else { return };
                if let Err(e) = self.core.step(install) {
                    self.status.metrics.refused_peer_input.inc();
                    log::warn!("replica {}: refused a received snapshot: {e}", self.core.id());
                    self.incoming.abandon();
                }
                // Driven now, so the Ready that installs it takes its file: one left after
                // that was refused (older than what this replica holds) and is removed.
                self.drive(ctx);
                let refused = self.received.take();
                self.discard_image(refused);
                return;
            }
            PeerFrame::SnapshotAck { from, meta, received, .. } => {
                self.on_snapshot_ack(from, meta, received);
                return;
            }
            PeerFrame::Forward { from, run, id, request, .. } => {
                return self.on_forward(ctx, from, run, id, request)
            }
            PeerFrame::ForwardAnswer { id, answer, .. } => {
                let ceiling = self.outbox.apply_ceiling();
                self.on_forward_answer(id, answer);
                return self.drive_if_ceiling_moved(ctx, ceiling);
            }
        };
        if let Err(e) = self.core.step(message) {
            self.status.metrics.refused_peer_input.inc();
            log::warn!("replica {}: refused a peer message: {e}", self.core.id());
        }
        self.drive_soon(ctx);
    }
}

impl Handler<Propose> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) {
        if self.stopped {
            return msg.watcher.do_send(WatchFired(WatchOutcome::Refused(Refusal::Busy)));
        }
        if self.status.is_disk_full() {
            return msg.watcher.do_send(WatchFired(WatchOutcome::Refused(Refusal::DiskFull)));
        }
        let leading = self.core.role() == Role::Leader;
        if msg.after_reads && (if leading { self.outbox.reads_len() > 0 } else { !self.reads.is_empty() }) {
            // The reads before it may have been forwarded before this replica led, or taken
            // while it led: a barrier here holds neither kind.
            return msg.watcher.do_send(WatchFired(WatchOutcome::Refused(Refusal::LeaderChanged)));
        }
        if self.forward && self.core.role() != Role::Leader {
            let ceiling = self.outbox.apply_ceiling();
            self.forward_write(msg);
            // Barriers may have been broken by a change of leader noticed on the way.
            return self.drive_if_ceiling_moved(ctx, ceiling);
        }
        if msg.after_reads {
            // The connection's reads ahead of it were handed over first (their waiters started
            // first): those still in the inbox join the queue before it.
            for read in self.read_inbox.0.take(false) {
                self.take_read(read);
            }
            // Their round starts with the next drive, even if this write is refused.
            self.drive_soon(ctx);
        }
        let data = self.stamp(msg.data);
        let proposed =
            if msg.after_reads { self.core.propose_after_reads(data) } else { self.core.propose(data) };
        match proposed {
            Ok((index, term)) => {
                // The watch goes out before any ApplyEntries that could hold `index` (DESIGN.md),
                // but not on its own: the applier's thread is not woken just to note it.
                let watch = Watch { index, term, request_id: msg.request_id, watcher: msg.watcher };
                self.held_watches.push(watch);
                self.drive_soon(ctx);
            }
            Err(e) => msg.watcher.do_send(WatchFired(WatchOutcome::Refused(self.refusal(e)))),
        }
    }
}

impl Handler<ReadIndex> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: ReadIndex, ctx: &mut Self::Context) {
        if self.take_read(msg) {
            self.drive_soon(ctx);
        }
    }
}

impl Handler<ReadsWaiting> for Consensus {
    type Result = ();

    fn handle(&mut self, _msg: ReadsWaiting, ctx: &mut Self::Context) {
        // The drive takes them.
        self.drive(ctx);
    }
}

impl Handler<DriveNow> for Consensus {
    type Result = ();

    fn handle(&mut self, _msg: DriveNow, ctx: &mut Self::Context) {
        self.drive_scheduled = false;
        self.drive(ctx);
    }
}

impl Handler<StopConsensus> for Consensus {
    type Result = ();

    fn handle(&mut self, _msg: StopConsensus, ctx: &mut Self::Context) {
        self.stopped = true;
        self.transport.close();
        ctx.stop();
    }
}

impl Handler<Admin> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Admin, ctx: &mut Self::Context) {
        if self.stopped {
            return msg.reply_to.do_send(AdminDone(refusal_to_reply(Refusal::Busy)));
        }
        if self.status.is_disk_full() {
            return msg.reply_to.do_send(AdminDone(refusal_to_reply(Refusal::DiskFull)));
        }
        if self.forward && self.core.role() != Role::Leader {
            return self.forward_admin(msg);
        }
        self.admin(ctx, msg.request, AdminReplyTo::Local(msg.reply_to));
    }
}

/// The reply a refused request gets.
pub fn refusal_to_reply(r: Refusal) -> Reply {
    match r {
        Refusal::NotLeader(addr) => Reply::Error(format!("NOTLEADER {addr}")),
        Refusal::Busy => Reply::Error("TRYAGAIN replica busy".into()),
        Refusal::Transferring => Reply::Error("TRYAGAIN leadership transfer in progress".into()),
        Refusal::NoLeader => Reply::Error("TRYAGAIN no leader".into()),
        Refusal::LeaderChanged => Reply::Error("TRYAGAIN leader changed; not proposed".into()),
        Refusal::DiskFull => Reply::err(
            "disk full: writes are refused until there is space again (reads are served; nothing \
             acknowledged is lost)",
        ),
    }
}

/// How a leader tells a follower why it did not take a forwarded request.
fn forward_refusal(r: &Refusal) -> ForwardRefusal {
    match r {
        Refusal::NotLeader(_) | Refusal::NoLeader | Refusal::LeaderChanged => ForwardRefusal::NotLeader,
        Refusal::Busy => ForwardRefusal::Busy,
        Refusal::Transferring => ForwardRefusal::Transferring,
        Refusal::DiskFull => ForwardRefusal::DiskFull,
    }
}

/// What a follower makes of the leader's refusal.
fn refusal_from(r: ForwardRefusal) -> Refusal {
    match r {
        ForwardRefusal::NotLeader => Refusal::LeaderChanged,
        ForwardRefusal::Busy => Refusal::Busy,
        ForwardRefusal::Transferring => Refusal::Transferring,
        ForwardRefusal::DiskFull => Refusal::DiskFull,
    }
}
