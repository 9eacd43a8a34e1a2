//! An in-memory network for tests: the same consensus actors, with frames delayed, dropped,
//! duplicated and reordered under a seed, and directed links that can be cut.
//!
//! Every member gets a [`SimTransport`] from one shared [`SimNetwork`]; the network delivers a
//! frame to the member's consensus actor after a random delay (so frames reorder). A member not
//! registered (crashed) gets nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;

use super::consensus::Inbound;
use super::transport::Transport;
use crate::protocol::peer_wire::{ForwardAnswer, PeerFrame};
use crate::protocol::raft::{MessageBody, NodeId};
use crate::protocol::rng::Rng;

/// How the network treats each frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimFaults {
    /// Probability that a frame is lost.
    pub drop: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Longest delay of a frame; each gets a uniform delay in [0, this].
    pub max_delay_ms: u64,
}

impl SimFaults {
    /// A reliable network with small random delays (still reordering).
    pub fn reliable() -> SimFaults {
        SimFaults { drop: 0.0, duplicate: 0.0, max_delay_ms: 2 }
    }

    /// The classic labs' unreliable network: about 10 % lost, some duplicated, 0-27 ms delays.
    pub fn unreliable() -> SimFaults {
        SimFaults { drop: 0.1, duplicate: 0.02, max_delay_ms: 27 }
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Frames handed to a member.
    pub delivered: u64,
    /// Frames lost to faults, cut links or absent members.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Heartbeat messages sent (to tell whether commits wait for them).
    pub heartbeats: u64,
}

struct NetState {
    rng: Rng,
    faults: SimFaults,
    members: BTreeMap<NodeId, Recipient<Inbound>>,
    /// Cut directed links (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Which of the leaders' answers to forwarded requests are held back (not lost).
    hold_answers: HeldAnswers,
    held: Vec<PeerFrame>,
    stats: SimStats,
}

/// Which answers to forwarded requests the network holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeldAnswers {
    None,
    All,
    /// Only [`ForwardAnswer::Proposed`].
    Writes,
}

/// The shared network; clone it freely.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
}

impl SimNetwork {
    /// A network whose every random choice comes from `seed`.
    pub fn new(seed: u64, faults: SimFaults) -> SimNetwork {
        let state = NetState {
            rng: Rng::new(seed),
            faults,
            members: BTreeMap::new(),
            cut: BTreeSet::new(),
            hold_answers: HeldAnswers::None,
            held: Vec::new(),
            stats: SimStats::default(),
        };
        SimNetwork { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport member `id` sends through.
    pub fn transport(&self, id: NodeId) -> SimTransport {
        SimTransport { id, network: self.clone() }
    }

    /// Delivers frames for `id` to `consensus` from now on.
    pub fn register(&self, id: NodeId, consensus: Recipient<Inbound>) {
        self.lock().members.insert(id, consensus);
    }

    /// Stops delivering to `id` (it crashed).
    pub fn unregister(&self, id: NodeId) {
        self.lock().members.remove(&id);
    }

    /// Changes how frames are treated.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// Cuts the network into `groups`: frames pass only within a group.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut state = self.lock();
        state.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            state.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts the directed link from `from` to `to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Holds back every answer a leader sends to a forwarded request until
    /// [`release_forward_answers`](SimNetwork::release_forward_answers): the slow reply path
    /// that lets a follower apply a forwarded entry before it learns where the entry went.
    pub fn hold_forward_answers(&self) {
        self.lock().hold_answers = HeldAnswers::All;
    }

    /// Holds back only the answers that give a forwarded write its index, until
    /// [`release_forward_answers`](SimNetwork::release_forward_answers): a follower learns read
    /// indexes (and applies entries) before it learns where the writes before them went.
    pub fn hold_write_answers(&self) {
        self.lock().hold_answers = HeldAnswers::Writes;
    }

    /// Delivers the held answers and stops holding; returns how many there were.
    pub fn release_forward_answers(&self) -> usize {
        let held = {
            let mut state = self.lock();
            state.hold_answers = HeldAnswers::None;
            std::mem::take(&mut state.held)
        };
        let count = held.len();
        for frame in held {
            self.deliver(frame);
        }
        count
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// What the network has done so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    fn send(&self, frame: PeerFrame) {
        let (from, to) = (frame.from(), frame.to());
        let mut state = self.lock();
        if matches!(&frame, PeerFrame::Raft(m) if matches!(m.body, MessageBody::Heartbeat { .. })) {
            state.stats.heartbeats += 1;
        }
        let held = match (&state.hold_answers, &frame) {
            (HeldAnswers::All, PeerFrame::ForwardAnswer { .. }) => true,
            (HeldAnswers::Writes, PeerFrame::ForwardAnswer { answer, .. }) => {
                matches!(answer, ForwardAnswer::Proposed { .. })
            }
            _ => false,
        };
        if held {
            state.held.push(frame);
            return;
        }
        let faults = state.faults;
        if state.cut.contains(&(from, to))
            || !state.members.contains_key(&to)
            || state.rng.chance(faults.drop)
        {
            state.stats.dropped += 1;
            return;
        }
        let copies = if state.rng.chance(faults.duplicate) { 2 } else { 1 };
        state.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = Duration::from_millis(state.rng.range(0, faults.max_delay_ms + 1));
            let network = self.clone();
            let frame = frame.clone();
            actix::spawn(async move {
                if !delay.is_zero() {
                    actix_rt::time::sleep(delay).await;
                }
                network.deliver(frame);
            });
        }
    }

    fn deliver(&self, frame: PeerFrame) {
        let (from, to) = (frame.from(), frame.to());
        let mut state = self.lock();
        // A link cut while the frame was in flight loses it too.
        match state.members.get(&to) {
            Some(consensus) if !state.cut.contains(&(from, to)) => {
                consensus.do_send(Inbound(frame));
                state.stats.delivered += 1;
            }
            _ => state.stats.dropped += 1,
        }
    }
}

/// One member's view of the simulated network.
pub struct SimTransport {
    id: NodeId,
    network: SimNetwork,
}

impl Transport for SimTransport {
    fn send(&mut self, frame: PeerFrame) {
        debug_assert_eq!(frame.from(), self.id, "a member sends only its own frames");
        self.network.send(frame);
    }
}
