//! `quorumkv-server`: one replica, or (`local`) a whole cluster in one process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use quorumkv::actors::cpu_affinity::CpuList;
use quorumkv::actors::replica::{Replica, ReplicaConfig, ReplicaError};
use quorumkv::joining::{self, JoinRequest};
use quorumkv::storage::StorageError;

/// The replica's allocator (the library leaves the choice to whoever links it).
#[global_allocator]
static ALLOCATOR: quorumkv::allocator::Mimalloc = quorumkv::allocator::Mimalloc;

/// A replica of quorumkv, the replicated key-value store.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    replica: ReplicaArgs,
}

#[derive(Args, Debug)]
struct ReplicaArgs {
    /// This member's id.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Address to serve clients on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    client_addr: String,
    /// Address to listen for peers on (default: this member's entry in --peers).
    #[arg(long)]
    peer_addr: Option<String>,
    /// Every member: ID=HOST:PORT,ID=HOST:PORT,... (this one included).
    #[arg(long)]
    peers: Option<String>,
    /// Data directory.
    #[arg(long, default_value = "./quorumkv-data")]
    data_dir: PathBuf,
    /// Cluster name; peers of another cluster are refused.
    #[arg(long, default_value = "quorumkv")]
    cluster_name: String,
    /// Log bytes since the last snapshot that trigger a new one (the first after start comes a
    /// third earlier for id 1 mod 3, two thirds for id 2 mod 3, so members snapshot apart).
    #[arg(long, default_value_t = quorumkv::actors::replica::DEFAULT_SNAPSHOT_THRESHOLD_BYTES)]
    snapshot_threshold: u64,
    /// Do not fsync the log (faster; a machine crash can lose acknowledged writes).
    #[arg(long)]
    no_fsync: bool,
    /// Minimum election timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Client connections served at once; more are answered "-ERR max number of clients reached".
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Close a client connection idle this many seconds with no request in flight (0: never).
    #[arg(long, default_value_t = 0)]
    idle_timeout_secs: u64,
    /// Join a running cluster through these client addresses of its members (empty data dir only).
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// With --join: stay a learner (get the log, never vote).
    #[arg(long, requires = "join")]
    learner: bool,
    /// Do not forward to the leader: a follower answers writes and reads "-NOTLEADER addr".
    #[arg(long)]
    no_forward: bool,
    /// Serve Prometheus /metrics and /health over HTTP on HOST:PORT (`local`: client port + 2000).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Pin the client, consensus and log-writer threads to these CPUs (a list such as 0, 0-3 or
    /// 0,2); snapshot encoding stays unpinned. Default: the kernel places them.
    #[arg(long, value_name = "LIST")]
    cpu_list: Option<CpuList>,
}

/// Runs this process's threads under `SCHED_BATCH`, so a thread of ours that another wakes does
/// not preempt the thread on the CPU.
///
/// A replica's threads hand each other work (client thread to consensus, consensus to peers and
/// the disk writer and back): under the default policy the woken one preempted the waker before
/// it had sent the rest of its burst, and on two cores most of the main thread's switches were
/// such preemptions. Set before any thread starts, so every thread inherits it; the nice value
/// is kept, and a failure only leaves the default policy in force.
fn prefer_throughput_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` only; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            log::warn!("cannot run under SCHED_BATCH: {}", std::io::Error::last_os_error());
        }
    }
}

/// Opts this process out of transparent huge pages, as Redis does (`disable-thp`).
///
/// The allocator asks for huge pages, and on first touch the kernel zeroes a whole 2 MiB page
/// in the thread that touched it: while the heap grows, the writes of the moment wait on that
/// (64-client write p99 5.4-6.0 ms with them, 2.8-3.1 ms without, while the Raft log still grew).
/// A failure only leaves the kernel's setting in force.
fn opt_out_of_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE reads no memory of ours; it sets a flag on this process.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            log::warn!("cannot opt out of transparent huge pages: {}", std::io::Error::last_os_error());
        }
    }
}

/// File descriptors kept for each replica's own use (WAL, snapshots, peer links and listener).
const RESERVED_FDS_PER_REPLICA: u64 = 64;

/// Raises the open-file limit to its hard maximum and lowers each replica's client limit so that
/// clients can never take the descriptors peers and the data dir need (what Redis does with
/// `maxclients`).
fn fit_clients_to_fd_limit(configs: &mut [ReplicaConfig]) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        log::warn!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let replicas = configs.len() as u64;
    let available = limit.rlim_cur.saturating_sub(RESERVED_FDS_PER_REPLICA * replicas) / replicas.max(1);
    for config in configs {
        if config.max_clients as u64 > available {
            let reduced = available.max(1) as usize;
            log::warn!(
                "replica {}: --max-clients {} reduced to {reduced}: the open-file limit is {} and {} \
                 descriptors per replica are kept for peers and the data dir (raise `ulimit -n`)",
                config.id,
                config.max_clients,
                limit.rlim_cur,
                RESERVED_FDS_PER_REPLICA
            );
            config.max_clients = reduced;
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole cluster in this process, each replica with its own ports and data dir.
    Local {
        /// Number of replicas.
        #[arg(long, default_value_t = 3)]
        replicas: u64,
        /// First client port; replica i serves clients on base-port + i - 1 and peers 1000 above.
        #[arg(long, default_value_t = 6380)]
        base_port: u16,
        /// Parent directory of the replicas' data dirs.
        #[arg(long, default_value = "./quorumkv-local")]
        data_dir: PathBuf,
    },
    /// Initialize an empty data dir from a snapshot file (`quorumkv-cli snapshot save`), as a
    /// member of a new cluster that starts with that state; restore every member from the same file.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data dir to create (missing or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// This member's id in the new cluster.
        #[arg(long)]
        id: u64,
        /// Every member of the new cluster: ID=HOST:PORT,... (peer addresses, this one included).
        #[arg(long)]
        peers: String,
        /// The new cluster's name.
        #[arg(long, default_value = "quorumkv")]
        cluster_name: String,
    },
}

/// `quorumkv-server restore`: exit 0 restored, 1 a bad file or arguments, 2 a data dir in use.
fn restore(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    id: u64,
    peers: &str,
    cluster_name: &str,
) -> ExitCode {
    use quorumkv::storage::restore::{restore_data_dir, RestoreError};
    let peers = match parse_peers(peers) {
        Ok(peers) => peers,
        Err(e) => {
            eprintln!("quorumkv-server: {e}");
            return ExitCode::from(1);
        }
    };
    match restore_data_dir(file, data_dir, cluster_name, id, &peers) {
        Ok(restored) => {
            println!(
                "restored {} as member {id} of cluster {cluster_name:?}: index {}, term {}, {} keys, state_digest {:016x}",
                data_dir.display(),
                restored.meta.index,
                restored.meta.term,
                restored.keys,
                restored.digest
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quorumkv-server: {e}");
            match e {
                RestoreError::NotEmpty { .. } => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

fn parse_peers(spec: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) =
            part.split_once('=').ok_or_else(|| format!("--peers entry '{part}' is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("--peers entry '{part}': id is not a number"))?;
        if id == 0 || peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("--peers: id {id} is zero or listed twice"));
        }
    }
    Ok(peers)
}

fn idle_timeout(args: &ReplicaArgs) -> Option<std::time::Duration> {
    (args.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(args.idle_timeout_secs))
}

fn replica_config(args: &ReplicaArgs) -> Result<ReplicaConfig, String> {
    let peers = match &args.peers {
        Some(spec) => parse_peers(spec)?,
        None if !args.join.is_empty() => {
            BTreeMap::from([(args.id, args.peer_addr.clone().unwrap_or_default())])
        }
        None => BTreeMap::from([(
            args.id,
            args.peer_addr.clone().unwrap_or_else(|| "127.0.0.1:7380".to_string()),
        )]),
    };
    let own = peers
        .get(&args.id)
        .cloned()
        .ok_or_else(|| format!("--peers does not list this member (id {})", args.id))?;
    let mut config = ReplicaConfig::single(
        args.id,
        &args.client_addr,
        &args.peer_addr.clone().unwrap_or(own),
        &args.data_dir,
    );
    config.peers = peers;
    config.cluster_name = args.cluster_name.clone();
    config.snapshot_threshold_bytes = args.snapshot_threshold;
    config.fsync = !args.no_fsync;
    config.election_timeout_ms = args.election_timeout_ms;
    config.heartbeat_ms = args.heartbeat_ms;
    config.max_clients = args.max_clients;
    config.idle_timeout = idle_timeout(args);
    config.forward = !args.no_forward;
    config.metrics_addr = args.metrics_addr.clone();
    config.cpu_list = args.cpu_list.clone();
    Ok(config)
}

fn local_configs(
    replicas: u64,
    base_port: u16,
    data_dir: &std::path::Path,
    template: &ReplicaArgs,
) -> Result<Vec<ReplicaConfig>, String> {
    if replicas == 0 || replicas > 9 {
        return Err("--replicas must be between 1 and 9".into());
    }
    let port = |i: u64, offset: u64| -> Result<u16, String> {
        u16::try_from(u64::from(base_port) + i - 1 + offset).map_err(|_| "--base-port too high".to_string())
    };
    let mut peers = BTreeMap::new();
    for i in 1..=replicas {
        peers.insert(i, format!("127.0.0.1:{}", port(i, 1000)?));
    }
    let mut configs = Vec::new();
    for i in 1..=replicas {
        let mut config = ReplicaConfig::single(
            i,
            &format!("127.0.0.1:{}", port(i, 0)?),
            &peers[&i],
            data_dir.join(format!("replica-{i}")),
        );
        config.peers = peers.clone();
        config.cluster_name = template.cluster_name.clone();
        config.fsync = !template.no_fsync;
        config.snapshot_threshold_bytes = template.snapshot_threshold;
        config.election_timeout_ms = template.election_timeout_ms;
        config.heartbeat_ms = template.heartbeat_ms;
        config.max_clients = template.max_clients;
        config.idle_timeout = idle_timeout(template);
        config.forward = !template.no_forward;
        config.metrics_addr = Some(format!("127.0.0.1:{}", port(i, 2000)?));
        configs.push(config);
    }
    Ok(configs)
}

/// Whether `dir` already holds a log: then `--join` is ignored (a restart is a restart).
fn holds_log(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join("wal"))
        .map(|entries| entries.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
        .unwrap_or(false)
}

/// For `--join` on an empty data dir: asks the cluster to add this replica and learns every
/// member's peer address. Returns what the promotion thread needs, on a restart too (the data
/// dir's mark, if the join had not recorded its membership, keeps it joining with the addresses
/// it started with; a learner restarted before its promotion still asks for it, a voter's
/// thread ends at once).
fn prepare_join(args: &ReplicaArgs, config: &mut ReplicaConfig) -> Result<Option<JoinRequest>, String> {
    if args.join.is_empty() {
        return Ok(None);
    }
    let mut request = JoinRequest {
        id: args.id,
        peer_addr: args.peer_addr.clone().unwrap_or_default(),
        client_addr: args.client_addr.clone(),
        servers: args.join.clone(),
    };
    if holds_log(&args.data_dir) {
        log::info!("replica {}: the data dir holds a log; this is a restart, not a new join", args.id);
        return Ok(Some(request));
    }
    request.peer_addr =
        args.peer_addr.clone().ok_or("--join needs --peer-addr (where the others reach this replica)")?;
    let mut book = joining::add_self(&request)?;
    book.insert(args.id, request.peer_addr.clone());
    config.peers = book;
    config.peer_addr = request.peer_addr.clone();
    config.join = true;
    Ok(Some(request))
}

fn exit_code(e: &ReplicaError) -> ExitCode {
    match e {
        ReplicaError::Storage(
            StorageError::Mismatch { .. }
            | StorageError::NotADataDir { .. }
            | StorageError::Locked { .. }
            | StorageError::Missing { .. },
        ) => ExitCode::from(2),
        ReplicaError::Config(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once a replica is removed from the membership and has not led for `grace`.
///
/// A removed leader first hands leadership over, and a removed replica that restarts may still
/// be the one whose log the others need (it then leads long enough to hand over): so it waits
/// a couple of election timeouts without leading before it goes.
async fn removed(statuses: Vec<std::sync::Arc<quorumkv::actors::status::StatusBoard>>, grace: Duration) {
    let mut since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if statuses.iter().any(|s| s.is_removed() && !s.is_leader()) {
            let start = *since.get_or_insert_with(std::time::Instant::now);
            if start.elapsed() >= grace {
                return;
            }
        } else {
            since = None;
        }
    }
}

/// Resolves with the reason once consensus stopped on one of the replicas: a write or fsync of
/// its log failed, which cannot be retried safely (a full disk is not such a failure).
async fn consensus_failed(statuses: Vec<std::sync::Arc<quorumkv::actors::status::StatusBoard>>) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(why) =
            statuses.iter().find_map(|s| s.stop_reason().map(|why| format!("replica {}: {why}", s.id)))
        {
            return why;
        }
    }
}

async fn run(configs: Vec<ReplicaConfig>, local: bool, join: Option<(JoinRequest, bool)>) -> ExitCode {
    let election_timeout_ms = configs.first().map_or(1000, |c| c.election_timeout_ms);
    let mut replicas = Vec::new();
    for config in configs {
        match Replica::start(config).await {
            Ok(r) => replicas.push(r),
            Err(e) => {
                eprintln!("quorumkv-server: {e}");
                for r in replicas {
                    r.stop().await;
                }
                return exit_code(&e);
            }
        }
    }
    if local {
        let addrs: Vec<String> = replicas.iter().map(|r| r.client_addr.to_string()).collect();
        println!("quorumkv: local cluster of {} replicas", replicas.len());
        for r in &replicas {
            let metrics = r
                .status
                .metrics_addr
                .get()
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default();
            println!("  replica {}: clients on {}, peers on {}{metrics}", r.id, r.client_addr, r.peer_addr);
        }
        println!("connect with:  quorumkv-cli --servers {}", addrs.join(","));
        println!(
            "          or:  redis-cli -p {}   (any replica serves any command)",
            replicas[0].client_addr.port()
        );
    } else if let Some(r) = replicas.first() {
        println!("quorumkv: replica {} serving clients on {}, peers on {}", r.id, r.client_addr, r.peer_addr);
        if let Some((request, false)) = join {
            let status = r.status.clone();
            std::thread::spawn(move || joining::promote_when_caught_up(&request, status));
        }
    }
    let watched = if local { Vec::new() } else { replicas.iter().map(|r| r.status.clone()).collect() };
    let all = replicas.iter().map(|r| r.status.clone()).collect();
    let grace = Duration::from_millis(2 * election_timeout_ms);
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        _ = shutdown_signal() => log::info!("shutting down"),
        _ = removed(watched, grace), if !local => {
            log::info!("removed from the cluster: shutting down (the data dir is kept)");
        }
        why = consensus_failed(all) => {
            // Lingering would only answer -TRYAGAIN for ever: exit so a supervisor restarts it,
            // and the restart replays the log up to its last good record.
            log::error!("{why}; exiting with code 1 (nothing acknowledged is lost; restart to recover)");
            eprintln!("quorumkv-server: {why}");
            code = ExitCode::from(1);
        }
    }
    for r in replicas {
        r.stop().await;
    }
    code
}

/// Parses the command line; a flag that does not apply where it is given is an error (exit 1).
fn parse_cli() -> Result<Cli, ExitCode> {
    let matches = Cli::command().try_get_matches().map_err(|e| {
        let _ = e.print();
        // Help and version are not errors; every other refusal of the command line exits 1.
        if e.use_stderr() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| {
        let _ = e.print();
        ExitCode::from(1)
    })?;
    if matches.subcommand_name() == Some("restore") {
        let flags = ReplicaArgs::augment_args(clap::Command::new("flags"));
        let typed = flags.get_arguments().map(|a| a.get_id().to_string()).find(|id| given(&matches, id));
        if let Some(flag) = typed {
            eprintln!(
                "quorumkv-server: --{} does not apply to `restore`; put its options after it: \
                 quorumkv-server restore FILE --data-dir DIR --id N --peers ID=HOST:PORT,...",
                flag.replace('_', "-")
            );
            return Err(ExitCode::from(1));
        }
    }
    if matches.subcommand_name() == Some("local") {
        let single_only = [
            "id",
            "client_addr",
            "peer_addr",
            "peers",
            "data_dir",
            "join",
            "learner",
            "metrics_addr",
            "cpu_list",
        ];
        if let Some(flag) = single_only.iter().find(|id| given(&matches, id)) {
            let flag = flag.replace('_', "-");
            eprintln!(
                "quorumkv-server: --{flag} does not apply to `local` (it sets ports and data dirs itself); \
                 put local options after it: quorumkv-server local [--replicas N] [--base-port P] [--data-dir DIR]"
            );
            return Err(ExitCode::from(1));
        }
    }
    Ok(cli)
}

/// True if the flag `id` was typed on the command line (not a default).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let mut join = None;
    if let Some(Command::Restore { file, data_dir, id, peers, cluster_name }) = &cli.command {
        return restore(file, data_dir, *id, peers, cluster_name);
    }
    let (configs, local) = match &cli.command {
        Some(Command::Local { replicas, base_port, data_dir }) => {
            (local_configs(*replicas, *base_port, data_dir, &cli.replica), true)
        }
        Some(Command::Restore { .. }) => return ExitCode::from(1),
        None => {
            let config = replica_config(&cli.replica);
            // Before a --join asks the cluster to add this member.
            if let Some(Err(e)) = config.as_ref().ok().map(ReplicaConfig::check_cpu_list) {
                eprintln!("quorumkv-server: {e}");
                return exit_code(&e);
            }
            let config = config.and_then(|mut c| {
                join = prepare_join(&cli.replica, &mut c)?.map(|r| (r, cli.replica.learner));
                Ok(c)
            });
            (config.map(|c| vec![c]), false)
        }
    };
    let mut configs = match configs {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quorumkv-server: {e}");
            return ExitCode::from(1);
        }
    };
    fit_clients_to_fd_limit(&mut configs);
    opt_out_of_transparent_huge_pages();
    prefer_throughput_scheduling();
    let system = actix_rt::System::new();
    system.block_on(run(configs, local, join))
}
