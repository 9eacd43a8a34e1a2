//! Helpers shared by the integration tests. Each test file uses a part of them.
#![allow(dead_code)]

pub mod cluster;
pub mod kv_suite;
pub use quorumkv::linearizability;
pub mod raft_net;
pub mod resp_conn;

use std::time::{Duration, Instant};

/// Polls `done` until it holds, failing with `what` and its last view once `timeout` passes.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<(), T>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match done() {
            Ok(()) => return,
            Err(view) => assert!(Instant::now() < deadline, "{what} not within {timeout:?}: {view:?}"),
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}
