//! Exactly-once client sessions: the remembered replies of each client's recent writes.

use crate::protocol::command::{CommandResult, SessionTag};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Replies remembered per client: the window of its highest applied seqs, in seqs.
pub const MAX_REPLIES_PER_SESSION: usize = 32;

/// Default bound on the number of client sessions remembered at once.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// Bound on the bytes of replies remembered over every session (as [`remembered_bytes`] counts
/// them): a reply may carry up to 64 MiB of values from a few KB of request (a transaction
/// reading large values), so a count of sessions alone would not bound the table's memory.
pub const MAX_SESSION_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// Bytes of replies past which, when the table is over [`MAX_SESSION_REPLY_BYTES`], a session
/// gives up its own oldest replies before any session is evicted: one client whose replies are
/// large would otherwise have every other client's session evicted in turn (and a retry of an
/// evicted client's write applies again).
pub const MAX_SESSION_SHARE_BYTES: usize = MAX_SESSION_REPLY_BYTES / 8;

/// Bytes a remembered reply is counted for: its values and texts, and 32 per part.
pub fn remembered_bytes(reply: &CommandResult) -> usize {
    reply.weight(32)
}

/// What a session knows about a (client, seq) before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Never applied (as far as anyone can tell): apply it and [`record`](SessionTable::record) the reply.
    Fresh,
    /// Already applied: answer with this reply and do not apply again.
    Duplicate(CommandResult),
    /// At or below the session's floor: it may have been applied, its reply is forgotten.
    TooOld,
}

/// One client's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// Replies by seq: at most `MAX_REPLIES_PER_SESSION`, every seq above `floor`.
    replies: BTreeMap<u64, CommandResult>,
    /// The highest seq ever dropped from `replies`; `None` until one is. Never decreases.
    floor: Option<u64>,
    /// Log index of the last write this session applied; unique among sessions.
    last_index: u64,
    /// [`remembered_bytes`] of `replies`, summed; not in images (counted again when a table is
    /// rebuilt from one).
    #[serde(skip)]
    bytes: usize,
}

/// The exactly-once table: per client id, the replies of its recent writes.
///
/// Every replica feeds it the same applied entries, so every replica holds the same table and
/// evicts the same sessions. Per client, the replies of the [`MAX_REPLIES_PER_SESSION`] highest
/// applied seqs are remembered (for a client counting up, its most recent ones); the highest seq
/// dropped from that window is the session's floor, and a seq at or below it is refused as too
/// old, never applied twice. Out-of-order seqs above the floor are applied once each. When more
/// than `max_sessions` clients are known, or the replies remembered pass
/// [`MAX_SESSION_REPLY_BYTES`], the session whose last write was applied longest ago (lowest log
/// index) is evicted; an evicted client is then treated as new, so a retry of one of its old
/// writes would apply again. Past the byte bound, though, the sessions holding more than
/// [`MAX_SESSION_SHARE_BYTES`] first give up their own lowest seqs (raising their floors; lowest
/// client id first), and the session just written, should it hold more than the bound alone,
/// down to its highest. Durability: none by itself; it travels in the state machine's snapshot and is
/// rebuilt by replaying the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable {
    /// Upper bound on `sessions.len()`, at least 1.
    max_sessions: usize,
    /// Sessions by client id.
    sessions: BTreeMap<u64, Session>,
    /// Client id by `last_index`: exactly one entry per session, for eviction in index order.
    by_index: BTreeMap<u64, u64>,
    /// [`remembered_bytes`] summed over every reply of every session.
    reply_bytes: usize,
    /// The sessions holding more than [`MAX_SESSION_SHARE_BYTES`] of replies.
    heavy: BTreeSet<u64>,
}

impl SessionTable {
    /// An empty table holding at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        assert!(max_sessions >= 1, "max_sessions must be at least 1");
        SessionTable {
            max_sessions,
            sessions: BTreeMap::new(),
            by_index: BTreeMap::new(),
            reply_bytes: 0,
            heavy: BTreeSet::new(),
        }
    }

    /// What the table knows about `tag`.
    pub fn check(&self, tag: SessionTag) -> SessionCheck {
        let Some(session) = self.sessions.get(&tag.client_id) else {
            return SessionCheck::Fresh;
        };
        if let Some(reply) = session.replies.get(&tag.seq) {
            return SessionCheck::Duplicate(reply.clone());
        }
        match session.floor {
            Some(floor) if tag.seq <= floor => SessionCheck::TooOld,
            _ => SessionCheck::Fresh,
        }
    }

    /// Remembers `reply` for `tag`, applied at log `index` (higher than any index recorded before).
    pub fn record(&mut self, tag: SessionTag, index: u64, reply: CommandResult) {
        assert_eq!(self.check(tag), SessionCheck::Fresh, "only a fresh seq is applied and recorded");
        if !self.sessions.contains_key(&tag.client_id) && self.sessions.len() >= self.max_sessions {
            // Lowest last index first: decided by applied entries only, so the same on every replica.
            self.evict_oldest();
        }
        let session = self.sessions.entry(tag.client_id).or_insert_with(|| Session {
            replies: BTreeMap::new(),
            floor: None,
            last_index: 0,
            bytes: 0,
        });
        assert!(
            index > session.last_index,
            "session indexes only grow: {index} after {}",
            session.last_index
        );
        self.by_index.remove(&session.last_index);
        let clash = self.by_index.insert(index, tag.client_id);
        assert!(clash.is_none(), "two sessions applied at index {index}");
        session.last_index = index;
        let added = remembered_bytes(&reply);
        self.reply_bytes += added;
        session.bytes += added;
        session.replies.insert(tag.seq, reply);
        let full = session.replies.len() > MAX_REPLIES_PER_SESSION;
        self.weigh(tag.client_id);
        if full {
            self.drop_oldest(tag.client_id);
        }
        while self.reply_bytes > MAX_SESSION_REPLY_BYTES {
            let trimmable = |client: &u64| self.sessions.get(client).is_some_and(|s| s.replies.len() > 1);
            if let Some(heavy) = self.heavy.iter().copied().find(trimmable) {
                // A session over its share gives up its lowest seqs (its floor rises) before any
                // session is evicted.
                self.drop_oldest(heavy);
            } else if self.by_index.first_key_value().is_some_and(|(_, &client)| client != tag.client_id) {
                self.evict_oldest();
            } else if trimmable(&tag.client_id) {
                // Only this session is left: its lowest seqs go, down to one reply (the
                // just-written one, unless it came out of order below others: then it is too old).
                self.drop_oldest(tag.client_id);
            } else {
                break;
            }
        }
        assert!(self.sessions.len() <= self.max_sessions);
        assert_eq!(self.sessions.len(), self.by_index.len());
    }

    /// Evicts the session applied longest ago (lowest last index).
    fn evict_oldest(&mut self) {
        if let Some((_, evicted)) = self.by_index.pop_first() {
            if let Some(session) = self.sessions.remove(&evicted) {
                self.reply_bytes -= session.bytes;
            }
            self.heavy.remove(&evicted);
        }
    }

    /// Drops `client`'s oldest reply (its floor rises), keeping the byte counts.
    fn drop_oldest(&mut self, client: u64) {
        let Some(session) = self.sessions.get_mut(&client) else { return };
        let freed = Self::drop_oldest_reply(session);
        session.bytes -= freed;
        self.reply_bytes -= freed;
        self.weigh(client);
    }

    /// Notes whether `client`'s session holds more than its share.
    fn weigh(&mut self, client: u64) {
        match self.sessions.get(&client) {
            Some(session) if session.bytes > MAX_SESSION_SHARE_BYTES => self.heavy.insert(client),
            _ => self.heavy.remove(&client),
        };
    }

    /// Drops `session`'s oldest reply, raising its floor to that seq; the bytes it was counted for.
    fn drop_oldest_reply(session: &mut Session) -> usize {
        let Some((dropped, reply)) = session.replies.pop_first() else { return 0 };
        assert!(session.floor.is_none_or(|f| dropped > f), "the floor never decreases");
        session.floor = Some(dropped);
        remembered_bytes(&reply)
    }

    /// Bytes of replies remembered, as [`remembered_bytes`] counts them.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// Number of sessions remembered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True if no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The bound on the number of sessions.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Every session, by client id, for the state machine's image.
    pub(crate) fn sessions(&self) -> &BTreeMap<u64, Session> {
        &self.sessions
    }

    /// Rebuilds a table from sessions taken by [`sessions`](Self::sessions); `None` if they break
    /// the table's invariants.
    pub(crate) fn from_sessions(max_sessions: usize, mut sessions: BTreeMap<u64, Session>) -> Option<Self> {
        if max_sessions == 0 || sessions.len() > max_sessions {
            return None;
        }
        let mut by_index = BTreeMap::new();
        let mut reply_bytes = 0usize;
        let mut heavy = BTreeSet::new();
        for (client, session) in &mut sessions {
            session.bytes = session.replies.values().map(remembered_bytes).sum::<usize>();
            reply_bytes += session.bytes;
            if session.bytes > MAX_SESSION_SHARE_BYTES {
                heavy.insert(*client);
            }
            let within_window = session.replies.len() <= MAX_REPLIES_PER_SESSION;
            let above_floor = session.floor.is_none_or(|f| session.replies.keys().all(|&seq| seq > f));
            if !within_window || !above_floor || by_index.insert(session.last_index, *client).is_some() {
                return None;
            }
        }
        // Past the byte bound (an image from a build with a larger one) is kept as it is: the
        // next write evicts down to it.
        Some(SessionTable { max_sessions, sessions, by_index, reply_bytes, heavy })
    }
}
