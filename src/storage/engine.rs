//! The KV engine: one ordered map per column family, written in batches.

use crate::protocol::command::ColumnFamily;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{btree_map, BTreeMap};
use std::ops::{Bound, Deref};
use std::sync::Arc;

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Store `stored` under `key` in `cf`.
    Put {
        /// Column family.
        cf: ColumnFamily,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value and metadata.
        stored: Stored,
    },
    /// Remove `key` from `cf` (nothing happens if it is absent).
    Delete {
        /// Column family.
        cf: ColumnFamily,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// Changes applied together by [`KvEngine::write`], in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put of a plain value (version 0, no time to live).
    pub fn put(&mut self, cf: ColumnFamily, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.put_stored(cf, key, Stored::new(value, 0))
    }

    /// Adds a put of a value with its metadata.
    pub fn put_stored(&mut self, cf: ColumnFamily, key: Vec<u8>, stored: Stored) -> &mut Self {
        self.ops.push(WriteOp::Put { cf, key, stored });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: ColumnFamily, key: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Delete { cf, key });
        self
    }

    /// Number of changes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The type of a stored value. Only strings exist today; the engine records the type so that
/// hashes, lists and sets can be added without changing what a key is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueKind {
    /// A byte string.
    #[default]
    String,
}

impl ValueKind {
    /// The name TYPE answers.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::String => "string",
        }
    }
}

/// Immutable bytes: up to [`INLINE_BYTES`] held in place, longer ones shared by every copy of
/// the state holding them.
///
/// A write after a snapshot's clone copies the B-tree leaf it lands in; with shared keys and
/// values that copy takes a reference count per pair instead of an allocation and a memcpy of
/// every key and value in the leaf (measured: right after each snapshot, those copies faulted in
/// fresh memory for a second of CPU on each replica). Short ones (most keys, small values) are
/// copied instead (24 bytes, as cheap as a count): no allocation of their own, and a B-tree search
/// compares them inside the node it reads instead of following a pointer per comparison.
/// Compared, hashed and encoded exactly as a byte string.
#[derive(Clone)]
pub struct SharedBytes(Repr);

/// Bytes no longer than this are held inside a [`SharedBytes`] (it is 24 bytes either way).
pub const INLINE_BYTES: usize = 22;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Shared(Arc<[u8]>),
}

impl SharedBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(shared) => shared,
        }
    }
}

impl Default for SharedBytes {
    fn default() -> SharedBytes {
        SharedBytes::from(&[][..])
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedBytes").field(&self.as_slice()).finish()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl PartialOrd for SharedBytes {
    fn partial_cmp(&self, other: &SharedBytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedBytes {
    fn cmp(&self, other: &SharedBytes) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for SharedBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::borrow::Borrow<[u8]> for SharedBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> SharedBytes {
        if bytes.len() <= INLINE_BYTES {
            SharedBytes::from(bytes.as_slice())
        } else {
            SharedBytes(Repr::Shared(bytes.into()))
        }
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> SharedBytes {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_BYTES => {
                let mut inline = [0; INLINE_BYTES];
                inline[..bytes.len()].copy_from_slice(bytes);
                SharedBytes(Repr::Inline { len, bytes: inline })
            }
            _ => SharedBytes(Repr::Shared(bytes.into())),
        }
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedBytes, D::Error> {
        Ok(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec().into())
    }
}

/// What the engine keeps under one key: the value and what the dialect needs to know about it.
///
/// Packed into one shared allocation, `[flags][version][expiry, if any][value]`, because the
/// B-tree holds it inline: a 16-byte handle keeps its leaves small (a snapshot's writes copy
/// every leaf they touch) and the value needs no allocation of its own. Measured at 640,000 keys
/// of 100-byte values: 224 bytes per key with the fields laid out in the node and the value in an
/// `Arc` of its own. Encoded in images exactly as the four fields it holds.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Stored(Arc<[u8]>);

/// The flag bit saying an expiry follows the version.
const HAS_EXPIRY: u8 = 1;
/// Bytes before the expiry: the flags and the version.
const STORED_HEAD: usize = 9;

impl Stored {
    /// A string value written at log index `version`, without a time to live.
    pub fn new(value: impl AsRef<[u8]>, version: u64) -> Stored {
        Stored::with_expiry(value, version, None)
    }

    /// A string value written at log index `version`, gone after `expire_at_ms` if set.
    pub fn with_expiry(value: impl AsRef<[u8]>, version: u64, expire_at_ms: Option<u64>) -> Stored {
        // The kind would take the flag bits above HAS_EXPIRY; String is 0.
        let mut head = [0u8; STORED_HEAD + 8];
        head[1..STORED_HEAD].copy_from_slice(&version.to_le_bytes());
        let head_len = match expire_at_ms {
            Some(at) => {
                head[0] = HAS_EXPIRY;
                head[STORED_HEAD..].copy_from_slice(&at.to_le_bytes());
                STORED_HEAD + 8
            }
            None => STORED_HEAD,
        };
        // One allocation of exactly the packed length, zeroed and then filled by two copies
        // (collecting the chained bytes copied them one at a time: 1.5 % of a leader's CPU).
        let value = value.as_ref();
        let mut packed: Arc<[u8]> = std::iter::repeat_n(0, head_len + value.len()).collect();
        // Just made, so not shared: `get_mut` finds it.
        if let Some(bytes) = Arc::get_mut(&mut packed) {
            bytes[..head_len].copy_from_slice(&head[..head_len]);
            bytes[head_len..].copy_from_slice(value);
        }
        Stored(packed)
    }

    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.0[self.value_start()..]
    }

    /// Its type.
    pub fn kind(&self) -> ValueKind {
        ValueKind::String
    }

    /// Log index of the last write to the key (0 for keys from before versions existed).
    pub fn version(&self) -> u64 {
        u64::from_le_bytes(self.word(1))
    }

    /// Unix time in milliseconds after which the key is gone; none: it does not expire.
    pub fn expire_at_ms(&self) -> Option<u64> {
        (self.0[0] & HAS_EXPIRY != 0).then(|| u64::from_le_bytes(self.word(STORED_HEAD)))
    }

    /// True while the key exists at time `now_ms` (Redis: gone once the clock passes its expiry).
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expire_at_ms().is_none_or(|at| now_ms <= at)
    }

    fn value_start(&self) -> usize {
        if self.0[0] & HAS_EXPIRY != 0 {
            STORED_HEAD + 8
        } else {
            STORED_HEAD
        }
    }

    fn word(&self, at: usize) -> [u8; 8] {
        let mut word = [0; 8];
        word.copy_from_slice(&self.0[at..at + 8]);
        word
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("value", &self.value())
            .field("kind", &self.kind())
            .field("version", &self.version())
            .field("expire_at_ms", &self.expire_at_ms())
            .finish()
    }
}

/// How a [`Stored`] is encoded: its four fields in this order (the layout before it was packed).
#[derive(Serialize)]
struct StoredFields<'a> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    kind: ValueKind,
    version: u64,
    expire_at_ms: Option<u64>,
}

/// [`StoredFields`] decoded.
#[derive(Deserialize)]
struct StoredFieldsOwned {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    #[allow(dead_code)] // Only strings exist; read so the encoding stays the same.
    kind: ValueKind,
    version: u64,
    expire_at_ms: Option<u64>,
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredFields {
            value: self.value(),
            kind: self.kind(),
            version: self.version(),
            expire_at_ms: self.expire_at_ms(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stored, D::Error> {
        let fields = StoredFieldsOwned::deserialize(deserializer)?;
        Ok(Stored::with_expiry(fields.value, fields.version, fields.expire_at_ms))
    }
}

/// One column family's ordered map.
///
/// A persistent B-tree (`imbl::OrdMap`): a clone shares every node with the original and costs
/// O(1), and a write after a clone copies only the nodes on its path. That is what lets a
/// snapshot be taken without stopping the applier: it clones the state, and the snapshotter
/// encodes the clone on its own thread while writes go on (issue 12 measured a 1.58 s stall
/// when the clone copied every pair). Writes during a snapshot are held aside instead of
/// copying nodes ([`KvEngine::copy_for_snapshot`]).
pub(crate) type Family = imbl::OrdMap<SharedBytes, Stored>;

/// Keys with a time to live, by (expiry, family slot, key): the order expired keys are reclaimed in.
type ExpiryIndex = imbl::OrdSet<(u64, u8, Vec<u8>)>;

/// In-memory ordered key-value maps, one per [`ColumnFamily`] (the shape of TiKV's RawKV engine).
///
/// Durability: none by itself; the engine is rebuilt from a snapshot plus the replayed log.
#[derive(Clone, Debug, Default)]
pub struct KvEngine {
    /// Indexed by `cf_slot(cf)`.
    cfs: [Family; 3],
    /// Writes held back from `cfs` while a snapshot's copy shares them (see
    /// [`copy_for_snapshot`](KvEngine::copy_for_snapshot)); none otherwise.
    deferred: Option<Box<Deferred>>,
    /// Every key with an expiry; kept up to date by `write`.
    expiries: ExpiryIndex,
    /// Sum of the expiries in `expiries` (for the average time to live).
    expiry_sum_ms: u128,
    /// Sum of key and value lengths over every family, kept up to date by `write`.
    size_bytes: u64,
    /// XOR of a hash of every (cf, key, value): equal states have equal digests, kept up to date
    /// by `write`, so replicas can be compared cheaply.
    digest: u64,
}

/// Writes made while a snapshot's copy shares the maps, kept aside instead of copying the B-tree
/// leaves they would touch: under random writes every leaf is touched within a second, so a
/// snapshot taking a second or two doubled the tree's memory (+50-70 MB at 720,000 keys).
///
/// Once the copy is gone the changes are moved into the maps a few thousand at a time
/// ([`drain_deferred`](KvEngine::drain_deferred)): all at once held the applier for ~100 ms.
/// A key still aside is never written in the maps meanwhile, so what is aside is always newest.
#[derive(Clone, Debug, Default)]
struct Deferred {
    /// Per family slot: each changed key's value now, or `None` if it was removed.
    changes: [BTreeMap<SharedBytes, Option<Stored>>; 3],
    /// Keys per family slot counting the changes (the maps' own counts do not see them).
    lens: [usize; 3],
    /// The copy is gone: new writes go to the maps (taking their key out of `changes`).
    draining: bool,
}

/// Takes `key`'s held change out of `changes`; returns the key's value now (the change if there
/// was one, else `map`'s) and whether a change was held.
fn take_current(
    changes: &mut BTreeMap<SharedBytes, Option<Stored>>,
    map: &Family,
    key: &[u8],
) -> (Option<Stored>, bool) {
    match changes.remove(key) {
        Some(change) => (change, true),
        None => (map.get(key).cloned(), false),
    }
}

/// Changes held aside at most; past this the rest go into the maps (copying leaves again), so a
/// snapshot that takes very long cannot make the aside grow without bound.
const MAX_DEFERRED_CHANGES: usize = 1 << 18;

impl PartialEq for KvEngine {
    /// Equal content: the same pairs in every family, whether or not writes are held aside.
    fn eq(&self, other: &KvEngine) -> bool {
        self.digest == other.digest
            && self.size_bytes == other.size_bytes
            && self.expiry_sum_ms == other.expiry_sum_ms
            && self.expiries == other.expiries
            && ColumnFamily::ALL.into_iter().all(|cf| {
                self.len_cf(cf) == other.len_cf(cf)
                    && self.iter_shared(cf, &[]).eq(other.iter_shared(cf, &[]))
            })
    }
}

impl Eq for KvEngine {}

/// The digest contribution of one key: a word-at-a-time 64-bit hash of the family, key and
/// stored value with lengths between them (the same on every replica of a build; never
/// persisted). Computed on every write, so cheap: SipHash cost ~1,300 instructions per SET here,
/// and a full [`mix`] per word was 3.5 % of a leader's CPU under pipelined SETs.
fn pair_hash(cf: ColumnFamily, key: &[u8], stored: &Stored) -> u64 {
    let kind = match stored.kind() {
        ValueKind::String => 1,
    };
    let mut h = step(cf_slot(cf) as u64 + 1);
    h = hash_bytes(h, key);
    h = hash_bytes(h, stored.value());
    h = step(h ^ kind);
    h = step(h ^ stored.version());
    mix(h ^ stored.expire_at_ms().map_or(0, |at| at.wrapping_add(1)))
}

/// Folds `bytes`, length first, into `h`.
fn hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    h = step(h ^ bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = step(h ^ u64::from_le_bytes(w));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = step(h ^ u64::from_le_bytes(w));
    }
    h
}

/// One word's step: a multiply by an odd constant and a rotation, each a bijection, so no word
/// can cancel what came before it; [`mix`] at the end spreads every bit over the result.
fn step(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

/// SplitMix64's finalizer: every input bit reaches every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn cf_slot(cf: ColumnFamily) -> usize {
    match cf {
        ColumnFamily::Default => 0,
        ColumnFamily::Write => 1,
        ColumnFamily::Lock => 2,
    }
}

impl KvEngine {
    /// An empty engine.
    pub fn new() -> Self {
        KvEngine::default()
    }

    /// The value of `key` in `cf` (whether or not it has expired).
    pub fn get_cf(&self, cf: ColumnFamily, key: &[u8]) -> Option<&[u8]> {
        self.get_stored(cf, key).map(Stored::value)
    }

    /// The value and metadata of `key` in `cf` (whether or not it has expired).
    pub fn get_stored(&self, cf: ColumnFamily, key: &[u8]) -> Option<&Stored> {
        let slot = cf_slot(cf);
        if let Some(change) = self.deferred.as_ref().and_then(|d| d.changes[slot].get(key)) {
            return change.as_ref();
        }
        self.cfs[slot].get(key)
    }

    /// The pairs of `cf` with key >= `start`, in key order.
    pub fn iter_cf<'a>(
        &'a self,
        cf: ColumnFamily,
        start: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.iter_stored(cf, start).map(|(k, s)| (k, s.value()))
    }

    /// The keys of `cf` >= `start` with values and metadata, in key order.
    pub fn iter_stored<'a>(
        &'a self,
        cf: ColumnFamily,
        start: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a Stored)> {
        self.iter_shared(cf, start).map(|(k, v)| (k.as_slice(), v))
    }

    /// [`iter_stored`](Self::iter_stored) with the keys as held: the maps merged with the
    /// writes held aside, which win over the maps and hide removed keys.
    pub(crate) fn iter_shared<'a>(
        &'a self,
        cf: ColumnFamily,
        start: &[u8],
    ) -> impl Iterator<Item = (&'a SharedBytes, &'a Stored)> {
        let slot = cf_slot(cf);
        let from = (Bound::Included(start), Bound::Unbounded);
        let mut held = self.cfs[slot].range::<_, [u8]>(from).peekable();
        let changes = self.deferred.as_ref().map(|d| d.changes[slot].range::<[u8], _>(from));
        let mut changes = changes.into_iter().flatten().peekable();
        std::iter::from_fn(move || loop {
            let change_first = match (held.peek(), changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((h, _)), Some((c, _))) => match h.as_slice().cmp(c.as_slice()) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => {
                        held.next(); // Superseded by the change.
                        true
                    }
                    std::cmp::Ordering::Greater => true,
                },
            };
            if !change_first {
                return held.next();
            }
            if let Some((key, Some(stored))) = changes.next() {
                return Some((key, stored));
            }
            // A removed key: nothing to yield, look again.
        })
    }

    /// Keys whose expiry is before `now_ms` (a key lives through its expiry's millisecond), earliest first.
    pub fn expired(&self, now_ms: u64) -> impl Iterator<Item = (ColumnFamily, &[u8])> + '_ {
        self.expiries
            .range(..(now_ms, 0, Vec::new()))
            .map(|(_, slot, key)| (ColumnFamily::ALL[usize::from(*slot)], key.as_slice()))
    }

    /// Number of keys with a time to live.
    pub fn expiring_len(&self) -> usize {
        self.expiries.len()
    }

    /// The mean expiry of the keys that have one (milliseconds), if any.
    pub fn mean_expiry_ms(&self) -> Option<u64> {
        let count = self.expiries.len() as u128;
        (count > 0).then(|| (self.expiry_sum_ms / count) as u64)
    }

    /// The earliest expiry of any key.
    pub fn earliest_expiry_ms(&self) -> Option<u64> {
        self.expiries.get_min().map(|(at, _, _)| *at)
    }

    /// Removes every key of `cf` as one step.
    pub fn clear_cf(&mut self, cf: ColumnFamily) {
        let keys: Vec<Vec<u8>> = self.iter_shared(cf, &[]).map(|(k, _)| k.to_vec()).collect();
        let mut batch = WriteBatch::new();
        for key in keys {
            batch.delete(cf, key);
        }
        self.write(batch);
    }

    /// Up to `limit` pairs of `cf` with key >= `start`, in key order.
    pub fn scan_cf(&self, cf: ColumnFamily, start: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter_cf(cf, start).take(limit).map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    /// Stores `stored` under `key` in `cf`: a batch of that one put, without the batch.
    pub fn put(&mut self, cf: ColumnFamily, key: &[u8], stored: Stored) {
        let slot = cf_slot(cf);
        let added = (key.len() + stored.value().len()) as u64;
        let key_len = key.len() as u64;
        self.digest ^= pair_hash(cf, key, &stored);
        let new_expiry = stored.expire_at_ms();
        if let Some(at) = new_expiry {
            if self.expiries.insert((at, slot as u8, key.to_vec())).is_none() {
                self.expiry_sum_ms += u128::from(at);
            }
        }
        if let Some(old) = self.insert_in(slot, key, stored) {
            self.digest ^= pair_hash(cf, key, &old);
            self.size_bytes -= key_len + old.value().len() as u64;
            if let Some(at) = old.expire_at_ms() {
                // Unless the new value expires at the same time (then the entry is its).
                if new_expiry != Some(at) && self.expiries.remove(&(at, slot as u8, key.to_vec())).is_some() {
                    self.expiry_sum_ms -= u128::from(at);
                }
            }
        }
        self.size_bytes += added;
    }

    /// Applies every change of `batch` in order, as one step.
    pub fn write(&mut self, batch: WriteBatch) {
        for op in batch.ops {
            match op {
                WriteOp::Put { cf, key, stored } => self.put(cf, &key, stored),
                WriteOp::Delete { cf, key } => {
                    let slot = cf_slot(cf);
                    if let Some(old) = self.remove_in(slot, &key) {
                        self.digest ^= pair_hash(cf, &key, &old);
                        self.size_bytes -= (key.len() + old.value().len()) as u64;
                        if let Some(at) = old.expire_at_ms() {
                            if self.expiries.remove(&(at, slot as u8, key)).is_some() {
                                self.expiry_sum_ms -= u128::from(at);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bytes of keys and values stored, over every family.
    pub fn approximate_size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of keys in `cf`.
    pub fn len_cf(&self, cf: ColumnFamily) -> usize {
        let slot = cf_slot(cf);
        self.deferred.as_ref().map_or_else(|| self.cfs[slot].len(), |d| d.lens[slot])
    }

    /// Number of keys over every family.
    pub fn len(&self) -> usize {
        ColumnFamily::ALL.into_iter().map(|cf| self.len_cf(cf)).sum()
    }

    /// A copy of the engine for a snapshot to read while this one goes on being written.
    ///
    /// The copy shares every map with this engine at no cost; until
    /// [`release_snapshot_copy`](Self::release_snapshot_copy), writes here are held aside rather
    /// than copying the shared B-tree leaves they touch.
    pub fn copy_for_snapshot(&mut self) -> KvEngine {
        // Writes still aside from an earlier snapshot go into the maps first (in place, once
        // that copy is gone), so the copy and this engine start from the same maps.
        self.apply_deferred();
        let copy = self.clone();
        let lens = [self.cfs[0].len(), self.cfs[1].len(), self.cfs[2].len()];
        self.deferred = Some(Box::new(Deferred { lens, ..Deferred::default() }));
        copy
    }

    /// The snapshot's copy is gone: writes go to the maps again (in place), and
    /// [`drain_deferred`](Self::drain_deferred) moves the ones held aside there.
    pub fn release_snapshot_copy(&mut self) {
        if let Some(deferred) = self.deferred.as_mut() {
            deferred.draining = true;
        }
    }

    /// Moves up to `max` writes held aside into the maps once the copy is released; true when
    /// there is nothing more to move (none left, or a copy holds the maps again).
    pub fn drain_deferred(&mut self, max: usize) -> bool {
        let Some(deferred) = self.deferred.as_mut().filter(|d| d.draining) else { return true };
        let mut moved = 0;
        for (map, changes) in self.cfs.iter_mut().zip(deferred.changes.iter_mut()) {
            while moved < max {
                let Some((key, change)) = changes.pop_first() else { break };
                match change {
                    Some(stored) => map.insert(key, stored),
                    None => map.remove(key.as_slice()),
                };
                moved += 1;
            }
        }
        if deferred.changes.iter().all(|c| c.is_empty()) {
            self.deferred = None;
            return true;
        }
        false
    }

    /// Puts every write held aside into the maps at once, copy or not.
    pub fn apply_deferred(&mut self) {
        self.release_snapshot_copy();
        self.drain_deferred(usize::MAX);
    }

    /// Stores `stored` under `key` in family `slot`, aside if a snapshot shares the maps; returns
    /// the value it replaces.
    fn insert_in(&mut self, slot: usize, key: &[u8], stored: Stored) -> Option<Stored> {
        self.bound_deferred();
        let Some(deferred) = self.deferred.as_mut() else {
            return self.cfs[slot].insert(SharedBytes::from(key), stored);
        };
        let changes = &mut deferred.changes[slot];
        let old = if deferred.draining {
            let (old, _) = take_current(changes, &self.cfs[slot], key);
            self.cfs[slot].insert(SharedBytes::from(key), stored);
            old
        } else {
            // One walk of the side map: this runs for every write of a snapshot's window.
            match changes.entry(SharedBytes::from(key)) {
                btree_map::Entry::Occupied(mut held) => held.insert(Some(stored)),
                btree_map::Entry::Vacant(aside) => {
                    aside.insert(Some(stored));
                    self.cfs[slot].get(key).cloned()
                }
            }
        };
        if old.is_none() {
            deferred.lens[slot] += 1;
        }
        old
    }

    /// Removes `key` from family `slot` (aside if a snapshot shares the maps); returns its value.
    fn remove_in(&mut self, slot: usize, key: &[u8]) -> Option<Stored> {
        self.bound_deferred();
        let Some(deferred) = self.deferred.as_mut() else {
            return self.cfs[slot].remove(key);
        };
        let changes = &mut deferred.changes[slot];
        let (old, was_held) = take_current(changes, &self.cfs[slot], key);
        if deferred.draining {
            self.cfs[slot].remove(key);
        } else if was_held || old.is_some() {
            // Aside, a removal must be recorded whenever the maps may still hold the key: it was
            // there, or an earlier removal of it was held aside.
            changes.insert(SharedBytes::from(key), None);
        }
        if old.is_some() {
            deferred.lens[slot] -= 1;
        }
        old
    }

    /// Stops holding writes aside once [`MAX_DEFERRED_CHANGES`] are.
    fn bound_deferred(&mut self) {
        if self
            .deferred
            .as_ref()
            .is_some_and(|d| d.changes.iter().map(|c| c.len()).sum::<usize>() >= MAX_DEFERRED_CHANGES)
        {
            self.apply_deferred();
        }
    }

    /// True if no family holds a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds an engine from maps read back from an image.
    pub(crate) fn from_families(cfs: [Family; 3]) -> Self {
        let mut engine = KvEngine {
            cfs,
            deferred: None,
            expiries: ExpiryIndex::new(),
            expiry_sum_ms: 0,
            size_bytes: 0,
            digest: 0,
        };
        engine.size_bytes = engine.recount_size_bytes();
        for (slot, (cf, map)) in ColumnFamily::ALL.into_iter().zip(engine.cfs.iter()).enumerate() {
            for (k, v) in map {
                engine.digest ^= pair_hash(cf, k, v);
                if let Some(at) = v.expire_at_ms() {
                    engine.expiries.insert((at, slot as u8, k.to_vec()));
                    engine.expiry_sum_ms += u128::from(at);
                }
            }
        }
        engine
    }

    /// A digest of the whole content: equal engines have equal digests.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn recount_size_bytes(&self) -> u64 {
        self.cfs.iter().flat_map(|m| m.iter()).map(|(k, v)| (k.len() + v.value().len()) as u64).sum()
    }
}
