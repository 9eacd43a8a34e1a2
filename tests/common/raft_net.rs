//! A synchronous, in-memory network of Raft cores for message-by-message tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use quorumkv::protocol::raft::{Config, Entry, HardState, Message, RaftCore, Ready, SnapshotMeta};

/// A core with the options the paper tests want (pre-vote and check-quorum off unless asked).
pub fn core(id: u64, members: &[u64], pre_vote: bool, check_quorum: bool) -> RaftCore {
    core_with_log(id, members, pre_vote, check_quorum, HardState::default(), Vec::new())
}

/// A core recovered with `hard_state` and `entries` (terms given; indexes from 1).
pub fn core_with_log(
    id: u64,
    members: &[u64],
    pre_vote: bool,
    check_quorum: bool,
    hard_state: HardState,
    entries: Vec<Entry>,
) -> RaftCore {
    RaftCore::new(
        paper_config(id, members, pre_vote, check_quorum),
        hard_state,
        SnapshotMeta::default(),
        entries,
    )
}

/// The config of [`core`], for a test that changes a field before making its cores.
pub fn paper_config(id: u64, members: &[u64], pre_vote: bool, check_quorum: bool) -> Config {
    let mut config = Config::new(id, members.to_vec());
    config.pre_vote = pre_vote;
    config.check_quorum = check_quorum;
    config.seed = id * 7919;
    config
}

/// Entries with the given terms at indexes 1, 2, ...
pub fn entries_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| Entry { term, index: i as u64 + 1, data: vec![i as u8].into(), ..Entry::default() })
        .collect()
}

/// Runs every pending Ready of `core`, each write durable at once (nothing is stored), returning
/// the messages and the readies.
pub fn drain(core: &mut RaftCore) -> (Vec<Message>, Vec<Ready>) {
    let mut messages = Vec::new();
    let mut readies = Vec::new();
    while core.has_ready() {
        let ready = core.ready();
        messages.extend(ready.messages.iter().cloned());
        let number = ready.number;
        core.advance(ready.clone());
        if number > 0 {
            core.on_persisted(number);
        }
        readies.push(ready);
    }
    (messages, readies)
}

/// Cores connected by a lossless network whose directed links can be cut.
pub struct Net {
    /// The cores by id.
    pub nodes: BTreeMap<u64, RaftCore>,
    /// Messages sent and not yet delivered.
    pub queue: VecDeque<Message>,
    /// Cut directed links (from, to).
    pub cut: BTreeSet<(u64, u64)>,
    /// Every committed entry each node handed out, in order.
    pub applied: BTreeMap<u64, Vec<Entry>>,
    /// Every message delivered, for counting round trips.
    pub delivered: Vec<Message>,
    /// Read tokens released by each node.
    pub reads: BTreeMap<u64, Vec<u64>>,
}

impl Net {
    /// `n` cores with ids 1..=n.
    pub fn new(n: u64, pre_vote: bool, check_quorum: bool) -> Net {
        let members: Vec<u64> = (1..=n).collect();
        let nodes = members.iter().map(|&id| (id, core(id, &members, pre_vote, check_quorum))).collect();
        Net::from_nodes(nodes)
    }

    /// A network of the given cores.
    pub fn from_nodes(nodes: BTreeMap<u64, RaftCore>) -> Net {
        Net {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            delivered: Vec::new(),
            reads: BTreeMap::new(),
        }
    }

    /// The core with id `id`.
    pub fn node(&mut self, id: u64) -> &mut RaftCore {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Collects every node's Ready output into the queue.
    pub fn flush(&mut self) {
        for (&id, core) in self.nodes.iter_mut() {
            let (messages, readies) = drain(core);
            for ready in readies {
                self.reads.entry(id).or_default().extend(ready.read_states.iter().map(|r| r.ctx));
                self.applied.entry(id).or_default().extend(ready.committed_entries);
            }
            self.queue.extend(messages);
        }
    }

    /// Delivers one queued message (the oldest), if any; returns whether one was.
    pub fn deliver_one(&mut self) -> bool {
        self.flush();
        let Some(m) = self.queue.pop_front() else { return false };
        if !self.cut.contains(&(m.from, m.to)) {
            if let Some(core) = self.nodes.get_mut(&m.to) {
                self.delivered.push(m.clone());
                let _ = core.step(m);
            }
        }
        true
    }

    /// Delivers messages until nothing is left to say.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            self.flush();
            let Some(m) = self.queue.pop_front() else { return };
            if self.cut.contains(&(m.from, m.to)) {
                continue;
            }
            if let Some(core) = self.nodes.get_mut(&m.to) {
                self.delivered.push(m.clone());
                let _ = core.step(m);
            }
        }
        panic!("network did not stabilize");
    }

    /// Ticks node `id` `n` times, then stabilizes.
    pub fn tick(&mut self, id: u64, n: u32) {
        for _ in 0..n {
            self.node(id).tick();
        }
        self.stabilize();
    }

    /// Makes node `id` campaign now (ticks it past any election timeout) and stabilizes.
    pub fn campaign(&mut self, id: u64) {
        let before = (self.node(id).role(), self.node(id).term());
        for _ in 0..1000 {
            self.node(id).tick();
            if (self.node(id).role(), self.node(id).term()) != before {
                break;
            }
        }
        self.stabilize();
    }

    /// Cuts every link between `id` and the others, both ways.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for other in ids.into_iter().filter(|&o| o != id) {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
