//! A replica's live numbers, written by its actors and read by INFO without a message round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::RwLock;

use crate::protocol::raft::{Membership, NodeId, Role};

/// The shared board of one replica's state. Every field is a snapshot, possibly a moment old.
#[derive(Debug, Default)]
pub struct StatusBoard {
    /// This replica's id.
    pub id: NodeId,
    role: AtomicU8,
    term: AtomicU64,
    leader: AtomicU64,
    commit_index: AtomicU64,
    applied_index: AtomicU64,
    last_log_index: AtomicU64,
    snapshot_index: AtomicU64,
    log_bytes: AtomicU64,
    keys: AtomicU64,
    state_digest: AtomicU64,
    /// The replicated clock at the applied index (milliseconds).
    applied_clock_ms: AtomicU64,
    /// Keys with a time to live.
    expiring_keys: AtomicU64,
    /// The earliest expiry of any key (u64::MAX: none).
    earliest_expiry_ms: AtomicU64,
    /// Mean time to live left of the keys that have one.
    avg_ttl_ms: AtomicU64,
    /// Bytes of keys and values stored.
    data_bytes: AtomicU64,
    /// When the replica started.
    started: std::sync::OnceLock<std::time::Instant>,
    /// Elections this replica started.
    elections: AtomicU64,
    /// Live client connections.
    connected_clients: AtomicU64,
    /// Where `/metrics` and `/health` are served, once bound.
    pub metrics_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// What the actors count, for `/metrics`.
    pub metrics: super::metrics::Metrics,
    /// Client address of each member, learnt from configuration and peer handshakes.
    client_addrs: RwLock<BTreeMap<NodeId, String>>,
    /// Why consensus stopped, once it has (a failed disk write): the replica no longer takes part.
    stopped: RwLock<Option<String>>,
    /// Why the disk refused the last write, while it is full (the alarm); None once a write succeeds.
    disk_full: RwLock<Option<String>>,
    /// The alarm is up (`disk_full` is Some): read on every proposal, so an atomic, not the lock.
    disk_full_raised: AtomicBool,
    /// The membership this replica has applied.
    membership: RwLock<Membership>,
    /// Members just removed that the leader still talks to (their handshakes are accepted).
    leaving: RwLock<BTreeSet<NodeId>>,
    /// This replica's removal from the membership is committed.
    removed: AtomicBool,
}

/// Numbers the consensus actor publishes after each Ready.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsensusNumbers {
    /// Current role.
    pub role: Option<Role>,
    /// Current term.
    pub term: u64,
    /// Known leader (0 if none).
    pub leader: NodeId,
    /// Commit index.
    pub commit_index: u64,
    /// Last index in the log.
    pub last_log_index: u64,
    /// Index covered by the latest snapshot.
    pub snapshot_index: u64,
    /// Bytes of log since the last snapshot.
    pub log_bytes: u64,
    /// Elections this replica started.
    pub elections: u64,
}

/// The roles by their code on the board (the atomic holds an index into this).
const ROLES: [Role; 4] = [Role::Follower, Role::PreCandidate, Role::Candidate, Role::Leader];

fn role_code(role: Option<Role>) -> u8 {
    role.and_then(|r| ROLES.iter().position(|&x| x == r)).unwrap_or(0) as u8
}

impl StatusBoard {
    /// A board for replica `id` whose own client address is `client_addr`.
    pub fn new(id: NodeId, client_addr: String) -> StatusBoard {
        let board = StatusBoard { id, ..StatusBoard::default() };
        board.earliest_expiry_ms.store(u64::MAX, Ordering::Relaxed);
        let _ = board.started.set(std::time::Instant::now());
        board.set_client_addr(id, client_addr);
        board
    }

    /// Publishes the consensus actor's numbers.
    pub fn publish_consensus(&self, n: ConsensusNumbers) {
        self.elections.store(n.elections, Ordering::Relaxed);
        if n.leader != 0 && n.leader != self.leader.load(Ordering::Relaxed) {
            self.metrics.leader_changes.inc();
        }
        self.role.store(role_code(n.role), Ordering::Relaxed);
        self.term.store(n.term, Ordering::Relaxed);
        self.leader.store(n.leader, Ordering::Relaxed);
        self.commit_index.store(n.commit_index, Ordering::Relaxed);
        self.last_log_index.store(n.last_log_index, Ordering::Relaxed);
        self.snapshot_index.store(n.snapshot_index, Ordering::Relaxed);
        self.log_bytes.store(n.log_bytes, Ordering::Relaxed);
    }

    /// Publishes the applier's numbers.
    pub fn publish_applied(&self, applied_index: u64, keys: u64, state_digest: u64) {
        self.applied_index.store(applied_index, Ordering::Relaxed);
        self.keys.store(keys, Ordering::Relaxed);
        self.state_digest.store(state_digest, Ordering::Relaxed);
    }

    /// Publishes the applier's clock and what it knows of expiring keys.
    pub fn publish_clock(
        &self,
        applied_clock_ms: u64,
        expiring_keys: u64,
        earliest_expiry_ms: Option<u64>,
        avg_ttl_ms: u64,
    ) {
        self.avg_ttl_ms.store(avg_ttl_ms, Ordering::Relaxed);
        self.applied_clock_ms.store(applied_clock_ms, Ordering::Relaxed);
        self.expiring_keys.store(expiring_keys, Ordering::Relaxed);
        self.earliest_expiry_ms.store(earliest_expiry_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Publishes the bytes of keys and values the state holds.
    pub fn publish_data_bytes(&self, bytes: u64) {
        self.data_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The replicated clock at the applied index (milliseconds; 0 before any stamped entry).
    pub fn applied_clock_ms(&self) -> u64 {
        self.applied_clock_ms.load(Ordering::Relaxed)
    }

    /// Keys with a time to live, at the applied index.
    pub fn expiring_keys(&self) -> u64 {
        self.expiring_keys.load(Ordering::Relaxed)
    }

    /// The earliest expiry of any key at the applied index, if any key has one.
    pub fn earliest_expiry_ms(&self) -> Option<u64> {
        Some(self.earliest_expiry_ms.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Records that consensus stopped for `reason`: the replica neither leads nor follows any more.
    pub fn mark_stopped(&self, reason: &str) {
        self.role.store(role_code(Some(Role::Follower)), Ordering::Relaxed);
        self.leader.store(0, Ordering::Relaxed);
        if let Ok(mut stopped) = self.stopped.write() {
            stopped.get_or_insert_with(|| reason.to_string());
        }
    }

    /// Raises (`Some(why)`) or clears (`None`) the disk-full alarm.
    pub fn set_disk_full(&self, why: Option<String>) {
        self.disk_full_raised.store(why.is_some(), Ordering::Relaxed);
        if let Ok(mut alarm) = self.disk_full.write() {
            *alarm = why;
        }
    }

    /// True while the disk-full alarm is up (writes are refused meanwhile).
    pub fn is_disk_full(&self) -> bool {
        self.disk_full_raised.load(Ordering::Relaxed)
    }

    /// Why the disk is full, while it is (writes are refused meanwhile).
    pub fn disk_full(&self) -> Option<String> {
        self.disk_full.read().ok().and_then(|s| s.clone())
    }

    /// Why consensus stopped, if it has.
    pub fn stop_reason(&self) -> Option<String> {
        self.stopped.read().ok().and_then(|s| s.clone())
    }

    /// Digest of the state machine's content at the applied index (equal states, equal digests).
    pub fn state_digest(&self) -> u64 {
        self.state_digest.load(Ordering::Relaxed)
    }

    /// Publishes the applied membership (and whom a leader still sends to after removing them).
    pub fn publish_membership(&self, membership: &Membership, leaving: BTreeSet<NodeId>) {
        for (&id, addrs) in &membership.addrs {
            if !addrs.client_addr.is_empty() {
                self.set_client_addr(id, addrs.client_addr.clone());
            }
        }
        // Removed once out of every set: a voter removed through a joint change still votes in
        // the outgoing set until the joint configuration is left (serving meanwhile, and its
        // server must not exit: the change may need its vote to complete).
        let removed = membership.removed.contains(&self.id) && !membership.contains(self.id);
        if removed && !self.removed.swap(true, Ordering::Relaxed) {
            log::info!("replica {}: removed from the cluster; no longer serving", self.id);
        }
        if let Ok(mut m) = self.membership.write() {
            *m = membership.clone();
        }
        if let Ok(mut l) = self.leaving.write() {
            *l = leaving;
        }
    }

    /// The membership this replica has applied.
    pub fn membership(&self) -> Membership {
        self.membership.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether a peer with this id may connect: a member, a just-removed one the leader still
    /// talks to, or anyone of the cluster while this replica knows no membership yet (joining).
    pub fn peer_allowed(&self, id: NodeId) -> bool {
        if id == self.id || id == 0 {
            return false;
        }
        let member = self.membership.read().map(|m| m.is_empty() || m.contains(id)).unwrap_or(false);
        member || self.leaving.read().map(|l| l.contains(&id)).unwrap_or(false)
    }

    /// Whether this replica's removal from the membership is committed.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Records where member `id` serves clients.
    pub fn set_client_addr(&self, id: NodeId, addr: String) {
        if let Ok(mut map) = self.client_addrs.write() {
            map.insert(id, addr);
        }
    }

    /// Where member `id` serves clients, if known.
    pub fn client_addr(&self, id: NodeId) -> Option<String> {
        self.client_addrs.read().ok().and_then(|m| m.get(&id).cloned())
    }

    /// The role name INFO prints (`learner` for a learner that is not leading).
    pub fn role_name(&self) -> &'static str {
        let learner = self.membership.read().map(|m| m.is_learner(self.id)).unwrap_or(false);
        match self.role() {
            Role::Follower if learner => "learner",
            role => role.name(),
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        ROLES.get(self.role.load(Ordering::Relaxed) as usize).copied().unwrap_or(Role::Follower)
    }

    /// Whether this replica currently believes it leads.
    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// Known leader id, 0 if none.
    pub fn leader(&self) -> NodeId {
        self.leader.load(Ordering::Relaxed)
    }

    /// Applied index.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Relaxed)
    }

    /// Commit index.
    pub fn commit_index(&self) -> u64 {
        self.commit_index.load(Ordering::Relaxed)
    }

    /// The `-NOTLEADER` argument: the leader's client address, or `?`.
    pub fn leader_hint(&self) -> String {
        match self.leader() {
            0 => "?".to_string(),
            id => self.client_addr(id).unwrap_or_else(|| "?".to_string()),
        }
    }

    /// Elections this replica started.
    pub fn elections(&self) -> u64 {
        self.elections.load(Ordering::Relaxed)
    }

    /// Index covered by the latest snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index.load(Ordering::Relaxed)
    }

    /// Last index in the log.
    pub fn last_log_index(&self) -> u64 {
        self.last_log_index.load(Ordering::Relaxed)
    }

    /// Bytes of log since the snapshot.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Keys stored at the applied index.
    pub fn key_count(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Live client connections.
    pub fn connected_clients(&self) -> u64 {
        self.connected_clients.load(Ordering::Relaxed)
    }

    /// Records how many client connections are live.
    pub fn set_connected_clients(&self, n: usize) {
        self.connected_clients.store(n as u64, Ordering::Relaxed);
    }

    /// INFO's text for `section` (none, `all`, `default` or `everything`: every section):
    /// `field:value` lines under `# Section` headers, as Redis lays them out, with our `raft` section.
    /// `clients` is the number of live client connections.
    pub fn info_text(&self, section: Option<&str>, clients: usize) -> String {
        let leader = self.leader();
        let leader_addr =
            if leader == 0 { String::new() } else { self.client_addr(leader).unwrap_or_default() };
        let membership = self.membership();
        let join = |ids: Vec<NodeId>| ids.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
        let voters = membership.voter_ids();
        let members = join(voters.clone());
        let learners = join(membership.learners.iter().copied().collect());
        let stop_reason = self.stop_reason();
        let disk_full = self.disk_full();
        let uptime = self.started.get().map_or(0, |s| s.elapsed().as_secs());
        let used = self.data_bytes.load(Ordering::Relaxed);
        let keys = self.keys.load(Ordering::Relaxed);
        let expires = self.expiring_keys();
        let sections: [(&str, Vec<(&str, String)>); 8] = [
            (
                "Server",
                vec![
                    ("redis_version", "7.2.0".to_string()),
                    ("quorumkv_version", env!("CARGO_PKG_VERSION").to_string()),
                    ("redis_mode", "standalone".to_string()),
                    ("os", std::env::consts::OS.to_string()),
                    ("arch_bits", (usize::BITS).to_string()),
                    ("process_id", std::process::id().to_string()),
                    ("uptime_in_seconds", uptime.to_string()),
                    ("uptime_in_days", (uptime / 86_400).to_string()),
                ],
            ),
            (
                "Clients",
                vec![("connected_clients", clients.to_string()), ("blocked_clients", "0".to_string())],
            ),
            (
                "Memory",
                vec![
                    ("used_memory", used.to_string()),
                    ("used_memory_human", human_bytes(used)),
                    ("maxmemory", "0".to_string()),
                    ("maxmemory_policy", "noeviction".to_string()),
                ],
            ),
            (
                "Persistence",
                vec![
                    ("loading", "0".to_string()),
                    ("rdb_changes_since_last_save", "0".to_string()),
                    ("aof_enabled", "0".to_string()),
                    ("wal_enabled", "1".to_string()),
                ],
            ),
            ("Stats", vec![("expired_keys_pending", self.expired_pending().to_string())]),
            (
                "Replication",
                vec![
                    ("role", self.role_name().to_string()),
                    ("leader_id", leader.to_string()),
                    ("leader_client_addr", leader_addr),
                    ("connected_slaves", voters.len().saturating_sub(1).to_string()),
                    ("members", members),
                    ("learners", learners),
                ],
            ),
            (
                "Raft",
                vec![
                    ("id", self.id.to_string()),
                    ("term", self.term().to_string()),
                    ("commit_index", self.commit_index().to_string()),
                    ("applied_index", self.applied_index().to_string()),
                    ("last_log_index", self.last_log_index.load(Ordering::Relaxed).to_string()),
                    ("snapshot_index", self.snapshot_index.load(Ordering::Relaxed).to_string()),
                    ("log_bytes", self.log_bytes.load(Ordering::Relaxed).to_string()),
                    ("keys", keys.to_string()),
                    ("state_digest", format!("{:016x}", self.state_digest())),
                    ("applied_clock_ms", self.applied_clock_ms().to_string()),
                    ("consensus", if stop_reason.is_some() { "stopped" } else { "running" }.to_string()),
                    ("consensus_error", stop_reason.unwrap_or_default()),
                    ("disk_full", u8::from(disk_full.is_some()).to_string()),
                    ("disk_full_error", disk_full.unwrap_or_default()),
                ],
            ),
            (
                "Keyspace",
                if keys == 0 {
                    Vec::new()
                } else {
                    let avg_ttl = self.avg_ttl_ms.load(Ordering::Relaxed);
                    vec![("db0", format!("keys={keys},expires={expires},avg_ttl={avg_ttl}"))]
                },
            ),
        ];
        let wanted = section.map(str::to_ascii_lowercase);
        let all = matches!(wanted.as_deref(), None | Some("all" | "default" | "everything"));
        let mut out = String::new();
        for (name, fields) in sections {
            if !all && wanted.as_deref() != Some(name.to_ascii_lowercase().as_str()) {
                continue;
            }
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str(&format!("# {name}\r\n"));
            for (k, v) in fields {
                out.push_str(k);
                out.push(':');
                out.push_str(&v);
                out.push_str("\r\n");
            }
        }
        out
    }

    /// Keys whose time to live has passed at the applied clock but that are not reclaimed yet
    /// (an estimate: 1 if the earliest expiry has passed, else 0).
    fn expired_pending(&self) -> u64 {
        u64::from(self.earliest_expiry_ms().is_some_and(|at| at < self.applied_clock_ms()))
    }
}

/// Bytes as Redis's `_human` fields print them (`1.50M`).
fn human_bytes(bytes: u64) -> String {
    let units = [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (unit, size) in units {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::raft::{ChangeOp, ConfChange, MemberAddrs};

    #[test]
    fn a_voter_leaving_through_a_joint_change_is_removed_only_once_it_is_left() {
        let addrs = |n: u64| MemberAddrs {
            peer_addr: format!("127.0.0.1:{n}"),
            client_addr: format!("127.0.0.1:{}", n + 100),
        };
        let three = Membership::bootstrap((1..=3).map(|n| (n, addrs(n))).collect());
        let four = three.plan(&[ChangeOp::Add { id: 4, addrs: addrs(4) }]).expect("add");
        let joint = four.plan(&[ChangeOp::Promote { id: 4 }, ChangeOp::Remove { id: 1 }]).expect("swap");
        assert!(joint.is_joint() && joint.removed.contains(&1) && joint.is_voter(1));
        let board = StatusBoard::new(1, String::new());
        board.publish_membership(&joint, BTreeSet::new());
        assert!(!board.is_removed(), "still a voter of the outgoing set");
        let left = joint.apply(&ConfChange::LeaveJoint).expect("leave");
        board.publish_membership(&left, BTreeSet::new());
        assert!(board.is_removed());
    }
}
