//! A replica's client port: RESP compatibility, limits and bad input, and the minority rule.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::resp_conn::RespConn;
use quorumkv::actors::peer_listener::MAX_PENDING_HANDSHAKES_PER_ADDR;
use quorumkv::protocol::command::{encode_entry, ColumnFamily, Command, Proposal, MAX_ENTRY_BYTES};
use quorumkv::protocol::peer_wire::{
    encode_frame, Forwarded, Handshake, PeerFrame, MAX_FRAME_BYTES, PEER_PROTOCOL_VERSION,
};
use quorumkv::protocol::resp::Reply;

const WAIT: Duration = Duration::from_secs(10);

fn is_err(reply: &Reply, code: &str) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(code))
}

/// A refusal a change of leader can bring: try again, or go to the leader.
fn is_refusal(reply: &Reply) -> bool {
    is_err(reply, "TRYAGAIN") || is_err(reply, "NOTLEADER")
}

#[test]
fn redis_crate_talks_to_the_leader_and_pipelines_in_order() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let url = format!("redis://{}/", cluster.client_addrs[&leader]);
    let client = redis::Client::open(url).expect("client");
    let mut con = client.get_connection().expect("connect (the crate sends CLIENT SETINFO first)");
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(v, "v");
    let n: i64 = redis::cmd("APPEND").arg("k").arg("w").query(&mut con).expect("APPEND");
    assert_eq!(n, 2);
    let missing: Option<String> = redis::cmd("GET").arg("nope").query(&mut con).expect("GET");
    assert_eq!(missing, None);
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("APPEND").arg("seq").arg(format!("{i},"));
    }
    let lens: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    // Each APPEND answers the new length: in order, strictly increasing.
    assert_eq!(lens.len(), 200);
    assert!(lens.windows(2).all(|w| w[0] < w[1]), "replies out of order: {lens:?}");
    let all: String = redis::cmd("GET").arg("seq").query(&mut con).expect("GET");
    let expected: String = (0..200).map(|i| format!("{i},")).collect();
    assert_eq!(all, expected);
    let deleted: i64 = redis::cmd("DEL").arg("k").arg("seq").arg("nope").query(&mut con).expect("DEL");
    assert_eq!(deleted, 2);
    let exists: i64 = redis::cmd("EXISTS").arg("k").arg("seq").query(&mut con).expect("EXISTS");
    assert_eq!(exists, 0);
}

#[test]
fn client_port_limits_answer_errors_and_keep_the_connection() {
    let cluster = TestCluster::start(1);
    let leader = cluster.wait_for_leader(WAIT);
    let addr = cluster.client_addrs[&leader];
    let mut conn = RespConn::connect(addr, WAIT);
    let big_key = vec![b'k'; 64 * 1024 + 1];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("key over 64 KiB", {
            let mut out = Vec::new();
            quorumkv::protocol::resp::encode_request(&[b"SET".as_slice(), &big_key, b"v"], &mut out);
            out
        }),
        ("value over 16 MiB", {
            let mut out = Vec::new();
            let value = vec![b'v'; 16 * 1024 * 1024 + 1];
            quorumkv::protocol::resp::encode_request(&[b"SET".as_slice(), b"k", &value], &mut out);
            out
        }),
        ("inline line over 64 KiB", {
            let mut line = b"GET ".to_vec();
            line.extend(vec![b'x'; 64 * 1024 + 10]);
            line.extend_from_slice(b"\r\n");
            line
        }),
        ("negative bulk length", b"*2\r\n$3\r\nGET\r\n$-5\r\n".to_vec()),
        ("bulk length over 32 MiB, payload sent", {
            let len = 40 * 1024 * 1024;
            let mut out = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").into_bytes();
            out.extend(std::iter::repeat_n(b'v', len));
            out.extend_from_slice(b"\r\n");
            out
        }),
        ("1,025 arguments", {
            let mut out = Vec::new();
            let mut args: Vec<Vec<u8>> = vec![b"EXISTS".to_vec()];
            args.extend((0..1024).map(|i| format!("k{i}").into_bytes()));
            quorumkv::protocol::resp::encode_request(&args, &mut out);
            out
        }),
        ("unknown command", b"NOSUCHCOMMAND\r\n".to_vec()),
        ("wrong arity", b"GET\r\n".to_vec()),
        ("unknown column family", b"RAWGET nope k\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        conn.send_raw(&bytes);
        let reply = conn.read().unwrap_or_else(|| panic!("{what}: connection closed"));
        assert!(is_err(&reply, "ERR"), "{what}: {reply:?}");
        assert!(!matches!(&reply, Reply::Error(e) if e.matches("rror").count() > 1), "{what}: {reply:?}");
        assert_eq!(conn.call(&[b"PING"]), Reply::Simple("PONG".into()), "{what}: connection kept");
    }
    // The replica still serves writes after all that.
    assert_eq!(conn.call(&[b"SET", b"after", b"ok"]), Reply::Simple("OK".into()));
}

#[test]
fn garbage_closes_only_that_connection() {
    let cluster = TestCluster::start(1);
    let leader = cluster.wait_for_leader(WAIT);
    let addr = cluster.client_addrs[&leader];
    let mut bystander = RespConn::connect(addr, WAIT);
    assert_eq!(bystander.call(&[b"SET", b"x", b"1"]), Reply::Simple("OK".into()));

    let mut bad = RespConn::connect(addr, WAIT);
    bad.send_raw(b"*2\r\n$3\r\nGET\r\n:oops\r\n");
    let reply = bad.read().expect("an error before closing");
    assert_eq!(reply, Reply::Error("ERR Protocol error: expected '$', got ':'".into()));
    assert!(bad.is_closed(), "garbage closes the connection");

    // A connection cut in the middle of a request.
    let mut cut = TcpStream::connect(addr).expect("connect");
    cut.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly-part").expect("write");
    drop(cut);

    assert_eq!(bystander.call(&[b"GET", b"x"]), Reply::Bulk(Some(b"1".to_vec())));
    let mut fresh = RespConn::connect(addr, WAIT);
    assert_eq!(fresh.call(&[b"GET", b"k"]), Reply::Bulk(None), "the cut request was never applied");
}

#[test]
fn peer_port_refuses_strangers_garbage_and_oversized_frames() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    // The member whose id the forged handshakes below claim is stopped first: a handshake
    // replaces that member's connection, and a live one would reconnect and race the test.
    let impersonated = *cluster.peer_addrs.keys().find(|&&id| id != leader).expect("a follower");
    cluster.stop(impersonated);
    let term = cluster.status[&leader].term();
    let handshake = |from| Handshake {
        cluster_name: "quorumkv".into(),
        from,
        version: PEER_PROTOCOL_VERSION,
        client_addr: String::new(),
    };
    for (_, addr) in cluster.peer_addrs.iter().filter(|(&id, _)| id != impersonated) {
        // Garbage.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        assert!(closed(&mut s), "garbage closes the peer connection");
        // A stranger's handshake.
        let mut s = TcpStream::connect(addr).expect("connect");
        let hs = Handshake { cluster_name: "other".into(), ..handshake(impersonated) };
        s.write_all(&encode_frame(&hs).expect("encode")).expect("write");
        assert!(closed(&mut s), "another cluster is refused");
        // A non-member's handshake; a member's, then an oversized frame.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&encode_frame(&handshake(9)).expect("encode")).expect("write");
        assert!(closed(&mut s), "a non-member id is refused");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&encode_frame(&handshake(impersonated)).expect("encode")).expect("write");
        s.write_all(&u32::MAX.to_be_bytes()).expect("write");
        assert!(closed(&mut s), "an oversized frame closes the connection");
    }
    // A member's forward of an entry past the entry bound (within the frame bound): refused, so
    // the log never holds an entry too large for an Append frame (which would stop commit).
    const _: () = assert!(MAX_FRAME_BYTES - 64 > MAX_ENTRY_BYTES);
    let target = cluster.peer_addrs[&leader];
    let mut s = TcpStream::connect(target).expect("connect");
    s.write_all(&encode_frame(&handshake(impersonated)).expect("encode")).expect("write");
    let forward = PeerFrame::Forward {
        from: impersonated,
        to: leader,
        run: 1,
        id: 1,
        // Past the entry bound, and too large for an Append frame's headers too.
        request: Forwarded::Propose(vec![0u8; MAX_FRAME_BYTES - 64]),
    };
    s.write_all(&encode_frame(&forward).expect("within the frame bound")).expect("write");
    // Behind it on the same connection (so handled after it), a well-formed forwarded write: it
    // commits only if the one before it did not stop the log.
    let proposal = Proposal {
        request_id: 1,
        session: None,
        command: Command::Put { cf: ColumnFamily::Default, key: b"forged".to_vec(), value: b"1".to_vec() },
    };
    let forward = PeerFrame::Forward {
        from: impersonated,
        to: leader,
        run: 1,
        id: 2,
        request: Forwarded::Propose(encode_entry(&proposal).expect("encode")),
    };
    s.write_all(&encode_frame(&forward).expect("encode")).expect("write");
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    common::wait_until("the forwarded write behind the refused one applied", WAIT, || {
        let got = conn.call(&[b"GET", b"forged"]);
        if got == Reply::Bulk(Some(b"1".to_vec())) {
            Ok(())
        } else {
            Err(got)
        }
    });
    // A member that connects again ends its older connection (which might be half-open for
    // good); the newer one stays.
    assert!(is_open(&mut s), "the forging connection is still up");
    let mut newer = TcpStream::connect(target).expect("connect");
    newer.write_all(&encode_frame(&handshake(impersonated)).expect("encode")).expect("write");
    assert!(closed(&mut s), "replaced by the newer one");
    assert!(is_open(&mut newer), "the newer one stays");
    drop(newer);
    // Bare connections from one address past the bound on those waiting for a handshake are
    // closed at once; the ones within it wait for theirs (until the handshake timeout, later).
    let waiting: Vec<TcpStream> =
        (0..MAX_PENDING_HANDSHAKES_PER_ADDR).map(|_| TcpStream::connect(target).expect("connect")).collect();
    let mut extra = TcpStream::connect(target).expect("connect");
    assert!(closed(&mut extra), "one past the bound is closed");
    for mut s in waiting {
        assert!(is_open(&mut s), "those within the bound still wait for their handshake");
    }
    // The cluster is unharmed: same leader, same term, writes still commit.
    assert_eq!(conn.call(&[b"SET", b"still", b"up"]), Reply::Simple("OK".into()));
    assert_eq!(cluster.wait_for_leader(WAIT), leader);
    assert_eq!(cluster.status[&leader].term(), term);
}

/// True if nothing has arrived on `s` and it is not closed (a read would block).
fn is_open(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let open =
        matches!(std::io::Read::read(s, &mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("blocking");
    open
}

fn closed(s: &mut TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn minority_never_acknowledges_a_write() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let others: Vec<u64> = cluster.client_addrs.keys().copied().filter(|&id| id != leader).collect();
    for id in &others {
        cluster.stop(*id);
    }
    // The old leader is now a minority of one. Every answer is TRYAGAIN or NOTLEADER, in time.
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    for i in 0..3 {
        let started = Instant::now();
        let key = format!("m{i}");
        let reply = conn.call(&[b"SET", key.as_bytes(), b"v"]);
        assert!(is_err(&reply, "TRYAGAIN") || is_err(&reply, "NOTLEADER"), "minority answered {reply:?}");
        assert!(started.elapsed() < Duration::from_millis(2000 + 1000), "answered after the request timeout");
        let reply = conn.call(&[b"GET", key.as_bytes()]);
        assert!(is_err(&reply, "TRYAGAIN") || is_err(&reply, "NOTLEADER"), "stale read: {reply:?}");
    }
    // Once the majority is back, the minority's writes are not there (they were never acknowledged
    // and may or may not commit later; but reads are served again).
    for id in &others {
        cluster.restart(*id);
    }
    let leader = cluster.wait_for_leader(WAIT);
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    assert_eq!(conn.call(&[b"SET", b"after", b"1"]), Reply::Simple("OK".into()));
}

// A request that nothing settles (its leader is cut off and has not noticed yet) is answered
// -TRYAGAIN at its deadline by the connection's sweep, each of a pipelined burst included, even
// after a request with a much later deadline, and the connection goes on serving.
#[test]
fn requests_without_an_outcome_are_answered_at_their_deadline() {
    use quorumkv::actors::sim_network::SimFaults;
    let seed = common::kv_suite::seed("requests_without_an_outcome_are_answered_at_their_deadline");
    // Check-quorum steps a cut-off leader down only after an election timeout: far beyond the
    // request timeout, so the deadline is what answers.
    let cluster = TestCluster::start_sim(3, seed, SimFaults::reliable(), |config| {
        config.election_timeout_ms = 4000;
        config.request_timeout_ms = 300;
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    // A SNAPSHOT BEGIN first: its deadline (600 s) is far later than those of the requests after
    // it, which must still be answered at theirs.
    let begun = conn.call(&[b"SNAPSHOT", b"BEGIN"]);
    assert!(matches!(begun, Reply::Array(Some(_))), "SNAPSHOT BEGIN: {begun:?}");
    assert_eq!(conn.call(&[b"SET", b"before", b"1"]), Reply::Simple("OK".into()));
    let others: Vec<u64> = cluster.client_addrs.keys().copied().filter(|&id| id != leader).collect();
    cluster.net().partition(&[vec![leader], others]);
    let started = Instant::now();
    for i in 0..5 {
        conn.send(&[b"SET", format!("cut{i}").as_bytes(), b"v"]);
    }
    for i in 0..5 {
        let reply = conn.read().expect("a reply");
        assert_eq!(
            reply,
            Reply::Error("TRYAGAIN no outcome within the request timeout".into()),
            "request {i} (seed {seed})"
        );
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "answered before the deadline: {waited:?} (seed {seed})");
    assert!(
        waited < Duration::from_millis(3000),
        "answered long after the deadline: {waited:?} (seed {seed})"
    );
    assert_eq!(conn.call(&[b"PING"]), Reply::Simple("PONG".into()));
    cluster.net().heal();
}

// What one connection can make the replica hold is bounded: a transaction's queue counts the
// commands refused while queueing too, WATCH takes a bounded number of keys, and QUIT closes the
// connection even when the queue is full (its reader has stopped reading by then).
#[test]
fn a_connections_transaction_and_watches_are_bounded_and_quit_always_closes() {
    use quorumkv::actors::connection::{MAX_QUEUED_COMMANDS, MAX_WATCHED_KEYS};
    let cluster = TestCluster::start(1);
    let leader = cluster.wait_for_leader(WAIT);
    let addr = cluster.client_addrs[&leader];
    let queued = Reply::Simple("QUEUED".into());
    let too_large =
        |reply: &Reply| matches!(reply, Reply::Error(e) if e.starts_with("ERR transaction too large"));

    // Commands refused while queueing (each becomes its element of EXEC's answer) count.
    let mut conn = RespConn::connect(addr, WAIT);
    let mut pipeline = b"MULTI\r\n".to_vec();
    pipeline.extend(b"SELECT 1\r\n".repeat(MAX_QUEUED_COMMANDS + 1));
    conn.send_raw(&pipeline);
    assert_eq!(conn.read(), Some(Reply::ok()));
    for i in 0..MAX_QUEUED_COMMANDS {
        assert_eq!(conn.read().as_ref(), Some(&queued), "refused command {i}");
    }
    let over = conn.read().expect("a reply");
    assert!(too_large(&over), "one more: {over:?}");
    assert!(is_err(&conn.call(&[b"EXEC"]), "EXECABORT"));

    // QUIT in a full transaction: +OK, then the connection closes.
    let mut pipeline = b"MULTI\r\n".to_vec();
    pipeline.extend(b"PING\r\n".repeat(MAX_QUEUED_COMMANDS + 1));
    pipeline.extend(b"QUIT\r\n");
    conn.send_raw(&pipeline);
    assert_eq!(conn.read(), Some(Reply::ok()));
    for i in 0..MAX_QUEUED_COMMANDS {
        assert_eq!(conn.read().as_ref(), Some(&queued), "PING {i}");
    }
    assert!(too_large(&conn.read().expect("a reply")));
    assert_eq!(conn.read(), Some(Reply::ok()), "QUIT answered");
    assert!(conn.is_closed(), "and the connection closed");

    // WATCH: up to the limit, then refused until UNWATCH.
    let mut conn = RespConn::connect(addr, WAIT);
    let keys: Vec<Vec<u8>> = (0..1_000).map(|i| format!("w{i}").into_bytes()).collect();
    let watch: Vec<&[u8]> = std::iter::once(&b"WATCH"[..]).chain(keys.iter().map(Vec::as_slice)).collect();
    for round in 0..MAX_WATCHED_KEYS / keys.len() {
        assert_eq!(conn.call(&watch), Reply::ok(), "round {round}");
    }
    let refused = conn.call(&watch);
    assert!(matches!(&refused, Reply::Error(e) if e.starts_with("ERR too many watched keys")), "{refused:?}");
    assert_eq!(conn.call(&[b"UNWATCH"]), Reply::ok());
    assert_eq!(conn.call(&watch), Reply::ok(), "room again after UNWATCH");
}

// A client that sends its requests and then half-closes its side (as `printf ... | nc -N` does)
// still gets every reply, in order, before the replica closes the connection.
#[test]
fn a_client_that_half_closes_gets_every_reply() {
    use std::io::Read;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let mut conn = TcpStream::connect(cluster.client_addrs[&leader]).expect("connect");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(b"SET half closed\r\nAPPEND half -ok\r\nGET half\r\nPING\r\n").expect("send");
    conn.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut replies = Vec::new();
    conn.read_to_end(&mut replies).expect("read until the replica closes");
    assert_eq!(String::from_utf8_lossy(&replies), "+OK\r\n:9\r\n$9\r\nclosed-ok\r\n+PONG\r\n");
}

// A pipeline runs in request order, as Redis runs it: a read sees the writes sent before it on
// the same connection, and not the ones sent after it, on the leader and on a follower (whose
// writes are forwarded).
#[test]
fn a_pipeline_of_reads_and_writes_runs_in_request_order() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let follower = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    for id in [leader, follower] {
        let mut conn = RespConn::connect(cluster.client_addrs[&id], WAIT);
        let key = format!("order-{id}").into_bytes();
        let mut pipeline = Vec::new();
        for i in 0..100u32 {
            // Written, read back, read again just before the next write.
            for args in [
                vec![&b"SET"[..], &key, i.to_string().as_bytes()],
                vec![&b"GET"[..], &key],
                vec![&b"APPEND"[..], &key, b"+"],
                vec![&b"GET"[..], &key],
            ] {
                quorumkv::protocol::resp::encode_request(&args, &mut pipeline);
            }
        }
        conn.send_raw(&pipeline);
        for i in 0..100u32 {
            let written = i.to_string().into_bytes();
            let appended = [written.as_slice(), b"+"].concat();
            assert_eq!(conn.read(), Some(Reply::ok()), "replica {id}: SET {i}");
            assert_eq!(conn.read(), Some(Reply::Bulk(Some(written))), "replica {id}: GET after SET {i}");
            assert_eq!(conn.read(), Some(Reply::Integer(appended.len() as i64)), "replica {id}: APPEND {i}");
            assert_eq!(conn.read(), Some(Reply::Bulk(Some(appended))), "replica {id}: GET after APPEND {i}");
        }
    }
}

// A pipelined `GET k` then `SET k new` on a leader busy with other reads: the write starts at once
// (it does not wait for the read's reply) yet is applied only after the read is served, even when
// the read waits in consensus's read inbox for the next round while the write's proposal arrives.
#[test]
fn a_write_pipelined_behind_a_read_is_not_seen_by_it_under_read_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(WAIT);
    let addr = cluster.client_addrs[&leader];
    let mut conn = RespConn::connect(addr, WAIT);
    const ROUNDS: u32 = 300;
    for i in 0..ROUNDS {
        assert_eq!(conn.call(&[b"SET", format!("rw-{i}").as_bytes(), b"old"]), Reply::ok());
    }
    // Other clients keep read rounds out, so a new read often waits in the inbox, unannounced.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reader = RespConn::connect(addr, WAIT);
                let mut pipeline = Vec::new();
                for _ in 0..8 {
                    quorumkv::protocol::resp::encode_request(&[&b"GET"[..], b"rw-0"], &mut pipeline);
                }
                while !stop.load(Ordering::Relaxed) {
                    reader.send_raw(&pipeline);
                    for _ in 0..8 {
                        assert!(reader.read().is_some(), "background GET");
                    }
                }
            })
        })
        .collect();
    let mut answered = 0;
    for i in 0..ROUNDS {
        let key = format!("rw-{i}").into_bytes();
        let mut pipeline = Vec::new();
        quorumkv::protocol::resp::encode_request(&[&b"GET"[..], &key], &mut pipeline);
        quorumkv::protocol::resp::encode_request(&[&b"SET"[..], &key, b"new"], &mut pipeline);
        conn.send_raw(&pipeline);
        // A change of leader (a loaded machine) may refuse either: never may the GET see the SET.
        match conn.read().expect("GET") {
            Reply::Bulk(Some(v)) => assert_eq!(v, b"old", "GET {i} saw the SET behind it"),
            other => assert!(is_refusal(&other), "GET {i}: {other:?}"),
        }
        match conn.read().expect("SET") {
            reply if reply == Reply::ok() => answered += 1,
            other => assert!(is_refusal(&other), "SET {i}: {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("reader");
    }
    assert!(answered > 0, "no SET was answered");
}

// Pipelines of `SET k a`, `GET k`, `APPEND k +g`, `GET k` (four groups g on a fresh key) on every
// replica while leadership moves round the cluster: on a leader and on a follower the reads and
// writes start together, and a change of leader in between refuses what can no longer be
// ordered. Whatever is answered, the order holds: a read sees the
// writes before it that succeeded and never one after it.
#[test]
fn pipelines_keep_their_order_while_leadership_moves() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let complete_rounds = Arc::new(AtomicU64::new(0));
    let refused_rounds = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = cluster
        .client_addrs
        .iter()
        .map(|(&id, &addr)| {
            let (stop, complete_rounds, refused_rounds) =
                (stop.clone(), complete_rounds.clone(), refused_rounds.clone());
            std::thread::spawn(move || {
                let mut conn = RespConn::connect(addr, WAIT);
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let key = format!("moving-{id}-{round}").into_bytes();
                    let mut pipeline = Vec::new();
                    // Four groups over the same key, each appending its own mark.
                    let marks: Vec<Vec<u8>> = (0..4).map(|g| format!("+{g}").into_bytes()).collect();
                    for mark in &marks {
                        for args in [
                            vec![&b"SET"[..], &key, b"a"],
                            vec![&b"GET"[..], &key],
                            vec![&b"APPEND"[..], &key, mark],
                            vec![&b"GET"[..], &key],
                        ] {
                            quorumkv::protocol::resp::encode_request(&args, &mut pipeline);
                        }
                    }
                    conn.send_raw(&pipeline);
                    let mut all_ok = true;
                    for mark in &marks {
                        let replies: Vec<Reply> = (0..4).map(|_| conn.read().expect("a reply")).collect();
                        let at = format!("replica {id}, round {round}: {replies:?}");
                        let [set, get, append, get_after] = &replies[..] else { unreachable!() };
                        let set_ok = *set == Reply::ok();
                        let appended = matches!(append, Reply::Integer(_));
                        assert!(set_ok || is_refusal(set), "{at}");
                        // Never the APPEND behind it; after a SET that succeeded, exactly its value
                        // (otherwise what an earlier group left, whose outcomes may be unknown).
                        match get {
                            Reply::Bulk(Some(v)) if v.ends_with(mark) => {
                                panic!("{at}: the first GET saw the APPEND after it")
                            }
                            Reply::Bulk(Some(v)) if set_ok => assert_eq!(v, b"a", "{at}"),
                            Reply::Bulk(None) => assert!(!set_ok, "{at}: the first GET missed the SET"),
                            Reply::Bulk(_) => {}
                            other => assert!(is_refusal(other), "{at}: the first GET"),
                        }
                        match append {
                            Reply::Integer(n) if set_ok => assert_eq!(*n, 1 + mark.len() as i64, "{at}"),
                            Reply::Integer(_) => {}
                            other => assert!(is_refusal(other), "{at}: APPEND"),
                        }
                        // After an APPEND that succeeded, its mark last; after the SET too, both.
                        match get_after {
                            Reply::Bulk(Some(v)) if appended && set_ok => {
                                assert_eq!(*v, [&b"a"[..], mark].concat(), "{at}")
                            }
                            Reply::Bulk(Some(v)) if appended => assert!(v.ends_with(mark), "{at}"),
                            Reply::Bulk(None) => {
                                assert!(!appended && !set_ok, "{at}: the second GET missed a write")
                            }
                            Reply::Bulk(_) => {}
                            other => assert!(is_refusal(other), "{at}: the second GET"),
                        }
                        all_ok &= replies.iter().all(|r| !is_refusal(r));
                    }
                    let counter = if all_ok { &complete_rounds } else { &refused_rounds };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Leadership moves to each replica in turn, six times, with pipelines answered in full
    // under each leader.
    for _ in 0..6 {
        let before = complete_rounds.load(Ordering::Relaxed);
        common::wait_until("pipelines answered in full", WAIT, || {
            let now = complete_rounds.load(Ordering::Relaxed);
            if now >= before + 6 {
                Ok(())
            } else {
                Err(now)
            }
        });
        common::wait_until("a leader transfer", WAIT * 3, || {
            let leader = cluster.wait_for_leader(WAIT);
            let target = leader % 3 + 1;
            let mut to_leader = RespConn::connect(cluster.client_addrs[&leader], WAIT);
            match to_leader.call(&[b"LEADER", b"TRANSFER", target.to_string().as_bytes()]) {
                Reply::Simple(ok) if ok == "OK" => Ok(()),
                other => Err(other),
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client's order held");
    }
    let (complete, refused) =
        (complete_rounds.load(Ordering::Relaxed), refused_rounds.load(Ordering::Relaxed));
    println!("{complete} pipelines answered in full, {refused} with a request refused");
    assert!(complete > 0 && refused > 0, "no pipeline answered in full, or none met a change of leader");
}

// A client that quits (or half-closes) without reading its replies keeps its place among the
// replica's clients (`CLIENT LIST`, `--max-clients`) until they are written: its socket and the
// replies it has not taken are still held.
#[test]
fn a_client_that_quits_without_reading_counts_until_its_replies_are_written() {
    use std::io::Read;
    let cluster = TestCluster::start(1);
    let leader = cluster.wait_for_leader(WAIT);
    let addr = cluster.client_addrs[&leader];
    let mut watcher = RespConn::connect(addr, WAIT);
    let value = vec![b'v'; 4 << 20];
    assert_eq!(watcher.call(&[b"SET", b"big", &value]), Reply::Simple("OK".into()));
    let mut stuck = TcpStream::connect(addr).expect("connect");
    stuck.set_read_timeout(Some(WAIT)).expect("timeout");
    stuck.write_all(b"CLIENT SETNAME stuck\r\n").expect("send");
    let mut named = [0u8; 5];
    stuck.read_exact(&mut named).expect("named");
    assert_eq!(&named, b"+OK\r\n");
    let mut requests = b"GET big\r\n".repeat(16);
    requests.extend(b"QUIT\r\n");
    stuck.write_all(&requests).expect("send");
    let listed = |conn: &mut RespConn| match conn.call(&[b"CLIENT", b"LIST"]) {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).contains("name=stuck"),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    // Its replies have started to arrive: its reads were served, and its QUIT answered with them.
    stuck.set_nonblocking(true).expect("nonblocking");
    common::wait_until("the first replies", WAIT, || match stuck.peek(&mut [0u8; 1]) {
        Ok(1..) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    stuck.set_nonblocking(false).expect("blocking");
    let watched_from = Instant::now();
    while watched_from.elapsed() < Duration::from_secs(1) {
        assert!(listed(&mut watcher), "listed while its 64 MiB of replies are unread");
    }
    // Once it reads them all, the replica closes it and lets it go.
    stuck.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut replies = Vec::new();
    stuck.read_to_end(&mut replies).expect("every reply, then the close");
    assert!(replies.ends_with(b"+OK\r\n"), "QUIT answered last");
    assert_eq!(replies.len(), 16 * (value.len() + 12) + 5, "16 values and QUIT's OK");
    common::wait_until("it to be let go", WAIT, || if listed(&mut watcher) { Err("listed") } else { Ok(()) });
}
