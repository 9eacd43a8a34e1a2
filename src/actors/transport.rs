//! How the consensus actor reaches other members: a small trait with a TCP implementation here
//! and an in-memory one in the tests.

use std::collections::BTreeMap;

use actix::Addr;

use super::peer_link::{PeerLink, SendToPeer};
use crate::protocol::peer_wire::PeerFrame;
use crate::protocol::raft::NodeId;

/// Sends frames (Raft messages, snapshot chunks) to other members. Delivery is best effort: Raft retransmits what is lost.
pub trait Transport: Send + 'static {
    /// Queues `frame` for `frame.to()`; never blocks, may drop.
    fn send(&mut self, frame: PeerFrame);
}

/// The production transport: one [`PeerLink`] actor per other member.
pub struct TcpTransport {
    links: BTreeMap<NodeId, Addr<PeerLink>>,
}

impl TcpTransport {
    /// A transport over the given links.
    pub fn new(links: BTreeMap<NodeId, Addr<PeerLink>>) -> TcpTransport {
        TcpTransport { links }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, frame: PeerFrame) {
        if let Some(link) = self.links.get(&frame.to()) {
            link.do_send(SendToPeer(frame));
        }
    }
}
