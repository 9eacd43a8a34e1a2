//! The Redis dialect in the state machine: random command sequences (parsed from their RESP
//! arguments, as a client sends them) against a plain model of Redis semantics, with a simulated
//! clock stamped into every entry; and table cases for transactions, versions, SCAN and reclaim.

use std::collections::BTreeMap;

use proptest::prelude::*;
use quorumkv::protocol::command::{Command, CommandResult, Proposal, SessionTag};
use quorumkv::protocol::request::{parse_client_request, ClientRequest};
use quorumkv::storage::StateMachine;

/// A replica's state machine fed the way the applier feeds it.
struct Replica {
    sm: StateMachine,
    index: u64,
}

impl Replica {
    fn new() -> Replica {
        Replica { sm: StateMachine::default(), index: 0 }
    }

    /// Parses `args` and applies (a write, as the next entry stamped `now_ms`) or serves (a read
    /// at `now_ms`) it.
    fn run(&mut self, now_ms: u64, args: &[&[u8]]) -> CommandResult {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        match parse_client_request(args.clone()) {
            Ok(ClientRequest::Write { session, command }) => self.write(now_ms, session, command),
            Ok(ClientRequest::Read { command }) => self.sm.read_at(&command, now_ms),
            other => panic!("{args:?} is not a data command: {other:?}"),
        }
    }

    fn write(&mut self, now_ms: u64, session: Option<SessionTag>, command: Command) -> CommandResult {
        self.index += 1;
        let proposal = Proposal { request_id: self.index, session, command };
        self.sm.apply_stamped(self.index, Some(now_ms), &proposal)
    }
}

fn int(n: i64) -> CommandResult {
    CommandResult::Integer(n)
}

fn val(v: Option<&[u8]>) -> CommandResult {
    CommandResult::Value(v.map(<[u8]>::to_vec))
}

/// Redis semantics, written plainly: key -> (value, expiry in ms).
#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
}

impl Model {
    fn live(&self, key: &[u8], now: u64) -> Option<&(Vec<u8>, Option<u64>)> {
        self.keys.get(key).filter(|(_, at)| at.is_none_or(|at| now <= at))
    }

    fn purge(&mut self, now: u64) {
        self.keys.retain(|_, (_, at)| at.is_none_or(|at| now <= at));
    }
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Set { key: u8, value: u8, cond: u8, get: bool, ttl: u8, ttl_ms: u64 },
    Get(u8),
    Del(Vec<u8>),
    IncrBy(u8, i64),
    Append(u8, u8),
    Expire(u8, i64),
    Persist(u8),
    Pttl(u8),
    Exists(Vec<u8>),
    MSet(Vec<(u8, u8)>),
    GetDel(u8),
    Rename(u8, u8),
    Strlen(u8),
    DbSize,
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..4;
    prop_oneof![
        (0u64..600).prop_map(Op::Advance),
        (key.clone(), 0u8..3, 0u8..3, any::<bool>(), 0u8..4, 1u64..900)
            .prop_map(|(key, value, cond, get, ttl, ttl_ms)| Op::Set { key, value, cond, get, ttl, ttl_ms }),
        key.clone().prop_map(Op::Get),
        prop::collection::vec(key.clone(), 1..3).prop_map(Op::Del),
        (key.clone(), -3i64..4).prop_map(|(k, n)| Op::IncrBy(k, n)),
        (key.clone(), 0u8..3).prop_map(|(k, v)| Op::Append(k, v)),
        (key.clone(), -200i64..900).prop_map(|(k, ms)| Op::Expire(k, ms)),
        key.clone().prop_map(Op::Persist),
        key.clone().prop_map(Op::Pttl),
        prop::collection::vec(key.clone(), 1..3).prop_map(Op::Exists),
        prop::collection::vec((key.clone(), 0u8..3), 1..3).prop_map(Op::MSet),
        key.clone().prop_map(Op::GetDel),
        (key.clone(), key.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        key.clone().prop_map(Op::Strlen),
        Just(Op::DbSize),
        Just(Op::Reclaim),
    ]
}

fn k(key: u8) -> Vec<u8> {
    vec![b'k', b'0' + key]
}

fn v(value: u8) -> Vec<u8> {
    // Values 0 and 1 are integers, so INCRBY meets both numbers and text.
    match value {
        0 => b"7".to_vec(),
        1 => b"-2".to_vec(),
        _ => b"text".to_vec(),
    }
}

/// Runs `op` on the replica and on the model; answers (replica's result, model's result).
fn step(replica: &mut Replica, model: &mut Model, now: &mut u64, op: &Op) -> (CommandResult, CommandResult) {
    let t = *now;
    match op {
        Op::Advance(ms) => {
            *now += ms;
            (CommandResult::Ok, CommandResult::Ok)
        }
        Op::Set { key, value, cond, get, ttl, ttl_ms } => {
            let (key, value) = (k(*key), v(*value));
            let mut args: Vec<Vec<u8>> = vec![b"SET".to_vec(), key.clone(), value.clone()];
            match cond {
                1 => args.push(b"NX".to_vec()),
                2 => args.push(b"XX".to_vec()),
                _ => {}
            }
            if *get {
                args.push(b"GET".to_vec());
            }
            match ttl {
                1 => args.extend([b"PX".to_vec(), ttl_ms.to_string().into_bytes()]),
                2 => args.extend([b"KEEPTTL".to_vec()]),
                3 => args.extend([b"PXAT".to_vec(), (t + ttl_ms).to_string().into_bytes()]),
                _ => {}
            }
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let got = replica.run(t, &refs);
            let old = model.live(&key, t).cloned();
            let allowed = match cond {
                1 => old.is_none(),
                2 => old.is_some(),
                _ => true,
            };
            if allowed {
                let at = match ttl {
                    1 | 3 => Some(t + ttl_ms),
                    2 => old.as_ref().and_then(|(_, at)| *at),
                    _ => None,
                };
                model.keys.insert(key, (value, at));
            }
            let want = match (get, allowed) {
                (true, _) => val(old.as_ref().map(|(v, _)| v.as_slice())),
                (false, true) => CommandResult::Ok,
                (false, false) => CommandResult::Value(None),
            };
            (got, want)
        }
        Op::Get(key) => {
            let key = k(*key);
            (replica.run(t, &[b"GET", &key]), val(model.live(&key, t).map(|(v, _)| v.as_slice())))
        }
        Op::Del(keys) => {
            let keys: Vec<Vec<u8>> = keys.iter().map(|&x| k(x)).collect();
            let mut args: Vec<&[u8]> = vec![b"DEL"];
            args.extend(keys.iter().map(Vec::as_slice));
            let got = replica.run(t, &args);
            let mut n = 0;
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            for key in unique {
                if model.live(&key, t).is_some() {
                    n += 1;
                }
                model.keys.remove(&key);
            }
            (got, int(n))
        }
        Op::IncrBy(key, by) => {
            let key = k(*key);
            let got = replica.run(t, &[b"INCRBY", &key, by.to_string().as_bytes()]);
            let want = match model.live(&key, t).cloned() {
                None => {
                    model.keys.insert(key, (by.to_string().into_bytes(), None));
                    int(*by)
                }
                // Redis takes only the canonical decimal form ("07" and "+7" are not integers).
                Some((value, at)) => match std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|n| n.to_string().as_bytes() == value.as_slice())
                {
                    Some(n) => {
                        model.keys.insert(key, ((n + by).to_string().into_bytes(), at));
                        int(n + by)
                    }
                    None => CommandResult::Error("value is not an integer or out of range".into()),
                },
            };
            (got, want)
        }
        Op::Append(key, value) => {
            let (key, value) = (k(*key), v(*value));
            let got = replica.run(t, &[b"APPEND", &key, &value]);
            let (mut joined, at) = model.live(&key, t).cloned().unwrap_or_default();
            joined.extend_from_slice(&value);
            let len = joined.len() as i64;
            model.keys.insert(key, (joined, at));
            (got, int(len))
        }
        Op::Expire(key, ms) => {
            let key = k(*key);
            let got = replica.run(t, &[b"PEXPIRE", &key, ms.to_string().as_bytes()]);
            let want = match model.live(&key, t).cloned() {
                None => int(0),
                Some((value, _)) => {
                    let at = t as i64 + ms;
                    if at <= t as i64 {
                        model.keys.remove(&key);
                    } else {
                        model.keys.insert(key, (value, Some(at as u64)));
                    }
                    int(1)
                }
            };
            (got, want)
        }
        Op::Persist(key) => {
            let key = k(*key);
            let got = replica.run(t, &[b"PERSIST", &key]);
            let want = match model.live(&key, t).cloned() {
                Some((value, Some(_))) => {
                    model.keys.insert(key, (value, None));
                    int(1)
                }
                _ => int(0),
            };
            (got, want)
        }
        Op::Pttl(key) => {
            let key = k(*key);
            let want = match model.live(&key, t) {
                None => int(-2),
                Some((_, None)) => int(-1),
                Some((_, Some(at))) => int((at - t) as i64),
            };
            (replica.run(t, &[b"PTTL", &key]), want)
        }
        Op::Exists(keys) => {
            let keys: Vec<Vec<u8>> = keys.iter().map(|&x| k(x)).collect();
            let mut args: Vec<&[u8]> = vec![b"EXISTS"];
            args.extend(keys.iter().map(Vec::as_slice));
            let n = keys.iter().filter(|key| model.live(key, t).is_some()).count() as i64;
            (replica.run(t, &args), int(n))
        }
        Op::MSet(pairs) => {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs.iter().map(|&(a, b)| (k(a), v(b))).collect();
            let mut args: Vec<&[u8]> = vec![b"MSET"];
            for (key, value) in &pairs {
                args.push(key);
                args.push(value);
            }
            let got = replica.run(t, &args);
            for (key, value) in pairs {
                model.keys.insert(key, (value, None));
            }
            (got, CommandResult::Ok)
        }
        Op::GetDel(key) => {
            let key = k(*key);
            let got = replica.run(t, &[b"GETDEL", &key]);
            let old = model.live(&key, t).map(|(v, _)| v.clone());
            model.keys.remove(&key);
            (got, CommandResult::Value(old))
        }
        Op::Rename(from, to) => {
            let (from, to) = (k(*from), k(*to));
            let got = replica.run(t, &[b"RENAME", &from, &to]);
            let want = match model.live(&from, t).cloned() {
                None => CommandResult::Error("no such key".into()),
                Some(entry) => {
                    model.keys.remove(&from);
                    model.keys.insert(to, entry);
                    CommandResult::Ok
                }
            };
            (got, want)
        }
        Op::Strlen(key) => {
            let key = k(*key);
            (replica.run(t, &[b"STRLEN", &key]), int(model.live(&key, t).map_or(0, |(v, _)| v.len() as i64)))
        }
        Op::DbSize => {
            let n = model.keys.keys().filter(|key| model.live(key, t).is_some()).count() as i64;
            (replica.run(t, &[b"DBSIZE"]), int(n))
        }
        Op::Reclaim => {
            let expired =
                model.keys.len() - model.keys.keys().filter(|key| model.live(key, t).is_some()).count();
            model.purge(t);
            let got = replica.write(t, None, Command::ReclaimExpired { limit: 1_000 });
            (got, int(expired as i64))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // Every reply matches the model, the clock moving between commands; and at every step an
    // image restores to an equal state (expiries, versions and clock carried) with an equal digest.
    #[test]
    fn commands_answer_as_the_model_of_redis_says(ops in prop::collection::vec(op(), 1..60)) {
        let mut replica = Replica::new();
        let mut model = Model::default();
        let mut now = 1_700_000_000_000u64;
        for (i, op) in ops.iter().enumerate() {
            let (got, want) = step(&mut replica, &mut model, &mut now, op);
            prop_assert_eq!(got, want, "step {} {:?}", i, op);
            let image = replica.sm.snapshot().expect("snapshot");
            let restored = StateMachine::restore(&image).expect("restore");
            prop_assert_eq!(restored.engine().digest(), replica.sm.engine().digest());
            prop_assert!(restored == replica.sm, "step {}: restored state differs", i);
        }
    }
}

#[test]
fn an_expired_key_is_gone_at_the_same_position_for_every_replica() {
    // Two replicas apply the same stamped entries; one restarts from an image midway.
    let t0 = 1_700_000_000_000u64;
    let mut a = Replica::new();
    a.run(t0, &[b"SET", b"k", b"v", b"PX", b"100"]);
    a.run(t0 + 50, &[b"SET", b"other", b"x"]);
    let mut b = Replica {
        sm: StateMachine::restore(&a.sm.snapshot().expect("image")).expect("restore"),
        index: a.index,
    };
    for r in [&mut a, &mut b] {
        assert_eq!(r.run(t0 + 100, &[b"GET", b"k"]), val(Some(b"v")), "alive through its last millisecond");
        assert_eq!(r.run(t0 + 101, &[b"GET", b"k"]), val(None));
        // A read judged at an older time than the clock is judged at the clock.
        r.write(t0 + 200, None, Command::ReclaimExpired { limit: 10 });
        assert_eq!(r.run(t0, &[b"EXISTS", b"k"]), int(0));
    }
    assert_eq!(a.sm.engine().digest(), b.sm.engine().digest());
    assert_eq!(a.sm.engine().len(), 1);
}

#[test]
fn the_clock_never_goes_back() {
    let t0 = 1_700_000_000_000u64;
    let mut r = Replica::new();
    r.run(t0, &[b"SET", b"k", b"v", b"PX", b"100"]);
    // A new leader whose wall clock is behind: the entry's stamp is older, the clock stays.
    r.run(t0 + 500, &[b"SET", b"x", b"1"]);
    r.run(t0 + 10, &[b"SET", b"y", b"1"]);
    assert_eq!(r.sm.clock_ms(), t0 + 500);
    assert_eq!(r.run(t0 + 10, &[b"GET", b"k"]), val(None));
}

#[test]
fn exec_aborts_when_a_watched_key_moved_after_the_watch_point() {
    let t = 1_700_000_000_000u64;
    let mut r = Replica::new();
    r.run(t, &[b"SET", b"c", b"1"]); // index 1
    let point = r.index;
    let incr = |key: &[u8]| Command::IncrBy { key: key.to_vec(), delta: 1 };
    let exec = |watched: &[&[u8]], point: u64| Command::Exec {
        watched: watched.iter().map(|k| k.to_vec()).collect(),
        watch_point: point,
        commands: vec![
            incr(b"c"),
            Command::Get { cf: quorumkv::protocol::command::ColumnFamily::Default, key: b"c".to_vec() },
        ],
    };
    assert_eq!(
        r.write(t, None, exec(&[b"c"], point)),
        CommandResult::Array(vec![int(2), val(Some(b"2"))]),
        "unchanged since the watch: applied"
    );
    assert_eq!(
        r.write(t, None, exec(&[b"c"], point)),
        CommandResult::NilArray,
        "written since (by the exec above)"
    );
    let point = r.index;
    r.run(t, &[b"DEL", b"gone"]);
    assert_eq!(
        r.write(t, None, exec(&[b"missing"], point)),
        CommandResult::Array(vec![int(3), val(Some(b"3"))]),
        "nothing removed"
    );
    r.run(t, &[b"SET", b"gone", b"1"]);
    r.run(t, &[b"DEL", b"gone"]);
    assert_eq!(
        r.write(t, None, exec(&[b"missing"], point)),
        CommandResult::NilArray,
        "a removal since: conservatively aborted"
    );
    // A runtime error inside is one element of the reply, the rest still applied.
    let mixed = Command::Exec {
        watched: vec![],
        watch_point: 0,
        commands: vec![
            Command::Put {
                cf: quorumkv::protocol::command::ColumnFamily::Default,
                key: b"s".to_vec(),
                value: b"x".to_vec(),
            },
            incr(b"s"),
            incr(b"n"),
        ],
    };
    assert_eq!(
        r.write(t, None, mixed),
        CommandResult::Array(vec![
            CommandResult::Ok,
            CommandResult::Error("value is not an integer or out of range".into()),
            int(1)
        ])
    );
}

#[test]
fn a_reply_past_the_value_bound_is_refused_before_it_is_built_alone_or_in_a_transaction() {
    use quorumkv::storage::dialect::MAX_REPLY_VALUE_BYTES;
    let t = 1_700_000_000_000u64;
    let mut r = Replica::new();
    let big = vec![b'v'; 16 * 1024 * 1024];
    r.run(t, &[b"SET", b"big", &big]);
    let fit = MAX_REPLY_VALUE_BYTES / big.len();
    assert!(fit >= 2, "the bound takes a few of the largest values");
    let get =
        || Command::Get { cf: quorumkv::protocol::command::ColumnFamily::Default, key: b"big".to_vec() };
    let mget = |n: usize| Command::MGet { keys: vec![b"big".to_vec(); n] };
    let too_large =
        |r: &CommandResult| matches!(r, CommandResult::Error(e) if e.starts_with("reply too large"));

    // A read: up to the bound served, past it refused with nothing reserved.
    match r.sm.read_within(&mget(fit), t, |_| true) {
        Some((CommandResult::Array(values), bytes)) => {
            assert_eq!((values.len(), bytes), (fit, fit * big.len()))
        }
        other => panic!("{:?}", other.map(|(_, bytes)| bytes)),
    }
    let mut asked = None;
    let refused = r.sm.read_within(&mget(1000), t, |bytes| {
        asked = Some(bytes);
        true
    });
    assert!(refused.as_ref().is_some_and(|(reply, bytes)| too_large(reply) && *bytes == 0), "{refused:?}");
    assert_eq!(asked, None, "nothing reserved for a refused reply");
    assert!(too_large(&r.sm.read_at(&mget(1000), t)), "the plain read refuses too");

    // A transaction: each command counted before it runs; one past the bound is refused and not
    // run, the others go on, so every replica applying the entry answers and changes alike.
    let exec = Command::Exec {
        watched: vec![],
        watch_point: 0,
        commands: (0..fit)
            .map(|_| get())
            .chain([
                Command::GetDel { key: b"big".to_vec() },
                mget(1000),
                Command::IncrBy { key: b"n".to_vec(), delta: 1 },
            ])
            .collect(),
    };
    let CommandResult::Array(replies) = r.write(t, None, exec) else { panic!("an EXEC reply") };
    assert_eq!(replies.len(), fit + 3);
    assert!(replies[..fit].iter().all(|reply| *reply == val(Some(&big))), "within the bound: served");
    assert!(too_large(&replies[fit]), "GETDEL's old value would pass the bound: {:?}", replies[fit]);
    assert!(too_large(&replies[fit + 1]));
    assert_eq!(replies[fit + 2], int(1), "a command with no values still runs");
    assert_eq!(r.run(t, &[b"STRLEN", b"big"]), int(big.len() as i64), "the refused GETDEL did not run");

    // Replies of keys count too, once made: KEYS many times over 64 KiB keys passes the bound.
    let long_key = |i: usize| format!("{i:04}{}", "k".repeat(64 * 1024 - 4)).into_bytes();
    for i in 0..64 {
        r.run(t, &[b"SET", &long_key(i), b"v"]);
    }
    let keys_bytes = 64 * 64 * 1024;
    let allowed = MAX_REPLY_VALUE_BYTES / keys_bytes;
    let exec = Command::Exec {
        watched: vec![],
        watch_point: 0,
        commands: (0..allowed + 2).map(|_| Command::Keys { pattern: b"0*".to_vec() }).collect(),
    };
    let CommandResult::Array(replies) = r.write(t, None, exec) else { panic!("an EXEC reply") };
    assert!(replies[..allowed]
        .iter()
        .all(|reply| matches!(reply, CommandResult::Array(keys) if keys.len() == 64)));
    assert!(replies[allowed..].iter().all(too_large), "past the bound: refused");
}

#[test]
fn setver_writes_only_over_the_version_it_names() {
    let t = 1_700_000_000_000u64;
    let mut r = Replica::new();
    assert_eq!(r.run(t, &[b"GETVER", b"k"]), val(None));
    assert_eq!(r.run(t, &[b"SETVER", b"k", b"5", b"x"]), val(None), "missing key has no version 5");
    assert_eq!(
        r.run(t, &[b"SETVER", b"k", b"0", b"a"]),
        int(2),
        "0: must not exist; answers the new version"
    );
    assert_eq!(r.run(t, &[b"SETVER", b"k", b"0", b"b"]), val(None), "exists now");
    assert_eq!(r.run(t, &[b"GETVER", b"k"]), CommandResult::Array(vec![val(Some(b"a")), int(2)]));
    assert_eq!(r.run(t, &[b"SETVER", b"k", b"2", b"b"]), int(4));
    r.run(t, &[b"APPEND", b"k", b"c"]);
    assert_eq!(r.run(t, &[b"GETVER", b"k"]), CommandResult::Array(vec![val(Some(b"bc")), int(5)]));
    assert_eq!(r.run(t, &[b"SETVER", b"k", b"4", b"z"]), val(None), "version moved");
}

#[test]
fn scan_pages_cover_every_key_present_throughout() {
    let t = 1_700_000_000_000u64;
    let mut r = Replica::new();
    for i in 0..95 {
        r.run(t, &[b"SET", format!("key:{i:03}").as_bytes(), b"v"]);
    }
    r.run(t, &[b"SET", b"other", b"v"]);
    let mut seen = Vec::new();
    let mut start = Vec::new();
    let mut pages = 0;
    loop {
        let scan = Command::ScanKeys {
            start: start.clone(),
            pattern: Some(b"key:*".to_vec()),
            count: 10,
            kind: None,
        };
        let CommandResult::ScanPage { next, keys } = r.sm.read_at(&scan, t) else { panic!("scan page") };
        assert!(keys.len() <= 10);
        seen.extend(keys);
        pages += 1;
        // Keys written and deleted between pages do not disturb the others.
        r.run(t, &[b"DEL", format!("key:{:03}", 94 - pages).as_bytes()]);
        r.run(t, &[b"SET", format!("key:{:03}", 94 - pages).as_bytes(), b"v"]);
        match next {
            Some(n) => start = n,
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 95, "every key:* once at least");
    assert_eq!(pages, 10);
    let keys = Command::Keys { pattern: b"key:00?".to_vec() };
    let CommandResult::Array(found) = r.sm.read_at(&keys, t) else { panic!("keys") };
    assert_eq!(found.len(), 10);
}

#[test]
fn increments_refuse_what_redis_refuses() {
    let t = 1_700_000_000_000u64;
    let mut r = Replica::new();
    r.run(t, &[b"SET", b"n", b"9223372036854775806"]);
    assert_eq!(r.run(t, &[b"INCR", b"n"]), int(i64::MAX));
    assert_eq!(
        r.run(t, &[b"INCR", b"n"]),
        CommandResult::Error("increment or decrement would overflow".into())
    );
    r.run(t, &[b"SET", b"f", b"1.5"]);
    assert_eq!(r.run(t, &[b"INCRBYFLOAT", b"f", b"2.25"]), val(Some(b"3.75")));
    assert_eq!(
        r.run(t, &[b"INCRBYFLOAT", b"f", b"1e308"]),
        val(Some(format!("{}", 1e308 + 3.75).as_bytes()))
    );
    assert_eq!(
        r.run(t, &[b"INCRBYFLOAT", b"f", b"1e308"]),
        CommandResult::Error("increment would produce NaN or Infinity".into())
    );
    assert_eq!(
        r.run(t, &[b"SETRANGE", b"s", b"16777215", b"ab"]),
        CommandResult::Error("string exceeds maximum allowed size (proto-max-bulk-len)".into())
    );
    assert_eq!(r.run(t, &[b"SETRANGE", b"s", b"3", b"ab"]), int(5));
    assert_eq!(r.run(t, &[b"GET", b"s"]), val(Some(b"\0\0\0ab")));
    assert_eq!(r.run(t, &[b"SETRANGE", b"empty", b"3", b""]), int(0));
    assert_eq!(r.run(t, &[b"EXISTS", b"empty"]), int(0));
}
