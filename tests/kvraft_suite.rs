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

// ----- the snapshot suite -----

const SNAPSHOT_THRESHOLD: u64 = 4 * 1024;

#[test]
fn snapshot_recover() {
    run_generic(&Spec {
        crash: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        ..Spec::new("snapshots, recover", 5, 1)
    });
}

#[test]
fn snapshot_recover_many_clients() {
    run_generic(&Spec {
        crash: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        ..Spec::new("snapshots, recover, many clients", 5, 10)
    });
}

#[test]
fn snapshot_unreliable_partitions() {
    run_generic(&Spec {
        unreliable: true,
        partitions: true,
        crash: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        ..Spec::new("snapshots, unreliable, partitions, recover", 5, 5)
    });
}

#[test]
fn snapshot_linearizable_mix() {
    run_generic(&Spec {
        unreliable: true,
        partitions: true,
        crash: true,
        crash_during_round: true,
        random_keys: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        ..Spec::new("snapshots, linearizable mix: 15 clients, 7 replicas", 7, 15)
    });
}

// A replica cut off while the others write past several snapshots catches up by InstallSnapshot
// over a lossy network, and the log stays bounded everywhere.
#[test]
fn snapshot_lagging_replica_catches_up_and_log_stays_bounded() {
    let spec = Spec {
        unreliable: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        ..Spec::new("snapshot catch-up", 3, 1)
    };
    let seed = seed(spec.name);
    let cluster = start_cluster(&spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let lagging = (1..=3).find(|&id| id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|&id| id != lagging).collect();
    cluster.net().partition(&[vec![lagging], others]);
    let mut clerk = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone());
    for i in 0..400 {
        clerk.put(&format!("k{}", i % 50), &format!("{i}-{}", "v".repeat(40))).expect("put");
    }
    let leader_snapshot = cluster.status.values().map(|s| s.commit_index()).max().unwrap_or(0);
    cluster.net().heal();
    check_replicas_agree(&cluster, seed);
    let installed = cluster.status[&lagging].applied_index();
    assert!(installed >= leader_snapshot, "seed {seed}: lagging replica at {installed}");
    for (id, status) in &cluster.status {
        // log_bytes is not on the board; INFO carries it.
        let mut c = quorumkv::client::Client::new(quorumkv::client::ClientConfig::new([cluster
            .client_addrs[id]
            .to_string()]))
        .expect("client");
        let info = c.info_map().expect("INFO");
        let log_bytes: u64 = info["log_bytes"].parse().expect("number");
        let snapshot_index: u64 = info["snapshot_index"].parse().expect("number");
        assert!(
            snapshot_index > 0,
            "seed {seed}: replica {id} never snapshotted (applied {})",
            status.applied_index()
        );
        assert!(log_bytes < 4 * SNAPSHOT_THRESHOLD, "seed {seed}: replica {id} log_bytes {log_bytes}");
    }
    for i in 350..400 {
        assert_eq!(
            clerk.get(&format!("k{}", i % 50)).expect("get"),
            Some(format!("{i}-{}", "v".repeat(40)).into_bytes())
        );
    }
    check_linearizable(spec.name, seed, &history);
}

// ----- the kvpaxos suite's extra cases -----

#[test]
fn many_clients_on_every_replica() {
    run_generic(&Spec { random_keys: true, ..Spec::new("15 clients on every replica at once", 3, 15) });
}

// Holes: clerks stop in the middle of operations (while cut off, so the operations may or may
// not happen) and the majority must go on; the history stays linearizable with them unknown.
#[test]
fn holes_clients_abandon_operations() {
    let spec = Spec::new("holes", 5, 1);
    let seed = seed(spec.name);
    let cluster = start_cluster(&spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let minority: Vec<u64> =
        std::iter::once(leader).chain((1..=5).filter(|&id| id != leader).take(1)).collect();
    let majority: Vec<u64> = (1..=5).filter(|id| !minority.contains(id)).collect();
    let servers = |ids: &[u64]| ids.iter().map(|id| cluster.client_addrs[id].to_string()).collect::<Vec<_>>();
    cluster.net().partition(&[minority.clone(), majority.clone()]);
    let abandon = Arc::new(AtomicBool::new(false));
    let partitioned = Arc::new(AtomicBool::new(true));
    let stuck: Vec<_> = (0..3)
        .map(|n| {
            let mut clerk = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone())
                .with_flags(abandon.clone(), Arc::new(AtomicBool::new(false)))
                .confined_to(servers(&minority), partitioned.clone());
            std::thread::spawn(move || clerk.append("hole", &format!("lost-{n};")))
        })
        .collect();
    let mut major = Clerk::new(clerk_id(), servers(&majority), false, seed, history.clone());
    for i in 0..20 {
        major.append("hole", &format!("ok-{i};")).expect("majority goes on");
    }
    // The stuck clerks give up mid-operation.
    abandon.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in stuck {
        assert!(s.join().expect("thread").is_err(), "seed {seed}: a minority append completed");
    }
    cluster.net().heal();
    partitioned.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut after = Clerk::new(clerk_id(), cluster.servers(), false, seed, history.clone());
    let value = String::from_utf8(after.get("hole").expect("get").unwrap_or_default()).expect("utf-8");
    for i in 0..20 {
        assert_eq!(value.matches(&format!("ok-{i};")).count(), 1, "seed {seed}: {value}");
    }
    after.append("hole", "end;").expect("append after healing");
    check_linearizable(spec.name, seed, &history);
    check_replicas_agree(&cluster, seed);
}

#[test]
fn fast_changing_partitions_unreliable() {
    let long = common::kv_suite::long_mode();
    run_generic(&Spec {
        unreliable: true,
        partitions: true,
        partition_every_ms: (0, 200),
        rounds: 1,
        round_ms: if long { 20_000 } else { 4_000 },
        ..Spec::new("partitions changing every 0-200 ms, unreliable", 5, 5)
    });
}

// ----- the nemesis -----

#[test]
fn nemesis_short() {
    common::kv_suite::run_nemesis("nemesis (short)", 5, 5, Duration::from_secs(5), Some(SNAPSHOT_THRESHOLD));
}

// `NEMESIS_SECS=600 cargo test --release --test kvraft_suite nemesis_long -- --ignored`
#[test]
#[ignore]
fn nemesis_long() {
    let secs = std::env::var("NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    common::kv_suite::run_nemesis(
        "nemesis (long)",
        5,
        8,
        Duration::from_secs(secs),
        Some(SNAPSHOT_THRESHOLD),
    );
}

// Any replica serves any client: clerks pinned to one replica each, never redirected, so every
// follower forwards writes and confirms reads with the leader, under partitions and crashes.
#[test]
fn pinned_clerks_partitions() {
    run_generic(&Spec {
        partitions: true,
        pinned: true,
        random_keys: true,
        ..Spec::new("pinned clerks, partitions", 5, 5)
    });
}

#[test]
fn pinned_clerks_crashes_unreliable() {
    run_generic(&Spec {
        crash_during_round: true,
        unreliable: true,
        pinned: true,
        ..Spec::new("pinned clerks, crashes, unreliable", 3, 6)
    });
}
