//! The kvraft lab's suite, ported by meaning: replicas on the simulated network, clerks recording
//! histories, every round's appends checked, every history checked for linearizability.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kv_suite::{
    check_linearizable, check_replicas_agree, clerk_id, run_generic, seed, start_cluster, Clerk, Spec,
};
use common::linearizability::HistoryRecorder;

#[test]
fn basic_one_client() {
    run_generic(&Spec::new("basic", 5, 1));
}

#[test]
fn concurrent_clients() {
    run_generic(&Spec::new("concurrent", 5, 5));
}

#[test]
fn unreliable() {
    run_generic(&Spec { unreliable: true, ..Spec::new("unreliable", 5, 5) });
}

#[test]
fn many_partitions_one_client() {
    run_generic(&Spec { partitions: true, ..Spec::new("many partitions, one client", 5, 1) });
}

#[test]
fn many_partitions_many_clients() {
    run_generic(&Spec { partitions: true, ..Spec::new("many partitions, many clients", 5, 5) });
}

#[test]
fn persistence_one_client() {
    run_generic(&Spec { crash: true, ..Spec::new("persistence, one client", 5, 1) });
}

#[test]
fn persistence_concurrent() {
    run_generic(&Spec { crash: true, ..Spec::new("persistence, concurrent", 5, 5) });
}

#[test]
fn persistence_concurrent_unreliable() {
    run_generic(&Spec {
        crash: true,
        unreliable: true,
        ..Spec::new("persistence, concurrent, unreliable", 5, 5)
    });
}

#[test]
fn persistence_partitions() {
    run_generic(&Spec { crash: true, partitions: true, ..Spec::new("persistence, partitions", 5, 5) });
}

#[test]
fn persistence_partitions_unreliable() {
    run_generic(&Spec {
        crash: true,
        partitions: true,
        unreliable: true,
        ..Spec::new("persistence, partitions, unreliable", 5, 5)
    });
}

#[test]
fn linearizable_mix() {
    run_generic(&Spec {
        unreliable: true,
        partitions: true,
        crash: true,
        crash_during_round: true,
        random_keys: true,
        ..Spec::new("linearizable mix: 15 clients, 7 replicas", 7, 15)
    });
}

// Concurrent appends to one key under an unreliable network: every append present exactly once,
// each client's in its own order.
#[test]
fn concurrent_appends_to_one_key_unreliable() {
    let spec = Spec { unreliable: true, ..Spec::new("concurrent appends to one key", 3, 5) };
    let seed = seed(spec.name);
    let cluster = start_cluster(&spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let per_client = if common::kv_suite::long_mode() { 50 } else { 20 };
    let workers: Vec<_> = (0..spec.clients)
        .map(|n| {
            let mut clerk = Clerk::new(clerk_id(), cluster.servers(), true, seed, history.clone());
            std::thread::spawn(move || {
                for j in 0..per_client {
                    clerk.append("shared", &format!("x {n} {j} y")).expect("append");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("clerk");
    }
    let mut reader = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone());
    let value = String::from_utf8(reader.get("shared").expect("get").unwrap_or_default()).expect("utf-8");
    for n in 0..spec.clients {
        let mut last = None;
        for j in 0..per_client {
            let needle = format!("x {n} {j} y");
            let found: Vec<usize> = value.match_indices(&needle).map(|(i, _)| i).collect();
            assert_eq!(found.len(), 1, "seed {seed}: '{needle}' present {} times", found.len());
            assert!(last < Some(found[0]), "seed {seed}: client {n}'s appends out of order");
            last = Some(found[0]);
        }
    }
    check_linearizable(spec.name, seed, &history);
}

// One partition with the leader in the minority: nothing completes there, the majority goes on,
// and everything completes soon after healing.
#[test]
fn one_partition_leader_in_minority() {
    let spec = Spec::new("one partition", 5, 1);
    let seed = seed(spec.name);
    let cluster = start_cluster(&spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let mut clerk = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone());
    clerk.put("1", "13").expect("put");
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let others: Vec<u64> = (1..=5).filter(|&id| id != leader).collect();
    let minority = vec![leader, others[0]];
    let majority: Vec<u64> = others[1..].to_vec();
    cluster.net().partition(&[minority.clone(), majority.clone()]);

    // The majority side makes progress.
    let servers = |ids: &[u64]| ids.iter().map(|id| cluster.client_addrs[id].to_string()).collect::<Vec<_>>();
    let mut major = Clerk::new(clerk_id(), servers(&majority), false, seed, history.clone());
    major.append("1", "14").expect("majority append");
    assert_eq!(major.get("1").expect("majority get"), Some(b"1314".to_vec()));

    // Clerks of the minority side: nothing completes there while cut off.
    let abandon = Arc::new(AtomicBool::new(false));
    let healed = Arc::new(AtomicBool::new(false));
    let partitioned = Arc::new(AtomicBool::new(true));
    let mut minor_put = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone())
        .with_flags(abandon.clone(), healed.clone())
        .confined_to(servers(&minority), partitioned.clone());
    let mut minor_get = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone())
        .with_flags(abandon.clone(), healed.clone())
        .confined_to(servers(&minority), partitioned.clone());
    let done = Arc::new(AtomicBool::new(false));
    let (d1, d2) = (done.clone(), done.clone());
    let put = std::thread::spawn(move || {
        let r = minor_put.put("1", "15");
        d1.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    let get = std::thread::spawn(move || {
        let r = minor_get.get("1");
        d2.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "seed {seed}: an operation completed in the minority"
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
    // Heal: both minority operations complete within 3 seconds.
    cluster.net().heal();
    partitioned.store(false, std::sync::atomic::Ordering::SeqCst);
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let healed_at = Instant::now();
    put.join().expect("thread").expect("put completes after healing");
    get.join().expect("thread").expect("get completes after healing");
    let took = healed_at.elapsed();
    println!("one partition: minority operations completed {took:?} after healing");
    assert!(took < Duration::from_secs(3), "seed {seed}: took {took:?} after healing");
    let final_value = clerk.get("1").expect("get");
    assert_eq!(final_value, Some(b"15".to_vec()));
    check_linearizable(spec.name, seed, &history);
}

// 1,000 sequential appends from one client: commits must not wait for heartbeats. With a 500 ms
// heartbeat, the run must take far fewer heartbeat rounds than appends.
#[test]
fn speed_sequential_appends_do_not_wait_for_heartbeats() {
    let spec = Spec::new("speed", 3, 1);
    let seed = seed(spec.name);
    let cluster = common::cluster::TestCluster::start_sim(
        3,
        seed,
        quorumkv::actors::sim_network::SimFaults::reliable(),
        |c| {
            c.heartbeat_ms = 500;
            c.election_timeout_ms = 2000;
        },
    );
    let history = Arc::new(HistoryRecorder::new());
    let mut clerk = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone());
    clerk.put("k", "").expect("first put");
    let ops = 1000;
    let heartbeats_before = cluster.net().stats().heartbeats;
    let started = Instant::now();
    for i in 0..ops {
        clerk.append("k", &format!("{i},")).expect("append");
    }
    let elapsed = started.elapsed();
    // Each heartbeat round sends one heartbeat to each of the 2 followers.
    let rounds = (cluster.net().stats().heartbeats - heartbeats_before) / 2;
    let ms_per_op = elapsed.as_secs_f64() * 1000.0 / ops as f64;
    println!(
        "speed: {ops} sequential appends in {elapsed:?}: {ms_per_op:.2} ms/op, {rounds} heartbeat rounds"
    );
    // Counted, not timed: if commits waited for heartbeats there would be a round per append.
    assert!(ops > 5 * rounds, "seed {seed}: {ops} appends took {rounds} heartbeat rounds");
    let value = clerk.get("k").expect("get").unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&value), (0..ops).map(|i| format!("{i},")).collect::<String>());
    check_replicas_agree(&cluster, seed);
}
