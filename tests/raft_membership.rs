//! Membership changes in the Raft core, rule by rule (Raft thesis ch. 4 and §3.10).

mod common;

use std::collections::BTreeSet;

use common::raft_net::{drain, Net};
use quorumkv::protocol::raft::{
    ChangeError, ChangeOp, Config, HardState, MemberAddrs, Membership, MembershipError, Message, MessageBody,
    ProposeError, RaftCore, Role, Snapshot, SnapshotMeta, TransferError,
};

fn addrs(id: u64) -> MemberAddrs {
    MemberAddrs {
        peer_addr: format!("127.0.0.1:{}", 7000 + id),
        client_addr: format!("127.0.0.1:{}", 6000 + id),
    }
}

fn add(id: u64) -> ChangeOp {
    ChangeOp::Add { id, addrs: addrs(id) }
}

/// A node joining a network whose founding voters are `founders` (the membership at index 0):
/// it knows nothing else and learns the rest from the log.
fn joiner(id: u64, founders: &[u64], pre_vote: bool, check_quorum: bool) -> RaftCore {
    let mut config = Config::new(id, founders.to_vec());
    config.pre_vote = pre_vote;
    config.check_quorum = check_quorum;
    config.seed = id * 7919;
    let at_zero = Membership::from_voters(founders.iter().copied());
    RaftCore::restore(config, HardState::default(), SnapshotMeta::default(), at_zero, Vec::new())
}

fn elect(net: &mut Net, id: u64) {
    net.campaign(id);
    assert_eq!(net.node(id).role(), Role::Leader, "node {id} should have won");
}

/// Proposes `ops` on `leader`, delivers everything, and checks the change is in force there.
fn change(net: &mut Net, leader: u64, ops: Vec<ChangeOp>) {
    net.node(leader).propose_change(ops).expect("change accepted");
    net.stabilize();
}

/// Cuts every link between a node of `a` and a node of `b`, both ways.
fn cut_between(net: &mut Net, a: &[u64], b: &[u64]) {
    for &x in a {
        for &y in b {
            net.cut.insert((x, y));
            net.cut.insert((y, x));
        }
    }
}

fn ids(set: &BTreeSet<u64>) -> Vec<u64> {
    set.iter().copied().collect()
}

/// 1, 2, 3 voting; 4 and 5 added as learners and caught up.
fn five_with_two_learners() -> Net {
    let mut net = Net::new(3, false, false);
    net.nodes.insert(4, joiner(4, &[1, 2, 3], false, false));
    net.nodes.insert(5, joiner(5, &[1, 2, 3], false, false));
    elect(&mut net, 1);
    change(&mut net, 1, vec![add(4)]);
    change(&mut net, 1, vec![add(5)]);
    for id in 1..=5 {
        let m = net.node(id).membership().clone();
        assert_eq!(ids(&m.voters), vec![1, 2, 3], "node {id}");
        assert_eq!(ids(&m.learners), vec![4, 5], "node {id}");
    }
    net
}

// Thesis §4.3: while joint, committing needs a majority of the old voters and of the new.
#[test]
fn joint_commit_needs_a_majority_of_both_voter_sets() {
    let mut net = five_with_two_learners();
    cut_between(&mut net, &[1], &[4, 5]);
    let ops = vec![
        ChangeOp::Promote { id: 4 },
        ChangeOp::Promote { id: 5 },
        ChangeOp::Remove { id: 2 },
        ChangeOp::Remove { id: 3 },
    ];
    let (joint_index, _) = net.node(1).propose_change(ops).expect("accepted");
    net.stabilize();
    // The joint entry commits under the old voters, then the joint membership is in force: the
    // leader's automatic leave needs 4 or 5 as well, and they are cut off.
    let m = net.node(1).membership().clone();
    assert!(m.is_joint(), "joint after the change applied: {m:?}");
    assert_eq!((ids(&m.voters), ids(&m.outgoing)), (vec![1, 4, 5], vec![1, 2, 3]));
    let leave_index = net.node(1).log().last_index();
    assert!(leave_index > joint_index, "the leader proposed leaving the joint membership");
    assert_eq!(net.node(1).log().committed(), joint_index, "1, 2, 3 alone cannot commit while joint");
    let (data_index, _) = net.node(1).propose(b"x".to_vec()).expect("leader");
    net.stabilize();
    assert!(net.node(1).log().committed() < data_index);
    net.heal();
    // Appends lost to the cut are resent after an election timeout without an answer.
    let timeout = net.node(1).config().election_timeout_ticks;
    net.tick(1, timeout + 2);
    assert!(net.node(1).log().committed() >= data_index);
    for id in [1, 4, 5] {
        let m = net.node(id).membership().clone();
        assert!(!m.is_joint(), "node {id} left the joint membership");
        assert_eq!(ids(&m.voters), vec![1, 4, 5], "node {id}");
        assert_eq!(ids(&m.removed), vec![2, 3], "node {id}");
    }
}

// Thesis §4.3: while joint, an election needs a majority of both voter sets too.
#[test]
fn joint_election_needs_a_majority_of_both_voter_sets() {
    let mut net = five_with_two_learners();
    // 4 and 5 hear nothing more, so their logs end before the joint entry.
    cut_between(&mut net, &[1, 2, 3], &[4, 5]);
    let ops = vec![ChangeOp::Promote { id: 4 }, ChangeOp::Promote { id: 5 }, ChangeOp::Remove { id: 3 }];
    net.node(1).propose_change(ops).expect("accepted");
    net.stabilize();
    assert!(net.node(2).membership().is_joint(), "2 applied the joint membership");
    net.isolate(1);
    net.campaign(2);
    assert_ne!(net.node(2).role(), Role::Leader, "2 and 3 are a majority of the old voters only");
    // 4 and 5 (whose logs are behind 2's) can now vote: 2 wins with both majorities.
    for other in [4, 5] {
        net.cut.remove(&(2, other));
        net.cut.remove(&(other, 2));
    }
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
}

// A voter whose driver holds back applying a committed membership change (a follower's apply
// ceiling, behind its forwarded reads) does not campaign until it has applied it: with the
// membership before it, a majority of the old voters alone could elect it after the cluster left
// them (here the joint change and its leaving commit, 3 is removed, and 1 is lost).
#[test]
fn a_voter_does_not_campaign_with_a_committed_membership_change_unapplied() {
    let mut net = five_with_two_learners();
    let held = net.node(3).log().applied();
    net.node(3).set_apply_ceiling(Some(held));
    let ops = vec![ChangeOp::Promote { id: 4 }, ChangeOp::Remove { id: 3 }];
    net.node(1).propose_change(ops).expect("accepted");
    net.stabilize();
    net.tick(1, 2); // the leave-joint entry
    assert!(!net.node(1).membership().is_joint() && !net.node(1).membership().contains(3));
    assert!(net.node(3).log().committed() > held, "3 knows the change committed");
    assert_eq!(net.node(3).membership().voters.len(), 3, "and has not applied it");
    net.isolate(1);
    let term = net.node(3).term();
    net.campaign(3);
    assert_eq!((net.node(3).role(), net.node(3).term()), (Role::Follower, term), "3 campaigned");
    net.node(3).set_apply_ceiling(None);
    net.tick(3, 1);
    assert!(!net.node(3).membership().contains(3), "applied: 3 knows it was removed");
}

// A leader's TimeoutNow that arrives while such a change is unapplied is taken once it is: a
// leader removing itself hands over as the change commits, often before the successor applies it.
#[test]
fn a_hand_over_waits_for_the_membership_change_to_be_applied_and_then_happens() {
    let mut net = five_with_two_learners();
    let held = net.node(2).log().applied();
    net.node(2).set_apply_ceiling(Some(held));
    change(&mut net, 1, vec![ChangeOp::Promote { id: 4 }]);
    assert!(net.node(2).log().committed() > held && net.node(2).membership().is_learner(4));
    let term = net.node(1).term();
    net.node(1).transfer_leader(2).expect("started");
    net.stabilize();
    assert!(net.delivered.iter().any(|m| m.body == MessageBody::TimeoutNow && m.to == 2));
    assert_eq!((net.node(2).role(), net.node(2).term()), (Role::Follower, term), "campaigned unapplied");
    net.node(2).set_apply_ceiling(None);
    net.tick(2, 1); // applies it
    net.tick(2, 1);
    assert_eq!(net.node(2).role(), Role::Leader, "the hand-over was dropped");
    assert!(net.node(2).membership().is_voter(4));
    // Not once the leader has given the transfer up (an election timeout): it leads on.
    let mut net = five_with_two_learners();
    let held = net.node(2).log().applied();
    net.node(2).set_apply_ceiling(Some(held));
    change(&mut net, 1, vec![ChangeOp::Promote { id: 4 }]);
    net.node(1).transfer_leader(2).expect("started");
    net.stabilize();
    let timeout = net.node(2).config().election_timeout_ticks;
    for _ in 0..2 * timeout + 2 {
        // The leader's heartbeats keep 2's own election timer from running out.
        net.node(1).tick();
        net.node(2).tick();
        net.stabilize();
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(2).set_apply_ceiling(None);
    net.tick(2, 1);
    net.tick(2, 1);
    assert_eq!(net.node(1).role(), Role::Leader, "a stale hand-over deposed the leader");
}

// Learners get the log but never vote, never count toward a quorum, and never campaign.
#[test]
fn learners_replicate_but_never_count_or_campaign() {
    let mut net = Net::new(3, false, false);
    net.nodes.insert(4, joiner(4, &[1, 2, 3], false, false));
    elect(&mut net, 1);
    change(&mut net, 1, vec![add(4)]);
    let term = net.node(1).term();
    for _ in 0..200 {
        net.node(4).tick();
    }
    net.stabilize();
    assert_eq!(
        (net.node(4).role(), net.node(1).term()),
        (Role::Follower, term),
        "the learner never campaigned"
    );
    // With 2 and 3 cut off, the leader and its learner are not a quorum.
    cut_between(&mut net, &[1], &[2, 3]);
    let (index, _) = net.node(1).propose(b"x".to_vec()).expect("leader");
    net.stabilize();
    assert_eq!(net.node(4).log().last_index(), index, "the learner has the entry");
    assert!(net.node(1).log().committed() < index, "a learner's copy does not commit it");
}

// One change at a time: a second is refused while the first is not applied, and a new leader
// accepts none before it has committed (and applied) an entry of its own term.
#[test]
fn one_change_at_a_time_and_not_before_the_leaders_first_commit() {
    let mut net = Net::new(3, false, false);
    elect(&mut net, 1);
    net.stabilize();
    net.node(1).propose_change(vec![add(4)]).expect("first");
    assert!(!net.node(1).change_awaits_noop(), "a change is under way, not the no-op");
    assert_eq!(
        net.node(1).propose_change(vec![add(5)]),
        Err(ChangeError::Refused(MembershipError::InProgress))
    );
    net.stabilize();
    net.node(1).propose_change(vec![add(5)]).expect("after the first applied");

    let mut single =
        RaftCore::new(Config::new(1, vec![1]), HardState::default(), SnapshotMeta::default(), vec![]);
    while single.role() != Role::Leader {
        single.tick();
    }
    assert_eq!(
        single.propose_change(vec![add(2)]),
        Err(ChangeError::Refused(MembershipError::InProgress)),
        "its no-op is not applied yet"
    );
    assert!(single.change_awaits_noop(), "only its no-op holds a change back");
    drain(&mut single);
    assert!(!single.change_awaits_noop());
    single.propose_change(vec![add(2)]).expect("after its no-op");
    let refused = [
        (vec![add(1)], MembershipError::AlreadyMember(1)),
        (vec![ChangeOp::Promote { id: 1 }], MembershipError::AlreadyVoter(1)),
        (vec![ChangeOp::Remove { id: 9 }], MembershipError::Unknown(9)),
    ];
    drain(&mut single);
    for (ops, error) in refused {
        assert_eq!(single.propose_change(ops), Err(ChangeError::Refused(error)));
    }
    assert_eq!(
        single.propose_change(vec![ChangeOp::Remove { id: 1 }]),
        Err(ChangeError::Refused(MembershipError::NoVoterLeft))
    );
}

// A learner far behind the leader is not promoted: it could not vote usefully yet.
#[test]
fn promoting_a_lagging_learner_is_refused_until_it_catches_up() {
    let mut net = Net::new(3, false, false);
    net.nodes.insert(4, joiner(4, &[1, 2, 3], false, false));
    elect(&mut net, 1);
    change(&mut net, 1, vec![add(4)]);
    net.cut.insert((1, 4));
    let lag = net.node(1).config().max_promote_lag + 1;
    for i in 0..lag {
        net.node(1).propose(i.to_le_bytes().to_vec()).expect("leader");
        net.stabilize();
    }
    match net.node(1).propose_change(vec![ChangeOp::Promote { id: 4 }]) {
        Err(ChangeError::NotCaughtUp { id: 4, behind }) => assert!(behind >= lag),
        other => panic!("expected a refusal, got {other:?}"),
    }
    net.heal();
    let timeout = net.node(1).config().election_timeout_ticks;
    net.tick(1, timeout + 2);
    change(&mut net, 1, vec![ChangeOp::Promote { id: 4 }]);
    assert!(net.node(4).membership().is_voter(4));
}

// Thesis §4.2.2: a removed leader leads until the change removing it commits; then it hands
// leadership to a remaining voter (TimeoutNow) and steps down when that one takes over.
#[test]
fn a_removed_leader_steps_down_once_its_removal_commits() {
    let mut net = Net::new(3, false, false);
    elect(&mut net, 1);
    let term = net.node(1).term();
    let (index, _) = net.node(1).propose_change(vec![ChangeOp::Remove { id: 1 }]).expect("accepted");
    net.flush();
    assert_eq!(net.node(1).role(), Role::Leader, "still leading while the removal is uncommitted");
    net.stabilize();
    assert!(net.node(1).log().committed() >= index);
    assert_ne!(net.node(1).role(), Role::Leader);
    let leaders: Vec<u64> = [2, 3].into_iter().filter(|&id| net.node(id).role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "a remaining voter took over without waiting for a timeout");
    assert_eq!(net.node(leaders[0]).term(), term + 1);
    for id in [2, 3] {
        assert_eq!(ids(&net.node(id).membership().voters), vec![2, 3]);
    }
}

// A removed leader whose chosen successor is down tries another: the remaining voters, still in
// its lease, would never campaign on their own, and every write would be refused until the dead
// voter came back.
#[test]
fn a_removed_leader_hands_over_past_a_dead_voter() {
    let mut net = Net::new(5, true, true);
    elect(&mut net, 1);
    // The removal reaches 4 and 5 only, so one of them is the successor chosen when it commits.
    cut_between(&mut net, &[1], &[2, 3]);
    net.node(1).propose_change(vec![ChangeOp::Remove { id: 1 }]).expect("accepted");
    let mut chosen = None;
    for _ in 0..1000 {
        chosen = net.node(1).lead_transferee();
        if chosen.is_some() {
            break;
        }
        assert!(net.deliver_one(), "the removal committed and the hand-over began");
    }
    let chosen = chosen.expect("a successor");
    assert!([4, 5].contains(&chosen), "the most caught up: {chosen}");
    // It dies before its TimeoutNow arrives; 2 and 3 are reached again and catch up, so every
    // remaining voter is as caught up as the dead one.
    net.nodes.remove(&chosen);
    net.heal();
    net.stabilize();
    let live: Vec<u64> = [2, 3, 4, 5].into_iter().filter(|&id| id != chosen).collect();
    let timeout = net.node(1).config().election_timeout_ticks;
    let everyone: Vec<u64> = std::iter::once(1).chain(live.iter().copied()).collect();
    for _ in 0..10 * timeout {
        for &id in &everyone {
            net.node(id).tick();
        }
        net.stabilize();
        if live.iter().any(|&id| net.node(id).role() == Role::Leader) {
            break;
        }
    }
    let leaders: Vec<u64> = live.iter().copied().filter(|&id| net.node(id).role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "a live voter took over (1 is {:?})", net.node(1).role());
    assert_ne!(net.node(1).role(), Role::Leader);
}

// Thesis §4.2.3: a removed server that never learnt it was removed cannot disrupt the cluster:
// check-quorum and pre-vote keep the members from listening to its campaigns.
#[test]
fn a_removed_server_does_not_disrupt_the_cluster() {
    let mut net = Net::new(3, true, true);
    elect(&mut net, 1);
    net.isolate(3);
    change(&mut net, 1, vec![ChangeOp::Remove { id: 3 }]);
    assert!(!net.node(1).membership().contains(3));
    assert!(net.node(3).membership().contains(3), "3 never heard of its removal");
    net.heal();
    let term = net.node(1).term();
    for _ in 0..300 {
        net.node(3).tick();
        net.node(1).tick();
        net.node(2).tick();
        net.stabilize();
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!((net.node(1).term(), net.node(2).term()), (term, term), "no election was forced");
}

// Thesis §3.10: leadership moves to a caught-up voter through TimeoutNow.
#[test]
fn leader_transfer_hands_over_to_the_target() {
    let mut net = Net::new(3, false, false);
    elect(&mut net, 1);
    let term = net.node(1).term();
    net.node(1).transfer_leader(2).expect("started");
    net.stabilize();
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(net.node(2).term(), term + 1);
    assert_eq!(net.node(1).leader(), 2);
    assert!(net.delivered.iter().any(|m| m.body == MessageBody::TimeoutNow));
}

// While a transfer is under way proposals are refused; one that cannot finish is abandoned after
// an election timeout and the leader takes proposals again.
#[test]
fn a_transfer_that_cannot_finish_is_abandoned() {
    let mut net = Net::new(3, false, false);
    elect(&mut net, 1);
    net.cut.insert((1, 2));
    net.node(1).propose(b"behind".to_vec()).expect("leader");
    net.stabilize();
    net.node(1).transfer_leader(2).expect("started");
    net.stabilize();
    assert_eq!(net.node(1).propose(b"x".to_vec()), Err(ProposeError::Transferring));
    let timeout = net.node(1).config().election_timeout_ticks;
    net.tick(1, timeout);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).lead_transferee(), None);
    net.node(1).propose(b"x".to_vec()).expect("proposals again");
    assert_eq!(net.node(1).transfer_leader(1), Err(TransferError::ToSelf(1)));
    assert_eq!(net.node(1).transfer_leader(9), Err(TransferError::NotVoter(9)));
}

// A snapshot carries the membership at its index; installing it puts that membership in force.
#[test]
fn a_snapshot_brings_its_membership() {
    let mut n = joiner(4, &[1, 2, 3], false, false);
    let mut membership = Membership::from_voters([1, 2, 5]);
    membership.learners.insert(4);
    let snapshot =
        Snapshot { meta: SnapshotMeta { index: 50, term: 3 }, membership: membership.clone(), data: vec![] };
    n.step(Message { from: 1, to: 4, term: 3, body: MessageBody::InstallSnapshot { snapshot } })
        .expect("valid");
    let (_, readies) = drain(&mut n);
    assert_eq!(n.membership(), &membership);
    assert!(readies.iter().any(|r| r.membership.as_ref() == Some(&membership)), "the Ready reports it");
}

// A new member whose first probe is lost still gets the log with no write to carry it: the
// next heartbeat's answer brings another (empty) probe.
#[test]
fn a_new_member_whose_first_probe_is_lost_catches_up_on_heartbeats() {
    let mut net = Net::new(3, false, false);
    net.nodes.insert(4, joiner(4, &[1, 2, 3], false, false));
    elect(&mut net, 1);
    net.cut.insert((1, 4));
    change(&mut net, 1, vec![add(4)]);
    assert_eq!(net.node(4).log().last_index(), 0, "the probe was lost");
    net.heal();
    let heartbeat = net.node(1).config().heartbeat_ticks;
    net.tick(1, heartbeat);
    assert_eq!(net.node(4).log().last_index(), net.node(1).log().last_index());
    assert!(net.node(4).membership().is_learner(4));
}
