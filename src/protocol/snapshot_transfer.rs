//! Moving a snapshot image from a leader to a follower in chunks, beside Raft.
//!
//! The sender side ([`SnapshotSender`]) keeps one transfer per follower with stop-and-wait flow
//! control: one chunk out, the follower answers with the bytes it holds, the next chunk goes
//! from there (so a lost chunk or a reconnect resumes where the follower is). A chunk without
//! an answer for `resend_ticks` is sent again; a transfer without progress for
//! `give_up_ticks` is abandoned, and Raft asks again later. The receiver side
//! ([`SnapshotReceiver`]) assembles the chunks in order and checks the CRC of the whole image.
//!
//! Both are driven by the caller's ticks, never a clock: the seeded simulation runs them as the
//! replica does. The caller holds the image (the replica its file, the simulation its bytes)
//! and frames the chunk each [`SendChunk`] names.

use std::collections::BTreeMap;

use super::peer_wire::SnapshotChunk;
use super::raft::{NodeId, Snapshot, SnapshotMeta};

/// The most a receiver reserves for an image before its bytes arrive.
const MAX_RESERVED_IMAGE_BYTES: u64 = 1 << 30;

/// How a transfer is paced, in the caller's ticks and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// Largest chunk.
    pub chunk_bytes: usize,
    /// Ticks without an answer before the outstanding chunk is sent again.
    pub resend_ticks: u32,
    /// Ticks without progress before a transfer is abandoned.
    pub give_up_ticks: u32,
    /// Largest image a receiver accepts.
    pub max_image_bytes: u64,
}

/// Send the image bytes `[offset, offset + len)` of the snapshot at `meta` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendChunk {
    /// The follower.
    pub to: NodeId,
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Where the chunk starts in the image.
    pub offset: u64,
    /// Its length (0 only for an empty image).
    pub len: usize,
}

impl SendChunk {
    /// The frame for this chunk of `image` (whose CRC-32 is `crc32`), sent by `from` in `term`.
    ///
    /// The range is clamped to the image, so a stale order can never cut past its end.
    pub fn cut(&self, from: NodeId, term: u64, image: &[u8], crc32: u32) -> SnapshotChunk {
        let start = (self.offset as usize).min(image.len());
        let end = start.saturating_add(self.len).min(image.len());
        self.frame(from, term, image.len() as u64, crc32, image[start..end].to_vec())
    }

    /// The frame for this chunk of an image of `total_bytes` (whose CRC-32 is `crc32`), sent by
    /// `from` in `term`, carrying `data`: the image's bytes from the order's offset (clamped to
    /// the image's end) on, as many as the order names or up to the end, read by the caller.
    pub fn frame(
        &self,
        from: NodeId,
        term: u64,
        total_bytes: u64,
        crc32: u32,
        data: Vec<u8>,
    ) -> SnapshotChunk {
        SnapshotChunk {
            from,
            to: self.to,
            term,
            meta: self.meta,
            offset: self.offset.min(total_bytes),
            total_bytes,
            crc32,
            data,
        }
    }
}

/// What an acknowledgement means for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome<T> {
    /// Not about a transfer under way (stale, or from a finished one): nothing to do.
    Ignored,
    /// Send this chunk next.
    Send(SendChunk),
    /// The follower holds the whole image; the transfer is over. Carries its payload and the
    /// ticks it took.
    Delivered(T, u64),
}

/// What a tick asks of the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickOrder {
    /// A chunk went unanswered: send it again.
    Resend(SendChunk),
    /// No progress for too long: the transfer to this follower is abandoned.
    Abandon(NodeId),
}

/// One transfer under way.
struct Outgoing<T> {
    meta: SnapshotMeta,
    total_bytes: u64,
    /// Bytes the follower said it holds. <= total_bytes.
    acked: u64,
    /// Ticks since `acked` last moved (or the start).
    idle_ticks: u32,
    /// Ticks since the outstanding chunk was sent.
    unanswered_ticks: u32,
    /// Ticks since the start.
    age_ticks: u64,
    payload: T,
}

impl<T> Outgoing<T> {
    /// The chunk to `to` that continues from what the follower holds.
    fn next_chunk(&self, to: NodeId, chunk_bytes: usize) -> SendChunk {
        let left = self.total_bytes.saturating_sub(self.acked);
        let len = left.min(chunk_bytes as u64) as usize;
        SendChunk { to, meta: self.meta, offset: self.acked, len }
    }
}

/// The leader's transfers, one per follower; `T` is what the caller keeps with each (the image).
pub struct SnapshotSender<T> {
    config: TransferConfig,
    transfers: BTreeMap<NodeId, Outgoing<T>>,
}

impl<T> SnapshotSender<T> {
    /// No transfers yet.
    pub fn new(config: TransferConfig) -> SnapshotSender<T> {
        SnapshotSender { config, transfers: BTreeMap::new() }
    }

    /// Whether the snapshot at `meta` is already on its way to `to`.
    pub fn is_sending(&self, to: NodeId, meta: SnapshotMeta) -> bool {
        self.transfers.get(&to).is_some_and(|t| t.meta == meta)
    }

    /// The payload kept with the transfer to `to`.
    pub fn payload(&self, to: NodeId) -> Option<&T> {
        self.transfers.get(&to).map(|t| &t.payload)
    }

    /// Whether no transfer is under way.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// Starts sending the `total_bytes` image at `meta` to `to` (replacing any other transfer to
    /// it); returns the first chunk.
    pub fn start(&mut self, to: NodeId, meta: SnapshotMeta, total_bytes: u64, payload: T) -> SendChunk {
        let transfer = Outgoing {
            meta,
            total_bytes,
            acked: 0,
            idle_ticks: 0,
            unanswered_ticks: 0,
            age_ticks: 0,
            payload,
        };
        let first = transfer.next_chunk(to, self.config.chunk_bytes);
        self.transfers.insert(to, transfer);
        first
    }

    /// The follower `from` says it holds the first `received` bytes of the snapshot at `meta`.
    pub fn on_ack(&mut self, from: NodeId, meta: SnapshotMeta, received: u64) -> AckOutcome<T> {
        let Some(t) = self.transfers.get_mut(&from) else { return AckOutcome::Ignored };
        if t.meta != meta {
            return AckOutcome::Ignored;
        }
        if received >= t.total_bytes {
            return self
                .transfers
                .remove(&from)
                .map_or(AckOutcome::Ignored, |t| AckOutcome::Delivered(t.payload, t.age_ticks));
        }
        if received != t.acked {
            t.idle_ticks = 0;
        }
        // After a lost chunk or a reconnect the follower may be behind what it said before.
        t.acked = received;
        t.unanswered_ticks = 0;
        AckOutcome::Send(t.next_chunk(from, self.config.chunk_bytes))
    }

    /// Advances the clock by one tick: resends what went unanswered, abandons what is stuck.
    pub fn tick(&mut self) -> Vec<TickOrder> {
        let mut orders = Vec::new();
        for (&to, t) in self.transfers.iter_mut() {
            t.idle_ticks += 1;
            t.unanswered_ticks += 1;
            t.age_ticks += 1;
            if t.idle_ticks >= self.config.give_up_ticks {
                orders.push(TickOrder::Abandon(to));
            } else if t.unanswered_ticks >= self.config.resend_ticks {
                t.unanswered_ticks = 0;
                orders.push(TickOrder::Resend(t.next_chunk(to, self.config.chunk_bytes)));
            }
        }
        for order in &orders {
            if let TickOrder::Abandon(to) = order {
                self.transfers.remove(to);
            }
        }
        orders
    }

    /// Drops every transfer (this node is no longer the leader).
    pub fn clear(&mut self) {
        self.transfers.clear();
    }
}

/// What a chunk means for the receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Tell the sender how many bytes are held now, if anything is to be said.
    pub ack: Option<u64>,
    /// The whole image arrived and its checksum holds: step it into Raft as an InstallSnapshot.
    pub complete: Option<Snapshot>,
    /// The whole image arrived but failed its checksum (it is asked for again from the start).
    pub corrupt: bool,
}

/// A transfer being received.
struct Incoming {
    from: NodeId,
    meta: SnapshotMeta,
    total_bytes: u64,
    crc32: u32,
    image: Vec<u8>,
}

/// A follower's side: at most one image being assembled.
pub struct SnapshotReceiver {
    max_image_bytes: u64,
    incoming: Option<Incoming>,
}

impl SnapshotReceiver {
    /// Nothing being received; images above `max_image_bytes` are refused.
    pub fn new(max_image_bytes: u64) -> SnapshotReceiver {
        SnapshotReceiver { max_image_bytes, incoming: None }
    }

    /// Bytes held of the image being received.
    pub fn held_bytes(&self) -> u64 {
        self.incoming.as_ref().map_or(0, |i| i.image.len() as u64)
    }

    /// Takes one chunk; `current_term` is this node's term (older leaders are ignored).
    pub fn on_chunk(&mut self, chunk: SnapshotChunk, current_term: u64) -> ChunkOutcome {
        if chunk.term < current_term || chunk.total_bytes > self.max_image_bytes {
            return ChunkOutcome::default();
        }
        let fresh = self.incoming.as_ref().is_none_or(|i| i.meta != chunk.meta || i.from != chunk.from);
        if fresh {
            if chunk.offset != 0 {
                // A transfer we hold nothing of: ask for it from the start.
                return ChunkOutcome { ack: Some(0), ..ChunkOutcome::default() };
            }
            // Room for the whole image at once: grown chunk by chunk, the buffer would be copied
            // at every doubling, briefly twice the image in memory. Only reserved (the pages are
            // touched as chunks arrive), up to 1 GiB (a reservation counts against a strict
            // overcommit limit before a byte arrives), and left to grow if it is refused.
            let mut image = Vec::new();
            let _ = image.try_reserve_exact(chunk.total_bytes.min(MAX_RESERVED_IMAGE_BYTES) as usize);
            self.incoming = Some(Incoming {
                from: chunk.from,
                meta: chunk.meta,
                total_bytes: chunk.total_bytes,
                crc32: chunk.crc32,
                image,
            });
        }
        let Some(incoming) = self.incoming.as_mut() else { return ChunkOutcome::default() };
        // Only the chunk that continues the image counts; anything else is answered with where we are.
        if chunk.offset == incoming.image.len() as u64
            && incoming.image.len() as u64 + chunk.data.len() as u64 <= incoming.total_bytes
        {
            incoming.image.extend_from_slice(&chunk.data);
        }
        let received = incoming.image.len() as u64;
        if received < incoming.total_bytes {
            return ChunkOutcome { ack: Some(received), ..ChunkOutcome::default() };
        }
        let Some(incoming) = self.incoming.take() else { return ChunkOutcome::default() };
        if crc32fast::hash(&incoming.image) != incoming.crc32 {
            return ChunkOutcome { ack: Some(0), complete: None, corrupt: true };
        }
        ChunkOutcome {
            ack: Some(received),
            complete: Some(Snapshot { meta: incoming.meta, data: incoming.image, ..Snapshot::default() }),
            corrupt: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: SnapshotMeta = SnapshotMeta { index: 7, term: 2 };

    fn config() -> TransferConfig {
        TransferConfig { chunk_bytes: 4, resend_ticks: 3, give_up_ticks: 10, max_image_bytes: 100 }
    }

    fn chunk_of(image: &[u8], order: SendChunk, term: u64) -> SnapshotChunk {
        order.cut(1, term, image, crc32fast::hash(image))
    }

    #[test]
    fn an_image_travels_in_chunks_and_arrives_whole() {
        let image: Vec<u8> = (0..10).collect();
        let mut sender = SnapshotSender::new(config());
        let mut receiver = SnapshotReceiver::new(100);
        let mut order = sender.start(2, META, 10, "payload");
        let mut chunks = 0;
        loop {
            chunks += 1;
            let outcome = receiver.on_chunk(chunk_of(&image, order, 2), 2);
            if let Some(snapshot) = outcome.complete {
                assert_eq!((snapshot.meta, snapshot.data), (META, image.clone()));
                assert_eq!(sender.on_ack(2, META, 10), AckOutcome::Delivered("payload", 0));
                break;
            }
            match sender.on_ack(2, META, outcome.ack.expect("an ack")) {
                AckOutcome::Send(next) => order = next,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(chunks, 3, "4 + 4 + 2 bytes");
        assert!(sender.is_empty());
    }

    #[test]
    fn a_received_image_is_gathered_in_one_buffer_never_copied() {
        let image: Vec<u8> = (0..10).collect();
        let mut receiver = SnapshotReceiver::new(100);
        let mut buffer = None;
        for offset in [0, 4] {
            let order = SendChunk { to: 2, meta: META, offset, len: 4 };
            receiver.on_chunk(chunk_of(&image, order, 2), 2);
            let incoming = receiver.incoming.as_ref().expect("a transfer under way");
            assert!(incoming.image.capacity() >= 10, "room for the whole image from the first chunk");
            let at = incoming.image.as_ptr();
            assert_eq!(*buffer.get_or_insert(at), at, "the same buffer throughout");
        }
        let last = SendChunk { to: 2, meta: META, offset: 8, len: 4 };
        let whole = receiver.on_chunk(chunk_of(&image, last, 2), 2).complete.expect("whole");
        assert_eq!((whole.data.as_ptr(), whole.data), (buffer.expect("a buffer"), image));
    }

    #[test]
    fn a_lost_chunk_is_resent_and_a_stuck_transfer_abandoned() {
        let mut sender = SnapshotSender::new(config());
        sender.start(2, META, 10, ());
        assert!(sender.tick().is_empty());
        assert!(sender.tick().is_empty());
        let resend = SendChunk { to: 2, meta: META, offset: 0, len: 4 };
        assert_eq!(sender.tick(), vec![TickOrder::Resend(resend)]);
        // Progress resets the give-up clock.
        assert!(matches!(sender.on_ack(2, META, 4), AckOutcome::Send(SendChunk { offset: 4, .. })));
        let orders: Vec<TickOrder> = (0..10).flat_map(|_| sender.tick()).collect();
        assert_eq!(orders.last(), Some(&TickOrder::Abandon(2)));
        assert_eq!(orders.iter().filter(|o| matches!(o, TickOrder::Resend(_))).count(), 3);
        assert!(!sender.is_sending(2, META));
        assert_eq!(sender.on_ack(2, META, 8), AckOutcome::Ignored, "an ack after giving up");
    }

    #[test]
    fn the_receiver_resumes_refuses_and_checks() {
        let image: Vec<u8> = (0..10).collect();
        let first = SendChunk { to: 2, meta: META, offset: 0, len: 4 };
        let second = SendChunk { to: 2, meta: META, offset: 4, len: 4 };
        let mut receiver = SnapshotReceiver::new(100);
        // A transfer joined in the middle is asked for from the start.
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 2), 2).ack, Some(0));
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2).ack, Some(4));
        // A duplicate is answered with where we are, not appended.
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2).ack, Some(4));
        assert_eq!(receiver.held_bytes(), 4);
        // An older leader's chunk and an oversized image are ignored.
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 1), 2), ChunkOutcome::default());
        let mut big = chunk_of(&image, first, 2);
        big.total_bytes = 101;
        assert_eq!(SnapshotReceiver::new(100).on_chunk(big, 2), ChunkOutcome::default());
        // A bad checksum is caught once the image is whole, and asked for again.
        let mut bad = SnapshotReceiver::new(100);
        let mut c = chunk_of(&image, SendChunk { to: 2, meta: META, offset: 0, len: 10 }, 2);
        c.crc32 ^= 1;
        let outcome = bad.on_chunk(c, 2);
        assert!(outcome.corrupt && outcome.complete.is_none());
        assert_eq!(outcome.ack, Some(0));
    }
}
