//! The live linearizability check (`quorumkv-cli check`'s workload and checker) against a cluster
//! with one replica cut off from the majority: it passes when every replica is sound, and it
//! catches a replica with an injected fault (reads served from its own state without a read
//! index), whose pinned client then reads values the majority has already overwritten.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::TestCluster;
use common::wait_until;
use quorumkv::actors::sim_network::SimFaults;
use quorumkv::client::ClientConfig;
use quorumkv::linearizability::{check_history, run_workload, CheckResult, KvOutput};

const WAIT: Duration = Duration::from_secs(15);
/// The replica that is cut off (and, in the faulty run, broken).
const CUT_OFF: u64 = 3;

/// Runs the check workload for 4 s with one client pinned to replica 3, cut off from the other
/// two once 100 operations are done, and two clients on the majority; answers the verdict and the
/// number of reads the pinned client was answered after the cut.
fn check_with_one_replica_cut_off(test: &str, faulty: bool) -> (CheckResult, usize) {
    let seed = common::kv_suite::seed(test);
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |config| {
        config.unsafe_local_reads = faulty && config.id == CUT_OFF;
    });
    cluster.wait_for_leader(WAIT);
    let addr = |id: u64| cluster.client_addrs[&id].to_string();
    // The cut comes once the workload has done 100 operations, so replica 3 holds values that
    // then go stale.
    let net = cluster.net().clone();
    let done = Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    let cut = std::thread::spawn(move || {
        wait_until("the workload under way", WAIT, || {
            let ops = counted.load(Ordering::Relaxed);
            if ops >= 100 {
                Ok(())
            } else {
                Err(ops)
            }
        });
        net.partition(&[vec![CUT_OFF], vec![1, 2]]);
        std::time::Instant::now()
    });
    let pinned = ClientConfig {
        only_listed_servers: true,
        request_timeout_ms: 300,
        ..ClientConfig::new([addr(CUT_OFF)])
    };
    let majority = ClientConfig { only_listed_servers: true, ..ClientConfig::new([addr(1), addr(2)]) };
    let configs = vec![pinned, majority.clone(), majority];
    let started = std::time::Instant::now();
    let ops = run_workload(configs, 2, Duration::from_secs(4), done);
    // Operation times count from just after `started`: a call later than this began after the cut.
    let cut_at_us = cut.join().expect("the cut").duration_since(started).as_micros() as u64 + 10_000;
    cluster.net().heal();
    // Client ids are consecutive in config order: the pinned client has the lowest.
    let pinned_id = ops.iter().map(|op| op.client).min().expect("some operations");
    let pinned_reads = ops
        .iter()
        .filter(|op| {
            op.client == pinned_id && op.call_us > cut_at_us && matches!(op.output, KvOutput::Value(_))
        })
        .count();
    (check_history(&ops, Duration::from_secs(30)), pinned_reads)
}

#[test]
fn the_check_passes_when_a_cut_off_replica_refuses_what_it_cannot_confirm() {
    let (verdict, pinned_reads) = check_with_one_replica_cut_off("check_sound_replica", false);
    assert_eq!(verdict, CheckResult::Ok, "a sound cluster is linearizable");
    assert_eq!(pinned_reads, 0, "a cut-off replica serves no read it cannot confirm");
}

#[test]
fn the_check_catches_a_replica_that_serves_unconfirmed_reads() {
    let (verdict, pinned_reads) = check_with_one_replica_cut_off("check_broken_replica", true);
    assert!(pinned_reads > 0, "the broken replica answered reads");
    assert!(matches!(verdict, CheckResult::Illegal { .. }), "stale reads are caught: {verdict:?}");
}
