//! Helpers shared by the integration tests. Each test file uses a part of them.
#![allow(dead_code)]

pub mod cluster;
pub mod kv_suite;
pub mod linearizability;
pub mod raft_net;
pub mod resp_conn;
