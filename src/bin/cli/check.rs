//! `quorumkv-cli check`: a short concurrent workload against the live cluster, its history
//! checked for linearizability by the project's own checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use quorumkv::client::ClientConfig;
use quorumkv::linearizability::{check_history, run_workload, CheckResult, KvOutput};

use super::{EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE};

/// Exit code when the checker ran out of time before a verdict: never a pass.
pub const EXIT_INCONCLUSIVE: u8 = 3;
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
    /// Keys they share (named `__check:RUN:0` ..., fresh each run).
    #[arg(long, default_value_t = 10)]
    pub keys: u64,
}

/// Runs `check`; exit 0 only when the history is linearizable.
pub fn run(args: &CheckArgs, config: ClientConfig) -> u8 {
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let done = Arc::new(AtomicU64::new(0));
    let configs = (0..args.clients.max(1))
        .map(|i| {
            // Client i starts at server i: with forwarding every replica serves (and is checked).
            let mut config = config.clone();
            let servers = config.servers.len().max(1);
            config.servers.rotate_left(i as usize % servers);
            config
        })
        .collect();
    let (keys, counter) = (args.keys, done.clone());
    let workload = std::thread::spawn(move || run_workload(configs, keys, duration, counter));
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} workload [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    while !workload.is_finished() {
        bar.set_position(started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
        bar.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
    let ops = workload.join().unwrap_or_default();
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
