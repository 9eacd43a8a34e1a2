//! Frames between replicas: a 4-byte big-endian length, then one encoded value.
//!
//! The first frame on a connection is a [`Handshake`]; every later one is a [`PeerFrame`]: a Raft
//! message, or a piece of a snapshot transfer (snapshots travel in bounded chunks beside Raft).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::raft::{Message, NodeId, SnapshotMeta};

/// Version of the peer protocol; a peer speaking another version is refused.
pub const PEER_PROTOCOL_VERSION: u32 = 1;

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
    pub data: Vec<u8>,
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
}

impl PeerFrame {
    /// The sender.
    pub fn from(&self) -> NodeId {
        match self {
            PeerFrame::Raft(m) => m.from,
            PeerFrame::SnapshotChunk(c) => c.from,
            PeerFrame::SnapshotAck { from, .. } => *from,
        }
    }

    /// The receiver.
    pub fn to(&self) -> NodeId {
        match self {
            PeerFrame::Raft(m) => m.to,
            PeerFrame::SnapshotChunk(c) => c.to,
            PeerFrame::SnapshotAck { to, .. } => *to,
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
