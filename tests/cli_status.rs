//! `quorumkv-cli status` against real replicas (PRODUCT.md): one row per member from its own
//! view, unreachable members shown as such, exit 0 only with a leader and a reachable majority.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::TestCluster;
use common::wait_until;

fn status(servers: &str, json: bool) -> (Option<i32>, String) {
    let mut cli = Command::new(env!("CARGO_BIN_EXE_quorumkv-cli"));
    cli.arg("--servers").arg(servers).arg("status").env("QUORUMKV_CLI_TIMEOUT_MS", "1000");
    if json {
        cli.arg("--json");
    }
    let out = cli.output().expect("quorumkv-cli runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn status_shows_every_member_and_says_which_are_unreachable() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let servers: Vec<String> = cluster.client_addrs.values().map(|a| a.to_string()).collect();
    let list = servers.join(",");
    wait_until("every member agrees on the leader", Duration::from_secs(10), || {
        let (code, text) = status(&list, true);
        let view: serde_json::Value = serde_json::from_str(&text).expect("json");
        let members = view["members"].as_array().cloned().unwrap_or_default();
        let agree = members.iter().all(|m| m["leader_id"] == leader && m["reachable"] == true);
        if code == Some(0) && members.len() == 3 && agree {
            Ok(())
        } else {
            Err(text)
        }
    });
    let (code, table) = status(&list, false);
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("leader") && table.contains("follower"), "{table}");
    assert!(table.contains("3 of 3 servers reachable; 3 voters"), "{table}");

    // One member down: its row says unreachable; a leader and a majority remain, so exit 0.
    let down = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("a follower");
    cluster.stop(down);
    let (code, table) = status(&list, false);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains(&format!("{} ", cluster.client_addrs[&down]))
            || table.contains(&cluster.client_addrs[&down].to_string()),
        "{table}"
    );
    assert!(table.contains("unreachable"), "{table}");
    assert!(table.contains("2 of 3 servers reachable"), "{table}");

    // Two down: no majority (and soon no leader): exit 1.
    let other = *cluster.client_addrs.keys().find(|&&id| id != leader && id != down).expect("third");
    cluster.stop(other);
    let (code, json) = status(&list, true);
    assert_eq!(code, Some(1), "{json}");
    let view: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(view["healthy"], false);
    let unreachable =
        view["members"].as_array().map_or(0, |m| m.iter().filter(|r| r["reachable"] == false).count());
    assert_eq!(unreachable, 2);
}

#[test]
fn check_finds_a_healthy_cluster_linearizable_and_exits_0() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(10));
    let servers: Vec<String> = cluster.client_addrs.values().map(|a| a.to_string()).collect();
    // Twice: the second run finds the first one's keys written, and still checks (its keys are
    // its own, where the checker's model starts them missing).
    for run in 1..=2 {
        let out = Command::new(env!("CARGO_BIN_EXE_quorumkv-cli"))
            .args([
                "--servers",
                &servers.join(","),
                "check",
                "--duration",
                "2",
                "--clients",
                "4",
                "--keys",
                "3",
            ])
            .output()
            .expect("quorumkv-cli runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "run {run}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("linearizable") && !text.contains("NOT"), "run {run}: {text}");
        let done: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ops done: "))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .expect("ops done line");
        assert!(done > 20, "run {run}: {text}");
    }
    // It wrote only under its prefix.
    let mut conn = common::resp_conn::RespConn::connect(
        cluster.client_addrs.values().next().copied().expect("a server"),
        Duration::from_secs(10),
    );
    let quorumkv::protocol::resp::Reply::Array(Some(keys)) = conn.call(&[b"KEYS", b"*"]) else {
        panic!("KEYS")
    };
    assert!(!keys.is_empty());
    for key in keys {
        let quorumkv::protocol::resp::Reply::Bulk(Some(k)) = key else { panic!("a key") };
        assert!(k.starts_with(b"__check:"), "{k:?}");
    }
}

#[test]
fn check_against_no_server_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv-cli"))
        .args(["--servers", "127.0.0.1:1", "check", "--duration", "0.5", "--clients", "1"])
        .env("QUORUMKV_CLI_TIMEOUT_MS", "200")
        .output()
        .expect("quorumkv-cli runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
}
