//! The real binaries: three `quorumkv-server` processes driven by `quorumkv-cli`, the leader
//! killed with SIGKILL and restarted, data checked; data-dir identity checks and SIGTERM.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/small_disk.rs"]
mod small_disk;
use small_disk::SmallDisk;

const SERVER: &str = env!("CARGO_BIN_EXE_quorumkv-server");
const CLI: &str = env!("CARGO_BIN_EXE_quorumkv-cli");
const WAIT: Duration = Duration::from_secs(30);

/// The tests here start real processes on ports picked then released: run them one at a time so
/// two clusters never race for the same ports (and give each its own cluster name as well).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_ports(n: usize) -> Vec<u16> {
    // Held together so they differ; released just before the servers bind them.
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

/// Three members on picked ports: client addresses, the `--peers` list, each one's command line.
struct Layout {
    client: Vec<String>,
    peers: String,
    args: Vec<Vec<String>>,
}

fn layout(dir: &Path, cluster_name: &str) -> Layout {
    let ports = free_ports(6);
    let client: Vec<String> = ports[..3].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = (0..3).map(|i| format!("{}=127.0.0.1:{}", i + 1, ports[3 + i])).collect::<Vec<_>>().join(",");
    let args = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let data_dir = dir.join(format!("d{}", i + 1)).display().to_string();
            let flags = [
                "--id",
                &id,
                "--client-addr",
                &client[i],
                "--peers",
                &peers,
                "--data-dir",
                &data_dir,
                "--election-timeout-ms",
                "300",
                "--heartbeat-ms",
                "50",
                "--cluster-name",
                cluster_name,
            ];
            flags.iter().map(|f| f.to_string()).collect()
        })
        .collect();
    Layout { client, peers, args }
}

struct Server {
    child: Running,
    args: Vec<String>,
}

/// A spawned server, killed when dropped: a failing test leaves no process behind.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}

fn spawn_server(args: &[String], log: &Path) -> Running {
    spawn_server_under(&[], args, log)
}

/// The server run by `wrapper` (a command and its arguments, the server's path and `args`
/// following them), its stderr in `log`; no wrapper runs it directly.
fn spawn_server_under(wrapper: &[&str], args: &[String], log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log file");
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(SERVER);
            c
        }
        None => Command::new(SERVER),
    };
    command
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .expect("spawn quorumkv-server")
}

/// The value the disk-filling tests write: big enough to fill a small disk in few requests.
const BIG: usize = 60_000;

/// `set key` to a [`BIG`]-byte value through the CLI, with a deadline of `timeout_ms`.
fn set_big(servers: &str, key: &str, timeout_ms: &str) -> Output {
    Command::new(CLI)
        .args(["--servers", servers, "set", key, &"v".repeat(BIG)])
        .env("QUORUMKV_CLI_TIMEOUT_MS", timeout_ms)
        .output()
        .expect("run cli")
}

/// Sets k0, k1, ... to [`BIG`]-byte values until one is not acknowledged; answers how many were
/// (fewer than `at_most`: the disk is small).
fn fill_until_refused(servers: &str, timeout_ms: &str, at_most: u64) -> u64 {
    let mut acknowledged = 0;
    while stdout(&set_big(servers, &format!("k{acknowledged}"), timeout_ms)) == "OK" {
        acknowledged += 1;
        assert!(acknowledged < at_most, "{at_most} writes of {BIG} bytes all fit");
    }
    acknowledged
}

fn cli(servers: &str, args: &[&str]) -> Output {
    Command::new(CLI)
        .arg("--servers")
        .arg(servers)
        .args(args)
        .env("QUORUMKV_CLI_TIMEOUT_MS", "15000")
        .output()
        .expect("run quorumkv-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn info_field(addr: &str, field: &str) -> Option<String> {
    let out = cli(addr, &["info"]);
    stdout(&out).lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

/// A single-replica server on picked ports with its data in `data`: its client address and its
/// command line (`extra` flags last).
fn single_server(data: &Path, extra: &[&str]) -> (String, Vec<String>) {
    let ports = free_ports(2);
    let client = format!("127.0.0.1:{}", ports[0]);
    let peers = format!("1=127.0.0.1:{}", ports[1]);
    let data = data.display().to_string();
    let fixed = ["--client-addr", &client, "--peers", &peers, "--data-dir", &data];
    let timings = ["--election-timeout-ms", "300", "--heartbeat-ms", "50"];
    let args = fixed.iter().chain(&timings).chain(extra).map(|a| a.to_string()).collect();
    (client, args)
}

/// A single-replica server with its data and log in `dir` (`extra` flags last), started and
/// leading: its client address and its process.
fn leading_single_server(dir: &Path, extra: &[&str]) -> (String, Running) {
    let (client, args) = single_server(&dir.join("data"), extra);
    let server = spawn_server(&args, &dir.join("log"));
    wait_for_info(&client, "role", "leader");
    (client, server)
}

/// Waits until INFO of `addr` says `field:value`.
fn wait_for_info(addr: &str, field: &str, value: &str) {
    wait_for(&format!("{field}:{value}"), || {
        (info_field(addr, field).as_deref() == Some(value)).then_some(())
    });
}

/// SIGTERM, then the exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    wait_for("exit after SIGTERM", || child.try_wait().ok().flatten())
}

/// SIGKILL, and reap.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn three_processes_survive_kill_9_of_the_leader() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, peers, args } = layout(dir.path(), "quorumkv");
    let servers_arg = client.join(",");
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            let child = spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)));
            Server { child, args: args[i].clone() }
        })
        .collect();

    for i in 0..20 {
        let out = cli(&servers_arg, &["set", &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(stdout(&out), "OK", "set k{i}: {out:?}");
        assert_eq!(out.status.code(), Some(0));
    }
    let leader = wait_for("a leader", || {
        (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader"))
    });
    servers[leader].child.kill().expect("kill -9 the leader");
    servers[leader].child.wait().expect("reap");
    // The CLI finds the new leader by itself.
    for i in 20..40 {
        let out = cli(&servers_arg, &["set", &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(stdout(&out), "OK", "set k{i} after the kill: {out:?}");
    }
    let out = cli(&servers_arg, &["append", "k0", "+"]);
    assert_eq!(stdout(&out), "(integer) 3");
    // Restart the killed one from its data dir; it catches up.
    let args = servers[leader].args.clone();
    servers[leader].child = spawn_server(&args, &dir.path().join("log-restarted"));
    let commit: u64 = wait_for("a leader's commit index", || {
        (0..3).filter(|&i| i != leader).find_map(|i| info_field(&client[i], "commit_index")?.parse().ok())
    });
    wait_for("the restarted replica to catch up", || {
        let applied: u64 = info_field(&client[leader], "applied_index")?.parse().ok()?;
        (applied >= commit).then_some(())
    });
    for i in 1..40 {
        let out = cli(&servers_arg, &["get", &format!("k{i}")]);
        assert_eq!(stdout(&out), format!("\"v{i}\""), "k{i}");
    }
    assert_eq!(stdout(&cli(&servers_arg, &["get", "k0"])), "\"v0+\"");
    assert_eq!(stdout(&cli(&servers_arg, &["get", "missing"])), "(nil)");
    let bad = cli(&servers_arg, &["rawget", "nope", "k"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).starts_with("(error) ERR"), "{bad:?}");

    // SIGTERM: a clean exit with code 0.
    for s in &mut servers {
        assert_eq!(terminate(&mut s.child).code(), Some(0), "exit code after SIGTERM");
    }
    // The data dir remembers who it belongs to: another id on it exits 2 and changes nothing.
    let d1 = dir.path().join("d1");
    let before = std::fs::read(d1.join("quorumkv.meta")).expect("meta");
    let out = Command::new(SERVER)
        .args(["--id", "2", "--peers", &peers, "--client-addr", &client[0], "--data-dir"])
        .arg(&d1)
        .output()
        .expect("run server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("member"), "clear error: {out:?}");
    assert_eq!(std::fs::read(d1.join("quorumkv.meta")).expect("meta"), before);
}

// A WAL emptied or deleted behind a stopped replica's back, with a snapshot still there: the replica
// refuses to start (exit 2, naming what is missing) rather than start with term and vote 0 and the
// acknowledged writes after the snapshot gone.
#[test]
fn a_replica_whose_wal_was_emptied_or_deleted_refuses_to_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (client, args) = single_server(&data, &["--snapshot-threshold", "2000"]);
    let mut server = spawn_server(&args, &dir.path().join("log"));
    for i in 0..60 {
        let out = cli(&client, &["set", &format!("k{i}"), &"v".repeat(100)]);
        assert_eq!(stdout(&out), "OK", "{out:?}");
    }
    wait_for("a snapshot", || {
        info_field(&client, "snapshot_index").and_then(|v| v.parse::<u64>().ok()).filter(|&i| i > 0)
    });
    terminate(&mut server);
    let wal = data.join("wal");
    let segments = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&wal).map(|d| d.map(|e| e.expect("entry").path()).collect()).unwrap_or_default()
    };
    // The same start works while the data dir is whole (so the refusals below are about the damage).
    let mut again = spawn_server(&args, &dir.path().join("log2"));
    wait_for("k59 after restart", || {
        (stdout(&cli(&client, &["get", "k59"])) == format!("\"{}\"", "v".repeat(100))).then_some(())
    });
    terminate(&mut again);
    for damage in ["emptied", "deleted"] {
        for segment in segments() {
            match damage {
                "emptied" => drop(std::fs::File::create(&segment).expect("truncate")),
                _ => std::fs::remove_file(&segment).expect("remove"),
            }
        }
        let before = segments();
        let out = Command::new(SERVER).args(&args).output().expect("run server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "WAL {damage}: {stderr}");
        assert!(stderr.contains("refusing to start"), "WAL {damage}: {stderr}");
        assert_eq!(segments(), before, "WAL {damage}: nothing changed");
    }
}

/// One HTTP GET on a raw socket: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = connect(addr);
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).expect("send");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    (code, text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

// A replica whose disk fills refuses writes at once with -ERR disk full (the alarm in INFO,
// /metrics and /health), keeps serving reads, and resumes writing by itself once there is space,
// with no restart; nothing acknowledged is lost, and the WAL it wrote replays after a kill -9.
#[test]
fn a_replica_whose_disk_fills_refuses_writes_serves_reads_and_resumes_when_space_returns() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _disk = SmallDisk::mount(&mnt, "3m");
    // Room to give back later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 1024 * 1024]).expect("filler");
    let metrics = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (client, args) = single_server(&mnt.join("data"), &["--metrics-addr", &metrics]);
    let mut server = spawn_server(&args, &dir.path().join("log"));
    wait_for_info(&client, "role", "leader");
    let value = "v".repeat(BIG);
    let set = |key: &str| set_big(&client, key, "2000");
    let acknowledged = fill_until_refused(&client, "2000", 200);
    assert!(acknowledged > 0, "some writes fit");
    wait_for_info(&client, "disk_full", "1");
    assert!(info_field(&client, "disk_full_error").is_some_and(|e| e.contains("disk full")));
    assert_eq!(info_field(&client, "consensus").as_deref(), Some("running"), "not a failure");

    // Writes: refused at once, with the reason.
    let refused = set("refused");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(stdout(&refused).starts_with("(error) ERR disk full"), "{refused:?}");
    // Reads: served.
    assert_eq!(stdout(&cli(&client, &["get", "k0"])), format!("\"{value}\""));
    assert_eq!(stdout(&cli(&client, &["exists", "k0", "refused"])), "(integer) 1");
    // The alarm, where monitoring looks.
    let (code, body) = http_get(&metrics, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("disk full"), "{body}");
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(text.lines().any(|l| l == "quorumkv_disk_full 1"), "the gauge");

    // Space comes back: writing resumes by itself, the stuck write included.
    std::fs::remove_file(&filler).expect("free space");
    wait_for_info(&client, "disk_full", "0");
    assert_eq!(stdout(&set("after")), "OK");
    assert_eq!(http_get(&metrics, "/health").0, 200);
    let keys: u64 =
        stdout(&cli(&client, &["dbsize"])).trim_start_matches("(integer) ").parse().expect("dbsize");
    assert!(keys > acknowledged, "every acknowledged write and `after` are there: {keys} keys");

    // The WAL written around the full disk replays: every acknowledged key survives kill -9.
    kill(&mut server);
    let mut server = spawn_server(&args, &dir.path().join("log-restarted"));
    wait_for_info(&client, "role", "leader");
    for i in [0, acknowledged - 1] {
        assert_eq!(stdout(&cli(&client, &["strlen", &format!("k{i}")])), "(integer) 60000", "k{i}");
    }
    assert_eq!(stdout(&cli(&client, &["strlen", "after"])), "(integer) 60000");
    kill(&mut server);
}

// Every replica's disk full at once (three tmpfs data dirs): each refuses writes with the clear
// error and serves reads; once the tmpfs are enlarged, writing resumes with no restart and every
// acknowledged write is there.
#[test]
fn a_cluster_whose_disks_all_fill_serves_reads_and_resumes_when_they_grow() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, args, .. } = layout(dir.path(), "disk-full");
    let disks: Vec<SmallDisk> = (1..=3)
        .map(|i| {
            let data = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&data).expect("mkdir");
            SmallDisk::mount(&data, "2m")
        })
        .collect();
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let all = client.join(",");
    wait_for("a leader", || (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader")));
    let set = |servers: &str, key: &str| set_big(servers, key, "3000");
    let acknowledged = fill_until_refused(&all, "3000", 100);
    assert!(acknowledged > 0, "some writes fit");
    for addr in &client {
        wait_for_info(addr, "disk_full", "1");
        let refused = set(addr, "refused");
        assert!(stdout(&refused).starts_with("(error) ERR disk full"), "{addr}: {refused:?}");
        assert_eq!(stdout(&cli(addr, &["strlen", "k0"])), "(integer) 60000", "{addr} serves reads");
    }
    for disk in &disks {
        disk.grow("20m");
    }
    for addr in &client {
        wait_for_info(addr, "disk_full", "0");
    }
    assert_eq!(stdout(&set(&all, "after")), "OK");
    for addr in &client {
        let keys = stdout(&cli(addr, &["dbsize"]));
        let keys: u64 = keys.trim_start_matches("(integer) ").parse().expect("dbsize");
        assert!(keys > acknowledged, "{addr}: every acknowledged write and `after`: {keys}");
        for i in 0..acknowledged {
            assert_eq!(stdout(&cli(addr, &["strlen", &format!("k{i}")])), "(integer) 60000", "{addr} k{i}");
        }
    }
    for s in &mut servers {
        kill(s);
    }
}

// A log write that fails for another reason than a full disk cannot be retried safely: the
// server logs why and exits 1 (for a supervisor to restart it) instead of lingering; the restart
// replays the log to its last good record with every acknowledged write. The failure here is a
// file-size limit (EFBIG, with SIGXFSZ ignored), which the WAL treats like any I/O error.
#[test]
fn a_failed_log_write_makes_the_server_exit_1_and_a_restart_recovers() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, args) = single_server(&dir.path().join("data"), &[]);
    // bash: `ulimit -f` counts 1024-byte blocks; the WAL may grow to 2 MiB.
    let limited = ["bash", "-c", "trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\""];
    let mut server = spawn_server_under(&limited, &args, &dir.path().join("log"));
    wait_for_info(&client, "role", "leader");
    let acknowledged = fill_until_refused(&client, "2000", 200);
    let status = wait_for("the server to exit", || server.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(1), "exits non-zero: {status:?}");
    let logged = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(logged.contains("exiting with code 1"), "says why: {logged}");
    assert!(!logged.contains("disk full"), "not mistaken for a full disk");

    let mut server = spawn_server(&args, &dir.path().join("log-restarted"));
    wait_for_info(&client, "role", "leader");
    for i in 0..acknowledged {
        assert_eq!(stdout(&cli(&client, &["strlen", &format!("k{i}")])), "(integer) 60000", "k{i}");
    }
    kill(&mut server);
}

/// One RESP exchange on a raw socket: sends `request`, returns the first reply line ("" on EOF).
fn exchange(conn: &mut std::net::TcpStream, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let _ = conn.write_all(request);
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no reply within the timeout: {e}"),
        }
    }
    String::from_utf8_lossy(&got).trim().to_string()
}

fn connect(addr: &str) -> std::net::TcpStream {
    let conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    conn
}

// Past --max-clients a new client is told so, as Redis does, and closed; a freed slot is reused.
// --idle-timeout-secs closes a connection that sends nothing.
#[test]
fn clients_past_max_clients_are_told_so_and_idle_ones_are_closed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = ["--max-clients", "3", "--idle-timeout-secs", "2"];
    let (client, mut server) = leading_single_server(dir.path(), &extra);
    let mut open: Vec<_> = (0..3).map(|_| connect(&client)).collect();
    for conn in &mut open {
        assert_eq!(exchange(conn, b"PING\r\n"), "+PONG");
    }
    let mut fourth = connect(&client);
    assert_eq!(exchange(&mut fourth, b""), "-ERR max number of clients reached");
    assert_eq!(exchange(&mut fourth, b"PING\r\n"), "", "closed after the refusal");
    drop(open.pop());
    wait_for("a freed slot", || {
        let mut conn = connect(&client);
        (exchange(&mut conn, b"PING\r\n") == "+PONG").then_some(())
    });
    // Idle for longer than the timeout: closed by the server (EOF, not a read timeout).
    let mut idle = open.pop().expect("a connection");
    let started = Instant::now();
    assert_eq!(exchange(&mut idle, b""), "", "idle connection closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    kill(&mut server);
}

// The server opts out of transparent huge pages (the kernel's `THP_enabled` for the process is 0),
// whatever the machine's setting: a huge page zeroed on first touch stalls the writes of the moment.
#[test]
fn the_server_opts_out_of_transparent_huge_pages() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, mut server) = leading_single_server(dir.path(), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).expect("proc status");
    let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(str::trim);
    kill(&mut server);
    // Kernels before 5.0 do not report it; this one does.
    assert_eq!(thp, Some("0"), "{status}");
}

// Every thread of the server runs under SCHED_BATCH (policy 3), set before the first thread starts
// so all inherit it, and the snapshot thread keeps its lower priority (nice 10) under it.
#[test]
fn every_server_thread_runs_under_sched_batch() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, mut server) = leading_single_server(dir.path(), &[]);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.id())).expect("proc tasks");
    let mut threads = Vec::new();
    for task in tasks {
        // A thread that ended since the listing has no stat left to read: skip it.
        let Ok(stat) = std::fs::read_to_string(task.expect("task entry").path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name, from the state (field 3, here 0): nice is field
        // 19, the scheduling policy field 41.
        let fields: Vec<String> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        threads.push((fields.get(38).cloned(), fields.get(16).cloned()));
    }
    kill(&mut server);
    assert!(threads.len() >= 4, "{threads:?}");
    assert!(threads.iter().all(|(policy, _)| policy.as_deref() == Some("3")), "{threads:?}");
    assert!(threads.iter().any(|(_, nice)| nice.as_deref() == Some("10")), "{threads:?}");
}

/// Each thread of process `pid`: its id, name and `Cpus_allowed_list` (a thread that ended since
/// the listing is skipped).
fn thread_cpu_lists(pid: u32) -> Vec<(u32, String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks");
    let mut threads = Vec::new();
    for task in tasks {
        let path = task.expect("task entry").path();
        let (Ok(comm), Ok(status)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("status")))
        else {
            continue;
        };
        let tid =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("a thread id");
        let cpus =
            status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
        threads.push((tid, comm.trim().to_string(), cpus.trim().to_string()));
    }
    threads
}

#[test]
fn cpu_list_pins_the_request_path_and_leaves_snapshots_on_every_cpu() {
    let _serial = serial();
    let allowed = quorumkv::actors::cpu_affinity::allowed_cpus().expect("this process's CPUs");
    let cpu = allowed.cpus().last().expect("a CPU").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, mut server) = leading_single_server(dir.path(), &["--cpu-list", &cpu]);
    let set = cli(&client, &["set", "pinned", "yes"]);
    let get = cli(&client, &["get", "pinned"]);
    let threads = thread_cpu_lists(server.id());
    kill(&mut server);
    assert_eq!(stdout(&set), "OK", "{set:?}");
    assert_eq!(stdout(&get), "\"yes\"", "{get:?}");
    let pinned: Vec<_> = threads.iter().filter(|(_, _, cpus)| *cpus == cpu).collect();
    // The client thread (the main one) is pinned.
    assert!(pinned.iter().any(|(tid, _, _)| *tid == server.id()), "{threads:?}");
    // What an unpinned thread shows, in /proc's own form (the server inherits this thread's).
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("own status");
    let everywhere =
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("own CPUs").trim();
    if everywhere != cpu {
        // The client thread, consensus's and the log writer's; the snapshotter's arbiter and
        // the WAL zeroer keep every CPU.
        assert_eq!(pinned.len(), 3, "{threads:?}");
        assert!(
            threads.iter().any(|(_, name, cpus)| name == "wal-zeroer" && cpus == everywhere),
            "{threads:?}"
        );
        let free_arbiters =
            threads.iter().filter(|(_, name, cpus)| name.starts_with("actix") && cpus == everywhere);
        assert_eq!(free_arbiters.count(), 1, "{threads:?}");
    }
    // A list that does not parse, and a CPU this process may not use (also with --join, which
    // would otherwise first ask a cluster to add this member): refused before the data dir is
    // touched.
    let mut refused = vec![("0-x".to_string(), vec![], 1, "not a CPU number")];
    let unavailable =
        (0..quorumkv::actors::cpu_affinity::MAX_CPUS).find(|c| allowed.cpus().binary_search(c).is_err());
    if let Some(c) = unavailable {
        refused.push((c.to_string(), vec![], 2, "is not available to this process"));
        let join = vec!["--join", "127.0.0.1:1", "--peer-addr", "127.0.0.1:2"];
        refused.push((c.to_string(), join, 2, "is not available to this process"));
    }
    for (n, (list, extra, code, says)) in refused.into_iter().enumerate() {
        let data = dir.path().join(format!("refused-{n}"));
        let flags: Vec<&str> = ["--cpu-list", list.as_str()].into_iter().chain(extra).collect();
        let (_, args) = single_server(&data, &flags);
        let out = Command::new(SERVER).args(&args).output().expect("run server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!data.exists(), "{flags:?}: the data dir was made");
    }
}

// With the open-file limit smaller than --max-clients, the server lowers its client limit so that
// clients cannot take the descriptors the data dir and peers need: every client gets an answer
// (PONG, or the max-clients error), none hangs, and writes still reach the disk.
#[test]
fn clients_never_exhaust_the_file_descriptors() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, args) = single_server(&dir.path().join("data"), &[]);
    let log_path = dir.path().join("log");
    let mut server = spawn_server_under(&["prlimit", "--nofile=200:200"], &args, &log_path);
    wait_for_info(&client, "role", "leader");
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let mut conn = connect(&client);
        match exchange(&mut conn, b"PING\r\n").as_str() {
            "+PONG" => served.push(conn),
            "-ERR max number of clients reached" => refused += 1,
            other => panic!("after {} served and {refused} refused: {other:?}", served.len()),
        }
    }
    assert!(served.len() >= 100 && refused >= 100, "{} served, {refused} refused", served.len());
    let conn = served.last_mut().expect("a served connection");
    assert_eq!(exchange(conn, b"SET k v\r\n"), "+OK", "the WAL still writes");
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(text.contains("--max-clients 10000 reduced to"), "{text}");
    kill(&mut server);
}

/// The peak resident memory of process `pid`, in bytes (VmHWM).
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM");
    kb * 1024
}

// A client that pipelines 1,000 GETs of a 16 MiB value and never reads is closed once its unread
// replies pass the per-connection bound (it used to take the leader to 5.4 GB and depose it); the
// replica's memory stays bounded, it keeps leading, and other clients are served.
#[test]
fn a_client_that_does_not_read_its_replies_is_closed_with_memory_bounded() {
    use std::io::{Read, Write};
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, mut server) = leading_single_server(dir.path(), &[]);
    let term = info_field(&client, "term");
    let mut writer = connect(&client);
    let mut set = Vec::new();
    let value = vec![b'v'; 16 * 1024 * 1024];
    quorumkv::protocol::resp::encode_request(&[&b"SET"[..], b"big", &value], &mut set);
    writer.write_all(&set).expect("send SET");
    assert_eq!(exchange(&mut writer, b""), "+OK");
    drop(value);

    let mut hog = connect(&client);
    hog.write_all(&b"GET big\r\n".repeat(1000)).expect("pipeline");
    // Never read while the server works; then see the connection end well short of 16 GB.
    wait_for("the log line", || {
        let text = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        text.contains("bytes of unread replies").then_some(())
    });
    let mut received = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match hog.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    assert!(received < 1000 * 16 * 1024 * 1024, "all replies were delivered: no bound");
    let peak = peak_rss_bytes(server.id());
    assert!(peak < 1024 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
    assert_eq!(info_field(&client, "role").as_deref(), Some("leader"));
    assert_eq!(info_field(&client, "term"), term, "no election meanwhile");
    let mut other = connect(&client);
    assert_eq!(exchange(&mut other, b"SET after ok\r\n"), "+OK");
    println!("peak RSS {} MiB, {received} reply bytes delivered before the close", peak >> 20);
    kill(&mut server);
}

// Clients sending huge requests never starve consensus: 24 pipelined EXISTS of 1,000 keys of 64 KiB
// (62.5 MiB each) to the leader of three processes are answered, and the leader keeps its term
// (each used to cost 13-24 s of CPU in parsing, and the leader was deposed).
#[test]
fn huge_requests_do_not_depose_the_leader() {
    use std::io::{Read, Write};
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, mut args, .. } = layout(dir.path(), "huge-requests");
    // The product's default timings: the claim is that huge requests do not depose a leader as
    // shipped (the layout's 300 ms would also test the scheduler of a loaded 2-core machine).
    for member in &mut args {
        for (flag, value) in [("--election-timeout-ms", "1000"), ("--heartbeat-ms", "100")] {
            if let Some(at) = member.iter().position(|a| a == flag) {
                member[at + 1] = value.to_string();
            }
        }
    }
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let leader = wait_for("a leader", || {
        client.iter().find(|c| info_field(c, "role").as_deref() == Some("leader")).cloned()
    });
    let term = info_field(&leader, "term").expect("term");
    let key = vec![b'k'; 64 * 1024];
    let mut args: Vec<&[u8]> = vec![b"EXISTS"];
    args.extend(std::iter::repeat_n(&key[..], 1000));
    let mut request = Vec::new();
    quorumkv::protocol::resp::encode_request(&args, &mut request);
    let mut conn = std::net::TcpStream::connect(&leader).expect("connect");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let writer = {
        let mut conn = conn.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..24 {
                conn.write_all(&request).expect("send");
            }
        })
    };
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while got.iter().filter(|&&b| b == b'\n').count() < 24 {
        let n = conn.read(&mut chunk).expect("all 24 replies");
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    writer.join().expect("writer");
    assert_eq!(String::from_utf8_lossy(&got), ":0\r\n".repeat(24));
    assert_eq!(info_field(&leader, "role").as_deref(), Some("leader"));
    assert_eq!(info_field(&leader, "term"), Some(term), "no election meanwhile");
    for s in &mut servers {
        kill(s);
    }
}

// PRODUCT.md: a flag that does not apply where it is given is an error with exit code 1, never
// silently ignored, and nothing is written.
#[test]
fn server_flags_that_do_not_apply_exit_1_and_touch_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<Vec<String>> = vec![
        vec!["--replicas".into(), "3".into()],
        vec!["--data-dir".into(), dir.path().join("x").display().to_string(), "local".into()],
        vec!["--id".into(), "2".into(), "local".into()],
        vec!["--no-such-flag".into()],
    ];
    for args in cases {
        let out = Command::new(SERVER).current_dir(dir.path()).args(&args).output().expect("run server");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty(), "{args:?}: says why");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert!(left.is_empty(), "{args:?}: wrote {left:?}");
    }
    let help = Command::new(SERVER).arg("--help").output().expect("run server");
    assert_eq!(help.status.code(), Some(0));
}

#[test]
fn cli_exits_2_when_nothing_answers() {
    let _serial = serial();
    let port = free_ports(1)[0];
    let out = Command::new(CLI)
        .args(["--servers", &format!("127.0.0.1:{port}"), "get", "a"])
        .env("QUORUMKV_CLI_TIMEOUT_MS", "300")
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(2));
}

/// Seed for the random kill schedule: `TEST_SEED`, or the clock; printed for replay.
fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(3, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (replay: TEST_SEED={seed})");
    seed
}

// kill -9 of the leader, and of every replica, at random moments while a client appends: after
// the last restart every acknowledged append is present exactly once.
#[test]
fn random_kill_9_of_leader_and_of_everyone_loses_nothing() {
    use quorumkv::client::{Client, ClientConfig};
    use quorumkv::protocol::rng::Rng;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let _serial = serial();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, args, .. } = layout(dir.path(), &format!("random-kill-{seed}"));
    let args = |i: usize| args[i].clone();
    let log = |i: usize, n: usize| dir.path().join(format!("log{}-{n}", i + 1));
    let mut children: Vec<Running> = (0..3).map(|i| spawn_server(&args(i), &log(i, 0))).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let servers = client.clone();
        let stop = stop.clone();
        let acked_count = acked_count.clone();
        std::thread::spawn(move || {
            let mut config = ClientConfig::new(servers);
            config.request_timeout_ms = 30_000;
            let mut c = Client::new(config).expect("client");
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let token = format!("t{i};");
                c.append(b"log", token.as_bytes()).expect("append eventually succeeds");
                acked.push(token);
                acked_count.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            acked
        })
    };
    for round in 1..=4 {
        // Let some appends through, then kill.
        let pause = Duration::from_millis(rng.range(200, 1200));
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv_timeout(pause);
        // The last round always kills everyone at once.
        let victims: Vec<usize> = if round < 4 && rng.chance(0.5) {
            let leader = wait_for("a leader", || {
                (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader"))
            });
            vec![leader]
        } else {
            vec![0, 1, 2]
        };
        for &v in &victims {
            children[v].kill().expect("kill -9");
            children[v].wait().expect("reap");
        }
        for &v in &victims {
            children[v] = spawn_server(&args(v), &log(v, round));
        }
        println!("round {round}: killed {victims:?} after {pause:?}");
    }
    // The cluster serves again after the last restart: more appends are acknowledged.
    let before = acked_count.load(Ordering::SeqCst);
    wait_for("appends after the last restart", || {
        (acked_count.load(Ordering::SeqCst) >= before + 10).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    let mut config = ClientConfig::new(client.clone());
    config.request_timeout_ms = 30_000;
    let mut c = Client::new(config).expect("client");
    let value = String::from_utf8(c.get(b"log").expect("get").unwrap_or_default()).expect("utf-8");
    let present: Vec<&str> = value.split_inclusive(';').collect();
    let mut seen = std::collections::BTreeSet::new();
    for t in &present {
        assert!(seen.insert(*t), "seed {seed}: {t} applied twice");
    }
    for t in &acked {
        assert!(seen.contains(t.as_str()), "seed {seed}: acknowledged {t} lost");
    }
    println!("{} appends acknowledged, {} present", acked.len(), present.len());
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

// The cluster's life through the binaries: a new `--join` process joins three running ones and
// is promoted on its own, `leader transfer` moves the leader, bad membership input is refused
// with nothing changed, and a removed member's process exits 0.
#[test]
fn a_replica_joins_the_leader_moves_and_a_removed_member_exits_0() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, args, .. } = layout(dir.path(), "living");
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let all = client.join(",");
    assert_eq!(stdout(&cli(&all, &["set", "before", "join"])), "OK");

    let ports = free_ports(2);
    let (client4, peer4) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let data4 = dir.path().join("d4").display().to_string();
    let join_args = join_args(&client4, &peer4, &data4, &all, "living");
    let mut fourth = spawn_server(&join_args, &dir.path().join("log4"));
    // It catches up as a learner, then asks to be promoted.
    wait_for("4 to be a voter", || {
        let members = info_field(&client4, "members")?;
        members.split(',').any(|m| m == "4").then_some(())
    });
    let listed = stdout(&cli(&all, &["member", "list"]));
    assert!(listed.contains(&format!("4 {peer4} {client4} voter")), "{listed}");
    assert_eq!(stdout(&cli(&client4, &["get", "before"])).lines().last(), Some("\"join\""));

    // Refused, each with a clear error, nothing changed.
    for bad in [
        vec!["member", "add", "2", "127.0.0.1:1", "127.0.0.1:2"],
        vec!["member", "add", "0", "127.0.0.1:1", "127.0.0.1:2"],
        vec!["member", "add", "9", "nowhere", "127.0.0.1:2"],
        vec!["member", "promote", "4"],
        vec!["member", "promote", "9"],
        vec!["member", "change", "remove", "1", "remove", "2", "remove", "3", "remove", "4"],
        vec!["leader", "transfer", "9"],
    ] {
        let out = cli(&all, &bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {out:?}");
        assert!(stdout(&out).starts_with("(error) ERR"), "{bad:?}: {}", stdout(&out));
    }

    let leader = wait_for("a leader", || {
        (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader")).map(|i| i as u64 + 1)
    });
    let target = if leader == 1 { 2 } else { 1 };
    let out = cli(&all, &["leader", "transfer", &target.to_string()]);
    assert_eq!(stdout(&out), "OK", "{out:?}");
    assert_eq!(info_field(&client[target as usize - 1], "role").as_deref(), Some("leader"));
    let out = cli(&all, &["leader", "transfer", &target.to_string()]);
    assert!(stdout(&out).starts_with("(error) ERR"), "transfer to itself: {out:?}");

    // Remove the old leader: its process exits 0 once the removal is committed.
    let out = cli(&all, &["member", "remove", &leader.to_string()]);
    assert_eq!(stdout(&out), "OK", "{out:?}");
    let status =
        wait_for("the removed member to exit", || servers[leader as usize - 1].try_wait().ok().flatten());
    assert_eq!(status.code(), Some(0));
    let out = cli(&all, &["member", "add", &leader.to_string(), "127.0.0.1:1", "127.0.0.1:2"]);
    assert!(stdout(&out).contains("cannot be reused"), "{out:?}");
    assert_eq!(stdout(&cli(&all, &["set", "after", "remove"])), "OK");
    assert_eq!(stdout(&cli(&client4, &["get", "after"])).lines().last(), Some("\"remove\""));
    kill(&mut fourth);
    for (i, s) in servers.iter_mut().enumerate() {
        if i as u64 + 1 != leader {
            kill(s);
        }
    }
}

// A `--join` process killed before the cluster reached it (added under a peer address nobody
// listens on, so nothing ever arrives) and started again with the same command line still
// joins: it asks again and waits. It took the data dir for a restart, ignored --join and
// elected itself, a cluster of one taking writes on its client port.
#[test]
fn a_join_killed_before_it_heard_from_the_cluster_restarts_as_a_join() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, args, .. } = layout(dir.path(), "rejoin");
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let all = client.join(",");
    let ports = free_ports(3);
    let (client4, peer4) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let nowhere = format!("127.0.0.1:{}", ports[2]);
    assert_eq!(stdout(&cli(&all, &["member", "add", "4", &nowhere, &client4])), "OK");
    let data4 = dir.path().join("d4").display().to_string();
    let join_args = join_args(&client4, &peer4, &data4, &all, "rejoin");
    for start in 1..=2 {
        let mut fourth = spawn_server(&join_args, &dir.path().join(format!("log4-{start}")));
        let role = wait_for("4 to serve clients", || info_field(&client4, "role"));
        // Watched for several election timeouts: a cluster of one elects itself in one.
        let until = std::time::Instant::now() + Duration::from_millis(2400);
        let mut role = Some(role);
        while std::time::Instant::now() < until {
            assert_ne!(role.as_deref(), Some("leader"), "start {start}: a joiner elected itself");
            role = info_field(&client4, "role");
        }
        kill(&mut fourth);
    }
    for s in servers.iter_mut() {
        kill(s);
    }
}

/// The command line of replica 4 joining `members` (client addresses) of cluster `cluster`.
fn join_args(client4: &str, peer4: &str, data4: &str, members: &str, cluster: &str) -> Vec<String> {
    let timings = ["--election-timeout-ms", "300", "--heartbeat-ms", "50"];
    let fixed =
        ["--id", "4", "--client-addr", client4, "--peer-addr", peer4, "--data-dir", data4, "--join", members];
    fixed.iter().chain(&timings).chain(&["--cluster-name", cluster]).map(|s| s.to_string()).collect()
}

/// Runs a tool from Debian's redis-tools (`.ci/run` installs them).
fn redis_tool(tool: &str, args: &[&str]) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install redis-tools (apt-get install redis-tools), as .ci/run does")
    })
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_every_follower() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, args, .. } = layout(dir.path(), "forwarding");
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let leader = wait_for("a leader", || {
        (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader"))
    });
    for (n, addr) in client.iter().enumerate().filter(|&(i, _)| i != leader) {
        let (host, port) = addr.split_once(':').expect("host:port");
        let rcli = |command: &[&str]| {
            let mut full = vec!["-h", host, "-p", port];
            full.extend_from_slice(command);
            let out = redis_tool("redis-cli", &full);
            assert!(out.status.success(), "redis-cli {command:?}: {out:?}");
            stdout(&out)
        };
        let key = format!("f{n}");
        assert_eq!(rcli(&["set", &key, "v"]), "OK");
        assert_eq!(rcli(&["get", &key]), "v");
        assert_eq!(rcli(&["append", &key, "w"]), "2");
        assert_eq!(rcli(&["exists", &key, "nope"]), "1");
        assert_eq!(rcli(&["rawput", "write", "r", "x"]), "OK");
        assert_eq!(rcli(&["rawget", "write", "r"]), "x");
        assert_eq!(rcli(&["rawscan", "write", "", "5"]), "r\nx");
        assert_eq!(rcli(&["rawdelete", "write", "r"]), "1");
        assert_eq!(rcli(&["del", &key]), "1");
        assert_eq!(rcli(&["get", &key]), "");
        assert_eq!(rcli(&["ping"]), "PONG");
        assert_eq!(rcli(&["member", "list"]).lines().count(), 3);
        // redis-benchmark's SET and GET, pipelined, against this follower alone: no errors.
        let out = redis_tool(
            "redis-benchmark",
            &["-h", host, "-p", port, "-t", "set,get", "-n", "2000", "-c", "8", "-P", "4", "-q"],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "redis-benchmark: {text}");
        assert!(text.contains("SET:") && text.contains("GET:"), "redis-benchmark: {text}");
        assert!(!text.contains("ERR") && !text.contains("NOTLEADER") && !text.contains("TRYAGAIN"), "{text}");
        // Everything redis-benchmark wrote is in the replicated state: read it on the leader.
        let out = cli(&client[leader], &["get", "key:__rand_int__"]);
        // (redis-benchmark's default value: 3 bytes.)
        let value = stdout(&out);
        assert!(
            value.starts_with('"') && value.len() == 5,
            "redis-benchmark's SET through a follower: {out:?}"
        );
    }
    for server in &mut servers {
        kill(server);
    }
}

/// The fields `snapshot save` printed: "... index I, term T, N bytes, K keys, state_digest D".
fn saved_field<'a>(printed: &'a str, name: &str) -> &'a str {
    printed
        .split(", ")
        .find_map(|part| {
            let part = part.rsplit(": ").next()?;
            part.strip_prefix(&format!("{name} ")).or_else(|| part.strip_suffix(&format!(" {name}")))
        })
        .unwrap_or_else(|| panic!("no {name} in {printed:?}"))
}

// A backup of a live cluster (keys, an expiry, a session) restored as a new three-member cluster
// under new ids' data dirs: the same state digest, the same keys, TTLs and exactly-once memory;
// restore refuses a used data dir (exit 2) and a damaged file (exit 1), touching neither.
#[test]
fn snapshot_save_and_restore_start_a_new_cluster_with_the_same_state() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    let Layout { client, args, .. } = layout(&source, "backup-source");
    let servers_arg = client.join(",");
    let mut servers: Vec<Running> =
        (0..3).map(|i| spawn_server(&args[i], &dir.path().join(format!("src{}.log", i + 1)))).collect();
    for i in 0..300 {
        let out = cli(&servers_arg, &["set", &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(stdout(&out), "OK", "set k{i}: {out:?}");
    }
    assert_eq!(stdout(&cli(&servers_arg, &["set", "ttl", "x", "EX", "1000"])), "OK");
    assert_eq!(stdout(&cli(&servers_arg, &["req", "77", "1", "incr", "n"])), "(integer) 1");

    let file = dir.path().join("backup.qkv");
    let saved = cli(&servers_arg, &["snapshot", "save", &file.display().to_string()]);
    assert_eq!(saved.status.code(), Some(0), "{saved:?}");
    let printed = stdout(&saved);
    let index: u64 = saved_field(&printed, "index").parse().expect("index");
    let digest = saved_field(&printed, "state_digest").to_string();
    assert_eq!(saved_field(&printed, "keys"), "302", "{printed}");
    assert!(file.exists() && !dir.path().join("backup.qkv.tmp").exists());
    // Nothing was written since: the source's own digest at its applied index is the one saved.
    let leader = wait_for("a leader", || {
        (0..3).find(|&i| info_field(&client[i], "role").as_deref() == Some("leader"))
    });
    assert_eq!(info_field(&client[leader], "state_digest").as_deref(), Some(digest.as_str()));
    assert!(info_field(&client[leader], "applied_index").and_then(|a| a.parse::<u64>().ok()) >= Some(index));

    // Again under load: one writer sets load0, load1, ... in order while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, acked, servers) = (stop.clone(), acked.clone(), client.clone());
        std::thread::spawn(move || {
            let mut load =
                quorumkv::client::Client::new(quorumkv::client::ClientConfig::new(servers)).expect("client");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                load.set(format!("load{n}").as_bytes(), format!("v{n}").as_bytes())
                    .expect("a write under load");
                n += 1;
                acked.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    wait_for("writes under way", || (acked.load(std::sync::atomic::Ordering::Relaxed) >= 50).then_some(()));
    let acked_before_save = acked.load(std::sync::atomic::Ordering::Relaxed);
    let file = dir.path().join("loaded.qkv");
    let saved = cli(&servers_arg, &["snapshot", "save", &file.display().to_string()]);
    assert_eq!(saved.status.code(), Some(0), "{saved:?}");
    let acked_after_save = acked.load(std::sync::atomic::Ordering::Relaxed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    let printed = stdout(&saved);
    let index: u64 = saved_field(&printed, "index").parse().expect("index");
    let digest = saved_field(&printed, "state_digest").to_string();
    let saved_keys: u64 = saved_field(&printed, "keys").parse().expect("keys");
    // The writes in it are a prefix of the writer's: at least those acknowledged before the save
    // began, at most those acknowledged before it ended (plus the one in flight).
    let loaded = saved_keys - 302;
    assert!(
        (acked_before_save..=acked_after_save + 1).contains(&loaded),
        "{acked_before_save} <= {loaded} <= {acked_after_save} + 1"
    );

    // A new cluster: its own ports, names and data dirs, every member from the same file.
    let target = dir.path().join("target");
    let Layout { client: new_client, peers: new_peers, args: new_args } = layout(&target, "backup-target");
    for id in 1..=3 {
        let data_dir = target.join(format!("d{id}"));
        let out = Command::new(SERVER)
            .args(["restore", &file.display().to_string(), "--data-dir", &data_dir.display().to_string()])
            .args(["--id", &id.to_string(), "--peers", &new_peers, "--cluster-name", "backup-target"])
            .output()
            .expect("run restore");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(stdout(&out).contains(&format!("state_digest {digest}")), "{out:?}");
    }
    // A used data dir: exit 2, untouched. A damaged file: exit 1, no dir made.
    let d1 = target.join("d1");
    let meta_before = std::fs::read(d1.join("quorumkv.meta")).expect("meta");
    // `restore FILE --data-dir DIR` as member 1 of the new cluster.
    let restore = |file: &Path, dir: &Path| {
        Command::new(SERVER)
            .args(["restore", &file.display().to_string(), "--data-dir", &dir.display().to_string()])
            .args(["--id", "1", "--peers", &new_peers])
            .output()
            .expect("run restore")
    };
    let again = restore(&file, &d1);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert_eq!(std::fs::read(d1.join("quorumkv.meta")).expect("meta"), meta_before);
    let whole = std::fs::read(&file).expect("backup");
    let truncated_file = dir.path().join("truncated.qkv");
    std::fs::write(&truncated_file, &whole[..whole.len() - 100]).expect("write truncated");
    let cut = restore(&truncated_file, &dir.path().join("never-truncated"));
    assert_eq!(cut.status.code(), Some(1), "{cut:?}");
    assert!(!dir.path().join("never-truncated").exists());
    let mut damaged = whole;
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let bad_file = dir.path().join("damaged.qkv");
    std::fs::write(&bad_file, &damaged).expect("write damaged");
    let elsewhere = dir.path().join("never");
    let bad = restore(&bad_file, &elsewhere);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid snapshot"), "{bad:?}");
    assert!(!elsewhere.exists());
    // A file read in place must be a regular one: a device (or a pipe) is refused by name.
    let device = restore(Path::new("/dev/null"), &elsewhere);
    assert_eq!(device.status.code(), Some(1), "{device:?}");
    assert!(String::from_utf8_lossy(&device.stderr).contains("not a regular file"), "{device:?}");
    assert!(!elsewhere.exists());

    for s in &mut servers {
        kill(s);
    }
    let mut restored: Vec<Running> =
        (0..3).map(|i| spawn_server(&new_args[i], &dir.path().join(format!("new{}.log", i + 1)))).collect();
    let new_servers = new_client.join(",");
    let new_leader = wait_for("a leader of the restored cluster", || {
        (0..3).find(|&i| info_field(&new_client[i], "role").as_deref() == Some("leader"))
    });
    for addr in &new_client {
        wait_for_info(addr, "state_digest", &digest);
    }
    assert_eq!(stdout(&cli(&new_servers, &["get", "k299"])), "\"v299\"");
    assert_eq!(stdout(&cli(&new_servers, &["dbsize"])), format!("(integer) {saved_keys}"));
    // Every key the writer got into the backup, with its value, and none after.
    for n in 0..loaded {
        assert_eq!(stdout(&cli(&new_servers, &["get", &format!("load{n}")])), format!("\"v{n}\""), "load{n}");
    }
    assert_eq!(stdout(&cli(&new_servers, &["exists", &format!("load{loaded}")])), "(integer) 0");
    let ttl = stdout(&cli(&new_servers, &["ttl", "ttl"]));
    let secs: u64 = ttl.trim_start_matches("(integer) ").parse().expect("a TTL");
    assert!((900..=1000).contains(&secs), "the expiry came along: {ttl}");
    // The session came along: the same request again is answered, not applied again.
    assert_eq!(stdout(&cli(&new_servers, &["req", "77", "1", "incr", "n"])), "(integer) 1");
    assert_eq!(stdout(&cli(&new_servers, &["get", "n"])), "\"1\"");
    // And the new cluster takes writes past the restored index.
    assert_eq!(stdout(&cli(&new_servers, &["set", "after", "restore"])), "OK");
    let applied: u64 =
        info_field(&new_client[new_leader], "applied_index").and_then(|a| a.parse().ok()).expect("applied");
    assert!(applied > index, "the log goes on after the snapshot: {applied} > {index}");
    for s in &mut restored {
        kill(s);
    }
}

// A replica catching up by snapshot onto a disk too small for the image raises the disk-full
// alarm and refuses writes (as when its log does not fit), asks for the image again only once a
// second instead of refilling the disk as fast as the leader sends, and once the disk grows it
// takes the image, lowers the alarm and holds every key.
#[test]
fn a_replica_without_room_for_a_snapshot_raises_the_alarm_and_takes_it_once_there_is_room() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let Layout { client, mut args, .. } = layout(dir.path(), "no-room-for-snapshot");
    for a in &mut args {
        a.extend(["--snapshot-threshold", "1000000"].map(String::from));
    }
    let d3 = dir.path().join("d3");
    std::fs::create_dir(&d3).expect("mkdir");
    let disk = SmallDisk::mount(&d3, "8m");
    let mut servers: Vec<Running> =
        (0..2).map(|i| spawn_server(&args[i], &dir.path().join(format!("log{}", i + 1)))).collect();
    let two = client[..2].join(",");
    // A state of about 9 MB, with the log compacted past its start: replica 3 needs the image.
    let keys = 150;
    for i in 0..keys {
        assert_eq!(stdout(&set_big(&two, &format!("k{i}"), "5000")), "OK", "k{i}");
    }
    wait_for("a snapshot on both", || {
        (0..2).all(|i| info_field(&client[i], "snapshot_index").is_some_and(|s| s != "0")).then_some(())
    });
    let log3 = dir.path().join("log3");
    servers.push(spawn_server(&args[2], &log3));
    let attempts =
        || std::fs::read_to_string(&log3).map_or(0, |t| t.matches("no room for the snapshot image").count());
    wait_for("a first image that does not fit", || (attempts() >= 1).then_some(()));
    let first = Instant::now();
    wait_for_info(&client[2], "disk_full", "1");
    let why = info_field(&client[2], "disk_full_error").unwrap_or_default();
    // Refused before a byte of it was written: its room is taken up front (tmpfs allows it).
    assert!(
        why.contains("no room for the snapshot image from replica") && why.contains("after 0 bytes"),
        "{why}"
    );
    let refused = set_big(&client[2], "refused", "2000");
    assert!(stdout(&refused).starts_with("(error) ERR disk full"), "{refused:?}");
    // Two more attempts: each after the second-long pause, not as fast as the leader sends.
    wait_for("a third attempt", || (attempts() >= 3).then_some(()));
    let two_pauses = first.elapsed();
    assert!(two_pauses >= Duration::from_millis(1_800), "three attempts within {two_pauses:?}");
    disk.grow("64m");
    wait_for_info(&client[2], "disk_full", "0");
    wait_for("every key on replica 3", || {
        (stdout(&cli(&client[2], &["dbsize"])) == format!("(integer) {keys}")).then_some(())
    });
    assert_eq!(stdout(&cli(&client[2], &["strlen", "k0"])), format!("(integer) {BIG}"));
    assert_eq!(stdout(&set_big(&client[2], "after", "5000")), "OK");
    for s in &mut servers {
        kill(s);
    }
}
