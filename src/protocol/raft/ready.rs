//! The hand-off between the pure core and the code that does its I/O.

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
    /// The commit index recorded when the read arrived; the state at or after it answers the read.
    pub index: u64,
}

/// Everything the core needs done, in the order it must be done.
///
/// The caller must, in this order:
/// 1. persist `snapshot` (if any), then `entries` and `hard_state` (if any) — durably, in one
///    write — *before* sending any of `messages`: a vote or an append acknowledgement promises
///    that what it acknowledges is on stable storage;
/// 2. send `messages`;
/// 3. apply `snapshot` (if any) to the state machine, then `committed_entries` in order;
/// 4. serve `read_states` once the state machine has applied their index (they are released
///    only when `committed_entries` of this or an earlier `Ready` reach it), and fail `dropped_reads`;
/// 5. call `advance` with this `Ready`. Only one `Ready` is out at a time.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// New role, term or leader, if any of them changed since the last `Ready`.
    pub role: Option<RoleState>,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it, then restore the state machine from it.
    /// Its `data` is whatever the transport delivered with the `InstallSnapshot` message.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to stable storage; an entry at an index already stored replaces it and
    /// every entry after it.
    pub entries: Vec<Entry>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
    /// Committed entries to apply, consecutive and in order.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed by a heartbeat quorum whose index is reached by the entries handed out.
    pub read_states: Vec<ReadState>,
    /// Read tokens that can no longer be confirmed (leadership lost): answer them with a retry.
    pub dropped_reads: Vec<u64>,
}
