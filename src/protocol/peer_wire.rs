//! Frames between replicas: a 4-byte big-endian length, then one encoded value.
//!
//! The first frame on a connection is a [`Handshake`]; every later one is a [`PeerFrame`]: a Raft
//! message, a piece of a snapshot transfer (snapshots travel in bounded chunks beside Raft), or a
//! client request a follower forwards to the leader and the leader's answer.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::raft::{Message, NodeId, SnapshotMeta};
use super::request::AdminRequest;

/// Version of the peer protocol; a peer speaking another version is refused.
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// Largest frame payload accepted from a peer, in bytes (one maximal value plus headroom).
pub const MAX_FRAME_BYTES: usize = 40 * 1024 * 1024;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// What a replica says first on a connection it opens to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The cluster the sender belongs to; a mismatch is refused.
    pub cluster_name: String,
    /// The sender's member id: the only source of its identity (never the source address).
    pub from: NodeId,
    /// The sender's peer protocol version.
    pub version: u32,
    /// Where the sender serves clients, so followers can redirect to the leader.
    pub client_addr: String,
}

/// Bytes of snapshot image in one chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// One piece of a snapshot image on its way from the leader to a follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader sending it.
    pub from: NodeId,
    /// The follower receiving it.
    pub to: NodeId,
    /// The leader's term.
    pub term: u64,
    /// The snapshot's log position (identifies the transfer).
    pub meta: SnapshotMeta,
    /// Where `data` starts in the image.
    pub offset: u64,
    /// The image's whole length.
    pub total_bytes: u64,
    /// CRC-32 of the whole image, checked once it is all there.
    pub crc32: u32,
    /// The bytes, at most [`SNAPSHOT_CHUNK_BYTES`].
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A client request a follower hands to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarded {
    /// Propose this encoded proposal; answered [`ForwardAnswer::Proposed`] with where it went.
    Propose(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Confirm leadership and give a read index for the reads the follower holds.
    ReadIndex,
    /// Change the membership or hand leadership over.
    Admin(AdminRequest),
}

/// Why the leader did not take a forwarded request (nothing was appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRefusal {
    /// The receiver is not the leader (any more).
    NotLeader,
    /// Too much is waiting on the leader.
    Busy,
    /// The leader is handing leadership over.
    Transferring,
    /// The leader's disk is full: it takes no writes until there is room.
    DiskFull,
}

/// The leader's answer to a [`Forwarded`] request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardAnswer {
    /// The proposal was appended at `index` in `term`; the follower watches that position.
    Proposed {
        /// Log index.
        index: u64,
        /// The leader's term.
        term: u64,
    },
    /// Leadership was confirmed after the request arrived; serve the reads once `index` is applied,
    /// judging expiry at `clock_ms` (the leader's clock at confirmation) or later.
    ReadIndex {
        /// The read index.
        index: u64,
        /// The leader's clock, milliseconds.
        clock_ms: u64,
    },
    /// The admin request took effect; for a membership change, once the follower has applied
    /// `index` it answers `+OK` (0: answer at once).
    AdminDone(u64),
    /// The request was taken but failed; answer the client this error line.
    Failed(String),
    /// The request was not taken.
    Refused(ForwardRefusal),
}

/// What travels between peers after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// A Raft message.
    Raft(Message),
    /// A piece of a snapshot image.
    SnapshotChunk(SnapshotChunk),
    /// The follower holds the first `received` bytes of the snapshot at `meta` (flow control and
    /// resumption: the leader sends from there).
    SnapshotAck {
        /// The follower.
        from: NodeId,
        /// The leader.
        to: NodeId,
        /// The snapshot being received.
        meta: SnapshotMeta,
        /// Bytes held so far.
        received: u64,
    },
    /// A client request forwarded by a follower to the leader it knows.
    Forward {
        /// The follower.
        from: NodeId,
        /// The leader.
        to: NodeId,
        /// Identifies the follower's run (so ids of a restarted follower are not taken for repeats).
        run: u64,
        /// The follower's id for this request, increasing within a run; the answer carries it.
        id: u64,
        /// The request.
        request: Forwarded,
    },
    /// The leader's answer to a [`PeerFrame::Forward`].
    ForwardAnswer {
        /// The leader.
        from: NodeId,
        /// The follower.
        to: NodeId,
        /// The forward's id.
        id: u64,
        /// What became of it.
        answer: ForwardAnswer,
    },
}

impl PeerFrame {
    /// The sender.
    pub fn from(&self) -> NodeId {
        match self {
            PeerFrame::Raft(m) => m.from,
            PeerFrame::SnapshotChunk(c) => c.from,
            PeerFrame::SnapshotAck { from, .. }
            | PeerFrame::Forward { from, .. }
            | PeerFrame::ForwardAnswer { from, .. } => *from,
        }
    }

    /// The receiver.
    pub fn to(&self) -> NodeId {
        match self {
            PeerFrame::Raft(m) => m.to,
            PeerFrame::SnapshotChunk(c) => c.to,
            PeerFrame::SnapshotAck { to, .. }
            | PeerFrame::Forward { to, .. }
            | PeerFrame::ForwardAnswer { to, .. } => *to,
        }
    }
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// The payload is not a valid encoding.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Encodes `value` as one frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let payload = codec::encode(value)?;
    if payload.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The payload length announced by a frame header, checked against the limit.
pub fn frame_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame's payload.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(codec::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::raft::{Message, MessageBody};

    #[test]
    fn frame_round_trip_and_limits() {
        let m = Message { from: 1, to: 2, term: 3, body: MessageBody::HeartbeatResponse { read_round: 4 } };
        let frame = encode_frame(&m).expect("encode");
        let len = frame_len(frame[..4].try_into().expect("4 bytes")).expect("within limit");
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode_payload::<Message>(&frame[4..]).expect("decode"), m);
        assert!(matches!(frame_len(u32::MAX.to_be_bytes()), Err(FrameError::TooLarge(_))));
        assert!(decode_payload::<Message>(b"\xff\xff\xff").is_err());
    }
}
