//! Accepts connections from other members, checks their handshake, and hands their frames to consensus.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Inbound connections from one address that have not sent their handshake yet, at most; more
/// are closed at once (bare connects would otherwise take the descriptors the log and snapshots
/// need). Per address, so one host's flood does not shut out a member reconnecting from another.
pub const MAX_PENDING_HANDSHAKES_PER_ADDR: usize = 16;
/// Inbound connections waiting for their handshake at most, from every address together.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Bytes of a frame's buffer taken before its payload arrives; the rest grows as it does.
const FRAME_PREALLOCATION_BYTES: usize = 1024 * 1024;

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
    /// Connections served, by handshake state.
    connections: Arc<Connections>,
    /// When a connection was last refused with a log line.
    last_refusal_logged: Option<Instant>,
}

/// The listener's connections.
#[derive(Default)]
struct Connections {
    /// Connections accepted whose handshake has not come yet, in all and per address.
    pending: AtomicUsize,
    pending_by_addr: Mutex<HashMap<IpAddr, usize>>,
    /// Per member, its current connection: a number, and what ends it when a newer one from
    /// the same member replaces it (a peer that reconnects leaves the old one behind, maybe
    /// half-open for good).
    current: Mutex<HashMap<NodeId, (u64, tokio::sync::oneshot::Sender<()>)>>,
    next: AtomicU64,
}

/// Counts a connection from an address as pending until dropped (its handshake came, or it ended).
struct Pending(Arc<Connections>, IpAddr);

impl Pending {
    /// Counts one more from `addr`, unless as many wait as allowed.
    fn take(connections: &Arc<Connections>, addr: IpAddr) -> Option<Pending> {
        let mut by_addr = connections.pending_by_addr.lock().ok()?;
        // The total first: a refused address leaves no entry behind (so a flood from many
        // addresses cannot grow the map).
        if connections.pending.load(Ordering::Relaxed) >= MAX_PENDING_HANDSHAKES {
            return None;
        }
        let from_addr = by_addr.entry(addr).or_insert(0);
        if *from_addr >= MAX_PENDING_HANDSHAKES_PER_ADDR {
            return None;
        }
        *from_addr += 1;
        connections.pending.fetch_add(1, Ordering::Relaxed);
        Some(Pending(connections.clone(), addr))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut by_addr) = self.0.pending_by_addr.lock() {
            if let Some(count) = by_addr.get_mut(&self.1) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    by_addr.remove(&self.1);
                }
            }
        }
    }
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
        PeerListener {
            listener: Some(listener),
            check,
            consensus,
            status,
            connections: Arc::default(),
            last_refusal_logged: None,
        }
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
    // A peer that declares a large frame and sends nothing holds no more than the preallocation;
    // once that much has arrived, the rest of the declared length is taken in one step (growing
    // by doubling would reach 64 MiB for a 40 MiB frame).
    buf.clear();
    buf.reserve_exact(len.min(FRAME_PREALLOCATION_BYTES));
    let mut payload = (&mut *stream).take(len as u64);
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            buf.reserve_exact(len - buf.len());
        }
        if payload.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    let frame = decode_payload(buf)?;
    if buf.capacity() > FRAME_PREALLOCATION_BYTES {
        // One large frame (a snapshot chunk) does not hold its buffer for the connection's life.
        *buf = Vec::new();
    }
    Ok(Some(frame))
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
    (connections, pending): (Arc<Connections>, Pending),
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
    drop(pending);
    check.check(&handshake)?;
    let from = handshake.from;
    status.set_client_addr(from, handshake.client_addr);
    log::info!("replica {}: peer {from} connected", check.id);
    let number = connections.next.fetch_add(1, Ordering::Relaxed);
    let (end, mut replaced) = tokio::sync::oneshot::channel();
    // The member's older connection, if any, ends (its sender dropped).
    if let Ok(mut current) = connections.current.lock() {
        current.insert(from, (number, end));
    }
    let _forget = Forget { connections: connections.clone(), from, number };
    // Buffered only once the peer is known (a stranger gets no buffer): a burst of frames then
    // costs one read, not two per frame and a third that finds nothing.
    let mut stream = tokio::io::BufReader::with_capacity(PEER_READ_BUFFER_BYTES, stream);
    loop {
        let frame = tokio::select! {
            frame = read_frame::<PeerFrame, _>(&mut stream, &mut buf, MAX_FRAME_BYTES) => frame?,
            _ = &mut replaced => {
                log::info!("replica {}: peer {from} connected again; its older connection closed", check.id);
                return Ok(());
            }
        };
        let Some(frame) = frame else { break };
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

/// Forgets a member's connection when it ends, unless a newer one replaced it.
struct Forget {
    connections: Arc<Connections>,
    from: NodeId,
    number: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Ok(mut current) = self.connections.current.lock() {
            if current.get(&self.from).is_some_and(|(number, _)| *number == self.number) {
                current.remove(&self.from);
            }
        }
    }
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
        let id = self.check.id;
        let addr = msg.0.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let Some(pending) = Pending::take(&self.connections, addr) else {
            // Once a second at most: the flood is not copied into the log.
            if self.last_refusal_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.last_refusal_logged = Some(Instant::now());
                log::warn!(
                    "replica {id}: too many peer connections wait for a handshake (from {addr}: at most \
                     {MAX_PENDING_HANDSHAKES_PER_ADDR}; {MAX_PENDING_HANDSHAKES} in all); closing new ones"
                );
            }
            return;
        };
        let _ = msg.0.set_nodelay(true);
        let _ = crate::dial::keep_alive(&msg.0);
        let tracking = (self.connections.clone(), pending);
        let serve =
            serve_peer(msg.0, self.check.clone(), self.consensus.clone(), self.status.clone(), tracking);
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
