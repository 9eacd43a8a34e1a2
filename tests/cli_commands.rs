//! The `quorumkv-cli` binary against a scripted fake server (PRODUCT.md, `quorumkv-cli`): redis-cli
//! reply formatting, exit codes 0/1/2, raw-byte arguments, the prompt read from a pipe, and
//! `bench --json`.

#[path = "client_fake_server.rs"]
mod fake;

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use fake::{command, dead_addr, kv_store, session, FakeServer};
use quorumkv::protocol::resp::Reply;

/// The per-request deadline given to the CLI; the fakes answer at once, well within it.
const TEST_TIMEOUT_MS: &str = "2000";
/// The deadline where no server is up, so those tests end fast.
const UNREACHABLE_TIMEOUT_MS: &str = "200";

fn cli(servers: &str, args: &[&str]) -> Command {
    let mut cli = Command::new(env!("CARGO_BIN_EXE_quorumkv-cli"));
    cli.arg("--servers").arg(servers).args(args).env("QUORUMKV_CLI_TIMEOUT_MS", TEST_TIMEOUT_MS);
    cli
}

fn run(servers: &str, args: &[&str]) -> Output {
    cli(servers, args).output().expect("quorumkv-cli runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn one_shot_commands_print_like_redis_cli_and_exit_0() {
    let server = FakeServer::replying(kv_store());
    for (args, expected) in [
        (&["SET", "k", "v"][..], "OK\n"),
        (&["GET", "k"][..], "\"v\"\n"),
        (&["GET", "missing"][..], "(nil)\n"),
        (&["APPEND", "k", "ab"][..], "(integer) 3\n"),
        (&["ping"][..], "PONG\n"),
    ] {
        let output = run(&server.addr, args);
        assert_eq!(stdout(&output), expected, "{args:?}");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
    }
    // Writes went out with a session tag, reads without.
    let requests = server.requests();
    assert!(session(&requests[0]).is_some());
    assert!(session(&requests[1]).is_none());
    assert!(session(&requests[3]).is_some());
}

#[test]
fn an_error_reply_prints_error_and_exits_1() {
    let server = FakeServer::replying(kv_store());
    let output = run(&server.addr, &["FOO", "bar"]);
    assert_eq!(stdout(&output), "(error) ERR unknown command 'FOO'\n");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn no_reachable_server_exits_2() {
    let output = cli(&format!("{},{}", dead_addr(), dead_addr()), &["GET", "k"])
        .env("QUORUMKV_CLI_TIMEOUT_MS", UNREACHABLE_TIMEOUT_MS)
        .output()
        .expect("quorumkv-cli runs");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Could not reach"), "{output:?}");
}

#[test]
fn the_leader_is_found_from_a_follower_redirect() {
    let leader = FakeServer::replying(kv_store());
    let leader_addr = leader.addr.clone();
    let follower = FakeServer::replying(move |_| Reply::Error(format!("NOTLEADER {leader_addr}")));
    let output = run(&follower.addr, &["SET", "k", "v"]);
    assert_eq!(stdout(&output), "OK\n");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(leader.request_count(), 1);
}

#[cfg(unix)]
#[test]
fn arguments_reach_the_server_as_raw_bytes() {
    use std::os::unix::ffi::OsStringExt;
    let server = FakeServer::replying(kv_store());
    let value = b"\xff\xfe bin\x01ary".to_vec();
    let output = cli(&server.addr, &["SET", "k"])
        .arg(OsString::from_vec(value.clone()))
        .output()
        .expect("quorumkv-cli runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(command(&server.requests()[0]), [b"SET".to_vec(), b"k".to_vec(), value]);
    let output = run(&server.addr, &["GET", "k"]);
    assert_eq!(stdout(&output), "\"\\xff\\xfe bin\\x01ary\"\n");
}

#[test]
fn hyphen_arguments_after_the_command_are_not_options() {
    let server = FakeServer::replying(kv_store());
    let output = run(&server.addr, &["SET", "k", "--servers"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(command(&server.requests()[0])[2], b"--servers".to_vec());
}

#[test]
fn the_prompt_runs_piped_lines_until_quit() {
    let server = FakeServer::replying(kv_store());
    let home = tempfile::tempdir().expect("temp home");
    let mut child = cli(&server.addr, &[])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quorumkv-cli starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"SET k \"a b\"\nget k\n\"unbalanced\nquit\nGET never\n").expect("write lines");
    drop(stdin);
    let output = child.wait_with_output().expect("quorumkv-cli ends");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "OK\n\"a b\"\nInvalid argument(s)\n");
    assert_eq!(server.request_count(), 2, "nothing is sent after quit");
    let history = std::fs::read_to_string(home.path().join(".quorumkv_history")).expect("history saved");
    assert!(history.contains("get k"), "{history}");
}

#[test]
fn bench_json_reports_every_op() {
    let server = FakeServer::replying(kv_store());
    let output = run(&server.addr, &["bench", "--ops", "200", "--clients", "4", "--keys", "10", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["ops"], 200);
    assert_eq!(report["errors"], 0);
    assert!(report["ops_per_sec"].as_f64().is_some_and(|rate| rate > 0.0));
    assert_eq!(report["config"]["clients"], 4);
    let (writes, reads) = (report["writes"]["ops"].as_u64(), report["reads"]["ops"].as_u64());
    assert_eq!(writes.zip(reads).map(|(w, r)| w + r), Some(200));
    for kind in ["all", "writes", "reads"] {
        for field in ["p50", "p90", "p99", "p99_9", "max"] {
            assert!(report[kind]["latency_ms"].get(field).is_some(), "{kind}.{field}");
        }
    }
    let all = &report["all"]["latency_ms"];
    assert!(all["p50"].as_f64() <= all["max"].as_f64());
    let requests = server.requests();
    assert_eq!(requests.len(), 200);
    // Every SET carried a session tag, every GET none; keys stay within --keys.
    for request in &requests {
        let cmd = command(request);
        assert_eq!(cmd[0] == b"SET", session(request).is_some());
        let key = String::from_utf8_lossy(&cmd[1]).into_owned();
        let n: u64 = key.strip_prefix("key:").and_then(|n| n.parse().ok()).expect("key:<n>");
        assert!(n < 10, "{key}");
    }
}

#[test]
fn bench_pipelines_and_prints_a_text_summary() {
    let server = FakeServer::replying(kv_store());
    let output = run(
        &server.addr,
        &["bench", "--ops", "50", "--clients", "2", "--pipeline", "8", "--write-ratio", "1"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.starts_with("50 ops in "), "{text}");
    for row in ["writes", "reads", "all"] {
        assert!(text.lines().any(|line| line.starts_with(row)), "{row}: {text}");
    }
    assert_eq!(server.request_count(), 50);
    assert!(server.requests().iter().all(|request| session(request).is_some()));
}

#[test]
fn bench_against_no_server_exits_2() {
    let output = cli(&dead_addr(), &["bench", "--ops", "4", "--clients", "2", "--json"])
        .env("QUORUMKV_CLI_TIMEOUT_MS", UNREACHABLE_TIMEOUT_MS)
        .output()
        .expect("quorumkv-cli runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["errors"], 4);
}

#[test]
fn bench_runs_for_a_duration() {
    let server = FakeServer::replying(kv_store());
    let output = run(&server.addr, &["bench", "--duration", "0.3", "--clients", "2", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["config"]["duration_secs"], 0.3);
    assert!(report["ops"].as_u64().is_some_and(|ops| ops > 0), "{report}");
    assert_eq!(report["ops"].as_u64(), Some(server.request_count() as u64));
    // Generous: the run stops at its duration, not at some default op count.
    assert!(report["elapsed_secs"].as_f64().is_some_and(|secs| (0.3..10.0).contains(&secs)), "{report}");
}

#[test]
fn bench_spread_puts_connections_on_every_server() {
    let servers: Vec<FakeServer> = (0..3).map(|_| FakeServer::replying(kv_store())).collect();
    let list = servers.iter().map(|s| s.addr.clone()).collect::<Vec<_>>().join(",");
    let output = run(&list, &["bench", "--ops", "300", "--clients", "6", "--spread", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["config"]["spread"], true);
    let counts: Vec<usize> = servers.iter().map(|s| s.request_count()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|&c| c > 0), "every server gets a share: {counts:?}");
    // Without --spread every connection starts (and, answered, stays) at the first server.
    let output = run(&list, &["bench", "--ops", "60", "--clients", "6", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let after: Vec<usize> = servers.iter().map(|s| s.request_count()).collect();
    assert_eq!((after[0] - counts[0], after[1] - counts[1], after[2] - counts[2]), (60, 0, 0));
}
