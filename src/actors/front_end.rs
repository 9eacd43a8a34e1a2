//! The client listener: accepts RESP connections and starts a [`Connection`] actor for each.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;

use super::accept::{accept_into, Accepted};
use super::connection::{CloseConnection, Connection, ConnectionEnv};

/// Connections served at once; further ones are closed at accept.
pub const MAX_CLIENT_CONNECTIONS: usize = 10_000;

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
}

impl FrontEnd {
    /// A front end serving `listener` for the replica described by `env`.
    pub fn new(listener: TcpListener, env: ConnectionEnv) -> FrontEnd {
        FrontEnd { listener: Some(listener), env, connections: HashMap::new(), next_id: 0 }
    }
}

impl Actor for FrontEnd {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(listener) = self.listener.take() else { return };
        accept_into(self, ctx, listener, "client listener");
        // Forget connections that ended, so the map stays bounded.
        ctx.run_interval(Duration::from_secs(1), |act, _| act.connections.retain(|_, c| c.connected()));
    }
}

impl Handler<Accepted> for FrontEnd {
    type Result = ();

    fn handle(&mut self, msg: Accepted, _ctx: &mut Self::Context) {
        self.connections.retain(|_, c| c.connected());
        if self.connections.len() >= MAX_CLIENT_CONNECTIONS {
            log::warn!("client listener: {MAX_CLIENT_CONNECTIONS} connections open, refusing one");
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
