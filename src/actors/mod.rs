//! Concurrency and I/O: one actor per file; the messages each accepts are its API.
//!
//! A request's path: [`front_end`] accepts a connection, [`connection`] parses requests and starts
//! a [`waiter`] for each; the waiter proposes to (or reads through) [`consensus`], which persists
//! through [`disk`], talks to peers through [`transport`] / [`peer_link`] / [`peer_listener`], and
//! hands committed entries to the [`applier`], which tells the waiters. [`replica`] wires it all.

pub mod accept;
pub mod applier;
pub mod byte_budget;
pub mod connection;
pub mod consensus;
pub mod cpu_affinity;
pub mod disk;
pub mod front_end;
pub mod http;
pub mod metrics;
pub mod peer_link;
pub mod peer_listener;
pub mod registry;
pub mod replica;
pub mod sim_network;
pub mod snapshotter;
pub mod status;
pub mod transport;
pub mod waiter;
pub mod wake_inbox;
