//! Any replica serves any client (PRODUCT.md): followers forward writes and admin requests to
//! the leader and serve linearizable reads after confirming a read index with it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::resp_conn::RespConn;
use common::wait_until;
use quorumkv::actors::sim_network::SimFaults;
use quorumkv::protocol::resp::Reply;

const WAIT: Duration = Duration::from_secs(10);

fn is_err(reply: &Reply, code: &str) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(code))
}

fn bulk(value: &str) -> Reply {
    Reply::Bulk(Some(value.as_bytes().to_vec()))
}

fn followers(cluster: &TestCluster, leader: u64) -> Vec<u64> {
    cluster.client_addrs.keys().copied().filter(|&id| id != leader).collect()
}

#[test]
fn every_command_works_on_every_follower_through_the_redis_crate() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let followers = followers(&cluster, leader);
    for (n, &id) in followers.iter().enumerate() {
        let url = format!("redis://{}/", cluster.client_addrs[&id]);
        let client = redis::Client::open(url).expect("client");
        let mut con = client.get_connection().expect("connect to a follower");
        let key = format!("k{n}");
        let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut con).expect("SET on a follower");
        let v: String = redis::cmd("GET").arg(&key).query(&mut con).expect("GET on a follower");
        assert_eq!(v, "v");
        let len: i64 = redis::cmd("APPEND").arg(&key).arg("w").query(&mut con).expect("APPEND");
        assert_eq!(len, 2);
        let exists: i64 = redis::cmd("EXISTS").arg(&key).arg("nope").query(&mut con).expect("EXISTS");
        assert_eq!(exists, 1);
        let _: () = redis::cmd("RAWPUT").arg("lock").arg("l").arg("x").query(&mut con).expect("RAWPUT");
        let raw: String = redis::cmd("RAWGET").arg("lock").arg("l").query(&mut con).expect("RAWGET");
        assert_eq!(raw, "x");
        let scan: Vec<String> =
            redis::cmd("RAWSCAN").arg("lock").arg("").arg(10).query(&mut con).expect("RAWSCAN");
        assert_eq!(scan, vec!["l".to_string(), "x".to_string()]);
        let gone: i64 = redis::cmd("RAWDELETE").arg("lock").arg("l").query(&mut con).expect("RAWDELETE");
        assert_eq!(gone, 1);
        // Exactly-once sessions pass through forwarding: a repeat answers the remembered reply.
        let first: i64 = redis::cmd("REQ")
            .arg(77 + n)
            .arg(1)
            .arg("APPEND")
            .arg(&key)
            .arg("z")
            .query(&mut con)
            .expect("REQ");
        let again: i64 = redis::cmd("REQ")
            .arg(77 + n)
            .arg(1)
            .arg("APPEND")
            .arg(&key)
            .arg("z")
            .query(&mut con)
            .expect("REQ");
        assert_eq!((first, again), (3, 3), "a repeated REQ applied twice");
        let members: Vec<String> = redis::cmd("MEMBER").arg("LIST").query(&mut con).expect("MEMBER LIST");
        assert_eq!(members.len(), 3);
        let info: String = redis::cmd("INFO").query(&mut con).expect("INFO");
        assert!(info.contains("role:follower"), "{info}");
        // Pipelined forwarded writes answer in order.
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("APPEND").arg(format!("seq{n}")).arg(format!("{i},"));
        }
        let lens: Vec<i64> = pipe.query(&mut con).expect("pipeline");
        assert!(lens.windows(2).all(|w| w[0] < w[1]), "replies out of order: {lens:?}");
        let deleted: i64 = redis::cmd("DEL").arg(&key).arg(format!("seq{n}")).query(&mut con).expect("DEL");
        assert_eq!(deleted, 2);
    }
    // Linearizable across replicas: a write acknowledged by one follower is read by the other.
    let mut a = RespConn::connect(cluster.client_addrs[&followers[0]], WAIT);
    let mut b = RespConn::connect(cluster.client_addrs[&followers[1]], WAIT);
    for i in 0..20 {
        let value = format!("v{i}");
        assert_eq!(a.call(&[b"SET", b"shared", value.as_bytes()]), Reply::Simple("OK".into()));
        assert_eq!(
            b.call(&[b"GET", b"shared"]),
            bulk(&value),
            "a follower read missed an acknowledged write"
        );
    }
}

#[test]
fn membership_commands_work_on_a_follower() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    // A new leader takes no membership change until it has applied its own no-op (Raft §4.1,
    // refused "in progress"); a write acknowledged here was committed after that no-op and
    // handed to the leader's state machine before the leader could read our next request.
    assert_eq!(conn.call(&[b"SET", b"settled", b"1"]), Reply::Simple("OK".into()));
    // A learner that never runs: added and removed through the follower.
    let reply = conn.call(&[b"MEMBER", b"ADD", b"9", b"127.0.0.1:1", b"127.0.0.1:2"]);
    assert_eq!(reply, Reply::Simple("OK".into()));
    // Answered once this follower has applied the change: its own list shows the learner.
    let Reply::Array(Some(members)) = conn.call(&[b"MEMBER", b"LIST"]) else { panic!("MEMBER LIST") };
    assert!(
        members.iter().any(|m| matches!(m, Reply::Bulk(Some(line)) if line.starts_with(b"9 "))),
        "{members:?}"
    );
    assert_eq!(conn.call(&[b"MEMBER", b"REMOVE", b"9"]), Reply::Simple("OK".into()));
    let reply = conn.call(&[b"MEMBER", b"PROMOTE", b"42"]);
    assert!(is_err(&reply, "ERR"), "{reply:?}");
    // Leadership moves to this follower at its own request.
    let id = follower.to_string();
    assert_eq!(conn.call(&[b"LEADER", b"TRANSFER", id.as_bytes()]), Reply::Simple("OK".into()));
    wait_until("the follower leading", WAIT, || {
        if cluster.status[&follower].is_leader() {
            Ok(())
        } else {
            Err(cluster.status[&follower].role_name())
        }
    });
}

#[test]
fn no_forward_keeps_redirecting() {
    let cluster = TestCluster::start_with(3, |c| c.forward = false);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let reply = conn.call(&[b"SET", b"a", b"1"]);
    assert_eq!(reply, Reply::Error(format!("NOTLEADER {}", cluster.client_addrs[&leader])));
    let reply = conn.call(&[b"GET", b"a"]);
    assert!(is_err(&reply, "NOTLEADER"), "{reply:?}");
    let reply = conn.call(&[b"MEMBER", b"REMOVE", b"3"]);
    assert!(is_err(&reply, "NOTLEADER"), "{reply:?}");
    assert_eq!(conn.call(&[b"PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn with_no_leader_known_the_answer_is_tryagain_at_once() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let survivor = followers(&cluster, leader)[0];
    for id in cluster.running() {
        if id != survivor {
            cluster.stop(id);
        }
    }
    let status = cluster.status[&survivor].clone();
    wait_until("the survivor to lose its leader", WAIT, || {
        if status.leader() == 0 {
            Ok(())
        } else {
            Err(status.leader())
        }
    });
    let mut conn = RespConn::connect(cluster.client_addrs[&survivor], WAIT);
    for command in [&[b"SET".as_slice(), b"k", b"v"][..], &[b"GET", b"k"], &[b"MEMBER", b"REMOVE", b"1"]] {
        let started = Instant::now();
        let reply = conn.call(command);
        if status.leader() != 0 {
            continue; // a leader appeared meanwhile (it cannot: no majority), nothing to judge
        }
        assert_eq!(reply, Reply::Error("TRYAGAIN no leader".into()), "{command:?}");
        // Not the full request timeout (2 s here): the answer needs no one else.
        assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
    }
}

/// The race the design makes impossible: the leader's answer to a forwarded write is held back
/// until the follower has applied the entry; the client still gets that entry's own reply.
#[test]
fn a_forwarded_write_applied_before_its_answer_arrives_gets_its_own_reply() {
    let seed = common::kv_suite::seed("forwarded write applied first");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |c| c.seed = Some(seed));
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let status = cluster.status[&follower].clone();
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    assert_eq!(conn.call(&[b"SET", b"k", b"ab"]), Reply::Simple("OK".into()));
    for round in 0..3 {
        let before = status.applied_index();
        cluster.net().hold_forward_answers();
        conn.send(&[b"APPEND", b"k", b"cd"]);
        // The entry reaches the follower through replication while its answer is held.
        wait_until("the follower applying the forwarded entry", WAIT, || {
            let applied = status.applied_index();
            if applied > before {
                Ok(())
            } else {
                Err(applied)
            }
        });
        assert_eq!(cluster.net().release_forward_answers(), 1, "round {round}: one answer was held");
        let expected = 2 + 2 * (round + 1);
        assert_eq!(conn.read(), Some(Reply::Integer(expected)), "seed {seed} round {round}");
    }
    assert_eq!(conn.call(&[b"GET", b"k"]), bulk("abcdcdcd"));
}

/// A pipeline of appends on a follower whose frames the network delays each by its own 0-2 ms
/// (so a later forward often overtakes an earlier one): the appends answered took effect in the
/// order sent (their lengths grow, and the value holds them in that order); one overtaken on
/// the way was refused with nothing appended. (TCP keeps a link's frames in order: there, only
/// a reconnecting link's old and new connections can race.)
#[test]
fn pipelined_forwarded_writes_take_effect_in_the_order_sent_when_frames_overtake_each_other() {
    let seed = common::kv_suite::seed("pipelined forwards overtaking");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |c| c.seed = Some(seed));
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let (mut expected, mut refused) = (Vec::new(), 0);
    for round in 0..10 {
        let mut pipeline = Vec::new();
        for i in 0..50 {
            let part = format!("{round}.{i},");
            quorumkv::protocol::resp::encode_request(
                &[&b"APPEND"[..], b"seq", part.as_bytes()],
                &mut pipeline,
            );
        }
        conn.send_raw(&pipeline);
        for i in 0..50 {
            let part = format!("{round}.{i},");
            match conn.read() {
                Some(Reply::Integer(len)) => {
                    expected.push(part.clone());
                    assert_eq!(len as usize, expected.concat().len(), "seed {seed}: {part} out of order");
                }
                Some(Reply::Error(e)) if e.starts_with("TRYAGAIN replica busy") => refused += 1,
                other => panic!("seed {seed}: {part}: {other:?}"),
            }
        }
    }
    assert_eq!(conn.call(&[b"GET", b"seq"]), bulk(&expected.concat()), "seed {seed}");
    println!("{} appends answered in order, {refused} refused as overtaken", expected.len());
    // Taken and refused both: the frames did overtake each other, and not every append was lost.
    assert!(refused > 0 && expected.len() >= 100, "seed {seed}: {} taken, {refused} refused", expected.len());
}

/// Sends `requests` as one pipeline on `conn`, then waits until the leader has appended an entry
/// (the pipeline's write) and the follower's index `at` (its applied or commit index) reaches it.
fn send_until_the_write_reaches(
    cluster: &TestCluster,
    leader: u64,
    conn: &mut RespConn,
    requests: &[&[&[u8]]],
    what: &str,
    at: impl Fn() -> u64,
) {
    let on_leader = cluster.status[&leader].clone();
    let before = on_leader.last_log_index();
    let mut pipeline = Vec::new();
    for args in requests {
        quorumkv::protocol::resp::encode_request(args, &mut pipeline);
    }
    conn.send_raw(&pipeline);
    let mut appended = before;
    wait_until("the leader appending the forwarded write", WAIT, || {
        appended = on_leader.last_log_index();
        if appended > before {
            Ok(())
        } else {
            Err(appended)
        }
    });
    wait_until(&format!("the follower's {what} index reaching the forwarded write"), WAIT, || {
        let reached = at();
        if reached >= appended {
            Ok(())
        } else {
            Err(reached)
        }
    });
}

/// A pipelined `SET` then `GET` on a follower: the read starts at once, and with the leader's
/// answer giving the write its index held back it is not served at its read index alone (below
/// the write's): it waits for that answer, then sees the write.
#[test]
fn a_read_pipelined_behind_a_forwarded_write_waits_for_the_writes_index() {
    let seed = common::kv_suite::seed("read behind a forwarded write");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |c| c.seed = Some(seed));
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let status = cluster.status[&follower].clone();
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let mut answered = 0;
    for round in 0..10 {
        let key = format!("k{round}").into_bytes();
        assert_eq!(conn.call(&[b"SET", &key, b"old"]), Reply::Simple("OK".into()));
        cluster.net().hold_write_answers();
        // The write's entry reaches the follower through replication while its answer is held;
        // the read's own index came back meanwhile (answers to reads are not held).
        let pipeline: [&[&[u8]]; 2] = [&[b"SET", &key, b"new"], &[b"GET", &key]];
        send_until_the_write_reaches(&cluster, leader, &mut conn, &pipeline, "applied", || {
            status.applied_index()
        });
        assert_eq!(cluster.net().release_forward_answers(), 1, "seed {seed} round {round}: one answer held");
        // Held past the follower's patience (a loaded machine), the write is given up: its
        // client is told, and the read need not see it.
        match conn.read().expect("SET") {
            reply if reply == Reply::Simple("OK".into()) => {
                assert_eq!(
                    conn.read(),
                    Some(bulk("new")),
                    "seed {seed} round {round}: the GET behind the SET"
                );
                answered += 1;
            }
            reply => {
                assert!(is_err(&reply, "TRYAGAIN"), "seed {seed} round {round}: SET: {reply:?}");
                assert!(matches!(conn.read(), Some(Reply::Bulk(Some(_)))), "seed {seed} round {round}: GET");
            }
        }
    }
    assert!(answered > 0, "seed {seed}: no SET was answered");
}

/// A pipelined `GET` then `SET` on a follower: the write starts at once, yet its entry, committed
/// and on the follower while the leader's answers (to the read and to the write) are held back,
/// is not applied there before the read is served: the read never sees the write behind it.
#[test]
fn a_write_pipelined_behind_a_read_on_a_follower_is_not_applied_before_the_read_is_served() {
    let seed = common::kv_suite::seed("write behind a forwarded read");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |c| c.seed = Some(seed));
    let leader = cluster.wait_for_leader(WAIT);
    let follower = followers(&cluster, leader)[0];
    let status = cluster.status[&follower].clone();
    let mut conn = RespConn::connect(cluster.client_addrs[&follower], WAIT);
    let mut served = 0;
    for round in 0..10 {
        let key = format!("k{round}").into_bytes();
        assert_eq!(conn.call(&[b"SET", &key, b"old"]), Reply::Simple("OK".into()));
        cluster.net().hold_forward_answers();
        let pipeline: [&[&[u8]]; 2] = [&[b"GET", &key], &[b"SET", &key, b"new"]];
        send_until_the_write_reaches(&cluster, leader, &mut conn, &pipeline, "committed", || {
            status.commit_index()
        });
        // The write's answer left as the leader appended it; the read's may leave only after
        // its round, and so after the hold.
        let held = cluster.net().release_forward_answers();
        assert!((1..=2).contains(&held), "seed {seed} round {round}: {held} answers held");
        // The simulated links reorder: should the read-index request reach the leader after
        // the write, the follower refuses the read rather than serve it past the write (and
        // held past its patience, a loaded machine, it gives the read up).
        match conn.read().expect("GET") {
            reply if reply == bulk("old") => served += 1,
            reply => {
                use quorumkv::protocol::forwarding::{INDEX_PAST_WRITE, ORDER_TIMED_OUT};
                let why =
                    [INDEX_PAST_WRITE, ORDER_TIMED_OUT].map(|why| Reply::Error(format!("TRYAGAIN {why}")));
                assert!(why.contains(&reply), "seed {seed} round {round}: the GET: {reply:?}")
            }
        }
        assert_eq!(conn.read(), Some(Reply::Simple("OK".into())), "seed {seed} round {round}: SET");
        assert_eq!(conn.call(&[b"GET", &key]), bulk("new"), "seed {seed} round {round}");
    }
    assert!(served > 0, "seed {seed}: no GET was served before its SET");
}

/// A follower cut off from the leader never serves a stale read; the majority goes on.
#[test]
fn a_cut_off_follower_answers_tryagain_never_a_stale_read() {
    let seed = common::kv_suite::seed("cut-off follower");
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), move |c| c.seed = Some(seed));
    let leader = cluster.wait_for_leader(WAIT);
    let [cut_off, other] = followers(&cluster, leader)[..] else { panic!("two followers") };
    let mut minority = RespConn::connect(cluster.client_addrs[&cut_off], WAIT);
    let mut majority = RespConn::connect(cluster.client_addrs[&other], WAIT);
    assert_eq!(majority.call(&[b"SET", b"k", b"old"]), Reply::Simple("OK".into()));
    assert_eq!(minority.call(&[b"GET", b"k"]), bulk("old"));
    cluster.net().partition(&[vec![cut_off], vec![leader, other]]);
    assert_eq!(majority.call(&[b"SET", b"k", b"new"]), Reply::Simple("OK".into()));
    for _ in 0..3 {
        let started = Instant::now();
        let reply = minority.call(&[b"GET", b"k"]);
        assert!(is_err(&reply, "TRYAGAIN"), "seed {seed}: the cut-off follower answered {reply:?}");
        // Within the request timeout (2 s here), with room for a loaded machine.
        assert!(started.elapsed() < Duration::from_millis(3000), "took {:?}", started.elapsed());
        let reply = minority.call(&[b"SET", b"k", b"lost"]);
        assert!(is_err(&reply, "TRYAGAIN"), "seed {seed}: the cut-off follower answered {reply:?}");
        // The majority side serves every read and write meanwhile.
        assert_eq!(majority.call(&[b"GET", b"k"]), bulk("new"), "seed {seed}");
    }
    cluster.net().heal();
    wait_until("the healed follower serving again", WAIT, || match minority.call(&[b"GET", b"k"]) {
        reply if reply == bulk("new") => Ok(()),
        reply => Err(reply),
    });
}
