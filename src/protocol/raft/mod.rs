//! The Raft consensus core: a deterministic state machine with no I/O.
//!
//! Read in this order: [`message`] (what peers say), [`log`] (the log and its marks),
//! [`progress`] (a leader's view of a follower), [`read_index`] (linearizable reads),
//! [`ready`] (the hand-off to the I/O layer), and [`core`] (the rules themselves).

pub mod core;
pub mod log;
pub mod message;
pub mod progress;
pub mod read_index;
pub mod ready;

pub use self::core::{Config, ProposeError, RaftCore, Stats, StepError};
pub use self::log::RaftLog;
pub use self::message::{Entry, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
pub use self::ready::{ReadState, Ready, Role, RoleState};
