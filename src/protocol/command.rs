//! The replicated command: what a log entry carries and what applying it answers.

use serde::{Deserialize, Serialize};
use std::fmt;

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
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// APPEND: append `value` to the value of `key` in the default cf (creating it).
    Append {
        /// Key bytes.
        key: Vec<u8>,
        /// Bytes to append.
        value: Vec<u8>,
    },
    /// DEL / RAWDELETE: delete `keys` from `cf`; answers how many existed.
    Delete {
        /// Column family.
        cf: ColumnFamily,
        /// Keys to delete (duplicates count once per existing key at the time).
        keys: Vec<Vec<u8>>,
    },
    /// GET / RAWGET when a read goes through the log.
    Get {
        /// Column family.
        cf: ColumnFamily,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// EXISTS when a read goes through the log: how many of `keys` exist in the default cf.
    Exists {
        /// Keys to test (repeats count each time, as in Redis).
        keys: Vec<Vec<u8>>,
    },
    /// RAWSCAN when a read goes through the log: up to `limit` pairs with key >= `start`.
    Scan {
        /// Column family.
        cf: ColumnFamily,
        /// First key of the range (inclusive).
        start: Vec<u8>,
        /// Largest number of pairs returned.
        limit: u64,
    },
}

impl Command {
    /// True for commands that change state (the only ones sessions deduplicate).
    pub fn is_write(&self) -> bool {
        matches!(self, Command::Put { .. } | Command::Append { .. } | Command::Delete { .. })
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
    Value(Option<Vec<u8>>),
    /// `:n`.
    Integer(i64),
    /// A flat array k1 v1 k2 v2 ...
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// `-ERR message` (the message does not include the `ERR` code).
    Error(String),
}
