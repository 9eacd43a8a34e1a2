//! Who is in the cluster, and the rules for changing it (Raft thesis ch. 4).
//!
//! A [`Membership`] is one set of voters, or two while joint (incoming and outgoing, §4.3),
//! plus learners, who get the log but never vote. It changes only by applying a committed
//! [`ConfChange`] entry, so every replica walks through the same memberships in the same order.
//! A change that swaps more than one voter goes through the joint membership; adding a learner,
//! promoting one or removing one member is applied in one step (§4.1: any two majorities of
//! voter sets that differ by one member overlap).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::message::NodeId;

/// Where a member listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// Where other members reach it (HOST:PORT).
    pub peer_addr: String,
    /// Where it serves clients (HOST:PORT).
    pub client_addr: String,
}

/// The members of one cluster at one point of its log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (while joint: the incoming voters).
    pub voters: BTreeSet<NodeId>,
    /// While joint, the voters being left; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that replicate the log but do not vote.
    pub learners: BTreeSet<NodeId>,
    /// Addresses of every member (of any set).
    pub addrs: BTreeMap<NodeId, MemberAddrs>,
    /// Ids once removed: never reused, so an old data dir cannot come back as someone else.
    pub removed: BTreeSet<NodeId>,
}

/// One step of a membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOp {
    /// Add a new member as a learner.
    Add {
        /// Its id (never used before in this cluster).
        id: NodeId,
        /// Its addresses.
        addrs: MemberAddrs,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or learner.
    Remove {
        /// The member.
        id: NodeId,
    },
}

impl ChangeOp {
    /// The member this step is about.
    pub fn id(&self) -> NodeId {
        match self {
            ChangeOp::Add { id, .. } | ChangeOp::Promote { id } | ChangeOp::Remove { id } => *id,
        }
    }
}

/// What a configuration-change entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// The first membership of a brand-new cluster (entry 1 of its log).
    Bootstrap(Membership),
    /// A change of one or more steps; enters the joint membership when more than one voter changes.
    Change(Vec<ChangeOp>),
    /// Leaves the joint membership for its incoming voters (proposed by the leader on its own).
    LeaveJoint,
}

/// Why a membership change is refused. Its text is what clients see after `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// A change with no steps.
    #[error("a membership change needs at least one step")]
    NoSteps,
    /// Two steps about one member in one change.
    #[error("member {0} appears twice in one change")]
    Duplicate(NodeId),
    /// Id 0 means "none".
    #[error("member id must be a positive integer")]
    IdZero,
    /// Adding a member that is already in.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// Adding an id that was removed before.
    #[error("id {0} was removed from this cluster and cannot be reused")]
    Reused(NodeId),
    /// Promoting or removing someone not in the membership.
    #[error("{0} is not a member")]
    Unknown(NodeId),
    /// Promoting a voter.
    #[error("{0} is already a voter")]
    AlreadyVoter(NodeId),
    /// The change would leave nobody to vote.
    #[error("the change would leave no voter")]
    NoVoterLeft,
    /// An address that is not HOST:PORT.
    #[error("invalid address '{0}': expected HOST:PORT")]
    BadAddress(String),
    /// A change while the previous one is not finished.
    #[error("membership change in progress")]
    InProgress,
    /// A bootstrap entry where a membership already exists.
    #[error("the cluster already has a membership")]
    AlreadyBootstrapped,
    /// Leaving a joint membership that is not joint.
    #[error("the membership is not joint")]
    NotJoint,
}

/// The outcome of an election as far as the votes received tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority of every voter set granted.
    Won,
    /// A majority of some voter set refused: this campaign cannot win.
    Lost,
    /// Neither yet.
    Pending,
}

/// Checks that `addr` is HOST:PORT with a non-empty host and a port number.
pub fn check_addr(addr: &str) -> Result<(), MembershipError> {
    let bad = || MembershipError::BadAddress(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// A majority of `set` answers yes (an empty set has none).
fn majority(set: &BTreeSet<NodeId>, yes: &impl Fn(NodeId) -> bool) -> bool {
    set.iter().filter(|&&id| yes(id)).count() > set.len() / 2
}

/// The highest index a majority of `set` has reached (0 for an empty set).
fn majority_index(set: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> u64) -> u64 {
    let mut indexes: Vec<u64> = set.iter().map(|&id| matched(id)).collect();
    if indexes.is_empty() {
        return 0;
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[set.len() / 2]
}

impl Membership {
    /// A membership of `voters` with no addresses (tests and the core's own callers).
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), ..Membership::default() }
    }

    /// The first membership of a new cluster: every member a voter.
    pub fn bootstrap(members: BTreeMap<NodeId, MemberAddrs>) -> Membership {
        Membership { voters: members.keys().copied().collect(), addrs: members, ..Membership::default() }
    }

    /// The founding membership of a new cluster from `--peers` (id to peer address): all voters,
    /// client addresses learnt later from handshakes.
    pub fn from_peers(peers: &BTreeMap<NodeId, String>) -> Membership {
        let members = peers
            .iter()
            .map(|(&id, peer)| (id, MemberAddrs { peer_addr: peer.clone(), client_addr: String::new() }))
            .collect();
        Membership::bootstrap(members)
    }

    /// No membership is known (a replica that has not yet received the log).
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.outgoing.is_empty() && self.learners.is_empty()
    }

    /// Two voter sets are in force (thesis §4.3).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// `id` votes (in either voter set).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// `id` is in any set.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every voter of either set, in id order.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// Every member of any set, in id order.
    pub fn ids(&self) -> Vec<NodeId> {
        let mut ids: BTreeSet<NodeId> = self.voters.union(&self.outgoing).copied().collect();
        ids.extend(&self.learners);
        ids.into_iter().collect()
    }

    /// Whether the members for whom `yes` holds make a quorum: a majority of every voter set.
    pub fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        majority(&self.voters, &yes) && (self.outgoing.is_empty() || majority(&self.outgoing, &yes))
    }

    /// The highest index stored by a quorum, given each voter's match index.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> u64) -> u64 {
        let incoming = majority_index(&self.voters, &matched);
        if self.outgoing.is_empty() {
            incoming
        } else {
            incoming.min(majority_index(&self.outgoing, &matched))
        }
    }

    /// Tallies votes (true = granted); voters who have not answered are unknown.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let won = self.has_quorum(|id| votes.get(&id) == Some(&true));
        let could_win = self.has_quorum(|id| votes.get(&id) != Some(&false));
        if self.voters.is_empty() {
            VoteResult::Lost
        } else if won {
            VoteResult::Won
        } else if could_win {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }

    /// The membership `ops` lead to, checked: joint when more than one voter changes.
    pub fn plan(&self, ops: &[ChangeOp]) -> Result<Membership, MembershipError> {
        if self.is_joint() {
            return Err(MembershipError::InProgress);
        }
        if ops.is_empty() {
            return Err(MembershipError::NoSteps);
        }
        let mut seen = BTreeSet::new();
        let mut next = self.clone();
        for op in ops {
            let id = op.id();
            if id == 0 {
                return Err(MembershipError::IdZero);
            }
            if !seen.insert(id) {
                return Err(MembershipError::Duplicate(id));
            }
            match op {
                ChangeOp::Add { addrs, .. } => {
                    if next.contains(id) {
                        return Err(MembershipError::AlreadyMember(id));
                    }
                    if next.removed.contains(&id) {
                        return Err(MembershipError::Reused(id));
                    }
                    check_addr(&addrs.peer_addr)?;
                    check_addr(&addrs.client_addr)?;
                    next.learners.insert(id);
                    next.addrs.insert(id, addrs.clone());
                }
                ChangeOp::Promote { .. } => {
                    if next.voters.contains(&id) {
                        return Err(MembershipError::AlreadyVoter(id));
                    }
                    if !next.learners.remove(&id) {
                        return Err(MembershipError::Unknown(id));
                    }
                    next.voters.insert(id);
                }
                ChangeOp::Remove { .. } => {
                    if !next.contains(id) {
                        return Err(MembershipError::Unknown(id));
                    }
                    next.voters.remove(&id);
                    next.learners.remove(&id);
                    next.removed.insert(id);
                }
            }
        }
        if next.voters.is_empty() {
            return Err(MembershipError::NoVoterLeft);
        }
        if self.voters.symmetric_difference(&next.voters).count() > 1 {
            next.outgoing = self.voters.clone();
        }
        next.forget_departed();
        Ok(next)
    }

    /// The membership after applying `change`.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, MembershipError> {
        match change {
            ConfChange::Bootstrap(first) if self.is_empty() => Ok(first.clone()),
            ConfChange::Bootstrap(_) => Err(MembershipError::AlreadyBootstrapped),
            ConfChange::Change(ops) => self.plan(ops),
            ConfChange::LeaveJoint if self.is_joint() => {
                let mut next = self.clone();
                next.outgoing.clear();
                next.forget_departed();
                Ok(next)
            }
            ConfChange::LeaveJoint => Err(MembershipError::NotJoint),
        }
    }

    /// Drops the addresses of ids no longer in any set.
    fn forget_departed(&mut self) {
        let keep: BTreeSet<NodeId> = self.ids().into_iter().collect();
        self.addrs.retain(|id, _| keep.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u64) -> MemberAddrs {
        MemberAddrs {
            peer_addr: format!("127.0.0.1:{}", 7000 + n),
            client_addr: format!("127.0.0.1:{}", 6000 + n),
        }
    }

    fn three() -> Membership {
        Membership::bootstrap((1..=3).map(|n| (n, addrs(n))).collect())
    }

    #[test]
    fn single_steps_apply_directly_and_two_voter_changes_go_joint() {
        let m = three().plan(&[ChangeOp::Add { id: 4, addrs: addrs(4) }]).expect("add");
        assert!(!m.is_joint() && m.is_learner(4) && !m.is_voter(4));
        let m = m.plan(&[ChangeOp::Promote { id: 4 }]).expect("promote");
        assert!(!m.is_joint() && m.is_voter(4));
        let m = m.plan(&[ChangeOp::Add { id: 5, addrs: addrs(5) }]).expect("add 5");
        let joint = m.plan(&[ChangeOp::Promote { id: 5 }, ChangeOp::Remove { id: 1 }]).expect("swap");
        assert!(joint.is_joint());
        assert_eq!(joint.outgoing, BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(joint.voters, BTreeSet::from([2, 3, 4, 5]));
        assert!(joint.addrs.contains_key(&1), "a leaving voter is still reachable while joint");
        assert_eq!(joint.plan(&[ChangeOp::Remove { id: 2 }]), Err(MembershipError::InProgress));
        let left = joint.apply(&ConfChange::LeaveJoint).expect("leave");
        assert!(!left.is_joint() && !left.contains(1) && !left.addrs.contains_key(&1));
        assert!(left.removed.contains(&1));
    }

    #[test]
    fn bad_changes_are_refused_with_a_reason() {
        let m = three();
        let add = |id| ChangeOp::Add { id, addrs: addrs(id) };
        assert_eq!(m.plan(&[add(2)]), Err(MembershipError::AlreadyMember(2)));
        assert_eq!(m.plan(&[add(0)]), Err(MembershipError::IdZero));
        assert_eq!(m.plan(&[ChangeOp::Promote { id: 2 }]), Err(MembershipError::AlreadyVoter(2)));
        assert_eq!(m.plan(&[ChangeOp::Promote { id: 9 }]), Err(MembershipError::Unknown(9)));
        assert_eq!(m.plan(&[ChangeOp::Remove { id: 9 }]), Err(MembershipError::Unknown(9)));
        assert_eq!(m.plan(&[]), Err(MembershipError::NoSteps));
        assert_eq!(
            m.plan(&[add(4), ChangeOp::Promote { id: 4 }, add(4)]),
            Err(MembershipError::Duplicate(4))
        );
        let all = [ChangeOp::Remove { id: 1 }, ChangeOp::Remove { id: 2 }, ChangeOp::Remove { id: 3 }];
        assert_eq!(m.plan(&all), Err(MembershipError::NoVoterLeft));
        let bad = ChangeOp::Add {
            id: 4,
            addrs: MemberAddrs { peer_addr: "nope".into(), client_addr: "h:1".into() },
        };
        assert_eq!(m.plan(&[bad]), Err(MembershipError::BadAddress("nope".into())));
        let gone = m.plan(&[ChangeOp::Remove { id: 3 }]).expect("remove");
        assert_eq!(gone.plan(&[add(3)]), Err(MembershipError::Reused(3)));
        assert_eq!(m.apply(&ConfChange::Bootstrap(three())), Err(MembershipError::AlreadyBootstrapped));
        assert_eq!(m.apply(&ConfChange::LeaveJoint), Err(MembershipError::NotJoint));
    }

    #[test]
    fn joint_quorums_need_a_majority_of_both_sets() {
        let mut m = Membership::from_voters([4, 5, 6]);
        m.outgoing = BTreeSet::from([1, 2, 3]);
        assert!(!m.has_quorum(|id| [1, 2, 3].contains(&id)));
        assert!(!m.has_quorum(|id| [4, 5, 6].contains(&id)));
        assert!(m.has_quorum(|id| [1, 2, 4, 5].contains(&id)));
        let matched = |id: NodeId| [0, 9, 9, 3, 8, 8, 2][id as usize];
        assert_eq!(m.committed_index(matched), 8, "both majorities hold 8");
        let votes = BTreeMap::from([(1, true), (2, true), (4, false), (5, false)]);
        assert_eq!(m.vote_result(&votes), VoteResult::Lost);
        let votes = BTreeMap::from([(1, true), (2, true), (4, true)]);
        assert_eq!(m.vote_result(&votes), VoteResult::Pending);
        let votes = BTreeMap::from([(1, true), (2, true), (4, true), (6, true)]);
        assert_eq!(m.vote_result(&votes), VoteResult::Won);
    }

    #[test]
    fn learners_never_count() {
        let mut m = Membership::from_voters([1]);
        m.learners.insert(2);
        assert!(!m.has_quorum(|id| id == 2));
        assert!(m.has_quorum(|id| id == 1));
        assert_eq!(m.committed_index(|id| if id == 1 { 5 } else { 9 }), 5);
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        for good in ["127.0.0.1:1", "localhost:6380", "[::1]:7000", "db-1.example:65535"] {
            assert_eq!(check_addr(good), Ok(()), "{good}");
        }
        for bad in ["", "localhost", ":80", "h:", "h:99999", "h:x", "a b:1"] {
            assert!(check_addr(bad).is_err(), "{bad}");
        }
    }
}
