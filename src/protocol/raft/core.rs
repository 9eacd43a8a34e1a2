//! The Raft state machine: elections, replication, commitment and reads, with no I/O.
//!
//! The caller drives it with [`RaftCore::tick`] (a logical clock), [`RaftCore::step`] (a message
//! from a peer), [`RaftCore::propose`] and [`RaftCore::read_index`], and carries out what each
//! [`Ready`] asks before calling [`RaftCore::advance`]; it reports each Ready's write durable
//! with [`RaftCore::on_persisted`], which releases the messages that were waiting for it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::log::RaftLog;
use super::message::{Entry, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use super::progress::{Progress, ProgressState};
use super::read_index::ReadQueue;
use super::ready::{Ready, Role, RoleState};
use crate::protocol::rng::Rng;

/// Settings of one Raft node. Times are in ticks of the caller's clock.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero, one of `members`).
    pub id: NodeId,
    /// Every member of the cluster, this node included.
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
            seed: id,
        }
    }

    /// Checks the settings; an error names the first thing wrong.
    pub fn validate(&self) -> Result<(), String> {
        let unique: BTreeSet<_> = self.members.iter().collect();
        if unique.len() != self.members.len() || self.members.contains(&0) {
            return Err("members must be unique and non-zero".into());
        }
        if !self.members.contains(&self.id) {
            return Err(format!("id {} is not a member", self.id));
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
    /// The leader's view of each other member; empty unless leader.
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
    /// The hard state as last handed out to be written.
    written_hard_state: HardState,
    /// The role state as last handed out.
    reported_role: Option<RoleState>,
    /// A Ready is out and not yet advanced.
    ready_in_flight: bool,
    stats: Stats,
}

impl RaftCore {
    /// A node recovered from storage: its hard state, snapshot position and the entries after it.
    ///
    /// Panics if the config is invalid (a programming error, checked at start-up).
    pub fn new(
        config: Config,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
    ) -> RaftCore {
        if let Err(e) = config.validate() {
            panic!("invalid raft config: {e}");
        }
        let log = RaftLog::restore(snapshot, entries, hard_state.commit);
        let mut core = RaftCore {
            rng: Rng::new(config.seed),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: 0,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            reads: ReadQueue::default(),
            dropped_reads: Vec::new(),
            messages: Vec::new(),
            pending_writes: VecDeque::new(),
            released: Vec::new(),
            last_write: 0,
            pending_snapshot: None,
            broadcast_wanted: false,
            written_hard_state: hard_state,
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

    fn quorum(&self) -> usize {
        self.config.members.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        self.config.members.iter().copied().filter(|&m| m != self.config.id).collect()
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
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_timeout {
                self.campaign(self.config.pre_vote);
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
                let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
                if active < self.quorum() {
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
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
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
            self.dropped_reads.extend(self.reads.drop_unconfirmed());
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.broadcast_wanted = false;
        self.reset_election_timer();
    }

    fn campaign(&mut self, pre_vote: bool) {
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
        if self.quorum() == 1 {
            return self.won_votes(pre_vote);
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            self.send(peer, campaign_term, MessageBody::Vote { pre_vote, last_index, last_term });
        }
    }

    fn won_votes(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false);
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
        let last = self.log.last_index();
        self.progress = self.peers().into_iter().map(|p| (p, Progress::new(last))).collect();
        // Raft §8: a no-op of the new term lets the leader commit (and so learn) everything before it.
        self.log.append(&[Entry { term: self.term, index: last + 1, data: Vec::new() }]);
        self.broadcast_wanted = true;
        self.maybe_commit();
    }

    // ----- client requests -----

    /// Appends `data` to the log if this node is the leader; returns the entry's (index, term).
    ///
    /// The entry is only durable and replicated after the next `Ready` is carried out, and only
    /// committed once a quorum has stored it: watch the index, and check the term applied there.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.log.last_index() - self.log.committed() >= self.config.max_uncommitted_entries {
            return Err(ProposeError::Busy);
        }
        let pending = self.log.uncommitted_bytes();
        if pending > 0 && pending + data.len() > self.config.max_uncommitted_bytes {
            return Err(ProposeError::Busy);
        }
        let index = self.log.last_index() + 1;
        self.log.append(&[Entry { term: self.term, index, data }]);
        self.broadcast_wanted = true;
        if self.quorum() == 1 {
            self.maybe_commit();
        }
        Ok((index, self.term))
    }

    /// Starts a linearizable read (Raft §6.4); `ctx` comes back in a `ReadState` or `dropped_reads`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.log.term(self.log.committed()) != Some(self.term) {
            // Until the leader commits in its own term, its commit index may trail the cluster's.
            self.reads.wait_for_commit(ctx);
            return Ok(());
        }
        self.reads.push(ctx, self.log.committed());
        self.confirm_reads();
        Ok(())
    }

    fn confirm_reads(&mut self) {
        let quorum = self.quorum();
        let progress = &self.progress;
        self.reads
            .confirm(|round| 1 + progress.values().filter(|p| p.read_round_acked >= round).count() >= quorum);
    }

    /// Drops log entries up to `index`, which a snapshot of the applied state now covers.
    pub fn compact(&mut self, index: u64) {
        self.log.compact(index.min(self.log.applied()));
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
                MessageBody::Vote { pre_vote, .. } => {
                    let in_lease = self.config.check_quorum
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
            MessageBody::Vote { pre_vote, last_index, last_term } => {
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
        }
    }

    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.config.id {
            return Err(StepError::WrongRecipient(m.to));
        }
        if m.from == self.config.id || !self.config.members.contains(&m.from) {
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
        let granted = self.votes.values().filter(|&&v| v).count();
        let refused = self.votes.len() - granted;
        if granted >= self.quorum() {
            self.won_votes(pre_vote);
        } else if refused >= self.quorum() {
            self.become_follower(self.term, 0);
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
        if read_round > pr.read_round_acked {
            pr.read_round_acked = read_round;
            self.confirm_reads();
        }
        if behind {
            self.send_append(from, false);
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
                        MessageBody::InstallSnapshot { snapshot: Snapshot { meta, data: Vec::new() } },
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
        }
        had_entries
    }

    fn broadcast_append(&mut self) {
        for peer in self.peers() {
            // The first append may be empty: it still carries the new commit index.
            if self.send_append(peer, true) {
                while self.send_append(peer, false) {}
            }
        }
    }

    fn broadcast_heartbeat(&mut self, read_round: u64) {
        for peer in self.peers() {
            let Some(pr) = self.progress.get(&peer) else { continue };
            // Never claim a commit past what the follower is known to hold (it might not have it).
            let commit = self.log.committed().min(pr.matched);
            self.send(peer, self.term, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// Commits the highest index a quorum stores, if it is from the current term (Raft §5.4.2).
    fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.matched).collect();
        // The leader counts itself only for what it has on stable storage.
        matched.push(self.log.stabled());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate <= self.log.committed() || self.log.term(candidate) != Some(self.term) {
            return false;
        }
        let first_in_term = self.log.term(self.log.committed()) != Some(self.term);
        self.log.commit_to(candidate);
        if first_in_term {
            self.reads.first_commit(candidate);
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
            || self.vote_changed()
            || self.pending_snapshot.is_some()
            || !self.log.unstable_entries().is_empty()
            || !self.messages.is_empty()
            || !self.released.is_empty()
            || (leader && self.broadcast_wanted)
            || self.log.committed() > self.log.applied()
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
            if let Some(round) = self.reads.start_round() {
                self.broadcast_heartbeat(round);
                self.confirm_reads();
            }
        }
        let role = self.role_state();
        let role = (self.reported_role != Some(role)).then(|| {
            self.reported_role = Some(role);
            role
        });

        let snapshot = self.pending_snapshot.take();
        let entries = self.log.unstable_entries().to_vec();
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
            if m.body.may_precede_persistence() {
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
            self.pending_writes.push_back(PendingWrite { number: self.last_write, last, messages: held });
            self.last_write
        } else {
            // Nothing new to write, but what was written before may still be in flight.
            match self.pending_writes.back_mut() {
                Some(write) => write.messages.append(&mut held),
                None => messages.append(&mut held),
            }
            0
        };

        let committed_entries = self.log.next_committed_entries(self.config.max_apply_bytes);
        let applied_upto = committed_entries.last().map_or(self.log.applied(), |e| e.index);
        self.ready_in_flight = true;
        Ready {
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
            self.released.extend(write.messages);
        }
        if self.role == Role::Leader && self.maybe_commit() {
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
    /// Messages that promise what it writes (or what was written before it).
    messages: Vec<Message>,
}
