//! Three replicas in one process over real TCP, driven by the Rust client: answers match a model,
//! the leader dies under load and nothing acknowledged is lost or doubled, full restarts keep it all.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::TestCluster;
use quorumkv::client::{Client, ClientConfig, ClientError};
use quorumkv::protocol::command::ColumnFamily;
use quorumkv::protocol::rng::Rng;

const WAIT: Duration = Duration::from_secs(20);

fn client(cluster: &TestCluster) -> Client {
    let mut config = ClientConfig::new(cluster.servers());
    config.request_timeout_ms = 20_000;
    Client::new(config).expect("client")
}

fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (replay: TEST_SEED={seed})");
    seed
}

#[test]
fn commands_match_a_model() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    let mut c = client(&cluster);
    let seed = seed();
    let mut rng = Rng::new(seed);
    // The model: one ordered map per column family.
    let mut model: BTreeMap<(ColumnFamily, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let cfs = ColumnFamily::ALL;
    for step in 0..400 {
        let key = format!("k{}", rng.range(0, 12)).into_bytes();
        let value = format!("v{step}").into_bytes();
        let cf = cfs[rng.range(0, 3) as usize];
        match rng.range(0, 9) {
            0 => {
                c.set(&key, &value).expect("SET");
                model.insert((ColumnFamily::Default, key), value);
            }
            1 => {
                let entry = model.entry((ColumnFamily::Default, key.clone())).or_default();
                entry.extend_from_slice(&value);
                let expected = entry.len() as i64;
                assert_eq!(c.append(&key, &value).expect("APPEND"), expected, "step {step} seed {seed}");
            }
            2 => {
                let other = format!("k{}", rng.range(0, 12)).into_bytes();
                let mut expected = 0;
                for k in [&key, &other] {
                    if model.remove(&(ColumnFamily::Default, k.clone())).is_some() {
                        expected += 1;
                    }
                }
                assert_eq!(c.del(&[&key, &other]).expect("DEL"), expected, "step {step} seed {seed}");
            }
            3 => {
                let expected = model.get(&(ColumnFamily::Default, key.clone())).cloned();
                assert_eq!(c.get(&key).expect("GET"), expected, "step {step} seed {seed}");
            }
            4 => {
                let expected = model.contains_key(&(ColumnFamily::Default, key.clone())) as i64;
                assert_eq!(c.exists(&[&key]).expect("EXISTS"), expected, "step {step} seed {seed}");
            }
            5 => {
                c.raw_put(cf, &key, &value).expect("RAWPUT");
                model.insert((cf, key), value);
            }
            6 => {
                let expected = model.remove(&(cf, key.clone())).is_some() as i64;
                assert_eq!(c.raw_delete(cf, &key).expect("RAWDELETE"), expected, "step {step} seed {seed}");
            }
            7 => {
                let expected = model.get(&(cf, key.clone())).cloned();
                assert_eq!(c.raw_get(cf, &key).expect("RAWGET"), expected, "step {step} seed {seed}");
            }
            _ => {
                let limit = rng.range(0, 6);
                let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                    .range((cf, key.clone())..)
                    .take_while(|((c, _), _)| *c == cf)
                    .take(limit as usize)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(
                    c.raw_scan(cf, &key, limit).expect("RAWSCAN"),
                    expected,
                    "step {step} seed {seed}"
                );
            }
        }
    }
    // An unknown column family is an error reply, not a crash.
    let reply = c.call(&[b"RAWGET".to_vec(), b"nope".to_vec(), b"k".to_vec()]).expect("a reply");
    assert!(matches!(reply, quorumkv::protocol::resp::Reply::Error(e) if e.starts_with("ERR")));
}

/// Appends `token,` to `key` from several clients until told to stop; returns the acknowledged tokens.
fn appenders(
    cluster: &TestCluster,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|n| {
            let mut c = client(cluster);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 5 {
                    let token = format!("c{n}-{i}");
                    match c.append(b"log", format!("{token},").as_bytes()) {
                        Ok(_) => acked.push(token),
                        Err(ClientError::Unavailable { .. }) => panic!("cluster unavailable for client {n}"),
                        Err(e) => panic!("client {n}: {e}"),
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect()
}

fn tokens(value: &[u8]) -> Vec<String> {
    String::from_utf8(value.to_vec())
        .expect("utf-8")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn leader_killed_under_load_loses_and_doubles_nothing() {
    let mut cluster = TestCluster::start(3);
    let stop = Arc::new(AtomicBool::new(false));
    cluster.wait_for_leader(WAIT);
    let workers = appenders(&cluster, 4, stop.clone());
    // Let writes flow, then kill the leader's actors twice over (a new leader each time).
    let mut killed = Vec::new();
    for _ in 0..2 {
        let before = cluster.status.values().map(|s| s.commit_index()).max().unwrap_or(0);
        let deadline = std::time::Instant::now() + WAIT;
        while cluster.status.values().map(|s| s.commit_index()).max().unwrap_or(0) < before + 50 {
            assert!(std::time::Instant::now() < deadline, "no progress");
            std::thread::park_timeout(Duration::from_millis(5));
        }
        let leader = cluster.wait_for_leader(WAIT);
        // Its log writes still queued for the disk are lost, as in a crash.
        cluster.crash(leader);
        killed.push(leader);
        cluster.wait_for_leader(WAIT);
        // Bring the dead one back so the next kill still leaves a majority.
        cluster.restart(leader);
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<String> = Vec::new();
    for w in workers {
        acked.extend(w.join().expect("client thread"));
    }
    let mut c = client(&cluster);
    let value = c.get(b"log").expect("GET").unwrap_or_default();
    let present = tokens(&value);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &present {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    for t in &acked {
        assert_eq!(
            counts.get(t.as_str()).copied().unwrap_or(0),
            1,
            "acknowledged append {t} present {:?} times",
            counts.get(t.as_str())
        );
    }
    // Exactly-once: nothing appears twice, acknowledged or not (retries reuse their REQ seq).
    assert!(counts.values().all(|&n| n == 1), "an append was applied twice");
    assert!(acked.len() > 100, "only {} appends acknowledged", acked.len());
    println!("killed leaders {killed:?}; {} appends acknowledged, {} present", acked.len(), present.len());
}

#[test]
fn full_restart_keeps_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    let mut c = client(&cluster);
    for i in 0..200 {
        c.set(format!("key{i}").as_bytes(), format!("value{i}").as_bytes()).expect("SET");
    }
    c.raw_put(ColumnFamily::Write, b"w", b"1").expect("RAWPUT");
    for id in cluster.running() {
        cluster.stop(id);
    }
    for id in [3, 1, 2] {
        cluster.restart(id);
    }
    cluster.wait_for_leader(WAIT);
    let mut c = client(&cluster);
    for i in 0..200 {
        assert_eq!(c.get(format!("key{i}").as_bytes()).expect("GET"), Some(format!("value{i}").into_bytes()));
    }
    assert_eq!(c.raw_get(ColumnFamily::Write, b"w").expect("RAWGET"), Some(b"1".to_vec()));
}

fn words(w: &[&str]) -> Vec<Vec<u8>> {
    w.iter().map(|s| s.as_bytes().to_vec()).collect()
}

// Transactions through the library client, a call at a time as the CLI's prompt sends them: the
// writes queued by MULTI go untagged (the server refuses REQ there) on the connection MULTI was
// answered on, and WATCH holds that connection too, so a write by another client aborts EXEC.
#[test]
fn transactions_work_call_by_call_through_the_client() {
    use quorumkv::protocol::resp::Reply;
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    let mut c = client(&cluster);
    assert_eq!(c.call(&words(&["MULTI"])).expect("MULTI"), Reply::ok());
    assert_eq!(c.call(&words(&["SET", "t", "1"])).expect("SET"), Reply::Simple("QUEUED".into()));
    assert_eq!(c.call(&words(&["INCR", "t"])).expect("INCR"), Reply::Simple("QUEUED".into()));
    let exec = c.call(&words(&["EXEC"])).expect("EXEC");
    assert_eq!(exec, Reply::Array(Some(vec![Reply::ok(), Reply::Integer(2)])), "{exec:?}");
    // After EXEC, writes are tagged and retried as always.
    assert_eq!(c.call(&words(&["INCR", "t"])).expect("INCR"), Reply::Integer(3));

    assert_eq!(c.call(&words(&["WATCH", "t"])).expect("WATCH"), Reply::ok());
    // The typed helpers could take another connection, where the WATCH does not exist.
    assert!(matches!(c.get(b"t"), Err(ClientError::Invalid(_))), "refused inside a transaction");
    let mut other = client(&cluster);
    assert_eq!(other.call(&words(&["SET", "t", "9"])).expect("SET"), Reply::ok());
    assert_eq!(c.call(&words(&["MULTI"])).expect("MULTI"), Reply::ok());
    assert_eq!(c.call(&words(&["SET", "t", "5"])).expect("SET"), Reply::Simple("QUEUED".into()));
    assert_eq!(c.call(&words(&["EXEC"])).expect("EXEC"), Reply::Array(None), "the watched key moved");
    assert_eq!(c.get(b"t").expect("GET"), Some(b"9".to_vec()));

    assert_eq!(c.call(&words(&["MULTI"])).expect("MULTI"), Reply::ok());
    assert_eq!(c.call(&words(&["SET", "t", "6"])).expect("SET"), Reply::Simple("QUEUED".into()));
    assert_eq!(c.call(&words(&["DISCARD"])).expect("DISCARD"), Reply::ok());
    assert_eq!(c.get(b"t").expect("GET"), Some(b"9".to_vec()), "discarded");
}
