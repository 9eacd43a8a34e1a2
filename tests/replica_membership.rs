//! Membership changes on real actors, under load, partitions and crashes: grow and shrink,
//! replace every member, kill a replica in the middle of a change, cut a learner off while it
//! is promoted. Every history is checked for linearizability and every acknowledged append
//! must be present exactly once. And a join restarted before its membership was recorded.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::TestCluster;
use common::kv_suite::{
    check_appends, check_linearizable, clerk_id, clerk_loop, seed, Clerk, ClerkError, ClerkLog,
};
use common::linearizability::HistoryRecorder;
use common::wait_until;
use quorumkv::actors::sim_network::{SimFaults, SimNetwork};
use quorumkv::client::{Client, ClientConfig};
use quorumkv::protocol::resp::Reply;

/// A replica started to join, restarted before the cluster sent it anything (its log holds a
/// hard state only), with a config that no longer says join and lists only itself (what the
/// server passed on such a restart): it is still a joiner, with no log and no membership of
/// its own, and never leads, also when a leader's heartbeat had moved its term first. (It
/// bootstrapped a cluster of one, or took itself alone as the membership, and elected itself.)
#[test]
fn a_join_restarted_before_its_membership_is_recorded_is_still_a_join() {
    use quorumkv::protocol::raft::HardState;
    use quorumkv::storage::{data_dir::is_joining, DataDir, Wal, WalOptions};
    use std::collections::BTreeMap;
    use std::time::Instant;
    for moved_term in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = common::cluster::test_config(4, dir.path());
        config.peers = BTreeMap::from([(1, "127.0.0.1:1".to_string()), (4, "127.0.0.1:2".to_string())]);
        config.join = true;
        let data_dir = config.data_dir.clone();
        let (_, _, stop, thread) = run_one(config.clone());
        let _ = stop.send(());
        thread.join().expect("replica thread");
        assert!(is_joining(&data_dir), "a join in progress is marked");
        if moved_term {
            let dir = DataDir::open(&data_dir, &config.cluster_name, 4).expect("open the data dir");
            let witness = dir.wal_witness();
            let (mut wal, _) = Wal::open_witnessed(dir.wal_dir(), WalOptions::default(), Some(&witness))
                .expect("open the log");
            wal.append(Some(HardState { term: 5, vote: 0, commit: 0 }), &[]).expect("a newer term");
        }
        config.join = false;
        config.peers = BTreeMap::from([(4, "127.0.0.1:2".to_string())]);
        let window = Duration::from_millis(4 * config.election_timeout_ms);
        let (_, status, stop, thread) = run_one(config);
        // Watched for several election timeouts: a cluster of one elects itself in one.
        let until = Instant::now() + window;
        while Instant::now() < until {
            let membership = status.membership();
            assert!(
                membership.is_empty() && !status.is_leader() && status.last_log_index() == 0,
                "moved term {moved_term}: a joiner became a cluster of its own: {membership:?}, leader {}, \
                 last index {}",
                status.is_leader(),
                status.last_log_index()
            );
            std::thread::park_timeout(Duration::from_millis(10));
        }
        let _ = stop.send(());
        thread.join().expect("replica thread");
        assert!(is_joining(&data_dir), "still joining");
    }
}

/// A joiner's mark goes once its membership is recorded: restarted after it caught up, it is a
/// member like any other (the restart needs nobody's address book).
#[test]
fn a_joiner_restarted_after_it_caught_up_is_a_member_and_no_longer_marked() {
    use quorumkv::storage::data_dir::is_joining;
    let mut cluster = TestCluster::start_with_spares(3, 1, None, |_| {});
    let leader = cluster.wait_for_leader_among(&[1, 2, 3], STEP_TIMEOUT);
    let mut client =
        Client::new(ClientConfig::new(vec![cluster.client_addrs[&leader].to_string()])).expect("client");
    let (peer, addr) = (cluster.peer_addrs[&4].to_string(), cluster.client_addrs[&4].to_string());
    let add = client.call(&[
        b"MEMBER".to_vec(),
        b"ADD".to_vec(),
        b"4".to_vec(),
        peer.into_bytes(),
        addr.into_bytes(),
    ]);
    assert_eq!(add.expect("MEMBER ADD"), Reply::Simple("OK".into()));
    let data_dir = cluster.dir.path().join("replica-4");
    assert!(is_joining(&data_dir), "a join in progress is marked");
    wait_until("replica 4 to record its membership", STEP_TIMEOUT, || {
        let m = cluster.status[&4].membership();
        if m.is_learner(4) {
            Ok(())
        } else {
            Err(m)
        }
    });
    cluster.stop(4);
    cluster.restart(4);
    assert!(!is_joining(&data_dir), "the mark outlived the recorded membership");
    wait_until("replica 4 to know itself a learner again", STEP_TIMEOUT, || {
        let m = cluster.status[&4].membership();
        if m.is_learner(4) {
            Ok(())
        } else {
            Err(m)
        }
    });
}

/// Runs one replica on a thread of its own until the returned sender fires: its client address
/// and status.
fn run_one(
    config: quorumkv::actors::replica::ReplicaConfig,
) -> (
    std::net::SocketAddr,
    Arc<quorumkv::actors::status::StatusBoard>,
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<()>,
) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let replica = quorumkv::actors::replica::Replica::start(config).await.expect("start");
            let _ = ready_tx.send((replica.client_addr, replica.status.clone()));
            let _ = stop_rx.await;
            replica.stop().await;
        })
    });
    let (addr, status) = ready_rx.recv().expect("replica started");
    (addr, status, stop_tx, thread)
}

/// A data dir from before memberships were recorded (its log starts with a plain entry) takes
/// `--peers` as its membership; a change made since is kept through a snapshot and a restart.
/// (Its state machine had no membership, so it applied no change and its snapshots recorded
/// none: the restart went back to `--peers` alone, forgetting the member added.)
#[test]
fn a_data_dir_from_before_memberships_keeps_its_changes_through_a_snapshot() {
    use quorumkv::protocol::raft::{Entry, EntryKind, HardState};
    use quorumkv::storage::{DataDir, Wal, WalOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::cluster::test_config(1, dir.path());
    config.snapshot_threshold_bytes = 1; // a snapshot at every chance
    {
        let data = DataDir::open(&config.data_dir, &config.cluster_name, 1).expect("open the data dir");
        let witness = data.wal_witness();
        let (mut wal, _) =
            Wal::open_witnessed(data.wal_dir(), WalOptions::default(), Some(&witness)).expect("log");
        let old = Entry { term: 1, index: 1, data: Vec::new().into(), kind: EntryKind::Normal };
        wal.append(Some(HardState { term: 1, vote: 1, commit: 1 }), &[old]).expect("an old log");
    }
    let (addr, status, stop, thread) = run_one(config.clone());
    wait_until(
        "a leader",
        STEP_TIMEOUT,
        || if status.is_leader() { Ok(()) } else { Err(status.role_name()) },
    );
    let mut client = Client::new(ClientConfig::new(vec![addr.to_string()])).expect("client");
    let add = client.call(&[
        b"MEMBER".to_vec(),
        b"ADD".to_vec(),
        b"9".to_vec(),
        b"127.0.0.1:1".to_vec(),
        b"127.0.0.1:2".to_vec(),
    ]);
    assert_eq!(add.expect("MEMBER ADD"), Reply::Simple("OK".into()));
    let added_at = status.applied_index();
    let set = client.call(&[b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
    assert_eq!(set.expect("SET"), Reply::Simple("OK".into()));
    wait_until("a snapshot past the change", STEP_TIMEOUT, || {
        let at = status.snapshot_index();
        if at > added_at {
            Ok(())
        } else {
            Err(at)
        }
    });
    let _ = stop.send(());
    thread.join().expect("replica thread");
    let (_, status, stop, thread) = run_one(config);
    wait_until("the learner added before the snapshot", STEP_TIMEOUT, || {
        let m = status.membership();
        if m.is_learner(9) && m.is_voter(1) {
            Ok(())
        } else {
            Err(m)
        }
    });
    let _ = stop.send(());
    thread.join().expect("replica thread");
}

/// How long one membership step may take, retries included.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

struct Scenario {
    name: &'static str,
    seed: u64,
    cluster: TestCluster,
    history: Arc<HistoryRecorder>,
    stop: Arc<AtomicBool>,
    healed: Arc<AtomicBool>,
    clerks: Vec<JoinHandle<Result<ClerkLog, ClerkError>>>,
}

impl Scenario {
    /// `founders` voting replicas and `spares` waiting to be added, on the simulated network,
    /// with `clients` clerks appending to their own keys through every replica.
    fn start(name: &'static str, founders: u64, spares: u64, clients: usize) -> Scenario {
        let seed = seed(name);
        let network = SimNetwork::new(seed, SimFaults::reliable());
        let cluster = TestCluster::start_with_spares(founders, spares, Some(network), move |c| {
            c.request_timeout_ms = 1500;
            c.seed = Some(seed);
        });
        let history = Arc::new(HistoryRecorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let healed = Arc::new(AtomicBool::new(false));
        let servers = cluster.servers();
        let clerks = (0..clients)
            .map(|n| {
                let clerk = Clerk::new(clerk_id(), servers.clone(), false, seed ^ n as u64, history.clone())
                    .with_flags(Arc::new(AtomicBool::new(false)), healed.clone());
                let stop = stop.clone();
                std::thread::spawn(move || clerk_loop(clerk, n, false, stop))
            })
            .collect();
        Scenario { name, seed, cluster, history, stop, healed, clerks }
    }

    /// Runs one membership command until the cluster accepts it and it is in force.
    fn admin(&self, words: &[String]) {
        let mut config = ClientConfig::new(self.cluster.servers());
        config.request_timeout_ms = 5000;
        let mut client = Client::new(config).expect("client");
        let args: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        let what = format!("{}: seed {}: {words:?}", self.name, self.seed);
        wait_until(&what, STEP_TIMEOUT, || {
            let reply = client.call(&args);
            match &reply {
                Ok(Reply::Simple(ok)) if ok == "OK" => Ok(()),
                // A retry of a change whose first try did commit: it is in force.
                Ok(Reply::Error(e)) if e.contains("already a member") || e.contains("already a voter") => {
                    Ok(())
                }
                Ok(Reply::Error(e))
                    if e.contains("is not a member") && words[1].eq_ignore_ascii_case("remove") =>
                {
                    Ok(())
                }
                _ => Err(reply),
            }
        });
    }

    fn add(&self, id: u64) {
        let peer = self.cluster.peer_addrs[&id].to_string();
        let client = self.cluster.client_addrs[&id].to_string();
        self.admin(&words(&["MEMBER", "ADD", &id.to_string(), &peer, &client]));
    }

    fn promote(&self, id: u64) {
        self.admin(&words(&["MEMBER", "PROMOTE", &id.to_string()]));
    }

    fn remove(&self, id: u64) {
        self.admin(&words(&["MEMBER", "REMOVE", &id.to_string()]));
    }

    /// The voters of the membership `id` applied.
    fn voters(&self, id: u64) -> Vec<u64> {
        self.cluster.status[&id].membership().voter_ids()
    }

    /// Waits until replica `id` has applied a membership whose voters are `voters`.
    fn wait_for_voters(&self, id: u64, voters: &[u64]) {
        wait_until(&format!("replica {id} with voters {voters:?}"), STEP_TIMEOUT, || {
            let now = self.voters(id);
            if now == voters {
                Ok(())
            } else {
                Err(now)
            }
        });
    }

    /// Stops the clerks, heals, checks appends, linearizability and that `members` agree.
    fn finish(mut self, members: &[u64]) {
        self.stop.store(true, Ordering::Relaxed);
        self.cluster.net().heal();
        self.healed.store(true, Ordering::Relaxed);
        let logs: Vec<ClerkLog> = std::mem::take(&mut self.clerks)
            .into_iter()
            .map(|c| match c.join().expect("clerk thread") {
                Ok(log) => log,
                Err(e) => panic!("{}: seed {}: {e:?}", self.name, self.seed),
            })
            .collect();
        let ops: u64 = logs.iter().map(|l| l.ops).sum();
        assert!(ops > 0, "{}: no operation completed", self.name);
        check_appends(&self.cluster, &logs, self.seed, &self.history, false);
        check_linearizable(self.name, self.seed, &self.history);
        let what = format!("{}: seed {}: members agreeing", self.name, self.seed);
        wait_until(&what, Duration::from_secs(20), || {
            let views: Vec<(u64, u64, Vec<u64>)> = members
                .iter()
                .map(|id| {
                    let s = &self.cluster.status[id];
                    (s.applied_index(), s.state_digest(), s.membership().voter_ids())
                })
                .collect();
            let commit = members.iter().map(|id| self.cluster.status[id].commit_index()).max().unwrap_or(0);
            if views.iter().all(|v| *v == views[0] && v.0 >= commit && v.2 == members) {
                Ok(())
            } else {
                Err(views)
            }
        });
        println!("{}: {ops} operations while the membership changed", self.name);
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

// Grow 3 → 5 and shrink back while clerks run, with a partition and a crash on the way.
#[test]
fn grow_to_five_and_shrink_back_under_load_partitions_and_crashes() {
    let s = Scenario::start("grow_to_five_and_shrink_back", 3, 2, 3);
    s.add(4);
    s.promote(4);
    let leader = s.cluster.wait_for_leader_among(&[1, 2, 3, 4], Duration::from_secs(10));
    // The leader alone on one side: the others elect among themselves and go on.
    let others: Vec<u64> = (1..=5).filter(|&id| id != leader).collect();
    s.cluster.net().partition(&[vec![leader], others]);
    let voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != leader).collect();
    s.cluster.wait_for_leader_among(&voters, STEP_TIMEOUT);
    s.cluster.net().heal();
    s.add(5);
    s.promote(5);
    s.wait_for_voters(1, &[1, 2, 3, 4, 5]);
    let mut s = s;
    s.cluster.stop(2);
    s.remove(4);
    s.cluster.restart(2);
    s.remove(5);
    s.finish(&[1, 2, 3]);
}

// Replace every member of a 3-replica cluster, one at a time, the leader included.
#[test]
fn replace_every_member_one_at_a_time() {
    let s = Scenario::start("replace_every_member", 3, 3, 3);
    for (old, new) in [(1, 4), (2, 5), (3, 6)] {
        s.add(new);
        s.promote(new);
        s.remove(old);
    }
    s.finish(&[4, 5, 6]);
}

// The leader is killed right after proposing a joint change (promote a learner, remove
// another member in one step); after its restart the change is either in force or can be
// made, and nothing acknowledged is lost. Then a learner is cut off while it is promoted.
#[test]
fn a_crash_in_a_change_and_a_learner_cut_off_while_promoted() {
    let mut s = Scenario::start("crash_in_a_change", 3, 2, 3);
    s.add(4);
    let leader = s.cluster.wait_for_leader_among(&[1, 2, 3], Duration::from_secs(10));
    let gone = if leader == 1 { 2 } else { 1 };
    let mut config = ClientConfig::new([s.cluster.client_addrs[&leader].to_string()]);
    config.request_timeout_ms = 200;
    let mut client = Client::new(config).expect("client");
    let change = words(&["MEMBER", "CHANGE", "PROMOTE", "4", "REMOVE", &gone.to_string()]);
    let _ = client.call(&change.iter().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>());
    s.cluster.stop(leader);
    s.cluster.restart(leader);
    // Either the change committed, or it is made again now (the retry tells which).
    wait_until("the change settling", STEP_TIMEOUT, || {
        let m = s.cluster.status[&leader].membership();
        if !m.is_joint() && m.is_voter(4) && !m.contains(gone) {
            return Ok(());
        }
        if !m.is_joint() && m.is_learner(4) && s.cluster.status[&leader].leader() != 0 {
            // Not committed before the crash (or not yet applied here): make it again.
            s.admin(&change);
        }
        Err(m)
    });
    let members: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != gone).collect();
    s.wait_for_voters(leader, &members);

    // A learner cut off while its promotion is in flight: the cluster keeps a quorum.
    s.add(5);
    let side: Vec<u64> = (1..=5).filter(|&id| id != 5).collect();
    let s = Arc::new(s);
    let promoting = {
        let s = s.clone();
        std::thread::spawn(move || s.promote(5))
    };
    s.cluster.net().partition(&[vec![5], side]);
    // The side with the quorum goes on committing the clerks' writes without 5.
    let before = s.cluster.status[&members[0]].commit_index();
    wait_until("commits without the cut-off learner", STEP_TIMEOUT, || {
        let now = s.cluster.status[&members[0]].commit_index();
        if now >= before + 10 {
            Ok(())
        } else {
            Err(now)
        }
    });
    s.cluster.net().heal();
    promoting.join().expect("promotion");
    let Ok(s) = Arc::try_unwrap(s) else { panic!("scenario still shared") };
    let mut all = members.clone();
    all.push(5);
    s.finish(&all);
}

// A membership change sent to a new leader before it has applied its election's no-op is held
// until then, not refused as if a change were under way: `LEADER TRANSFER` then `MEMBER ADD`
// just works.
#[test]
fn a_change_right_after_a_leader_transfer_waits_for_the_new_leaders_no_op() {
    use common::resp_conn::RespConn;
    const WAIT: Duration = Duration::from_secs(10);
    let cluster = TestCluster::start(3);
    for round in 0..6u64 {
        // A transfer on a loaded machine may time out (TRYAGAIN): tried again until one is done.
        let mut to_target = None;
        wait_until("a leader transfer", STEP_TIMEOUT, || {
            let leader = cluster.wait_for_leader(WAIT);
            let target = *cluster.client_addrs.keys().find(|&&id| id != leader).expect("another voter");
            let mut to_leader = RespConn::connect(cluster.client_addrs[&leader], WAIT);
            let target_conn = RespConn::connect(cluster.client_addrs[&target], WAIT);
            match to_leader.call(&[b"LEADER", b"TRANSFER", target.to_string().as_bytes()]) {
                Reply::Simple(ok) if ok == "OK" => {
                    to_target = Some(target_conn);
                    Ok(())
                }
                other => Err(other),
            }
        });
        let mut to_target = to_target.expect("transferred");
        // At once, and on the new leader itself (the race the hold closes).
        let id = (10 + round).to_string();
        let add = to_target.call(&[b"MEMBER", b"ADD", id.as_bytes(), b"127.0.0.1:1", b"127.0.0.1:2"]);
        assert_eq!(add, Reply::Simple("OK".into()), "round {round}: MEMBER ADD {id} on the new leader");
    }
}
