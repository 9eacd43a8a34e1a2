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
    let (seen, applied) = system.block_on(async move {
        let store = SnapshotStore::open(dir.path()).expect("open");
        let snapshotter = Snapshotter::new(store, 1).start();
        let status = Arc::new(StatusBoard::new(1, "127.0.0.1:0".to_string()));
        let held = Arc::new(HeldSnapshots::default());
        let applier = Applier::new(StateMachine::default(), 0, status.clone(), snapshotter, held).start();
        let n = 10 * APPLY_TURN as u64;
        let batch = |from: u64, to: u64| {
            ApplyEntries((from..=to).map(|index| Entry { term: 1, index, ..Entry::default() }).collect())
        };
        // Another task on the thread (a connection, say): the applied indexes it saw while the
        // batch was applied, until the second batch queued behind it was.
        let watching = status.clone();
        let other = tokio::task::spawn_local(async move {
            let mut seen = Vec::new();
            while watching.applied_index() < n + 2 {
                seen.push(watching.applied_index());
                tokio::task::yield_now().await;
            }
            seen
        });
        tokio::task::yield_now().await;
        applier.do_send(batch(1, n));
        applier.do_send(batch(n + 1, n + 2));
        let seen = tokio::time::timeout(std::time::Duration::from_secs(30), other)
            .await
            .expect("both batches applied within 30 s")
            .expect("the other task");
        (seen, status.applied_index())
    });
    assert_eq!(applied, 10 * APPLY_TURN as u64 + 2);
    let turn = APPLY_TURN as u64;
    // It ran between the turns (here every other turn: the two tasks' yields interleave so),
    // seeing the batch's progress in order, a few turns at a time (the second batch applied
    // between the first's turns would have ended the watch early). Applied in one go, it saw
    // only the start.
    let mut distinct = seen.clone();
    distinct.dedup();
    assert!(distinct.len() >= 4, "the other task saw only {distinct:?}");
    for pair in distinct.windows(2) {
        assert!(pair[0] < pair[1] && pair[1] - pair[0] <= 3 * turn, "{pair:?} in {distinct:?}");
    }
}
