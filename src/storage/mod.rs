//! Bytes at rest: write-ahead log, snapshots, KV engine, state machine.
//!
//! - [`log_store`]: the trait the consensus layer persists through; [`mem_log`] is its in-memory twin;
//! - [`wal`]: Raft's hard state, log entries and snapshot markers in checksummed segment files
//!   (old segments deleted by `segment_remover`'s thread, space reserved ahead zeroed by
//!   `segment_zeroer`'s);
//! - [`snapshot_file`]: state-machine images written atomically, newest kept;
//! - [`engine`]: the KV engine, ordered maps per column family, values with versions and expiries;
//! - [`dialect`]: what each Redis command does to the engine, decided at apply time;
//! - [`state_machine`]: applies replicated commands, exactly once per client [`session`];
//! - [`data_dir`]: a replica's data directory, its identity check and its lock;
//! - [`restore`]: a new cluster's data dir initialized from a backup file.

pub mod data_dir;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod log_store;
mod log_tail;
pub mod mem_log;
pub mod record;
pub mod restore;
mod segment_remover;
mod segment_zeroer;
pub mod session;
pub mod snapshot_file;
pub mod state_machine;
pub mod wal;
mod writeback;

pub use data_dir::DataDir;
pub use engine::{KvEngine, SharedBytes, Stored, ValueKind, WriteBatch, WriteOp};
pub use error::{Result, StorageError};
pub use log_store::LogStore;
pub use mem_log::MemLog;
pub use session::{
    remembered_bytes, SessionCheck, SessionTable, DEFAULT_MAX_SESSIONS, MAX_REPLIES_PER_SESSION,
    MAX_SESSION_REPLY_BYTES, MAX_SESSION_SHARE_BYTES,
};
pub use snapshot_file::{SnapshotFile, SnapshotFileWriter, SnapshotInbox, SnapshotSource, SnapshotStore};
pub use state_machine::StateMachine;
pub use wal::{Wal, WalOptions, WalRecovery};
