//! Moving a snapshot image from a leader to a follower in chunks, beside Raft.
//!
//! The sender side ([`SnapshotSender`]) keeps one transfer per follower with stop-and-wait flow
//! control: one chunk out, the follower answers with the bytes it holds, the next chunk goes
//! from there (so a lost chunk or a reconnect resumes where the follower is). A chunk without
//! an answer for `resend_ticks` is sent again; a transfer without progress for
//! `give_up_ticks` is abandoned, and Raft asks again later. The receiver side
//! ([`SnapshotReceiver`]) takes the chunks in order, hands their bytes to the caller to keep
//! (the replica writes them to a file as they come), and checks the CRC of the whole image.
//!
//! Both are driven by the caller's ticks, never a clock: the seeded simulation runs them as the
//! replica does. The caller holds the image (the replica its file, the simulation its bytes)
//! and frames the chunk each [`SendChunk`] names.

use std::collections::BTreeMap;

use super::peer_wire::SnapshotChunk;
use super::raft::{NodeId, SnapshotMeta};

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

/// The start of an image: the caller drops whatever it kept of another and makes room for this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageStart {
    /// The leader sending it.
    pub from: NodeId,
    /// Its log position.
    pub meta: SnapshotMeta,
    /// Its length, in bytes.
    pub total_bytes: u64,
}

/// What a chunk means for the receiver, in the order the caller carries it out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// A new image begins with this chunk.
    pub start: Option<ImageStart>,
    /// Bytes that continue the image: kept (written) by the caller before it sends the ack.
    pub append: Vec<u8>,
    /// Tell the sender how many bytes are held now, if anything is to be said.
    pub ack: Option<u64>,
    /// The whole image arrived and its checksum holds: what the caller kept is the image at this
    /// position, to be stepped into Raft as an InstallSnapshot.
    pub complete: Option<SnapshotMeta>,
    /// The whole image arrived but failed its checksum: the caller drops what it kept (it is
    /// asked for again from the start).
    pub corrupt: bool,
}

/// A transfer being received: only where it is and the checksum so far (the bytes themselves
/// are the caller's to keep, a file in the replica).
struct Incoming {
    from: NodeId,
    meta: SnapshotMeta,
    total_bytes: u64,
    crc32: u32,
    received: u64,
    crc: crc32fast::Hasher,
    /// Ticks since its last chunk.
    idle_ticks: u32,
}

/// A follower's side: at most one image being received.
pub struct SnapshotReceiver {
    max_image_bytes: u64,
    /// Ticks without a chunk after which the image under way is dropped.
    drop_after_ticks: u32,
    incoming: Option<Incoming>,
    /// The last image received whole, as (from, meta, total bytes): a chunk of it sent again
    /// (its ack was lost) is answered as complete instead of starting the transfer over.
    completed: Option<(NodeId, SnapshotMeta, u64)>,
    /// Ticks left during which chunks go unanswered (see [`refuse_for`](Self::refuse_for)).
    paused: u32,
}

impl SnapshotReceiver {
    /// Nothing being received; images above the config's `max_image_bytes` are refused, and
    /// one without a chunk for twice its `give_up_ticks` is dropped (its sender gave up on it,
    /// or is gone: a leader that crashed mid-transfer).
    pub fn new(config: TransferConfig) -> SnapshotReceiver {
        SnapshotReceiver {
            max_image_bytes: config.max_image_bytes,
            drop_after_ticks: config.give_up_ticks.saturating_mul(2),
            incoming: None,
            completed: None,
            paused: 0,
        }
    }

    /// Bytes received of the image under way.
    pub fn received_bytes(&self) -> u64 {
        self.incoming.as_ref().map_or(0, |i| i.received)
    }

    /// Forgets the image under way or just completed (the caller could not keep or use it): its
    /// next chunk is answered with 0, so the sender starts again.
    pub fn abandon(&mut self) {
        self.incoming = None;
        self.completed = None;
    }

    /// Forgets the image under way, as [`abandon`](Self::abandon) does, and answers no chunk for
    /// the next `ticks` ticks (the caller had no room for the image: its disk is full). The
    /// sender resends meanwhile and starts over once answered, rather than refilling the disk as
    /// fast as it can send.
    pub fn refuse_for(&mut self, ticks: u32) {
        self.abandon();
        self.paused = ticks;
    }

    /// One tick of the caller's clock; true if it dropped the image under way (no chunk came
    /// for too long), which the caller drops too.
    pub fn tick(&mut self) -> bool {
        self.paused = self.paused.saturating_sub(1);
        let Some(incoming) = self.incoming.as_mut() else { return false };
        incoming.idle_ticks += 1;
        if incoming.idle_ticks < self.drop_after_ticks {
            return false;
        }
        self.incoming = None;
        true
    }

    /// Takes one chunk; `current_term` is this node's term (older leaders are ignored).
    pub fn on_chunk(&mut self, chunk: SnapshotChunk, current_term: u64) -> ChunkOutcome {
        if self.paused > 0 || chunk.term < current_term || chunk.total_bytes > self.max_image_bytes {
            return ChunkOutcome::default();
        }
        let mut outcome = ChunkOutcome::default();
        let fresh = self.incoming.as_ref().is_none_or(|i| i.meta != chunk.meta || i.from != chunk.from);
        if fresh {
            if chunk.offset != 0 {
                if self.completed == Some((chunk.from, chunk.meta, chunk.total_bytes)) {
                    return ChunkOutcome { ack: Some(chunk.total_bytes), ..ChunkOutcome::default() };
                }
                // A transfer we hold nothing of: ask for it from the start.
                return ChunkOutcome { ack: Some(0), ..ChunkOutcome::default() };
            }
            let start = ImageStart { from: chunk.from, meta: chunk.meta, total_bytes: chunk.total_bytes };
            outcome.start = Some(start);
            self.incoming = Some(Incoming {
                from: chunk.from,
                meta: chunk.meta,
                total_bytes: chunk.total_bytes,
                crc32: chunk.crc32,
                received: 0,
                crc: crc32fast::Hasher::new(),
                idle_ticks: 0,
            });
        }
        let Some(incoming) = self.incoming.as_mut() else { return ChunkOutcome::default() };
        incoming.idle_ticks = 0;
        // Only the chunk that continues the image counts; anything else is answered with where we are.
        if chunk.offset == incoming.received
            && incoming.received + chunk.data.len() as u64 <= incoming.total_bytes
        {
            incoming.crc.update(&chunk.data);
            incoming.received += chunk.data.len() as u64;
            outcome.append = chunk.data;
        }
        let received = incoming.received;
        outcome.ack = Some(received);
        if received < incoming.total_bytes {
            return outcome;
        }
        let Some(incoming) = self.incoming.take() else { return ChunkOutcome::default() };
        if incoming.crc.finalize() != incoming.crc32 {
            return ChunkOutcome { ack: Some(0), corrupt: true, ..ChunkOutcome::default() };
        }
        self.completed = Some((incoming.from, incoming.meta, incoming.total_bytes));
        ChunkOutcome { complete: Some(incoming.meta), ..outcome }
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

    /// The chunk the sender sends next after follower 2 acknowledged `received` bytes of META.
    fn next_chunk<T: std::fmt::Debug>(sender: &mut SnapshotSender<T>, received: u64) -> SendChunk {
        match sender.on_ack(2, META, received) {
            AckOutcome::Send(next) => next,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// What a caller keeps of an image (the replica's file): restarted, appended to, dropped.
    #[derive(Default)]
    struct Kept(Vec<u8>);

    impl Kept {
        fn take(&mut self, outcome: &ChunkOutcome) {
            if outcome.start.is_some() || outcome.corrupt {
                self.0.clear();
            }
            self.0.extend_from_slice(&outcome.append);
        }
    }

    #[test]
    fn an_image_travels_in_chunks_and_arrives_whole() {
        let image: Vec<u8> = (0..10).collect();
        let mut sender = SnapshotSender::new(config());
        let mut receiver = SnapshotReceiver::new(config());
        let mut kept = Kept::default();
        let mut order = sender.start(2, META, 10, "payload");
        let mut chunks = 0;
        loop {
            chunks += 1;
            let outcome = receiver.on_chunk(chunk_of(&image, order, 2), 2);
            kept.take(&outcome);
            if let Some(meta) = outcome.complete {
                assert_eq!((meta, &kept.0), (META, &image));
                assert_eq!(
                    sender.on_ack(2, META, outcome.ack.expect("an ack")),
                    AckOutcome::Delivered("payload", 0)
                );
                break;
            }
            order = next_chunk(&mut sender, outcome.ack.expect("an ack"));
        }
        assert_eq!(chunks, 3, "4 + 4 + 2 bytes");
        assert!(sender.is_empty());
        assert_eq!(receiver.received_bytes(), 0, "nothing under way once complete");
        // The last chunk again (its ack lost) is answered as complete, not started over; a
        // transfer of it from the start is a new receipt.
        let last = SendChunk { to: 2, meta: META, offset: 8, len: 4 };
        assert_eq!(
            receiver.on_chunk(chunk_of(&image, last, 2), 2),
            ChunkOutcome { ack: Some(10), ..ChunkOutcome::default() }
        );
        let first = SendChunk { to: 2, meta: META, offset: 0, len: 4 };
        assert!(receiver.on_chunk(chunk_of(&image, first, 2), 2).start.is_some());
        receiver.abandon();
        assert_eq!(receiver.on_chunk(chunk_of(&image, last, 2), 2).ack, Some(0), "forgotten");
    }

    #[test]
    fn a_chunk_is_handed_to_the_caller_as_it_came_and_only_once() {
        let image: Vec<u8> = (0..10).collect();
        let mut receiver = SnapshotReceiver::new(config());
        let first = chunk_of(&image, SendChunk { to: 2, meta: META, offset: 0, len: 4 }, 2);
        let duplicate = first.clone();
        let at = first.data.as_ptr();
        let outcome = receiver.on_chunk(first, 2);
        assert_eq!(outcome.start, Some(ImageStart { from: 1, meta: META, total_bytes: 10 }));
        assert_eq!((outcome.append.as_ptr(), outcome.append.as_slice()), (at, &image[..4]), "not copied");
        // A duplicate is acknowledged but neither restarts the image nor is kept twice.
        let again = receiver.on_chunk(duplicate, 2);
        assert_eq!((again.start, again.append.len(), again.ack), (None, 0, Some(4)));
        // A caller that could not keep the bytes gives up: the sender is told to start over.
        receiver.abandon();
        let next = chunk_of(&image, SendChunk { to: 2, meta: META, offset: 4, len: 4 }, 2);
        assert_eq!(receiver.on_chunk(next, 2), ChunkOutcome { ack: Some(0), ..ChunkOutcome::default() });
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
    fn a_receiver_without_room_answers_nothing_for_a_while_then_takes_the_image_from_the_start() {
        let image: Vec<u8> = (0..10).collect();
        let mut sender = SnapshotSender::new(config());
        let mut receiver = SnapshotReceiver::new(config());
        let mut kept = Kept::default();
        let first = sender.start(2, META, 10, ());
        let outcome = receiver.on_chunk(chunk_of(&image, first, 2), 2);
        kept.take(&outcome);
        let second = next_chunk(&mut sender, outcome.ack.expect("an ack"));
        // The caller's disk is full: the image is dropped, and for two ticks nothing is answered,
        // neither the chunk under way nor a fresh start.
        receiver.refuse_for(2);
        assert_eq!(receiver.received_bytes(), 0);
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 2), 2), ChunkOutcome::default());
        receiver.tick();
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2), ChunkOutcome::default());
        // The sender, unanswered, resends; once the pause is over the receiver asks for the start.
        let resent = (0..3).flat_map(|_| sender.tick()).find_map(|o| match o {
            TickOrder::Resend(order) => Some(order),
            TickOrder::Abandon(_) => None,
        });
        assert_eq!(resent, Some(second));
        receiver.tick();
        let outcome = receiver.on_chunk(chunk_of(&image, second, 2), 2);
        assert_eq!(outcome, ChunkOutcome { ack: Some(0), ..ChunkOutcome::default() });
        // From the start again, to the end.
        let mut order = next_chunk(&mut sender, 0);
        loop {
            let outcome = receiver.on_chunk(chunk_of(&image, order, 2), 2);
            kept.take(&outcome);
            if outcome.complete.is_some() {
                break;
            }
            order = next_chunk(&mut sender, outcome.ack.expect("an ack"));
        }
        assert_eq!(kept.0, image);
    }

    #[test]
    fn an_image_whose_sender_went_quiet_is_dropped_after_twice_the_senders_give_up() {
        let image: Vec<u8> = (0..10).collect();
        let first = SendChunk { to: 2, meta: META, offset: 0, len: 4 };
        let second = SendChunk { to: 2, meta: META, offset: 4, len: 4 };
        let mut receiver = SnapshotReceiver::new(config());
        assert!(!receiver.tick(), "nothing under way, nothing dropped");
        receiver.on_chunk(chunk_of(&image, first, 2), 2);
        assert!((0..19).all(|_| !receiver.tick()), "kept for 19 quiet ticks");
        // A chunk, even one already held, shows the sender is still there.
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2).ack, Some(4));
        assert!((0..19).all(|_| !receiver.tick()));
        assert!(receiver.tick(), "dropped on the 20th quiet tick");
        assert_eq!(receiver.received_bytes(), 0);
        // The sender, back, is asked for the image from the start.
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 2), 2).ack, Some(0));
    }

    #[test]
    fn the_receiver_resumes_refuses_and_checks() {
        let image: Vec<u8> = (0..10).collect();
        let first = SendChunk { to: 2, meta: META, offset: 0, len: 4 };
        let second = SendChunk { to: 2, meta: META, offset: 4, len: 4 };
        let mut receiver = SnapshotReceiver::new(config());
        // A transfer joined in the middle is asked for from the start.
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 2), 2).ack, Some(0));
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2).ack, Some(4));
        // A duplicate is answered with where we are, not appended.
        assert_eq!(receiver.on_chunk(chunk_of(&image, first, 2), 2).ack, Some(4));
        assert_eq!(receiver.received_bytes(), 4);
        // An older leader's chunk and an oversized image are ignored.
        assert_eq!(receiver.on_chunk(chunk_of(&image, second, 1), 2), ChunkOutcome::default());
        let mut big = chunk_of(&image, first, 2);
        big.total_bytes = 101;
        assert_eq!(SnapshotReceiver::new(config()).on_chunk(big, 2), ChunkOutcome::default());
        // A bad checksum is caught once the image is whole, and asked for again.
        let mut bad = SnapshotReceiver::new(config());
        let mut c = chunk_of(&image, SendChunk { to: 2, meta: META, offset: 0, len: 10 }, 2);
        c.crc32 ^= 1;
        let outcome = bad.on_chunk(c, 2);
        assert!(outcome.corrupt && outcome.complete.is_none());
        assert_eq!(outcome.ack, Some(0));
        assert_eq!(bad.received_bytes(), 0, "started again");
        // A newer image replaces the one under way.
        let mut newer = chunk_of(&image, first, 3);
        newer.meta = SnapshotMeta { index: 9, term: 3 };
        let outcome = receiver.on_chunk(newer, 3);
        assert_eq!(outcome.start.map(|s| s.meta), Some(SnapshotMeta { index: 9, term: 3 }));
        assert_eq!((outcome.append.len(), outcome.ack), (4, Some(4)));
    }
}
