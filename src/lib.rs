//! quorumkv: a replicated, strongly consistent key-value store.
//!
//! The crate has three layers (see `ARCHITECTURE.md`):
//! - [`protocol`]: pure, deterministic logic (the Raft core, commands, codecs);
//! - [`storage`]: bytes at rest (write-ahead log, snapshots, KV engine, state machine);
//! - [`actors`]: concurrency and I/O (one actor per file, `replica` wires them);
//! - [`allocator`]: the server's global allocator (mimalloc);
//! - [`client`]: the blocking Rust client (leader discovery, retries, exactly-once writes);
//! - [`dial`]: the check on every connection this crate dials (one joined to itself is refused);
//! - [`joining`]: how a `--join` replica adds and promotes itself through that client;
//! - [`linearizability`]: the history checker behind `quorumkv-cli check` and the fault suite.

#![deny(missing_docs)]

pub mod actors;
pub mod allocator;
pub mod client;
pub mod dial;
pub mod joining;
pub mod linearizability;
pub mod protocol;
pub mod storage;
