//! The Raft state machine: elections, replication, commitment and reads, with no I/O.
//!
//! The caller drives it with [`RaftCore::tick`] (a logical clock), [`RaftCore::step`] (a message
//! from a peer), [`RaftCore::propose`] and [`RaftCore::read_index`], and carries out what each
//! [`Ready`] asks before calling [`RaftCore::advance`]; it reports each Ready's write durable
//! with [`RaftCore::on_persisted`], which releases the messages that were waiting for it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::log::{Compacted, RaftLog};
use super::membership::{ChangeOp, ConfChange, Membership, MembershipError, VoteResult};
use super::message::{Entry, EntryKind, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use super::progress::{Progress, ProgressState};
use super::read_index::ReadQueue;
use super::ready::{Ready, Role, RoleState};
use crate::protocol::codec;
use crate::protocol::rng::Rng;

/// Settings of one Raft node. Times are in ticks of the caller's clock.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The voters when no membership is recorded (see [`RaftCore::new`]).
    pub members: Vec<NodeId>,
    /// Minimum election timeout; each timeout is drawn from `[this, 2 * this)`.
    pub election_timeout_ticks: u32,
    /// Interval between a leader's heartbeats. < election_timeout_ticks.
    pub heartbeat_ticks: u32,
    /// Appends in flight to one follower before the leader waits for acknowledgements.
    pub max_inflight_appends: usize,
    /// Bytes of entries in one append message (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// Bytes of committed entries handed out in one `Ready` (at least one).
    pub max_apply_bytes: usize,
    /// Proposals accepted beyond the commit index before `propose` answers `Busy`.
    pub max_uncommitted_entries: u64,
    /// Bytes of entries beyond the commit index before `propose` answers `Busy` (one entry is
    /// always accepted), which bounds what one `Ready` writes and what is in flight to followers.
    pub max_uncommitted_bytes: usize,
    /// Run a pre-vote round before a real election (Raft §9.6).
    pub pre_vote: bool,
    /// A leader steps down if a quorum has not answered within an election timeout; a node
    /// that hears from a leader ignores votes for that long (Raft §6.2, §4.2.3).
    pub check_quorum: bool,
    /// A learner is promoted only if the leader replicates to it in step and its log is at most
    /// this many entries behind the leader's.
    pub max_promote_lag: u64,
    /// Applied entries a follower keeps in memory below its applied mark (a leader keeps what
    /// its followers have not acknowledged): should it lead, the followers a little behind it
    /// get entries rather than a snapshot.
    pub retained_entries: u64,
    /// Seed of the RNG that draws election timeouts.
    pub seed: u64,
}

impl Config {
    /// Sensible defaults for `id` in a cluster of `members`.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            id,
            members,
            election_timeout_ticks: 10,
            heartbeat_ticks: 2,
            max_inflight_appends: 256,
            max_append_bytes: 1 << 20,
            max_apply_bytes: 4 << 20,
            max_uncommitted_entries: 100_000,
            max_uncommitted_bytes: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            max_promote_lag: DEFAULT_MAX_PROMOTE_LAG,
            retained_entries: DEFAULT_RETAINED_ENTRIES,
            seed: id,
        }
    }

    /// Checks the settings; an error names the first thing wrong.
    pub fn validate(&self) -> Result<(), String> {
        let unique: BTreeSet<_> = self.members.iter().collect();
        if unique.len() != self.members.len() || self.members.contains(&0) {
            return Err("members must be unique and non-zero".into());
        }
        if self.id == 0 {
            return Err("id must be non-zero".into());
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_timeout_ticks {
            return Err("need 0 < heartbeat_ticks < election_timeout_ticks".into());
        }
        if self.max_inflight_appends == 0 || self.max_uncommitted_entries == 0 {
            return Err("max_inflight_appends and max_uncommitted_entries must be positive".into());
        }
        Ok(())
    }
}

/// Entries a learner may trail the leader's log by and still be promoted.
pub const DEFAULT_MAX_PROMOTE_LAG: u64 = 1000;

/// Default of [`Config::retained_entries`]: two chunks of the log's deque.
pub const DEFAULT_RETAINED_ENTRIES: u64 = 8192;

/// Why a proposal or read was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows (0 if none).
    #[error("not the leader (leader is {leader})")]
    NotLeader {
        /// The known leader, 0 if none.
        leader: NodeId,
    },
    /// Too many proposals are waiting to commit.
    #[error("too many uncommitted entries")]
    Busy,
    /// The leader is handing leadership over and takes no proposals meanwhile.
    #[error("leadership transfer in progress")]
    Transferring,
}

/// Why a membership change was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Not the leader, busy, or transferring: as for any proposal.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The change breaks a membership rule (or another is in progress).
    #[error(transparent)]
    Refused(#[from] MembershipError),
    /// A learner to promote is too far behind: it could not vote usefully yet.
    #[error("{id} has not caught up ({behind} entries behind the leader)")]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// How far its log trails the leader's.
        behind: u64,
    },
}

/// Why a leader transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// This node is not the leader; `leader` is the one it knows (0 if none).
    #[error("not the leader (leader is {leader})")]
    NotLeader {
        /// The known leader, 0 if none.
        leader: NodeId,
    },
    /// The target already leads.
    #[error("{0} is already the leader")]
    ToSelf(NodeId),
    /// The target cannot lead: a learner, or not a member.
    #[error("{0} is not a voter")]
    NotVoter(NodeId),
}

/// Why a message from a peer was refused. Every refusal is also counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The sender is not a member, or claims to be this node.
    #[error("message from unknown sender {0}")]
    UnknownSender(NodeId),
    /// The message is addressed to another node.
    #[error("message addressed to {0}")]
    WrongRecipient(NodeId),
    /// The message breaks a protocol rule (out-of-range index, inconsistent entries, ...).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Counters of what the core saw; for INFO and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages refused by `step` as invalid.
    pub invalid_messages: u64,
    /// Elections started (real, not pre-vote).
    pub elections: u64,
    /// Membership changes applied (bootstrap, changes and leaving joint).
    pub membership_changes: u64,
}

/// One Raft node's state.
pub struct RaftCore {
    config: Config,
    /// Latest term seen. Never decreases.
    term: u64,
    /// Vote in `term`, 0 if none.
    vote: NodeId,
    role: Role,
    /// Known leader of `term`, 0 if none.
    leader: NodeId,
    log: RaftLog,
    /// The membership at the applied index (configurations take effect when applied).
    membership: Membership,
    /// The membership changed since the last Ready.
    membership_changed: bool,
    /// A leader accepts no membership change until it has applied this index: its last
    /// change's entry, or on election its no-op (so it has committed in its own term first).
    pending_conf_index: u64,
    /// The index of the no-op this replica appended when it last became leader.
    noop_index: u64,
    /// The voter leadership is being handed to, and the ticks since that began.
    lead_transferee: Option<(NodeId, u32)>,
    /// This leader was removed and hands leadership over until a newer term takes it.
    handing_over: bool,
    /// Transfers this removed leader has started, which picks the next successor in turn.
    hand_over_tries: usize,
    /// The successors in the order the first hand-over ranked them (most caught up first).
    hand_over_order: Vec<NodeId>,
    /// A leader's `TimeoutNow` (its term, its id, ticks left) taken while a committed membership
    /// change was unapplied here: acted on once it is, if that leader still leads and within an
    /// election timeout (the leader gives the transfer up after one, and re-sends it while live).
    deferred_transfer: Option<(u64, NodeId, u32)>,
    /// Members just removed, still sent heartbeats for the given ticks so they learn it.
    leaving: BTreeMap<NodeId, u32>,
    /// The leader's view of each other member (and of `leaving` ones); empty unless leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)campaign: true = granted.
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election reset (or, for a leader, since the last quorum check).
    election_elapsed: u32,
    /// Ticks since the leader's last heartbeat.
    heartbeat_elapsed: u32,
    /// This term's election timeout, drawn from [timeout, 2 * timeout).
    randomized_timeout: u32,
    rng: Rng,
    reads: ReadQueue,
    /// Entries proposed after reads still waiting, each with the last of those reads' place in
    /// the read queue: nothing from that index on is handed out to be applied until they are
    /// served, so none of them sees it. In index order.
    apply_barriers: VecDeque<(u64, u64)>,
    /// The last index that may be handed out to be applied, if its driver set one (a follower
    /// holding entries behind reads it forwarded: see [`Self::set_apply_ceiling`]).
    apply_ceiling: Option<u64>,
    /// Reads that lost their leader, to report in the next Ready.
    dropped_reads: Vec<u64>,
    /// Messages produced since the last Ready.
    messages: Vec<Message>,
    /// Writes handed out in Readies and not yet reported durable, oldest first.
    pending_writes: VecDeque<PendingWrite>,
    /// Messages whose writes are now durable: they leave with the next Ready.
    released: Vec<Message>,
    /// The number of the last Ready that had something to write.
    last_write: u64,
    /// A snapshot received and not yet handed out.
    pending_snapshot: Option<Snapshot>,
    /// The leader has new entries or a new commit to broadcast at the next Ready.
    broadcast_wanted: bool,
    /// A follower needs entries trimmed from memory: a snapshot newer than them is wanted.
    fresh_snapshot_wanted: bool,
    /// The hard state as last handed out to be written.
    written_hard_state: HardState,
    /// The highest term storage has confirmed durable (in a hard state written and persisted).
    durable_term: u64,
    /// The role state as last handed out.
    reported_role: Option<RoleState>,
    /// A Ready is out and not yet advanced.
    ready_in_flight: bool,
    stats: Stats,
}

impl RaftCore {
    /// A node recovered from storage whose membership at the snapshot is `config.members`, all
    /// voters (a cluster whose log records no membership).
    ///
    /// Panics if the config is invalid (a programming error, checked at start-up).
    pub fn new(
        config: Config,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
    ) -> RaftCore {
        let membership = Membership::from_voters(config.members.iter().copied());
        RaftCore::restore(config, hard_state, snapshot, membership, entries)
    }

    /// A node recovered from storage: its hard state, snapshot position, the membership at the
    /// snapshot (empty if none is known yet, as for a joining replica), and the entries after it.
    ///
    /// Membership changes in `entries` take effect as they are applied again.
    pub fn restore(
        config: Config,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        membership: Membership,
        entries: Vec<Entry>,
    ) -> RaftCore {
        if let Err(e) = config.validate() {
            panic!("invalid raft config: {e}");
        }
        // An image taken in, or entries written, in a term whose hard state never reached the
        // disk (they are written apart): that term was seen, so the node never starts below it.
        // It cast no vote there (a vote is on disk before it is sent); the raised term is
        // written with the next hard state.
        let seen = snapshot.term.max(entries.last().map_or(0, |e| e.term));
        let (term, vote) =
            if hard_state.term < seen { (seen, 0) } else { (hard_state.term, hard_state.vote) };
        let log = RaftLog::restore(snapshot, entries, hard_state.commit);
        let mut core = RaftCore {
            membership,
            membership_changed: true,
            pending_conf_index: 0,
            noop_index: 0,
            lead_transferee: None,
            handing_over: false,
            hand_over_tries: 0,
            hand_over_order: Vec::new(),
            deferred_transfer: None,
            leaving: BTreeMap::new(),
            rng: Rng::new(config.seed),
            config,
            term,
            vote,
            role: Role::Follower,
            leader: 0,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            reads: ReadQueue::default(),
            apply_barriers: VecDeque::new(),
            apply_ceiling: None,
            dropped_reads: Vec::new(),
            messages: Vec::new(),
            pending_writes: VecDeque::new(),
            released: Vec::new(),
            last_write: 0,
            pending_snapshot: None,
            broadcast_wanted: false,
            fresh_snapshot_wanted: false,
            written_hard_state: hard_state,
            durable_term: hard_state.term,
            reported_role: None,
            ready_in_flight: false,
            stats: Stats::default(),
        };
        core.written_hard_state.commit = core.log.committed();
        core.reset_election_timer();
        core
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader known for the current term, 0 if none.
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    /// The log, read-only.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The current hard state.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads waiting for confirmation or apply (for bounding them from outside).
    pub fn pending_reads(&self) -> usize {
        self.reads.len()
    }

    /// The membership in force (the one at the applied index).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Everyone this node may send to as leader: members of any set and just-removed ones.
    pub fn replication_targets(&self) -> Vec<NodeId> {
        let mut ids = self.membership.ids();
        ids.extend(self.leaving.keys());
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|&id| id != self.config.id);
        ids
    }

    /// The voter leadership is being handed to, if a transfer is under way.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee.map(|(id, _)| id)
    }

    /// The match index the leader knows for `id` (None unless leader and `id` is replicated to).
    pub fn matched(&self, id: NodeId) -> Option<u64> {
        self.progress.get(&id).map(|p| p.matched)
    }

    fn voter_peers(&self) -> Vec<NodeId> {
        self.membership.voter_ids().into_iter().filter(|&m| m != self.config.id).collect()
    }

    fn peers(&self) -> Vec<NodeId> {
        self.progress.keys().copied().collect()
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let t = u64::from(self.config.election_timeout_ticks);
        self.randomized_timeout = self.rng.range(t, 2 * t) as u32;
    }

    fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.messages.push(Message { from: self.config.id, to, term, body });
    }

    // ----- the clock -----

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            if let Some((term, from, ticks_left)) = self.deferred_transfer.take() {
                let live =
                    term == self.term && self.leader == from && self.membership.is_voter(self.config.id);
                if live && ticks_left > 0 {
                    if !self.has_unapplied_conf_change() {
                        log::info!("raft {}: leader {from} hands over; campaigning now", self.config.id);
                        return self.campaign(false, true);
                    }
                    self.deferred_transfer = Some((term, from, ticks_left - 1));
                }
            }
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_timeout {
                if self.has_unapplied_conf_change() {
                    // It would campaign with a membership the cluster has left (thesis §4.1:
                    // a change committed counts before this node applies it). Once applied, the
                    // timer, left run out, starts a campaign at the next tick.
                    self.election_elapsed = self.randomized_timeout;
                } else if self.membership.is_voter(self.config.id)
                    || self.membership.removed.contains(&self.config.id)
                {
                    // A removed node campaigns too, counting only the current voters: it may be
                    // the one whose log the others need (a removed leader that crashed before
                    // handing over), and then it wins, catches them up and hands over.
                    self.campaign(self.config.pre_vote, false);
                } else {
                    // Learners, removed members and replicas that know no membership yet never
                    // campaign. The timer is left to run out, not reset: it is also the lease in
                    // which this node ignores vote requests, and that must end too.
                    self.election_elapsed = self.randomized_timeout;
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                // Raft §6.2: a leader cut off from a quorum steps down, so clients go elsewhere.
                let (me, progress) = (self.config.id, &self.progress);
                let active = |id| id == me || progress.get(&id).is_some_and(|p| p.recent_active);
                if !self.membership.has_quorum(active) {
                    log::info!(
                        "raft {}: check-quorum failed in term {}, stepping down",
                        self.config.id,
                        self.term
                    );
                    self.become_follower(self.term, 0);
                    return;
                }
                self.progress.values_mut().for_each(|p| p.recent_active = false);
            }
        }
        if let Some((to, elapsed)) = self.lead_transferee.as_mut() {
            *elapsed += 1;
            if *elapsed >= self.config.election_timeout_ticks {
                // Thesis §3.10: a transfer that does not finish within an election timeout is
                // abandoned, and the leader takes proposals again.
                log::info!("raft {}: leader transfer to {to} timed out", self.config.id);
                self.lead_transferee = None;
            }
        }
        if self.handing_over && self.lead_transferee.is_none() {
            self.hand_over();
        }
        self.leaving.retain(|_, ticks| {
            *ticks = ticks.saturating_sub(1);
            *ticks > 0
        });
        let (membership, leaving) = (&self.membership, &self.leaving);
        self.progress.retain(|id, _| membership.contains(*id) || leaving.contains_key(id));
        // Lost appends: pipelined appends unanswered for an election timeout are resent from the
        // match point, and so is a snapshot that got no answer for twice that.
        let (append_timeout, snapshot_timeout) =
            (self.config.election_timeout_ticks, self.config.election_timeout_ticks * 2);
        for pr in self.progress.values_mut() {
            match pr.state {
                ProgressState::Snapshot { .. } => {
                    pr.stalled_ticks += 1;
                    if pr.stalled_ticks >= snapshot_timeout {
                        pr.become_probe();
                    }
                }
                ProgressState::Replicate if !pr.inflight.is_empty() => {
                    pr.stalled_ticks += 1;
                    if pr.stalled_ticks >= append_timeout {
                        pr.become_probe();
                    }
                }
                _ => pr.stalled_ticks = 0,
            }
        }
        // A read round that waited too long on the quorum it was sent to goes to everyone.
        let round_overdue = self.reads.tick();
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks || round_overdue {
            self.heartbeat_elapsed = 0;
            // Every heartbeat carries the latest read round, so a lost round is confirmed by the next.
            let round = self.reads.round();
            self.broadcast_heartbeat(round);
        }
    }

    // ----- role changes -----

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        assert!(term >= self.term, "term went back from {} to {term}", self.term);
        if term > self.term {
            self.term = term;
            self.vote = 0;
        }
        if self.role == Role::Leader {
            self.lift_barriers();
            let dropped = if self.apply_barriers.is_empty() {
                self.reads.drop_unsettled(self.log.committed())
            } else {
                // The barriers' entries may yet be applied here, by a snapshot at once: reads
                // that must not see them are failed, not served.
                self.apply_barriers.clear();
                self.reads.drop_all()
            };
            self.dropped_reads.extend(dropped);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.lead_transferee = None;
        self.handing_over = false;
        self.hand_over_tries = 0;
        self.hand_over_order.clear();
        self.leaving.clear();
        self.progress.clear();
        self.votes.clear();
        self.broadcast_wanted = false;
        self.fresh_snapshot_wanted = false;
        self.reset_election_timer();
    }

    /// Whether a membership change this node knows committed is not applied yet (held by the
    /// driver's apply ceiling or a read barrier): it must not campaign on the membership before it.
    fn has_unapplied_conf_change(&self) -> bool {
        (self.log.applied() + 1..=self.log.committed())
            .any(|index| self.log.entry(index).is_some_and(|e| e.kind == EntryKind::ConfChange))
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let campaign_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.term += 1;
            self.vote = self.config.id;
            self.role = Role::Candidate;
            self.stats.elections += 1;
            log::debug!("raft {}: campaigning in term {}", self.config.id, self.term);
            self.term
        };
        self.leader = 0;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.membership.vote_result(&self.votes) == VoteResult::Won {
            return self.won_votes(pre_vote);
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send(peer, campaign_term, MessageBody::Vote { pre_vote, last_index, last_term, transfer });
        }
    }

    fn won_votes(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false, false);
        } else {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        log::info!("raft {}: became leader in term {}", self.config.id, self.term);
        self.role = Role::Leader;
        self.leader = self.config.id;
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.lead_transferee = None;
        let last = self.log.last_index();
        let me = self.config.id;
        self.progress = self
            .membership
            .ids()
            .into_iter()
            .filter(|&p| p != me)
            .map(|p| (p, Progress::new(last)))
            .collect();
        // Raft §8: a no-op of the new term lets the leader commit (and so learn) everything before it.
        self.log.append(&[Entry {
            term: self.term,
            index: last + 1,
            data: bytes::Bytes::new(),
            kind: EntryKind::Normal,
        }]);
        // No membership change until the no-op is applied: by then this leader has committed in
        // its own term (Ongaro's 2015 fix) and applied any change a predecessor left in the log.
        self.pending_conf_index = last + 1;
        self.noop_index = last + 1;
        self.broadcast_wanted = true;
        if !self.membership.contains(me) {
            self.hand_over();
        }
        self.maybe_commit();
    }

    // ----- client requests -----

    /// Appends `data` to the log if this node is the leader; returns the entry's (index, term).
    ///
    /// The entry is only durable and replicated after the next `Ready` is carried out, and only
    /// committed once a quorum has stored it: watch the index, and check the term applied there.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        self.check_proposable(data.len())?;
        Ok(self.append_entry(data, EntryKind::Normal))
    }

    /// [`Self::propose`] for an entry that must not be seen by the reads started before it (a
    /// client's pipelined reads ahead of its write): it is not handed out to be applied until
    /// they are served or dropped. A leader confirms those reads with the same followers that
    /// commit the entry, so mostly before it commits.
    pub fn propose_after_reads(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        let (index, term) = self.propose(data)?;
        let last_read = self.reads.last_seq();
        if self.reads.pending_upto(last_read) {
            self.apply_barriers.push_back((index, last_read));
        }
        Ok((index, term))
    }

    /// Removes the barriers whose reads are all served or dropped (the first ones: each covers
    /// the reads of those before it).
    fn lift_barriers(&mut self) {
        while self.apply_barriers.front().is_some_and(|(_, last_read)| !self.reads.pending_upto(*last_read)) {
            self.apply_barriers.pop_front();
        }
    }

    /// Hands out no entry past `ceiling` to be applied (`None`: no limit) until it is set again.
    /// For a driver ordering its own reads before entries it knows of (a follower's reads,
    /// forwarded, ahead of a write it forwarded after them); a snapshot installed here is not
    /// held by it.
    pub fn set_apply_ceiling(&mut self, ceiling: Option<u64>) {
        self.apply_ceiling = ceiling;
    }

    /// The last index that may be handed out to be applied now: the commit index, or below the
    /// first entry whose reads ahead of it still wait, and no further than the driver's ceiling.
    fn apply_limit(&self) -> u64 {
        let committed = self.log.committed().min(self.apply_ceiling.unwrap_or(u64::MAX));
        // In index order, and each covers the reads of those before it.
        let held = self.apply_barriers.iter().find(|(_, last_read)| self.reads.pending_upto(*last_read));
        held.map_or(committed, |&(index, _)| committed.min(index - 1))
    }

    /// Whether a proposal of `bytes` would be taken now.
    fn check_proposable(&self, bytes: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        if self.log.last_index() - self.log.committed() >= self.config.max_uncommitted_entries {
            return Err(ProposeError::Busy);
        }
        let pending = self.log.uncommitted_bytes();
        if pending > 0 && pending + bytes > self.config.max_uncommitted_bytes {
            return Err(ProposeError::Busy);
        }
        Ok(())
    }

    fn append_entry(&mut self, data: Vec<u8>, kind: EntryKind) -> (u64, u64) {
        let index = self.log.last_index() + 1;
        self.log.append(&[Entry { term: self.term, index, data: data.into(), kind }]);
        self.broadcast_wanted = true;
        (index, self.term)
    }

    /// Proposes a membership change; returns its entry's (index, term), as `propose` does.
    ///
    /// One change at a time: refused while an earlier one is not applied, while joint, and
    /// before this leader has applied its own no-op. A learner to promote must be within
    /// `max_promote_lag` entries of the leader's log.
    pub fn propose_change(&mut self, ops: Vec<ChangeOp>) -> Result<(u64, u64), ChangeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader }.into());
        }
        if self.pending_conf_index > self.log.applied() || self.membership.is_joint() {
            return Err(MembershipError::InProgress.into());
        }
        self.membership.plan(&ops)?;
        let last = self.log.last_index();
        for op in &ops {
            if let ChangeOp::Promote { id } = op {
                // In step (appends pipelined, no snapshot needed) and within the bound.
                let (behind, in_step) = match self.progress.get(id) {
                    Some(p) => (last - p.matched, p.state == ProgressState::Replicate),
                    None => (last, false),
                };
                if !in_step || behind > self.config.max_promote_lag {
                    return Err(ChangeError::NotCaughtUp { id: *id, behind });
                }
            }
        }
        let data = codec::encode(&ConfChange::Change(ops)).map_err(|_| ProposeError::Busy)?;
        self.check_proposable(data.len())?;
        let (index, term) = self.append_entry(data, EntryKind::ConfChange);
        self.pending_conf_index = index;
        Ok((index, term))
    }

    /// Starts handing leadership to voter `to` (thesis §3.10): proposals are refused until it
    /// leads or an election timeout passes; `to` campaigns once its log matches the leader's.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if to == self.config.id {
            return Err(TransferError::ToSelf(to));
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if self.lead_transferee() == Some(to) {
            return Ok(());
        }
        log::info!("raft {}: transferring leadership to {to} in term {}", self.config.id, self.term);
        self.start_transfer(to);
        Ok(())
    }

    /// Hands leadership to `to`: `TimeoutNow` at once if its log matches, else an append first
    /// (its acknowledgement sends `TimeoutNow` once it matches).
    fn start_transfer(&mut self, to: NodeId) {
        self.lead_transferee = Some((to, 0));
        if self.progress.get(&to).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send(to, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
    }

    /// A read round is out: its acknowledgements, or the ticks that send it again, are still to
    /// come.
    pub fn read_round_out(&self) -> bool {
        self.role == Role::Leader && self.reads.round_in_flight()
    }

    /// Starts a linearizable read (Raft §6.4); `ctx` comes back in a `ReadState` or `dropped_reads`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.start_read(ctx, 0)
    }

    /// [`Self::read_index`] for a read that must also follow every entry appended here before it
    /// (a client's pipelined writes ahead of its read): its index is at least the last one now,
    /// so it is released once those entries are applied, in the same rounds that commit them.
    /// Should this leader step down before they commit, the read is dropped.
    pub fn read_index_after_appended(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.start_read(ctx, self.log.last_index())
    }

    fn start_read(&mut self, ctx: u64, floor: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.log.term(self.log.committed()) != Some(self.term) {
            // Until the leader commits in its own term, its commit index may trail the cluster's.
            self.reads.wait_for_commit(ctx, floor);
            return Ok(());
        }
        self.reads.push(ctx, self.log.committed().max(floor));
        self.confirm_reads();
        Ok(())
    }

    fn confirm_reads(&mut self) {
        let (me, progress, membership) = (self.config.id, &self.progress, &self.membership);
        self.reads.confirm(|round| {
            membership
                .has_quorum(|id| id == me || progress.get(&id).is_some_and(|p| p.read_round_acked >= round))
        });
    }

    /// Records a snapshot of the applied state at `meta`, drops the log entries it covers, and
    /// returns their memory for the caller to free where it does not hold up the node.
    ///
    /// Any wish for a fresh snapshot is taken as met: a follower that still needs entries this
    /// one does not cover asks again at its next probe (so a wish whose follower left the
    /// membership meanwhile does not keep snapshots coming).
    pub fn compact(&mut self, meta: SnapshotMeta) -> Compacted {
        self.fresh_snapshot_wanted = false;
        self.log.compact(meta)
    }

    /// The index memory can be trimmed to now: applied and handed to storage, and on a leader
    /// acknowledged by every follower; a follower keeps `retained_entries` below its applied mark.
    fn trim_point(&self) -> u64 {
        let log = &self.log;
        let mut point = log.applied().min(log.persisting());
        if self.role == Role::Leader {
            point = self.progress.values().map(|pr| pr.matched).fold(point, u64::min);
        } else {
            point = point.saturating_sub(self.config.retained_entries);
        }
        point.max(log.first_index() - 1)
    }

    /// How many entries [`RaftCore::trim_memory`] would drop from memory now.
    pub fn trimmable_entries(&self) -> u64 {
        self.trim_point() - (self.log.first_index() - 1)
    }

    /// Drops from memory the entries no peer needs any more (they stay in stable storage until
    /// a snapshot covers them) and returns their memory for the caller to free.
    pub fn trim_memory(&mut self) -> Compacted {
        self.log.trim_to(self.trim_point())
    }

    /// True for a leader that refuses membership changes only until it has applied the no-op of
    /// its election (a round of replication away), not because a change is under way: a caller
    /// may hold a change until then instead of refusing it.
    pub fn change_awaits_noop(&self) -> bool {
        self.role == Role::Leader
            && self.pending_conf_index == self.noop_index
            && self.log.applied() < self.noop_index
    }

    /// A follower needs entries that were trimmed from memory: the caller should take a
    /// snapshot (the one there is is older than them), which is then sent to it.
    pub fn wants_fresh_snapshot(&self) -> bool {
        self.fresh_snapshot_wanted
    }

    /// The caller finished sending a snapshot to `to` (`ok`), or gave up on it.
    ///
    /// Success only resumes probing after the snapshot: the follower's acknowledgement, not the
    /// transport's word, is what moves its match index.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if let ProgressState::Snapshot { .. } = pr.state {
                pr.become_probe();
                if !ok {
                    pr.next = pr.matched + 1;
                }
            }
        }
    }

    // ----- messages -----

    /// Handles one message from a peer. Invalid input is refused, counted, and changes nothing.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        let result = self.validate(&m).and_then(|()| self.step_valid(m));
        if result.is_err() {
            self.stats.invalid_messages += 1;
        }
        result
    }

    fn step_valid(&mut self, m: Message) -> Result<(), StepError> {
        if m.term > self.term {
            match m.body {
                MessageBody::Vote { pre_vote, transfer, .. } => {
                    let in_lease = !transfer
                        && self.config.check_quorum
                        && self.leader != 0
                        && self.election_elapsed < self.config.election_timeout_ticks;
                    if in_lease {
                        // Raft §4.2.3: a node that hears from a live leader ignores would-be disrupters.
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(m.term, 0);
                    }
                }
                // A granted pre-vote carries the term the candidate would campaign in, not a real one.
                MessageBody::VoteResponse { pre_vote: true, reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader (say, one just back from a partition) learns the new term and steps down.
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(m.from, self.term, MessageBody::HeartbeatResponse { read_round: 0 })
                }
                MessageBody::Vote { pre_vote: true, .. } => {
                    self.send(m.from, self.term, MessageBody::VoteResponse { pre_vote: true, reject: true })
                }
                _ => {}
            }
            return Ok(());
        }

        match m.body {
            MessageBody::Vote { pre_vote, last_index, last_term, .. } => {
                self.handle_vote(m.from, m.term, pre_vote, last_index, last_term);
                Ok(())
            }
            MessageBody::VoteResponse { pre_vote, reject } => {
                self.handle_vote_response(m.from, pre_vote, reject);
                Ok(())
            }
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.follow(m.from)?;
                self.handle_append(m.from, prev_index, prev_term, entries, commit)
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.follow(m.from)?;
                // The leader caps `commit` at what it knows this node holds, so it is safe to
                // trust up to this node's last entry (a reordered or bogus one may claim more).
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, self.term, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.follow(m.from)?;
                self.handle_snapshot(m.from, snapshot);
                Ok(())
            }
            MessageBody::AppendResponse { reject, index, reject_hint, hint_term } => {
                self.handle_append_response(m.from, reject, index, reject_hint, hint_term)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(m.from, read_round);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader
                    && self.leader == m.from
                    && self.membership.is_voter(self.config.id)
                {
                    if self.has_unapplied_conf_change() {
                        // Taken once the change is applied (at a tick): a leader removing itself
                        // hands over as the change commits, often before this node applies it.
                        let ticks = self.config.election_timeout_ticks;
                        self.deferred_transfer = Some((self.term, m.from, ticks));
                    } else {
                        log::info!("raft {}: leader {} hands over; campaigning now", self.config.id, m.from);
                        self.campaign(false, true);
                    }
                }
                Ok(())
            }
        }
    }

    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.config.id {
            return Err(StepError::WrongRecipient(m.to));
        }
        // Any member of this cluster may speak (the peer listener checked its handshake): a
        // replica that has not applied a membership change yet still hears from those it adds.
        if m.from == self.config.id || m.from == 0 {
            return Err(StepError::UnknownSender(m.from));
        }
        match &m.body {
            MessageBody::Append { prev_index, prev_term, entries, .. } => {
                if *prev_term > m.term {
                    return Err(StepError::Invalid("prev_term above message term"));
                }
                let overflow = StepError::Invalid("index overflow");
                prev_index.checked_add(entries.len() as u64 + 1).ok_or(overflow.clone())?;
                let first = prev_index + 1;
                let mut term = *prev_term;
                for (expect, e) in (first..).zip(entries) {
                    if e.index != expect || e.term < term || e.term > m.term {
                        return Err(StepError::Invalid("entries not consecutive or terms out of order"));
                    }
                    term = e.term;
                }
            }
            MessageBody::InstallSnapshot { snapshot }
                if snapshot.meta.index == 0 || snapshot.meta.term > m.term =>
            {
                return Err(StepError::Invalid("snapshot position out of range"));
            }
            MessageBody::AppendResponse { reject: false, index, .. }
                if m.term == self.term && self.role == Role::Leader && *index > self.log.last_index() =>
            {
                return Err(StepError::Invalid("acknowledged index beyond the leader's log"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Accepts `from` as leader of the current term (used on Append/Heartbeat/InstallSnapshot).
    fn follow(&mut self, from: NodeId) -> Result<(), StepError> {
        if self.role == Role::Leader {
            // Two leaders in one term would break Raft's election safety: refuse the message.
            return Err(StepError::Invalid("another leader in this node's term"));
        }
        if self.role != Role::Follower || self.leader != from {
            self.become_follower(self.term, from);
        }
        self.election_elapsed = 0;
        Ok(())
    }

    fn handle_vote(&mut self, from: NodeId, term: u64, pre_vote: bool, last_index: u64, last_term: u64) {
        // Raft §5.2: one vote per term, first come first served; a pre-vote for a later term binds nothing.
        let can_vote =
            self.vote == from || (self.vote == 0 && self.leader == 0) || (pre_vote && term > self.term);
        // Raft §5.4.1: only for a candidate whose log is at least as up to date.
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            self.send(from, term, MessageBody::VoteResponse { pre_vote, reject: false });
            if !pre_vote {
                self.vote = from;
                self.reset_election_timer();
            }
        } else {
            self.send(from, self.term, MessageBody::VoteResponse { pre_vote, reject: true });
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, reject: bool) {
        let campaigning = match self.role {
            Role::PreCandidate => pre_vote,
            Role::Candidate => !pre_vote,
            _ => false,
        };
        if !campaigning {
            return;
        }
        self.votes.entry(from).or_insert(!reject);
        match self.membership.vote_result(&self.votes) {
            VoteResult::Won => self.won_votes(pre_vote),
            VoteResult::Lost => self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    ) -> Result<(), StepError> {
        let committed = self.log.committed();
        if prev_index < committed {
            // Everything up to our commit is settled; tell the leader where we are.
            self.send(
                from,
                self.term,
                MessageBody::AppendResponse { reject: false, index: committed, reject_hint: 0, hint_term: 0 },
            );
            return Ok(());
        }
        if !self.log.matches(prev_index, prev_term) {
            // Fast back-off: point the leader at the last entry that could match, skipping a wrong term's run.
            let hint = self.log.find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
            let hint_term = self.log.term(hint).unwrap_or(0);
            self.send(
                from,
                self.term,
                MessageBody::AppendResponse { reject: true, index: prev_index, reject_hint: hint, hint_term },
            );
            return Ok(());
        }
        let last_new = prev_index + entries.len() as u64;
        if entries.iter().any(|e| e.index <= committed && self.log.term(e.index) != Some(e.term)) {
            return Err(StepError::Invalid("append conflicts with a committed entry"));
        }
        self.log.append(&entries);
        // Only entries known to match the leader's may be committed (Raft §5.3).
        self.log.commit_to(commit.min(last_new));
        self.send(
            from,
            self.term,
            MessageBody::AppendResponse { reject: false, index: last_new, reject_hint: 0, hint_term: 0 },
        );
        Ok(())
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let meta = snapshot.meta;
        let committed = self.log.committed();
        if meta.index <= committed {
            // Never go back: the state machine already holds at least this much.
            self.send(
                from,
                self.term,
                MessageBody::AppendResponse { reject: false, index: committed, reject_hint: 0, hint_term: 0 },
            );
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // The log already has it: just learn that it is committed.
            self.log.commit_to(meta.index);
        } else {
            log::info!(
                "raft {}: installing snapshot at index {} term {}",
                self.config.id,
                meta.index,
                meta.term
            );
            self.log.install_snapshot(meta);
            if !snapshot.membership.is_empty() && snapshot.membership != self.membership {
                self.set_membership(snapshot.membership.clone());
            }
            self.pending_snapshot = Some(snapshot);
        }
        self.send(
            from,
            self.term,
            MessageBody::AppendResponse { reject: false, index: meta.index, reject_hint: 0, hint_term: 0 },
        );
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: u64,
        reject_hint: u64,
        hint_term: u64,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let hint = if reject && hint_term > 0 {
            self.log.find_conflict_by_term(reject_hint, hint_term)
        } else {
            reject_hint
        };
        let Some(pr) = self.progress.get_mut(&from) else { return Ok(()) };
        pr.recent_active = true;
        if reject {
            if pr.maybe_decrease(index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, true);
            }
            return Ok(());
        }
        let was_paused = pr.is_paused(self.config.max_inflight_appends);
        if pr.maybe_update(index) {
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot { index: snap } if pr.matched >= snap => {
                    pr.become_probe();
                    pr.become_replicate();
                }
                _ => {}
            }
            let caught_up = pr.matched == self.log.last_index();
            if caught_up && self.lead_transferee() == Some(from) {
                self.send(from, self.term, MessageBody::TimeoutNow);
            }
            if self.maybe_commit() {
                self.broadcast_wanted = true;
            } else if was_paused {
                // It may have missed the commit index while paused: tell it, even with no entries.
                self.send_append(from, true);
            }
        }
        // Pipelining: keep sending while the window allows and entries remain.
        while self.send_append(from, false) {}
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.probe_sent = false;
        let behind = pr.matched < last;
        // A probe may be empty: it finds where a follower's log (a new member's, say) matches.
        let probing = pr.state == ProgressState::Probe;
        if read_round > pr.read_round_acked {
            pr.read_round_acked = read_round;
            self.confirm_reads();
        }
        if behind {
            self.send_append(from, probing);
        }
    }

    // ----- replication -----

    /// Sends `to` the next append (or a snapshot); returns whether entries went out.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let window = self.config.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else { return false };
        if pr.is_paused(window) {
            return false;
        }
        let next = pr.next;
        let prev_index = next - 1;
        let (prev_term, entries) =
            match (self.log.term(prev_index), self.log.entries_from(next, self.config.max_append_bytes)) {
                (Some(term), Some(entries)) => (term, entries),
                _ if self.log.has_trimmed() => {
                    // Trimmed from memory and newer than the snapshot: ask for a fresh snapshot
                    // (trimming stops meanwhile, since this follower's match holds it back).
                    if !self.fresh_snapshot_wanted {
                        log::info!(
                            "raft {}: follower {to} needs entries from {next}, trimmed from memory: \
                             a fresh snapshot is wanted",
                            self.config.id
                        );
                        self.fresh_snapshot_wanted = true;
                    }
                    return false;
                }
                _ => {
                    // The entries it needs are compacted: send the snapshot's position; the transport
                    // attaches the image itself.
                    let meta = self.log.snapshot_meta();
                    log::info!(
                        "raft {}: follower {to} needs snapshot at index {}",
                        self.config.id,
                        meta.index
                    );
                    self.send(
                        to,
                        self.term,
                        MessageBody::InstallSnapshot { snapshot: Snapshot { meta, ..Snapshot::default() } },
                    );
                    if let Some(pr) = self.progress.get_mut(&to) {
                        pr.become_snapshot(meta.index);
                    }
                    return false;
                }
            };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = prev_index + entries.len() as u64;
        let had_entries = !entries.is_empty();
        let commit = self.log.committed();
        self.send(to, self.term, MessageBody::Append { prev_index, prev_term, entries, commit });
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent(last, had_entries, window);
            pr.commit_sent = pr.commit_sent.max(commit);
        }
        had_entries
    }

    /// Sends every follower its new entries. A new commit index alone (an empty append) goes
    /// only to a follower waiting on it (see [`await_commit`](Self::await_commit)), and to all
    /// once it covers a membership change or a new leader's no-op (configurations take effect
    /// when applied, everywhere at once) or while leadership is handed over (the answers tell
    /// this leader when the next one has taken over); the others learn it with their next
    /// append or heartbeat. At one write at a time that spares each write a round of empty
    /// appends, their sends and the followers' wake-ups.
    fn broadcast_append(&mut self) {
        let committed = self.log.committed();
        let conf = self.pending_conf_index;
        let everyone = self.lead_transferee.is_some();
        for peer in self.peers() {
            let awaited =
                everyone || self.progress.get(&peer).is_some_and(|pr| pr.is_owed_commit(committed, conf));
            if self.send_append(peer, awaited) {
                while self.send_append(peer, false) {}
            }
        }
    }

    /// Follower `peer` waits for `index` to be committed (and applied there): a request it
    /// forwarded was appended there, or its read is to be served once that is applied. The
    /// commit index goes to it as soon as it covers `index`, even with no entries to carry it.
    pub fn await_commit(&mut self, peer: NodeId, index: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        pr.commit_awaited = pr.commit_awaited.max(index);
        if pr.is_owed_commit(self.log.committed(), 0) {
            self.broadcast_wanted = true;
        }
    }

    fn broadcast_heartbeat(&mut self, read_round: u64) {
        for peer in self.peers() {
            self.send_heartbeat(peer, read_round);
        }
    }

    fn send_heartbeat(&mut self, to: NodeId, read_round: u64) {
        let Some(pr) = self.progress.get_mut(&to) else { return };
        // Never claim a commit past what the follower is known to hold (it might not have it).
        let commit = self.log.committed().min(pr.matched);
        pr.commit_sent = pr.commit_sent.max(commit);
        self.send(to, self.term, MessageBody::Heartbeat { commit, read_round });
    }

    /// Sends read round `round` (for a single read) to just enough voters to make a quorum with
    /// the leader, those that acknowledged the latest rounds first: at one read at a time the
    /// others' answers would confirm nothing sooner on an idle machine, and each costs them and
    /// the leader a wake (1-client reads, both asked: p50 +8 %, README). Should one asked stay
    /// silent, the round goes to every peer after
    /// [`ROUND_PATIENCE_TICKS`](super::read_index::ROUND_PATIENCE_TICKS), and the next round
    /// prefers whoever answered.
    fn ask_read_quorum(&mut self, round: u64) {
        let mut candidates: Vec<(u64, NodeId)> = self
            .progress
            .iter()
            .filter(|(id, _)| self.membership.is_voter(**id))
            .map(|(id, pr)| (pr.read_round_acked, *id))
            .collect();
        // Highest acknowledged round first; ties by id, so the choice is deterministic.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let me = self.config.id;
        let mut asked: Vec<NodeId> = Vec::with_capacity(candidates.len());
        for (_, id) in candidates {
            if self.membership.has_quorum(|v| v == me || asked.contains(&v)) {
                break;
            }
            asked.push(id);
        }
        for id in asked {
            self.send_heartbeat(id, round);
        }
    }

    /// Commits the highest index a quorum stores, if it is from the current term (Raft §5.4.2).
    fn maybe_commit(&mut self) -> bool {
        let (me, stabled, progress) = (self.config.id, self.log.stabled(), &self.progress);
        // The leader counts itself only for what it has on stable storage.
        let candidate = self.membership.committed_index(|id| {
            if id == me {
                stabled
            } else {
                progress.get(&id).map_or(0, |p| p.matched)
            }
        });
        if candidate <= self.log.committed() || self.log.term(candidate) != Some(self.term) {
            return false;
        }
        let first_in_term = self.log.term(self.log.committed()) != Some(self.term);
        self.log.commit_to(candidate);
        if first_in_term {
            self.reads.first_commit(self.noop_index);
            self.confirm_reads();
        }
        true
    }

    // ----- the hand-off -----

    /// Whether a `Ready` has something to do (false while one is out).
    pub fn has_ready(&self) -> bool {
        if self.ready_in_flight {
            return false;
        }
        let leader = self.role == Role::Leader;
        self.reported_role != Some(self.role_state())
            || self.membership_changed
            || self.vote_changed()
            || self.pending_snapshot.is_some()
            || self.log.has_unstable_entries()
            || !self.messages.is_empty()
            || !self.released.is_empty()
            || (leader && self.broadcast_wanted)
            || self.apply_limit() > self.log.applied()
            || self.reads.has_work(self.log.applied())
            || !self.dropped_reads.is_empty()
    }

    fn role_state(&self) -> RoleState {
        RoleState { role: self.role, term: self.term, leader: self.leader }
    }

    /// Term or vote differ from what was last handed out to be written (the commit mark alone
    /// does not need a write of its own: it is only a hint after a restart).
    fn vote_changed(&self) -> bool {
        (self.term, self.vote) != (self.written_hard_state.term, self.written_hard_state.vote)
    }

    /// Collects what must be sent, written and applied. Call `advance` when done.
    pub fn ready(&mut self) -> Ready {
        assert!(!self.ready_in_flight, "ready() called before advance()");
        if self.role == Role::Leader {
            if self.broadcast_wanted {
                self.broadcast_wanted = false;
                self.broadcast_append();
            }
            if let Some((round, reads)) = self.reads.start_round() {
                if reads > 1 {
                    // Its message costs a follower the same whatever the round holds, and the
                    // first answers to come back release every read in it: under load one
                    // follower slow to get a CPU no longer holds the round up.
                    self.broadcast_heartbeat(round);
                } else {
                    self.ask_read_quorum(round);
                }
                self.confirm_reads();
            }
        }
        let role = self.role_state();
        let role = (self.reported_role != Some(role)).then(|| {
            self.reported_role = Some(role);
            role
        });

        let snapshot = self.pending_snapshot.take();
        let entries: Vec<Entry> = self.log.unstable_entries().cloned().collect();
        self.log.persisting_to_last();
        let writes_log = snapshot.is_some() || !entries.is_empty();
        let hs = self.hard_state();
        let hard_state = (self.vote_changed() || (writes_log && hs != self.written_hard_state)).then(|| {
            self.written_hard_state = hs;
            hs
        });

        let mut messages = std::mem::take(&mut self.released);
        let mut held = Vec::new();
        for m in self.messages.drain(..) {
            // A heartbeat's answer speaks only for the sender's term (it says nothing of its
            // log), so it waits only until that term is durable, not for entries being written:
            // a follower whose disk is full (its write retried) still confirms the leader's
            // reads and keeps its lease.
            let term_durable = m.term <= self.durable_term;
            let term_only = matches!(m.body, MessageBody::HeartbeatResponse { .. }) && term_durable;
            // A leader's traffic goes ahead of its writes only once its term (and vote) is on
            // disk. With other voters it always is: their votes answered requests sent after it
            // was. A sole voter elects itself at once, and its first appends could otherwise reach
            // a learner in a term a crash would let it win again with other entries.
            if (m.body.may_precede_persistence() && term_durable) || term_only {
                messages.push(m);
            } else {
                held.push(m);
            }
        }
        let number = if writes_log || hard_state.is_some() {
            self.last_write += 1;
            let last = match (entries.last(), &snapshot) {
                (Some(e), _) => Some((e.index, e.term)),
                (None, Some(s)) => Some((s.meta.index, s.meta.term)),
                (None, None) => None,
            };
            let term = hard_state.map(|hs| hs.term);
            self.pending_writes.push_back(PendingWrite {
                number: self.last_write,
                last,
                term,
                messages: held,
            });
            self.last_write
        } else {
            // Nothing new to write, but what was written before may still be in flight.
            match self.pending_writes.back_mut() {
                Some(write) => write.messages.append(&mut held),
                None => messages.append(&mut held),
            }
            0
        };

        self.lift_barriers();
        let committed_entries =
            self.log.next_committed_entries(self.apply_limit(), self.config.max_apply_bytes);
        let applied_upto = committed_entries.last().map_or(self.log.applied(), |e| e.index);
        for entry in committed_entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            self.apply_conf_change(entry);
        }
        if self.role == Role::Leader
            && self.membership.is_joint()
            && self.pending_conf_index <= applied_upto
            && self.lead_transferee.is_none()
        {
            // Thesis §4.3: once the joint membership is in force, the leader leaves it on its own.
            // The entry goes out with the next Ready.
            if let Ok(data) = codec::encode(&ConfChange::LeaveJoint) {
                let (index, _) = self.append_entry(data, EntryKind::ConfChange);
                self.pending_conf_index = index;
            }
        }
        let membership = std::mem::take(&mut self.membership_changed).then(|| self.membership.clone());
        self.ready_in_flight = true;
        Ready {
            membership,
            role,
            number,
            hard_state,
            snapshot,
            entries,
            messages,
            committed_entries,
            read_states: self.reads.release(applied_upto),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
            applied_upto,
        }
    }

    /// Acknowledges that `ready` was carried out up to its writes: its messages sent, its
    /// writes handed to storage (in order), its committed entries handed to the state machine.
    pub fn advance(&mut self, ready: Ready) {
        assert!(self.ready_in_flight, "advance() without ready()");
        self.ready_in_flight = false;
        self.log.applied_to(ready.applied_upto);
    }

    /// Reports that the writes of every Ready up to number `number` are durable.
    ///
    /// Releases the messages that waited for them (they leave with the next Ready) and lets a
    /// leader count its own copy of the entries toward a quorum.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(number <= self.last_write, "write {number} was never handed out");
        while let Some(write) = self.pending_writes.pop_front_if(|w| w.number <= number) {
            if let Some((index, term)) = write.last {
                self.log.stable_to(index, term);
            }
            if let Some(term) = write.term {
                self.durable_term = self.durable_term.max(term);
            }
            self.released.extend(write.messages);
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.broadcast_wanted = true;
        }
    }
}

impl RaftCore {
    /// Puts the change carried by a committed entry into force. A change that does not apply
    /// (impossible from a correct leader) is skipped alike on every replica, so they agree.
    fn apply_conf_change(&mut self, entry: &Entry) {
        let change = match codec::decode::<ConfChange>(&entry.data) {
            Ok(change) => change,
            Err(e) => {
                log::warn!("raft {}: entry {} holds no membership change: {e}", self.config.id, entry.index);
                return;
            }
        };
        match self.membership.apply(&change) {
            Ok(next) => {
                log::info!(
                    "raft {}: membership at index {}: voters {:?}{} learners {:?}",
                    self.config.id,
                    entry.index,
                    next.voters,
                    if next.is_joint() { format!(" and {:?} (joint)", next.outgoing) } else { String::new() },
                    next.learners
                );
                self.set_membership(next);
            }
            Err(e) => {
                log::warn!("raft {}: membership change at {} skipped: {e}", self.config.id, entry.index)
            }
        }
    }

    /// A leader whose removal is in force hands over instead of stepping down at once (thesis
    /// §4.2.2 lets it lead until then). Stepping down at once can leave the cluster without a
    /// leader for good: the remaining voters learn that the removal committed only from this
    /// leader, and until they do they still need its vote, which its longer log may refuse
    /// them. So it goes on replicating (its heartbeats carry the commit index), takes no
    /// proposals, catches a remaining voter up and sends it `TimeoutNow`, until a newer term
    /// takes over: the most caught up first, then, each time a transfer timed out (an election
    /// timeout), the next in that first ranking (ranked again, a dead voter could come first
    /// again once the live ones caught up). Always the same one would wait for ever on a voter
    /// that is down (the others, in this leader's lease, never campaign on their own).
    fn hand_over(&mut self) {
        if self.hand_over_order.is_empty() {
            let progress = &self.progress;
            let mut voters: Vec<NodeId> = self.membership.voters.iter().copied().collect();
            voters.sort_by_key(|id| (std::cmp::Reverse(progress.get(id).map_or(0, |p| p.matched)), *id));
            self.hand_over_order = voters;
        }
        let voters = &self.hand_over_order;
        if voters.is_empty() {
            return;
        }
        let to = voters[self.hand_over_tries % voters.len()];
        self.hand_over_tries += 1;
        self.handing_over = true;
        self.start_transfer(to);
    }

    fn set_membership(&mut self, next: Membership) {
        let previous = std::mem::replace(&mut self.membership, next);
        self.membership_changed = true;
        self.stats.membership_changes += 1;
        if self.role != Role::Leader {
            return;
        }
        let (me, last) = (self.config.id, self.log.last_index());
        for id in self.membership.ids() {
            if id != me {
                self.progress.entry(id).or_insert_with(|| Progress::new(last));
            }
        }
        // Removed members keep getting heartbeats for a while, which carry the commit index
        // that tells them they were removed.
        let linger = self.config.election_timeout_ticks * 2;
        for id in previous.ids() {
            if id != me && !self.membership.contains(id) {
                self.leaving.insert(id, linger);
            }
        }
        if let Some(to) = self.lead_transferee() {
            if !self.membership.is_voter(to) {
                self.lead_transferee = None;
            }
        }
        if !self.membership.contains(me) {
            log::info!("raft {me}: removed from the membership; handing leadership over");
            self.hand_over();
        }
        self.broadcast_wanted = true;
        if self.maybe_commit() {
            self.broadcast_wanted = true;
        }
    }
}

/// A Ready's write that storage has not yet confirmed durable.
struct PendingWrite {
    /// The Ready's number.
    number: u64,
    /// Its last log position written (entry or snapshot), if it wrote any.
    last: Option<(u64, u64)>,
    /// The term of the hard state it writes, if it writes one.
    term: Option<u64>,
    /// Messages that promise what it writes (or what was written before it).
    messages: Vec<Message>,
}
