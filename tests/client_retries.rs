//! The client against scripted fake servers: leader discovery (PRODUCT.md, `-NOTLEADER`), retries
//! (`-TRYAGAIN`, dead servers, the call's deadline), exactly-once session tags on writes only, typed
//! helpers and pipelining.

#[path = "client_fake_server.rs"]
mod fake;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake::{args, command, dead_addr, kv_store, session, Action, FakeServer};
use quorumkv::client::{Client, ClientConfig, ClientError};
use quorumkv::protocol::command::ColumnFamily;
use quorumkv::protocol::resp::Reply;

/// A deadline no passing test comes near; it only bounds a broken test.
const TEST_REQUEST_TIMEOUT_MS: u64 = 10_000;

fn client(servers: &[&str]) -> Client {
    let mut config = ClientConfig::new(servers.iter().copied());
    config.request_timeout_ms = TEST_REQUEST_TIMEOUT_MS;
    config.client_id = Some(77);
    Client::new(config).expect("servers given")
}

/// A one-replica store that answers `refusal` to the first request `matches` picks, once.
fn refusing_once(matches: impl Fn(&[Vec<u8>]) -> bool + Send + 'static, refusal: &'static str) -> FakeServer {
    let refused = Arc::new(AtomicUsize::new(1));
    let left = Arc::clone(&refused);
    let mut store = kv_store();
    FakeServer::replying(move |request| {
        if matches(request) && left.swap(0, Ordering::SeqCst) > 0 {
            return Reply::Error(refusal.into());
        }
        store(request)
    })
}

fn not_leader(addr: &str) -> Reply {
    Reply::Error(format!("NOTLEADER {addr}"))
}

#[test]
fn notleader_with_an_address_is_followed_and_remembered() {
    let leader = FakeServer::replying(kv_store());
    let leader_addr = leader.addr.clone();
    let follower = FakeServer::replying(move |_| not_leader(&leader_addr));
    // Only the follower is configured: the leader is learned from the redirect.
    let mut client = client(&[&follower.addr]);
    client.set(b"k", b"v").expect("set through the redirect");
    assert_eq!(client.current_server(), leader.addr);
    assert_eq!(client.servers(), [follower.addr.clone(), leader.addr.clone()]);
    // The redirected write kept its session tag.
    assert_eq!(follower.requests(), vec![args("REQ 77 1 SET k v")]);
    assert_eq!(leader.requests(), vec![args("REQ 77 1 SET k v")]);
    // The next call starts at the leader.
    assert_eq!(client.get(b"k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(follower.request_count(), 1);
    assert_eq!(leader.requests()[1], args("GET k"));
}

#[test]
fn notleader_unknown_moves_to_the_next_server() {
    let electing = FakeServer::replying(|_| Reply::Error("NOTLEADER ?".into()));
    let leader = FakeServer::replying(kv_store());
    let mut client = client(&[&electing.addr, &leader.addr]);
    assert_eq!(client.get(b"missing").expect("get"), None);
    assert_eq!(electing.requests(), vec![args("GET missing")]);
    assert_eq!(leader.requests(), vec![args("GET missing")]);
    assert_eq!(client.current_server(), leader.addr);
}

#[test]
fn tryagain_is_retried_with_the_same_seq_and_the_next_write_uses_the_next() {
    let refusals = Arc::new(AtomicUsize::new(2));
    let left = Arc::clone(&refusals);
    let mut store = kv_store();
    let server = FakeServer::replying(move |request| {
        if left.load(Ordering::SeqCst) > 0 {
            left.fetch_sub(1, Ordering::SeqCst);
            return Reply::Error("TRYAGAIN leader changed before commit".into());
        }
        store(request)
    });
    let mut client = client(&[&server.addr]);
    assert_eq!(client.append(b"k", b"abc").expect("append after retries"), 3);
    assert_eq!(client.append(b"k", b"d").expect("second append"), 4);
    assert_eq!(
        server.requests(),
        vec![
            args("REQ 77 1 APPEND k abc"),
            args("REQ 77 1 APPEND k abc"),
            args("REQ 77 1 APPEND k abc"),
            args("REQ 77 2 APPEND k d"),
        ]
    );
    assert_eq!(client.last_seq(), 2);
}

#[test]
fn a_write_lost_with_its_connection_is_resent_with_the_same_seq() {
    let closes = Arc::new(AtomicUsize::new(1));
    let left = Arc::clone(&closes);
    let mut store = kv_store();
    let server = FakeServer::start(move |request| {
        if left.swap(0, Ordering::SeqCst) > 0 {
            return Action::Close;
        }
        Action::Reply(store(request))
    });
    let mut client = client(&[&server.addr]);
    client.set(b"k", b"v").expect("set after a reconnect");
    assert_eq!(server.requests(), vec![args("REQ 77 1 SET k v"), args("REQ 77 1 SET k v")]);
}

#[test]
fn writes_are_tagged_with_increasing_seqs_and_reads_are_not() {
    let server = FakeServer::replying(|request| match command(request)[0].to_ascii_uppercase().as_slice() {
        b"SET" | b"RAWPUT" => Reply::ok(),
        b"GET" | b"RAWGET" => Reply::Bulk(None),
        b"RAWSCAN" => Reply::Array(Some(vec![Reply::bulk(b"a".to_vec()), Reply::bulk(b"1".to_vec())])),
        b"INFO" => Reply::bulk(b"# Raft\r\nid:1\r\nrole:leader\r\n".to_vec()),
        b"PING" => Reply::Simple("PONG".into()),
        _ => Reply::Integer(1),
    });
    let mut client = client(&[&server.addr]);
    client.set(b"k", b"v").expect("set");
    client.get(b"k").expect("get");
    client.append(b"k", b"v").expect("append");
    client.exists(&[b"k"]).expect("exists");
    client.del(&[b"k", b"j"]).expect("del");
    client.raw_put(ColumnFamily::Lock, b"k", b"v").expect("rawput");
    client.raw_get(ColumnFamily::Lock, b"k").expect("rawget");
    client.raw_delete(ColumnFamily::Write, b"k").expect("rawdelete");
    assert_eq!(
        client.raw_scan(ColumnFamily::Write, b"", 5).expect("rawscan"),
        vec![(b"a".to_vec(), b"1".to_vec())]
    );
    assert_eq!(client.info_map().expect("info").get("role").map(String::as_str), Some("leader"));
    client.ping().expect("ping");
    // `call` decides by name in any case, and sends a user's own REQ prefix untouched.
    client.call(&args("set k v")).expect("call set");
    client.call(&args("REQ 5 9 SET k v")).expect("call with REQ");
    client.call(&args("get k")).expect("call get");
    assert_eq!(
        server.requests(),
        vec![
            args("REQ 77 1 SET k v"),
            args("GET k"),
            args("REQ 77 2 APPEND k v"),
            args("EXISTS k"),
            args("REQ 77 3 DEL k j"),
            args("REQ 77 4 RAWPUT lock k v"),
            args("RAWGET lock k"),
            args("REQ 77 5 RAWDELETE write k"),
            args("RAWSCAN write  5"),
            args("INFO"),
            args("PING"),
            args("REQ 77 6 set k v"),
            args("REQ 5 9 SET k v"),
            args("get k"),
        ]
    );
}

#[test]
fn random_client_ids_differ_between_clients() {
    let server = FakeServer::replying(kv_store());
    let mut first = Client::new(ClientConfig::new([server.addr.clone()])).expect("client");
    let mut second = Client::new(ClientConfig::new([server.addr.clone()])).expect("client");
    assert_ne!(first.client_id(), second.client_id());
    first.set(b"a", b"1").expect("set");
    second.set(b"b", b"2").expect("set");
    let ids: Vec<_> = server.requests().iter().map(|request| session(request).map(|(id, _)| id)).collect();
    assert_eq!(ids, vec![Some(first.client_id()), Some(second.client_id())]);
}

#[test]
fn a_dead_server_is_skipped() {
    let leader = FakeServer::replying(kv_store());
    let mut client = client(&[&dead_addr(), &leader.addr]);
    client.set(b"k", b"v").expect("set on the live server");
    assert_eq!(client.current_server(), leader.addr);
    assert_eq!(leader.requests(), vec![args("REQ 77 1 SET k v")]);
}

#[test]
fn error_replies_reach_the_caller_unretried() {
    let server = FakeServer::replying(|_| Reply::err("unknown column family 'x'"));
    let mut client = client(&[&server.addr]);
    assert_eq!(client.call(&args("RAWGET x k")), Ok(Reply::Error("ERR unknown column family 'x'".into())));
    assert_eq!(client.get(b"k"), Err(ClientError::Server("ERR unknown column family 'x'".into())));
    assert_eq!(server.request_count(), 2);
}

#[test]
fn no_usable_server_before_the_deadline_is_unavailable() {
    let electing = FakeServer::replying(|_| Reply::Error("NOTLEADER ?".into()));
    let busy = FakeServer::replying(|_| Reply::Error("TRYAGAIN no quorum".into()));
    for servers in [vec![dead_addr(), dead_addr()], vec![electing.addr.clone()], vec![busy.addr.clone()]] {
        let mut config = ClientConfig::new(servers.clone());
        config.request_timeout_ms = 300;
        let mut client = Client::new(config).expect("client");
        let started = Instant::now();
        let result = client.set(b"k", b"v");
        assert!(
            matches!(result, Err(ClientError::Unavailable { timeout_ms: 300, .. })),
            "{servers:?}: {result:?}"
        );
        // Generous: it only catches a client that ignores its deadline.
        assert!(started.elapsed() < Duration::from_secs(5), "{servers:?} took {:?}", started.elapsed());
    }
    // Back-off keeps the retry rate bounded while no leader is known.
    assert!(electing.request_count() < 100, "{} attempts in 300 ms", electing.request_count());
}

#[test]
fn pipeline_returns_replies_in_order() {
    let server = FakeServer::replying(kv_store());
    let mut client = client(&[&server.addr]);
    let batch = vec![args("SET a 1"), args("GET a"), args("GET b"), args("APPEND a 23"), args("PING")];
    let replies = client.pipeline(&batch).expect("pipeline");
    assert_eq!(
        replies,
        vec![
            Reply::ok(),
            Reply::bulk(b"1".to_vec()),
            Reply::Bulk(None),
            Reply::Integer(3),
            Reply::Simple("PONG".into())
        ]
    );
    assert_eq!(
        server.requests(),
        vec![
            args("REQ 77 1 SET a 1"),
            args("GET a"),
            args("GET b"),
            args("REQ 77 2 APPEND a 23"),
            args("PING")
        ]
    );
    assert_eq!(client.pipeline(&[]).expect("empty batch"), Vec::<Reply>::new());
}

#[test]
fn pipeline_retries_only_the_refused_commands_with_their_seqs() {
    let server = refusing_once(|request| session(request) == Some((77, 2)), "TRYAGAIN timed out");
    let mut client = client(&[&server.addr]);
    let replies = client.pipeline(&[args("SET a 1"), args("SET b 2"), args("SET c 3")]).expect("pipeline");
    assert_eq!(replies, vec![Reply::ok(), Reply::ok(), Reply::ok()]);
    assert_eq!(
        server.requests(),
        vec![
            args("REQ 77 1 SET a 1"),
            args("REQ 77 2 SET b 2"),
            args("REQ 77 3 SET c 3"),
            args("REQ 77 2 SET b 2"),
        ]
    );
}

#[test]
fn pipeline_follows_a_redirect_for_the_whole_batch() {
    let leader = FakeServer::replying(kv_store());
    let leader_addr = leader.addr.clone();
    let follower = FakeServer::replying(move |_| not_leader(&leader_addr));
    let mut client = client(&[&follower.addr]);
    let replies = client.pipeline(&[args("SET a 1"), args("GET a")]).expect("pipeline");
    assert_eq!(replies, vec![Reply::ok(), Reply::bulk(b"1".to_vec())]);
    assert_eq!(follower.requests(), vec![args("REQ 77 1 SET a 1"), args("GET a")]);
    // A redirect says nothing was proposed: the write goes again under a fresh seq.
    assert_eq!(leader.requests(), vec![args("REQ 77 2 SET a 1"), args("GET a")]);
    assert_eq!(client.current_server(), leader.addr);
}

// A pipelined write refused before it was proposed can never apply, so its retry takes a fresh
// seq: retried under its old one behind more than 32 later writes of the batch, the server (which
// remembers a session's 32 most recent writes) would refuse it as too old, a write lost.
#[test]
fn pipeline_retries_a_write_refused_before_proposal_under_a_fresh_seq() {
    let server =
        refusing_once(|request| session(request) == Some((77, 1)), "TRYAGAIN leader changed; not proposed");
    let mut client = client(&[&server.addr]);
    let batch: Vec<Vec<Vec<u8>>> = (0..40).map(|i| args(&format!("SET k{i} {i}"))).collect();
    let replies = client.pipeline(&batch).expect("pipeline");
    assert_eq!(replies, vec![Reply::ok(); 40]);
    let requests = server.requests();
    assert_eq!(requests.len(), 41);
    assert_eq!(requests[40], args("REQ 77 41 SET k0 0"), "retried under a fresh seq");
    // A tag the caller wrote is the caller's: retried as it was.
    let server = refusing_once(|_| true, "TRYAGAIN leader changed; not proposed");
    let mut caller_tagged = self::client(&[&server.addr]);
    let replies = caller_tagged.pipeline(&[args("REQ 42 1000 SET k v")]).expect("pipeline");
    assert_eq!(replies, vec![Reply::ok()]);
    assert_eq!(server.requests(), vec![args("REQ 42 1000 SET k v"), args("REQ 42 1000 SET k v")]);
}

#[test]
fn tryagain_moves_the_retry_to_the_next_server() {
    // With forwarding, a replica cut off from the leader answers -TRYAGAIN for as long as it is
    // cut off; the next server serves.
    let cut_off = FakeServer::replying(|_| Reply::Error("TRYAGAIN no leader".into()));
    let healthy = FakeServer::replying(kv_store());
    let mut client = client(&[&cut_off.addr, &healthy.addr]);
    assert_eq!(client.append(b"k", b"abc").expect("append"), 3);
    assert_eq!(cut_off.requests(), vec![args("REQ 77 1 APPEND k abc")]);
    assert_eq!(healthy.requests(), vec![args("REQ 77 1 APPEND k abc")]);
    assert_eq!(client.current_server(), healthy.addr);
}

// Inside MULTI the queued writes go untagged and the EXEC tagged, once each on the transaction's
// connection; an EXEC the caller tagged ends the transaction as a bare one does; and neither
// the typed helpers nor a pipeline can run while it is open, nor can a pipeline start one.
#[test]
fn a_transaction_tags_its_exec_and_holds_the_other_methods_off() {
    let server = FakeServer::replying(|request| match command(request).first().map(Vec::as_slice) {
        Some(b"MULTI") => Reply::ok(),
        Some(b"EXEC") => Reply::Array(Some(vec![Reply::ok()])),
        Some(b"GET") => Reply::Bulk(None),
        _ => Reply::Simple("QUEUED".into()),
    });
    let mut client = client(&[&server.addr]);
    for exec in ["EXEC", "REQ 77 50 EXEC"] {
        assert_eq!(client.call(&args("MULTI")).expect("MULTI"), Reply::ok());
        assert_eq!(client.call(&args("SET a 1")).expect("SET"), Reply::Simple("QUEUED".into()));
        assert!(matches!(client.get(b"a"), Err(ClientError::Invalid(_))));
        assert!(matches!(client.pipeline(&[args("GET a")]), Err(ClientError::Invalid(_))));
        assert!(matches!(client.ping(), Err(ClientError::Invalid(_))));
        assert_eq!(client.call(&args(exec)).expect("EXEC"), Reply::Array(Some(vec![Reply::ok()])));
        assert_eq!(client.get(b"a").expect("over: the helpers work again"), None);
    }
    assert_eq!(
        server.requests(),
        vec![
            args("MULTI"),
            args("SET a 1"),
            args("REQ 77 1 EXEC"),
            args("GET a"),
            args("MULTI"),
            args("SET a 1"),
            args("REQ 77 50 EXEC"),
            args("GET a"),
        ]
    );
    let refused = client.pipeline(&[args("MULTI"), args("SET a 1"), args("EXEC")]);
    assert!(matches!(refused, Err(ClientError::Invalid(_))), "{refused:?}");
}
