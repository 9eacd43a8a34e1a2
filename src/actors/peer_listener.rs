//! Accepts connections from other members, checks their handshake, and hands their frames to consensus.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;

use super::accept::{accept_into, Accepted};
use super::consensus::Inbound;
use super::status::StatusBoard;
use crate::protocol::peer_wire::{
    decode_payload, frame_len, FrameError, Handshake, PeerFrame, MAX_FRAME_BYTES, PEER_PROTOCOL_VERSION,
};
use crate::protocol::raft::NodeId;

/// Time a new peer connection has to send its handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Stop listening and drop every inbound peer connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopListener;

/// The listener for peer connections.
pub struct PeerListener {
    /// A std listener, so the actor can be started on another thread's runtime and register it there.
    listener: Option<std::net::TcpListener>,
    /// Who may connect; shared with every connection it serves.
    check: Arc<InboundCheck>,
    consensus: Recipient<Inbound>,
    status: Arc<StatusBoard>,
}

impl PeerListener {
    /// A listener on `listener` (non-blocking) for members of `cluster_name`, delivering to
    /// `consensus`.
    pub fn new(
        listener: std::net::TcpListener,
        cluster_name: String,
        id: NodeId,
        consensus: Recipient<Inbound>,
        status: Arc<StatusBoard>,
    ) -> PeerListener {
        let check = Arc::new(InboundCheck { cluster_name, id, status: status.clone() });
        PeerListener { listener: Some(listener), check, consensus, status }
    }
}

/// Why an inbound peer connection was closed.
#[derive(Debug, thiserror::Error)]
enum PeerInputError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("refused: {0}")]
    Refused(String),
}

/// Read buffer of a member's inbound connection, in bytes (an append of a few dozen entries).
const PEER_READ_BUFFER_BYTES: usize = 32 * 1024;

/// Largest handshake frame, in bytes: a stranger gets no big allocation before it is checked.
const MAX_HANDSHAKE_BYTES: usize = 4096;

async fn read_frame<T: serde::de::DeserializeOwned, R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<Option<T>, PeerInputError> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(header)?;
    if len > max_bytes {
        return Err(FrameError::TooLarge(len).into());
    }
    buf.resize(len, 0);
    stream.read_exact(buf).await?;
    Ok(Some(decode_payload(buf)?))
}

struct InboundCheck {
    cluster_name: String,
    id: NodeId,
    /// Says who is a member now (the membership changes while the listener runs).
    status: Arc<StatusBoard>,
}

impl InboundCheck {
    fn check(&self, h: &Handshake) -> Result<(), PeerInputError> {
        if h.version != PEER_PROTOCOL_VERSION {
            return Err(PeerInputError::Refused(format!(
                "protocol version {} (want {PEER_PROTOCOL_VERSION})",
                h.version
            )));
        }
        if h.cluster_name != self.cluster_name {
            return Err(PeerInputError::Refused(format!(
                "cluster '{}' (this is '{}')",
                h.cluster_name, self.cluster_name
            )));
        }
        if !self.status.peer_allowed(h.from) {
            return Err(PeerInputError::Refused(format!("id {} is not another member", h.from)));
        }
        Ok(())
    }
}

async fn serve_peer<R: AsyncRead + Unpin>(
    mut stream: R,
    check: Arc<InboundCheck>,
    consensus: Recipient<Inbound>,
    status: Arc<StatusBoard>,
) -> Result<(), PeerInputError> {
    let mut buf = Vec::new();
    let handshake: Handshake = match tokio::time::timeout(
        Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
        read_frame(&mut stream, &mut buf, MAX_HANDSHAKE_BYTES),
    )
    .await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(PeerInputError::Refused("no handshake in time".into())),
    };
    check.check(&handshake)?;
    let from = handshake.from;
    status.set_client_addr(from, handshake.client_addr);
    log::info!("replica {}: peer {from} connected", check.id);
    // Buffered only once the peer is known (a stranger gets no buffer): a burst of frames then
    // costs one read, not two per frame and a third that finds nothing.
    let mut stream = tokio::io::BufReader::with_capacity(PEER_READ_BUFFER_BYTES, stream);
    while let Some(frame) = read_frame::<PeerFrame, _>(&mut stream, &mut buf, MAX_FRAME_BYTES).await? {
        // Identity comes from the handshake: a frame claiming another sender is refused.
        if frame.from() != from || frame.to() != check.id {
            return Err(PeerInputError::Refused(format!(
                "frame from {} to {} on peer {from}'s connection",
                frame.from(),
                frame.to()
            )));
        }
        consensus.do_send(Inbound(frame));
    }
    log::info!("replica {}: peer {from} disconnected", check.id);
    Ok(())
}

impl Actor for PeerListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(listener) = self.listener.take() else { return };
        match TcpListener::from_std(listener) {
            Ok(listener) => accept_into(self, ctx, listener, "peer listener"),
            Err(e) => {
                // The replica cannot hear its peers: say so loudly rather than run deaf.
                log::error!("peer listener: cannot register the listening socket: {e}");
                self.status.mark_stopped(&format!("peer listener failed: {e}"));
                ctx.stop();
            }
        }
    }
}

impl Handler<Accepted> for PeerListener {
    type Result = ();

    fn handle(&mut self, msg: Accepted, ctx: &mut Self::Context) {
        let _ = msg.0.set_nodelay(true);
        let id = self.check.id;
        let serve = serve_peer(msg.0, self.check.clone(), self.consensus.clone(), self.status.clone());
        // Spawned on this actor, so stopping the listener drops every inbound connection too.
        ctx.spawn(
            async move {
                if let Err(e) = serve.await {
                    log::warn!("replica {id}: closed a peer connection: {e}");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<StopListener> for PeerListener {
    type Result = ();

    fn handle(&mut self, _msg: StopListener, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
