//! Randomized, deterministic whole-cluster simulation of the Raft core.
//!
//! 3 and 5 cores talk through a seeded network that drops, duplicates, delays, reorders and
//! partitions; each node's writes reach its "disk" some random time after the Ready that handed
//! them out (messages that promise them wait in the core); nodes crash (losing every write not
//! yet on disk) and restart from their disk;
//! logs are compacted, and trimmed from memory as the consensus actor trims them (a leader
//! lacking what a follower needs takes a fresh snapshot); lagging nodes catch up by snapshot, the image travelling in chunks
//! paced by the replica's own `SnapshotSender`/`SnapshotReceiver`, driven by the same ticks. After every step the safety
//! properties are checked; at the end the network heals and a new proposal must commit.
//! Reads go to whichever node believes it leads (a deposed leader too); every read served must
//! cover all that was committed anywhere before it began, and only once the node applied it.
//! A third run adds random membership changes (ids 1..7, from a founding 3) and leader transfers
//! to those faults, and checks that every node walks through the same memberships in order.
//!
//! `SIM_SEED=n` replays one seed; `SIM_SEEDS=n` sets how many seeds each test runs (default 200);
//! `SIM_STEPS=n` sets the chaos steps per seed (default 5000).

use std::collections::{BTreeMap, BTreeSet};

use quorumkv::protocol::codec;
use quorumkv::protocol::peer_wire::SnapshotChunk;
use quorumkv::protocol::raft::{
    ChangeOp, ConfChange, Config, Entry, EntryKind, HardState, MemberAddrs, Membership, Message, MessageBody,
    RaftCore, Ready, Role, Snapshot, SnapshotMeta,
};
use quorumkv::protocol::rng::Rng;
use quorumkv::protocol::snapshot_transfer::{
    AckOutcome, SendChunk, SnapshotReceiver, SnapshotSender, TickOrder, TransferConfig,
};

/// Small chunks, so an image (16 bytes) takes several and their loss and reordering matter.
const TRANSFER: TransferConfig =
    TransferConfig { chunk_bytes: 5, resend_ticks: 3, give_up_ticks: 25, max_image_bytes: 1024 };

/// What travels between simulated nodes.
#[derive(Clone, Debug)]
enum Packet {
    Raft(Message),
    Chunk(SnapshotChunk),
    /// A follower (`from`) holds `received` bytes of the snapshot at `meta` sent by `to`.
    Ack {
        from: u64,
        to: u64,
        meta: SnapshotMeta,
        received: u64,
    },
}

impl Packet {
    fn ends(&self) -> (u64, u64) {
        match self {
            Packet::Raft(m) => (m.from, m.to),
            Packet::Chunk(c) => (c.from, c.to),
            Packet::Ack { from, to, .. } => (*from, *to),
        }
    }
}

/// What a node keeps across crashes: like a replica, a snapshot file apart from the log.
#[derive(Clone, Default)]
struct Disk {
    hard_state: HardState,
    /// The newest snapshot file: its position and state machine image (index, chained hash of
    /// everything applied). Written at once, as the snapshotter writes its own file.
    image: (SnapshotMeta, (u64, u64)),
    /// The membership recorded in that image (the state machine's, at its index).
    image_membership: Membership,
    /// The log's compaction marker: `entries` start after it. Never ahead of `image`.
    snapshot: SnapshotMeta,
    /// Entries after `snapshot.index`.
    entries: Vec<Entry>,
}

/// A write handed out (by a Ready, or a compaction) and not yet on the disk.
struct Write {
    /// The Ready's number, 0 for a compaction.
    number: u64,
    snapshot: Option<(SnapshotMeta, (u64, u64), Membership)>,
    /// Compact the log up to here (its image is already written).
    compact: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Disk {
    fn persist(&mut self, write: Write) {
        if let Some((meta, state, membership)) = write.snapshot {
            if meta.index > self.image.0.index {
                self.image = (meta, state);
                self.image_membership = membership;
            }
            self.snapshot = meta;
            self.entries.clear();
        }
        if let Some(meta) = write.compact {
            self.compact(meta);
        }
        if let Some(first) = write.entries.first() {
            // A later entry at an existing index replaces that entry and everything after it.
            let keep = first.index.saturating_sub(self.snapshot.index + 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend(write.entries);
        }
        if let Some(hs) = write.hard_state {
            self.hard_state = hs;
        }
    }
}

impl Disk {
    /// Moves the log's marker up to `meta`, keeping the entries after it if the log agrees at
    /// `meta` (Raft §7), as the WAL does.
    fn compact(&mut self, meta: SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        if self.entries.iter().any(|e| e.index == meta.index && e.term == meta.term) {
            self.entries.retain(|e| e.index > meta.index);
        } else {
            self.entries.clear();
        }
        self.snapshot = meta;
    }
}

fn encode_state((index, hash): (u64, u64), membership: &Membership) -> Vec<u8> {
    let mut out = index.to_le_bytes().to_vec();
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend(codec::encode(membership).expect("encode membership"));
    out
}

fn decode_membership(data: &[u8]) -> Membership {
    codec::decode(&data[16..]).expect("image membership")
}

fn decode_state(data: &[u8]) -> (u64, u64) {
    let index = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let hash = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    (index, hash)
}

fn chain(hash: u64, entry: &Entry) -> u64 {
    let mut h = hash ^ entry.term.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for &b in &entry.data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h.rotate_left(17) ^ entry.index
}

struct Node {
    core: Option<RaftCore>,
    disk: Disk,
    /// Writes handed out and not yet on `disk`, oldest first (lost in a crash).
    pending: Vec<Write>,
    /// Snapshot images being sent (as leader), each kept with its transfer.
    sender: SnapshotSender<Vec<u8>>,
    /// The snapshot image being received (as follower).
    receiver: SnapshotReceiver,
    /// Its bytes so far, kept as the replica writes them to a file.
    receiving: Vec<u8>,
    /// The state machine: (applied index, chained hash).
    state: (u64, u64),
    /// The state machine's membership, from the configuration entries it applied.
    membership: Membership,
    /// Highest commit index whose entries were checked against the global record.
    checked: u64,
    restarts: u64,
    /// The apply ceiling its driver set (`RaftCore::set_apply_ceiling`), as a follower holding
    /// entries behind reads it forwarded does.
    apply_ceiling: Option<u64>,
}

/// The network's behaviour for one seed.
struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay_ticks: u64,
    /// Chance that a follower's disk has no room for a chunk of a snapshot image.
    no_room: f64,
}

/// Ticks a follower without room for an image answers no chunk (as the replica does for a second).
const NO_ROOM_PAUSE_TICKS: u32 = 5;

struct Sim {
    seed: u64,
    rng: Rng,
    /// The founding voters: the membership at index 0.
    members: Vec<u64>,
    /// Membership changes and leader transfers are part of the chaos.
    dynamic: bool,
    /// The membership each configuration entry led to, as first applied anywhere.
    membership_at: BTreeMap<u64, Membership>,
    nodes: BTreeMap<u64, Node>,
    /// In flight: (deliver no earlier than tick, message).
    network: Vec<(u64, Packet)>,
    cut: BTreeSet<(u64, u64)>,
    faults: Faults,
    now: u64,
    /// Every committed entry ever seen: index -> (term, data).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    /// State machine hash after applying each index, as first seen.
    hash_at: BTreeMap<u64, u64>,
    leaders: BTreeMap<u64, u64>,
    proposals: u64,
    /// Reads started and not yet served: token -> the highest index committed anywhere when
    /// the read began (what a linearizable read must reflect at least), or for a read after
    /// writes the node's last index then if higher.
    reads: BTreeMap<u64, u64>,
    /// Reads whose floor, entries appended at their node, was above anything committed.
    above_commit_reads: BTreeSet<u64>,
    /// The node each read waits at.
    read_at: BTreeMap<u64, u64>,
    /// Reads with an entry proposed behind them at their node: the first such entry's index,
    /// which they must be served before.
    read_before: BTreeMap<u64, u64>,
    next_read: u64,
    stats: SimStats,
}

#[derive(Default, Debug, Clone, Copy)]
struct SimStats {
    steps: u64,
    delivered: u64,
    dropped: u64,
    crashes: u64,
    compactions: u64,
    /// Trims of a node's in-memory log that dropped entries.
    trims: u64,
    /// Snapshots taken because a leader lacked, in memory, entries a follower needed.
    fresh_snapshots: u64,
    snapshots_installed: u64,
    /// Snapshot chunks a follower had no room for.
    no_room: u64,
    /// Images under way a follower dropped, their sender quiet too long.
    quiet_images_dropped: u64,
    max_commit: u64,
    /// Membership changes a leader accepted.
    changes_proposed: u64,
    /// Membership changes applied (the most any one node applied, bootstrap not counted).
    changes_applied: u64,
    transfers: u64,
    /// Reads a leader confirmed and served.
    reads_served: u64,
    /// Of those, reads that had to follow entries appended but not committed when they began.
    reads_above_commit_served: u64,
    /// Reads served that an entry proposed behind them had to wait for.
    reads_before_barrier_served: u64,
    /// Readies handed out while an apply ceiling held committed entries back.
    readies_under_ceiling: u64,
}

impl Sim {
    /// `n` founding voters; with `dynamic`, ids up to 7 run too, outside the membership until added.
    fn new(seed: u64, n: u64, dynamic: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let members: Vec<u64> = (1..=n).collect();
        let all: Vec<u64> = if dynamic { (1..=7).collect() } else { members.clone() };
        let faults = Faults {
            drop: rng.range(0, 20) as f64 / 100.0,
            duplicate: rng.range(0, 5) as f64 / 100.0,
            max_delay_ticks: rng.range(0, 6),
            no_room: rng.range(0, 10) as f64 / 100.0,
        };
        let mut sim = Sim {
            seed,
            rng,
            members: members.clone(),
            dynamic,
            membership_at: BTreeMap::new(),
            nodes: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            faults,
            now: 0,
            committed: BTreeMap::new(),
            hash_at: BTreeMap::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
            reads: BTreeMap::new(),
            above_commit_reads: BTreeSet::new(),
            read_at: BTreeMap::new(),
            read_before: BTreeMap::new(),
            next_read: 0,
            stats: SimStats::default(),
        };
        for id in all {
            sim.nodes.insert(
                id,
                Node {
                    core: None,
                    disk: Disk::default(),
                    pending: Vec::new(),
                    sender: SnapshotSender::new(TRANSFER),
                    receiver: SnapshotReceiver::new(TRANSFER),
                    receiving: Vec::new(),
                    state: (0, 0),
                    membership: Membership::default(),
                    checked: 0,
                    restarts: 0,
                    apply_ceiling: None,
                },
            );
            sim.start(id);
        }
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {} (replay: SIM_SEED={}): {what} [stats {:?}]", self.seed, self.seed, self.stats);
    }

    fn start(&mut self, id: u64) {
        let members = self.members.clone();
        let seed = self.seed;
        let node = self.nodes.get_mut(&id).expect("node");
        node.restarts += 1;
        let mut config = Config::new(id, members.clone());
        config.seed = seed ^ (id << 32) ^ node.restarts;
        config.max_inflight_appends = 8;
        config.max_append_bytes = 64;
        // A few entries' worth, so leaders under load hit the uncommitted-bytes bound (Busy).
        config.max_uncommitted_bytes = 1024;
        // The simulation's logs are short: a learner must be nearly level to be promoted.
        config.max_promote_lag = 4;
        // Followers keep 0-4 entries below their applied mark: leaders that lack what a
        // follower needs, and so fresh snapshots, come often.
        config.retained_entries = seed % 5;
        // A crash between an image and its log compaction leaves the image ahead: start from it,
        // as `replica::recover` does, and record the compaction.
        assert!(
            node.disk.image.0.index >= node.disk.snapshot.index,
            "seed {seed}: log compacted past its image"
        );
        let image = node.disk.image.0;
        node.disk.compact(image);
        let disk = node.disk.clone();
        node.pending.clear();
        node.sender = SnapshotSender::new(TRANSFER);
        node.receiver = SnapshotReceiver::new(TRANSFER);
        node.receiving.clear();
        // The membership at the snapshot: the image's, or at index 0 the founders'.
        let membership = if disk.snapshot.index == 0 {
            Membership::from_voters(members.iter().copied())
        } else {
            disk.image_membership.clone()
        };
        node.membership = membership.clone();
        node.core = Some(RaftCore::restore(config, disk.hard_state, disk.snapshot, membership, disk.entries));
        node.apply_ceiling = None;
        node.state = disk.image.1;
        node.checked = disk.snapshot.index;
    }

    fn live(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.core.is_some()).map(|(&id, _)| id).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.range(0, items.len() as u64) as usize])
    }

    /// Carries out every pending Ready, in the order the Ready documents; each node's pending
    /// writes reach its disk with chance `persist_chance` per round (all of them when 1.0).
    fn process(&mut self, crash_chance: f64, persist_chance: f64) {
        loop {
            let mut progressed = false;
            for id in self.live() {
                if self.rng.chance(persist_chance) && self.persist_some(id, persist_chance >= 1.0) {
                    progressed = true;
                }
                let node = self.nodes.get_mut(&id).expect("node");
                let Some(core) = node.core.as_mut() else { continue };
                if !core.has_ready() {
                    continue;
                }
                progressed = true;
                let ready = core.ready();
                if self.rng.chance(crash_chance) {
                    // Crash with this Ready and every write not yet on the disk lost.
                    self.crash(id);
                    continue;
                }
                self.handle_ready(id, ready);
                self.trim(id);
            }
            if !progressed {
                return;
            }
        }
    }

    fn crash(&mut self, id: u64) {
        self.stats.crashes += 1;
        let node = self.nodes.get_mut(&id).expect("node");
        node.core = None;
        node.pending.clear();
        node.apply_ceiling = None;
    }

    /// Moves the oldest pending writes of `id` (all, or a random number of them) to its disk and
    /// tells its core; returns whether any moved.
    fn persist_some(&mut self, id: u64, all: bool) -> bool {
        let len = self.nodes[&id].pending.len() as u64;
        if len == 0 {
            return false;
        }
        let count = if all { len } else { self.rng.range(1, len + 1) };
        let node = self.nodes.get_mut(&id).expect("node");
        let mut last = 0;
        for write in node.pending.drain(..count as usize) {
            last = last.max(write.number);
            node.disk.persist(write);
        }
        if let Some(core) = node.core.as_mut().filter(|_| last > 0) {
            core.on_persisted(last);
        }
        true
    }

    fn handle_ready(&mut self, id: u64, ready: Ready) {
        if let Some(role) = ready.role {
            if role.role == Role::Leader {
                self.check_leader_completeness(id);
            }
        }
        let node = self.nodes.get_mut(&id).expect("node");
        if ready.must_persist() {
            node.pending.push(Write {
                number: ready.number,
                snapshot: ready
                    .snapshot
                    .as_ref()
                    .map(|s| (s.meta, decode_state(&s.data), decode_membership(&s.data))),
                compact: None,
                entries: ready.entries.clone(),
                hard_state: ready.hard_state,
            });
        }
        // Whatever a message says, it says in its term: no message leaves before its sender's
        // disk holds that term (a sole voter wins without asking anyone, so nothing else orders
        // its new term's write before its first appends). Pre-votes and their answers carry a
        // term nobody has taken yet.
        let durable_term = node.disk.hard_state.term;
        let pre_vote = |m: &Message| {
            matches!(
                m.body,
                MessageBody::Vote { pre_vote: true, .. } | MessageBody::VoteResponse { pre_vote: true, .. }
            )
        };
        if let Some(m) = ready.messages.iter().find(|m| m.term > durable_term && !pre_vote(m)) {
            let what = format!("{:?}", m.body);
            let what = what.split([' ', '{', '(']).next().unwrap_or_default().to_string();
            self.fail(format!(
                "node {id} sent {what} in term {} with only term {durable_term} durable",
                m.term
            ));
        }
        let node = self.nodes.get_mut(&id).expect("node");
        // A leader's snapshot offers are only made from the compacted log, which the disk holds.
        let disk_snapshot = node.disk.image;
        let disk_membership = node.disk.image_membership.clone();
        for m in ready.messages.iter().cloned() {
            if let MessageBody::InstallSnapshot { snapshot } = &m.body {
                assert_eq!(
                    snapshot.meta, disk_snapshot.0,
                    "seed {}: snapshot sent is not the one stored",
                    self.seed
                );
                // The image goes in chunks beside Raft, as in a replica.
                let node = self.nodes.get_mut(&id).expect("node");
                if !node.sender.is_sending(m.to, snapshot.meta) {
                    let image = encode_state(disk_snapshot.1, &disk_membership);
                    let first = node.sender.start(m.to, snapshot.meta, image.len() as u64, image);
                    self.send_chunk(id, m.term, first);
                }
                continue;
            }
            self.send(Packet::Raft(m));
        }
        if let Some(snapshot) = &ready.snapshot {
            self.stats.snapshots_installed += 1;
            let state = decode_state(&snapshot.data);
            if let Some(&h) = self.hash_at.get(&state.0) {
                if h != state.1 {
                    self.fail(format!(
                        "node {id} installed a snapshot at {} with a different state",
                        state.0
                    ));
                }
            }
            let node = self.nodes.get_mut(&id).expect("node");
            node.state = state;
            node.membership = decode_membership(&snapshot.data);
        }
        if let Some(ceiling) = self.nodes[&id].apply_ceiling {
            // Nothing past its driver's ceiling is handed out (a snapshot is not held by it, but
            // the entries after one are).
            if let Some(entry) = ready.committed_entries.iter().find(|e| e.index > ceiling) {
                self.fail(format!(
                    "node {id} handed out entry {} above its apply ceiling {ceiling}",
                    entry.index
                ));
            }
            let committed = self.nodes[&id].core.as_ref().map_or(0, |c| c.log().committed());
            if committed > ceiling {
                self.stats.readies_under_ceiling += 1;
            }
        }
        for entry in &ready.committed_entries {
            self.apply(id, entry);
        }
        // Raft §6.4: a read is served at an index covering everything committed before it
        // began, and only once this node's state has applied that far.
        for read in &ready.read_states {
            let Some(floor) = self.reads.remove(&read.ctx) else {
                self.fail(format!("node {id} served read {} twice or unasked", read.ctx))
            };
            if read.index < floor {
                self.fail(format!(
                    "node {id} served read {} at index {} though {floor} was committed before it began \
                     (or, for a read after writes, appended at its node)",
                    read.ctx, read.index
                ));
            }
            let applied = self.nodes[&id].state.0;
            if applied < read.index {
                self.fail(format!(
                    "node {id} released read {} at {} with only {applied} applied",
                    read.ctx, read.index
                ));
            }
            // A read is served before anything proposed behind it at its node (`propose_after_reads`).
            if let Some(barrier) = self.read_before.remove(&read.ctx) {
                if applied >= barrier {
                    self.fail(format!(
                        "node {id} served read {} with {applied} applied, though entry {barrier} was \
                         proposed after it to follow it",
                        read.ctx
                    ));
                }
                self.stats.reads_before_barrier_served += 1;
            }
            self.read_at.remove(&read.ctx);
            self.stats.reads_served += 1;
            if self.above_commit_reads.remove(&read.ctx) {
                self.stats.reads_above_commit_served += 1;
            }
        }
        for ctx in &ready.dropped_reads {
            self.reads.remove(ctx);
            self.above_commit_reads.remove(ctx);
            self.read_at.remove(ctx);
            self.read_before.remove(ctx);
        }
        // The core put the Ready's configuration entries in force as it handed them out.
        let node = &self.nodes[&id];
        if let Some(core) = node.core.as_ref() {
            if core.membership() != &node.membership {
                self.fail(format!(
                    "node {id}: core membership {:?} differs from its state's {:?}",
                    core.membership(),
                    node.membership
                ));
            }
            self.stats.changes_applied = self.stats.changes_applied.max(core.stats().membership_changes);
        }
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(core) = node.core.as_mut() {
            core.advance(ready);
        }
    }

    fn apply(&mut self, id: u64, entry: &Entry) {
        let state = self.nodes[&id].state;
        if entry.index != state.0 + 1 {
            self.fail(format!("node {id} applied index {} after {}", entry.index, state.0));
        }
        match self.committed.get(&entry.index) {
            Some((term, data)) if (*term, data.as_slice()) != (entry.term, &entry.data[..]) => {
                self.fail(format!("node {id} applied a different entry at {}", entry.index))
            }
            Some(_) => {}
            None => {
                self.committed.insert(entry.index, (entry.term, entry.data.to_vec()));
            }
        }
        let hash = chain(state.1, entry);
        match self.hash_at.get(&entry.index) {
            Some(&h) if h != hash => self.fail(format!("node {id} state diverged at {}", entry.index)),
            Some(_) => {}
            None => {
                self.hash_at.insert(entry.index, hash);
            }
        }
        self.nodes.get_mut(&id).expect("node").state = (entry.index, hash);
        if entry.kind == EntryKind::ConfChange {
            self.apply_conf_change(id, entry);
        }
    }

    /// The state machine's side of a configuration entry, as `StateMachine` does it; checks that
    /// every node reaches the same membership at the same index (so each node's membership
    /// history is a prefix of the longest one).
    fn apply_conf_change(&mut self, id: u64, entry: &Entry) {
        let change: ConfChange = codec::decode(&entry.data).expect("a configuration entry decodes");
        let node = self.nodes.get_mut(&id).expect("node");
        if let Ok(next) = node.membership.apply(&change) {
            node.membership = next;
        }
        let membership = node.membership.clone();
        match self.membership_at.get(&entry.index) {
            Some(m) if *m != membership => self.fail(format!(
                "node {id} reached another membership at {}: {membership:?} vs {m:?}",
                entry.index
            )),
            Some(_) => {}
            None => {
                self.membership_at.insert(entry.index, membership.clone());
            }
        }
    }

    /// Sends the chunk `order` names, cut from the image kept with `from`'s transfer.
    fn send_chunk(&mut self, from: u64, term: u64, order: SendChunk) {
        let Some(image) = self.nodes[&from].sender.payload(order.to) else { return };
        let chunk = order.cut(from, term, image, crc32fast::hash(image));
        self.send(Packet::Chunk(chunk));
    }

    fn send(&mut self, m: Packet) {
        if self.rng.chance(self.faults.drop) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.rng.range(0, self.faults.max_delay_ticks + 1);
            self.network.push((at, m.clone()));
        }
    }

    /// Delivers one random deliverable packet (so packets are reordered).
    fn deliver_one(&mut self) -> bool {
        let ready: Vec<usize> = (0..self.network.len()).filter(|&i| self.network[i].0 <= self.now).collect();
        let Some(i) = self.pick(&ready) else { return false };
        let (_, packet) = self.network.swap_remove(i);
        let (from, to) = packet.ends();
        if self.cut.contains(&(from, to)) || self.nodes[&to].core.is_none() {
            self.stats.dropped += 1;
            return true;
        }
        self.stats.delivered += 1;
        let node = self.nodes.get_mut(&to).expect("node");
        let Some(core) = node.core.as_mut() else { return true };
        let message = match packet {
            Packet::Raft(m) => m,
            Packet::Chunk(chunk) => {
                let (meta, term) = (chunk.meta, chunk.term);
                let outcome = node.receiver.on_chunk(chunk, core.term());
                assert!(!outcome.corrupt, "seed {}: a snapshot image was corrupted in transit", self.seed);
                // As the consensus actor keeps the image's file: begun, appended to, then whole.
                if outcome.start.is_some() {
                    node.receiving.clear();
                }
                if !outcome.append.is_empty()
                    && self.faults.no_room > 0.0
                    && self.rng.chance(self.faults.no_room)
                {
                    // As the consensus actor does when its disk is full: the image dropped, and
                    // no chunk answered for a while.
                    node.receiver.refuse_for(NO_ROOM_PAUSE_TICKS);
                    node.receiving.clear();
                    self.stats.no_room += 1;
                    return true;
                }
                node.receiving.extend_from_slice(&outcome.append);
                if let Some(received) = outcome.ack {
                    self.send(Packet::Ack { from: to, to: from, meta, received });
                }
                let Some(meta) = outcome.complete else { return true };
                let node = self.nodes.get_mut(&to).expect("node");
                let data = std::mem::take(&mut node.receiving);
                // As the consensus actor does: the membership comes out of the image.
                let membership = decode_membership(&data);
                let snapshot = Snapshot { meta, membership, data };
                Message { from, to, term, body: MessageBody::InstallSnapshot { snapshot } }
            }
            Packet::Ack { meta, received, .. } => {
                match node.sender.on_ack(from, meta, received) {
                    AckOutcome::Ignored => {}
                    AckOutcome::Send(order) => {
                        let term = core.term();
                        self.send_chunk(to, term, order);
                    }
                    AckOutcome::Delivered(..) => core.report_snapshot(from, true),
                }
                return true;
            }
        };
        let core = self.nodes.get_mut(&to).and_then(|n| n.core.as_mut()).expect("live");
        // Well-formed messages from members are never refused in a correct cluster... except
        // a second leader's append in the same term, which must not exist: count refusals.
        if let Err(e) = core.step(message) {
            self.fail(format!("a correct peer's message was refused: {e}"));
        }
        true
    }

    fn tick_all(&mut self) {
        self.now += 1;
        let mut resends = Vec::new();
        let stats = &mut self.stats;
        for (&id, node) in self.nodes.iter_mut() {
            let Some(core) = node.core.as_mut() else { continue };
            core.tick();
            if node.receiver.tick() {
                // As the consensus actor drops the file of an image whose sender went quiet.
                node.receiving.clear();
                stats.quiet_images_dropped += 1;
            }
            if core.role() != Role::Leader {
                node.sender.clear();
                continue;
            }
            for order in node.sender.tick() {
                match order {
                    TickOrder::Resend(order) => resends.push((id, core.term(), order)),
                    TickOrder::Abandon(to) => core.report_snapshot(to, false),
                }
            }
        }
        for (id, term, order) in resends {
            self.send_chunk(id, term, order);
        }
    }

    /// Live nodes that believe they lead (more than one while a deposed leader is cut off).
    fn leaders(&self) -> Vec<u64> {
        self.live()
            .into_iter()
            .filter(|id| self.nodes[id].core.as_ref().is_some_and(|c| c.role() == Role::Leader))
            .collect()
    }

    fn propose(&mut self) {
        let leaders = self.leaders();
        let Some(id) = self.pick(&leaders) else { return };
        self.proposals += 1;
        let data = format!("{}-{}", self.seed, self.proposals).into_bytes();
        // Half the proposals stand for a follower's forwarded write: that follower awaits it.
        let forwarded_by = match self.rng.range(0, 2) {
            0 => self.pick(&self.nodes.keys().copied().filter(|&n| n != id).collect::<Vec<_>>()),
            _ => None,
        };
        // A third stand for a pipeline's write behind reads: none of the reads waiting at this
        // node may see it.
        let after_reads = self.rng.range(0, 3) == 0;
        let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) else { return };
        let proposed = if after_reads { core.propose_after_reads(data) } else { core.propose(data) };
        let Ok((index, _)) = proposed else { return };
        if let Some(follower) = forwarded_by {
            core.await_commit(follower, index);
        }
        if after_reads {
            for (ctx, _) in self.read_at.iter().filter(|(_, &node)| node == id) {
                self.read_before.entry(*ctx).or_insert(index);
            }
        }
    }

    /// Starts a read at a node that believes it leads (perhaps a deposed one, cut off).
    fn read(&mut self) {
        let leaders = self.leaders();
        let Some(id) = self.pick(&leaders) else { return };
        let floor = self.nodes.values().filter_map(|n| n.core.as_ref()).map(|c| c.log().committed()).max();
        let floor = floor.unwrap_or(0).max(self.committed.keys().next_back().copied().unwrap_or(0));
        self.next_read += 1;
        let ctx = self.next_read;
        // Half the reads follow a pipeline's writes: they must also cover every entry the node
        // has appended so far.
        let after_appended = self.rng.range(0, 2) == 0;
        if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            let (started, read_floor) = if after_appended {
                (core.read_index_after_appended(ctx), floor.max(core.log().last_index()))
            } else {
                (core.read_index(ctx), floor)
            };
            if started.is_ok() {
                self.reads.insert(ctx, read_floor);
                self.read_at.insert(ctx, id);
                if read_floor > floor {
                    self.above_commit_reads.insert(ctx);
                }
            }
        }
    }

    fn compact(&mut self) {
        let live = self.live();
        if let Some(id) = self.pick(&live) {
            self.compact_node(id);
        }
    }

    fn compact_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(core) = node.core.as_mut() else { return };
        // Everything applied, durable here or not yet: the log compaction is queued behind the
        // writes that hold those entries, as the consensus actor queues it.
        let index = core.log().applied();
        if index <= core.log().snapshot_meta().index || node.state.0 != index {
            return;
        }
        // The applied entry may be trimmed from memory; its term is on record.
        let term = core.log().term(index).or_else(|| self.committed.get(&index).map(|c| c.0));
        let term = term.expect("applied entry's term is known");
        let meta = SnapshotMeta { index, term };
        if meta.index > node.disk.image.0.index {
            node.disk.image = (meta, node.state);
            node.disk.image_membership = node.membership.clone();
        }
        node.pending.push(Write {
            number: 0,
            snapshot: None,
            compact: Some(meta),
            entries: Vec::new(),
            hard_state: None,
        });
        core.compact(meta);
        self.stats.compactions += 1;
    }

    /// What the consensus actor does after a drive: drop from memory what no peer needs, and
    /// take a snapshot when a follower needs entries that went.
    fn trim(&mut self, id: u64) {
        if self.rng.chance(0.3) {
            if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
                if core.trimmable_entries() > 0 {
                    self.stats.trims += 1;
                }
                drop(core.trim_memory());
            }
        }
        let wanted = self.nodes[&id].core.as_ref().is_some_and(|c| c.wants_fresh_snapshot());
        if wanted && self.rng.chance(0.5) {
            self.stats.fresh_snapshots += 1;
            self.compact_node(id);
        }
    }

    /// A random membership change at a random leader: add a new id, promote a learner, remove
    /// a member, or swap a voter through the joint membership. Refusals are part of the test.
    fn change_membership(&mut self) {
        let Some(leader) = self.any_leader() else { return };
        let m = self.nodes[&leader].core.as_ref().expect("leader").membership().clone();
        let fresh: Vec<u64> = (1..=7).filter(|id| !m.contains(*id) && !m.removed.contains(id)).collect();
        let learners: Vec<u64> = m.learners.iter().copied().collect();
        let members = m.ids();
        let voters = m.voter_ids();
        let ops = match self.rng.range(0, 4) {
            0 => self.pick(&fresh).map(|id| vec![ChangeOp::Add { id, addrs: sim_addrs(id) }]),
            1 => self.pick(&learners).map(|id| vec![ChangeOp::Promote { id }]),
            2 => self.pick(&members).map(|id| vec![ChangeOp::Remove { id }]),
            _ => match (self.pick(&learners), self.pick(&voters)) {
                (Some(up), Some(out)) => {
                    Some(vec![ChangeOp::Promote { id: up }, ChangeOp::Remove { id: out }])
                }
                _ => None,
            },
        };
        let Some(ops) = ops else { return };
        let core = self.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()).expect("leader");
        if core.propose_change(ops).is_ok() {
            self.stats.changes_proposed += 1;
        }
    }

    fn transfer(&mut self) {
        let Some(leader) = self.any_leader() else { return };
        let voters = self.nodes[&leader].core.as_ref().expect("leader").membership().voter_ids();
        let Some(to) = self.pick(&voters) else { return };
        let core = self.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()).expect("leader");
        if core.transfer_leader(to).is_ok() {
            self.stats.transfers += 1;
        }
    }

    fn any_leader(&mut self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .live()
            .into_iter()
            .filter(|id| self.nodes[id].core.as_ref().is_some_and(|c| c.role() == Role::Leader))
            .collect();
        self.pick(&leaders)
    }

    fn partition(&mut self) {
        self.cut.clear();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let mut side: BTreeMap<u64, bool> = BTreeMap::new();
        for &id in &ids {
            let b = self.rng.chance(0.5);
            side.insert(id, b);
        }
        for &a in &ids {
            for &b in &ids {
                if side[&a] != side[&b] {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    fn check(&mut self) {
        let mut failures = Vec::new();
        for (&id, node) in self.nodes.iter_mut() {
            let Some(core) = node.core.as_ref() else { continue };
            if core.role() == Role::Leader {
                match self.leaders.get(&core.term()) {
                    Some(&other) if other != id => {
                        failures.push(format!("two leaders in term {}: {other} and {id}", core.term()))
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(core.term(), id);
                    }
                }
            }
            let log = core.log();
            let commit = log.committed();
            self.stats.max_commit = self.stats.max_commit.max(commit);
            for index in (node.checked + 1).max(log.first_index())..=commit {
                let term = log.term(index).expect("committed entry present");
                match self.committed.get(&index) {
                    Some((t, _)) if *t != term => failures
                        .push(format!("node {id}: committed entry {index} changed term {t} -> {term}")),
                    _ => {}
                }
            }
            node.checked = node.checked.max(commit);
        }
        if let Some(f) = failures.into_iter().next() {
            self.fail(f);
        }
    }

    /// Raft §5.4: a new leader's log holds every entry committed so far.
    fn check_leader_completeness(&self, id: u64) {
        let Some(core) = self.nodes[&id].core.as_ref() else { return };
        let first = core.log().first_index();
        for (&index, (term, _)) in self.committed.range(first..) {
            if core.log().term(index) != Some(*term) {
                self.fail(format!("leader {id} of term {} lacks committed entry {index}", core.term()));
            }
        }
    }

    fn chaos_step(&mut self) {
        self.stats.steps += 1;
        let roll = self.rng.range(0, 1000);
        match roll {
            0..=549 => {
                if !self.deliver_one() {
                    self.tick_all();
                }
            }
            550..=799 => self.tick_all(),
            800..=814 if self.dynamic => self.change_membership(),
            815..=817 if self.dynamic => self.transfer(),
            800..=899 => self.propose(),
            900..=919 => self.read(),
            920..=929 => self.toggle_apply_ceiling(),
            930..=936 => {
                let live = self.live();
                if let Some(id) = self.pick(&live) {
                    self.crash(id);
                }
            }
            937..=969 => {
                let down: Vec<u64> =
                    self.nodes.iter().filter(|(_, n)| n.core.is_none()).map(|(&id, _)| id).collect();
                if let Some(id) = self.pick(&down) {
                    self.start(id);
                }
            }
            970..=979 => self.partition(),
            980..=989 => self.cut.clear(),
            _ => self.compact(),
        }
        self.process(0.003, 0.3);
        self.check();
    }

    /// Sets an apply ceiling on a live node a few entries past what it applied (or below it), or
    /// lifts the one it has.
    fn toggle_apply_ceiling(&mut self) {
        let live = self.live();
        let Some(id) = self.pick(&live) else { return };
        let above = self.rng.range(0, 4);
        let node = self.nodes.get_mut(&id).expect("node");
        let ceiling = match node.apply_ceiling {
            Some(_) => None,
            None => Some((node.state.0 + above).saturating_sub(1)),
        };
        node.apply_ceiling = ceiling;
        if let Some(core) = node.core.as_mut() {
            core.set_apply_ceiling(ceiling);
        }
    }

    /// Heals everything and requires a fresh proposal to commit on every node within a bound.
    fn check_liveness(&mut self) {
        for node in self.nodes.values_mut() {
            node.apply_ceiling = None;
            if let Some(core) = node.core.as_mut() {
                core.set_apply_ceiling(None);
            }
        }
        self.cut.clear();
        self.faults = Faults { drop: 0.0, duplicate: 0.0, max_delay_ticks: 1, no_room: 0.0 };
        let down: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.core.is_none()).map(|(&id, _)| id).collect();
        for id in down {
            self.start(id);
        }
        let final_data = format!("final-{}", self.seed).into_bytes();
        // Ten election timeouts of the largest kind: elections, catch-up and commit fit well inside.
        let bound_ticks = 10 * 2 * u64::from(Config::new(1, vec![1]).election_timeout_ticks);
        let start = self.now;
        let mut proposed_at: Option<(u64, u64, u64)> = None;
        while self.now - start <= bound_ticks {
            while self.deliver_one() {
                self.process(0.0, 1.0);
            }
            self.tick_all();
            self.process(0.0, 1.0);
            self.check();
            // (Re)propose at the current leader if the last attempt's term is over.
            let leader = self
                .live()
                .into_iter()
                .find(|id| self.nodes[id].core.as_ref().is_some_and(|c| c.role() == Role::Leader));
            if let Some(id) = leader {
                let core = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()).expect("leader");
                let stale = proposed_at.is_none_or(|(_, term, lid)| term != core.term() || lid != id);
                if stale {
                    if let Ok((index, term)) = core.propose(final_data.clone()) {
                        proposed_at = Some((index, term, id));
                    }
                }
            }
            if let Some((index, term, lid)) = proposed_at {
                // Every member must apply it (ids never added, or removed, never hear of it).
                let members =
                    self.nodes[&lid].core.as_ref().map(|c| c.membership().ids()).unwrap_or_default();
                let done = members.iter().all(|id| self.nodes[id].state.0 >= index)
                    && self.committed.get(&index).is_some_and(|(t, d)| *t == term && *d == final_data);
                if done {
                    return;
                }
            }
        }
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.core.as_ref().map(|c| (id, c)))
            .map(|(id, c)| {
                let m = c.membership();
                format!(
                    "{id}: {:?} term {} leader {} vote {} last {}@{} commit {} applied {} voters {:?} outgoing {:?} learners {:?}",
                    c.role(),
                    c.term(),
                    c.leader(),
                    c.hard_state().vote,
                    c.log().last_index(),
                    c.log().last_term(),
                    c.log().committed(),
                    c.log().applied(),
                    m.voters,
                    m.outgoing,
                    m.learners
                )
            })
            .collect();
        self.fail(format!(
            "no progress within {bound_ticks} ticks after healing (proposal {proposed_at:?}); nodes: {}",
            nodes.join("; ")
        ));
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn sim_addrs(id: u64) -> MemberAddrs {
    MemberAddrs { peer_addr: format!("sim:{id}"), client_addr: format!("sim:{id}") }
}

fn run(n: u64, base_seed: u64) {
    run_with(n, base_seed, false);
}

fn run_with(n: u64, base_seed: u64, dynamic: bool) {
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("SIM_SEEDS").unwrap_or(200)).map(|i| base_seed + i).collect(),
    };
    let steps = env_u64("SIM_STEPS").unwrap_or(5000);
    let mut total = SimStats::default();
    for seed in &seeds {
        let mut sim = Sim::new(*seed, n, dynamic);
        for _ in 0..steps {
            sim.chaos_step();
        }
        sim.check_liveness();
        let s = sim.stats;
        total.steps += s.steps;
        total.delivered += s.delivered;
        total.dropped += s.dropped;
        total.crashes += s.crashes;
        total.compactions += s.compactions;
        total.trims += s.trims;
        total.fresh_snapshots += s.fresh_snapshots;
        total.snapshots_installed += s.snapshots_installed;
        total.no_room += s.no_room;
        total.quiet_images_dropped += s.quiet_images_dropped;
        total.max_commit = total.max_commit.max(s.max_commit);
        total.changes_proposed += s.changes_proposed;
        total.changes_applied += s.changes_applied;
        total.transfers += s.transfers;
        total.reads_served += s.reads_served;
        total.reads_above_commit_served += s.reads_above_commit_served;
        total.reads_before_barrier_served += s.reads_before_barrier_served;
        total.readies_under_ceiling += s.readies_under_ceiling;
    }
    assert!(total.readies_under_ceiling > 0, "no apply ceiling ever held a committed entry back");
    assert!(
        total.reads_served > 0
            && total.reads_above_commit_served > 0
            && total.reads_before_barrier_served > 0,
        "the chaos served no read, none that had to follow uncommitted entries, or none that an \
         entry proposed behind it waited for: the read checks saw nothing"
    );
    assert!(
        total.snapshots_installed > 0 && total.no_room > 0 && total.quiet_images_dropped > 0,
        "the chaos never installed a snapshot, never had a follower without room for one, or never \
         left one with half an image"
    );
    assert!(
        total.trims > 0 && total.fresh_snapshots > 0,
        "the chaos never trimmed or never needed a fresh snapshot"
    );
    println!("{n} nodes, {} seeds from {base_seed}, {steps} chaos steps each: {total:?}", seeds.len());
}

#[test]
fn three_node_cluster_stays_safe_and_live() {
    run(3, 1_000);
}

#[test]
fn five_node_cluster_stays_safe_and_live() {
    run(5, 2_000);
}

#[test]
fn membership_changes_stay_safe_and_live() {
    run_with(3, 3_000, true);
}

// The grow path from one voter: a sole voter wins its elections without asking anyone, so the
// order of its term's durability and its first messages to learners matters here.
#[test]
fn growing_from_one_voter_stays_safe_and_live() {
    run_with(1, 4_000, true);
}
