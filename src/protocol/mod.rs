//! Pure logic: no I/O, no clock, no threads, no runtime.

pub mod chunked;
pub mod codec;
pub mod command;
pub mod command_table;
pub mod dialect;
pub mod forwarding;
pub mod peer_wire;
pub mod raft;
pub mod read_time;
pub mod request;
pub mod resp;
pub mod rng;
pub mod snapshot_schedule;
pub mod snapshot_transfer;
pub mod watch;
