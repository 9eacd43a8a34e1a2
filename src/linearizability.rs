//! A linearizability checker for key-value histories, a recorder the test clerks fill in, and the
//! workload `quorumkv-cli check` runs against a live cluster.
//!
//! The search is Wing & Gong's with Lowe's memoization, the way Porcupine runs it: call and return
//! events sit in one doubly linked list ordered by time; the search walks it from the front and
//! tries to linearize each call it meets (apply it to the model, unlink its call and return); when
//! it meets a return whose operation is not linearized yet, the last choice was wrong, so it undoes
//! it and tries the next call after it. A set of (linearized operations, model state) pairs already
//! explored cuts off repeated work. Two sound shortcuts for reads keep append-heavy histories fast
//! (see `check_key`).
//!
//! Every operation touches one key and the model keeps keys independent, so the history is split by
//! key and each part is checked on its own (linearizability is local).
//!
//! Operations pipelined on one connection overlap in time, so real time alone would let them take
//! effect in any order; the server executes them in the order sent, and an operation that names
//! its connection is placed only after the earlier operations of that connection on its key whose
//! outcomes are known (an unknown one may have taken effect any time after its call, or never).
//!
//! An operation whose outcome is [`KvOutput::Unknown`] (timeout, crash: Jepsen's "info") may have
//! taken effect at any time after its call, or never: it gets a return time of +infinity, accepts
//! any output, and the search is done once every operation with a known outcome is linearized.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read the key.
    Get,
    /// Set the key to this value.
    Put(Vec<u8>),
    /// Append these bytes to the value, creating the key if absent.
    Append(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// What it got back. `Unknown` = the operation never completed (timeout, crash): it may or may not
/// have taken effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value a `Get` read (`None` = key absent).
    Value(Option<Vec<u8>>),
    /// A `Put`, `Append` or `Delete` was acknowledged.
    Ok,
    /// An `Append` was acknowledged with the value's length after it (APPEND's reply), which the
    /// model checks: a wrong remembered reply (a retry answered with another write's) shows.
    Length(u64),
    /// No answer: the operation may have taken effect at any time after its call, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (shown in explanations; the checker does not need it).
    pub client: u64,
    /// The one key it touches.
    pub key: Vec<u8>,
    /// What was asked.
    pub input: KvInput,
    /// What came back.
    pub output: KvOutput,
    /// When the request was sent, in microseconds from any fixed origin.
    pub call_us: u64,
    /// When the answer arrived (ignored, taken as +infinity, when `output` is `Unknown`).
    pub return_us: u64,
    /// The client connection it was sent on, when the client pipelined: the operations of one
    /// connection with known outcomes took effect in the order they appear in the history (the
    /// order sent), which the checker enforces per key. `None`: only real time orders it.
    pub connection: Option<u64>,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history is linearizable.
    Ok,
    /// This key's history has no linearization.
    Illegal {
        /// The offending key.
        key: Vec<u8>,
        /// The operations around the point where the search got stuck, one per line.
        explanation: String,
    },
    /// The budget ran out before a verdict (no violation was found in what was checked).
    Timeout,
}

/// Checks every key's part of `ops` for linearizability, giving up after `budget`.
///
/// Keys are checked in order against one deadline. An `Illegal` key found before the deadline is
/// reported even if an earlier key timed out; `Timeout` means no violation was found. A `Get` whose output is `Unknown` constrains nothing and is dropped. An output of the
/// wrong kind for its input (a `Put` answered with a value) can never be placed, so it is `Illegal`.
pub fn check_history(ops: &[Operation], budget: Duration) -> CheckResult {
    let deadline = Instant::now().checked_add(budget);
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if !(op.input == KvInput::Get && op.output == KvOutput::Unknown) {
            by_key.entry(&op.key).or_default().push(op);
        }
    }
    let mut timed_out = false;
    for (key, part) in by_key {
        match check_key(key, &part, deadline) {
            Search::Linearizable => {}
            Search::TimedOut => timed_out = true,
            Search::Illegal(explanation) => return CheckResult::Illegal { key: key.to_vec(), explanation },
        }
    }
    if timed_out {
        CheckResult::Timeout
    } else {
        CheckResult::Ok
    }
}

/// The model's state for one key: its value, `None` when absent.
type State = Option<Vec<u8>>;

/// Applies one operation to the model: the next state, or `None` if `output` cannot follow `state`.
fn step(state: &State, input: &KvInput, output: &KvOutput) -> Option<State> {
    use KvOutput as O;
    match (input, output) {
        (KvInput::Get, O::Value(read)) => (read == state).then(|| state.clone()),
        (KvInput::Get, O::Unknown) => Some(state.clone()),
        (KvInput::Put(value), O::Ok | O::Unknown) => Some(Some(value.clone())),
        (KvInput::Append(suffix), O::Ok | O::Unknown | O::Length(_)) => {
            let mut value = state.clone().unwrap_or_default();
            value.extend_from_slice(suffix);
            match output {
                O::Length(len) if *len != value.len() as u64 => None,
                _ => Some(Some(value)),
            }
        }
        (KvInput::Delete, O::Ok | O::Unknown) => Some(None),
        _ => None,
    }
}

enum Search {
    Linearizable,
    Illegal(String),
    TimedOut,
}

const NIL: usize = usize::MAX;
/// How many search steps between two looks at the clock.
const CLOCK_EVERY: u64 = 1024;

/// When an operation's return counts: +infinity for an unknown outcome; never before its call.
fn effective_return(op: &Operation) -> u64 {
    if op.output == KvOutput::Unknown {
        u64::MAX
    } else {
        op.return_us.max(op.call_us)
    }
}

/// The event list: node 0 is the head sentinel, then one call and one return node per operation.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation of each node (unused for the head).
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Call and return node of each operation.
    call: Vec<usize>,
    ret: Vec<usize>,
}

impl Events {
    fn new(ops: &[&Operation]) -> Events {
        // Sorted by time; at equal times calls come first, so touching intervals count as
        // concurrent (the permissive reading of a clock tick).
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call_us, false, i));
            order.push((effective_return(op), true, i));
        }
        order.sort_unstable();
        let nodes = order.len() + 1;
        let mut events = Events {
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            op: vec![0; nodes],
            is_call: vec![false; nodes],
            call: vec![0; ops.len()],
            ret: vec![0; ops.len()],
        };
        for (i, &(_, is_return, op)) in order.iter().enumerate() {
            let node = i + 1;
            events.prev[node] = i;
            events.next[i] = node;
            events.op[node] = op;
            events.is_call[node] = !is_return;
            if is_return {
                events.ret[op] = node;
            } else {
                events.call[op] = node;
            }
        }
        events
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Puts back a node unlinked earlier (nodes must be put back in reverse order of removal).
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Takes an operation out of the list (it is linearized).
    fn lift(&mut self, op: usize) {
        self.unlink(self.call[op]);
        self.unlink(self.ret[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret[op]);
        self.relink(self.call[op]);
    }
}

/// A set of operation indices as bits, the memo key together with the model state.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The longest linearizable prefix found: its order, the state after it, and the read found
/// unreachable right after it, if that is why it could not be extended.
struct Best {
    order: Vec<usize>,
    state: State,
    blocker: Option<usize>,
}

/// One linearized operation: which, and the state before it (`None`: a read, state unchanged).
struct Frame {
    op: usize,
    before: Option<State>,
    /// Placed because it was a read matching the state, which is never a wrong move (see
    /// `check_key`): when it fails, the configuration below it fails too.
    forced: bool,
}

/// The search over one key's operations.
struct Searcher<'a> {
    ops: &'a [&'a Operation],
    events: Events,
    /// Operations with a known output, and how many of them are linearized.
    known: usize,
    known_placed: usize,
    linearized: Bits,
    /// Configurations (linearized set, state) already reached.
    seen: HashSet<(Bits, State)>,
    stack: Vec<Frame>,
    state: State,
    /// The longest linearizable prefix found, for the explanation.
    best: Best,
    /// Whether the configuration being looked at is `best`.
    at_best: bool,
    /// Unplaced puts and deletes by call time: the writes that can do more than extend a value.
    overwrites: BTreeSet<(u64, usize)>,
    /// Unplaced reads with a known value, by return time.
    reads: BTreeSet<(u64, usize)>,
    /// The operation of the same connection with a known outcome sent just before each one, which
    /// must be linearized first.
    after: Vec<Option<usize>>,
}

impl Searcher<'_> {
    /// Whether `op` waits for an earlier operation of its connection still unplaced.
    fn waits(&self, op: usize) -> bool {
        self.after[op].is_some_and(|before| !self.linearized.contains(before))
    }

    /// Linearizes `op` next unless that configuration was reached before; true if it was new.
    fn place(&mut self, op: usize, next: State, forced: bool) -> bool {
        self.linearized.set(op);
        if !self.seen.insert((self.linearized.clone(), next.clone())) {
            self.linearized.clear(op);
            return false;
        }
        let before = if next == self.state { None } else { Some(std::mem::replace(&mut self.state, next)) };
        self.stack.push(Frame { op, before, forced });
        if self.ops[op].output != KvOutput::Unknown {
            self.known_placed += 1;
        }
        self.events.lift(op);
        self.index(op, false);
        self.at_best = self.stack.len() > self.best.order.len();
        if self.at_best {
            let order = self.stack.iter().map(|frame| frame.op).collect();
            self.best = Best { order, state: self.state.clone(), blocker: None };
        }
        true
    }

    /// Undoes linearized operations until one that had alternatives; returns the list node to try
    /// next, or `None` when nothing is left to undo (no linearization exists).
    fn backtrack(&mut self) -> Option<usize> {
        self.at_best = false;
        loop {
            let frame = self.stack.pop()?;
            if let Some(before) = frame.before {
                self.state = before;
            }
            self.linearized.clear(frame.op);
            if self.ops[frame.op].output != KvOutput::Unknown {
                self.known_placed -= 1;
            }
            self.events.unlift(frame.op);
            self.index(frame.op, true);
            if !frame.forced {
                return Some(self.events.next[self.events.call[frame.op]]);
            }
        }
    }

    /// Adds an operation to, or removes it from, the indexes of unplaced overwrites and reads.
    fn index(&mut self, op: usize, unplaced: bool) {
        let operation = self.ops[op];
        let (set, at) = if is_overwrite(operation) {
            (&mut self.overwrites, operation.call_us)
        } else if is_known_read(operation) {
            (&mut self.reads, effective_return(operation))
        } else {
            return;
        };
        if unplaced {
            set.insert((at, op));
        } else {
            set.remove(&(at, op));
        }
    }

    /// Looks at the operations that may be linearized now (calls before the first pending return)
    /// for a read that fits the current state, or one that never can.
    fn survey(&self) -> Survey {
        let first_overwrite = self.overwrites.first().map_or(u64::MAX, |&(call_us, _)| call_us);
        // Until the first put or delete that may be linearized before a read, the value only grows
        // by appends: what that read returned must extend the current value.
        let unreachable = |op: &Operation| match (&op.output, &self.state) {
            (KvOutput::Value(read), Some(now)) => {
                !read.as_ref().is_some_and(|read| read.starts_with(now))
                    && first_overwrite > effective_return(op)
            }
            _ => false,
        };
        // The read that must be linearized soonest constrains the order of the appends before it.
        if let Some(&(_, op)) = self.reads.first() {
            if unreachable(self.ops[op]) {
                return Survey::Dead(op);
            }
        }
        let mut node = self.events.next[0];
        while node != NIL && self.events.is_call[node] {
            let op = self.ops[self.events.op[node]];
            if is_known_read(op) {
                let ready = !self.waits(self.events.op[node]);
                if ready && matches!(&op.output, KvOutput::Value(read) if *read == self.state) {
                    return Survey::MatchingRead(self.events.op[node]);
                }
                if unreachable(op) {
                    return Survey::Dead(self.events.op[node]);
                }
            }
            node = self.events.next[node];
        }
        Survey::Nothing
    }
}

/// A put or delete (known or not): a write that does not just extend the value.
fn is_overwrite(op: &Operation) -> bool {
    matches!(op.input, KvInput::Put(_) | KvInput::Delete)
}

/// A get whose value is known.
fn is_known_read(op: &Operation) -> bool {
    op.input == KvInput::Get && matches!(op.output, KvOutput::Value(_))
}

/// What `Searcher::survey` found.
enum Survey {
    /// This read can be linearized now and returns the current state.
    MatchingRead(usize),
    /// No linearization can follow from here: this read's value cannot be reached.
    Dead(usize),
    /// Neither: walk on.
    Nothing,
}

/// Searches one key's operations for a linearization.
///
/// Besides Porcupine's walk, each new configuration is first surveyed for two shortcuts:
/// - A read that could be linearized now and returns the current state is placed at once, with
///   no alternatives. That is safe: if any linearization exists from here, moving that read to
///   this point gives another one (everything that must precede it is placed, and it changes no
///   state); so when it fails, the configuration before it fails too.
/// - A pending read (the one due soonest, or one that could be linearized now) whose value does not
///   extend the current value, while no unplaced put or delete could come before it, can never be
///   satisfied (appends only extend): the configuration fails at once.
///
/// Both hold under the connection rule too (a read waiting for an earlier operation of its
/// connection is not placed by the first; the second rules out fewer orders than exist).
///
/// Without them, appends placed in a wrong order are undone only after every order of the appends
/// concurrent with them has been tried, and a long run of appends between two reads is factorial.
fn check_key(key: &[u8], ops: &[&Operation], deadline: Option<Instant>) -> Search {
    let mut search = Searcher {
        ops,
        events: Events::new(ops),
        known: ops.iter().filter(|op| op.output != KvOutput::Unknown).count(),
        known_placed: 0,
        linearized: Bits(vec![0; ops.len().div_ceil(64)]),
        seen: HashSet::new(),
        stack: Vec::new(),
        state: None,
        best: Best { order: Vec::new(), state: None, blocker: None },
        at_best: true,
        overwrites: BTreeSet::new(),
        reads: BTreeSet::new(),
        after: connection_order(ops),
    };
    for op in 0..ops.len() {
        search.index(op, true);
    }
    let illegal = |search: &Searcher| Search::Illegal(explain(key, ops, &search.best));
    let mut entry = search.events.next[0];
    let mut fresh = true;
    let mut steps = 0u64;
    while search.known_placed < search.known {
        if steps.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() >= d) {
            return Search::TimedOut;
        }
        steps += 1;
        if std::mem::take(&mut fresh) {
            let placed = match search.survey() {
                Survey::Nothing => None,
                // Reached before means it failed, and so does this configuration.
                Survey::MatchingRead(op) => Some(search.place(op, search.state.clone(), true)),
                Survey::Dead(read) => {
                    if search.at_best {
                        search.best.blocker = Some(read);
                    }
                    Some(false)
                }
            };
            match placed {
                None => {}
                Some(true) => {
                    (entry, fresh) = (search.events.next[0], true);
                    continue;
                }
                Some(false) => {
                    let Some(next) = search.backtrack() else { return illegal(&search) };
                    entry = next;
                    continue;
                }
            }
        }
        // Never NIL: an unplaced known operation's return node is still in the list, and the walk
        // stops at the first return node it meets.
        if search.events.is_call[entry] {
            let op = search.events.op[entry];
            let next =
                if search.waits(op) { None } else { step(&search.state, &ops[op].input, &ops[op].output) };
            if let Some(next) = next {
                if search.place(op, next, false) {
                    (entry, fresh) = (search.events.next[0], true);
                    continue;
                }
            }
            entry = search.events.next[entry];
        } else {
            // An operation returned without being linearized: undo the last choice.
            let Some(next) = search.backtrack() else { return illegal(&search) };
            entry = next;
        }
    }
    Search::Linearizable
}

/// For each operation, the one sent just before it on its connection whose outcome is known.
fn connection_order(ops: &[&Operation]) -> Vec<Option<usize>> {
    let mut last_known: BTreeMap<u64, usize> = BTreeMap::new();
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let connection = op.connection?;
            let before = last_known.get(&connection).copied();
            if op.output != KvOutput::Unknown {
                last_known.insert(connection, i);
            }
            before
        })
        .collect()
}

/// At most this many lines of operations in an explanation.
const EXPLAIN_MAX_LINES: usize = 40;
/// Prefix operations shown even when they ended before the stuck window (the latest ones).
const EXPLAIN_TAIL: usize = 3;

/// Describes why `ops` has no linearization, from the longest linearizable prefix found.
fn explain(key: &[u8], ops: &[&Operation], best: &Best) -> String {
    let (prefix, state) = (&best.order, &best.state);
    let mut position = vec![None; ops.len()];
    for (i, &op) in prefix.iter().enumerate() {
        position[op] = Some(i + 1);
    }
    // The operation that could not be placed: a read found unreachable, or else the unplaced
    // known operation that returns first.
    let stuck = best.blocker.unwrap_or_else(|| {
        (0..ops.len())
            .filter(|&i| position[i].is_none() && ops[i].output != KvOutput::Unknown)
            .min_by_key(|&i| (effective_return(ops[i]), ops[i].call_us, i))
            .expect("an illegal history leaves a known operation unplaced")
    });
    let deadline = effective_return(ops[stuck]);
    // Everything else that was a candidate before that return, placed or not.
    let pending: Vec<usize> =
        (0..ops.len()).filter(|&i| position[i].is_none() && ops[i].call_us <= deadline).collect();
    let window_start = pending
        .iter()
        .filter(|&&i| ops[i].output != KvOutput::Unknown)
        .map(|&i| ops[i].call_us)
        .min()
        .unwrap_or(ops[stuck].call_us);
    let mut shown: Vec<usize> = pending;
    shown.extend(prefix.iter().copied().filter(|&i| effective_return(ops[i]) >= window_start));
    // The latest operations of the prefix, and the last write in it, explain the state.
    shown.extend(prefix.iter().rev().take(EXPLAIN_TAIL));
    shown.extend(prefix.iter().rev().find(|&&i| ops[i].input != KvInput::Get));
    shown.sort_unstable_by_key(|&i| (ops[i].call_us, i));
    shown.dedup();
    let total = shown.len();
    if total > EXPLAIN_MAX_LINES {
        // Keep the stuck operation and the latest-starting others.
        let others: Vec<usize> = shown.iter().copied().filter(|&i| i != stuck).collect();
        shown = others[others.len() - (EXPLAIN_MAX_LINES - 1)..].to_vec();
        shown.push(stuck);
        shown.sort_unstable_by_key(|&i| (ops[i].call_us, i));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {}: not linearizable ({} operations). The longest linearizable prefix found places {}, \
         leaving the state {}; the operation marked >> cannot be linearized after it.",
        show_bytes(key),
        ops.len(),
        prefix.len(),
        show_value(state),
    );
    let omitted = total - shown.len();
    let _ = writeln!(
        out,
        "Operations by call time (lin = position in that prefix, - = not in it){}:",
        if omitted > 0 { format!(", {omitted} more omitted") } else { String::new() }
    );
    let _ = writeln!(out, "   {:>12} {:>12} {:>7} {:>5}  operation", "call_us", "return_us", "client", "lin");
    for &i in &shown {
        let op = ops[i];
        let returned =
            if op.output == KvOutput::Unknown { "never".to_string() } else { op.return_us.to_string() };
        let lin = position[i].map_or("-".to_string(), |p| p.to_string());
        let _ = writeln!(
            out,
            "{} {:>12} {:>12} {:>7} {:>5}  {}",
            if i == stuck { ">>" } else { "  " },
            op.call_us,
            returned,
            op.client,
            lin,
            show_operation(op),
        );
    }
    out
}

/// `Put("a") -> Ok`, `Get -> "a"`, `Get -> absent`, `Append("x") -> ?`.
fn show_operation(op: &Operation) -> String {
    let input = match &op.input {
        KvInput::Get => "Get".to_string(),
        KvInput::Put(value) => format!("Put({})", show_bytes(value)),
        KvInput::Append(value) => format!("Append({})", show_bytes(value)),
        KvInput::Delete => "Delete".to_string(),
    };
    let output = match &op.output {
        KvOutput::Value(value) => show_value(value),
        KvOutput::Ok => "Ok".to_string(),
        KvOutput::Length(len) => format!("length {len}"),
        KvOutput::Unknown => "? (unknown)".to_string(),
    };
    match op.connection {
        Some(connection) => format!("{input} -> {output} (connection {connection})"),
        None => format!("{input} -> {output}"),
    }
}

fn show_value(value: &State) -> String {
    value.as_deref().map_or("absent".to_string(), show_bytes)
}

fn show_bytes(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// Records the operations of many client threads, with times from one monotonic origin.
pub struct HistoryRecorder {
    origin: Instant,
    /// Each operation, with whether it was refused without effect (left out of the history).
    ops: Mutex<Vec<(Operation, bool)>>,
}

/// An operation begun with [`HistoryRecorder::begin`], to be passed to [`HistoryRecorder::end`].
#[must_use = "an operation never ended is recorded as Unknown"]
#[derive(Debug)]
pub struct OpToken(usize);

impl Default for HistoryRecorder {
    fn default() -> Self {
        HistoryRecorder::new()
    }
}

impl HistoryRecorder {
    /// An empty recorder whose clock starts now.
    pub fn new() -> HistoryRecorder {
        HistoryRecorder { origin: Instant::now(), ops: Mutex::new(Vec::new()) }
    }

    /// Notes that `client` is about to send `input` on `key`; call it just before sending.
    pub fn begin(&self, client: u64, key: impl Into<Vec<u8>>, input: KvInput) -> OpToken {
        self.record(client, None, key.into(), input)
    }

    /// [`HistoryRecorder::begin`] for an operation pipelined on `connection` (a number fresh for each
    /// connection opened); call it in the order the requests are sent.
    pub fn begin_pipelined(
        &self,
        client: u64,
        connection: u64,
        key: impl Into<Vec<u8>>,
        input: KvInput,
    ) -> OpToken {
        self.record(client, Some(connection), key.into(), input)
    }

    fn record(&self, client: u64, connection: Option<u64>, key: Vec<u8>, input: KvInput) -> OpToken {
        let mut ops = self.lock();
        let call_us = self.now_us();
        let output = KvOutput::Unknown;
        ops.push((Operation { client, key, input, output, call_us, return_us: u64::MAX, connection }, false));
        OpToken(ops.len() - 1)
    }

    /// Notes the answer to an operation; call it just after receiving. `Unknown` keeps the return
    /// time at +infinity.
    pub fn end(&self, token: OpToken, output: KvOutput) {
        let mut ops = self.lock();
        let return_us = if output == KvOutput::Unknown { u64::MAX } else { self.now_us() };
        let (op, _) = &mut ops[token.0];
        op.output = output;
        op.return_us = return_us;
    }

    /// Notes that an operation was refused before it could take effect (a read that failed, a
    /// write never proposed): it is left out of the history, as if never sent.
    pub fn end_without_effect(&self, token: OpToken) {
        self.lock()[token.0].1 = true;
    }

    /// Everything recorded so far, in call order; operations never ended are `Unknown`.
    pub fn finish(&self) -> Vec<Operation> {
        self.lock().iter().filter(|(_, without_effect)| !without_effect).map(|(op, _)| op.clone()).collect()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Operation, bool)>> {
        // A clerk that panicked mid-record leaves a consistent Vec: keep recording.
        self.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The prefix of every key [`run_workload`] writes.
pub const CHECK_KEY_PREFIX: &str = "__check:";

/// A short concurrent workload against a live cluster, recorded for [`check_history`]: one
/// thread per client config, each doing GETs (half), SETs and APPENDs of unique values on keys
/// `__check:RUN:0` .. `__check:RUN:{keys-1}` until `duration` has passed, counting finished
/// operations in `done`. RUN and the client ids come from the clock, so the keys and sessions of
/// earlier runs do not interfere (the checker takes every key as missing at the start); client
/// ids are consecutive in the order of `configs`.
pub fn run_workload(
    configs: Vec<crate::client::ClientConfig>,
    keys: u64,
    duration: Duration,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Vec<Operation> {
    let until = Instant::now() + duration;
    let history = std::sync::Arc::new(HistoryRecorder::new());
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let workers: Vec<_> = configs
        .into_iter()
        .enumerate()
        .map(|(i, config)| {
            let (history, done) = (history.clone(), done.clone());
            let id = base.wrapping_add(i as u64);
            let prefix = format!("{CHECK_KEY_PREFIX}{base}:");
            std::thread::spawn(move || workload_clerk(id, config, &prefix, keys, until, &history, &done))
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    history.finish()
}

/// One client of [`run_workload`].
fn workload_clerk(
    id: u64,
    config: crate::client::ClientConfig,
    prefix: &str,
    keys: u64,
    until: Instant,
    history: &HistoryRecorder,
    done: &std::sync::atomic::AtomicU64,
) {
    use crate::protocol::resp::Reply;
    let Ok(mut client) = crate::client::Client::new(config) else { return };
    let mut rng = crate::protocol::rng::Rng::new(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = format!("{prefix}{}", rng.range(0, keys.max(1)));
        let value = format!("{id}.{n};").into_bytes();
        let (input, args): (KvInput, Vec<Vec<u8>>) = match rng.range(0, 4) {
            0 | 1 => (KvInput::Get, vec![b"GET".to_vec(), key.clone().into_bytes()]),
            2 => (KvInput::Put(value.clone()), vec![b"SET".to_vec(), key.clone().into_bytes(), value]),
            _ => (KvInput::Append(value.clone()), vec![b"APPEND".to_vec(), key.clone().into_bytes(), value]),
        };
        let is_read = input == KvInput::Get;
        let is_append = matches!(input, KvInput::Append(_));
        let token = history.begin(id, key.into_bytes(), input);
        let output = match client.call(&args) {
            Ok(Reply::Bulk(value)) if is_read => KvOutput::Value(value),
            Ok(Reply::Integer(len)) if is_append => KvOutput::Length(len.max(0) as u64),
            Ok(Reply::Simple(_) | Reply::Integer(_)) if !is_read => KvOutput::Ok,
            // An error reply or a lost connection: the write may or may not have happened.
            Ok(_) | Err(_) => KvOutput::Unknown,
        };
        history.end(token, output);
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
