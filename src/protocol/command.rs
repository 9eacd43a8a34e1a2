//! The replicated command: what a log entry carries and what applying it answers.

use super::codec::{self, CodecError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// First byte of a log entry with a time stamp. No encoded [`Proposal`] starts with it (its first
/// field is a varint, whose first byte is at most 254), so entries written before stamps existed
/// still read.
const STAMPED_ENTRY_TAG: u8 = 0xFF;
/// Largest encoded log entry a client request may make: it must fit one peer frame with room to
/// spare, however the leader batches it.
pub const MAX_ENTRY_BYTES: usize = 32 * 1024 * 1024;
/// The tag and the leader's clock (milliseconds, little-endian) in front of the proposal.
pub const ENTRY_HEADER_BYTES: usize = 9;

/// A column family: one ordered key space of the KV engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ColumnFamily {
    /// The family that GET/SET/APPEND/DEL use.
    Default,
    /// The `write` family of TiKV's RawKV layout.
    Write,
    /// The `lock` family of TiKV's RawKV layout.
    Lock,
}

impl ColumnFamily {
    /// Every column family, in a fixed order.
    pub const ALL: [ColumnFamily; 3] = [ColumnFamily::Default, ColumnFamily::Write, ColumnFamily::Lock];

    /// The family's name as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Default => "default",
            ColumnFamily::Write => "write",
            ColumnFamily::Lock => "lock",
        }
    }

    /// Parses a family name as clients spell it (case-sensitive, like TiKV).
    pub fn from_name(name: &[u8]) -> Option<ColumnFamily> {
        match name {
            b"default" => Some(ColumnFamily::Default),
            b"write" => Some(ColumnFamily::Write),
            b"lock" => Some(ColumnFamily::Lock),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One state-machine operation, as replicated through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// SET / RAWPUT: store `value` under `key` in `cf`.
    Put {
        /// Column family.
        cf: ColumnFamily,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// APPEND: append `value` to the value of `key` in the default cf (creating it).
    Append {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Bytes to append.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// DEL / RAWDELETE: delete `keys` from `cf`; answers how many existed.
    Delete {
        /// Column family.
        cf: ColumnFamily,
        /// Keys to delete (duplicates count once per existing key at the time).
        #[serde(with = "crate::protocol::codec::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    /// GET / RAWGET when a read goes through the log.
    Get {
        /// Column family.
        cf: ColumnFamily,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// EXISTS when a read goes through the log: how many of `keys` exist in the default cf.
    Exists {
        /// Keys to test (repeats count each time, as in Redis).
        #[serde(with = "crate::protocol::codec::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    /// RAWSCAN when a read goes through the log: up to `limit` pairs with key >= `start`.
    Scan {
        /// Column family.
        cf: ColumnFamily,
        /// First key of the range (inclusive).
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        /// Largest number of pairs returned.
        limit: u64,
    },
    /// SET with options (and SETNX, SETEX, PSETEX, GETSET): store `value` under `key`.
    Set {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// NX / XX.
        condition: SetCondition,
        /// What becomes of the key's time to live.
        expiry: Expiry,
        /// The shape of the answer.
        reply: SetReply,
    },
    /// GETDEL: the value, and the key deleted.
    GetDel {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// GETEX: the value, and the time to live changed as `expiry` says.
    GetEx {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// `Keep` when GETEX has no option.
        expiry: Expiry,
    },
    /// MGET: the value of each key, nil for a missing one.
    MGet {
        /// Keys, in reply order.
        #[serde(with = "crate::protocol::codec::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    /// MSET / MSETNX: store every pair; with `only_if_none_exist`, none unless no key exists.
    MSet {
        /// Pairs, applied in order (a repeated key keeps its last value).
        #[serde(with = "crate::protocol::codec::byte_pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        /// MSETNX.
        only_if_none_exist: bool,
    },
    /// STRLEN.
    Strlen {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// GETRANGE key start end (inclusive, negative counts from the end).
    GetRange {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// First offset.
        start: i64,
        /// Last offset.
        end: i64,
    },
    /// SETRANGE key offset value: overwrite from `offset`, zero-padding.
    SetRange {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Where to write.
        offset: u64,
        /// Bytes to write.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// INCR / DECR / INCRBY / DECRBY.
    IncrBy {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Amount added.
        delta: i64,
    },
    /// INCRBYFLOAT; `delta` is the checked decimal text (floats are parsed where they are used).
    IncrByFloat {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Amount added, as the client wrote it.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// TYPE.
    Type {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// RENAME / RENAMENX.
    Rename {
        /// Source key.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// Destination key.
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
        /// RENAMENX: only if `to` does not exist.
        only_if_absent: bool,
    },
    /// KEYS pattern.
    Keys {
        /// Glob pattern.
        #[serde(with = "serde_bytes")]
        pattern: Vec<u8>,
    },
    /// SCAN: one page of keys from `start` on, at most `count` keys examined.
    ScanKeys {
        /// First key of the page (inclusive); empty for the first page.
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        /// MATCH pattern.
        #[serde(with = "serde_bytes")]
        pattern: Option<Vec<u8>>,
        /// COUNT: keys examined.
        count: u64,
        /// TYPE filter.
        #[serde(with = "serde_bytes")]
        kind: Option<Vec<u8>>,
    },
    /// DBSIZE.
    DbSize,
    /// RANDOMKEY: the first live key at or after `from` (wrapping), nil if none.
    RandomKey {
        /// Where to start looking, chosen by the replica serving the read.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
    },
    /// FLUSHDB (the default family) / FLUSHALL (every family).
    Flush {
        /// FLUSHALL.
        all: bool,
    },
    /// TOUCH: how many of `keys` exist.
    Touch {
        /// Keys (repeats count each time).
        #[serde(with = "crate::protocol::codec::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT.
    Expire {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When, relative to the entry's time or absolute.
        when: ExpireTime,
        /// NX / XX / GT / LT.
        condition: ExpireCondition,
    },
    /// TTL / PTTL / EXPIRETIME / PEXPIRETIME.
    Ttl {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Milliseconds (PTTL, PEXPIRETIME) rather than seconds.
        millis: bool,
        /// The absolute time (EXPIRETIME) rather than the time left.
        absolute: bool,
    },
    /// PERSIST.
    Persist {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// EXEC: the queued commands, applied as one step unless a watched key was written.
    Exec {
        /// WATCHed keys.
        #[serde(with = "crate::protocol::codec::byte_lists")]
        watched: Vec<Vec<u8>>,
        /// An applied index of the watching replica at WATCH time: a watched key written after
        /// it aborts the transaction.
        watch_point: u64,
        /// Queued commands, in order.
        commands: Vec<Command>,
    },
    /// GETVER: value and version.
    GetVer {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// SETVER: write only if the key's version is still `version` (0: the key must not exist).
    SetVer {
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Expected version.
        version: u64,
        /// Value bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove up to `limit` keys whose time to live has passed (proposed by the leader).
    ReclaimExpired {
        /// Most keys removed by this entry.
        limit: u64,
    },
    /// `SNAPSHOT BEGIN`: an image of the whole state at a linearizable point, held for download
    /// (served by the applier, never logged).
    SnapshotImage,
}

/// SET's NX / XX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always write.
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// What a write does to the key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// KEEPTTL (and GETEX without options): unchanged.
    Keep,
    /// No time to live (a plain SET; GETEX PERSIST).
    Clear,
    /// EX / PX: this many milliseconds after the entry's time.
    AfterMs(u64),
    /// EXAT / PXAT: at this Unix time in milliseconds.
    AtMs(u64),
}

/// How a SET-family command answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetReply {
    /// `+OK`, or nil when NX/XX kept it from writing (SET, SETEX, PSETEX).
    Status,
    /// `:1` if written, `:0` if not (SETNX).
    Flag,
    /// The old value or nil (SET ... GET, GETSET).
    OldValue,
}

/// When EXPIRE-family commands set the time to live to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireTime {
    /// This many milliseconds after the entry's time (may be negative: expire now).
    AfterMs(i64),
    /// At this Unix time in milliseconds (may be in the past: expire now).
    AtMs(i64),
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCondition {
    /// Always.
    Always,
    /// NX: only if the key has no time to live.
    NoTtl,
    /// XX: only if the key has one.
    HasTtl,
    /// GT: only if the new time is later (no time to live counts as infinite).
    Later,
    /// LT: only if the new time is earlier (no time to live counts as infinite).
    Earlier,
    /// XX LT: only if the key has a time to live and the new one is earlier.
    EarlierWithTtl,
}

impl Command {
    /// True for commands that change state, go through the log, and that sessions deduplicate.
    pub fn is_write(&self) -> bool {
        !self.is_read()
    }

    /// True for commands served as linearizable reads, without a log entry.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Exists { .. }
                | Command::Scan { .. }
                | Command::MGet { .. }
                | Command::Strlen { .. }
                | Command::GetRange { .. }
                | Command::Type { .. }
                | Command::Keys { .. }
                | Command::ScanKeys { .. }
                | Command::DbSize
                | Command::RandomKey { .. }
                | Command::Touch { .. }
                | Command::Ttl { .. }
                | Command::GetVer { .. }
                | Command::SnapshotImage
        )
    }
}

/// A client session tag: `REQ client-id seq` in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionTag {
    /// The client's id, chosen by the client.
    pub client_id: u64,
    /// The client's sequence number for this request; a retry reuses it.
    pub seq: u64,
}

/// What one log entry carries: a command, who sent it, and a tag to recognise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Unique per proposal on the proposing replica, so a waiter can tell its own entry from another.
    pub request_id: u64,
    /// Exactly-once tag, if the client sent `REQ`.
    pub session: Option<SessionTag>,
    /// The operation.
    pub command: Command,
}

/// The answer to applying a command, mapped one-to-one onto RESP replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// `+OK`.
    Ok,
    /// A bulk string, or nil.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// `:n`.
    Integer(i64),
    /// A flat array k1 v1 k2 v2 ...
    Pairs(#[serde(with = "crate::protocol::codec::byte_pairs")] Vec<(Vec<u8>, Vec<u8>)>),
    /// `-ERR message` (the message does not include the `ERR` code).
    Error(String),
    /// `+text` (TYPE's answer).
    Status(String),
    /// An array of answers (MGET, KEYS, EXEC, GETVER).
    Array(Vec<CommandResult>),
    /// `*-1`: an EXEC aborted because a watched key was written.
    NilArray,
    /// One SCAN page: the keys, and the key the next page starts from (none: the scan is done).
    ScanPage {
        /// Where the next page starts.
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
        /// Keys of this page.
        #[serde(with = "crate::protocol::codec::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
}

impl CommandResult {
    /// Bytes of the values, keys and texts in this reply, plus `per_part` for the reply and for
    /// each part of it (an element, a pair, a key): what the reply holds in memory, roughly.
    pub fn weight(&self, per_part: usize) -> usize {
        per_part
            + match self {
                CommandResult::Ok | CommandResult::Integer(_) | CommandResult::NilArray => 0,
                CommandResult::Value(value) => value.as_ref().map_or(0, Vec::len),
                CommandResult::Pairs(pairs) => pairs.iter().map(|(k, v)| per_part + k.len() + v.len()).sum(),
                CommandResult::Error(text) | CommandResult::Status(text) => text.len(),
                CommandResult::Array(items) => items.iter().map(|item| item.weight(per_part)).sum(),
                CommandResult::ScanPage { next, keys } => {
                    next.as_ref().map_or(0, Vec::len) + keys.iter().map(|k| per_part + k.len()).sum::<usize>()
                }
            }
    }
}

/// The bytes of a log entry carrying `proposal`, with room for the leader's clock (0 until stamped).
pub fn encode_entry(proposal: &Proposal) -> Result<Vec<u8>, CodecError> {
    let mut header = [0u8; ENTRY_HEADER_BYTES];
    header[0] = STAMPED_ENTRY_TAG;
    codec::encode_with_prefix(&header, proposal)
}

/// Writes the leader's clock into an entry made by [`encode_entry`]; false if `data` is not one.
pub fn stamp_entry(data: &mut [u8], stamp_ms: u64) -> bool {
    match data.first() {
        Some(&STAMPED_ENTRY_TAG) if data.len() > ENTRY_HEADER_BYTES => {
            data[1..ENTRY_HEADER_BYTES].copy_from_slice(&stamp_ms.to_le_bytes());
            true
        }
        _ => false,
    }
}

/// The leader's clock stamped into an entry made by [`encode_entry`] (none for any other entry,
/// which leaves the replicas' clock as it is).
pub fn entry_stamp(data: &[u8]) -> Option<u64> {
    match data.split_first() {
        Some((&STAMPED_ENTRY_TAG, rest)) if data.len() > ENTRY_HEADER_BYTES => {
            rest.first_chunk::<8>().map(|stamp| u64::from_le_bytes(*stamp))
        }
        _ => None,
    }
}

/// Reads a log entry: the leader's clock (none for an entry from before stamps) and the proposal.
pub fn decode_entry(data: &[u8]) -> Result<(Option<u64>, Proposal), CodecError> {
    match data.split_first() {
        Some((&STAMPED_ENTRY_TAG, rest)) => {
            let (stamp, body) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| CodecError::Decode("entry header truncated".into()))?;
            Ok((Some(u64::from_le_bytes(*stamp)), codec::decode(body)?))
        }
        _ => Ok((None, codec::decode(data)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replys_weight_counts_its_bytes_and_its_parts() {
        let reply = CommandResult::Array(vec![
            CommandResult::Value(Some(vec![0; 10])),
            CommandResult::Value(None),
            CommandResult::Integer(7),
            CommandResult::Error("nope".into()),
            CommandResult::Pairs(vec![(b"k".to_vec(), b"vv".to_vec())]),
            CommandResult::ScanPage { next: Some(b"n".to_vec()), keys: vec![b"ab".to_vec(), b"c".to_vec()] },
        ]);
        assert_eq!(reply.weight(0), 10 + 4 + 3 + 1 + 3, "values, texts and keys");
        // The array, its six elements, one pair and two keys: ten parts.
        assert_eq!(reply.weight(32), 21 + 10 * 32);
    }

    fn proposal(request_id: u64) -> Proposal {
        Proposal {
            request_id,
            session: None,
            command: Command::Put { cf: ColumnFamily::Default, key: b"k".to_vec(), value: b"v".to_vec() },
        }
    }

    #[test]
    fn unstamped_entries_never_start_with_the_stamp_tag() {
        for id in [0, 1, 250, 251, 65_535, 65_536, u32::MAX as u64, u64::MAX] {
            let old = codec::encode(&proposal(id)).expect("encode");
            assert_ne!(old[0], STAMPED_ENTRY_TAG, "request id {id}");
            assert_eq!(decode_entry(&old).expect("old entry"), (None, proposal(id)));
        }
    }

    #[test]
    fn stamped_entries_round_trip() {
        let mut data = encode_entry(&proposal(7)).expect("encode");
        assert_eq!(decode_entry(&data).expect("unstamped"), (Some(0), proposal(7)));
        assert!(stamp_entry(&mut data, 1_700_000_000_123));
        assert_eq!(decode_entry(&data).expect("stamped"), (Some(1_700_000_000_123), proposal(7)));
        assert!(!stamp_entry(&mut [1, 2, 3], 5));
        assert!(decode_entry(&data[..5]).is_err());
    }
}
