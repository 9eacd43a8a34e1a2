//! The accept loop shared by the client and peer listeners (not an actor: a helper they run).

use std::time::Duration;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};

/// A connection was accepted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Accepted(pub TcpStream);

/// Accepts connections on `listener` for as long as the actor lives, sending it each one.
///
/// The loop is owned by the actor's context: stopping the actor closes the port.
pub fn accept_into<A>(actor: &A, ctx: &mut Context<A>, listener: TcpListener, what: &'static str)
where
    A: Actor<Context = Context<A>> + Handler<Accepted>,
{
    let me = ctx.address();
    ctx.spawn(
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => me.do_send(Accepted(stream)),
                    Err(e) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        log::warn!("{what}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        .into_actor(actor),
    );
}
