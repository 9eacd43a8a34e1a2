//! How the consensus actor reaches other members: a small trait with a TCP implementation here
//! and an in-memory one in the tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use super::peer_link::{FlushStaged, LinkOut, PeerLink, StopLink};
use crate::protocol::peer_wire::{Handshake, PeerFrame};
use crate::protocol::raft::NodeId;

/// Sends frames (Raft messages, snapshot chunks) to other members. Delivery is best effort: Raft retransmits what is lost.
pub trait Transport: Send + 'static {
    /// Queues `frame` for `frame.to()`; never blocks, may drop.
    fn send(&mut self, frame: PeerFrame);

    /// Puts what was sent so far on the wire now rather than after the caller's turn, before
    /// the caller wakes another thread (on this VM a wake costs the waker tens of µs).
    fn flush(&mut self) {}

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
    links: BTreeMap<NodeId, Link>,
}

/// One member's link: its peer address, the actor that dials it, and where its frames wait.
struct Link {
    addr: String,
    actor: Addr<PeerLink>,
    out: Arc<LinkOut>,
}

impl TcpTransport {
    /// A transport that introduces itself with `handshake` and dials no one yet.
    pub fn new(handshake: Handshake) -> TcpTransport {
        TcpTransport { handshake, links: BTreeMap::new() }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, frame: PeerFrame) {
        if let Some(link) = self.links.get(&frame.to()) {
            if link.out.stage(&frame) {
                // Written by the caller's flush if one comes first, else by the link's turn.
                link.actor.do_send(FlushStaged);
            }
        }
    }

    fn flush(&mut self) {
        for link in self.links.values() {
            link.out.flush();
        }
    }

    fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        let me = self.handshake.from;
        self.links.retain(|id, link| {
            let keep = peers.get(id) == Some(&link.addr);
            if !keep {
                log::info!("replica {me}: closing the link to {id}");
                link.actor.do_send(StopLink);
            }
            keep
        });
        for (&id, addr) in peers {
            if id == me || addr.is_empty() || self.links.contains_key(&id) {
                continue;
            }
            log::info!("replica {me}: opening a link to {id} at {addr}");
            let out = Arc::new(LinkOut::default());
            let actor = PeerLink::new(id, addr.clone(), self.handshake.clone(), out.clone()).start();
            self.links.insert(id, Link { addr: addr.clone(), actor, out });
        }
    }

    fn close(&mut self) {
        for (_, link) in std::mem::take(&mut self.links) {
            link.actor.do_send(StopLink);
        }
    }
}
