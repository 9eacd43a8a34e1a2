//! The Raft consensus core: a deterministic state machine with no I/O.
//!
//! Read in this order: [`message`] (what peers say), [`membership`] (who votes, and how that
//! changes), [`log`] (the log and its marks),
//! [`progress`] (a leader's view of a follower), [`read_index`] (linearizable reads),
//! [`ready`] (the hand-off to the I/O layer), and [`core`] (the rules themselves).

pub mod core;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod read_index;
pub mod ready;

pub use self::core::{
    ChangeError, Config, ProposeError, RaftCore, Stats, StepError, TransferError, DEFAULT_RETAINED_ENTRIES,
};
pub use self::log::{Compacted, RaftLog};
pub use self::membership::{ChangeOp, ConfChange, MemberAddrs, Membership, MembershipError};
pub use self::message::{Entry, EntryKind, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
pub use self::ready::{ReadState, Ready, Role, RoleState};
