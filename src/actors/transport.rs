//! How the consensus actor reaches other members: a small trait with a TCP implementation here
//! and an in-memory one in the tests.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::peer_link::{PeerLink, SendToPeer, StopLink};
use crate::protocol::peer_wire::{Handshake, PeerFrame};
use crate::protocol::raft::NodeId;

/// Sends frames (Raft messages, snapshot chunks) to other members. Delivery is best effort: Raft retransmits what is lost.
pub trait Transport: Send + 'static {
    /// Queues `frame` for `frame.to()`; never blocks, may drop.
    fn send(&mut self, frame: PeerFrame);

    /// The members to reach from now on, with their peer addresses: links to others close.
    /// Called from inside the consensus actor whenever the membership changes.
    fn set_peers(&mut self, _peers: &BTreeMap<NodeId, String>) {}

    /// Closes every link (the replica is stopping).
    fn close(&mut self) {}
}

/// The production transport: one [`PeerLink`] actor per other member, started on the caller's
/// arbiter (the consensus thread).
pub struct TcpTransport {
    handshake: Handshake,
    links: BTreeMap<NodeId, (String, Addr<PeerLink>)>,
}

impl TcpTransport {
    /// A transport that introduces itself with `handshake` and dials no one yet.
    pub fn new(handshake: Handshake) -> TcpTransport {
        TcpTransport { handshake, links: BTreeMap::new() }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, frame: PeerFrame) {
        if let Some((_, link)) = self.links.get(&frame.to()) {
            link.do_send(SendToPeer(frame));
        }
    }

    fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        let me = self.handshake.from;
        self.links.retain(|id, (addr, link)| {
            let keep = peers.get(id) == Some(addr);
            if !keep {
                log::info!("replica {me}: closing the link to {id}");
                link.do_send(StopLink);
            }
            keep
        });
        for (&id, addr) in peers {
            if id == me || addr.is_empty() || self.links.contains_key(&id) {
                continue;
            }
            log::info!("replica {me}: opening a link to {id} at {addr}");
            let link = PeerLink::new(id, addr.clone(), self.handshake.clone()).start();
            self.links.insert(id, (addr.clone(), link));
        }
    }

    fn close(&mut self) {
        for (_, (_, link)) in std::mem::take(&mut self.links) {
            link.do_send(StopLink);
        }
    }
}
