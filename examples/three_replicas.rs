//! A custom deployment: three replicas in one process, driven by our own actor instead of RESP.
//!
//! Run with `cargo run --example three_replicas`. It starts three replicas on free ports in a
//! temporary directory, waits for a leader, and proposes writes and a read through the leader's
//! consensus actor with the library's `Waiter`, printing each outcome.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use quorumkv::actors::connection::WaiterDone;
use quorumkv::actors::replica::{bind, Replica, ReplicaConfig};
use quorumkv::actors::waiter::{DeadlinePassed, Waiter, WaiterTask};
use quorumkv::protocol::command::{ColumnFamily, Command};
use quorumkv::protocol::resp::format_reply;

/// Our own "front end": prints every reply it is given and passes it on.
struct Printer(tokio::sync::mpsc::UnboundedSender<u64>);

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<WaiterDone> for Printer {
    type Result = ();

    fn handle(&mut self, msg: WaiterDone, _ctx: &mut Self::Context) {
        println!("request {}: {}", msg.seq, format_reply(&msg.reply));
        let _ = self.0.send(msg.seq);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("quorumkv-example-{}", std::process::id()));
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, (bind("127.0.0.1:0").await?, bind("127.0.0.1:0").await?));
    }
    let peers: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(&id, (_, p))| Ok((id, p.local_addr()?.to_string())))
        .collect::<std::io::Result<_>>()?;
    let mut replicas = Vec::new();
    for (id, (client, peer)) in listeners {
        let mut config = ReplicaConfig::single(
            id,
            &client.local_addr()?.to_string(),
            &peers[&id],
            dir.join(id.to_string()),
        );
        config.peers = peers.clone();
        config.election_timeout_ms = 300;
        config.heartbeat_ms = 50;
        replicas.push(Replica::start_with(config, client, peer, None).await?);
    }
    // Wait (bounded) for a leader.
    let mut leader = None;
    for _ in 0..500 {
        leader = replicas.iter().find(|r| r.status.is_leader()).map(|r| r.consensus());
        if leader.is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // Shared by the waiters (they run on this thread): cloning an actix address allocates.
    let consensus = Rc::new(leader.ok_or("no leader elected")?);
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let printer = Rc::new(Printer(done_tx).start().recipient());
    let timeout = Duration::from_secs(2);
    let tasks = vec![
        WaiterTask::Write {
            session: None,
            command: Command::Put {
                cf: ColumnFamily::Default,
                key: b"greeting".to_vec(),
                value: b"hello".to_vec(),
            },
        },
        WaiterTask::Write {
            session: None,
            command: Command::Append { key: b"greeting".to_vec(), value: b", world".to_vec() },
        },
        WaiterTask::Read(
            Command::Get { cf: ColumnFamily::Default, key: b"greeting".to_vec() },
            Default::default(), // a fresh reply budget: nothing else is queued for this printer
        ),
    ];
    for (seq, task) in tasks.into_iter().enumerate() {
        let waiter =
            Waiter::new(seq as u64, task, consensus.clone(), printer.clone(), Default::default()).start();
        // One at a time, so the read sees both writes (waiters in flight may finish in any order).
        // The deadline is the caller's to keep: told it passed, a waiter answers -TRYAGAIN.
        let answered = match actix_rt::time::timeout(timeout, done.recv()).await {
            Ok(answered) => answered,
            Err(_) => {
                waiter.do_send(DeadlinePassed);
                done.recv().await
            }
        };
        answered.ok_or("printer stopped")?;
    }
    for r in replicas {
        r.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let system = actix_rt::System::new();
    if let Err(e) = system.block_on(run()) {
        eprintln!("example failed: {e}");
        std::process::exit(1);
    }
}
