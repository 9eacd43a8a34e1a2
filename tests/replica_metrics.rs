//! `/metrics` and `/health` of running replicas (PRODUCT.md "Metrics and health"): the
//! exposition passes `promtool check metrics` and its numbers move with writes, a leader change
//! and a snapshot; health is 200 on a member that knows a leader, 503 with the reason on one cut
//! off from the majority.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::cluster::TestCluster;
use common::resp_conn::RespConn;
use common::wait_until;
use quorumkv::actors::sim_network::SimFaults;
use quorumkv::protocol::resp::Reply;

const WAIT: Duration = Duration::from_secs(15);

/// GET `path` over HTTP/1.0: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics port");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

/// The value of the sample `name` (with its labels, as printed) in an exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn metrics_addr(cluster: &TestCluster, id: u64) -> SocketAddr {
    *cluster.status[&id].metrics_addr.get().expect("metrics served")
}

#[test]
fn metrics_pass_promtool_and_move_with_writes_elections_and_snapshots() {
    let cluster = TestCluster::start_with(3, |config| {
        config.metrics_addr = Some("127.0.0.1:0".into());
        config.snapshot_threshold_bytes = 32 * 1024;
    });
    let leader = cluster.wait_for_leader(WAIT);
    let (code, before) = http_get(metrics_addr(&cluster, leader), "/metrics");
    assert_eq!(code, 200);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    promtool.stdin.take().expect("stdin").write_all(before.as_bytes()).expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ran");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(sample(&before, "quorumkv_is_leader"), 1.0);

    let mut conn = RespConn::connect(cluster.client_addrs[&leader], WAIT);
    let value = vec![b'v'; 1000];
    for i in 0..100 {
        assert_eq!(conn.call(&[b"SET", format!("k{i}").as_bytes(), &value]), Reply::ok());
    }
    assert!(matches!(conn.call(&[b"INCR", b"k1"]), Reply::Error(_)));
    wait_until("a snapshot taken past the threshold", WAIT, || {
        let (_, text) = http_get(metrics_addr(&cluster, leader), "/metrics");
        let taken = sample(&text, "quorumkv_snapshots_taken_total");
        if taken >= 1.0 {
            Ok(())
        } else {
            Err(taken)
        }
    });
    let (_, after) = http_get(metrics_addr(&cluster, leader), "/metrics");
    assert!(sample(&after, "quorumkv_requests_total{command=\"set\"}") >= 100.0);
    assert_eq!(sample(&after, "quorumkv_request_errors_total{command=\"incr\"}"), 1.0);
    assert!(sample(&after, "quorumkv_request_duration_seconds_count") >= 101.0);
    assert!(
        sample(&after, "quorumkv_wal_fsync_duration_seconds_count")
            > sample(&before, "quorumkv_wal_fsync_duration_seconds_count")
    );
    assert!(sample(&after, "quorumkv_applied_index") >= sample(&before, "quorumkv_applied_index") + 100.0);
    assert_eq!(sample(&after, "quorumkv_keys"), 100.0);
    assert_eq!(sample(&after, "quorumkv_disk_full"), 0.0);
    for peer in cluster.client_addrs.keys().filter(|&&id| id != leader) {
        let rtt = format!("quorumkv_peer_round_trip_seconds_count{{peer=\"{peer}\"}}");
        assert!(sample(&after, &rtt) >= 1.0, "heartbeat round trips to {peer} timed");
    }
    let lag = sample(&after, "quorumkv_apply_lag_entries");
    assert_eq!(lag, sample(&after, "quorumkv_commit_index") - sample(&after, "quorumkv_applied_index"));

    // A leader change: the new leader's gauge and every replica's leader-change counter move.
    let target = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    let (_, target_before) = http_get(metrics_addr(&cluster, target), "/metrics");
    assert_eq!(conn.call(&[b"LEADER", b"TRANSFER", target.to_string().as_bytes()]), Reply::ok());
    wait_until("the new leader reports itself", WAIT, || {
        let (_, text) = http_get(metrics_addr(&cluster, target), "/metrics");
        let moved = sample(&text, "quorumkv_leader_changes_total")
            > sample(&target_before, "quorumkv_leader_changes_total");
        if sample(&text, "quorumkv_is_leader") == 1.0
            && moved
            && sample(&text, "quorumkv_elections_started") >= 1.0
        {
            Ok(())
        } else {
            Err(text
                .lines()
                .filter(|l| l.contains("leader") || l.contains("elections"))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    });
    let (code, body) = http_get(metrics_addr(&cluster, leader), "/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"health\":true"), "{body}");
    assert_eq!(http_get(metrics_addr(&cluster, leader), "/nothing").0, 404);

    // The shipped dashboard only graphs metrics that exist, and the scrape example is valid.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json"))
            .expect("deploy/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut used: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("quorumkv_"))
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            after.contains(&format!("# TYPE {family} ")),
            "the dashboard graphs {name}, which /metrics lacks"
        );
    }
    let config = std::process::Command::new("promtool")
        .args(["check", "config", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus.yml")])
        .output()
        .expect("promtool");
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stdout));
}

#[test]
fn health_is_503_with_the_reason_on_a_member_cut_off_from_the_majority() {
    let cluster = TestCluster::start_sim(3, 11, SimFaults::reliable(), |config| {
        config.metrics_addr = Some("127.0.0.1:0".into());
    });
    let leader = cluster.wait_for_leader(WAIT);
    let alone = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    let rest: Vec<u64> = cluster.client_addrs.keys().copied().filter(|&id| id != alone).collect();
    wait_until("every member healthy", WAIT, || {
        let codes: Vec<u16> = cluster
            .client_addrs
            .keys()
            .map(|&id| http_get(metrics_addr(&cluster, id), "/health").0)
            .collect();
        if codes.iter().all(|&c| c == 200) {
            Ok(())
        } else {
            Err(codes)
        }
    });
    cluster.net().partition(&[vec![alone], rest]);
    wait_until("the cut-off member unhealthy", WAIT, || {
        let (code, body) = http_get(metrics_addr(&cluster, alone), "/health");
        if code == 503 && body.contains("no leader known") {
            Ok(())
        } else {
            Err((code, body))
        }
    });
    let (code, body) = http_get(metrics_addr(&cluster, leader), "/health");
    assert_eq!(code, 200, "the majority's leader stays healthy: {body}");
    cluster.net().heal();
    wait_until("healthy again once healed", WAIT, || {
        let (code, body) = http_get(metrics_addr(&cluster, alone), "/health");
        if code == 200 {
            Ok(())
        } else {
            Err((code, body))
        }
    });
}
