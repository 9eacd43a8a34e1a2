//! The Redis dialect through real replicas: the redis crate against a follower and the leader;
//! expiry decided at the same log position on every replica across a leader change and a
//! snapshot install; optimistic transactions and SETVER under contention and leader changes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::TestCluster;
use common::resp_conn::RespConn;
use common::wait_until;
use quorumkv::actors::sim_network::SimFaults;
use quorumkv::protocol::resp::Reply;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn the_dialect_works_through_the_redis_crate_on_follower_and_leader() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    for (round, id) in [follower, leader].into_iter().enumerate() {
        let client = redis::Client::open(format!("redis://{}/", cluster.client_addrs[&id])).expect("client");
        let mut con = client.get_connection().expect("connect");
        let p = format!("r{round}:");
        let key = |k: &str| format!("{p}{k}");
        let q = |cmd: &mut redis::Cmd, con: &mut redis::Connection| -> redis::Value {
            cmd.query(con).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
        };
        let _ = q(redis::cmd("SET").arg(key("n")).arg(10), &mut con);
        let n: i64 = redis::cmd("INCRBY").arg(key("n")).arg(5).query(&mut con).expect("INCRBY");
        assert_eq!(n, 15);
        let n: i64 = redis::cmd("DECR").arg(key("n")).query(&mut con).expect("DECR");
        assert_eq!(n, 14);
        let err = redis::cmd("INCR").arg(key("n")).arg("x").query::<i64>(&mut con).expect_err("arity");
        assert!(err.to_string().contains("wrong number of arguments"), "{err}");
        let _: () =
            redis::cmd("MSET").arg(key("a")).arg("1").arg(key("b")).arg("2").query(&mut con).expect("MSET");
        let got: Vec<Option<String>> =
            redis::cmd("MGET").arg(key("a")).arg(key("none")).arg(key("b")).query(&mut con).expect("MGET");
        assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);
        let set: Option<String> =
            redis::cmd("SET").arg(key("a")).arg("z").arg("NX").query(&mut con).expect("SET NX");
        assert_eq!(set, None, "NX on an existing key writes nothing");
        let _: () =
            redis::cmd("SET").arg(key("t")).arg("v").arg("EX").arg(100).query(&mut con).expect("SET EX");
        let ttl: i64 = redis::cmd("TTL").arg(key("t")).query(&mut con).expect("TTL");
        assert!((99..=100).contains(&ttl), "ttl {ttl}");
        let _: () =
            redis::cmd("SET").arg(key("short")).arg("v").arg("PX").arg(50).query(&mut con).expect("PX");
        wait_until("a 50 ms key expires", WAIT, || {
            let exists: i64 = redis::cmd("EXISTS").arg(key("short")).query(&mut con).expect("EXISTS");
            if exists == 0 {
                Ok(())
            } else {
                Err(exists)
            }
        });
        let kind: String = redis::cmd("TYPE").arg(key("a")).query(&mut con).expect("TYPE");
        assert_eq!(kind, "string");
        let mut keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query(&mut con).expect("KEYS");
        keys.sort();
        assert_eq!(keys, vec![key("a"), key("b"), key("n"), key("t")]);
        let mut scanned: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{p}*"))
            .arg("COUNT")
            .arg(1)
            .clone()
            .iter(&mut con)
            .expect("SCAN")
            .collect::<Result<_, _>>()
            .expect("SCAN pages");
        scanned.sort();
        assert_eq!(scanned, keys, "SCAN pages through every key with the cursors it gave");
        // A transaction through the crate's atomic pipeline: MULTI ... EXEC.
        let (a, b): (i64, String) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(key("a"))
            .cmd("GET")
            .arg(key("b"))
            .query(&mut con)
            .expect("MULTI/EXEC");
        assert_eq!((a, b.as_str()), (2, "2"));
        // WATCH, a write from another connection, EXEC: aborted (nil).
        let _: () = redis::cmd("WATCH").arg(key("a")).query(&mut con).expect("WATCH");
        let mut other = client.get_connection().expect("second connection");
        let _: () = redis::cmd("SET").arg(key("a")).arg("9").query(&mut other).expect("SET");
        let aborted: Option<(i64,)> =
            redis::pipe().atomic().cmd("INCR").arg(key("a")).query(&mut con).expect("EXEC");
        assert_eq!(aborted, None, "a watched key written since WATCH aborts EXEC");
        let version: (String, i64) = redis::cmd("GETVER").arg(key("a")).query(&mut con).expect("GETVER");
        assert_eq!(version.0, "9");
        let new: i64 =
            redis::cmd("SETVER").arg(key("a")).arg(version.1).arg("10").query(&mut con).expect("SETVER");
        assert!(new > version.1);
        let stale: Option<i64> =
            redis::cmd("SETVER").arg(key("a")).arg(version.1).arg("11").query(&mut con).expect("SETVER");
        assert_eq!(stale, None, "a moved version refuses the write");
        let _: () = redis::cmd("RENAME").arg(key("a")).arg(key("c")).query(&mut con).expect("RENAME");
        let err = redis::cmd("RENAME").arg(key("a")).arg(key("d")).query::<()>(&mut con).expect_err("gone");
        assert!(err.to_string().contains("no such key"), "{err}");
        let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).expect("INFO");
        assert!(info.contains("db0:keys="), "{info}");
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).expect("CLIENT LIST");
        assert!(list.lines().count() >= 2, "both connections listed: {list}");
        let docs: redis::Value =
            redis::cmd("COMMAND").arg("INFO").arg("get").query(&mut con).expect("COMMAND INFO");
        assert!(format!("{docs:?}").contains("get"), "{docs:?}");
    }
    let client = redis::Client::open(format!("redis://{}/", cluster.client_addrs[&leader])).expect("client");
    let mut con = client.get_connection().expect("connect");
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, 8, "n, b, t and c left by each round");
    let _: () = redis::cmd("FLUSHDB").query(&mut con).expect("FLUSHDB");
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, 0);
}

/// Sends `commands` as one pipeline (one write) and reads their replies.
fn pipeline(conn: &mut RespConn, commands: &[&[&str]]) -> Vec<Reply> {
    let mut out = Vec::new();
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        quorumkv::protocol::resp::encode_request(&args, &mut out);
    }
    conn.send_raw(&out);
    commands.iter().map(|_| conn.read().expect("a reply")).collect()
}

// A WATCH pipelined behind the connection's own writes (as auto-pipelining clients send them)
// watches from after those writes, as Redis runs a pipeline in order: its own SET is not a change,
// on the leader or a follower; a change by another client after it still aborts the EXEC.
#[test]
fn a_watch_pipelined_behind_writes_watches_from_after_them() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    for (&id, &addr) in &cluster.client_addrs {
        let mut conn = RespConn::connect(addr, WAIT);
        for i in 0..20 {
            let (k, other) = (format!("w{id}-{i}"), format!("o{id}-{i}"));
            let replies = pipeline(
                &mut conn,
                &[
                    &["SET", &k, "1"],
                    &["SET", &other, "x"],
                    &["WATCH", &k],
                    &["GET", &k],
                    &["MULTI"],
                    &["INCR", &k],
                    &["EXEC"],
                    &["SET", &other, "y"],
                    &["WATCH", &other],
                    &["MULTI"],
                    &["APPEND", &other, "z"],
                    &["EXEC"],
                ],
            );
            let role = if id == leader { "leader" } else { "follower" };
            assert_eq!(replies[3], b("1"), "{role} {id}: the read after the WATCH sees the write before it");
            assert_eq!(
                replies[6],
                Reply::Array(Some(vec![Reply::Integer(2)])),
                "{role} {id}, round {i}: {replies:?}"
            );
            assert_eq!(
                replies[11],
                Reply::Array(Some(vec![Reply::Integer(2)])),
                "{role} {id}, round {i}: {replies:?}"
            );
        }
        // Still a real WATCH: a write by another connection after it aborts the transaction.
        let k = format!("w{id}-changed");
        let replies = pipeline(&mut conn, &[&["SET", &k, "1"], &["WATCH", &k]]);
        assert_eq!(replies[1], Reply::Simple("OK".into()));
        let mut other = RespConn::connect(addr, WAIT);
        assert_eq!(call(&mut other, &["SET", &k, "5"]), Reply::Simple("OK".into()));
        let replies = pipeline(&mut conn, &[&["MULTI"], &["INCR", &k], &["EXEC"]]);
        assert_eq!(replies[2], Reply::Array(None), "changed after the WATCH: aborted");
    }
}

/// (applied index, state digest, keys) of every running replica.
fn views(cluster: &TestCluster) -> Vec<(u64, u64, u64)> {
    cluster
        .status
        .values()
        .map(|s| {
            let info = s.info_text(Some("raft"), 0);
            let field = |name: &str| {
                info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap_or_default().to_string()
            };
            let keys = field("keys").parse().unwrap_or(u64::MAX);
            (s.applied_index(), s.state_digest(), keys)
        })
        .collect()
}

fn call(conn: &mut RespConn, args: &[&str]) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    conn.call(&args)
}

#[test]
fn expired_keys_go_at_the_same_log_position_on_every_replica_across_a_leader_change_and_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |config| config.snapshot_threshold_bytes = 64 * 1024);
    let leader = cluster.wait_for_leader(WAIT);
    let lagging = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    for i in 0..300 {
        let ttl = if i % 3 == 0 { "100000" } else { "400" };
        assert_eq!(call(&mut conn, &["SET", &format!("t{i}"), "v", "PX", ttl]), Reply::ok());
    }
    cluster.stop(lagging);
    // Hand leadership to the other follower while the short keys are still alive.
    let target = *cluster.client_addrs.keys().find(|&&id| id != leader && id != lagging).expect("third");
    assert_eq!(call(&mut conn, &["LEADER", "TRANSFER", &target.to_string()]), Reply::ok());
    let mut conn = RespConn::connect(cluster.client_addrs[&target], WAIT);
    // Enough writes for a snapshot, so the lagging replica catches up by one.
    let value = "x".repeat(1000);
    for i in 0..200 {
        assert_eq!(call(&mut conn, &["SET", &format!("fill{i}"), &value]), Reply::ok());
    }
    // The new leader reclaims the 200 short-lived keys by itself.
    wait_until("the short-lived keys reclaimed", WAIT, || match call(&mut conn, &["DBSIZE"]) {
        Reply::Integer(300) => Ok(()),
        other => Err(other),
    });
    cluster.restart(lagging);
    wait_until("every replica at the same position with the same state", WAIT, || {
        let v = views(&cluster);
        let same = v.windows(2).all(|w| w[0] == w[1]);
        // 100 long-lived keys and 200 fill keys, physically: the expired ones are gone everywhere.
        if v.len() == 3 && same && v[0].2 == 300 {
            Ok(())
        } else {
            Err(v)
        }
    });
    let restarted = &cluster.status[&lagging];
    assert!(restarted.info_text(Some("raft"), 0).contains("snapshot_index:"), "raft section");
    let mut lagging_conn = RespConn::connect(cluster.client_addrs[&lagging], WAIT);
    assert_eq!(call(&mut lagging_conn, &["EXISTS", "t1", "t0"]), Reply::Integer(1), "t0 lives, t1 is gone");
    let Reply::Integer(ttl) = call(&mut lagging_conn, &["PTTL", "t0"]) else { panic!("PTTL") };
    assert!(ttl > 90_000, "the expiry came with the snapshot: {ttl}");
}

/// One client's optimistic increments: WATCH, GET, MULTI, SET, `REQ id seq EXEC`; a TRYAGAIN or a
/// lost outcome retries the same seq, so each success is counted once whatever happened. The
/// client stops only with no outcome unknown: a write answered TRYAGAIN may still be applied
/// later, so its seq is retried until the answer is definite.
fn watch_increments(addr: std::net::SocketAddr, client_id: u64, wanted: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = RespConn::connect(addr, WAIT);
    let mut successes = 0;
    let mut seq = 1;
    let mut unknown = false;
    while unknown || successes < wanted || !stop.load(Ordering::Relaxed) {
        let id = client_id.to_string();
        let s = seq.to_string();
        assert_eq!(call(&mut conn, &["WATCH", "counter"]), Reply::ok());
        let current = match call(&mut conn, &["GET", "counter"]) {
            Reply::Bulk(Some(v)) => String::from_utf8_lossy(&v).parse::<u64>().expect("a number"),
            Reply::Bulk(None) => 0,
            _ => {
                call(&mut conn, &["UNWATCH"]);
                continue;
            }
        };
        assert_eq!(call(&mut conn, &["MULTI"]), Reply::ok());
        let next = (current + 1).to_string();
        assert_eq!(call(&mut conn, &["SET", "counter", &next]), Reply::Simple("QUEUED".into()));
        match call(&mut conn, &["REQ", &id, &s, "EXEC"]) {
            Reply::Array(Some(replies)) => {
                assert_eq!(replies, vec![Reply::ok()]);
                (successes, seq, unknown) = (successes + 1, seq + 1, false);
            }
            // Aborted: a definite outcome, try again with a new seq.
            Reply::Array(None) => (seq, unknown) = (seq + 1, false),
            Reply::Error(e) if e.starts_with("TRYAGAIN") => unknown = true, // the same seq again
            other => panic!("EXEC answered {other:?}"),
        }
    }
    successes
}

/// The same with versions: GETVER, then `REQ id seq SETVER counter version value`.
fn setver_increments(addr: std::net::SocketAddr, client_id: u64, wanted: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = RespConn::connect(addr, WAIT);
    let (mut successes, mut seq, mut unknown) = (0, 1, false);
    while unknown || successes < wanted || !stop.load(Ordering::Relaxed) {
        let (version, current) = match call(&mut conn, &["GETVER", "versioned"]) {
            Reply::Array(Some(pair)) => match pair.as_slice() {
                [Reply::Bulk(Some(v)), Reply::Integer(ver)] => {
                    (*ver as u64, String::from_utf8_lossy(v).parse::<u64>().expect("a number"))
                }
                other => panic!("GETVER answered {other:?}"),
            },
            Reply::Bulk(None) => (0, 0),
            _ => continue,
        };
        let (id, s, ver, next) =
            (client_id.to_string(), seq.to_string(), version.to_string(), (current + 1).to_string());
        match call(&mut conn, &["REQ", &id, &s, "SETVER", "versioned", &ver, &next]) {
            Reply::Integer(_) => (successes, seq, unknown) = (successes + 1, seq + 1, false),
            Reply::Bulk(None) => (seq, unknown) = (seq + 1, false),
            Reply::Error(e) if e.starts_with("TRYAGAIN") => unknown = true,
            other => panic!("SETVER answered {other:?}"),
        }
    }
    successes
}

/// Six clients, each pinned to one replica, half incrementing `counter` by WATCH/MULTI/EXEC and
/// half `versioned` by GETVER/SETVER, until `nemesis` has run its course and each has 15
/// successes; then both counters must equal the successes counted.
fn contend(cluster: &TestCluster, nemesis: impl FnOnce() -> u64 + Send + 'static) -> u64 {
    let addrs: Vec<std::net::SocketAddr> = cluster.client_addrs.values().copied().collect();
    let done = Arc::new(AtomicBool::new(false));
    let faults = {
        let done = done.clone();
        std::thread::spawn(move || {
            let faults = nemesis();
            done.store(true, Ordering::Relaxed);
            faults
        })
    };
    let workers: Vec<_> = (0..6u64)
        .map(|c| {
            let addr = addrs[c as usize % addrs.len()];
            let stop = done.clone();
            std::thread::spawn(move || {
                if c % 2 == 0 {
                    ("watch", watch_increments(addr, 9000 + c, 15, stop))
                } else {
                    ("setver", setver_increments(addr, 9000 + c, 15, stop))
                }
            })
        })
        .collect();
    let results: Vec<(&str, u64)> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
    let faults_done = faults.join().expect("nemesis");
    let total = |kind: &str| results.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n).sum::<u64>();
    let mut conn = RespConn::connect(addrs[0], WAIT);
    // The network may still be settling: a read that cannot be confirmed yet is asked again.
    let mut definite = |args: &[&str]| loop {
        match call(&mut conn, args) {
            Reply::Error(e) if e.starts_with("TRYAGAIN") => continue,
            other => break other,
        }
    };
    assert_eq!(definite(&["GET", "counter"]), Reply::Bulk(Some(total("watch").to_string().into_bytes())));
    let getver = definite(&["GETVER", "versioned"]);
    let Reply::Array(Some(pair)) = getver else { panic!("GETVER answered {getver:?}") };
    assert_eq!(pair[0], Reply::Bulk(Some(total("setver").to_string().into_bytes())));
    faults_done
}

#[test]
fn optimistic_increments_count_exactly_under_contention_and_leader_changes() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    let addrs: Vec<std::net::SocketAddr> = cluster.client_addrs.values().copied().collect();
    let ids: Vec<u64> = cluster.client_addrs.keys().copied().collect();
    let board = cluster.status[&ids[0]].clone();
    // Leadership moves around while the clients contend: each transfer once the clients got
    // some writes through since the last one.
    let moves = contend(&cluster, move || {
        let (mut moves, mut i) = (0, 0);
        let deadline = std::time::Instant::now() + WAIT;
        while moves < 4 && std::time::Instant::now() < deadline {
            let since = board.applied_index();
            wait_until("writes between two transfers", WAIT, || {
                let applied = board.applied_index();
                if applied >= since + 5 {
                    Ok(())
                } else {
                    Err(applied)
                }
            });
            let mut conn = RespConn::connect(addrs[i % addrs.len()], WAIT);
            let target = ids[(i + 1) % ids.len()].to_string();
            if call(&mut conn, &["LEADER", "TRANSFER", &target]) == Reply::ok() {
                moves += 1;
            }
            i += 1;
        }
        moves
    });
    assert_eq!(moves, 4, "leadership moved during the run");
}

#[test]
fn optimistic_increments_count_exactly_under_partitions_on_an_unreliable_network() {
    let seed = common::kv_suite::seed("optimistic_increments_under_partitions");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::unreliable(), |_| {});
    cluster.wait_for_leader(WAIT);
    let net = cluster.net().clone();
    let ids: Vec<u64> = cluster.client_addrs.keys().copied().collect();
    let boards = cluster.status.clone();
    // One replica at a time cut off from the other two until they have applied 5-14 more
    // entries without it, then healed until it has caught up; its pinned clients get -TRYAGAIN
    // meanwhile and retry the same REQ seq.
    let cuts = contend(&cluster, move || {
        let mut rng = quorumkv::protocol::rng::Rng::new(seed);
        let mut cuts = 0;
        while cuts < 6 {
            let alone = ids[rng.range(0, ids.len() as u64) as usize];
            let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != alone).collect();
            let majority = boards[&rest[0]].clone();
            let (since, more) = (majority.applied_index(), 5 + rng.range(0, 10));
            net.partition(&[vec![alone], rest]);
            cuts += 1;
            wait_until("the majority to go on without the cut-off replica", WAIT, || {
                let applied = majority.applied_index();
                if applied >= since + more {
                    Ok(())
                } else {
                    Err(applied)
                }
            });
            net.heal();
            let target = majority.applied_index();
            wait_until("the healed replica to catch up", WAIT, || {
                let applied = boards[&alone].applied_index();
                if applied >= target {
                    Ok(())
                } else {
                    Err(applied)
                }
            });
        }
        net.heal();
        cuts
    });
    assert_eq!(cuts, 6, "seed {seed}: the network was partitioned");
}

/// Bulk reply of `s`.
fn b(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

#[test]
fn every_dialect_command_answers_as_redis_does_on_a_follower() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let nil = Reply::Bulk(None);
    let int = Reply::Integer;
    let arr = |items: Vec<Reply>| Reply::Array(Some(items));
    let err = |line: &str| Reply::Error(line.to_string());
    let cases: Vec<(&[&str], Reply)> = vec![
        (&["SETNX", "s", "1"], int(1)),
        (&["SETNX", "s", "2"], int(0)),
        (&["GETSET", "s", "3"], b("1")),
        (&["SETEX", "e", "100", "v"], Reply::ok()),
        (&["TTL", "e"], int(100)),
        (&["PSETEX", "p", "100000", "v"], Reply::ok()),
        (&["PERSIST", "p"], int(1)),
        (&["PTTL", "p"], int(-1)),
        (&["PTTL", "nope"], int(-2)),
        (&["EXPIRE", "p", "100", "XX"], int(0)),
        (&["EXPIRE", "p", "100", "NX"], int(1)),
        (&["EXPIRE", "p", "50", "LT"], int(1)),
        (&["EXPIRE", "p", "500", "LT"], int(0)),
        (&["PEXPIREAT", "p", "32503680000000"], int(1)), // year 3000
        (&["EXPIRETIME", "p"], int(32_503_680_000)),
        (&["PEXPIRETIME", "p"], int(32_503_680_000_000)),
        (&["EXPIREAT", "p", "1"], int(1)), // in the past: the key goes at once
        (&["EXISTS", "p"], int(0)),
        (&["GETEX", "e", "PERSIST"], b("v")),
        (&["TTL", "e"], int(-1)),
        (&["GETEX", "e", "PX", "100000"], b("v")),
        (&["GETEX", "e", "EX", "0", "EX", "100"], b("v")), // repeated: the last counts
        (&["EXPIRE", "e", "50", "GT"], int(0)),            // 100 s left, not 0
        (&["EXPIRE", "e", "100000", "GT"], int(1)),
        (&["EXPIRE", "e", "-9223372036854775808"], err("ERR invalid expire time in 'expire' command")),
        (&["EXISTS", "e"], int(1)),
        (&["GETDEL", "e"], b("v")),
        (&["GETDEL", "e"], nil.clone()),
        (&["MSETNX", "m1", "a", "m2", "b"], int(1)),
        (&["MSETNX", "m2", "x", "m3", "y"], int(0)),
        (&["STRLEN", "m1"], int(1)),
        (&["SET", "r", "Hello World"], Reply::ok()),
        (&["GETRANGE", "r", "-5", "-1"], b("World")),
        (&["SETRANGE", "r", "6", "Redis"], int(11)),
        (&["GET", "r"], b("Hello Redis")),
        (&["SET", "f", "10.50"], Reply::ok()),
        (&["INCRBYFLOAT", "f", "0.1"], b("10.6")),
        (&["INCRBYFLOAT", "f", "-5"], b("5.6")),
        (&["INCRBY", "i", "5"], int(5)),
        (&["DECRBY", "i", "7"], int(-2)),
        (&["INCR", "f"], err("ERR value is not an integer or out of range")),
        (&["RENAMENX", "m1", "m2"], int(0)),
        (&["RENAMENX", "m1", "m9"], int(1)),
        (&["TOUCH", "m9", "m2", "none"], int(2)),
        (&["UNLINK", "m9", "m2"], int(2)),
        (&["SET", "k", "v", "XX"], nil.clone()),
        (&["SET", "k", "v", "NX", "GET"], nil.clone()),
        (&["SET", "k", "w", "XX", "GET", "KEEPTTL"], b("v")),
        (&["SET", "k", "v", "EX", "10", "PX", "5"], err("ERR syntax error")),
        (
            &["EXPIRE", "k", "10", "GT", "LT"],
            err("ERR GT and LT options at the same time are not compatible"),
        ),
        (&["EXEC"], err("ERR EXEC without MULTI")),
        (&["DISCARD"], err("ERR DISCARD without MULTI")),
        (&["MULTI"], Reply::ok()),
        (&["MULTI"], err("ERR MULTI calls can not be nested")),
        (&["INCR", "tx"], Reply::Simple("QUEUED".into())),
        (&["DISCARD"], Reply::ok()),
        (&["EXISTS", "tx"], int(0)),
        (&["MULTI"], Reply::ok()),
        (&["SET", "tx", "1"], Reply::Simple("QUEUED".into())),
        (&["INCRBY", "tx", "x"], Reply::Simple("QUEUED".into())),
        (&["PING"], Reply::Simple("QUEUED".into())),
        (&["INCR", "tx"], Reply::Simple("QUEUED".into())),
        (
            &["EXEC"],
            arr(vec![
                Reply::ok(),
                err("ERR value is not an integer or out of range"),
                Reply::Simple("PONG".into()),
                int(2),
            ]),
        ),
        (&["DEL", "tx"], int(1)),
        (&["MULTI"], Reply::ok()),
        (&["GET"], err("ERR wrong number of arguments for 'get' command")),
        (&["EXEC"], err("EXECABORT Transaction discarded because of previous errors.")),
        (&["MULTI"], Reply::ok()),
        (&["SET", "tx", "1"], Reply::Simple("QUEUED".into())),
        (
            &["EXEC", "now"],
            err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"),
        ),
        (&["EXEC"], err("ERR EXEC without MULTI")),
        (&["EXISTS", "tx"], int(0)),
        (&["SELECT", "0"], Reply::ok()),
        (&["ECHO", "hi"], b("hi")),
        (&["HELLO", "3"], err("NOPROTO unsupported protocol version")),
        (&["CLIENT", "SETNAME", "tester"], Reply::ok()),
        (&["CLIENT", "GETNAME"], b("tester")),
        // Naming the connection inside MULTI waits for EXEC: dropped with DISCARD or a WATCH abort.
        (&["MULTI"], Reply::ok()),
        (&["CLIENT", "SETNAME", "discarded"], Reply::Simple("QUEUED".into())),
        (&["DISCARD"], Reply::ok()),
        (&["CLIENT", "GETNAME"], b("tester")),
        (&["MULTI"], Reply::ok()),
        (&["CLIENT", "SETNAME", "ran"], Reply::Simple("QUEUED".into())),
        (&["SET", "named", "1"], Reply::Simple("QUEUED".into())),
        (&["EXEC"], arr(vec![Reply::ok(), Reply::ok()])),
        (&["CLIENT", "GETNAME"], b("ran")),
        (&["MULTI"], Reply::ok()),
        (&["CLIENT", "SETNAME", "alone"], Reply::Simple("QUEUED".into())),
        (&["EXEC"], arr(vec![Reply::ok()])),
        (&["CLIENT", "GETNAME"], b("alone")),
        (&["CLIENT", "SETNAME", "tester"], Reply::ok()),
        (&["CONFIG", "GET", "databases"], arr(vec![b("databases"), b("1")])),
        (&["TYPE", "r"], Reply::Simple("string".into())),
        (&["FLUSHALL", "ASYNC", "SYNC"], err("ERR syntax error")),
        (&["CLIENT", "HELP", "x"], err("ERR wrong number of arguments for 'client|help' command")),
        (&["CONFIG", "NOPE"], err("ERR unknown subcommand 'NOPE'. Try CONFIG HELP.")),
        (&["FLUSHALL"], Reply::ok()),
        (&["DBSIZE"], int(0)),
        (&["RANDOMKEY"], nil.clone()),
        (&["SET", "only", "v"], Reply::ok()),
        (&["RANDOMKEY"], b("only")),
    ];
    for (args, want) in cases {
        assert_eq!(call(&mut conn, args), want, "{args:?}");
    }
    let Reply::Array(Some(time)) = call(&mut conn, &["TIME"]) else { panic!("TIME") };
    assert_eq!(time.len(), 2);
    let Reply::Integer(id) = call(&mut conn, &["CLIENT", "ID"]) else { panic!("CLIENT ID") };
    let Reply::Bulk(Some(info)) = call(&mut conn, &["CLIENT", "INFO"]) else { panic!("CLIENT INFO") };
    assert!(String::from_utf8_lossy(&info).starts_with(&format!("id={id} ")), "{info:?}");
    // HELLO names the connection when asked, and says who it is.
    let Reply::Array(Some(hello)) = call(&mut conn, &["HELLO", "2", "SETNAME", "greeted"]) else {
        panic!("HELLO")
    };
    let field = |name: &str| hello.chunks(2).find(|pair| pair[0] == b(name)).map(|pair| pair[1].clone());
    assert_eq!(field("id"), Some(Reply::Integer(id)));
    assert_eq!(field("proto"), Some(Reply::Integer(2)));
    assert_eq!(field("role"), Some(b("master")), "every replica takes writes");
    assert_eq!(call(&mut conn, &["CLIENT", "GETNAME"]), b("greeted"));
    assert_eq!(
        call(&mut conn, &["HELLO", "2", "FOO"]),
        Reply::Error("ERR Syntax error in HELLO option 'FOO'".into())
    );
}

// SNAPSHOT BEGIN/CHUNK/END on a follower: the image comes in chunks of at most 1 MiB, matches
// its checksum and restores to the state the follower shows; at most two are held at once; an
// unknown token is refused; SNAPSHOT cannot be queued in MULTI.
#[test]
fn snapshot_downloads_are_chunked_bounded_and_match_the_state() {
    const CHUNK: usize = 1024 * 1024;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let big = "x".repeat(CHUNK);
    for k in ["b1", "b2", "b3"] {
        assert_eq!(call(&mut conn, &["SET", k, &big]), Reply::ok());
    }
    assert_eq!(call(&mut conn, &["SET", "small", "v", "PX", "600000"]), Reply::ok());
    let Reply::Array(Some(begun)) = call(&mut conn, &["SNAPSHOT", "BEGIN"]) else { panic!("BEGIN") };
    let int = |r: &Reply| match r {
        Reply::Integer(n) => *n as u64,
        other => panic!("a number, not {other:?}"),
    };
    let (token, index, size, crc, keys) =
        (int(&begun[0]), int(&begun[1]), int(&begun[3]), int(&begun[4]) as u32, int(&begun[5]));
    assert_eq!(keys, 4);
    assert!(size as usize > 3 * CHUNK, "the image holds the values: {size}");
    let (t, mut image) = (token.to_string(), Vec::new());
    while (image.len() as u64) < size {
        let at = image.len().to_string();
        let Reply::Bulk(Some(chunk)) = call(&mut conn, &["SNAPSHOT", "CHUNK", &t, &at]) else {
            panic!("CHUNK")
        };
        assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "bounded chunk: {}", chunk.len());
        image.extend_from_slice(&chunk);
    }
    assert_eq!(image.len() as u64, size);
    assert_eq!(crc32fast::hash(&image), crc, "the checksum BEGIN gave");
    let state = quorumkv::storage::StateMachine::restore(&image).expect("a valid image");
    assert_eq!(state.applied_index(), index);
    let shown = cluster.status[&follower].state_digest();
    assert_eq!(
        format!("{:016x}", state.engine().digest()),
        String::from_utf8_lossy(match &begun[6] {
            Reply::Bulk(Some(d)) => d,
            other => panic!("digest {other:?}"),
        })
    );
    assert_eq!(state.engine().digest(), shown, "no write since: the follower's own digest");

    let Reply::Array(Some(second)) = call(&mut conn, &["SNAPSHOT", "BEGIN"]) else { panic!("second BEGIN") };
    let third = call(&mut conn, &["SNAPSHOT", "BEGIN"]);
    assert!(matches!(&third, Reply::Error(e) if e.contains("too many snapshots")), "{third:?}");
    assert_eq!(call(&mut conn, &["SNAPSHOT", "END", &t]), Reply::ok());
    let gone = call(&mut conn, &["SNAPSHOT", "CHUNK", &t, "0"]);
    assert!(matches!(&gone, Reply::Error(e) if e.contains("no such snapshot")), "{gone:?}");
    let again = call(&mut conn, &["SNAPSHOT", "END", &t]);
    assert!(matches!(&again, Reply::Error(e) if e.contains("no such snapshot")), "{again:?}");
    assert_eq!(call(&mut conn, &["SNAPSHOT", "END", &int(&second[0]).to_string()]), Reply::ok());
    let unknown = call(&mut conn, &["SNAPSHOT", "NOPE"]);
    assert!(matches!(&unknown, Reply::Error(e) if e.contains("unknown subcommand")), "{unknown:?}");

    assert_eq!(call(&mut conn, &["MULTI"]), Reply::ok());
    let queued = call(&mut conn, &["SNAPSHOT", "BEGIN"]);
    assert!(matches!(&queued, Reply::Error(e) if e.contains("cannot be queued")), "{queued:?}");
    let exec = call(&mut conn, &["EXEC"]);
    assert!(matches!(&exec, Reply::Error(e) if e.starts_with("EXECABORT")), "{exec:?}");
}

/// Commands the random run draws from: the whole dialect but the ones that change who is a
/// member or end the connection (tested on their own), whatever their arguments.
const RANDOM_COMMANDS: &str =
    "GET SET APPEND DEL EXISTS PING ECHO INFO DBSIZE DECR DECRBY INCR INCRBY INCRBYFLOAT EXPIRE \
     EXPIREAT EXPIRETIME PEXPIRE PEXPIREAT PEXPIRETIME PERSIST TTL PTTL TYPE TOUCH UNLINK GETDEL \
     GETEX GETRANGE GETSET SETRANGE STRLEN MGET MSET MSETNX SETNX SETEX PSETEX RENAME RENAMENX \
     KEYS SCAN RANDOMKEY FLUSHDB SELECT TIME MULTI EXEC DISCARD WATCH UNWATCH GETVER SETVER REQ \
     COMMAND CONFIG HELLO RAWGET RAWPUT RAWDELETE RAWSCAN NOSUCH";

/// Arguments at the edges of what the commands parse, separated by `|`: numbers around the
/// integer limits, floats that are not finite, glob patterns, options, empty and binary strings.
const RANDOM_WORDS: &str = "|0|1|-1|2|10|-100|9223372036854775807|-9223372036854775808|\
     9223372036854775808|18446744073709551615|99999999999999999999999|1e308|-1e308|inf|-inf|nan|\
     1.5|-0|0x10| 1|abc|*|?|[|[a-|\\|a*|*a*a*a*a*a*a*a*a*a*a*a*a*a*b|k1|k2|k3|k1|k2|EX|PX|EXAT|\
     PXAT|NX|XX|GET|KEEPTTL|PERSIST|MATCH|COUNT|TYPE|string|default|write|lock|\u{0}|536870911|\
     536870912|4294967296|1000000000000|3";

#[test]
fn random_commands_with_edge_arguments_leave_every_replica_serving_and_in_agreement() {
    let seed = common::kv_suite::seed("random_commands");
    let mut rng = quorumkv::protocol::rng::Rng::new(seed);
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    // One connection to each replica: writes sent to followers are forwarded to the leader.
    let mut conns: Vec<RespConn> =
        cluster.client_addrs.values().map(|&a| RespConn::connect(a, WAIT)).collect();
    let commands_list: Vec<&str> = RANDOM_COMMANDS.split_whitespace().collect();
    let words: Vec<&str> = RANDOM_WORDS.split('|').collect();
    let pick = |rng: &mut quorumkv::protocol::rng::Rng, from: &[&str]| -> String {
        from[rng.range(0, from.len() as u64) as usize].to_string()
    };
    let commands = if common::kv_suite::long_mode() { 50_000 } else { 3_000 };
    let mut errors = 0;
    for i in 0..commands {
        let conn = rng.range(0, conns.len() as u64) as usize;
        let command = pick(&mut rng, &commands_list);
        // Transactions need their commands bare to get anywhere; the rest mostly name a key.
        let bare = ["MULTI", "EXEC", "DISCARD"].contains(&command.as_str()) && rng.chance(0.8);
        let count = if bare { 0 } else { [0, 1, 1, 2, 2, 3, 4, 5, 8][rng.range(0, 9) as usize] };
        let mut args = vec![command];
        for n in 0..count {
            args.push(if n == 0 && rng.chance(0.6) {
                pick(&mut rng, &["k1", "k2", "k3"])
            } else if rng.chance(0.9) {
                pick(&mut rng, &words)
            } else {
                (rng.next_u64() as i64).to_string()
            });
        }
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        conns[conn].send(&bytes);
        match conns[conn].read() {
            Some(Reply::Error(_)) => errors += 1,
            Some(_) => {}
            None => panic!("seed {seed}: command {i} {args:?} got no reply"),
        }
    }
    println!("random_commands: {commands} commands, {errors} answered with an error");
    // Every replica still serves, a write from each and a read of all of them from each.
    for (n, conn) in conns.iter_mut().enumerate() {
        call(conn, &["DISCARD"]);
        assert_eq!(
            call(conn, &["SET", &format!("after-{n}"), "ok"]),
            Reply::ok(),
            "seed {seed}: replica {n}"
        );
    }
    for conn in &mut conns {
        for n in 0..3 {
            assert_eq!(call(conn, &["GET", &format!("after-{n}")]), b("ok"), "seed {seed}");
        }
    }
    common::kv_suite::check_replicas_agree(&cluster, seed);
}
