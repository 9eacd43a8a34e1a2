//! The hand-off between the pure core and the code that does its I/O.

use super::membership::Membership;
use super::message::{Entry, HardState, Message, NodeId, Snapshot};

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without disturbing anyone (Raft §9.6).
    PreCandidate,
    /// Campaigns for votes in a new term (Raft §5.2).
    Candidate,
    /// Accepts proposals and replicates them.
    Leader,
}

impl Role {
    /// The name INFO prints (a pre-candidate reports itself as a candidate).
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Role, term and known leader: what the outside needs to route clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleState {
    /// This node's role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows for `term`, 0 if none.
    pub leader: NodeId,
}

/// A linearizable read that may now be served: once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's token from `read_index`.
    pub ctx: u64,
    /// The index the read is served at: the commit index when it arrived (for a read held until
    /// a new leader's first commit, that leader's first entry), or for a read after appended
    /// entries the last of them; the state at or after it answers the read.
    pub index: u64,
}

/// Everything the core needs done, and what must be durable before what.
///
/// The caller must:
/// 1. send `messages` now. None of them promises anything about this node's storage: they are
///    a leader's appends, heartbeats and snapshot offers (the leader counts its own copy of an
///    entry toward a quorum only once it is durable, Raft thesis §10.2.1), heartbeat answers in
///    a term already reported durable (they speak for the term only, never for the log), and
///    messages whose writes were already reported durable;
/// 2. hand `snapshot` (if any), then `entries` and `hard_state` (if any) to stable storage, in
///    order after the writes of every earlier Ready; once they are durable, call
///    [`on_persisted`](super::RaftCore::on_persisted) with `number`. Votes, vote requests and
///    acknowledgements produced meanwhile are held by the core until then: each promises that
///    the term, vote or entries it speaks for are on stable storage, and leaves with a later
///    Ready's `messages`. Several Readies' writes may be merged into one (group commit);
///    reporting the highest number covers them all;
/// 3. apply `snapshot` (if any) to the state machine, then `committed_entries` in order. They
///    are committed, so durable on a quorum: they may be applied before this node's own write
///    of them is durable;
/// 4. serve `read_states` once the state machine has applied their index (they are released
///    only when `committed_entries` of this or an earlier `Ready` reach it), and fail
///    `dropped_reads`;
/// 5. call [`advance`](super::RaftCore::advance) with this `Ready` before asking for the next.
///    Only one `Ready` is out at a time; any number of writes may be in flight.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// New role, term or leader, if any of them changed since the last `Ready`.
    pub role: Option<RoleState>,
    /// This Ready's write, for `on_persisted`; 0 when it writes nothing.
    pub number: u64,
    /// Hard state to write: when term or vote changed (that write must be durable before the
    /// held vote leaves), or with entries when the commit mark moved.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: write it, then restore the state machine from it.
    /// Its `data` is whatever was stepped in with the `InstallSnapshot` message (the replica
    /// steps none: it keeps the image in the file it was received into).
    pub snapshot: Option<Snapshot>,
    /// Entries to write; an entry at an index already stored replaces it and every entry after it.
    pub entries: Vec<Entry>,
    /// Messages that may be sent now.
    pub messages: Vec<Message>,
    /// Committed entries to apply, consecutive and in order. Configuration changes among them
    /// are already in force in the core (`membership`); the state machine records them too.
    pub committed_entries: Vec<Entry>,
    /// The membership, if applying `committed_entries` (or a snapshot) changed it: open and
    /// close peer links to match (the core's `replication_targets` says whom it still sends to).
    pub membership: Option<Membership>,
    /// Reads confirmed by a heartbeat quorum whose index is reached by the entries handed out.
    pub read_states: Vec<ReadState>,
    /// Read tokens that can no longer be confirmed (leadership lost): answer them with a retry.
    pub dropped_reads: Vec<u64>,
    /// The applied mark once `committed_entries` are handed out (read by `advance`).
    pub(super) applied_upto: u64,
}

impl Ready {
    /// Whether this Ready has anything to write (and so a `number` to report durable).
    pub fn must_persist(&self) -> bool {
        self.number != 0
    }

    /// The applied mark once `committed_entries` are applied: where this Ready's reads are served.
    pub fn applied_upto(&self) -> u64 {
        self.applied_upto
    }
}
