//! `quorumkv-cli check`: a short concurrent workload against the live cluster, its history
//! checked for linearizability by the project's own checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use quorumkv::client::{Client, ClientConfig};
use quorumkv::linearizability::{check_history, CheckResult, HistoryRecorder, KvInput, KvOutput};
use quorumkv::protocol::resp::Reply;
use quorumkv::protocol::rng::Rng;

use super::{EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE};

/// Exit code when the checker ran out of time before a verdict: never a pass.
pub const EXIT_INCONCLUSIVE: u8 = 3;
/// The prefix of every key `check` writes.
pub const KEY_PREFIX: &str = "__check:";
/// How long the checker may search before the answer is "inconclusive".
const CHECK_BUDGET: Duration = Duration::from_secs(60);

/// `check`'s arguments.
#[derive(Parser, Debug)]
#[command(name = "quorumkv-cli check", about = "Check the live cluster for linearizability")]
pub struct CheckArgs {
    /// Seconds of workload.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: u64,
    /// Keys they share (named `__check:0` ...).
    #[arg(long, default_value_t = 10)]
    pub keys: u64,
}

/// One client's loop: reads, puts and appends of unique values on random keys until `until`.
fn clerk(
    id: u64,
    config: ClientConfig,
    keys: u64,
    until: Instant,
    history: Arc<HistoryRecorder>,
    done: Arc<AtomicU64>,
) {
    let Ok(mut client) = Client::new(config) else { return };
    let mut rng = Rng::new(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = format!("{KEY_PREFIX}{}", rng.range(0, keys.max(1)));
        let value = format!("{id}.{n};").into_bytes();
        let (input, args): (KvInput, Vec<Vec<u8>>) = match rng.range(0, 4) {
            0 | 1 => (KvInput::Get, vec![b"GET".to_vec(), key.clone().into_bytes()]),
            2 => (KvInput::Put(value.clone()), vec![b"SET".to_vec(), key.clone().into_bytes(), value]),
            _ => (KvInput::Append(value.clone()), vec![b"APPEND".to_vec(), key.clone().into_bytes(), value]),
        };
        let is_read = input == KvInput::Get;
        let token = history.begin(id, key.into_bytes(), input);
        let output = match client.call(&args) {
            Ok(Reply::Bulk(value)) if is_read => KvOutput::Value(value),
            Ok(Reply::Simple(_) | Reply::Integer(_)) if !is_read => KvOutput::Ok,
            // An error reply or a lost connection: the write may or may not have happened.
            Ok(_) | Err(_) => KvOutput::Unknown,
        };
        history.end(token, output);
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `check`; exit 0 only when the history is linearizable.
pub fn run(args: &CheckArgs, config: ClientConfig) -> u8 {
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let until = Instant::now() + duration;
    let history = Arc::new(HistoryRecorder::new());
    let done = Arc::new(AtomicU64::new(0));
    // Client ids of one run are fresh, so sessions of earlier runs do not interfere.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let workers: Vec<_> = (0..args.clients.max(1))
        .map(|i| {
            let (mut config, history, done) = (config.clone(), history.clone(), done.clone());
            // Client i starts at server i: with forwarding every replica serves (and is checked).
            let servers = config.servers.len().max(1);
            config.servers.rotate_left(i as usize % servers);
            let keys = args.keys;
            std::thread::spawn(move || clerk(base.wrapping_add(i), config, keys, until, history, done))
        })
        .collect();
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} workload [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    while workers.iter().any(|w| !w.is_finished()) {
        bar.set_position(started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
        bar.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
        std::thread::sleep(Duration::from_millis(100));
    }
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    let ops = history.finish();
    let known = ops.iter().filter(|o| o.output != KvOutput::Unknown).count();
    println!("ops done: {}, with a known outcome: {known}", ops.len());
    if known == 0 {
        eprintln!("no operation completed: is the cluster reachable?");
        return EXIT_UNAVAILABLE;
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("checking {} ops (at most {} s)", ops.len(), CHECK_BUDGET.as_secs()));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let verdict = check_history(&ops, CHECK_BUDGET);
    spinner.finish_and_clear();
    println!("ops checked: {}", ops.len());
    match verdict {
        CheckResult::Ok => {
            println!("linearizable");
            EXIT_OK
        }
        CheckResult::Illegal { key, explanation } => {
            println!("NOT linearizable: key {}", String::from_utf8_lossy(&key));
            println!("{explanation}");
            EXIT_ERROR
        }
        CheckResult::Timeout => {
            println!("inconclusive: the checker's {} s ran out before a verdict", CHECK_BUDGET.as_secs());
            EXIT_INCONCLUSIVE
        }
    }
}
