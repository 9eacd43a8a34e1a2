//! State machine: commands, exactly-once sessions, deterministic eviction, snapshot and restore.

use quorumkv::protocol::command::{ColumnFamily, Command, CommandResult, Proposal, SessionTag};
use quorumkv::storage::{StateMachine, MAX_REPLIES_PER_SESSION};

fn tagged(client_id: u64, seq: u64, command: Command) -> Proposal {
    Proposal { request_id: seq, session: Some(SessionTag { client_id, seq }), command }
}

fn append(key: &str, value: &str) -> Command {
    Command::Append { key: key.into(), value: value.into() }
}

fn get(key: &str) -> Command {
    Command::Get { cf: ColumnFamily::Default, key: key.into() }
}

fn value_of(sm: &mut StateMachine, index: u64, key: &str) -> Option<Vec<u8>> {
    match sm.apply(index, &Proposal { request_id: 0, session: None, command: get(key) }) {
        CommandResult::Value(v) => v,
        other => panic!("GET answered {other:?}"),
    }
}

#[test]
fn a_repeated_seq_returns_the_remembered_reply_without_applying() {
    let mut sm = StateMachine::default();
    assert_eq!(sm.apply(1, &tagged(7, 1, append("k", "ab"))), CommandResult::Integer(2));
    // The client retried after a timeout: the same (client, seq) is committed again.
    assert_eq!(sm.apply(2, &tagged(7, 1, append("k", "ab"))), CommandResult::Integer(2));
    assert_eq!(value_of(&mut sm, 3, "k"), Some(b"ab".to_vec()));
    // Another client with the same seq is a different request.
    assert_eq!(sm.apply(4, &tagged(8, 1, append("k", "c"))), CommandResult::Integer(3));
}

#[test]
fn out_of_order_seqs_apply_once_each() {
    let mut sm = StateMachine::default();
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };
    for seq in [5, 3, 4, 3, 5, 1] {
        sm.apply(next(), &tagged(1, seq, append("k", &seq.to_string())));
    }
    assert_eq!(value_of(&mut sm, next(), "k"), Some(b"5341".to_vec()));
    assert_eq!(sm.apply(next(), &tagged(1, 4, append("k", "4"))), CommandResult::Integer(3));
}

#[test]
fn a_seq_below_the_window_is_refused_as_too_old_and_not_applied() {
    let mut sm = StateMachine::default();
    let total = MAX_REPLIES_PER_SESSION as u64 + 8;
    for seq in 1..=total {
        sm.apply(seq, &tagged(1, seq, append("k", "x")));
    }
    let floor = total - MAX_REPLIES_PER_SESSION as u64;
    let mut index = total;
    for old in [1, floor] {
        index += 1;
        match sm.apply(index, &tagged(1, old, append("k", "x"))) {
            CommandResult::Error(message) => assert!(message.contains("too old"), "{message}"),
            other => panic!("seq {old} answered {other:?}"),
        }
    }
    index += 1;
    assert_eq!(
        sm.apply(index, &tagged(1, floor + 1, append("k", "x"))),
        CommandResult::Integer((floor + 1) as i64)
    );
    index += 1;
    assert_eq!(value_of(&mut sm, index, "k"), Some(vec![b'x'; total as usize]));
}

#[test]
fn reads_with_a_session_are_not_remembered() {
    let mut sm = StateMachine::default();
    sm.apply(1, &tagged(1, 1, get("k")));
    assert_eq!(sm.session_count(), 0);
    sm.apply(
        2,
        &tagged(1, 2, Command::Put { cf: ColumnFamily::Lock, key: b"k".to_vec(), value: b"v".to_vec() }),
    );
    assert_eq!(sm.session_count(), 1);
}

#[test]
fn eviction_drops_the_session_applied_longest_ago_on_every_replica() {
    let commands = [
        tagged(1, 1, append("a", "1")), // index 1
        tagged(2, 1, append("b", "1")), // index 2
        tagged(3, 1, append("c", "1")), // index 3
        tagged(1, 2, append("a", "1")), // index 4: client 1 is now the most recent but one
        tagged(4, 1, append("d", "1")), // index 5: over the bound, client 2 (index 2) goes
        tagged(2, 1, append("b", "1")), // client 2 is new again: applied a second time
        tagged(1, 2, append("a", "1")), // client 1 remembered: not applied
    ];
    let mut replicas = [StateMachine::new(3), StateMachine::new(3)];
    let mut replies = [Vec::new(), Vec::new()];
    for (sm, out) in replicas.iter_mut().zip(replies.iter_mut()) {
        for (i, proposal) in commands.iter().enumerate() {
            out.push(sm.apply(i as u64 + 1, proposal));
        }
        assert_eq!(sm.session_count(), 3);
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replicas[0], replicas[1]);
    assert_eq!(replies[0][5], CommandResult::Integer(2), "evicted client treated as new");
    assert_eq!(replies[0][6], CommandResult::Integer(2), "remembered client deduplicated");
}

#[test]
fn remembered_replies_are_bounded_in_bytes_evicting_the_oldest_sessions_then_a_sessions_oldest_replies() {
    use quorumkv::storage::{remembered_bytes, SessionCheck, SessionTable, MAX_SESSION_REPLY_BYTES};
    let big = || CommandResult::Value(Some(vec![0u8; MAX_SESSION_REPLY_BYTES / 4]));
    let each = remembered_bytes(&big());
    let tag = |client_id, seq| SessionTag { client_id, seq };
    let mut table = SessionTable::new(100);
    let mut index = 0;
    let mut record = |table: &mut SessionTable, client, seq, reply| {
        index += 1;
        table.record(tag(client, seq), index, reply);
    };
    record(&mut table, 9, 1, CommandResult::Ok);
    for client in 1..=3 {
        record(&mut table, client, 1, big());
    }
    assert_eq!(table.len(), 4, "within the bound: nothing evicted");
    assert_eq!(table.reply_bytes(), 3 * each + remembered_bytes(&CommandResult::Ok));
    record(&mut table, 4, 1, big());
    assert!(table.reply_bytes() <= MAX_SESSION_REPLY_BYTES, "{}", table.reply_bytes());
    assert_eq!(table.check(tag(9, 1)), SessionCheck::Fresh, "the session applied longest ago went first");
    assert_eq!(table.check(tag(1, 1)), SessionCheck::Fresh, "and the next, until under the bound");
    for client in 2..=4 {
        assert!(matches!(table.check(tag(client, 1)), SessionCheck::Duplicate(_)), "client {client}");
    }
    // One session writing large replies past the bound: its own oldest replies go first (too
    // old now), not the other clients' sessions.
    for seq in 2..=6 {
        record(&mut table, 4, seq, big());
    }
    assert!(table.reply_bytes() <= MAX_SESSION_REPLY_BYTES, "{}", table.reply_bytes());
    assert_eq!(table.len(), 3, "clients 2 and 3 kept");
    for seq in 1..=5 {
        assert_eq!(table.check(tag(4, seq)), SessionCheck::TooOld, "seq {seq} never applied twice");
    }
    assert!(matches!(table.check(tag(4, 6)), SessionCheck::Duplicate(_)), "the latest reply kept");
    for client in 2..=3 {
        assert!(matches!(table.check(tag(client, 1)), SessionCheck::Duplicate(_)), "client {client}");
    }
    // A reply past the bound alone is still remembered (a session keeps at least its highest
    // seq); every other session goes.
    let huge = CommandResult::Value(Some(vec![0u8; MAX_SESSION_REPLY_BYTES + 1]));
    let huge_bytes = remembered_bytes(&huge);
    record(&mut table, 4, 7, huge);
    assert!(matches!(table.check(tag(4, 7)), SessionCheck::Duplicate(_)));
    assert_eq!(table.len(), 1);
    assert_eq!(table.reply_bytes(), huge_bytes);
}

// Many clients with small replies and one whose replies are large (16 MiB each, GETSET of big
// values): past the byte bound the large one gives up its own oldest replies; the others keep
// their sessions, so their retries stay exactly-once.
#[test]
fn one_client_with_large_replies_does_not_evict_the_others() {
    use quorumkv::storage::{SessionCheck, SessionTable};
    let tag = |client_id, seq| SessionTag { client_id, seq };
    let mut table = SessionTable::new(1000);
    let mut index = 0;
    for client in 1..=100 {
        index += 1;
        table.record(tag(client, 1), index, CommandResult::Integer(1));
    }
    let large = || CommandResult::Value(Some(vec![0u8; 16 << 20]));
    for seq in 1..=40 {
        index += 1;
        table.record(tag(500, seq), index, large());
    }
    assert_eq!(table.len(), 101, "no small session evicted");
    for client in 1..=100 {
        assert_eq!(table.check(tag(client, 1)), SessionCheck::Duplicate(CommandResult::Integer(1)));
    }
    assert_eq!(table.check(tag(500, 1)), SessionCheck::TooOld, "the large client's own oldest went");
    assert!(matches!(table.check(tag(500, 40)), SessionCheck::Duplicate(_)));
}

/// A deterministic stream of mixed commands from a few clients, from `seed`.
fn workload(seed: u64, count: usize) -> Vec<Proposal> {
    let mut rng = seed;
    let mut out = Vec::new();
    let mut seqs = [0u64; 8];
    for _ in 0..count {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("k{}", rng % 13);
        let cf = ColumnFamily::ALL[(rng >> 8) as usize % 3];
        let command = match (rng >> 16) % 6 {
            0 => Command::Put { cf, key: key.into(), value: (rng >> 20).to_string().into() },
            1 => append(&key, "+"),
            2 => Command::Delete { cf, keys: vec![key.clone().into(), format!("k{}", rng % 5).into()] },
            3 => Command::Scan { cf, start: key.into(), limit: (rng >> 24) % 5 },
            4 => Command::Exists { keys: vec![key.clone().into(), key.into()] },
            _ => get(&key),
        };
        let client = (rng >> 32) % 8;
        // Mostly new seqs, sometimes a retry of a recent or a very old one.
        let seq = match (rng >> 40) % 10 {
            0 => seqs[client as usize].saturating_sub((rng >> 44) % 40),
            _ => {
                seqs[client as usize] += 1;
                seqs[client as usize]
            }
        };
        let session = (!(rng >> 48).is_multiple_of(4)).then_some(SessionTag { client_id: client, seq });
        out.push(Proposal { request_id: 0, session, command });
    }
    out
}

#[test]
fn snapshot_then_restore_gives_identical_state_and_future_replies() {
    for seed in [1u64, 0xdead_beef, 42] {
        let commands = workload(seed, 600);
        let (before, after) = commands.split_at(300);
        // A small session bound so eviction happens on both sides of the snapshot.
        let mut original = StateMachine::new(5);
        let mut index = 0;
        for proposal in before {
            index += 1;
            if index % 50 == 0 {
                original.apply_empty(index);
                index += 1;
            }
            original.apply(index, proposal);
        }
        let image = original.snapshot().expect("snapshot");
        let mut restored = StateMachine::restore(&image).expect("restore");
        assert_eq!(restored, original, "seed {seed}");
        assert_eq!(restored.applied_index(), index);
        for proposal in after {
            index += 1;
            let expected = original.apply(index, proposal);
            assert_eq!(restored.apply(index, proposal), expected, "seed {seed} index {index}");
        }
        assert_eq!(restored, original, "seed {seed}");
        assert_eq!(restored.snapshot().expect("snapshot"), original.snapshot().expect("snapshot"));
    }
}

// One RAWSCAN reply is bounded in bytes (at least one pair), and read_reply_bytes predicts exactly
// what read answers, so the applier can reserve a reply before copying it.
#[test]
fn a_scan_reply_is_bounded_in_bytes_and_its_size_is_known_before_copying() {
    use quorumkv::storage::state_machine::MAX_SCAN_REPLY_BYTES;
    let mut sm = StateMachine::default();
    let value = vec![b'v'; 1024 * 1024];
    for i in 0..40u64 {
        let put = Command::Put {
            cf: ColumnFamily::Write,
            key: format!("k{i:02}").into_bytes(),
            value: value.clone(),
        };
        sm.apply(i + 1, &Proposal { request_id: i, session: None, command: put });
    }
    let scan = Command::Scan { cf: ColumnFamily::Write, start: Vec::new(), limit: 10_000 };
    let CommandResult::Pairs(pairs) = sm.read(&scan) else { panic!("scan") };
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(bytes <= MAX_SCAN_REPLY_BYTES && pairs.len() < 40, "{} pairs, {bytes} bytes", pairs.len());
    assert_eq!(pairs.len(), MAX_SCAN_REPLY_BYTES / (1024 * 1024 + 3));
    assert_eq!(sm.read_reply_bytes(&scan, 0), bytes);
    // A client goes on from after the last key and gets the rest.
    let next = pairs.last().map(|(k, _)| [k.as_slice(), b"\0"].concat()).expect("a pair");
    let rest = Command::Scan { cf: ColumnFamily::Write, start: next, limit: 10_000 };
    let CommandResult::Pairs(more) = sm.read(&rest) else { panic!("scan") };
    assert_eq!(pairs.len() + more.len(), 40);
    // The size of a one-pair scan and of a GET, as answered.
    let small = Command::Scan { cf: ColumnFamily::Write, start: b"k39".to_vec(), limit: 1 };
    assert_eq!(sm.read_reply_bytes(&small, 0), 1024 * 1024 + 3);
    let get = Command::Get { cf: ColumnFamily::Write, key: b"k00".to_vec() };
    assert_eq!(sm.read_reply_bytes(&get, 0), 1024 * 1024);
}

// read_within asks for exactly the bytes read_reply_bytes counts, answers what read_at answers
// when they are granted, and copies nothing when they are refused: for a GET (its own one-lookup
// path, present and missing) and for the other reads (counted, then read).
#[test]
fn read_within_reserves_what_read_reply_bytes_counts_and_answers_what_read_answers() {
    let mut sm = StateMachine::default();
    let put = |key: &str, value: &[u8]| Command::Put {
        cf: ColumnFamily::Default,
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
    };
    sm.apply(1, &Proposal { request_id: 1, session: None, command: put("a", b"hello") });
    sm.apply(2, &Proposal { request_id: 2, session: None, command: put("b", &[7; 300]) });
    let reads = [
        Command::Get { cf: ColumnFamily::Default, key: b"a".to_vec() },
        Command::Get { cf: ColumnFamily::Default, key: b"missing".to_vec() },
        Command::Get { cf: ColumnFamily::Write, key: b"a".to_vec() },
        Command::MGet { keys: vec![b"a".to_vec(), b"b".to_vec(), b"missing".to_vec()] },
        Command::Scan { cf: ColumnFamily::Default, start: Vec::new(), limit: 10 },
        Command::Exists { keys: vec![b"a".to_vec()] },
    ];
    for command in &reads {
        let expected_bytes = sm.read_reply_bytes(command, 0);
        let mut asked = None;
        let granted = sm.read_within(command, 0, |bytes| {
            asked = Some(bytes);
            true
        });
        assert_eq!(asked, Some(expected_bytes), "{command:?}");
        assert_eq!(granted, Some((sm.read_at(command, 0), expected_bytes)), "{command:?}");
        assert_eq!(sm.read_within(command, 0, |_| false), None, "{command:?}");
    }
    let get_a = sm.read_within(&reads[0], 0, |_| true);
    assert_eq!(get_a, Some((CommandResult::Value(Some(b"hello".to_vec())), 5)));
}

// A session over its share that sits just under the byte bound gives way when other clients'
// small writes tip it: its own oldest replies go, not the other sessions (which, evicted one by
// one, would lose their exactly-once retries).
#[test]
fn a_session_over_its_share_gives_way_when_others_tip_the_bound() {
    use quorumkv::storage::{remembered_bytes, SessionCheck, SessionTable, MAX_SESSION_REPLY_BYTES};
    let tag = |client_id, seq| SessionTag { client_id, seq };
    let overhead = remembered_bytes(&CommandResult::Value(Some(Vec::new())));
    let small = remembered_bytes(&CommandResult::Integer(1));
    // Sixteen replies of one client fill the bound but for room for ten small ones.
    let each = (MAX_SESSION_REPLY_BYTES - 10 * small) / 16;
    let mut table = SessionTable::new(1000);
    let mut index = 0;
    for seq in 1..=16 {
        index += 1;
        table.record(tag(500, seq), index, CommandResult::Value(Some(vec![0u8; each - overhead])));
    }
    assert_eq!(
        table.check(tag(500, 1)),
        SessionCheck::Duplicate(CommandResult::Value(Some(vec![0u8; each - overhead])))
    );
    for client in 1..=100 {
        index += 1;
        table.record(tag(client, 1), index, CommandResult::Integer(1));
    }
    assert!(table.reply_bytes() <= MAX_SESSION_REPLY_BYTES);
    assert_eq!(table.len(), 101, "no small session evicted");
    for client in 1..=100 {
        assert_eq!(table.check(tag(client, 1)), SessionCheck::Duplicate(CommandResult::Integer(1)));
    }
    assert_eq!(table.check(tag(500, 1)), SessionCheck::TooOld, "the large session's oldest went");
}
