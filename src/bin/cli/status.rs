//! `quorumkv-cli status [--json]`: every member's own view, side by side.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use quorumkv::client::{parse_info, ClientConfig};
use quorumkv::dial::refuse_self_connection;
use quorumkv::protocol::resp::{encode_request, parse_reply, Reply};

use super::{EXIT_ERROR, EXIT_OK};

/// `status`'s arguments.
#[derive(Parser, Debug)]
#[command(name = "quorumkv-cli status", about = "Every member's own view, side by side")]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One member's view, or why it could not be had.
#[derive(Debug, serde::Serialize)]
struct Row {
    server: String,
    reachable: bool,
    error: Option<String>,
    id: Option<u64>,
    role: Option<String>,
    term: Option<u64>,
    leader_id: Option<u64>,
    commit_index: Option<u64>,
    applied_index: Option<u64>,
    lag: Option<u64>,
    log_bytes: Option<u64>,
    snapshot_index: Option<u64>,
    members: Option<String>,
}

/// INFO of `server` as text, within `timeout` for the connect and for the reply.
fn info_of(server: &str, timeout: Duration) -> Result<String, String> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    refuse_self_connection(&stream).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut request = Vec::new();
    encode_request(&[b"INFO".as_slice()], &mut request);
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_reply(&buf) {
            Ok(Some((Reply::Bulk(Some(text)), _))) => return Ok(String::from_utf8_lossy(&text).into_owned()),
            Ok(Some((other, _))) => return Err(format!("INFO answered {other:?}")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn row(server: &str, timeout: Duration) -> Row {
    let mut row = Row {
        server: server.to_string(),
        reachable: false,
        error: None,
        id: None,
        role: None,
        term: None,
        leader_id: None,
        commit_index: None,
        applied_index: None,
        lag: None,
        log_bytes: None,
        snapshot_index: None,
        members: None,
    };
    match info_of(server, timeout) {
        Ok(text) => {
            let info = parse_info(&text);
            let number = |field: &str| info.get(field).and_then(|v| v.parse::<u64>().ok());
            row.reachable = true;
            row.id = number("id");
            row.role = info.get("role").cloned();
            row.term = number("term");
            row.leader_id = number("leader_id");
            row.commit_index = number("commit_index");
            row.applied_index = number("applied_index");
            row.log_bytes = number("log_bytes");
            row.snapshot_index = number("snapshot_index");
            row.members = info.get("members").cloned();
        }
        Err(e) => row.error = Some(e),
    }
    row
}

fn cell<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// Runs `status` against `config`'s servers; exit 0 when a leader is known and a majority of
/// the members is reachable, 1 otherwise.
pub fn run(args: &StatusArgs, config: &ClientConfig) -> u8 {
    let timeout = Duration::from_millis(config.io_timeout_ms.clamp(1, 2_000));
    let handles: Vec<_> = config
        .servers
        .iter()
        .cloned()
        .map(|server| std::thread::spawn(move || row(&server, timeout)))
        .collect();
    let mut rows: Vec<Row> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    // Lag: how far each member's applied index is behind the leader's commit index.
    let leader_commit =
        rows.iter().find(|r| r.role.as_deref() == Some("leader")).and_then(|r| r.commit_index);
    for r in &mut rows {
        r.lag = match (leader_commit, r.applied_index) {
            (Some(commit), Some(applied)) => Some(commit.saturating_sub(applied)),
            _ => None,
        };
    }
    let reachable = rows.iter().filter(|r| r.reachable).count();
    // The voters as the members themselves report them; the servers given when none answers.
    let voters = rows
        .iter()
        .filter_map(|r| r.members.as_ref())
        .map(|m| m.split(',').filter(|s| !s.is_empty()).count())
        .max()
        .unwrap_or(rows.len())
        .max(1);
    let leader_known = rows.iter().any(|r| r.role.as_deref() == Some("leader"));
    let healthy = leader_known && reachable > voters / 2;
    if args.json {
        let out = serde_json::json!({ "members": rows, "leader_known": leader_known, "healthy": healthy });
        println!("{out}");
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "id",
            "address",
            "role",
            "term",
            "leader",
            "commit",
            "applied",
            "lag",
            "log bytes",
            "snapshot",
            "reachable",
        ]);
        for r in &rows {
            let reach = if r.reachable {
                "yes".to_string()
            } else {
                format!("unreachable: {}", r.error.as_deref().unwrap_or("?"))
            };
            table.add_row(vec![
                cell(&r.id),
                r.server.clone(),
                cell(&r.role),
                cell(&r.term),
                cell(&r.leader_id),
                cell(&r.commit_index),
                cell(&r.applied_index),
                cell(&r.lag),
                cell(&r.log_bytes),
                cell(&r.snapshot_index),
                reach,
            ]);
        }
        println!("{table}");
        if !leader_known {
            println!("no leader known");
        }
        println!("{reachable} of {} servers reachable; {voters} voters", rows.len());
    }
    if healthy {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
