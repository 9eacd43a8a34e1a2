//! Wires one replica from a config: data dir, WAL, Raft core and every actor.
//!
//! ```text
//!  client ──RESP──> FrontEnd ─> Connection ─> Waiter ──Propose/ReadIndex──> Consensus ──Persist──> DiskWriter (own thread)
//!                                  ^            ^                            │   │
//!                                  └─WaiterDone─┴──WatchFired/ReadDone── Applier <─ApplyEntries/Watch/ServeRead(s)
//!  peers ──TCP──> PeerListener ──Inbound──> Consensus ──Transport──> PeerLink ──TCP──> peers
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::net::{TcpListener, TcpSocket};

use super::applier::{Applier, StopApplier};
use super::connection::ConnectionEnv;
use super::consensus::{Consensus, ConsensusParts, StopConsensus};
use super::cpu_affinity::{self, CpuList};
use super::disk::{CloseDisk, DiskWriter, WalHandle};
use super::front_end::{FrontEnd, StopFrontEnd};
use super::peer_listener::{PeerListener, StopListener};
use super::registry::{ClientRegistry, HeldSnapshots, ScanCursors};
use super::snapshotter::Snapshotter;
use super::status::StatusBoard;
use super::transport::{TcpTransport, Transport};
use crate::protocol::codec;
use crate::protocol::peer_wire::{Handshake, PEER_PROTOCOL_VERSION};
use crate::protocol::raft::{
    ConfChange, Config, Entry, EntryKind, HardState, Membership, NodeId, RaftCore, SnapshotMeta,
};
use crate::storage::{
    DataDir, SnapshotStore, StateMachine, StorageError, Wal, WalOptions, DEFAULT_MAX_SESSIONS,
};

/// Log bytes after which a snapshot is taken, by default. The log since the last snapshot is
/// held in memory (about 1.25× its bytes); 32 MiB rather than 64 took the leader's peak RSS under
/// pipelined writes to 720,000 keys from 321-349 MB to 299-306 MB with the same throughput
/// (`scripts/snapshot_stall_probe.sh`, three runs each).
pub const DEFAULT_SNAPSHOT_THRESHOLD_BYTES: u64 = 32 * 1024 * 1024;

/// Everything that configures one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This member's id (non-zero).
    pub id: NodeId,
    /// Name shared by every member; peers of another cluster are refused.
    pub cluster_name: String,
    /// Where to serve clients (HOST:PORT; port 0 picks one).
    pub client_addr: String,
    /// Where to listen for peers (HOST:PORT; port 0 picks one).
    pub peer_addr: String,
    /// Peer address of every member, this one included: the bootstrap membership of a new
    /// cluster (and the address book of a joining replica). Once the data dir records a
    /// membership, that one rules.
    pub peers: BTreeMap<NodeId, String>,
    /// Start with an empty data dir as a new member of a running cluster: no bootstrap; the
    /// membership arrives with the log (or a snapshot) from the leader. The data dir keeps a mark
    /// until it has, so a restart before then joins again even without this.
    pub join: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// fsync every WAL write (off only with `--no-fsync`).
    pub fsync: bool,
    /// Minimum election timeout; each one is drawn from [this, 2 × this).
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft tick interval (election and heartbeat times are whole numbers of ticks).
    pub tick_ms: u64,
    /// How long a request may wait for its outcome before `-TRYAGAIN`.
    pub request_timeout_ms: u64,
    /// Log bytes since the last snapshot that trigger a new one.
    pub snapshot_threshold_bytes: u64,
    /// Applied entries a follower keeps in memory below its applied mark (the rest of the log
    /// since the snapshot is only in the WAL).
    pub retained_entries: u64,
    /// Entries dropped from memory at a time once no peer needs them. Tests make this and
    /// `retained_entries` small, so that trimming and the snapshots it leads to come quickly.
    pub trim_batch_entries: u64,
    /// Client sessions remembered (must be equal on every member).
    pub max_sessions: usize,
    /// WAL segment size.
    pub wal_segment_bytes: u64,
    /// Client connections served at once; more are answered `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// Close a client connection idle this long with nothing in flight (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Where to serve `/metrics` and `/health` over HTTP (HOST:PORT; port 0 picks one; `None`: not served).
    pub metrics_addr: Option<String>,
    /// A follower forwards writes, reads and admin requests to the leader (`--no-forward`
    /// clears it: followers answer `-NOTLEADER addr`).
    pub forward: bool,
    /// Fault injection for tests, never for use: serve reads from this replica's own state at
    /// once, without confirming it is current. Its reads can be stale; it exists so a test can
    /// show that `quorumkv-cli check`'s checker catches a replica that breaks linearizability.
    pub unsafe_local_reads: bool,
    /// Seed of the election-timeout draws (`None`: from the clock), so a test's printed seed
    /// replays the same elections.
    pub seed: Option<u64>,
    /// CPUs to pin the request path to: the calling (client) thread, consensus's and the log
    /// writer's, and threads they start later (`None`: the kernel places them). Snapshot
    /// encoding stays unpinned. The calling thread stays pinned after the replica stops, so
    /// give each pinned replica a thread of its own.
    pub cpu_list: Option<CpuList>,
}

impl ReplicaConfig {
    /// A single-member config with the product's defaults.
    pub fn single(
        id: NodeId,
        client_addr: &str,
        peer_addr: &str,
        data_dir: impl Into<PathBuf>,
    ) -> ReplicaConfig {
        ReplicaConfig {
            id,
            cluster_name: "quorumkv".to_string(),
            client_addr: client_addr.to_string(),
            peer_addr: peer_addr.to_string(),
            peers: BTreeMap::from([(id, peer_addr.to_string())]),
            join: false,
            data_dir: data_dir.into(),
            fsync: true,
            election_timeout_ms: 1000,
            heartbeat_ms: 100,
            tick_ms: 10,
            request_timeout_ms: 3000,
            snapshot_threshold_bytes: DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
            retained_entries: crate::protocol::raft::DEFAULT_RETAINED_ENTRIES,
            trim_batch_entries: super::consensus::DEFAULT_TRIM_BATCH_ENTRIES,
            max_sessions: DEFAULT_MAX_SESSIONS,
            wal_segment_bytes: crate::storage::wal::DEFAULT_SEGMENT_BYTES,
            max_clients: super::front_end::DEFAULT_MAX_CLIENTS,
            idle_timeout: None,
            metrics_addr: None,
            forward: true,
            unsafe_local_reads: false,
            seed: None,
            cpu_list: None,
        }
    }

    /// Checks that every CPU of `cpu_list` is one this process may use, so that pinning cannot
    /// fail halfway through a start (or after a `--join` has asked the cluster for anything).
    pub fn check_cpu_list(&self) -> Result<(), ReplicaError> {
        match &self.cpu_list {
            Some(cpus) => cpu_affinity::check_available(cpus)
                .map_err(|e| ReplicaError::Config(format!("--cpu-list {cpus}: {e}"))),
            None => Ok(()),
        }
    }

    fn raft_config(&self) -> Result<Config, ReplicaError> {
        let tick = self.tick_ms.max(1);
        let mut config = Config::new(self.id, self.peers.keys().copied().collect());
        config.election_timeout_ticks = (self.election_timeout_ms / tick).max(2) as u32;
        config.heartbeat_ticks = (self.heartbeat_ms / tick).max(1) as u32;
        // Election timeouts differ between members, and between runs unless a seed is given.
        let seed = self.seed.unwrap_or_else(|| {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        config.seed = seed ^ self.id.rotate_left(32);
        config.retained_entries = self.retained_entries;
        config.validate().map_err(ReplicaError::Config)?;
        Ok(config)
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The data dir or WAL refused (wrong identity, locked, corrupt, I/O).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Binds `addr` with SO_REUSEADDR, retrying briefly while a just-closed listener lets go of it.
pub async fn bind(addr: &str) -> Result<TcpListener, ReplicaError> {
    let err = |source| ReplicaError::Bind { addr: addr.to_string(), source };
    let parsed: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let socket = if parsed.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
        socket.set_reuseaddr(true).map_err(err)?;
        match socket.bind(parsed).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// Pins `arbiter`'s thread to the config's CPU list, if it has one (`what` names it in a warning).
fn pin_arbiter(arbiter: &Arbiter, config: &ReplicaConfig, what: &'static str) {
    if let Some(cpus) = config.cpu_list.clone() {
        let id = config.id;
        arbiter.spawn_fn(move || {
            if let Err(e) = cpu_affinity::pin_current_thread(&cpus) {
                log::warn!("replica {id}: {what} thread not pinned to CPUs {cpus}: {e}");
            }
        });
    }
}

/// Whether nothing was ever written to this data dir's log.
fn is_fresh(hard_state: &HardState, snapshot: &SnapshotMeta, entries: &[Entry]) -> bool {
    *hard_state == HardState::default() && snapshot.index == 0 && entries.is_empty()
}

/// The first entry of a new cluster's log: its membership, from `--peers`. Every founding member
/// writes the same entry, committed by construction (client addresses are learnt later, from
/// handshakes, so they are not part of it).
fn bootstrap_entry(peers: &BTreeMap<NodeId, String>) -> Result<Entry, ReplicaError> {
    let data = codec::encode(&ConfChange::Bootstrap(Membership::from_peers(peers)))
        .map_err(|e| ReplicaError::Config(e.to_string()))?;
    Ok(Entry { term: 1, index: 1, data: data.into(), kind: EntryKind::ConfChange })
}

/// The membership a log of `entries` after a snapshot with `at_snapshot` ends with (all of them
/// applied, committed or not): what a restart will be using soon.
fn latest_membership(at_snapshot: &Membership, entries: &[Entry]) -> Membership {
    let mut m = at_snapshot.clone();
    for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
        if let Ok(next) =
            codec::decode::<ConfChange>(&e.data).map_err(|_| ()).and_then(|c| m.apply(&c).map_err(|_| ()))
        {
            m = next;
        }
    }
    m
}

/// What a replica restarts from: state machine, snapshot, and the log after it.
type Recovered = (StateMachine, SnapshotMeta, Vec<Entry>);

/// Reconciles the newest snapshot file with the WAL's compaction marker and entries.
///
/// The image is written before the log records the compaction, so the file may be newer than
/// the marker (a crash in between), never older.
fn recover(
    id: NodeId,
    latest: Option<(SnapshotMeta, StateMachine)>,
    marker: SnapshotMeta,
    entries: Vec<Entry>,
) -> Result<Recovered, ReplicaError> {
    let Some((meta, state)) = latest else {
        if marker.index > 0 {
            return Err(ReplicaError::Config(format!(
                "replica {id}: the log is compacted up to {} but no snapshot file is there",
                marker.index
            )));
        }
        return Ok((StateMachine::default(), SnapshotMeta::default(), entries));
    };
    state.check_taken_at(meta.index).map_err(|why| ReplicaError::Config(format!("replica {id}: {why}")))?;
    if meta.index < marker.index {
        return Err(ReplicaError::Config(format!(
            "replica {id}: the newest snapshot ({}) is older than the log's compaction point ({})",
            meta.index, marker.index
        )));
    }
    // Keep the entries after the snapshot only if the log agrees with it at its index (Raft §7).
    let agrees =
        meta.index == marker.index || entries.iter().any(|e| e.index == meta.index && e.term == meta.term);
    let entries =
        if agrees { entries.into_iter().filter(|e| e.index > meta.index).collect() } else { Vec::new() };
    // The image is not kept (it is as big as the state): consensus reads it from its file, a
    // chunk at a time, if a follower ever needs it.
    Ok((state, meta, entries))
}

/// A running replica: its addresses and the handles to stop it.
pub struct Replica {
    /// This member's id.
    pub id: NodeId,
    /// Where it serves clients.
    pub client_addr: SocketAddr,
    /// Where it listens for peers.
    pub peer_addr: SocketAddr,
    /// Its live numbers.
    pub status: Arc<StatusBoard>,
    consensus: Addr<Consensus>,
    applier: Addr<Applier>,
    front_end: Addr<FrontEnd>,
    peer_listener: Addr<PeerListener>,
    disk: Addr<DiskWriter>,
    /// The WAL the disk writer and consensus write, for [`crash`](Replica::crash).
    wal: WalHandle,
    disk_arbiter: Arbiter,
    snapshot_arbiter: Arbiter,
    /// The thread consensus, peer links and the peer listener run on.
    consensus_arbiter: Arbiter,
}

impl Replica {
    /// Starts a replica, binding its listeners from the config. Call inside an actix system.
    pub async fn start(config: ReplicaConfig) -> Result<Replica, ReplicaError> {
        let client = bind(&config.client_addr).await?;
        let peer = bind(&config.peer_addr).await?;
        Replica::start_with(config, client, peer, None).await
    }

    /// Starts a replica on listeners already bound, optionally with a custom transport
    /// (the default dials every other member over TCP).
    pub async fn start_with(
        config: ReplicaConfig,
        client_listener: TcpListener,
        peer_listener: TcpListener,
        transport: Option<Box<dyn Transport>>,
    ) -> Result<Replica, ReplicaError> {
        let raft_config = config.raft_config()?;
        config.check_cpu_list()?;
        let client_addr = client_listener
            .local_addr()
            .map_err(|source| ReplicaError::Bind { addr: config.client_addr.clone(), source })?;
        let peer_addr = peer_listener
            .local_addr()
            .map_err(|source| ReplicaError::Bind { addr: config.peer_addr.clone(), source })?;

        let data_dir = DataDir::open(&config.data_dir, &config.cluster_name, config.id)?;
        // A join is marked before its log exists, and stays a join until a start finds its
        // membership recorded, whatever the config says then: bootstrapping, or taking
        // `--peers` (itself alone) as the membership, would make it a cluster of its own. The
        // mark keeps the peer addresses it joined with, for a restart to reach the others.
        let mut config = config;
        if config.join {
            data_dir.set_joining(Some(&config.peers))?;
        }
        let marked = data_dir.is_joining();
        if marked {
            for (id, addr) in data_dir.joining_book() {
                config.peers.entry(id).or_insert(addr);
            }
        }
        let snapshots = SnapshotStore::open(data_dir.snap_dir())?;
        let witness = data_dir.wal_witness();
        let (mut wal, mut recovery) = Wal::open_witnessed(
            data_dir.wal_dir(),
            WalOptions { segment_bytes: config.wal_segment_bytes, fsync: config.fsync },
            Some(&witness),
        )?;
        // Decoded as it is read, so the image is never whole in memory beside the state it
        // builds; and after the log is read, whose reading holds a segment's buffer (up to 64
        // MiB) that would otherwise come on top of the state. A start refused for a damaged
        // image has opened the log by then, as any start does (torn tail cut, a segment begun).
        let latest = snapshots.read_latest(StateMachine::restore_from)?;
        let fresh = latest.is_none() && is_fresh(&recovery.hard_state, &recovery.snapshot, &recovery.entries);
        if fresh && !marked {
            let entry = bootstrap_entry(&config.peers)?;
            let hard_state = HardState { term: 1, vote: 0, commit: 1 };
            wal.append(Some(hard_state), std::slice::from_ref(&entry))?;
            recovery.hard_state = hard_state;
            recovery.entries = vec![entry];
            log::info!("replica {}: bootstrapped a new cluster of {:?}", config.id, config.peers.keys());
        }
        let (mut state, snapshot_meta, entries) =
            recover(config.id, latest, recovery.snapshot, recovery.entries)?;
        let mut membership = state.membership().clone();
        let records_membership = !membership.is_empty()
            || entries.first().is_some_and(|e| e.index == 1 && e.kind == EntryKind::ConfChange);
        let joining = marked && !records_membership;
        if marked && records_membership {
            data_dir.set_joining(None)?;
        }
        if !records_membership && !joining {
            // A data dir from before memberships were recorded: `--peers` is the membership, of
            // the core and of the state machine both (with none, the state machine applied no
            // change and its snapshots recorded none: a restart from one went back to `--peers`,
            // forgetting every change since).
            membership = Membership::from_peers(&config.peers);
            state.replace_membership(membership.clone());
        }
        let latest = latest_membership(&membership, &entries);
        if !fresh
            && !latest.is_empty()
            && latest.voter_ids() != config.peers.keys().copied().collect::<Vec<_>>()
        {
            log::warn!(
                "replica {}: --peers lists {:?} but the recorded membership has voters {:?} and learners {:?}; using the recorded one",
                config.id,
                config.peers.keys().collect::<Vec<_>>(),
                latest.voter_ids(),
                latest.learners
            );
        }
        log::info!(
            "replica {}: recovered term {} vote {} commit {}, snapshot at {}, {} log entries after it",
            config.id,
            recovery.hard_state.term,
            recovery.hard_state.vote,
            recovery.hard_state.commit,
            snapshot_meta.index,
            entries.len()
        );
        let core = RaftCore::restore(raft_config, recovery.hard_state, snapshot_meta, membership, entries);

        if snapshot_meta != recovery.snapshot {
            // The snapshot file is newer than the log's marker (a crash between the two writes).
            // Written before consensus starts, so no write of its own can come first; and a start
            // that cannot write it fails: entries appended after the snapshot onto a log that
            // still disagrees with it there would all be dropped by the next start's recovery.
            wal.compact(snapshot_meta)?;
        }
        let status = Arc::new(StatusBoard::new(config.id, client_addr.to_string()));
        let disk_arbiter = Arbiter::new();
        pin_arbiter(&disk_arbiter, &config, "log writer");
        let disk = DiskWriter::start_on(&disk_arbiter.handle(), wal, data_dir, Some(status.clone()));
        let snapshot_arbiter = Arbiter::new();
        let id = config.id;
        let snapshot_inbox = snapshots.inbox();
        let snapshotter = Snapshotter::start_in_arbiter(&snapshot_arbiter.handle(), move |_| {
            Snapshotter::new(snapshots, id)
        });
        let held_snapshots = Arc::new(HeldSnapshots::default());
        let applier = Applier::new(
            state,
            snapshot_meta.term,
            status.clone(),
            snapshotter.clone(),
            held_snapshots.clone(),
        )
        .start();

        let handshake = Handshake {
            cluster_name: config.cluster_name.clone(),
            from: config.id,
            version: PEER_PROTOCOL_VERSION,
            client_addr: client_addr.to_string(),
        };
        // Consensus, its peer links and the peer listener run on a thread of their own, so client
        // work on the main runtime (parsing, replies, waiters) can never delay heartbeats,
        // elections or acknowledgements.
        let consensus_arbiter = Arbiter::new();
        pin_arbiter(&consensus_arbiter, &config, "consensus");
        let on_consensus = consensus_arbiter.handle();
        // The TCP transport starts its links from inside consensus, so on consensus's thread.
        let transport = transport.unwrap_or_else(|| Box::new(TcpTransport::new(handshake)));
        let parts = ConsensusParts {
            core,
            disk: disk.clone(),
            snapshotter,
            snapshot_threshold_bytes: config.snapshot_threshold_bytes,
            trim_batch_entries: config.trim_batch_entries.max(1),
            latest_snapshot: None,
            snapshot_inbox,
            applier: applier.clone(),
            transport,
            status: status.clone(),
            tick: Duration::from_millis(config.tick_ms.max(1)),
            address_book: config.peers.clone(),
            forward: config.forward,
            unsafe_local_reads: config.unsafe_local_reads,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        let consensus = Consensus::new(parts);
        let read_inbox = consensus.read_inbox();
        let consensus = Consensus::start_in_arbiter(&on_consensus, move |_| consensus);
        let peer_std = peer_listener
            .into_std()
            .map_err(|source| ReplicaError::Bind { addr: config.peer_addr.clone(), source })?;
        let peer_listener = PeerListener::new(
            peer_std,
            config.cluster_name.clone(),
            config.id,
            consensus.clone().recipient(),
            status.clone(),
        );
        let peer_listener = PeerListener::start_in_arbiter(&on_consensus, move |_| peer_listener);
        let env = ConnectionEnv {
            consensus: consensus.clone(),
            read_inbox,
            status: status.clone(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            idle_timeout: config.idle_timeout,
            clients: Arc::new(ClientRegistry::default()),
            cursors: Arc::new(ScanCursors::default()),
            snapshots: held_snapshots,
            large_requests: Arc::new(tokio::sync::Semaphore::new(super::connection::MAX_LARGE_REQUEST_BYTES)),
        };
        let front_end = FrontEnd::new(client_listener, env, config.max_clients).start();
        log::info!("replica {}: serving clients on {client_addr}, peers on {peer_addr}", config.id);
        if let Some(addr) = &config.metrics_addr {
            let bound = super::http::start(addr, status.clone())
                .map_err(|source| ReplicaError::Bind { addr: addr.clone(), source })?;
            let _ = status.metrics_addr.set(bound);
            log::info!("replica {}: serving /metrics and /health on http://{bound}", config.id);
        }
        if !config.fsync {
            log::warn!(
                "replica {}: --no-fsync: acknowledged writes can be lost if the machine crashes",
                config.id
            );
        }
        if let Some(cpus) = &config.cpu_list {
            // Last, so that the snapshotter's thread, started above, does not inherit the pin
            // (the metrics server's threads start once this thread polls them: they do).
            match cpu_affinity::pin_current_thread(cpus) {
                Ok(()) => log::info!(
                    "replica {}: client, consensus and log writer threads on CPUs {cpus}",
                    config.id
                ),
                Err(e) => log::warn!("replica {}: client thread not pinned to CPUs {cpus}: {e}", config.id),
            }
        }
        Ok(Replica {
            id: config.id,
            client_addr,
            peer_addr,
            status,
            consensus,
            applier,
            front_end,
            peer_listener,
            disk: disk.writer,
            wal: disk.wal,
            disk_arbiter,
            snapshot_arbiter,
            consensus_arbiter,
        })
    }

    /// The consensus actor, for deployments that add their own front end.
    pub fn consensus(&self) -> Addr<Consensus> {
        self.consensus.clone()
    }

    /// Stops as a crash would: every log write not yet carried out (a leader's queued for its
    /// disk writer, say) is lost, then [`stop`](Replica::stop). For fault tests.
    pub async fn crash(self) {
        self.wal.crash();
        self.stop().await;
    }

    /// Stops every actor, finishes the disk write in progress, and releases the data dir.
    ///
    /// What was not yet on disk is lost, exactly as in a crash; what was is recovered on restart.
    pub async fn stop(self) {
        let _ = self.front_end.send(StopFrontEnd).await;
        let _ = self.peer_listener.send(StopListener).await;
        let _ = self.consensus.send(StopConsensus).await;
        let _ = self.applier.send(StopApplier).await;
        let _ = self.disk.send(CloseDisk).await;
        self.consensus_arbiter.stop();
        let _ = self.consensus_arbiter.join();
        self.disk_arbiter.stop();
        let _ = self.disk_arbiter.join();
        self.snapshot_arbiter.stop();
        let _ = self.snapshot_arbiter.join();
        log::info!("replica {}: stopped", self.id);
    }
}
