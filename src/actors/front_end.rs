//! The client listener: accepts RESP connections and starts a [`Connection`] actor for each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::net::TcpListener;

use super::accept::{accept_into, Accepted};
use super::connection::{CloseConnection, Connection, ConnectionEnv};

/// Connections served at once unless configured otherwise (Redis's `maxclients` default).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// What a client past the limit is told before its connection is closed (Redis's words).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Stop accepting and close every client connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopFrontEnd;

/// The RESP listener of one replica.
pub struct FrontEnd {
    listener: Option<TcpListener>,
    env: ConnectionEnv,
    connections: HashMap<u64, Addr<Connection>>,
    next_id: u64,
    max_clients: usize,
}

impl FrontEnd {
    /// A front end serving `listener` for the replica described by `env`, at most `max_clients`
    /// connections at once.
    pub fn new(listener: TcpListener, env: ConnectionEnv, max_clients: usize) -> FrontEnd {
        FrontEnd { listener: Some(listener), env, connections: HashMap::new(), next_id: 0, max_clients }
    }
}

impl Actor for FrontEnd {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(listener) = self.listener.take() else { return };
        accept_into(self, ctx, listener, "client listener");
        // Forget connections that ended, so the map stays bounded; let go of snapshot images
        // held for a download nobody goes on with.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.connections.retain(|_, c| c.connected());
            act.env.snapshots.let_go_idle(Instant::now());
        });
    }
}

impl Handler<Accepted> for FrontEnd {
    type Result = ();

    fn handle(&mut self, msg: Accepted, _ctx: &mut Self::Context) {
        // The registry counts every connection from its start until its last reply is written
        // (a closed one still writing counts); the map here is pruned each second, not scanned
        // at every accept.
        if self.env.clients.len() >= self.max_clients {
            log::warn!(
                "client listener: {} connections open (--max-clients), refusing one",
                self.max_clients
            );
            let mut stream = msg.0;
            // Told why, as Redis does; the write is small and bounded in time, then the socket closes.
            actix::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let write = stream.write_all(MAX_CLIENTS_REPLY);
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let addr = Connection::new(msg.0, self.env.clone()).start();
        self.connections.insert(id, addr);
    }
}

impl Handler<StopFrontEnd> for FrontEnd {
    type Result = ();

    fn handle(&mut self, _msg: StopFrontEnd, ctx: &mut Self::Context) {
        for (_, c) in self.connections.drain() {
            c.do_send(CloseConnection);
        }
        ctx.stop();
    }
}
