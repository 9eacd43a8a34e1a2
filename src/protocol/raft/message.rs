//! What Raft peers say to each other, and the records the core hands out to persist.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::Membership;

/// A member's id within one cluster; 0 means "none".
pub type NodeId = u64;

/// Term, vote and commit as recorded on stable storage.
///
/// Term and vote must be durable before a node answers a vote; the commit mark rides along with
/// other writes and may lag (it is only a hint after a restart, never above the truth).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen (Raft §5.1). Never decreases.
    pub term: u64,
    /// Whom this node voted for in `term`, 0 if nobody.
    pub vote: NodeId,
    /// The highest index known committed. Never decreases.
    pub commit: u64,
}

/// What an entry's `data` holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A replicated command, opaque to Raft (empty: the leader's no-op).
    #[default]
    Normal,
    /// An encoded [`ConfChange`](super::membership::ConfChange), applied by the core itself.
    ConfChange,
}

/// One log entry. An empty normal `data` is the leader's no-op.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term in which a leader created this entry.
    pub term: u64,
    /// The entry's position in the log, from 1.
    pub index: u64,
    /// The replicated command, opaque to Raft, or a membership change. Shared: the log, the
    /// appends to each follower and the applier hold one copy.
    pub data: Bytes,
    /// Which of the two `data` is.
    pub kind: EntryKind,
}

impl Entry {
    /// Approximate bytes this entry takes in memory and on the wire.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// Which prefix of the log a snapshot replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
}

/// A state-machine image plus the log position it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Log position the image covers.
    pub meta: SnapshotMeta,
    /// The membership at `meta.index` (empty when the image recorded none).
    pub membership: Membership,
    /// The image itself, opaque to Raft (empty where the caller keeps the image elsewhere).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The body of a Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2); with `pre_vote` the pre-vote round of §9.6, which changes no state.
    Vote {
        /// A pre-vote: the receiver only says whether it would vote.
        pre_vote: bool,
        /// Index of the candidate's last entry.
        last_index: u64,
        /// Term of the candidate's last entry.
        last_term: u64,
        /// The candidate campaigns because the leader handed over (thesis §3.10): voters answer
        /// even while they hear from that leader.
        transfer: bool,
    },
    /// The answer to a (pre-)vote.
    VoteResponse {
        /// Answer to a pre-vote.
        pre_vote: bool,
        /// Whether the vote is refused.
        reject: bool,
    },
    /// AppendEntries (Raft §5.3): entries following (prev_index, prev_term).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: u64,
        /// Term of the entry at `prev_index`.
        prev_term: u64,
        /// New entries, consecutive from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// The answer to an append.
    AppendResponse {
        /// Whether the log did not match at `prev_index`.
        reject: bool,
        /// On success, the last index now known to match; on reject, the `prev_index` refused.
        index: u64,
        /// On reject, a hint: the follower's log cannot match above this index.
        reject_hint: u64,
        /// On reject, the follower's term at `reject_hint` (0 if none), for fast back-off.
        hint_term: u64,
    },
    /// Heartbeat: keeps leadership and carries a commit index the receiver can trust.
    Heartbeat {
        /// The leader's commit, already capped at what the receiver is known to hold.
        commit: u64,
        /// Read-index round this heartbeat confirms, 0 if none.
        read_round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The read-index round being acknowledged, 0 if none.
        read_round: u64,
    },
    /// InstallSnapshot (Raft §7): replace the log prefix with a snapshot.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Leader transfer (thesis §3.10): the leader tells a caught-up voter to campaign at once.
    TimeoutNow,
}

impl MessageBody {
    /// Whether this message may leave before the sender's pending writes are durable.
    ///
    /// Only a leader's traffic may (Raft thesis §10.2.1): replication and the transfer order
    /// promise nothing about the leader's own disk, which the leader counts toward a quorum
    /// only once it is durable. Its term must be durable all the same (the core holds these
    /// until it is: a sole voter elects itself before its new term is written).
    /// Everything else (votes, vote requests, acknowledgements) speaks for the sender's term,
    /// vote or log, so it waits until what the sender wrote before it is on stable storage.
    pub fn may_precede_persistence(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
        )
    }
}

/// A message between two members of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote: the term it would campaign in).
    pub term: u64,
    /// What is said.
    pub body: MessageBody,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec;

    /// The shape `Entry` had when its data was a `Vec<u8>` written through `serde_bytes`: logs
    /// and peer frames written then must read the same now, and the other way round.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct EntryWithVecData {
        term: u64,
        index: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        kind: EntryKind,
    }

    #[test]
    fn entry_data_is_encoded_as_the_plain_bytes_it_was() {
        for data in [Vec::new(), b"x".to_vec(), (0..=255).collect::<Vec<u8>>(), vec![7; 70_000]] {
            let old =
                EntryWithVecData { term: 3, index: 300, data: data.clone(), kind: EntryKind::ConfChange };
            let new = Entry { term: 3, index: 300, data: data.clone().into(), kind: EntryKind::ConfChange };
            let old_bytes = codec::encode(&old).expect("encode");
            assert_eq!(codec::encode(&new).expect("encode"), old_bytes, "{} bytes of data", data.len());
            assert_eq!(codec::decode::<Entry>(&old_bytes).expect("decode"), new);
        }
    }
}
