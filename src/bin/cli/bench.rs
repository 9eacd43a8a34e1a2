//! `quorumkv-cli bench`: closed-loop load from N client threads, each with its own [`Client`], and a
//! summary of throughput, errors and latency percentiles.
//!
//! Each op is a SET (with probability `--write-ratio`) or a GET of `key:<n>`, n uniform in
//! `[0, --keys)`. With `--pipeline N` a thread sends N ops at once and each op's latency is that of
//! its batch, as redis-benchmark counts it. Memory stays bounded: counts and fixed-size histograms,
//! never a record per op.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use quorumkv::client::{Client, ClientConfig, ClientError};
use quorumkv::protocol::resp::{Reply, MAX_ARG_BYTES};
use quorumkv::protocol::rng::Rng;
use serde_json::json;

use super::{EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE};

/// Client threads when `--clients` is not given.
pub const DEFAULT_CLIENTS: usize = 8;
/// Ops when neither `--ops` nor `--duration` is given.
pub const DEFAULT_OPS: u64 = 100_000;
/// Value size when `--value-size` is not given, in bytes.
pub const DEFAULT_VALUE_SIZE_BYTES: usize = 64;
/// Key space when `--keys` is not given.
pub const DEFAULT_KEYS: u64 = 10_000;
/// Share of SETs when `--write-ratio` is not given: half writes, half reads.
pub const DEFAULT_WRITE_RATIO: f64 = 0.5;
/// Most client threads.
pub const MAX_CLIENTS: usize = 1_024;
/// Largest `--pipeline`: a batch is written whole before its replies are read, so it must fit the
/// sockets' buffers.
pub const MAX_PIPELINE: usize = 1_000;
/// Largest latency the histograms hold, in microseconds (one hour); longer ones count as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant decimal digits the histograms keep.
const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;
/// How often the progress bar is redrawn, in milliseconds.
const PROGRESS_REFRESH_MS: u64 = 100;

/// `quorumkv-cli bench` arguments.
#[derive(Debug, Parser)]
#[command(
    name = "quorumkv-cli bench",
    about = "Drive load against the cluster and report throughput and latency"
)]
pub struct BenchArgs {
    /// Client addresses, comma-separated (default: the ones given before `bench`).
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub servers: Option<Vec<String>>,
    /// Client threads, each with its own connection.
    #[arg(long, default_value_t = DEFAULT_CLIENTS, value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CLIENTS as u64))]
    pub clients: usize,
    /// Total ops across all clients [default: 100000 unless --duration].
    #[arg(long, conflicts_with = "duration_secs", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// Run for this many seconds instead of a number of ops.
    #[arg(long = "duration", value_name = "SECS", value_parser = parse_duration_secs)]
    pub duration_secs: Option<f64>,
    /// Bytes per SET value.
    #[arg(long = "value-size", value_name = "B", default_value_t = DEFAULT_VALUE_SIZE_BYTES, value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_ARG_BYTES as u64))]
    pub value_size_bytes: usize,
    /// Keys `key:0` .. `key:N-1`, picked uniformly.
    #[arg(long, default_value_t = DEFAULT_KEYS, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Share of ops that are SETs (the rest are GETs), 0.0 to 1.0.
    #[arg(long = "write-ratio", value_name = "F", default_value_t = DEFAULT_WRITE_RATIO, value_parser = parse_ratio)]
    pub write_ratio: f64,
    /// Ops each client sends before reading their replies.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_PIPELINE as u64))]
    pub pipeline: usize,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Spread the connections over all servers (client i starts at server i mod N), instead of
    /// all starting at the first; with forwarding every replica serves its share.
    #[arg(long)]
    pub spread: bool,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("must be a number from 0.0 to 1.0".to_string()),
    }
}

fn parse_duration_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err("must be a positive number of seconds".to_string()),
    }
}

/// When the run stops.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Ops(u64),
    Until(Instant),
}

/// One op kind's results.
struct KindStats {
    /// Latency of each successful op, in microseconds.
    latency_us: Histogram<u64>,
    /// Ops that got an error reply or no reply.
    errors: u64,
}

impl KindStats {
    fn new() -> KindStats {
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        KindStats { latency_us, errors: 0 }
    }

    fn ops(&self) -> u64 {
        self.latency_us.len() + self.errors
    }

    fn merge(&mut self, other: &KindStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.errors += other.errors;
    }

    fn summary(&self) -> serde_json::Value {
        let ms = |us: u64| (us as f64) / 1000.0;
        let quantile = |q: f64| {
            if self.latency_us.is_empty() {
                None
            } else {
                Some(ms(self.latency_us.value_at_quantile(q)))
            }
        };
        json!({
            "ops": self.ops(),
            "errors": self.errors,
            "latency_ms": {
                "p50": quantile(0.5),
                "p90": quantile(0.9),
                "p99": quantile(0.99),
                "p99_9": quantile(0.999),
                "max": if self.latency_us.is_empty() { None } else { Some(ms(self.latency_us.max())) },
            },
        })
    }
}

/// One thread's (or the run's) results.
struct Stats {
    writes: KindStats,
    reads: KindStats,
    /// The first failure seen, to tell the user why ops failed.
    first_error: Option<String>,
    /// True if some op failed because no server could be reached in time.
    unavailable: bool,
}

impl Stats {
    fn new() -> Stats {
        Stats { writes: KindStats::new(), reads: KindStats::new(), first_error: None, unavailable: false }
    }

    fn merge(&mut self, other: Stats) {
        self.writes.merge(&other.writes);
        self.reads.merge(&other.reads);
        self.first_error = self.first_error.take().or(other.first_error);
        self.unavailable |= other.unavailable;
    }

    fn kind(&mut self, is_write: bool) -> &mut KindStats {
        if is_write {
            &mut self.writes
        } else {
            &mut self.reads
        }
    }

    fn record_reply(&mut self, is_write: bool, reply: &Reply, latency: Duration) {
        if let Reply::Error(line) = reply {
            self.kind(is_write).errors += 1;
            self.first_error.get_or_insert_with(|| line.clone());
        } else {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
            self.kind(is_write).latency_us.saturating_record(us);
        }
    }

    fn record_failure(&mut self, is_write: bool, error: &ClientError) {
        self.kind(is_write).errors += 1;
        self.unavailable |= matches!(error, ClientError::Unavailable { .. });
        self.first_error.get_or_insert_with(|| error.to_string());
    }
}

/// What every client thread shares.
struct Shared<'a> {
    args: &'a BenchArgs,
    config: &'a ClientConfig,
    limit: Limit,
    /// Ops handed out so far (the `--ops` budget).
    issued: AtomicU64,
    /// Ops finished so far (the progress bar).
    completed: AtomicU64,
}

impl Shared<'_> {
    /// How many ops the next batch may run: up to `--pipeline`, none once the run is over.
    fn claim(&self) -> u64 {
        let batch = self.args.pipeline as u64;
        match self.limit {
            Limit::Until(end) => {
                if Instant::now() < end {
                    batch
                } else {
                    0
                }
            }
            Limit::Ops(total) => {
                let start = self.issued.fetch_add(batch, Ordering::Relaxed);
                total.saturating_sub(start).min(batch)
            }
        }
    }
}

/// One client thread: its own connection, its own key picks, its own histograms.
fn client_thread(shared: &Shared<'_>, thread_index: u64) -> Stats {
    let mut stats = Stats::new();
    let mut config = shared.config.clone();
    if shared.args.spread {
        let n = config.servers.len().max(1);
        config.servers.rotate_left(thread_index as usize % n);
    }
    let mut client = match Client::new(config) {
        Ok(client) => client,
        Err(error) => {
            stats.first_error = Some(error.to_string());
            return stats;
        }
    };
    let mut rng = Rng::new(client.client_id() ^ thread_index);
    let value = vec![b'x'; shared.args.value_size_bytes];
    let op = |rng: &mut Rng| {
        let is_write = rng.chance(shared.args.write_ratio);
        let key = format!("key:{}", rng.range(0, shared.args.keys)).into_bytes();
        let args =
            if is_write { vec![b"SET".to_vec(), key, value.clone()] } else { vec![b"GET".to_vec(), key] };
        (is_write, args)
    };
    loop {
        let count = shared.claim();
        if count == 0 {
            return stats;
        }
        let (kinds, batch): (Vec<bool>, Vec<Vec<Vec<u8>>>) = (0..count).map(|_| op(&mut rng)).unzip();
        let started = Instant::now();
        let result = if let [args] = batch.as_slice() {
            client.call(args).map(|reply| vec![reply])
        } else {
            client.pipeline(&batch)
        };
        let latency = started.elapsed();
        match result {
            Ok(replies) => {
                for (&is_write, reply) in kinds.iter().zip(&replies) {
                    stats.record_reply(is_write, reply, latency);
                }
            }
            Err(error) => {
                for &is_write in &kinds {
                    stats.record_failure(is_write, &error);
                }
            }
        }
        shared.completed.fetch_add(count, Ordering::Relaxed);
    }
}

fn progress_bar(limit: Limit, duration_secs: Option<f64>) -> ProgressBar {
    let (len, template) = match (limit, duration_secs) {
        (Limit::Ops(total), _) => (total, "{bar:40} {pos}/{len} ops {per_sec} ETA {eta}"),
        (Limit::Until(_), secs) => {
            ((secs.unwrap_or(0.0) * 1000.0) as u64, "{bar:40} {elapsed}/{duration} {msg}")
        }
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Runs the benchmark and prints its summary; returns the exit code: 0 if every op succeeded, 1 if
/// some failed, 2 if none succeeded because no server could be reached.
pub fn run(args: &BenchArgs, config: ClientConfig) -> u8 {
    let started = Instant::now();
    let limit = match args.duration_secs {
        Some(secs) => Limit::Until(started + Duration::from_secs_f64(secs)),
        None => Limit::Ops(args.ops.unwrap_or(DEFAULT_OPS)),
    };
    let shared =
        Shared { args, config: &config, limit, issued: AtomicU64::new(0), completed: AtomicU64::new(0) };
    let bar = progress_bar(limit, args.duration_secs);
    let mut total = Stats::new();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel();
        for thread_index in 0..args.clients {
            let (shared, done_tx) = (&shared, done_tx.clone());
            scope.spawn(move || {
                let _ = done_tx.send(client_thread(shared, thread_index as u64));
            });
        }
        drop(done_tx);
        let mut finished = 0;
        while finished < args.clients {
            match done_rx.recv_timeout(Duration::from_millis(PROGRESS_REFRESH_MS)) {
                Ok(stats) => {
                    total.merge(stats);
                    finished += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Every sender is gone: a thread panicked; its panic surfaces when the scope ends.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let completed = shared.completed.load(Ordering::Relaxed);
            match limit {
                Limit::Ops(_) => bar.set_position(completed),
                Limit::Until(_) => {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!("{completed} ops"));
                }
            }
        }
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let report = report(args, &config, &total, elapsed);
    let text = if args.json { format!("{report}\n") } else { summary_text(&report) };
    // A closed stdout (`| head`) must not turn a finished run into a panic.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    let mut all = KindStats::new();
    all.merge(&total.writes);
    all.merge(&total.reads);
    if all.errors == 0 {
        EXIT_OK
    } else if all.latency_us.is_empty() && total.unavailable {
        EXIT_UNAVAILABLE
    } else {
        EXIT_ERROR
    }
}

/// The run's results as one JSON object (what `--json` prints and the text summary is made from).
fn report(args: &BenchArgs, config: &ClientConfig, total: &Stats, elapsed: Duration) -> serde_json::Value {
    let mut all = KindStats::new();
    all.merge(&total.writes);
    all.merge(&total.reads);
    let secs = elapsed.as_secs_f64();
    json!({
        "ops": all.ops(),
        "errors": all.errors,
        "elapsed_secs": secs,
        "ops_per_sec": if secs > 0.0 { all.ops() as f64 / secs } else { 0.0 },
        "config": {
            "servers": config.servers,
            "clients": args.clients,
            "pipeline": args.pipeline,
            "value_size_bytes": args.value_size_bytes,
            "keys": args.keys,
            "write_ratio": args.write_ratio,
            "spread": args.spread,
            "ops": args.duration_secs.is_none().then(|| args.ops.unwrap_or(DEFAULT_OPS)),
            "duration_secs": args.duration_secs,
        },
        "all": all.summary(),
        "writes": total.writes.summary(),
        "reads": total.reads.summary(),
        "first_error": total.first_error,
    })
}

/// The human summary: a headline, the settings, and a latency table for writes, reads and all.
fn summary_text(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let number = |value: &serde_json::Value| value.as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "{} ops in {:.3} s: {:.0} ops/s, {} errors",
        report["ops"],
        number(&report["elapsed_secs"]),
        number(&report["ops_per_sec"]),
        report["errors"]
    );
    let config = &report["config"];
    let _ = writeln!(
        out,
        "{} clients, pipeline {}, {}-byte values, {} keys, write ratio {}",
        config["clients"],
        config["pipeline"],
        config["value_size_bytes"],
        config["keys"],
        config["write_ratio"]
    );
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "ops", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for kind in ["writes", "reads", "all"] {
        let stats = &report[kind];
        let latency = &stats["latency_ms"];
        let cell = |name: &str| latency[name].as_f64().map_or("-".to_string(), |ms| format!("{ms:.3}"));
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            kind,
            stats["ops"].as_u64().unwrap_or(0),
            stats["errors"].as_u64().unwrap_or(0),
            cell("p50"),
            cell("p90"),
            cell("p99"),
            cell("p99_9"),
            cell("max")
        );
    }
    if let Some(error) = report["first_error"].as_str() {
        let _ = writeln!(out, "first error: {error}");
    }
    out
}
