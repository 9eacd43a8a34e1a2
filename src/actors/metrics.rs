//! A replica's Prometheus metrics: counters and histograms the actors record into (atomics: no
//! lock on the request path), and gauges read from the status board when scraped.
//!
//! The `prometheus` crate (TiKV's choice): its counters and histograms are plain atomics once a
//! label set is resolved, and we resolve every command's label set up front.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::protocol::command_table::COMMANDS;

/// One WAL write-and-fsync slower than this is logged as a warning (a slow or failing disk).
pub const SLOW_FSYNC_WARNING: Duration = Duration::from_secs(1);

/// Latency buckets, seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Everything a replica counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by command, indexed like [`COMMANDS`], then one for names not in the table.
    requests: Vec<IntCounter>,
    /// Error replies by command, indexed the same way.
    errors: Vec<IntCounter>,
    /// Time from a request's arrival to its reply being ready.
    pub request_seconds: Histogram,
    /// Time to write and fsync one WAL batch.
    pub fsync_seconds: Histogram,
    /// Leader's heartbeat to a peer until its answer, by peer id.
    peer_rtt_seconds: HistogramVec,
    /// Snapshots this replica took of its state.
    pub snapshots_taken: IntCounter,
    /// Snapshots this replica started sending to a follower.
    pub snapshots_sent: IntCounter,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: IntCounter,
    /// Requests a follower forwarded to the leader.
    pub forwarded: IntCounter,
    /// Client requests refused before they were run (unparseable or over a limit).
    pub refused_client_input: IntCounter,
    /// Peer frames refused (invalid messages, strangers).
    pub refused_peer_input: IntCounter,
    /// Times this replica saw the leader change.
    pub leader_changes: IntCounter,
    gauges: Gauges,
}

#[derive(Debug)]
struct Gauges {
    is_leader: IntGauge,
    term: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    apply_lag: IntGauge,
    snapshot_index: IntGauge,
    last_log_index: IntGauge,
    log_bytes: IntGauge,
    keys: IntGauge,
    elections: IntGauge,
    clients: IntGauge,
    disk_full: IntGauge,
}

/// The numbers the status board holds, as the gauges want them.
#[derive(Clone, Copy, Debug, Default)]
pub struct GaugeValues {
    /// 1 on the leader.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Snapshot index.
    pub snapshot_index: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Log bytes since the snapshot.
    pub log_bytes: u64,
    /// Keys stored.
    pub keys: u64,
    /// Elections this replica started.
    pub elections: u64,
    /// Live client connections.
    pub clients: u64,
    /// The disk-full alarm is raised.
    pub disk_full: bool,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h = Histogram::with_opts(opts).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(h.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    h
}

fn histogram_by(registry: &Registry, name: &str, help: &str, label: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, &[label]).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(h.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    h
}

fn by_command(registry: &Registry, name: &str, help: &str) -> Vec<IntCounter> {
    let vec =
        IntCounterVec::new(Opts::new(name, help), &["command"]).unwrap_or_else(|e| panic!("{name}: {e}"));
    registry.register(Box::new(vec.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    COMMANDS.iter().map(|c| c.name).chain(["other"]).map(|n| vec.with_label_values(&[n])).collect()
}

impl Default for Metrics {
    fn default() -> Self {
        // The names are fixed and valid, so registering cannot fail (a panic here is a bug at start).
        let r = Registry::new();
        Metrics {
            requests: by_command(&r, "quorumkv_requests_total", "Client requests, by command."),
            errors: by_command(
                &r,
                "quorumkv_request_errors_total",
                "Error replies to client requests, by command.",
            ),
            request_seconds: histogram(
                &r,
                "quorumkv_request_duration_seconds",
                "Time from a request's arrival to its reply.",
            ),
            fsync_seconds: histogram(
                &r,
                "quorumkv_wal_fsync_duration_seconds",
                "Time to write and fsync one batch of the write-ahead log.",
            ),
            peer_rtt_seconds: histogram_by(
                &r,
                "quorumkv_peer_round_trip_seconds",
                "From the leader's heartbeat to a peer until the peer's answer, by peer.",
                "peer",
            ),
            snapshots_taken: counter(&r, "quorumkv_snapshots_taken_total", "Snapshots taken of the state."),
            snapshots_sent: counter(
                &r,
                "quorumkv_snapshots_sent_total",
                "Snapshot transfers started to followers.",
            ),
            snapshots_installed: counter(
                &r,
                "quorumkv_snapshots_installed_total",
                "Snapshots received from a leader and installed.",
            ),
            forwarded: counter(&r, "quorumkv_forwarded_requests_total", "Requests forwarded to the leader."),
            refused_client_input: counter(
                &r,
                "quorumkv_refused_client_requests_total",
                "Client requests refused before running (malformed or over a limit).",
            ),
            refused_peer_input: counter(&r, "quorumkv_refused_peer_messages_total", "Peer messages refused."),
            leader_changes: counter(&r, "quorumkv_leader_changes_total", "Changes of the known leader."),
            gauges: Gauges {
                is_leader: gauge(&r, "quorumkv_is_leader", "1 if this replica leads."),
                term: gauge(&r, "quorumkv_term", "Current Raft term."),
                commit_index: gauge(&r, "quorumkv_commit_index", "Raft commit index."),
                applied_index: gauge(&r, "quorumkv_applied_index", "Index applied to the state machine."),
                apply_lag: gauge(
                    &r,
                    "quorumkv_apply_lag_entries",
                    "Committed entries not yet applied (a stuck or slow applier).",
                ),
                snapshot_index: gauge(&r, "quorumkv_snapshot_index", "Index covered by the latest snapshot."),
                last_log_index: gauge(&r, "quorumkv_last_log_index", "Last index in the log."),
                log_bytes: gauge(&r, "quorumkv_log_bytes", "Bytes of log entries since the snapshot."),
                keys: gauge(&r, "quorumkv_keys", "Keys stored."),
                elections: gauge(&r, "quorumkv_elections_started", "Elections this replica started."),
                clients: gauge(&r, "quorumkv_connected_clients", "Live client connections."),
                disk_full: gauge(
                    &r,
                    "quorumkv_disk_full",
                    "1 while the disk is full and writes are refused (the alarm).",
                ),
            },
            registry: r,
        }
    }
}

/// The [`COMMANDS`] index of `name` (case-insensitive), or the "other" slot.
pub fn command_slot(name: &[u8]) -> usize {
    // Lowercased once into a stack buffer (no command name is longer), then plain byte order.
    let mut lower = [0u8; 24];
    let Some(buf) = lower.get_mut(..name.len()) else { return COMMANDS.len() };
    for (to, from) in buf.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    COMMANDS.binary_search_by(|c| c.name.as_bytes().cmp(buf)).unwrap_or(COMMANDS.len())
}

impl Metrics {
    /// Counts a request of the command in `slot` (from [`command_slot`]).
    pub fn request(&self, slot: usize) {
        if let Some(c) = self.requests.get(slot) {
            c.inc();
        }
    }

    /// Records one heartbeat round trip to peer `peer` (a few per second per peer: the label
    /// lookup is off the request path).
    pub fn peer_round_trip(&self, peer: u64, took: Duration) {
        self.peer_rtt_seconds.with_label_values(&[&peer.to_string()]).observe(took.as_secs_f64());
    }

    /// Counts an error reply to the command in `slot`.
    pub fn error(&self, slot: usize) {
        if let Some(c) = self.errors.get(slot) {
            c.inc();
        }
    }

    /// The text exposition of every metric, with the gauges set to `values`.
    pub fn render(&self, values: GaugeValues) -> String {
        let g = &self.gauges;
        let set = |gauge: &IntGauge, v: u64| gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&g.is_leader, u64::from(values.is_leader));
        set(&g.term, values.term);
        set(&g.commit_index, values.commit_index);
        set(&g.applied_index, values.applied_index);
        set(&g.apply_lag, values.commit_index.saturating_sub(values.applied_index));
        set(&g.snapshot_index, values.snapshot_index);
        set(&g.last_log_index, values.last_log_index);
        set(&g.log_bytes, values.log_bytes);
        set(&g.keys, values.keys);
        set(&g.disk_full, u64::from(values.disk_full));
        set(&g.elections, values.elections);
        set(&g.clients, values.clients);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for families the registry built.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_find_their_counters() {
        let m = Metrics::default();
        assert_eq!(COMMANDS[command_slot(b"get")].name, "get");
        assert_eq!(COMMANDS[command_slot(b"SET")].name, "set");
        assert_eq!(command_slot(b"nosuch"), COMMANDS.len());
        assert_eq!(command_slot(b"a-name-longer-than-any-command"), COMMANDS.len());
        for (slot, c) in COMMANDS.iter().enumerate() {
            assert_eq!(command_slot(c.name.to_ascii_uppercase().as_bytes()), slot, "{}", c.name);
        }
        m.request(command_slot(b"GET"));
        m.request(command_slot(b"GET"));
        m.error(command_slot(b"nosuch"));
        let text = m.render(GaugeValues { term: 7, ..GaugeValues::default() });
        assert!(text.contains("quorumkv_requests_total{command=\"get\"} 2"), "{text}");
        assert!(text.contains("quorumkv_request_errors_total{command=\"other\"} 1"), "{text}");
        assert!(text.contains("quorumkv_term 7"), "{text}");
    }
}
