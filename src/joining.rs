//! `--join`: how an empty replica becomes a member of a running cluster, through the client
//! port like any operator would (`MEMBER ADD`, `MEMBER LIST`, then `MEMBER PROMOTE` once the
//! leader says it has caught up).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actors::status::StatusBoard;
use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::raft::NodeId;
use crate::protocol::resp::Reply;

/// How long `--join` waits for any listed member to answer before giving up.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between promotion attempts while the leader says the learner is behind.
pub const PROMOTE_RETRY: Duration = Duration::from_millis(300);

/// Who joins, and where it can be reached.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// The new member's id.
    pub id: NodeId,
    /// Its peer address, as others must dial it.
    pub peer_addr: String,
    /// Its client address, as clients must dial it.
    pub client_addr: String,
    /// Client addresses of existing members.
    pub servers: Vec<String>,
}

fn client(servers: &[String], timeout: Duration) -> Result<Client, String> {
    let mut config = ClientConfig::new(servers.iter().cloned());
    config.request_timeout_ms = timeout.as_millis() as u64;
    Client::new(config).map_err(|e| e.to_string())
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Asks the cluster to add `request` as a learner (already a member is fine) and returns the
/// peer address of every member, from `MEMBER LIST`, for the new replica's first links.
pub fn add_self(request: &JoinRequest) -> Result<BTreeMap<NodeId, String>, String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let unavailable = |e: ClientError| {
        format!(
            "no member at {} answered within {} s: {e}",
            request.servers.join(","),
            JOIN_TIMEOUT.as_secs()
        )
    };
    let mut client = client(&request.servers, JOIN_TIMEOUT)?;
    let id = request.id.to_string();
    let add = args(&["MEMBER", "ADD", &id, &request.peer_addr, &request.client_addr]);
    match client.call(&add).map_err(unavailable)? {
        Reply::Simple(_) => log::info!("join: added as learner {id}"),
        Reply::Error(e) if e.contains("already a member") => log::info!("join: {id} is already a member"),
        Reply::Error(e) => return Err(format!("the cluster refused to add {id}: {e}")),
        other => return Err(format!("unexpected reply to MEMBER ADD: {other:?}")),
    }
    loop {
        let reply = client.call(&args(&["MEMBER", "LIST"])).map_err(unavailable)?;
        let Reply::Array(Some(lines)) = reply else {
            return Err(format!("unexpected reply to MEMBER LIST: {reply:?}"));
        };
        let mut book = BTreeMap::new();
        for line in lines {
            let Reply::Bulk(Some(line)) = line else { continue };
            let line = String::from_utf8_lossy(&line).into_owned();
            let mut words = line.split_whitespace();
            if let (Some(Ok(member)), Some(peer)) = (words.next().map(str::parse::<NodeId>), words.next()) {
                book.insert(member, peer.to_string());
            }
        }
        // The replica asked may not have applied the addition yet: ask until it has.
        if book.contains_key(&request.id) {
            return Ok(book);
        }
        if Instant::now() >= deadline {
            return Err(format!("{id} was added but never appeared in MEMBER LIST"));
        }
        std::thread::sleep(PROMOTE_RETRY);
    }
}

/// Promotes this replica to voter once it is a learner that has caught up: asks `MEMBER
/// PROMOTE` again until the leader accepts (it refuses a learner too far behind). Returns when
/// promoted, already a voter, or removed.
pub fn promote_when_caught_up(request: &JoinRequest, status: Arc<StatusBoard>) {
    let id = request.id.to_string();
    loop {
        std::thread::sleep(PROMOTE_RETRY);
        if status.is_removed() || status.stop_reason().is_some() {
            return;
        }
        let membership = status.membership();
        if membership.is_voter(request.id) {
            log::info!("join: {id} is a voter");
            return;
        }
        if !membership.is_learner(request.id) {
            continue; // not caught up even to its own addition yet
        }
        let mut servers: Vec<String> =
            membership.addrs.values().map(|a| a.client_addr.clone()).filter(|a| !a.is_empty()).collect();
        servers.extend(request.servers.iter().cloned());
        let Ok(mut client) = client(&servers, Duration::from_secs(5)) else { continue };
        match client.call(&args(&["MEMBER", "PROMOTE", &id])) {
            Ok(Reply::Simple(_)) => {
                log::info!("join: {id} promoted to voter");
                return;
            }
            Ok(Reply::Error(e)) if e.contains("already a voter") => return,
            Ok(Reply::Error(e)) => log::debug!("join: promotion of {id} not yet: {e}"),
            Ok(other) => log::warn!("join: unexpected reply to MEMBER PROMOTE: {other:?}"),
            Err(e) => log::debug!("join: promotion of {id} not yet: {e}"),
        }
    }
}
