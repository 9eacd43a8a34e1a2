//! One outbound connection to another member: handshake, frames, reconnect with back-off.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::byte_budget::ByteBudget;
use crate::protocol::peer_wire::{encode_frame, Handshake, PeerFrame};
use crate::protocol::raft::NodeId;

/// Frames queued for one peer before new ones are dropped (Raft resends what matters).
pub const PEER_QUEUE_FRAMES: usize = 1024;
/// Bytes queued for one peer before new frames are dropped (one frame always fits an empty queue).
pub const PEER_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// First reconnect delay.
pub const RECONNECT_MIN_MS: u64 = 20;
/// Longest reconnect delay.
pub const RECONNECT_MAX_MS: u64 = 1_000;
/// Time allowed to establish a connection.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Send a frame to this link's peer (dropped if not connected or the queue is full).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendToPeer(pub PeerFrame);

/// Stop the link and close its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopLink;

/// The connection of generation `0` ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ConnectionEnded(u64);

/// The outbound link to one peer.
pub struct PeerLink {
    peer: NodeId,
    addr: String,
    handshake: Handshake,
    /// The current connection's queue, if connected.
    queue: Option<mpsc::Sender<Vec<u8>>>,
    /// Bytes in the current connection's queue, shared with its writer.
    queued_bytes: Arc<ByteBudget>,
    /// Bumped on every connection attempt, so a stale "ended" notice is ignored.
    generation: u64,
    backoff_ms: u64,
    dropped: u64,
}

impl PeerLink {
    /// A link that dials `peer` at `addr` and introduces itself with `handshake`.
    pub fn new(peer: NodeId, addr: String, handshake: Handshake) -> PeerLink {
        PeerLink {
            peer,
            addr,
            handshake,
            queue: None,
            queued_bytes: Arc::new(ByteBudget::new(PEER_QUEUE_BYTES)),
            generation: 0,
            backoff_ms: RECONNECT_MIN_MS,
            dropped: 0,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let addr = self.addr.clone();
        let handshake = match encode_frame(&self.handshake) {
            Ok(frame) => frame,
            Err(e) => {
                log::error!("peer link to {}: cannot encode handshake: {e}", self.peer);
                return;
            }
        };
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        // A new connection starts with an empty queue.
        self.queued_bytes = Arc::new(ByteBudget::new(PEER_QUEUE_BYTES));
        let queued_bytes = self.queued_bytes.clone();
        let me = ctx.address();
        let connect = async move {
            let stream =
                tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(&addr))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok::<TcpStream, std::io::Error>(stream)
        };
        ctx.spawn(connect.into_actor(self).map(move |result, act, ctx| match result {
            Ok(stream) => {
                log::info!("replica {}: connected to peer {} at {}", act.handshake.from, act.peer, act.addr);
                act.backoff_ms = RECONNECT_MIN_MS;
                act.queue = Some(tx);
                let queue = (rx, queued_bytes);
                ctx.spawn(write_loop(stream, handshake, queue, me, generation).into_actor(act));
            }
            Err(e) => {
                log::debug!("peer link to {} at {}: {e}", act.peer, act.addr);
                act.schedule_reconnect(ctx);
            }
        }));
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        self.queue = None;
        let delay = Duration::from_millis(self.backoff_ms);
        self.backoff_ms = (self.backoff_ms * 2).min(RECONNECT_MAX_MS);
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

/// Writes the handshake, then every queued frame, flushing when the queue runs dry.
async fn write_loop(
    stream: TcpStream,
    handshake: Vec<u8>,
    (mut rx, queued_bytes): (mpsc::Receiver<Vec<u8>>, Arc<ByteBudget>),
    link: Addr<PeerLink>,
    generation: u64,
) {
    let mut writer = BufWriter::new(stream);
    let result: std::io::Result<()> = async {
        writer.write_all(&handshake).await?;
        writer.flush().await?;
        while let Some(frame) = rx.recv().await {
            writer.write_all(&frame).await?;
            queued_bytes.release(frame.len());
            while let Ok(frame) = rx.try_recv() {
                writer.write_all(&frame).await?;
                queued_bytes.release(frame.len());
            }
            writer.flush().await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        log::info!("peer connection lost: {e}");
    }
    link.do_send(ConnectionEnded(generation));
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl Handler<SendToPeer> for PeerLink {
    type Result = ();

    fn handle(&mut self, msg: SendToPeer, _ctx: &mut Self::Context) {
        let Some(queue) = &self.queue else {
            self.dropped += 1;
            return;
        };
        match encode_frame(&msg.0) {
            Ok(frame) => {
                let len = frame.len();
                if !self.queued_bytes.try_reserve(len) {
                    // Full: drop rather than grow; Raft retransmits.
                    self.dropped += 1;
                } else if queue.try_send(frame).is_err() {
                    self.queued_bytes.release(len);
                    self.dropped += 1;
                }
            }
            Err(e) => log::error!("peer link to {}: cannot encode message: {e}", self.peer),
        }
    }
}

impl Handler<ConnectionEnded> for PeerLink {
    type Result = ();

    fn handle(&mut self, msg: ConnectionEnded, ctx: &mut Self::Context) {
        if msg.0 == self.generation {
            log::info!("replica {}: disconnected from peer {}", self.handshake.from, self.peer);
            self.schedule_reconnect(ctx);
        }
    }
}

impl Handler<StopLink> for PeerLink {
    type Result = ();

    fn handle(&mut self, _msg: StopLink, ctx: &mut Self::Context) {
        self.queue = None;
        ctx.stop();
    }
}
