//! The linearizability checker itself: hand-written good and bad histories, partitioning by key,
//! seeded random histories from a simulated store (and a corrupted read in each), pipelined
//! histories and the connection-order rule, speed on a 1,000-operation history, the time budget,
//! and the recorder.
//!
//! `LIN_SEED=n` replays one seed of the random test; `LIN_SEEDS=n` sets how many run (default 200).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::linearizability::{check_history, CheckResult, HistoryRecorder, KvInput, KvOutput, Operation};
use quorumkv::protocol::rng::Rng;

const BUDGET: Duration = Duration::from_secs(10);
const ABSENT: KvOutput = KvOutput::Value(None);
const UNKNOWN: u64 = u64::MAX;

fn put(value: &str) -> KvInput {
    KvInput::Put(value.into())
}

fn append(value: &str) -> KvInput {
    KvInput::Append(value.into())
}

fn val(value: &str) -> KvOutput {
    KvOutput::Value(Some(value.into()))
}

/// An operation on key "k"; `return_us == UNKNOWN` makes it an operation that never completed.
fn op(client: u64, input: KvInput, output: KvOutput, call_us: u64, return_us: u64) -> Operation {
    let output = if return_us == UNKNOWN { KvOutput::Unknown } else { output };
    Operation { client, key: b"k".to_vec(), input, output, call_us, return_us, connection: None }
}

fn assert_ok(ops: &[Operation]) {
    let result = check_history(ops, BUDGET);
    assert_eq!(result, CheckResult::Ok, "expected linearizable: {ops:#?}");
}

fn assert_illegal(ops: &[Operation]) -> String {
    match check_history(ops, BUDGET) {
        CheckResult::Illegal { key, explanation } => {
            assert_eq!(key, b"k");
            explanation
        }
        other => panic!("expected Illegal, got {other:?} for {ops:#?}"),
    }
}

// ---- known good -------------------------------------------------------------------------------

#[test]
fn sequential_history_is_linearizable() {
    let mut ops = vec![
        op(1, KvInput::Get, ABSENT, 0, 1),
        op(1, put("a"), KvOutput::Ok, 2, 3),
        op(2, KvInput::Get, val("a"), 4, 5),
        op(1, append("b"), KvOutput::Ok, 6, 7),
        op(2, KvInput::Get, val("ab"), 8, 9),
        op(3, KvInput::Delete, KvOutput::Ok, 10, 11),
        op(2, KvInput::Get, ABSENT, 12, 13),
        op(3, append("c"), KvOutput::Ok, 14, 15),
        op(1, KvInput::Get, val("c"), 16, 17),
    ];
    assert_ok(&ops);
    // The same history with the last read replaced by the value before the delete is not.
    ops[8].output = val("ab");
    assert_illegal(&ops);
}

#[test]
fn overlapping_puts_let_a_get_see_either_value() {
    let history = |during: KvOutput, after: KvOutput| {
        vec![
            op(1, put("a"), KvOutput::Ok, 0, 100),
            op(2, put("b"), KvOutput::Ok, 10, 90),
            op(3, KvInput::Get, during, 50, 60),
            op(3, KvInput::Get, after, 200, 210),
        ]
    };
    for during in [val("a"), val("b"), ABSENT] {
        for after in ["a", "b"] {
            // The read during the puts fits before, between or after them in either order.
            assert_ok(&history(during.clone(), val(after)));
        }
    }
    // After both puts returned, the key cannot be absent.
    assert_illegal(&history(val("a"), ABSENT));
}

#[test]
fn concurrent_appends_are_seen_in_an_order_consistent_with_real_time() {
    let ops = vec![
        op(1, append("x"), KvOutput::Ok, 0, 100),
        op(2, append("y"), KvOutput::Ok, 5, 95),
        op(3, append("z"), KvOutput::Ok, 10, 90),
        op(4, KvInput::Get, val("z"), 20, 30),
        op(4, KvInput::Get, val("zx"), 40, 50),
        op(5, KvInput::Get, val("zxy"), 45, 120),
        op(4, KvInput::Get, val("zxy"), 130, 140),
        // A later append lands after all three.
        op(1, append("w"), KvOutput::Ok, 150, 160),
        op(2, KvInput::Get, val("zxyw"), 170, 180),
    ];
    assert_ok(&ops);
}

#[test]
fn unknown_put_that_is_later_observed_is_linearizable() {
    // Observed long after the client gave up.
    assert_ok(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, put("b"), KvOutput::Ok, 20, UNKNOWN),
        op(3, KvInput::Get, val("b"), 1000, 1010),
    ]);
    // Taking effect late: first the old value is read, then the new one.
    assert_ok(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, put("b"), KvOutput::Ok, 20, UNKNOWN),
        op(3, KvInput::Get, val("a"), 30, 40),
        op(3, KvInput::Get, val("b"), 50, 60),
        op(3, KvInput::Get, val("b"), 70, 80),
    ]);
}

#[test]
fn unknown_writes_never_observed_are_linearizable() {
    let ops = vec![
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, put("b"), KvOutput::Ok, 20, UNKNOWN),
        op(2, append("c"), KvOutput::Ok, 25, UNKNOWN),
        op(2, KvInput::Delete, KvOutput::Ok, 27, UNKNOWN),
        op(3, KvInput::Get, val("a"), 30, 40),
        op(1, append("d"), KvOutput::Ok, 50, 60),
        op(3, KvInput::Get, val("ad"), 70, 80),
        // A read that never completed constrains nothing.
        op(4, KvInput::Get, KvOutput::Unknown, 5, UNKNOWN),
    ];
    assert_ok(&ops);
}

#[test]
fn deletes_are_linearizable() {
    assert_ok(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, KvInput::Delete, KvOutput::Ok, 20, 30),
        op(3, KvInput::Get, ABSENT, 40, 50),
        // Deleting an absent key is fine, and appending recreates it.
        op(2, KvInput::Delete, KvOutput::Ok, 60, 70),
        op(1, append("c"), KvOutput::Ok, 80, 90),
        op(3, KvInput::Get, val("c"), 100, 110),
    ]);
    // A delete concurrent with reads: one read sees the value, a later one does not.
    assert_ok(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, KvInput::Delete, KvOutput::Ok, 20, 100),
        op(3, KvInput::Get, val("a"), 30, 40),
        op(3, KvInput::Get, ABSENT, 50, 60),
    ]);
    // But once the delete returned, the value cannot come back.
    assert_illegal(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, KvInput::Delete, KvOutput::Ok, 20, 30),
        op(3, KvInput::Get, val("a"), 40, 50),
    ]);
}

// ---- known bad --------------------------------------------------------------------------------

#[test]
fn get_of_a_value_never_written_is_illegal() {
    let explanation = assert_illegal(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, put("b"), KvOutput::Ok, 5, 15),
        op(3, KvInput::Get, val("zzz"), 8, 20),
    ]);
    let stuck = explanation.lines().find(|line| line.starts_with(">>")).expect("a >> line");
    assert!(stuck.contains(r#"Get -> "zzz""#), "{explanation}");
}

#[test]
fn stale_read_is_illegal() {
    let explanation = assert_illegal(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(1, put("b"), KvOutput::Ok, 20, 30),
        op(2, KvInput::Get, val("a"), 40, 50),
    ]);
    assert!(explanation.contains(r#"leaving the state "b""#), "{explanation}");
    let stuck = explanation.lines().find(|line| line.starts_with(">>")).expect("a >> line");
    assert!(stuck.contains(r#"Get -> "a""#) && stuck.contains("40") && stuck.contains("50"), "{explanation}");
}

#[test]
fn gets_seeing_appends_in_contradictory_orders_are_illegal() {
    // Even fully concurrent reads cannot disagree on the order of two appends.
    assert_illegal(&[
        op(1, append("x"), KvOutput::Ok, 0, 100),
        op(2, append("y"), KvOutput::Ok, 0, 100),
        op(3, KvInput::Get, val("xy"), 50, 300),
        op(4, KvInput::Get, val("yx"), 50, 300),
    ]);
    // One of them alone is fine.
    assert_ok(&[
        op(1, append("x"), KvOutput::Ok, 0, 100),
        op(2, append("y"), KvOutput::Ok, 0, 100),
        op(4, KvInput::Get, val("yx"), 50, 300),
    ]);
}

#[test]
fn read_going_back_in_time_is_illegal() {
    let history = |second_call: u64| {
        vec![
            op(1, put("a"), KvOutput::Ok, 0, 10),
            op(2, put("b"), KvOutput::Ok, 20, 100),
            op(3, KvInput::Get, val("b"), 30, 40),
            op(4, KvInput::Get, val("a"), second_call, 60),
        ]
    };
    // The second read starts after the first returned: it cannot see the older value.
    assert_illegal(&history(50));
    // Had the two reads overlapped, the second could have been ordered first.
    assert_ok(&history(35));
}

#[test]
fn lost_acknowledged_append_is_illegal() {
    let ops = vec![
        op(1, append("x"), KvOutput::Ok, 0, 10),
        op(2, append("y"), KvOutput::Ok, 5, 20),
        op(3, KvInput::Get, val("x"), 30, 40),
    ];
    assert_illegal(&ops);
    // If the second append had not been acknowledged, losing it would be allowed.
    let mut unacknowledged = ops;
    unacknowledged[1].return_us = UNKNOWN;
    unacknowledged[1].output = KvOutput::Unknown;
    assert_ok(&unacknowledged);
}

#[test]
fn unknown_write_cannot_act_before_its_call_or_be_undone() {
    // Seen before it was even sent.
    assert_illegal(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(3, KvInput::Get, val("b"), 12, 15),
        op(2, put("b"), KvOutput::Ok, 20, UNKNOWN),
    ]);
    // Seen, then gone again with nothing in between.
    assert_illegal(&[
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(2, put("b"), KvOutput::Ok, 20, UNKNOWN),
        op(3, KvInput::Get, val("b"), 30, 40),
        op(3, KvInput::Get, val("a"), 50, 60),
    ]);
}

// ---- pipelined operations: the order of a connection ----------------------------------------

/// Operations of connection `connection` pipelined together (same call time, replies in order).
fn on(connection: u64, mut op: Operation) -> Operation {
    op.connection = Some(connection);
    op
}

#[test]
fn pipelined_writes_take_effect_in_the_order_sent() {
    // Both puts were sent at 0 and answered in order; a later read sees the first one's value,
    // which only an order against the connection's explains.
    let ops = vec![
        op(1, put("a"), KvOutput::Ok, 0, 10),
        op(1, put("b"), KvOutput::Ok, 0, 11),
        op(2, KvInput::Get, val("a"), 20, 30),
    ];
    assert_ok(&ops);
    let pipelined: Vec<Operation> =
        ops.iter().take(2).map(|o| on(7, o.clone())).chain([ops[2].clone()]).collect();
    let explanation = assert_illegal(&pipelined);
    assert!(explanation.contains("(connection 7)"), "{explanation}");
    // On two connections, they may land either way.
    assert_ok(&[on(7, ops[0].clone()), on(8, ops[1].clone()), ops[2].clone()]);
}

#[test]
fn pipelined_read_sees_the_writes_sent_before_it_and_not_after() {
    assert_ok(&[op(1, put("a"), KvOutput::Ok, 0, 10), op(1, KvInput::Get, ABSENT, 0, 11)]);
    assert_illegal(&[on(1, op(1, put("a"), KvOutput::Ok, 0, 10)), on(1, op(1, KvInput::Get, ABSENT, 0, 11))]);
    assert_ok(&[on(1, op(1, KvInput::Get, ABSENT, 0, 10)), on(1, op(1, put("a"), KvOutput::Ok, 0, 11))]);
    assert_illegal(&[
        on(1, op(1, KvInput::Get, val("a"), 0, 10)),
        on(1, op(1, put("a"), KvOutput::Ok, 0, 11)),
    ]);
    // Appends of one connection in order: their lengths say so too.
    assert_illegal(&[
        on(1, op(1, append("x"), KvOutput::Length(2), 0, 10)),
        on(1, op(1, append("y"), KvOutput::Length(1), 0, 11)),
    ]);
}

#[test]
fn unknown_operation_of_a_connection_is_not_ordered() {
    // A write refused with TRYAGAIN may still take effect later, after the connection's next one.
    assert_ok(&[
        on(1, op(1, put("a"), KvOutput::Ok, 0, UNKNOWN)),
        on(1, op(1, put("b"), KvOutput::Ok, 0, 11)),
        op(2, KvInput::Get, val("a"), 20, 30),
    ]);
    // But the known operations on either side of it keep their order.
    assert_illegal(&[
        on(1, op(1, put("a"), KvOutput::Ok, 0, 10)),
        on(1, op(1, put("x"), KvOutput::Ok, 0, UNKNOWN)),
        on(1, op(1, put("b"), KvOutput::Ok, 0, 11)),
        op(2, KvInput::Get, val("a"), 20, 30),
    ]);
}

// ---- partitioning and explanations ------------------------------------------------------------

#[test]
fn bad_key_among_many_good_keys_is_reported() {
    let mut ops = Vec::new();
    for k in 0..50u64 {
        let key = format!("key{k}").into_bytes();
        let t = k; // interleave the keys in time
        let mut add = |client, input, output, call_us, return_us| {
            ops.push(Operation {
                client,
                key: key.clone(),
                input,
                output,
                call_us,
                return_us,
                connection: None,
            })
        };
        add(1, put("a"), KvOutput::Ok, t, t + 100);
        add(2, put("b"), KvOutput::Ok, t + 200, t + 300);
        let read = if k == 17 { val("a") } else { val("b") }; // key17 reads stale data
        add(3, KvInput::Get, read, t + 400, t + 500);
    }
    match check_history(&ops, BUDGET) {
        CheckResult::Illegal { key, explanation } => {
            assert_eq!(key, b"key17");
            assert!(explanation.starts_with(r#"key "key17""#), "{explanation}");
        }
        other => panic!("expected key17 to be Illegal, got {other:?}"),
    }
}

#[test]
fn explanation_shows_the_stuck_operation_and_not_the_unrelated_past() {
    let mut ops = Vec::new();
    for i in 0..30u64 {
        ops.push(op(9, put(&format!("old{i}")), KvOutput::Ok, i * 10, i * 10 + 5));
    }
    ops.push(op(1, put("a"), KvOutput::Ok, 1000, 1010));
    ops.push(op(1, put("b"), KvOutput::Ok, 1020, 1030));
    ops.push(op(2, KvInput::Get, val("a"), 1040, 1050));
    let explanation = assert_illegal(&ops);
    let lines: Vec<&str> = explanation.lines().collect();
    // Two header lines, the column titles, and a few operations: not all 33.
    assert!(lines.len() <= 3 + 5, "{explanation}");
    assert!(!explanation.contains("old0"), "{explanation}");
    assert!(explanation.contains(r#"Put("b") -> Ok"#), "{explanation}");
    let stuck: Vec<&&str> = lines.iter().filter(|line| line.starts_with(">>")).collect();
    assert_eq!(stuck.len(), 1, "{explanation}");
    let columns: Vec<&str> = stuck[0].split_whitespace().collect();
    assert_eq!(&columns[..5], [">>", "1040", "1050", "2", "-"], "{explanation}");
    // Sorted by call time.
    let calls: Vec<u64> =
        lines[3..].iter().map(|line| line[2..].split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert!(calls.windows(2).all(|w| w[0] <= w[1]), "{explanation}");
}

// ---- random histories -------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Percentages of each kind of operation, and of writes whose client never hears back.
struct Mix {
    get: u64,
    put: u64,
    append: u64,
    delete: u64,
    unknown: u64,
}

const ALL_KINDS: Mix = Mix { get: 35, put: 20, append: 35, delete: 10, unknown: 5 };

/// A random operation of `mix`, with values unique to operation `i`.
fn draw_input(rng: &mut Rng, mix: &Mix, i: usize) -> KvInput {
    let roll = rng.range(0, mix.get + mix.put + mix.append + mix.delete);
    if roll < mix.get {
        KvInput::Get
    } else if roll < mix.get + mix.put {
        KvInput::Put(format!("p{i}").into_bytes())
    } else if roll < mix.get + mix.put + mix.append {
        KvInput::Append(format!("a{i},").into_bytes())
    } else {
        KvInput::Delete
    }
}

/// Carries `input` out on `store` (a write only if `takes_effect`) and gives what it answers.
fn take_effect(
    store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    key: &[u8],
    input: &KvInput,
    takes_effect: bool,
) -> KvOutput {
    match input {
        KvInput::Get => KvOutput::Value(store.get(key).cloned()),
        KvInput::Put(value) if takes_effect => {
            store.insert(key.to_vec(), value.clone());
            KvOutput::Ok
        }
        KvInput::Append(suffix) if takes_effect => {
            store.entry(key.to_vec()).or_default().extend_from_slice(suffix);
            KvOutput::Ok
        }
        KvInput::Delete if takes_effect => {
            store.remove(key);
            KvOutput::Ok
        }
        _ => KvOutput::Ok,
    }
}

/// Gives some reads (40 %) a value seen elsewhere in `ops`, or absence.
fn corrupt_reads(rng: &mut Rng, ops: &mut [Operation]) {
    let mut values: Vec<Option<Vec<u8>>> = vec![None];
    for op in ops.iter() {
        match (&op.input, &op.output) {
            (KvInput::Put(value), _) | (KvInput::Append(value), _) => values.push(Some(value.clone())),
            (KvInput::Get, KvOutput::Value(value)) => values.push(value.clone()),
            _ => {}
        }
    }
    for op in ops.iter_mut() {
        if matches!(op.output, KvOutput::Value(_)) && rng.chance(0.4) {
            op.output = KvOutput::Value(values[rng.range(0, values.len() as u64) as usize].clone());
        }
    }
}

/// Checks `ops` and asserts the verdict is the brute force's; returns that verdict.
fn agrees_with_brute_force(seed: u64, ops: &[Operation]) -> bool {
    let expected = brute_force_linearizable(ops);
    let got = check_history(ops, BUDGET);
    assert!(got != CheckResult::Timeout, "seed {seed} (replay: LIN_SEED={seed}): timed out");
    assert_eq!(
        got == CheckResult::Ok,
        expected,
        "seed {seed} (replay: LIN_SEED={seed}): checker says {got:?}, brute force says {expected}: {ops:#?}"
    );
    expected
}

/// A history of a real sequential store: each operation takes effect at its own instant, and its
/// call and return are drawn around that instant, respecting that a client does one thing at a
/// time. An unknown write takes effect or not, by a coin flip.
fn linearizable_history(rng: &mut Rng, clients: u64, n_ops: usize, keys: u64, mix: &Mix) -> Vec<Operation> {
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut free_at = vec![0u64; clients as usize];
    let mut now = 0u64;
    let mut ops = Vec::with_capacity(n_ops);
    for i in 0..n_ops {
        now += rng.range(1, 20);
        now = now.max(*free_at.iter().min().unwrap());
        let free: Vec<usize> = (0..free_at.len()).filter(|&c| free_at[c] <= now).collect();
        let client = free[rng.range(0, free.len() as u64) as usize];
        let call_us = free_at[client].max(now.saturating_sub(rng.range(0, 40)));
        let return_us = now + rng.range(0, 40);
        free_at[client] = return_us + 1;
        let key = format!("key{}", rng.range(0, keys)).into_bytes();
        let input = draw_input(rng, mix, i);
        let unknown = rng.range(0, 100) < mix.unknown;
        let takes_effect = !unknown || rng.chance(0.5);
        let output = take_effect(&mut store, &key, &input, takes_effect);
        let (output, return_us) = if unknown { (KvOutput::Unknown, u64::MAX) } else { (output, return_us) };
        ops.push(Operation {
            client: client as u64 + 1,
            key,
            input,
            output,
            call_us,
            return_us,
            connection: None,
        });
    }
    ops
}

#[test]
fn random_store_histories_pass_and_fail_once_a_read_is_corrupted() {
    let seeds: Vec<u64> = match env_u64("LIN_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("LIN_SEEDS").unwrap_or(200)).collect(),
    };
    let mut corrupted = 0;
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let clients = rng.range(3, 6);
        let n_ops = rng.range(30, 61) as usize;
        let keys = rng.range(1, 4);
        let mut ops = linearizable_history(&mut rng, clients, n_ops, keys, &ALL_KINDS);
        let result = check_history(&ops, BUDGET);
        assert_eq!(result, CheckResult::Ok, "seed {seed} (replay: LIN_SEED={seed}): {ops:#?}");

        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].input == KvInput::Get && ops[i].output != KvOutput::Unknown)
            .collect();
        if reads.is_empty() {
            continue;
        }
        let victim = reads[rng.range(0, reads.len() as u64) as usize];
        ops[victim].output = val("never-written");
        match check_history(&ops, BUDGET) {
            CheckResult::Illegal { key, explanation } => {
                assert_eq!(key, ops[victim].key, "seed {seed} (replay: LIN_SEED={seed})");
                assert!(explanation.contains("never-written"), "seed {seed}: {explanation}");
            }
            other => panic!("seed {seed} (replay: LIN_SEED={seed}): corrupted read gave {other:?}"),
        }
        corrupted += 1;
    }
    assert!(corrupted > 0, "no seed had a read to corrupt");
}

/// The definition, by brute force: some order of all known operations and some of the unknown
/// ones, respecting real time and the order of each connection's known operations, that the
/// key-value semantics accept. For one key, a few operations.
fn brute_force_linearizable(ops: &[Operation]) -> bool {
    fn apply(state: &Option<Vec<u8>>, op: &Operation) -> Option<Option<Vec<u8>>> {
        let unknown = op.output == KvOutput::Unknown;
        match &op.input {
            KvInput::Get => (unknown || op.output == KvOutput::Value(state.clone())).then(|| state.clone()),
            _ if !(unknown || op.output == KvOutput::Ok) => None,
            KvInput::Put(value) => Some(Some(value.clone())),
            KvInput::Append(suffix) => {
                Some(Some([state.clone().unwrap_or_default(), suffix.clone()].concat()))
            }
            KvInput::Delete => Some(None),
        }
    }
    fn search(ops: &[Operation], placed: &mut [bool], state: Option<Vec<u8>>) -> bool {
        let known = |i: usize| ops[i].output != KvOutput::Unknown;
        if (0..ops.len()).all(|i| placed[i] || !known(i)) {
            return true;
        }
        let unplaced: Vec<usize> = (0..ops.len()).filter(|&i| !placed[i]).collect();
        for next in unplaced {
            // Everything known that returned before this call must come first.
            // And everything known sent before it on its connection.
            let waits = (0..ops.len()).any(|p| {
                let sent_before =
                    p < next && ops[p].connection.is_some() && ops[p].connection == ops[next].connection;
                !placed[p] && known(p) && (ops[p].return_us < ops[next].call_us || sent_before)
            });
            if waits {
                continue;
            }
            if let Some(after) = apply(&state, &ops[next]) {
                placed[next] = true;
                if search(ops, placed, after) {
                    return true;
                }
                placed[next] = false;
            }
        }
        false
    }
    search(ops, &mut vec![false; ops.len()], None)
}

#[test]
fn small_random_histories_agree_with_brute_force() {
    let seeds: Vec<u64> = match env_u64("LIN_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("LIN_SEEDS").unwrap_or(200) * 5).collect(),
    };
    // Half the seeds only append and read, where the checker's prefix shortcut applies.
    let mixes = [
        Mix { get: 40, put: 20, append: 30, delete: 10, unknown: 15 },
        Mix { get: 45, put: 0, append: 55, delete: 0, unknown: 10 },
    ];
    let (mut legal, mut illegal) = (0, 0);
    for &seed in &seeds {
        let mix = &mixes[seed as usize % 2];
        let mut rng = Rng::new(seed);
        let clients = rng.range(2, 4);
        let n_ops = rng.range(2, 9) as usize;
        let mut ops = linearizable_history(&mut rng, clients, n_ops, 1, mix);
        corrupt_reads(&mut rng, &mut ops);
        if agrees_with_brute_force(seed, &ops) {
            legal += 1;
        } else {
            illegal += 1;
        }
    }
    println!("{legal} linearizable, {illegal} not");
    let enough = seeds.len() / 10;
    assert!(legal >= enough && illegal >= enough, "{legal} legal, {illegal} illegal");
}

/// A history of a real sequential store whose clients pipeline: each client sends one to
/// `pipeline` operations at once on its connection (a fresh one now and then), which take effect
/// one by one in the order sent, interleaved with other clients', and are answered in that order.
/// An unknown operation takes effect or not, by a coin flip, in its place in that order.
fn pipelined_history(
    rng: &mut Rng,
    clients: u64,
    n_ops: usize,
    keys: u64,
    pipeline: u64,
    mix: &Mix,
) -> Vec<Operation> {
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut ops: Vec<Operation> = Vec::with_capacity(n_ops);
    // Per client: its connection, the operations sent and not yet in effect, when it may send.
    let mut connection: Vec<u64> = (0..clients).collect();
    let mut in_flight: Vec<Vec<usize>> = vec![Vec::new(); clients as usize];
    let mut free_at = vec![0u64; clients as usize];
    let mut next_connection = clients;
    let mut now = 0u64;
    while ops.len() < n_ops || in_flight.iter().any(|f| !f.is_empty()) {
        now += rng.range(1, 20);
        let c = rng.range(0, clients) as usize;
        if let Some(&i) = in_flight[c].first() {
            in_flight[c].remove(0);
            let unknown = rng.range(0, 100) < mix.unknown;
            let takes_effect = !unknown || rng.chance(0.5);
            let output = take_effect(&mut store, &ops[i].key, &ops[i].input, takes_effect);
            // Answers come in order: never before the one sent before it.
            let answered =
                ops[..i].iter().rev().find(|o| o.client == ops[i].client && o.return_us != UNKNOWN);
            let return_us = (now + rng.range(0, 40)).max(answered.map_or(0, |o| o.return_us));
            if unknown {
                (ops[i].output, ops[i].return_us) = (KvOutput::Unknown, UNKNOWN);
            } else {
                (ops[i].output, ops[i].return_us) = (output, return_us);
            }
            free_at[c] = free_at[c].max(return_us + 1);
        } else if ops.len() < n_ops && free_at[c] <= now {
            if rng.chance(0.2) {
                connection[c] = next_connection;
                next_connection += 1;
            }
            let call_us = free_at[c].max(now.saturating_sub(rng.range(0, 40)));
            for _ in 0..rng.range(1, pipeline + 1).min((n_ops - ops.len()) as u64) {
                let i = ops.len();
                let key = format!("key{}", rng.range(0, keys)).into_bytes();
                let input = draw_input(rng, mix, i);
                let (client, output, return_us) = (c as u64 + 1, KvOutput::Unknown, UNKNOWN);
                ops.push(Operation {
                    client,
                    key,
                    input,
                    output,
                    call_us,
                    return_us,
                    connection: Some(connection[c]),
                });
                in_flight[c].push(i);
            }
        }
    }
    ops
}

#[test]
fn random_pipelined_histories_pass_and_agree_with_brute_force() {
    let seeds: Vec<u64> = match env_u64("LIN_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("LIN_SEEDS").unwrap_or(200) * 5).collect(),
    };
    let mix = Mix { get: 40, put: 20, append: 30, delete: 10, unknown: 10 };
    // Large ones, several keys: linearizable as recorded.
    for &seed in seeds.iter().take(100) {
        let mut rng = Rng::new(seed);
        let (clients, n_ops, keys) = (rng.range(2, 6), rng.range(40, 121) as usize, rng.range(1, 4));
        let ops = pipelined_history(&mut rng, clients, n_ops, keys, 6, &mix);
        assert_eq!(
            check_history(&ops, BUDGET),
            CheckResult::Ok,
            "seed {seed} (replay: LIN_SEED={seed}): {ops:#?}"
        );
    }
    // Small ones on one key, some reads corrupted: the checker agrees with the definition, and the
    // connection rule decides some of them.
    let (mut legal, mut illegal, mut by_the_rule) = (0, 0, 0);
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let (clients, n_ops) = (rng.range(1, 4), rng.range(2, 8) as usize);
        let mut ops = pipelined_history(&mut rng, clients, n_ops, 1, 4, &mix);
        corrupt_reads(&mut rng, &mut ops);
        if agrees_with_brute_force(seed, &ops) {
            legal += 1;
        } else {
            illegal += 1;
            let unordered: Vec<Operation> =
                ops.iter().map(|op| Operation { connection: None, ..op.clone() }).collect();
            if brute_force_linearizable(&unordered) {
                by_the_rule += 1;
                assert_eq!(
                    check_history(&unordered, BUDGET),
                    CheckResult::Ok,
                    "seed {seed}: without connections"
                );
            }
        }
    }
    println!("{legal} linearizable, {illegal} not, {by_the_rule} of them only by the connection rule");
    let enough = seeds.len() / 20;
    assert!(
        legal >= enough && illegal >= enough && by_the_rule >= enough,
        "{legal} / {illegal} / {by_the_rule}"
    );
}

#[test]
fn thousand_operation_append_history_checks_within_budget() {
    let mut rng = Rng::new(7);
    let mix = Mix { get: 40, put: 0, append: 60, delete: 0, unknown: 0 };
    let ops = linearizable_history(&mut rng, 5, 1000, 1, &mix);
    let started = Instant::now();
    let result = check_history(&ops, Duration::from_secs(2));
    println!("1,000 operations checked in {:?}", started.elapsed());
    assert_eq!(result, CheckResult::Ok);
}

#[test]
fn hopeless_search_times_out_within_budget() {
    // Sixteen concurrent appends, a concurrent delete (so reads cannot be ruled out by prefix), and
    // a final read no order can produce: the search has to try every order of the appends, far
    // more than fits in the budget.
    let mut ops: Vec<Operation> =
        (0..16).map(|i| op(i, append(&format!("{i},")), KvOutput::Ok, 0, 100)).collect();
    ops.push(op(16, KvInput::Delete, KvOutput::Ok, 0, 100));
    ops.push(op(99, KvInput::Get, val("no order gives this"), 200, 300));
    let started = Instant::now();
    let result = check_history(&ops, Duration::from_millis(200));
    let elapsed = started.elapsed();
    assert_eq!(result, CheckResult::Timeout);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?} for a 200 ms budget");
}

// ---- the recorder -----------------------------------------------------------------------------

#[test]
fn recorder_reports_operations_never_ended_as_unknown() {
    let recorder = HistoryRecorder::new();
    let first = recorder.begin(1, "k", put("a"));
    let second = recorder.begin(2, b"k".to_vec(), KvInput::Get);
    let third = recorder.begin(3, "other", append("x"));
    recorder.end(first, KvOutput::Ok);
    recorder.end(third, KvOutput::Unknown);
    drop(second); // the client crashed
    let ops = recorder.finish();
    assert_eq!(ops.len(), 3);
    assert_eq!((ops[0].client, ops[0].output.clone()), (1, KvOutput::Ok));
    assert!(ops[0].call_us <= ops[0].return_us && ops[0].return_us != u64::MAX);
    assert_eq!((ops[1].client, ops[1].output.clone(), ops[1].return_us), (2, KvOutput::Unknown, u64::MAX));
    assert_eq!((ops[2].key.as_slice(), ops[2].output.clone()), (&b"other"[..], KvOutput::Unknown));
    assert!(ops.windows(2).all(|w| w[0].call_us <= w[1].call_us));
}

#[test]
fn threads_recorded_against_a_locked_map_are_linearizable() {
    let recorder = Arc::new(HistoryRecorder::new());
    let store: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let (recorder, store) = (recorder.clone(), store.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(client);
                for i in 0..150 {
                    let key = format!("k{}", rng.range(0, 2)).into_bytes();
                    let input = match rng.range(0, 4) {
                        0 => KvInput::Get,
                        1 => KvInput::Put(format!("c{client}-{i}").into_bytes()),
                        2 => KvInput::Append(format!("c{client}-{i},").into_bytes()),
                        _ => KvInput::Delete,
                    };
                    let token = recorder.begin(client, key.clone(), input.clone());
                    let output = {
                        let mut store = store.lock().unwrap();
                        match input {
                            KvInput::Get => KvOutput::Value(store.get(&key).cloned()),
                            KvInput::Put(value) => {
                                store.insert(key, value);
                                KvOutput::Ok
                            }
                            KvInput::Append(suffix) => {
                                store.entry(key).or_default().extend_from_slice(&suffix);
                                KvOutput::Ok
                            }
                            KvInput::Delete => {
                                store.remove(&key);
                                KvOutput::Ok
                            }
                        }
                    };
                    if rng.chance(0.05) {
                        drop(token); // the answer got lost
                    } else {
                        recorder.end(token, output);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let ops = recorder.finish();
    assert_eq!(ops.len(), 600);
    assert_eq!(check_history(&ops, BUDGET), CheckResult::Ok);
}

// APPEND answers the value's new length, and the model checks it: two concurrent appends may
// land in either order, but each length must match the order chosen, and a length no order gives
// (a retry answered with another write's remembered reply) is illegal.
#[test]
fn append_lengths_are_checked_against_the_model() {
    let concurrent = |first: u64, second: u64| {
        vec![
            op(1, put("ab"), KvOutput::Ok, 0, 1),
            op(2, append("c"), KvOutput::Length(first), 2, 10),
            op(3, append("de"), KvOutput::Length(second), 3, 9),
        ]
    };
    assert_ok(&concurrent(3, 5));
    assert_ok(&concurrent(5, 4));
    assert_illegal(&concurrent(3, 4));
    assert_illegal(&concurrent(1, 3));
    assert_illegal(&[op(1, put("ab"), KvOutput::Ok, 0, 1), op(2, append("c"), KvOutput::Length(1), 2, 3)]);
}
