//! The Raft consensus core: a deterministic state machine with no I/O.

pub mod message;

pub use message::{Entry, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
