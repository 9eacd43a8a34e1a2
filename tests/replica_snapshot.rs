//! Snapshots and compaction on real replicas: bounded log and disk, catch-up by InstallSnapshot,
//! restart from snapshot plus log tail, sessions that survive it all.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::resp_conn::RespConn;
use quorumkv::protocol::resp::Reply;

const WAIT: Duration = Duration::from_secs(20);
const THRESHOLD: u64 = 8 * 1024;

fn small_snapshots(n: u64) -> TestCluster {
    TestCluster::start_with(n, |c| {
        c.snapshot_threshold_bytes = THRESHOLD;
        c.wal_segment_bytes = 16 * 1024;
    })
}

fn leader_conn(cluster: &TestCluster) -> RespConn {
    let leader = cluster.wait_for_leader(WAIT);
    RespConn::connect(cluster.client_addrs[&leader], WAIT)
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read dir").flatten() {
        let p = entry.path();
        total += if p.is_dir() { dir_bytes(&p) } else { entry.metadata().map(|m| m.len()).unwrap_or(0) };
    }
    total
}

fn write_keys(conn: &mut RespConn, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("key-{i:05}");
        let value = format!("value-{i}-{}", "x".repeat(64));
        assert_eq!(conn.call(&[b"SET", key.as_bytes(), value.as_bytes()]), Reply::Simple("OK".into()));
    }
}

fn check_keys(conn: &mut RespConn, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("key-{i:05}");
        let value = format!("value-{i}-{}", "x".repeat(64));
        assert_eq!(conn.call(&[b"GET", key.as_bytes()]), Reply::Bulk(Some(value.into_bytes())), "{key}");
    }
}

fn info_field(conn: &mut RespConn, field: &str) -> u64 {
    let Reply::Bulk(Some(text)) = conn.call(&[b"INFO"]) else { panic!("INFO is a bulk string") };
    let text = String::from_utf8(text).expect("utf-8");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {field}: {text}"))
}

#[test]
fn log_and_data_dir_stay_bounded_and_every_value_reads_back() {
    let cluster = small_snapshots(3);
    let mut conn = leader_conn(&cluster);
    write_keys(&mut conn, 0..1500);
    check_keys(&mut conn, 0..1500);
    // Every replica compacted several times, and its log stays under 4x the threshold.
    for (&id, addr) in &cluster.client_addrs {
        let mut c = RespConn::connect(*addr, WAIT);
        let deadline = Instant::now() + WAIT;
        while info_field(&mut c, "applied_index") < info_field(&mut conn, "commit_index") {
            assert!(Instant::now() < deadline, "replica {id} did not catch up");
            std::thread::park_timeout(Duration::from_millis(10));
        }
        let snapshot_index = info_field(&mut c, "snapshot_index");
        let log_bytes = info_field(&mut c, "log_bytes");
        assert!(snapshot_index > 0, "replica {id} never took a snapshot");
        assert!(log_bytes < 4 * THRESHOLD, "replica {id}: log_bytes {log_bytes} not bounded");
    }
    // 1,500 values of ~80 bytes is ~120 KB of state; without compaction the WAL alone would hold
    // every write. The data dir holds the state (in a snapshot) plus a bounded tail.
    for id in cluster.client_addrs.keys() {
        let bytes = dir_bytes(&cluster.dir.path().join(format!("replica-{id}")));
        assert!(bytes < 1024 * 1024, "replica {id} data dir is {bytes} bytes");
    }
}

// The members take their first snapshots at different points of the log (ids 2, 1 and 3 at a
// third, two thirds and all of the threshold), so they never all write images at once.
#[test]
fn replicas_take_their_first_snapshots_a_third_of_the_threshold_apart() {
    let cluster = small_snapshots(3);
    let mut conn = leader_conn(&cluster);
    // 80 entries: past every first snapshot (here at indexes 23, 46 and 68), short of replica 2's
    // second one (at 91).
    write_keys(&mut conn, 0..80);
    let mut first = std::collections::BTreeMap::new();
    for (&id, addr) in &cluster.client_addrs {
        let mut c = RespConn::connect(*addr, WAIT);
        let deadline = Instant::now() + WAIT;
        let index = loop {
            let index = info_field(&mut c, "snapshot_index");
            if index > 0 {
                break index;
            }
            assert!(Instant::now() < deadline, "replica {id} took no snapshot");
            std::thread::park_timeout(Duration::from_millis(10));
        };
        first.insert(id, index);
    }
    // A third of 8 KiB is some 22 of these entries.
    assert!(first[&2] + 10 <= first[&1] && first[&1] + 10 <= first[&3], "first snapshot indexes {first:?}");
}

#[test]
fn stopped_follower_catches_up_by_snapshot_and_restart_keeps_everything() {
    let mut cluster = small_snapshots(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("follower");
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    // A session write before the follower goes away: its dedup must survive the snapshot path.
    assert_eq!(conn.call(&[b"REQ", b"77", b"1", b"APPEND", b"log", b"a"]), Reply::Integer(1));
    cluster.stop(follower);
    write_keys(&mut conn, 0..1000);
    let leader_snapshot = info_field(&mut conn, "snapshot_index");
    assert!(leader_snapshot > 50, "leader compacted past the follower ({leader_snapshot})");
    cluster.restart(follower);
    // The follower is behind the leader's compacted prefix: only a snapshot can catch it up.
    let commit = info_field(&mut conn, "commit_index");
    let mut fc = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let deadline = Instant::now() + WAIT;
    while info_field(&mut fc, "applied_index") < commit {
        assert!(Instant::now() < deadline, "follower did not catch up");
        std::thread::park_timeout(Duration::from_millis(10));
    }
    assert!(info_field(&mut fc, "snapshot_index") >= leader_snapshot.min(commit));
    assert_eq!(info_field(&mut fc, "keys"), info_field(&mut conn, "keys"));

    // Make the caught-up follower the only source of truth with the old leader: stop the third.
    let third = *cluster.client_addrs.keys().find(|&&id| id != leader && id != follower).expect("third");
    cluster.stop(third);
    let mut conn = leader_conn(&cluster);
    check_keys(&mut conn, 0..1000);
    // The session write from before is remembered: the retry answers 1 and appends nothing.
    assert_eq!(conn.call(&[b"REQ", b"77", b"1", b"APPEND", b"log", b"a"]), Reply::Integer(1));
    assert_eq!(conn.call(&[b"GET", b"log"]), Reply::Bulk(Some(b"a".to_vec())));

    // Restart everything from disk: snapshot plus WAL tail on every replica.
    cluster.restart(third);
    for id in cluster.client_addrs.keys().copied().collect::<Vec<_>>() {
        cluster.stop(id);
    }
    for id in cluster.client_addrs.keys().copied().collect::<Vec<_>>() {
        cluster.restart(id);
    }
    let mut conn = leader_conn(&cluster);
    check_keys(&mut conn, 0..1000);
    assert_eq!(conn.call(&[b"REQ", b"77", b"1", b"APPEND", b"log", b"a"]), Reply::Integer(1));
    assert_eq!(conn.call(&[b"REQ", b"77", b"2", b"APPEND", b"log", b"b"]), Reply::Integer(2));
}

// A replica added once the log it needs has left the leader's memory (every member had those
// entries, so they were trimmed) gets a snapshot taken for it, though the threshold is far off,
// and then the entries after it.
#[test]
fn a_member_added_after_the_log_left_memory_gets_a_snapshot_taken_for_it() {
    let cluster = TestCluster::start_with_spares(3, 1, None, |_| {});
    let leader = cluster.wait_for_leader_among(&[1, 2, 3], WAIT);
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    // Pipelined, in batches: well past the 4,096 entries a leader trims at a time.
    const KEYS: u32 = 6000;
    for batch in (0..KEYS).step_by(500) {
        for i in batch..batch + 500 {
            let key = format!("key-{i:05}");
            let value = format!("value-{i}-{}", "x".repeat(64));
            conn.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
        }
        for _ in batch..batch + 500 {
            assert_eq!(conn.read(), Some(Reply::Simple("OK".into())));
        }
    }
    assert_eq!(info_field(&mut conn, "snapshot_index"), 0, "no snapshot yet: the threshold is 32 MiB");
    let (peer, client) = (cluster.peer_addrs[&4].to_string(), cluster.client_addrs[&4].to_string());
    let add = conn.call(&[b"MEMBER", b"ADD", b"4", peer.as_bytes(), client.as_bytes()]);
    assert_eq!(add, Reply::Simple("OK".into()));
    let status = &cluster.status[&4];
    let deadline = Instant::now() + WAIT;
    while status.applied_index() < info_field(&mut conn, "commit_index") {
        assert!(Instant::now() < deadline, "replica 4 did not catch up: applied {}", status.applied_index());
        std::thread::park_timeout(Duration::from_millis(10));
    }
    let snapshot_index = info_field(&mut conn, "snapshot_index");
    assert!(
        snapshot_index >= u64::from(KEYS),
        "the leader took no snapshot for the newcomer: {snapshot_index}"
    );
    let mut four = RespConn::connect(cluster.client_addrs[&4], WAIT);
    check_keys(&mut four, 0..KEYS);
}
