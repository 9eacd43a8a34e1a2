//! The replicated state machine: applies committed commands to the KV engine, exactly once.

use super::dialect::{self, Applying};
use super::engine::{Family, KvEngine, SharedBytes, Stored};
use super::error::{Result, StorageError};
use super::session::{Session, SessionCheck, SessionTable, DEFAULT_MAX_SESSIONS};
use crate::protocol::codec;
use crate::protocol::command::{ColumnFamily, Command, CommandResult, Proposal};
use crate::protocol::raft::{ConfChange, Membership};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// Version of the image [`StateMachine::snapshot`] writes (2: with the membership; 3: keys with
/// versions and expiries, and the clock).
const IMAGE_FORMAT_VERSION: u32 = 3;
/// The oldest image version [`StateMachine::restore`] reads (1: without a membership).
const OLDEST_IMAGE_FORMAT_VERSION: u32 = 1;
pub use super::dialect::MAX_SCAN_REPLY_BYTES;

/// An image part is closed once it passes this many bytes of keys and values, so no part nears the
/// codec's decode limit (a single key and value are far below it).
const IMAGE_PART_BYTES: usize = 4 * 1024 * 1024;

/// Sessions per image part.
const IMAGE_PART_SESSIONS: usize = 1024;

/// One part of a state-machine image; the image is a sequence of `[len u64 LE][encoded part]`.
#[derive(Serialize, Deserialize)]
enum ImagePart {
    /// Always first.
    Header { format_version: u32, applied_index: u64, max_sessions: u64 },
    /// Second from version 2 on: the membership at the applied index.
    Membership(Membership),
    /// Pairs of one family, in key order, continuing the previous part of that family (before
    /// version 3: keys without versions or expiries).
    Pairs {
        cf: ColumnFamily,
        #[serde(with = "crate::protocol::codec::byte_pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Third from version 3 on: the replicated clock and the last removal.
    Clock { clock_ms: u64, last_removal_index: u64 },
    /// Keys of one family with their metadata, in key order (version 3 on).
    Keys {
        cf: ColumnFamily,
        /// Encoded as `byte_keyed` encodes a `Vec<u8>` key (a byte string): images of any build read alike.
        keys: Vec<(SharedBytes, Stored)>,
    },
    /// Sessions by client id, continuing the previous part.
    Sessions(Vec<(u64, Session)>),
    /// Always last: totals, to catch a truncated image.
    End { pairs: u64, sessions: u64 },
}

/// The state every replica builds by applying the same committed entries in the same order.
///
/// Writes tagged with a session are applied at most once per (client, seq) — see
/// [`SessionTable`] for the window, the too-old rule and eviction; an evicted client is treated as
/// new. Durability: none by itself; what survives a restart is the latest
/// [`snapshot`](Self::snapshot) saved plus the log after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMachine {
    engine: KvEngine,
    sessions: SessionTable,
    /// Index of the last entry applied; strictly increases with every apply.
    applied_index: u64,
    /// The membership at the applied index, from the log's configuration entries.
    membership: Membership,
    /// The replicated clock: the largest leader stamp applied (milliseconds); never decreases.
    clock_ms: u64,
    /// Index of the last entry that removed a key.
    last_removal_index: u64,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine::new(DEFAULT_MAX_SESSIONS)
    }
}

impl StateMachine {
    /// An empty state machine remembering at most `max_sessions` client sessions.
    ///
    /// `max_sessions` decides evictions, so it must be the same on every replica of a cluster.
    pub fn new(max_sessions: usize) -> Self {
        StateMachine {
            engine: KvEngine::new(),
            sessions: SessionTable::new(max_sessions),
            applied_index: 0,
            membership: Membership::default(),
            clock_ms: 0,
            last_removal_index: 0,
        }
    }

    /// Applies the membership change committed at `index`, exactly as the Raft core does (a
    /// change that does not apply is skipped by both alike); answers whether it applied.
    pub fn apply_conf_change(&mut self, index: u64, change: &ConfChange) -> bool {
        self.advance(index);
        match self.membership.apply(change) {
            Ok(next) => {
                self.membership = next;
                true
            }
            Err(_) => false,
        }
    }

    /// Replaces the membership: a state restored from a backup becomes the start of a new cluster.
    pub fn replace_membership(&mut self, membership: Membership) {
        self.membership = membership;
    }

    /// The membership at the applied index (empty if the log recorded none).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The membership recorded in an image of `len` bytes read from `image`, without reading
    /// past the parts before it.
    pub fn image_membership(image: &mut dyn Read, len: u64) -> Result<Membership> {
        let mut parts = Parts::new(image, len);
        match parts.next()? {
            Some(ImagePart::Header { format_version, .. }) if format_version >= 2 => {}
            Some(ImagePart::Header { .. }) => return Ok(Membership::default()),
            _ => return Err(StorageError::BadImage("missing header".into())),
        }
        match parts.next()? {
            Some(ImagePart::Membership(m)) => Ok(m),
            _ => Err(StorageError::BadImage("no membership after the header".into())),
        }
    }

    /// Applies the committed entry at `index` carrying `proposal`, and answers it.
    ///
    /// A write whose session tag was applied before answers the remembered reply without
    /// applying; one too old to be remembered answers an error and is not applied.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> CommandResult {
        self.apply_stamped(index, None, proposal)
    }

    /// [`apply`](Self::apply) for an entry the leader stamped with its clock: the clock moves
    /// forward to the stamp (never back) before the command is decided.
    pub fn apply_stamped(&mut self, index: u64, stamp_ms: Option<u64>, proposal: &Proposal) -> CommandResult {
        self.advance(index);
        if let Some(stamp) = stamp_ms {
            self.clock_ms = self.clock_ms.max(stamp);
        }
        match proposal.session {
            Some(tag) if proposal.command.is_write() => match self.sessions.check(tag) {
                SessionCheck::Duplicate(reply) => reply,
                SessionCheck::TooOld => CommandResult::Error(format!(
                    "request seq {} of client {} is too old: its outcome is no longer remembered",
                    tag.seq, tag.client_id
                )),
                SessionCheck::Fresh => {
                    let reply = self.execute(&proposal.command);
                    self.sessions.record(tag, index, reply.clone());
                    reply
                }
            },
            _ => self.execute(&proposal.command),
        }
    }

    /// Records that the entry at `index` carried no command (a leader's no-op).
    pub fn apply_empty(&mut self, index: u64) {
        self.advance(index);
    }

    /// The replicated clock at the applied index (milliseconds since the Unix epoch).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Index of the last entry applied (0 if none).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Refuses a state decoded from the image of the snapshot at `index` that was taken at another
    /// index (it would skew every later apply): why, for the caller's error.
    pub fn check_taken_at(&self, index: u64) -> std::result::Result<(), String> {
        match self.applied_index {
            at if at == index => Ok(()),
            at => Err(format!("the snapshot at index {index} holds the state at index {at}")),
        }
    }

    /// The KV engine, for reads served without the log.
    pub fn engine(&self) -> &KvEngine {
        &self.engine
    }

    /// A copy for a snapshot to encode while this machine goes on applying: see
    /// [`KvEngine::copy_for_snapshot`]. Call [`release_snapshot_copy`](Self::release_snapshot_copy)
    /// once the copy is dropped.
    pub fn copy_for_snapshot(&mut self) -> StateMachine {
        StateMachine {
            engine: self.engine.copy_for_snapshot(),
            sessions: self.sessions.clone(),
            applied_index: self.applied_index,
            membership: self.membership.clone(),
            clock_ms: self.clock_ms,
            last_removal_index: self.last_removal_index,
        }
    }

    /// The snapshot's copy is gone: see [`KvEngine::release_snapshot_copy`].
    pub fn release_snapshot_copy(&mut self) {
        self.engine.release_snapshot_copy();
    }

    /// Moves up to `max` writes held aside for a snapshot into place; true once none are left.
    pub fn drain_deferred(&mut self, max: usize) -> bool {
        self.engine.drain_deferred(max)
    }

    /// Number of client sessions remembered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "applied index must increase: {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    fn execute(&mut self, command: &Command) -> CommandResult {
        let mut applying = Applying {
            engine: &mut self.engine,
            index: self.applied_index,
            now_ms: self.clock_ms,
            last_removal_index: &mut self.last_removal_index,
        };
        applying.execute(command)
    }

    /// Answers a read-only command from the state as it is now; a write is refused.
    ///
    /// Linearizable when called once the index a ReadIndex round confirmed has been applied.
    pub fn read(&self, command: &Command) -> CommandResult {
        self.read_at(command, 0)
    }

    /// [`read`](Self::read) judged at the read's own time: the later of the clock and `now_ms`
    /// (the leader's clock when it confirmed the read index).
    pub fn read_at(&self, command: &Command, now_ms: u64) -> CommandResult {
        dialect::read(&self.engine, self.clock_ms.max(now_ms), command)
    }

    /// Bytes of values [`read_at`](Self::read_at) would answer `command` with, without copying.
    pub fn read_reply_bytes(&self, command: &Command, now_ms: u64) -> usize {
        dialect::read_reply_bytes(&self.engine, self.clock_ms.max(now_ms), command)
    }

    /// [`read_at`](Self::read_at) with its value bytes counted first: `reserve` is asked for
    /// them before anything is copied, and `None` answers a refusal. Returns the result and the
    /// bytes reserved.
    pub fn read_within(
        &self,
        command: &Command,
        now_ms: u64,
        reserve: impl FnOnce(usize) -> bool,
    ) -> Option<(CommandResult, usize)> {
        dialect::read_within(&self.engine, self.clock_ms.max(now_ms), command, reserve)
    }

    /// Number of keys with a time to live, the earliest expiry and the mean expiry (milliseconds).
    pub fn expiring(&self) -> (usize, Option<u64>, Option<u64>) {
        (self.engine.expiring_len(), self.engine.earliest_expiry_ms(), self.engine.mean_expiry_ms())
    }

    /// An image of the whole state: engine, sessions and applied index.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let mut image = Vec::new();
        self.write_image(&mut |bytes| {
            image.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(image)
    }

    /// The same image as [`snapshot`](Self::snapshot), handed to `out` part by part (each a few
    /// MB at most), so it can go to a file without ever being whole in memory.
    pub fn write_image(&self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let max_sessions = self.sessions.max_sessions() as u64;
        push_part(
            out,
            &ImagePart::Header {
                format_version: IMAGE_FORMAT_VERSION,
                applied_index: self.applied_index,
                max_sessions,
            },
        )?;
        push_part(out, &ImagePart::Membership(self.membership.clone()))?;
        let clock = ImagePart::Clock { clock_ms: self.clock_ms, last_removal_index: self.last_removal_index };
        push_part(out, &clock)?;
        let mut pair_count = 0u64;
        // One buffer for every part, the pairs encoded straight from the maps (no clone of them,
        // no fresh part-sized buffer to fault in).
        let mut part = KeysPartWriter::default();
        for cf in ColumnFamily::ALL {
            part.start(cf)?;
            for (k, v) in self.engine.iter_shared(cf, &[]) {
                part.push(k, v);
                pair_count += 1;
                if part.bytes >= IMAGE_PART_BYTES {
                    part.finish(out)?;
                    part.start(cf)?;
                }
            }
            if part.pairs > 0 {
                part.finish(out)?;
            }
        }
        let sessions: Vec<(u64, Session)> =
            self.sessions.sessions().iter().map(|(c, s)| (*c, s.clone())).collect();
        for chunk in sessions.chunks(IMAGE_PART_SESSIONS) {
            push_part(out, &ImagePart::Sessions(chunk.to_vec()))?;
        }
        push_part(out, &ImagePart::End { pairs: pair_count, sessions: sessions.len() as u64 })
    }

    /// Rebuilds a state machine from an image made by [`snapshot`](Self::snapshot).
    ///
    /// The session bound recorded in the image is kept, so the restored machine answers every
    /// later command exactly as the original would.
    pub fn restore(image: &[u8]) -> Result<StateMachine> {
        let mut rest = image;
        StateMachine::restore_parts(Parts::new(&mut rest, image.len() as u64))
    }

    /// Like [`restore`](Self::restore), the image of `len` bytes read from `image` a part at a
    /// time (a few MB each), so it is never whole in memory beside the state it builds.
    pub fn restore_from(image: &mut dyn Read, len: u64) -> Result<StateMachine> {
        StateMachine::restore_parts(Parts::new(image, len))
    }

    fn restore_parts(mut parts: Parts<'_>) -> Result<StateMachine> {
        let bad = |why: String| StorageError::BadImage(why);
        let Some(ImagePart::Header { format_version, applied_index, max_sessions }) = parts.next()? else {
            return Err(bad("missing header".into()));
        };
        if !(OLDEST_IMAGE_FORMAT_VERSION..=IMAGE_FORMAT_VERSION).contains(&format_version) {
            return Err(bad(format!("format version {format_version}, expected {IMAGE_FORMAT_VERSION}")));
        }
        let membership = if format_version >= 2 {
            match parts.next()? {
                Some(ImagePart::Membership(m)) => m,
                _ => return Err(bad("no membership after the header".into())),
            }
        } else {
            Membership::default()
        };
        let (clock_ms, last_removal_index) = if format_version >= 3 {
            match parts.next()? {
                Some(ImagePart::Clock { clock_ms, last_removal_index }) => (clock_ms, last_removal_index),
                _ => return Err(bad("no clock after the membership".into())),
            }
        } else {
            (0, 0)
        };
        let mut cfs: [Family; 3] = Default::default();
        let mut sessions = BTreeMap::new();
        let mut pair_count = 0u64;
        loop {
            match parts.next()? {
                Some(ImagePart::Pairs { cf, pairs }) if format_version < 3 => {
                    let slot = ColumnFamily::ALL.iter().position(|c| *c == cf).unwrap_or(0);
                    for (k, v) in pairs {
                        if cfs[slot].insert(k.into(), Stored::new(v, 0)).is_some() {
                            return Err(bad(format!("duplicate key in family {cf}")));
                        }
                        pair_count += 1;
                    }
                }
                Some(ImagePart::Keys { cf, keys }) if format_version >= 3 => {
                    let slot = ColumnFamily::ALL.iter().position(|c| *c == cf).unwrap_or(0);
                    for (k, v) in keys {
                        if cfs[slot].insert(k, v).is_some() {
                            return Err(bad(format!("duplicate key in family {cf}")));
                        }
                        pair_count += 1;
                    }
                }
                Some(ImagePart::Pairs { .. } | ImagePart::Keys { .. }) => {
                    return Err(bad(format!("a key part of the wrong kind for format {format_version}")))
                }
                Some(ImagePart::Clock { .. }) => return Err(bad("second clock".into())),
                Some(ImagePart::Sessions(chunk)) => {
                    for (client, session) in chunk {
                        if sessions.insert(client, session).is_some() {
                            return Err(bad(format!("duplicate session {client}")));
                        }
                    }
                }
                Some(ImagePart::End { pairs, sessions: session_total }) => {
                    if pairs != pair_count || session_total != sessions.len() as u64 {
                        return Err(bad("totals do not match the parts".into()));
                    }
                    if parts.left() > 0 {
                        return Err(bad(format!("{} bytes after the end", parts.left())));
                    }
                    break;
                }
                Some(ImagePart::Header { .. }) => return Err(bad("second header".into())),
                Some(ImagePart::Membership(_)) => return Err(bad("second membership".into())),
                None => return Err(bad("truncated: no end part".into())),
            }
        }
        let max_sessions = usize::try_from(max_sessions).map_err(|_| bad("max_sessions too large".into()))?;
        let sessions = SessionTable::from_sessions(max_sessions, sessions)
            .ok_or_else(|| bad("session table breaks its invariants".into()))?;
        Ok(StateMachine {
            engine: KvEngine::from_families(cfs),
            sessions,
            applied_index,
            membership,
            clock_ms,
            last_removal_index,
        })
    }
}

fn push_part(out: &mut dyn FnMut(&[u8]) -> Result<()>, part: &ImagePart) -> Result<()> {
    let bytes = codec::encode(part)?;
    out(&(bytes.len() as u64).to_le_bytes())?;
    out(&bytes)
}

/// Encodes an [`ImagePart::Keys`] pair by pair, to exactly the bytes the codec gives the part
/// whole (see the tests), framed as [`push_part`] frames a part.
///
/// Written by hand because encoding an image is the snapshotter's work at every snapshot, and
/// through serde it was most of it.
#[derive(Default)]
struct KeysPartWriter {
    /// The part's frame and its start: the length to come, the variant and the family.
    head: Vec<u8>,
    /// The pairs encoded so far.
    body: Vec<u8>,
    pairs: u64,
    /// Key and value bytes so far (what closes a part).
    bytes: usize,
}

impl KeysPartWriter {
    /// Begins an empty part of family `cf`.
    fn start(&mut self, cf: ColumnFamily) -> Result<()> {
        // The codec's own bytes for the part with no keys end in the list's length, 0: the part's
        // start is everything before it.
        self.head.clear();
        self.head.extend_from_slice(&[0; 8]);
        self.head.extend_from_slice(&codec::encode(&ImagePart::Keys { cf, keys: Vec::new() })?);
        self.head.pop();
        self.body.clear();
        self.pairs = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Adds one pair, encoded as `(byte string, Stored)` encodes.
    fn push(&mut self, key: &SharedBytes, stored: &Stored) {
        let out = &mut self.body;
        codec::put_varint(out, key.len() as u64);
        out.extend_from_slice(key.as_slice());
        let value = stored.value();
        codec::put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
        // The kind's variant number; a new kind stops this match compiling until it is added.
        let kind = match stored.kind() {
            super::engine::ValueKind::String => 0,
        };
        codec::put_varint(out, kind);
        codec::put_varint(out, stored.version());
        match stored.expire_at_ms() {
            None => out.push(0),
            Some(at) => {
                out.push(1);
                codec::put_varint(out, at);
            }
        }
        self.pairs += 1;
        self.bytes += key.len() + value.len();
    }

    /// Hands `out` the part's frame.
    fn finish(&mut self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        codec::put_varint(&mut self.head, self.pairs);
        let len = (self.head.len() - 8 + self.body.len()) as u64;
        self.head[..8].copy_from_slice(&len.to_le_bytes());
        out(&self.head)?;
        out(&self.body)
    }
}

/// An image's parts, each framed by its length (see [`push_part`]), read as they are decoded:
/// `left` bytes of the image still unread, `part` the buffer each part is read into (as big as
/// the largest part so far).
struct Parts<'a> {
    reader: &'a mut dyn Read,
    left: u64,
    part: Vec<u8>,
}

impl Parts<'_> {
    fn new(reader: &mut dyn Read, len: u64) -> Parts<'_> {
        Parts { reader, left: len, part: Vec::new() }
    }

    fn next(&mut self) -> Result<Option<ImagePart>> {
        if self.left == 0 {
            return Ok(None);
        }
        let truncated = || StorageError::BadImage("truncated part".into());
        let unreadable = |e: std::io::Error| StorageError::BadImage(format!("unreadable: {e}"));
        let mut len = [0u8; 8];
        if self.left < len.len() as u64 {
            return Err(truncated());
        }
        self.reader.read_exact(&mut len).map_err(unreadable)?;
        self.left -= len.len() as u64;
        // Never more than the image holds: a damaged length cannot ask for more memory.
        let len = u64::from_le_bytes(len);
        if len > self.left {
            return Err(truncated());
        }
        self.part.resize(usize::try_from(len).map_err(|_| truncated())?, 0);
        self.reader.read_exact(&mut self.part).map_err(unreadable)?;
        self.left -= len;
        Ok(Some(codec::decode(&self.part)?))
    }

    /// Bytes of the image after the parts read so far.
    fn left(&self) -> u64 {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Stored` and the image's key parts were before their bytes were shared.
    #[derive(Serialize)]
    struct StoredAsVec {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        kind: crate::storage::ValueKind,
        version: u64,
        expire_at_ms: Option<u64>,
    }

    #[derive(Serialize)]
    enum KeysAsVec {
        _Header,
        _Membership,
        _Pairs,
        _Clock,
        Keys {
            cf: ColumnFamily,
            #[serde(with = "crate::protocol::codec::byte_keyed")]
            keys: Vec<(Vec<u8>, StoredAsVec)>,
        },
    }

    // Logs and images written before keys and values were shared must read back unchanged.
    #[test]
    fn shared_keys_and_values_keep_the_encoding() {
        let value: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let old = |value: &[u8]| StoredAsVec {
            value: value.to_vec(),
            kind: crate::storage::ValueKind::String,
            version: 7,
            expire_at_ms: Some(9),
        };
        let new = Stored::with_expiry(value.clone(), 7, Some(9));
        assert_eq!(codec::encode(&new).expect("encode"), codec::encode(&old(&value)).expect("encode"));
        // Packed without an expiry, the same fields come out (and back).
        let lasting = Stored::new(value.clone(), 7);
        let old_lasting = StoredAsVec { expire_at_ms: None, ..old(&value) };
        let bytes = codec::encode(&old_lasting).expect("encode");
        assert_eq!(codec::encode(&lasting).expect("encode"), bytes);
        assert_eq!(codec::decode::<Stored>(&bytes).expect("decode"), lasting);
        assert_eq!(codec::decode::<Stored>(&codec::encode(&new).expect("encode")).expect("decode"), new);
        let then = KeysAsVec::Keys {
            cf: ColumnFamily::Write,
            keys: vec![(b"k".to_vec(), old(&value)), (vec![], old(b""))],
        };
        let empty = Stored::with_expiry(Vec::new(), 7, Some(9));
        let now = ImagePart::Keys {
            cf: ColumnFamily::Write,
            keys: vec![(b"k".to_vec().into(), new), (Vec::new().into(), empty.clone())],
        };
        let bytes = codec::encode(&then).expect("encode");
        assert_eq!(codec::encode(&now).expect("encode"), bytes);
        let Ok(ImagePart::Keys { keys, .. }) = codec::decode::<ImagePart>(&bytes) else { panic!("decodes") };
        assert_eq!(keys[1], (SharedBytes::from(Vec::new()), empty));
        assert_eq!(keys[0].0.as_slice(), b"k");
    }

    /// Integers either side of each width the codec switches at.
    fn varint_edges() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            0u64..300,
            65_500u64..65_600,
            0xFFFF_FF00u64..0x1_0000_0100,
            (u64::MAX - 300)..=u64::MAX,
            any::<u64>(),
        ]
    }

    #[test]
    fn put_varint_switches_width_where_the_codec_does() {
        for n in [0, 250, 251, 65_535, 65_536, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX] {
            let mut out = Vec::new();
            codec::put_varint(&mut out, n);
            assert_eq!(out, codec::encode(&n).expect("encode"), "{n}");
        }
    }

    proptest::proptest! {
        /// The hand-written varint is the codec's encoding of a u64.
        #[test]
        fn put_varint_writes_what_the_codec_writes(n in varint_edges()) {
            let mut out = Vec::new();
            codec::put_varint(&mut out, n);
            proptest::prop_assert_eq!(out, codec::encode(&n).expect("encode"));
        }

        /// A key part written pair by pair is the codec's encoding of the part, framed, and reads
        /// back as the same pairs.
        #[test]
        fn key_parts_written_by_hand_encode_like_the_codec(
            pairs in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                    varint_edges(),
                    proptest::option::of(varint_edges()),
                ),
                0..40,
            ),
            cf in 0usize..3,
            long_value in proptest::prelude::any::<bool>(),
        ) {
            let cf = ColumnFamily::ALL[cf];
            let mut keys: Vec<(SharedBytes, Stored)> = pairs
                .into_iter()
                .map(|(k, v, version, expiry)| (k.into(), Stored::with_expiry(v, version, expiry)))
                .collect();
            if long_value {
                // A length past the codec's 2-byte width.
                keys.push((b"long".to_vec().into(), Stored::new(vec![7u8; 70_000], 1)));
            }
            let mut writer = KeysPartWriter::default();
            writer.start(cf).expect("start");
            for (k, v) in &keys {
                writer.push(k, v);
            }
            let mut framed = Vec::new();
            writer
                .finish(&mut |bytes| {
                    framed.extend_from_slice(bytes);
                    Ok(())
                })
                .expect("finish");
            let whole = ImagePart::Keys { cf, keys: keys.clone() };
            let mut expected = Vec::new();
            push_part(
                &mut |bytes| {
                    expected.extend_from_slice(bytes);
                    Ok(())
                },
                &whole,
            )
            .expect("push");
            proptest::prop_assert_eq!(&framed, &expected);
            let mut rest = framed.as_slice();
            let mut parts = Parts::new(&mut rest, framed.len() as u64);
            let Some(ImagePart::Keys { cf: read_cf, keys: read }) = parts.next().expect("decode") else {
                panic!("a key part")
            };
            proptest::prop_assert_eq!(read_cf, cf);
            proptest::prop_assert_eq!(read, keys);
        }
    }

    fn put(key: &str, value: &str) -> Proposal {
        Proposal {
            request_id: 0,
            session: None,
            command: Command::Put { cf: ColumnFamily::Default, key: key.into(), value: value.into() },
        }
    }

    fn plain(command: Command) -> Proposal {
        Proposal { request_id: 0, session: None, command }
    }

    #[test]
    fn commands_answer_like_redis() {
        let mut sm = StateMachine::default();
        assert_eq!(sm.apply(1, &put("a", "x")), CommandResult::Ok);
        let append = plain(Command::Append { key: b"a".to_vec(), value: b"yz".to_vec() });
        assert_eq!(sm.apply(2, &append), CommandResult::Integer(3));
        let get = plain(Command::Get { cf: ColumnFamily::Default, key: b"a".to_vec() });
        assert_eq!(sm.apply(3, &get), CommandResult::Value(Some(b"xyz".to_vec())));
        let exists = plain(Command::Exists { keys: vec![b"a".to_vec(), b"a".to_vec(), b"b".to_vec()] });
        assert_eq!(sm.apply(4, &exists), CommandResult::Integer(2));
        sm.apply_empty(5);
        let del = plain(Command::Delete {
            cf: ColumnFamily::Default,
            keys: vec![b"a".to_vec(), b"a".to_vec(), b"b".to_vec()],
        });
        assert_eq!(sm.apply(6, &del), CommandResult::Integer(1));
        assert_eq!(sm.apply(7, &get), CommandResult::Value(None));
        assert_eq!(sm.applied_index(), 7);
    }

    #[test]
    #[should_panic(expected = "applied index must increase")]
    fn applying_an_old_index_is_a_bug() {
        let mut sm = StateMachine::default();
        sm.apply_empty(3);
        sm.apply_empty(3);
    }

    #[test]
    fn truncated_image_is_an_error() {
        let mut sm = StateMachine::default();
        sm.apply(1, &put("k", "v"));
        let image = sm.snapshot().expect("snapshot");
        for cut in 0..image.len() {
            assert!(StateMachine::restore(&image[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(StateMachine::restore(&image).expect("restore"), sm);
    }

    #[test]
    fn an_image_read_part_by_part_restores_the_same_state_and_is_checked_alike() {
        let mut sm = StateMachine::default();
        for i in 0..50_000u32 {
            sm.apply(u64::from(i) + 1, &put(&format!("key{i}"), &"v".repeat(100)));
        }
        let image = sm.snapshot().expect("snapshot");
        assert!(image.len() > IMAGE_PART_BYTES, "more than one key part");
        let restored =
            StateMachine::restore_from(&mut image.as_slice(), image.len() as u64).expect("restore");
        assert_eq!(restored, sm);
        // Cut anywhere (a frame's length or inside a part), told the true length or the cut one.
        for cut in [0, 5, 8, 9, image.len() / 2, image.len() - 1] {
            let short = &image[..cut];
            assert!(StateMachine::restore_from(&mut &short[..], image.len() as u64).is_err(), "cut at {cut}");
            assert!(StateMachine::restore_from(&mut &short[..], cut as u64).is_err(), "cut at {cut}");
        }
        // Bytes after the end part are refused, as they are in memory.
        let mut longer = image.clone();
        longer.extend_from_slice(&[0; 9]);
        assert!(StateMachine::restore_from(&mut longer.as_slice(), longer.len() as u64).is_err());
        assert!(StateMachine::restore(&longer).is_err());
    }
}
