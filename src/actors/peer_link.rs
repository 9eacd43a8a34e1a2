//! One outbound connection to another member: handshake, frames, reconnect with back-off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::byte_budget::ByteBudget;
use crate::dial::refuse_self_connection;
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

/// Write what was staged for this link's peer (sent after staging, in case no flush follows).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushStaged;

/// Stop the link and close its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopLink;

/// The connection of generation `0` ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ConnectionEnded(u64);

/// Frames a writer task takes from its queue for one write to the socket.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The sending side of one link, shared by the transport on consensus's thread and the link.
///
/// Frames are staged, then flushed: written to the socket on the spot when nothing waits ahead
/// of them (so an append leaves before consensus wakes another thread, and a follower's
/// acknowledgement before its applier is woken), otherwise queued for the writer task, which
/// also writes whatever a full socket left over.
#[derive(Default)]
pub struct LinkOut {
    state: Mutex<OutState>,
}

#[derive(Default)]
struct OutState {
    /// Frames encoded since the last flush, in order.
    staged: Vec<u8>,
    /// None while not connected: frames given then are dropped (Raft resends what matters).
    connection: Option<OutConnection>,
}

struct OutConnection {
    stream: Arc<TcpStream>,
    queue: mpsc::Sender<Vec<u8>>,
    /// Bytes handed to the writer task and not yet written to the socket.
    queued: Arc<ByteBudget>,
}

impl LinkOut {
    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        // Nothing panics while holding the lock, but a poisoned one still holds sound bytes.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Encodes `frame` behind those staged; true if it is the first since the last flush.
    pub fn stage(&self, frame: &PeerFrame) -> bool {
        let bytes = match encode_frame(frame) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("peer link: cannot encode a message for {}: {e}", frame.to());
                return false;
            }
        };
        let mut state = self.state();
        if state.connection.is_none() {
            return false;
        }
        if !state.staged.is_empty() && state.staged.len() + bytes.len() > PEER_QUEUE_BYTES {
            // Bounded like the queue: what is staged goes out (or is queued) first.
            Self::flush_locked(&mut state);
        }
        let first = state.staged.is_empty();
        if first {
            state.staged = bytes;
        } else {
            state.staged.extend_from_slice(&bytes);
        }
        first
    }

    /// Writes the staged frames: to the socket if nothing is queued ahead, else to the queue.
    pub fn flush(&self) {
        Self::flush_locked(&mut self.state());
    }

    fn flush_locked(state: &mut OutState) {
        if state.staged.is_empty() {
            return;
        }
        let mut bytes = std::mem::take(&mut state.staged);
        let Some(connection) = &state.connection else { return };
        let mut partly_written = false;
        if connection.queued.held() == 0 {
            // The writer task holds nothing, so these bytes are next on the wire either way.
            match connection.stream.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => {
                    partly_written = n > 0;
                    bytes.drain(..n);
                }
                // A full socket, or a broken one: the writer task waits for room, or meets the
                // same error and ends the connection.
                Err(_) => {}
            }
        }
        let len = bytes.len();
        if connection.queued.try_reserve(len) {
            if connection.queue.try_send(bytes).is_ok() {
                return;
            }
            connection.queued.release(len);
        }
        // Dropped: the queue is full, and Raft resends what matters.
        if partly_written {
            // The rest of a frame is lost mid-stream: end the connection rather than garble it.
            // (Not expected: an empty queue always has room for one item.)
            let _ = shutdown_both(&connection.stream);
            state.connection = None;
        }
    }

    fn connect(&self, connection: OutConnection) {
        self.state().connection = Some(connection);
    }

    fn disconnect(&self) {
        let mut state = self.state();
        state.connection = None;
        state.staged.clear();
    }
}

/// Shuts both directions of `stream` down, so its reader and writer see the end.
fn shutdown_both(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor this stream owns and keeps open for the call.
    let rc = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The outbound link to one peer: dials, redials with back-off, and runs the writer task.
pub struct PeerLink {
    peer: NodeId,
    addr: String,
    handshake: Handshake,
    out: Arc<LinkOut>,
    /// Bumped on every connection attempt, so a stale "ended" notice is ignored.
    generation: u64,
    backoff_ms: u64,
}

impl PeerLink {
    /// A link that dials `peer` at `addr`, introduces itself with `handshake`, and sends what
    /// is staged in `out`.
    pub fn new(peer: NodeId, addr: String, handshake: Handshake, out: Arc<LinkOut>) -> PeerLink {
        PeerLink { peer, addr, handshake, out, generation: 0, backoff_ms: RECONNECT_MIN_MS }
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
        let me = ctx.address();
        let connect = async move {
            let stream =
                tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(&addr))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            // A dial of a down peer on this host can meet itself; the link then dials again.
            refuse_self_connection(&stream)?;
            stream.set_nodelay(true)?;
            Ok::<TcpStream, std::io::Error>(stream)
        };
        ctx.spawn(connect.into_actor(self).map(move |result, act, ctx| match result {
            Ok(stream) => {
                log::info!("replica {}: connected to peer {} at {}", act.handshake.from, act.peer, act.addr);
                act.backoff_ms = RECONNECT_MIN_MS;
                let stream = Arc::new(stream);
                let (queue, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
                let queued = Arc::new(ByteBudget::new(PEER_QUEUE_BYTES));
                // The handshake goes first, through the queue: until the writer task has written
                // it, no flush writes to the socket itself.
                let reserved = queued.try_reserve(handshake.len());
                if !reserved || queue.try_send(handshake).is_err() {
                    log::error!("peer link to {}: cannot queue the handshake", act.peer);
                    return act.schedule_reconnect(ctx);
                }
                act.out.connect(OutConnection { stream: stream.clone(), queue, queued: queued.clone() });
                ctx.spawn(write_loop(stream, rx, queued, me, generation).into_actor(act));
            }
            Err(e) => {
                log::debug!("peer link to {} at {}: {e}", act.peer, act.addr);
                act.schedule_reconnect(ctx);
            }
        }));
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        self.out.disconnect();
        let delay = Duration::from_millis(self.backoff_ms);
        self.backoff_ms = (self.backoff_ms * 2).min(RECONNECT_MAX_MS);
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

/// Runs [`write_queued`] and tells the link when the connection ends.
async fn write_loop(
    stream: Arc<TcpStream>,
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<ByteBudget>,
    link: Addr<PeerLink>,
    generation: u64,
) {
    if let Err(e) = write_queued(&stream, rx, &queued).await {
        log::info!("peer connection lost: {e}");
    }
    link.do_send(ConnectionEnded(generation));
}

/// Writes every queued frame (the handshake first), several per write when they wait together,
/// until the queue closes or a write fails.
async fn write_queued(
    stream: &TcpStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: &ByteBudget,
) -> std::io::Result<()> {
    while let Some(mut bytes) = rx.recv().await {
        while bytes.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => bytes.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        write_all(stream, &bytes).await?;
        // Only now: while any byte is held, flushes queue behind it instead of writing.
        queued.release(bytes.len());
    }
    Ok(())
}

/// Writes all of `bytes` to a stream that others may also write to between these writes.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl Handler<FlushStaged> for PeerLink {
    type Result = ();

    fn handle(&mut self, _msg: FlushStaged, _ctx: &mut Self::Context) {
        self.out.flush();
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
        self.out.disconnect();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer_wire::{decode_payload, frame_len, FRAME_HEADER_BYTES};
    use crate::protocol::raft::SnapshotMeta;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn ack(received: u64) -> PeerFrame {
        PeerFrame::SnapshotAck { from: 2, to: 1, meta: SnapshotMeta::default(), received }
    }

    /// A connected pair: the link's end and the peer's.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Arc::new(ours.expect("connect")), theirs.expect("accept").0)
    }

    async fn read_frame(peer: &mut TcpStream) -> PeerFrame {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        peer.read_exact(&mut header).await.expect("header");
        let mut payload = vec![0u8; frame_len(header).expect("length")];
        peer.read_exact(&mut payload).await.expect("payload");
        decode_payload(&payload).expect("frame")
    }

    #[tokio::test]
    async fn a_flush_writes_directly_when_nothing_is_queued_and_behind_the_queue_otherwise() {
        let (stream, mut peer) = pair().await;
        let (queue, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        let queued = Arc::new(ByteBudget::new(PEER_QUEUE_BYTES));
        // A frame already handed to the writer task, which has not run yet.
        let first = encode_frame(&ack(1)).expect("encode");
        assert!(queued.try_reserve(first.len()));
        queue.try_send(first).expect("queue");
        let out = LinkOut::default();
        out.connect(OutConnection { stream: stream.clone(), queue, queued: queued.clone() });

        assert!(out.stage(&ack(2)), "the first frame staged since a flush");
        assert!(!out.stage(&ack(3)));
        out.flush();
        let behind = encode_frame(&ack(2)).expect("encode").len() * 2;
        let held_before = queued.held();
        assert!(held_before > behind, "queued behind the first frame, not written past it");

        let writer = tokio::spawn({
            let (stream, queued) = (stream.clone(), queued.clone());
            async move { write_queued(&stream, rx, &queued).await }
        });
        for expected in 1..=3 {
            assert_eq!(read_frame(&mut peer).await, ack(expected));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queued.held() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the writer never released its bytes");
            tokio::task::yield_now().await;
        }

        // Nothing queued now: the flush itself writes, and the writer task gets nothing.
        out.stage(&ack(4));
        out.flush();
        assert_eq!(queued.held(), 0);
        assert_eq!(read_frame(&mut peer).await, ack(4));

        out.disconnect();
        assert!(!out.stage(&ack(5)), "a link with no connection drops what it is given");
        assert!(writer.await.expect("join").is_ok(), "the queue closed with the connection");
    }
}
