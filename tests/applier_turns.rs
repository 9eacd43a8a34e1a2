//! The applier shares its thread with the connections: a long batch of entries is applied in
//! turns, with the thread's other work run between them, and still in order.

use std::sync::Arc;

use actix::prelude::*;
use quorumkv::actors::applier::{Applier, ApplyEntries, APPLY_TURN};
use quorumkv::actors::registry::HeldSnapshots;
use quorumkv::actors::snapshotter::Snapshotter;
use quorumkv::actors::status::StatusBoard;
use quorumkv::protocol::raft::Entry;
use quorumkv::storage::{SnapshotStore, StateMachine};

#[test]
fn a_long_batch_is_applied_in_turns_that_let_the_thread_serve_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = actix_rt::System::new();
    let (turns, applied) = system.block_on(async move {
        let store = SnapshotStore::open(dir.path()).expect("open");
        let snapshotter = Snapshotter::new(store, 1).start();
        let status = Arc::new(StatusBoard::new(1, "127.0.0.1:0".to_string()));
        let held = Arc::new(HeldSnapshots::default());
        let applier = Applier::new(StateMachine::default(), 0, status.clone(), snapshotter, held).start();
        let n = 10 * APPLY_TURN as u64;
        let batch = |from: u64, to: u64| {
            ApplyEntries((from..=to).map(|index| Entry { term: 1, index, ..Entry::default() }).collect())
        };
        // Another task on the thread (a connection, say): how often it ran while the batch was
        // applied, which ends with the applied index published.
        let watching = status.clone();
        let other = tokio::task::spawn_local(async move {
            let mut turns = 0;
            while watching.applied_index() < n {
                turns += 1;
                tokio::task::yield_now().await;
            }
            turns
        });
        tokio::task::yield_now().await;
        applier.do_send(batch(1, n));
        // A second batch queued behind the first is applied after it (applied between the
        // first's turns, it would publish its index early and end the count below).
        applier.do_send(batch(n + 1, n + 2));
        let turns = other.await.expect("the other task");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while status.applied_index() < n + 2 {
            assert!(std::time::Instant::now() < deadline, "the second batch was not applied");
            tokio::task::yield_now().await;
        }
        (turns, status.applied_index())
    });
    assert_eq!(applied, 10 * APPLY_TURN as u64 + 2);
    // One turn before the batch began, then at least one between each two of its ten turns.
    assert!(turns >= 9, "the other task ran {turns} times while {} entries were applied", 10 * APPLY_TURN);
}
