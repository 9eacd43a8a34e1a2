//! N replicas in one process on real TCP (127.0.0.1, ports picked by the OS), driven from the
//! test thread: the actix system runs on its own thread so tests can use the blocking client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quorumkv::actors::replica::{bind, Replica, ReplicaConfig};
use quorumkv::actors::sim_network::{SimFaults, SimNetwork};
use quorumkv::actors::status::StatusBoard;
use quorumkv::actors::transport::Transport;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

enum Command {
    /// Stop the replica; with `true`, as a crash (its log writes not yet carried out are lost).
    Stop(u64, bool, std_mpsc::Sender<()>),
    Start(u64, std_mpsc::Sender<Result<Arc<StatusBoard>, String>>),
    Shutdown(std_mpsc::Sender<()>),
}

/// A running cluster of replicas inside this test process.
pub struct TestCluster {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
    /// Client address of each member.
    pub client_addrs: BTreeMap<u64, SocketAddr>,
    /// Peer address of each member.
    pub peer_addrs: BTreeMap<u64, SocketAddr>,
    /// Live status of each running member.
    pub status: BTreeMap<u64, Arc<StatusBoard>>,
    /// Where the data dirs live (removed on drop).
    pub dir: tempfile::TempDir,
    /// The simulated network between the replicas, if they use one instead of TCP.
    pub network: Option<SimNetwork>,
}

/// Timings short enough for tests, long enough to be stable on a loaded 2-core machine.
pub fn test_config(id: u64, dir: &std::path::Path) -> ReplicaConfig {
    let mut config =
        ReplicaConfig::single(id, "127.0.0.1:0", "127.0.0.1:0", dir.join(format!("replica-{id}")));
    config.election_timeout_ms = 300;
    config.heartbeat_ms = 50;
    config.tick_ms = 10;
    config.request_timeout_ms = 2000;
    config
}

impl TestCluster {
    /// Starts `n` replicas, with `adjust` applied to each config.
    pub fn start_with(n: u64, adjust: impl Fn(&mut ReplicaConfig) + Send + 'static) -> TestCluster {
        TestCluster::launch(n, 0, None, adjust)
    }

    /// Starts `n` founding replicas and `spares` more (ids n+1..) with empty data dirs that
    /// are not members: each waits, as a `--join` replica does, to be added.
    pub fn start_with_spares(
        n: u64,
        spares: u64,
        network: Option<SimNetwork>,
        adjust: impl Fn(&mut ReplicaConfig) + Send + 'static,
    ) -> TestCluster {
        TestCluster::launch(n, spares, network, adjust)
    }

    /// Starts `n` replicas talking through a simulated network seeded with `seed`.
    pub fn start_sim(
        n: u64,
        seed: u64,
        faults: SimFaults,
        adjust: impl Fn(&mut ReplicaConfig) + Send + 'static,
    ) -> TestCluster {
        TestCluster::launch(n, 0, Some(SimNetwork::new(seed, faults)), adjust)
    }

    fn launch(
        n: u64,
        spares: u64,
        network: Option<SimNetwork>,
        adjust: impl Fn(&mut ReplicaConfig) + Send + 'static,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let root: PathBuf = dir.path().to_path_buf();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let net = network.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(run(n, spares, root, adjust, net, rx, ready_tx));
        });
        let (client_addrs, peer_addrs, status) = ready_rx.recv().expect("cluster thread started");
        TestCluster { commands: tx, thread: Some(thread), client_addrs, peer_addrs, status, dir, network }
    }

    /// The simulated network (panics if the cluster runs over TCP).
    pub fn net(&self) -> &SimNetwork {
        self.network.as_ref().expect("a cluster on the simulated network")
    }

    /// Ids of the members that are running.
    pub fn running(&self) -> Vec<u64> {
        self.status.keys().copied().collect()
    }

    /// Starts `n` replicas with the test timings.
    pub fn start(n: u64) -> TestCluster {
        TestCluster::start_with(n, |_| {})
    }

    /// Every client address, as `HOST:PORT` strings.
    pub fn servers(&self) -> Vec<String> {
        self.client_addrs.values().map(|a| a.to_string()).collect()
    }

    /// Stops replica `id` (its actors and connections; unsynced state is lost as in a crash).
    pub fn stop(&mut self, id: u64) {
        self.halt(id, false);
    }

    /// Crashes replica `id`: as [`stop`](Self::stop), and the log writes it had handed out but
    /// not yet carried out are lost (a leader's writes queued for its disk writer).
    pub fn crash(&mut self, id: u64) {
        self.halt(id, true);
    }

    fn halt(&mut self, id: u64, crash: bool) {
        let (tx, rx) = std_mpsc::channel();
        self.commands.send(Command::Stop(id, crash, tx)).expect("cluster thread alive");
        rx.recv().expect("stopped");
        self.status.remove(&id);
    }

    /// Restarts replica `id` from its data dir on the same addresses.
    pub fn restart(&mut self, id: u64) {
        let (tx, rx) = std_mpsc::channel();
        self.commands.send(Command::Start(id, tx)).expect("cluster thread alive");
        let status = rx.recv().expect("answer").expect("restart");
        self.status.insert(id, status);
    }

    /// Waits until exactly one running replica leads and every running one knows it; returns its id.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> =
                self.status.iter().filter(|(_, s)| s.is_leader()).map(|(&id, _)| id).collect();
            if let [leader] = leaders[..] {
                let term = self.status[&leader].term();
                if self.status.values().all(|s| s.leader() == leader && s.term() == term) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no stable leader within {timeout:?}");
            std::thread::yield_now();
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    /// Waits until exactly one of `members` leads and all of them know it; returns its id.
    pub fn wait_for_leader_among(&self, members: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<&Arc<StatusBoard>> =
                members.iter().filter_map(|id| self.status.get(id)).collect();
            let leaders: Vec<u64> = members
                .iter()
                .copied()
                .filter(|id| self.status.get(id).is_some_and(|s| s.is_leader()))
                .collect();
            if let [leader] = leaders[..] {
                let term = self.status[&leader].term();
                if running.iter().all(|s| s.leader() == leader && s.term() == term) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no stable leader among {members:?} within {timeout:?}");
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let (tx, rx) = std_mpsc::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Ready = (BTreeMap<u64, SocketAddr>, BTreeMap<u64, SocketAddr>, BTreeMap<u64, Arc<StatusBoard>>);

fn transport(network: &Option<SimNetwork>, id: u64) -> Option<Box<dyn Transport>> {
    network.as_ref().map(|n| Box::new(n.transport(id)) as Box<dyn Transport>)
}

fn register(network: &Option<SimNetwork>, replica: &Replica) {
    if let Some(n) = network {
        n.register(replica.id, replica.consensus().recipient());
    }
}

async fn run(
    n: u64,
    spares: u64,
    root: PathBuf,
    adjust: impl Fn(&mut ReplicaConfig),
    network: Option<SimNetwork>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ready: std_mpsc::Sender<Ready>,
) {
    // Bind every listener first so each member's config can list the others' peer addresses.
    // Each port is also held, for the cluster's life, by a bound socket that never listens.
    let mut listeners = BTreeMap::new();
    let mut held_ports = Vec::new();
    for id in 1..=n + spares {
        let (client_holder, client_addr) = hold_port().expect("hold a client port");
        let (peer_holder, peer_addr) = hold_port().expect("hold a peer port");
        held_ports.extend([client_holder, peer_holder]);
        let client = bind(&client_addr.to_string()).await.expect("listen for clients");
        let peer = bind(&peer_addr.to_string()).await.expect("listen for peers");
        listeners.insert(id, (client, peer));
    }
    let all_peers: BTreeMap<u64, String> =
        listeners.iter().map(|(&id, (_, p))| (id, p.local_addr().expect("addr").to_string())).collect();
    let peers: BTreeMap<u64, String> =
        all_peers.iter().filter(|(&id, _)| id <= n).map(|(&id, a)| (id, a.clone())).collect();
    let mut configs = BTreeMap::new();
    for (&id, (client, peer)) in &listeners {
        let mut config = test_config(id, &root);
        config.client_addr = client.local_addr().expect("addr").to_string();
        config.peer_addr = peer.local_addr().expect("addr").to_string();
        config.peers = peers.clone();
        if id > n {
            // A spare: it knows the founders' addresses and its own, and joins when added.
            config.peers.insert(id, all_peers[&id].clone());
            config.join = true;
        }
        adjust(&mut config);
        configs.insert(id, config);
    }
    let mut replicas: BTreeMap<u64, Replica> = BTreeMap::new();
    for (id, (client, peer)) in listeners {
        let replica = Replica::start_with(configs[&id].clone(), client, peer, transport(&network, id))
            .await
            .expect("start replica");
        register(&network, &replica);
        replicas.insert(id, replica);
    }
    let addrs = replicas.iter().map(|(&id, r)| (id, r.client_addr)).collect();
    let peer_addrs = replicas.iter().map(|(&id, r)| (id, r.peer_addr)).collect();
    let status = replicas.iter().map(|(&id, r)| (id, r.status.clone())).collect();
    let _ = ready.send((addrs, peer_addrs, status));
    while let Some(command) = commands.recv().await {
        match command {
            Command::Stop(id, crash, done) => {
                if let Some(n) = &network {
                    n.unregister(id);
                }
                match replicas.remove(&id) {
                    Some(r) if crash => r.crash().await,
                    Some(r) => r.stop().await,
                    None => {}
                }
                let _ = done.send(());
            }
            Command::Start(id, done) => {
                let config = configs[&id].clone();
                let result = async {
                    let client = bind(&config.client_addr).await.map_err(|e| e.to_string())?;
                    let peer = bind(&config.peer_addr).await.map_err(|e| e.to_string())?;
                    Replica::start_with(config, client, peer, transport(&network, id))
                        .await
                        .map_err(|e| e.to_string())
                }
                .await;
                let _ = done.send(result.map(|r| {
                    register(&network, &r);
                    let status = r.status.clone();
                    replicas.insert(id, r);
                    status
                }));
            }
            Command::Shutdown(done) => {
                for (_, r) in std::mem::take(&mut replicas) {
                    r.stop().await;
                }
                let _ = done.send(());
                break;
            }
        }
    }
    drop(held_ports);
    actix_rt::System::current().stop();
}

/// A socket bound to a free port of 127.0.0.1 that never listens, and that address.
///
/// A stopped member's ports would otherwise be free until it restarts on them, and another
/// socket could take one meanwhile: most likely another test's cluster binding port 0 (the
/// kernel gives those odd ports, as 44641, the one a CI run's restart found in use), or a
/// connection given it as its local port (a peer link's own retry then connects to itself).
/// The kernel hands a port that a socket holds by `bind` neither to a connection nor to a bind
/// of port 0 on this address, and with `SO_REUSEADDR` on both, a member's listener (the
/// replica's own `bind`) binds it beside this socket, though not beside another listener: a
/// restart waits, as that `bind` does, while the member's old listener is still closing.
fn hold_port() -> std::io::Result<(TcpSocket, SocketAddr)> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}
