//! The fault-injection suite's machinery: clerks that record histories, a generic round-based
//! test in the manner of the classic kvraft labs, and the checks run after it.
//!
//! Every test prints its seed; `QKV_SEED=n` replays the network's and the clerks' random choices
//! (thread scheduling is real, so a replay is close, not exact). `QKV_LONG=1` runs more and longer
//! rounds; CI runs the short form with the same checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::TestCluster;
use super::linearizability::{check_history, CheckResult, HistoryRecorder, KvInput, KvOutput};
use quorumkv::actors::sim_network::SimFaults;
use quorumkv::client::{Client, ClientConfig, ClientError};
use quorumkv::protocol::resp::{encode_request, parse_reply, Reply};
use quorumkv::protocol::rng::Rng;

/// The seed of this test run: `QKV_SEED`, or the clock. Printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("QKV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    println!("{test}: seed {seed} (replay with QKV_SEED={seed})");
    seed
}

/// True in the long mode (`QKV_LONG=1`).
pub fn long_mode() -> bool {
    std::env::var("QKV_LONG").is_ok_and(|v| v == "1")
}

/// How long an operation may still take once the cluster is whole again.
pub const COMPLETE_AFTER_HEAL: Duration = Duration::from_secs(10);

/// A client that records every operation with its invoke and completion times.
pub struct Clerk {
    /// Session id (also the history's client id).
    pub id: u64,
    client: Client,
    seq: u64,
    rng: Rng,
    unreliable: bool,
    history: Arc<HistoryRecorder>,
    /// When set, an operation in progress is abandoned and recorded as never completed.
    abandon: Arc<AtomicBool>,
    /// When set, operations must finish within [`COMPLETE_AFTER_HEAL`].
    healed: Arc<AtomicBool>,
    /// While the flag is set, talk only through this client (to a subset of servers): the clerk
    /// is on one side of a partition.
    confined: Option<(Client, Arc<AtomicBool>)>,
}

fn clerk_client(id: u64, servers: Vec<String>) -> Client {
    let mut config = ClientConfig::new(servers);
    config.client_id = Some(id);
    // A clerk stays with the servers it was given, so a partition can cut it off like them.
    config.only_listed_servers = true;
    // Short per-call deadlines: the clerk itself retries, so it can notice abandon/heal.
    config.request_timeout_ms = 1000;
    config.connect_timeout_ms = 300;
    config.io_timeout_ms = 1000;
    Client::new(config).expect("client config")
}

/// Why a clerk operation did not complete.
#[derive(Debug)]
pub enum ClerkError {
    /// Abandoned on request (recorded as never completed).
    Abandoned,
    /// Still failing long after the cluster healed.
    Stuck(String),
}

impl Clerk {
    /// A clerk for `servers`, recording into `history`.
    pub fn new(
        id: u64,
        servers: Vec<String>,
        unreliable: bool,
        seed: u64,
        history: Arc<HistoryRecorder>,
    ) -> Clerk {
        let client = clerk_client(id, servers);
        Clerk {
            id,
            client,
            seq: 0,
            rng: Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9)),
            unreliable,
            history,
            abandon: Arc::new(AtomicBool::new(false)),
            healed: Arc::new(AtomicBool::new(false)),
            confined: None,
        }
    }

    /// While `partitioned` is set, reach only `servers` (this clerk's side of a partition).
    pub fn confined_to(mut self, servers: Vec<String>, partitioned: Arc<AtomicBool>) -> Clerk {
        self.confined = Some((clerk_client(self.id, servers), partitioned));
        self
    }

    fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        match &mut self.confined {
            Some((client, partitioned)) if partitioned.load(Ordering::SeqCst) => client.call(args),
            _ => self.client.call(args),
        }
    }

    /// Shares the flags that end this clerk's operations.
    pub fn with_flags(mut self, abandon: Arc<AtomicBool>, healed: Arc<AtomicBool>) -> Clerk {
        self.abandon = abandon;
        self.healed = healed;
        self
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), ClerkError> {
        self.write(key, KvInput::Put(value.as_bytes().to_vec()), &[b"SET", key.as_bytes(), value.as_bytes()])
    }

    /// Appends `value` to `key`.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), ClerkError> {
        self.write(
            key,
            KvInput::Append(value.as_bytes().to_vec()),
            &[b"APPEND", key.as_bytes(), value.as_bytes()],
        )
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &str) -> Result<(), ClerkError> {
        self.write(key, KvInput::Delete, &[b"DEL", key.as_bytes()])
    }

    /// Reads `key`.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClerkError> {
        match self.perform(key, KvInput::Get, vec![b"GET".to_vec(), key.as_bytes().to_vec()])? {
            Reply::Bulk(value) => Ok(value),
            other => unreachable!("perform only returns bulk replies to GET, got {other:?}"),
        }
    }

    fn write(&mut self, key: &str, input: KvInput, command: &[&[u8]]) -> Result<(), ClerkError> {
        self.seq += 1;
        let mut args =
            vec![b"REQ".to_vec(), self.id.to_string().into_bytes(), self.seq.to_string().into_bytes()];
        args.extend(command.iter().map(|a| a.to_vec()));
        self.perform(key, input, args).map(|_| ())
    }

    /// Sends `args` until an answer gets through, recording the operation in the history.
    ///
    /// A write's retries reuse its `REQ` seq, so a lost reply never applies it twice.
    fn perform(&mut self, key: &str, input: KvInput, args: Vec<Vec<u8>>) -> Result<Reply, ClerkError> {
        let is_get = input == KvInput::Get;
        let is_append = matches!(input, KvInput::Append(_));
        let token = self.history.begin(self.id, key.as_bytes().to_vec(), input);
        let started = Instant::now();
        loop {
            if let Err(e) = self.keep_trying(started) {
                self.history.end(token, KvOutput::Unknown);
                return Err(e);
            }
            if self.lose() {
                continue; // the request was lost
            }
            match self.call(&args) {
                Ok(Reply::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("NOTLEADER") => {}
                Err(ClientError::Unavailable { .. }) => {}
                Ok(reply) => {
                    let output = match (&reply, is_get) {
                        (Reply::Bulk(value), true) => KvOutput::Value(value.clone()),
                        (Reply::Error(_), _) | (_, true) => {
                            panic!("clerk {}: unexpected reply {reply:?} to {:?}", self.id, args[0])
                        }
                        // APPEND's new length, checked by the model.
                        (Reply::Integer(len), false) if is_append => KvOutput::Length(*len as u64),
                        (_, false) => KvOutput::Ok,
                    };
                    if self.lose() {
                        continue; // the reply was lost: ask again
                    }
                    self.history.end(token, output);
                    return Ok(reply);
                }
                Err(e) => panic!("clerk {}: {:?} failed: {e}", self.id, args[0]),
            }
        }
    }

    /// In unreliable mode, about one request or reply in ten is lost (and costs a short timeout).
    fn lose(&mut self) -> bool {
        if self.unreliable && self.rng.chance(0.1) {
            // The lost message is the fault injected here; waiting stands for the clerk's timeout.
            std::thread::park_timeout(Duration::from_millis(self.rng.range(1, 20)));
            return true;
        }
        false
    }

    fn keep_trying(&self, started: Instant) -> Result<(), ClerkError> {
        if self.abandon.load(Ordering::Relaxed) {
            return Err(ClerkError::Abandoned);
        }
        if self.healed.load(Ordering::Relaxed) && started.elapsed() > COMPLETE_AFTER_HEAL {
            return Err(ClerkError::Stuck(format!(
                "clerk {}: an operation did not complete after healing",
                self.id
            )));
        }
        Ok(())
    }
}

/// One generic test, in the manner of the kvraft lab's GenericTest.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Shown with the seed.
    pub name: &'static str,
    /// Replicas.
    pub replicas: u64,
    /// Concurrent clerks.
    pub clients: usize,
    /// Lossy network between replicas and between clerks and replicas.
    pub unreliable: bool,
    /// Crash and restart every replica after each round.
    pub crash: bool,
    /// Re-partition the replicas into two random groups every so often during a round.
    pub partitions: bool,
    /// Range of the interval between re-partitions.
    pub partition_every_ms: (u64, u64),
    /// Crash and restart single replicas at random moments during rounds.
    pub crash_during_round: bool,
    /// Clerks use a few shared keys (checked only by linearizability) instead of one key each.
    pub random_keys: bool,
    /// Snapshot threshold (small values force snapshots and InstallSnapshot).
    pub snapshot_threshold: Option<u64>,
    /// Each clerk talks to one replica only (clerk n to replica n mod replicas), never
    /// redirected: followers must forward.
    pub pinned: bool,
    /// Rounds.
    pub rounds: u32,
    /// Length of a round.
    pub round_ms: u64,
}

impl Spec {
    /// A reliable, single-client spec to start from.
    pub fn new(name: &'static str, replicas: u64, clients: usize) -> Spec {
        let long = long_mode();
        Spec {
            name,
            replicas,
            clients,
            unreliable: false,
            crash: false,
            partitions: false,
            partition_every_ms: (200, 1000),
            crash_during_round: false,
            random_keys: false,
            snapshot_threshold: None,
            pinned: false,
            rounds: if long { 5 } else { 3 },
            round_ms: if long { 5000 } else { 1500 },
        }
    }
}

/// Starts a cluster on the simulated network for `spec`.
pub fn start_cluster(spec: &Spec, seed: u64) -> TestCluster {
    let faults = if spec.unreliable { SimFaults::unreliable() } else { SimFaults::reliable() };
    let threshold = spec.snapshot_threshold;
    TestCluster::start_sim(spec.replicas, seed, faults, move |c| {
        c.request_timeout_ms = 1500;
        // Elections drawn from the test's seed too, so QKV_SEED replays them.
        c.seed = Some(seed);
        // Logs leave memory within a round, so leaders that lack what a lagging follower needs
        // (and take a snapshot for it) are part of every scenario.
        c.retained_entries = 8;
        c.trim_batch_entries = 8;
        if let Some(t) = threshold {
            c.snapshot_threshold_bytes = t;
            c.wal_segment_bytes = 64 * 1024;
        }
    })
}

static NEXT_CLERK: AtomicU64 = AtomicU64::new(1);

/// A fresh clerk id, unique in this process (clerks of different rounds never share a session).
pub fn clerk_id() -> u64 {
    NEXT_CLERK.fetch_add(1, Ordering::Relaxed)
}

/// Runs `spec`: rounds of clerks under the faults it names, each round's appends checked, the
/// whole history checked for linearizability, and the replicas' states compared at the end.
pub fn run_generic(spec: &Spec) {
    let seed = seed(spec.name);
    let mut cluster = start_cluster(spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let mut rng = Rng::new(seed);
    for round in 0..spec.rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let healed = Arc::new(AtomicBool::new(false));
        let servers = cluster.servers();
        let clerks: Vec<JoinHandle<Result<ClerkLog, ClerkError>>> = (0..spec.clients)
            .map(|n| {
                let servers =
                    if spec.pinned { vec![servers[n % servers.len()].clone()] } else { servers.clone() };
                let clerk = Clerk::new(
                    clerk_id(),
                    servers,
                    spec.unreliable,
                    seed ^ u64::from(round),
                    history.clone(),
                )
                .with_flags(Arc::new(AtomicBool::new(false)), healed.clone());
                let stop = stop.clone();
                let random_keys = spec.random_keys;
                std::thread::spawn(move || clerk_loop(clerk, n, random_keys, stop))
            })
            .collect();
        // The nemesis of this round: partitions and crashes on a schedule drawn from the seed.
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let round_end = Instant::now() + Duration::from_millis(spec.round_ms);
        let mut down: Vec<u64> = Vec::new();
        while Instant::now() < round_end {
            let wait =
                Duration::from_millis(rng.range(spec.partition_every_ms.0, spec.partition_every_ms.1 + 1));
            let _ = wake_rx.recv_timeout(wait.min(round_end.saturating_duration_since(Instant::now())));
            if spec.partitions {
                let ids = cluster.running().into_iter().chain(down.iter().copied()).collect::<Vec<_>>();
                let mut a = Vec::new();
                let mut b = Vec::new();
                for id in ids {
                    if rng.chance(0.5) {
                        a.push(id);
                    } else {
                        b.push(id);
                    }
                }
                cluster.net().partition(&[a, b]);
            }
            if spec.crash_during_round {
                // Keep a majority able to run: at most a minority down at once.
                if let Some(id) = down.pop() {
                    cluster.restart(id);
                } else if rng.chance(0.5) {
                    let running = cluster.running();
                    let id = running[rng.range(0, running.len() as u64) as usize];
                    // A crash: what it had not yet written is lost.
                    cluster.crash(id);
                    down.push(id);
                }
            }
        }
        drop(wake_tx);
        stop.store(true, Ordering::Relaxed);
        cluster.net().heal();
        for id in down.drain(..) {
            cluster.restart(id);
        }
        healed.store(true, Ordering::Relaxed);
        let logs: Vec<ClerkLog> = clerks
            .into_iter()
            .map(|c| match c.join().expect("clerk thread") {
                Ok(log) => log,
                Err(e) => panic!("{}: seed {seed} round {round}: {e:?}", spec.name),
            })
            .collect();
        if spec.crash {
            for id in cluster.running() {
                cluster.stop(id);
            }
            for id in 1..=spec.replicas {
                cluster.restart(id);
            }
        }
        if !spec.random_keys {
            check_appends(&cluster, &logs, seed, &history, spec.unreliable);
        }
        let ops: u64 = logs.iter().map(|l| l.ops).sum();
        assert!(ops > 0, "{}: seed {seed} round {round}: no operation completed", spec.name);
        println!("{}: round {round}: {ops} operations", spec.name);
    }
    check_linearizable(spec.name, seed, &history);
    check_replicas_agree(&cluster, seed);
    let net = cluster.net().stats();
    // The replicas really talked through the simulated network (and its faults).
    assert!(net.delivered > 0, "no frame went through the simulated network: {net:?}");
    println!("{}: network {net:?}", spec.name);
}

/// What a clerk did in one round.
pub struct ClerkLog {
    /// The clerk's own key.
    pub key: String,
    /// Values it appended to its key, in order (all acknowledged).
    pub appended: Vec<String>,
    /// Operations completed.
    pub ops: u64,
}

pub fn clerk_loop(
    mut clerk: Clerk,
    n: usize,
    random_keys: bool,
    stop: Arc<AtomicBool>,
) -> Result<ClerkLog, ClerkError> {
    let key = format!("client-{}", clerk.id);
    let mut log = ClerkLog { key: key.clone(), appended: Vec::new(), ops: 0 };
    let mut expected = String::new();
    clerk.put(&key, "")?;
    log.ops += 1;
    let mut j = 0;
    while !stop.load(Ordering::Relaxed) {
        if random_keys {
            let k = format!("k{}", clerk.rng.range(0, 5));
            match clerk.rng.range(0, 10) {
                0..=3 => clerk.append(&k, &format!("x {} {j} y", clerk.id))?,
                4 => clerk.put(&k, &format!("p {} {j}", clerk.id))?,
                5 => clerk.delete(&k)?,
                _ => {
                    clerk.get(&k)?;
                }
            }
        } else if clerk.rng.chance(0.5) {
            let value = format!("x {n} {j} y");
            clerk.append(&key, &value)?;
            expected.push_str(&value);
            log.appended.push(value);
        } else {
            // One writer per key: every read must see exactly what this clerk wrote.
            let got = clerk.get(&key)?.unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&got),
                expected,
                "clerk {} read a wrong value of its own key",
                clerk.id
            );
        }
        log.ops += 1;
        j += 1;
    }
    Ok(log)
}

/// Refusals that say a write was never proposed (consensus's `Refusal`s): it had no effect.
const NOT_PROPOSED: [&str; 5] = [
    "NOTLEADER",
    "TRYAGAIN no leader",
    "TRYAGAIN leader changed; not proposed",
    "TRYAGAIN leadership transfer in progress",
    "TRYAGAIN replica busy",
];

/// A client that pipelines two to four random reads and writes of the shared keys at a time on
/// one connection, to a random replica (no `REQ` tags, no retries: a read refused, or a write
/// refused before it was proposed, is left out of the history; another refusal or no answer is
/// recorded as of unknown outcome). On any replica such a pipeline's reads and writes
/// start together (read floors and apply barriers on a leader; on a follower, reads held for
/// the indexes of the writes forwarded before them and an apply ceiling), so the checker sees
/// those paths under the nemesis too. Runs until `stop`, then on until one request is answered (or
/// [`COMPLETE_AFTER_HEAL`] passes). Returns how many requests were answered.
pub fn pipeline_loop(
    servers: Vec<String>,
    seed: u64,
    history: Arc<HistoryRecorder>,
    stop: Arc<AtomicBool>,
) -> u64 {
    use std::io::{Read, Write};
    let id = clerk_id();
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9));
    let (mut answered, mut j) = (0, 0u64);
    // The next reply on `stream`, or None once it broke or stayed silent for its timeout.
    let next_reply = |stream: &mut std::net::TcpStream, buf: &mut Vec<u8>| loop {
        if let Some((reply, used)) = parse_reply(buf).expect("a well-formed reply") {
            buf.drain(..used);
            return Some(reply);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    // Until stopped, and past that until one request was answered (the cluster heals meanwhile).
    let mut stopped_at = None;
    let mut go_on = |answered: u64| {
        if !stop.load(Ordering::Relaxed) {
            return true;
        }
        answered == 0 && stopped_at.get_or_insert_with(Instant::now).elapsed() < COMPLETE_AFTER_HEAL
    };
    while go_on(answered) {
        let server = &servers[rng.range(0, servers.len() as u64) as usize];
        let addr = server.parse().expect("a server address");
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
            // A replica the nemesis stopped: another one, after a pause.
            std::thread::park_timeout(Duration::from_millis(20));
            continue;
        };
        if stream.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
            continue;
        }
        // The known outcomes of one connection take effect in the order sent: a fresh number for
        // the checker's rule.
        let connection = clerk_id();
        let mut buf = Vec::new();
        while go_on(answered) {
            let mut out = Vec::new();
            let mut pending = Vec::new();
            for _ in 0..rng.range(2, 5) {
                j += 1;
                let key = format!("k{}", rng.range(0, 5));
                let (input, args): (KvInput, Vec<Vec<u8>>) = match rng.range(0, 10) {
                    0..=3 => {
                        let v = format!("q {id} {j} y").into_bytes();
                        (KvInput::Append(v.clone()), vec![b"APPEND".to_vec(), key.clone().into_bytes(), v])
                    }
                    4 => {
                        let v = format!("pp {id} {j}").into_bytes();
                        (KvInput::Put(v.clone()), vec![b"SET".to_vec(), key.clone().into_bytes(), v])
                    }
                    5 => (KvInput::Delete, vec![b"DEL".to_vec(), key.clone().into_bytes()]),
                    _ => (KvInput::Get, vec![b"GET".to_vec(), key.clone().into_bytes()]),
                };
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                encode_request(&args, &mut out);
                let is_get = input == KvInput::Get;
                let is_append = matches!(input, KvInput::Append(_));
                let token = history.begin_pipelined(id, connection, key.into_bytes(), input);
                pending.push((token, is_get, is_append));
            }
            let mut broken = stream.write_all(&out).is_err();
            let mut refused = false;
            for (token, is_get, is_append) in pending {
                let reply = if broken { None } else { next_reply(&mut stream, &mut buf) };
                let output = match reply {
                    // A read refused had no effect, nor a write refused before it was proposed.
                    Some(Reply::Error(e)) if is_get || NOT_PROPOSED.iter().any(|p| e.starts_with(p)) => {
                        refused = true;
                        history.end_without_effect(token);
                        continue;
                    }
                    Some(Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                        refused = true;
                        KvOutput::Unknown
                    }
                    Some(Reply::Bulk(value)) if is_get => KvOutput::Value(value),
                    Some(Reply::Integer(len)) if is_append => KvOutput::Length(len as u64),
                    Some(reply) if !is_get && !matches!(reply, Reply::Error(_)) => KvOutput::Ok,
                    Some(other) => panic!("pipeline client {id}: unexpected reply {other:?}"),
                    None => {
                        broken = true;
                        KvOutput::Unknown
                    }
                };
                answered += u64::from(output != KvOutput::Unknown);
                history.end(token, output);
            }
            if broken || refused {
                // Mostly a replica without a leader for now: a pause, not a storm of refusals.
                std::thread::park_timeout(Duration::from_millis(rng.range(20, 100)));
            }
            if broken {
                break;
            }
        }
    }
    answered
}

/// Every acknowledged append of every clerk is present in its key exactly once, in order.
pub fn check_appends(
    cluster: &TestCluster,
    logs: &[ClerkLog],
    seed: u64,
    history: &Arc<HistoryRecorder>,
    unreliable: bool,
) {
    let mut reader = Clerk::new(clerk_id(), cluster.servers(), unreliable, seed, history.clone());
    for log in logs {
        let value = reader.get(&log.key).expect("read after healing").unwrap_or_default();
        let value = String::from_utf8_lossy(&value).to_string();
        let expected: String = log.appended.concat();
        assert_eq!(value, expected, "seed {seed}: key {} lost, doubled or reordered an append", log.key);
    }
}

/// The whole history must be linearizable (a timeout of the checker is reported, not hidden).
pub fn check_linearizable(name: &str, seed: u64, history: &HistoryRecorder) {
    let ops = history.finish();
    let started = Instant::now();
    match check_history(&ops, Duration::from_secs(30)) {
        CheckResult::Ok => {
            println!("{name}: {} operations linearizable (checked in {:?})", ops.len(), started.elapsed())
        }
        CheckResult::Illegal { key, explanation } => panic!(
            "{name}: seed {seed}: history of key {:?} is not linearizable:\n{explanation}",
            String::from_utf8_lossy(&key)
        ),
        CheckResult::Timeout => {
            panic!("{name}: seed {seed}: the linearizability check of {} operations timed out", ops.len())
        }
    }
}

/// Once quiet, every replica has applied the same index and holds the same state.
pub fn check_replicas_agree(cluster: &TestCluster, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: BTreeMap<u64, (u64, u64)> =
            cluster.status.iter().map(|(&id, s)| (id, (s.applied_index(), s.state_digest()))).collect();
        let commit = cluster.status.values().map(|s| s.commit_index()).max().unwrap_or(0);
        let first = views.values().next().copied();
        if views.values().all(|v| Some(*v) == first && v.0 >= commit) {
            return;
        }
        assert!(Instant::now() < deadline, "seed {seed}: replicas disagree after quiescence: {views:?}");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// A long randomized run: for `duration`, a schedule drawn from the seed partitions, heals,
/// crashes and restarts replicas and makes links lossy while clerks work on shared keys; then
/// everything heals and the history and the replicas' states are checked.
pub fn run_nemesis(
    name: &'static str,
    replicas: u64,
    clients: usize,
    duration: Duration,
    snapshot_threshold: Option<u64>,
) {
    let spec = Spec { snapshot_threshold, random_keys: true, ..Spec::new(name, replicas, clients) };
    let seed = seed(name);
    let mut cluster = start_cluster(&spec, seed);
    let history = Arc::new(HistoryRecorder::new());
    let mut rng = Rng::new(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let healed = Arc::new(AtomicBool::new(false));
    let clerks: Vec<JoinHandle<Result<ClerkLog, ClerkError>>> = (0..clients)
        .map(|n| {
            let clerk =
                Clerk::new(clerk_id(), cluster.servers(), rng.chance(0.5), seed ^ n as u64, history.clone())
                    .with_flags(Arc::new(AtomicBool::new(false)), healed.clone());
            let stop = stop.clone();
            std::thread::spawn(move || clerk_loop(clerk, n, true, stop))
        })
        .collect();
    let pipeliner = {
        let (servers, history, stop) = (cluster.servers(), history.clone(), stop.clone());
        std::thread::spawn(move || pipeline_loop(servers, seed, history, stop))
    };
    let majority = (replicas / 2 + 1) as usize;
    let end = Instant::now() + duration;
    let (_wake_tx, wake_rx) = mpsc::channel::<()>();
    let mut actions = Vec::new();
    while Instant::now() < end {
        let _ = wake_rx.recv_timeout(Duration::from_millis(rng.range(50, 500)));
        let down: Vec<u64> = (1..=replicas).filter(|id| !cluster.status.contains_key(id)).collect();
        match rng.range(0, 6) {
            0 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for id in 1..=replicas {
                    groups[rng.range(0, 2) as usize].push(id);
                }
                cluster.net().partition(&groups);
                actions.push("partition");
            }
            1 => {
                cluster.net().heal();
                actions.push("heal");
            }
            2 if cluster.running().len() > majority => {
                let running = cluster.running();
                cluster.crash(running[rng.range(0, running.len() as u64) as usize]);
                actions.push("crash");
            }
            3 if !down.is_empty() => {
                cluster.restart(down[rng.range(0, down.len() as u64) as usize]);
                actions.push("restart");
            }
            4 => {
                let faults = if rng.chance(0.5) { SimFaults::unreliable() } else { SimFaults::reliable() };
                cluster.net().set_faults(faults);
                actions.push("faults");
            }
            _ => {
                // A one-way cut: a replica hears others but cannot be heard (or the reverse).
                let a = rng.range(1, replicas + 1);
                let b = rng.range(1, replicas + 1);
                if a != b {
                    cluster.net().cut(a, b);
                }
                actions.push("cut");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    cluster.net().heal();
    cluster.net().set_faults(SimFaults::reliable());
    for id in 1..=replicas {
        if !cluster.status.contains_key(&id) {
            cluster.restart(id);
        }
    }
    healed.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for c in clerks {
        match c.join().expect("clerk thread") {
            Ok(log) => ops += log.ops,
            Err(e) => panic!("{name}: seed {seed}: {e:?} after schedule {actions:?}"),
        }
    }
    let pipelined = pipeliner.join().expect("pipeline client thread");
    println!(
        "{name}: {} nemesis actions, {ops} operations, {pipelined} pipelined requests answered: {actions:?}",
        actions.len()
    );
    assert!(ops > 0 && pipelined > 0, "{name}: seed {seed}: no operation, or no pipelined one, completed");
    check_linearizable(name, seed, &history);
    check_replicas_agree(&cluster, seed);
}
