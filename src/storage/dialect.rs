//! What each command does to the engine: the Redis string and keyspace dialect, decided at apply
//! time from replicated state only (the entry's index and its leader-stamped clock), so every
//! replica answers alike.

use super::engine::{KvEngine, Stored, WriteBatch};
use crate::protocol::command::{
    ColumnFamily, Command, CommandResult, ExpireCondition, ExpireTime, Expiry, SetCondition, SetReply,
};
use crate::protocol::command_table::glob_match;
use crate::protocol::dialect::{format_float, parse_f64_strict, parse_i64_strict};
use crate::protocol::resp::MAX_ARG_BYTES;
use std::collections::BTreeSet;

/// Most bytes of keys and values one RAWSCAN, SCAN or KEYS answers.
pub const MAX_SCAN_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Most keys one KEYS answers; a larger answer is refused (use SCAN), never cut short silently.
pub const MAX_KEYS_REPLY_KEYS: usize = 100_000;
/// Most bytes of values (and keys) one reply may carry: an MGET's values, or a transaction's
/// replies together. Past it the command is refused, alike on every replica for a transaction
/// (a few KB of MULTI naming one 16 MiB key a thousand times, or a thousand KEYS, would
/// otherwise make every replica build a reply of GBs as it applies the entry, at every replay
/// too).
pub const MAX_REPLY_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// Most keys RANDOMKEY examines looking for one that has not expired.
const MAX_RANDOMKEY_PROBES: usize = 1_000;

const DEFAULT: ColumnFamily = ColumnFamily::Default;

/// Redis's error for a non-integer value or argument.
pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

/// One entry being applied: the engine, the entry's index and clock, and the removal mark.
pub(crate) struct Applying<'a> {
    /// The state.
    pub engine: &'a mut KvEngine,
    /// The entry's log index: the version of every key it writes.
    pub index: u64,
    /// The entry's clock (milliseconds): what expiry is judged against.
    pub now_ms: u64,
    /// Index of the last entry that removed a key (WATCH of a missing key compares with it).
    pub last_removal_index: &'a mut u64,
}

/// The live value of `key` in `cf` at `now_ms` (an expired key is absent).
fn live<'e>(engine: &'e KvEngine, cf: ColumnFamily, key: &[u8], now_ms: u64) -> Option<&'e Stored> {
    engine.get_stored(cf, key).filter(|s| s.is_live(now_ms))
}

/// The bytes before the first glob special character: every match starts with them.
fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern.iter().position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')).unwrap_or(pattern.len());
    &pattern[..end]
}

/// GETRANGE's slice of `value`, with Redis's rules for negative and out-of-range offsets.
fn byte_range(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return &[];
    }
    let start = if start < 0 { (len + start).max(0) } else { start };
    let end = if end < 0 { (len + end).max(0) } else { end.min(len - 1) };
    if start > end || start >= len {
        return &[];
    }
    &value[start as usize..=end as usize]
}

/// The pairs a RAWSCAN answers: live keys from `start`, up to `limit`, and no more than
/// [`MAX_SCAN_REPLY_BYTES`] of keys and values (at least one pair), so one reply stays bounded.
fn raw_scan<'e>(
    engine: &'e KvEngine,
    now_ms: u64,
    cf: ColumnFamily,
    start: &[u8],
    limit: u64,
) -> impl Iterator<Item = (&'e [u8], &'e Stored)> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut bytes = 0usize;
    engine.iter_stored(cf, start).filter(move |(_, s)| s.is_live(now_ms)).take(limit).take_while(
        move |(k, s)| {
            let first = bytes == 0;
            bytes += k.len() + s.value().len();
            first || bytes <= MAX_SCAN_REPLY_BYTES
        },
    )
}

/// Answers a read-only command against `engine` at time `now_ms`; a write is refused.
pub(crate) fn read(engine: &KvEngine, now_ms: u64, command: &Command) -> CommandResult {
    match command {
        Command::Get { cf, key } => {
            CommandResult::Value(live(engine, *cf, key, now_ms).map(|s| s.value().to_vec()))
        }
        Command::Exists { keys } | Command::Touch { keys } => CommandResult::Integer(
            keys.iter().filter(|k| live(engine, DEFAULT, k, now_ms).is_some()).count() as i64,
        ),
        Command::Scan { cf, start, limit } => CommandResult::Pairs(
            raw_scan(engine, now_ms, *cf, start, *limit)
                .map(|(k, s)| (k.to_vec(), s.value().to_vec()))
                .collect(),
        ),
        Command::MGet { keys } => {
            // The one read whose values are not bounded by a single value's or a scan's limit:
            // each key is looked up once, the values counted, then copied.
            let values: Vec<Option<&[u8]>> =
                keys.iter().map(|k| live(engine, DEFAULT, k, now_ms).map(Stored::value)).collect();
            let bytes: usize = values.iter().map(|v| v.map_or(0, <[u8]>::len)).sum();
            if bytes > MAX_REPLY_VALUE_BYTES {
                return reply_too_large(bytes);
            }
            CommandResult::Array(
                values.into_iter().map(|v| CommandResult::Value(v.map(<[u8]>::to_vec))).collect(),
            )
        }
        Command::Strlen { key } => {
            CommandResult::Integer(live(engine, DEFAULT, key, now_ms).map_or(0, |s| s.value().len() as i64))
        }
        Command::GetRange { key, start, end } => {
            let value = live(engine, DEFAULT, key, now_ms).map(|s| s.value()).unwrap_or_default();
            CommandResult::Value(Some(byte_range(value, *start, *end).to_vec()))
        }
        Command::Type { key } => CommandResult::Status(
            live(engine, DEFAULT, key, now_ms).map_or("none", |s| s.kind().name()).to_string(),
        ),
        Command::Keys { pattern } => {
            let prefix = literal_prefix(pattern);
            let mut keys = Vec::new();
            let mut bytes = 0usize;
            for (key, stored) in engine.iter_stored(DEFAULT, prefix) {
                if !key.starts_with(prefix) {
                    break;
                }
                if stored.is_live(now_ms) && glob_match(pattern, key) {
                    bytes += key.len();
                    keys.push(CommandResult::Value(Some(key.to_vec())));
                    if keys.len() > MAX_KEYS_REPLY_KEYS || bytes > MAX_SCAN_REPLY_BYTES {
                        return CommandResult::Error(format!(
                            "KEYS would answer more than {MAX_KEYS_REPLY_KEYS} keys or \
                             {MAX_SCAN_REPLY_BYTES} bytes; use SCAN"
                        ));
                    }
                }
            }
            CommandResult::Array(keys)
        }
        Command::ScanKeys { start, pattern, count, kind } => {
            let count = usize::try_from(*count).unwrap_or(usize::MAX).max(1);
            let mut keys = Vec::new();
            let mut bytes = 0usize;
            let mut next = None;
            for (examined, (key, stored)) in engine.iter_stored(DEFAULT, start).enumerate() {
                if examined >= count || bytes > MAX_SCAN_REPLY_BYTES {
                    next = Some(key.to_vec());
                    break;
                }
                let wanted = stored.is_live(now_ms)
                    && pattern.as_ref().is_none_or(|p| glob_match(p, key))
                    && kind.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(stored.kind().name().as_bytes()));
                if wanted {
                    bytes += key.len();
                    keys.push(key.to_vec());
                }
            }
            CommandResult::ScanPage { next, keys }
        }
        Command::DbSize => {
            let expired = engine.expired(now_ms).filter(|(cf, _)| *cf == DEFAULT).count();
            CommandResult::Integer(engine.len_cf(DEFAULT).saturating_sub(expired) as i64)
        }
        Command::RandomKey { from } => {
            let after = engine.iter_stored(DEFAULT, from);
            let before = engine.iter_stored(DEFAULT, b"").take_while(|(k, _)| *k < from.as_slice());
            let found = after.chain(before).take(MAX_RANDOMKEY_PROBES).find(|(_, s)| s.is_live(now_ms));
            CommandResult::Value(found.map(|(k, _)| k.to_vec()))
        }
        Command::Ttl { key, millis, absolute } => {
            let Some(stored) = live(engine, DEFAULT, key, now_ms) else { return CommandResult::Integer(-2) };
            let Some(at) = stored.expire_at_ms() else { return CommandResult::Integer(-1) };
            let ms = if *absolute { at } else { at.saturating_sub(now_ms) };
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            CommandResult::Integer(if *millis { ms } else { ms.saturating_add(500) / 1000 })
        }
        Command::GetVer { key } => match live(engine, DEFAULT, key, now_ms) {
            Some(s) => CommandResult::Array(vec![
                CommandResult::Value(Some(s.value().to_vec())),
                CommandResult::Integer(i64::try_from(s.version()).unwrap_or(i64::MAX)),
            ]),
            None => CommandResult::Value(None),
        },
        _ => CommandResult::Error("a write cannot be served as a read".to_string()),
    }
}

/// [`read`] once `reserve` took the bytes [`read_reply_bytes`] counts; `None` if it refused. A
/// GET, the common read, looks its key up once for both (a value is never past
/// [`MAX_REPLY_VALUE_BYTES`]); a read answering more than that is refused, reserving nothing.
pub(crate) fn read_within(
    engine: &KvEngine,
    now_ms: u64,
    command: &Command,
    reserve: impl FnOnce(usize) -> bool,
) -> Option<(CommandResult, usize)> {
    if let Command::Get { cf, key } = command {
        let value = live(engine, *cf, key, now_ms).map(Stored::value);
        let bytes = value.map_or(0, <[u8]>::len);
        return reserve(bytes).then(|| (CommandResult::Value(value.map(<[u8]>::to_vec)), bytes));
    }
    let bytes = read_reply_bytes(engine, now_ms, command);
    if bytes > MAX_REPLY_VALUE_BYTES {
        return Some((reply_too_large(bytes), 0));
    }
    reserve(bytes).then(|| (read(engine, now_ms, command), bytes))
}

/// Bytes of values [`read`] would copy out for `command`, counted without copying (keys-only
/// replies are bounded by [`MAX_SCAN_REPLY_BYTES`] and not counted).
pub(crate) fn read_reply_bytes(engine: &KvEngine, now_ms: u64, command: &Command) -> usize {
    let len = |cf, key: &[u8]| live(engine, cf, key, now_ms).map_or(0, |s| s.value().len());
    match command {
        Command::Get { cf, key } => len(*cf, key),
        Command::MGet { keys } => keys.iter().map(|k| len(DEFAULT, k)).sum(),
        Command::GetRange { key, start, end } => {
            live(engine, DEFAULT, key, now_ms).map_or(0, |s| byte_range(s.value(), *start, *end).len())
        }
        Command::GetVer { key } => len(DEFAULT, key),
        Command::Scan { cf, start, limit } => {
            raw_scan(engine, now_ms, *cf, start, *limit).map(|(k, s)| k.len() + s.value().len()).sum()
        }
        _ => 0,
    }
}

/// The refusal of a command whose reply would carry `bytes` of values, past [`MAX_REPLY_VALUE_BYTES`].
fn reply_too_large(bytes: usize) -> CommandResult {
    CommandResult::Error(format!(
        "reply too large ({bytes} bytes of values, max {MAX_REPLY_VALUE_BYTES}); ask for fewer keys"
    ))
}

/// Bytes of values `command` would answer with, counted before it runs: a read's, or the old
/// value a write answers with. (Replies of keys, bounded per command, are counted once made.)
fn reply_value_bytes(engine: &KvEngine, now_ms: u64, command: &Command) -> usize {
    let len = |key: &[u8]| live(engine, DEFAULT, key, now_ms).map_or(0, |s| s.value().len());
    match command {
        Command::GetDel { key } | Command::GetEx { key, .. } => len(key),
        Command::Set { key, reply: SetReply::OldValue, .. } => len(key),
        _ => read_reply_bytes(engine, now_ms, command),
    }
}

impl Applying<'_> {
    fn live(&self, key: &[u8]) -> Option<&Stored> {
        live(self.engine, DEFAULT, key, self.now_ms)
    }

    fn put(&mut self, cf: ColumnFamily, key: &[u8], value: impl AsRef<[u8]>, expire_at_ms: Option<u64>) {
        self.engine.put(cf, key, Stored::with_expiry(value, self.index, expire_at_ms));
    }

    /// Removes `keys` of `cf` that are stored (live or expired); answers how many were live.
    fn remove(&mut self, cf: ColumnFamily, keys: &[Vec<u8>]) -> i64 {
        let unique: BTreeSet<&Vec<u8>> = keys.iter().collect();
        let mut batch = WriteBatch::new();
        let mut live_count = 0;
        for key in unique {
            if let Some(stored) = self.engine.get_stored(cf, key) {
                live_count += i64::from(stored.is_live(self.now_ms));
                batch.delete(cf, key.clone());
            }
        }
        if !batch.is_empty() {
            *self.last_removal_index = self.index;
        }
        self.engine.write(batch);
        live_count
    }

    /// The live key's time to live kept by a write that does not change it.
    fn kept_expiry(&self, key: &[u8]) -> Option<u64> {
        self.live(key).and_then(Stored::expire_at_ms)
    }

    /// Applies a state-changing command (a read is answered as a read at the entry's clock).
    pub fn execute(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Put { cf, key, value } => {
                self.put(*cf, key, value, None);
                CommandResult::Ok
            }
            Command::Append { key, value } => {
                let old = self.live(key).map(|s| s.value()).unwrap_or_default();
                if old.len() + value.len() > MAX_ARG_BYTES {
                    // Every replica refuses alike: the check reads only replicated state.
                    return CommandResult::Error(TOO_LONG.into());
                }
                let mut joined = old.to_vec();
                joined.extend_from_slice(value);
                let len = joined.len() as i64;
                let keep = self.kept_expiry(key);
                self.put(DEFAULT, key, joined, keep);
                CommandResult::Integer(len)
            }
            Command::Delete { cf, keys } => CommandResult::Integer(self.remove(*cf, keys)),
            Command::Set { key, value, condition, expiry, reply } => {
                self.set(key, value, *condition, *expiry, *reply)
            }
            Command::GetDel { key } => {
                let old = self.live(key).map(|s| s.value().to_vec());
                // An expired key goes too, as Redis deletes it on access.
                self.remove(DEFAULT, std::slice::from_ref(key));
                CommandResult::Value(old)
            }
            Command::GetEx { key, expiry } => {
                let Some(old) = self.live(key).cloned() else { return CommandResult::Value(None) };
                let expire_at_ms = match expiry {
                    Expiry::Keep => return CommandResult::Value(Some(old.value().to_vec())),
                    // PERSIST of a key without a time to live changes nothing (no new version).
                    Expiry::Clear if old.expire_at_ms().is_none() => {
                        return CommandResult::Value(Some(old.value().to_vec()))
                    }
                    Expiry::Clear => None,
                    Expiry::AfterMs(ms) => Some(self.now_ms.saturating_add(*ms)),
                    Expiry::AtMs(at) => Some(*at),
                };
                if expire_at_ms.is_some_and(|at| at <= self.now_ms) {
                    // A time already reached: the key goes now, as Redis deletes it.
                    self.remove(DEFAULT, std::slice::from_ref(key));
                } else {
                    self.put(DEFAULT, key, old.value(), expire_at_ms);
                }
                CommandResult::Value(Some(old.value().to_vec()))
            }
            Command::MSet { pairs, only_if_none_exist } => {
                if *only_if_none_exist && pairs.iter().any(|(k, _)| self.live(k).is_some()) {
                    return CommandResult::Integer(0);
                }
                let mut batch = WriteBatch::new();
                for (key, value) in pairs {
                    batch.put_stored(DEFAULT, key.clone(), Stored::new(value, self.index));
                }
                self.engine.write(batch);
                if *only_if_none_exist {
                    CommandResult::Integer(1)
                } else {
                    CommandResult::Ok
                }
            }
            Command::SetRange { key, offset, value } => {
                let old = self.live(key).map(|s| s.value()).unwrap_or_default();
                if value.is_empty() {
                    return CommandResult::Integer(old.len() as i64);
                }
                let Some(end) = usize::try_from(*offset).ok().and_then(|o| o.checked_add(value.len())) else {
                    return CommandResult::Error(TOO_LONG.into());
                };
                if end > MAX_ARG_BYTES {
                    return CommandResult::Error(TOO_LONG.into());
                }
                let mut new = old.to_vec();
                if new.len() < end {
                    new.resize(end, 0);
                }
                new[end - value.len()..end].copy_from_slice(value);
                let len = new.len() as i64;
                let keep = self.kept_expiry(key);
                self.put(DEFAULT, key, new, keep);
                CommandResult::Integer(len)
            }
            Command::IncrBy { key, delta } => {
                let old = match self.live(key) {
                    None => 0,
                    Some(s) => match parse_i64_strict(s.value()) {
                        Some(n) => n,
                        None => return CommandResult::Error(NOT_AN_INTEGER.into()),
                    },
                };
                let Some(new) = old.checked_add(*delta) else {
                    return CommandResult::Error("increment or decrement would overflow".into());
                };
                let keep = self.kept_expiry(key);
                self.put(DEFAULT, key, new.to_string().into_bytes(), keep);
                CommandResult::Integer(new)
            }
            Command::IncrByFloat { key, delta } => {
                let old = match self.live(key) {
                    None => 0.0,
                    Some(s) => match parse_f64_strict(s.value()) {
                        Some(f) => f,
                        None => return CommandResult::Error("value is not a valid float".into()),
                    },
                };
                let Some(delta) = parse_f64_strict(delta) else {
                    return CommandResult::Error("value is not a valid float".into());
                };
                let new = old + delta;
                if !new.is_finite() {
                    return CommandResult::Error("increment would produce NaN or Infinity".into());
                }
                let text = format_float(new).into_bytes();
                let keep = self.kept_expiry(key);
                self.put(DEFAULT, key, text.clone(), keep);
                CommandResult::Value(Some(text))
            }
            Command::Rename { from, to, only_if_absent } => {
                let Some(source) = self.live(from).cloned() else {
                    return CommandResult::Error("no such key".into());
                };
                let answer = |done: bool| match (only_if_absent, done) {
                    (false, _) => CommandResult::Ok,
                    (true, done) => CommandResult::Integer(i64::from(done)),
                };
                if *only_if_absent && self.live(to).is_some() {
                    return answer(false);
                }
                if from == to {
                    return answer(!only_if_absent);
                }
                self.remove(DEFAULT, std::slice::from_ref(from));
                self.put(DEFAULT, to, source.value(), source.expire_at_ms());
                answer(true)
            }
            Command::Flush { all } => {
                let families: &[ColumnFamily] = if *all { &ColumnFamily::ALL } else { &[DEFAULT] };
                for cf in families {
                    if self.engine.len_cf(*cf) > 0 {
                        self.engine.clear_cf(*cf);
                        *self.last_removal_index = self.index;
                    }
                }
                CommandResult::Ok
            }
            Command::Expire { key, when, condition } => self.expire(key, *when, *condition),
            Command::Persist { key } => match self.live(key).cloned() {
                Some(stored) if stored.expire_at_ms().is_some() => {
                    self.put(DEFAULT, key, stored.value(), None);
                    CommandResult::Integer(1)
                }
                _ => CommandResult::Integer(0),
            },
            Command::Exec { watched, watch_point, commands } => {
                if watched.iter().any(|key| self.watch_moved(key, *watch_point)) {
                    return CommandResult::NilArray;
                }
                // Each command's values are counted before it runs: one that would take the
                // transaction past the bound is refused and not run (as a runtime error inside
                // EXEC, the others go on). Replies of keys (KEYS, SCAN, RANDOMKEY: each at most
                // MAX_SCAN_REPLY_BYTES) are counted once made; a read's is then dropped for the
                // refusal if it passes the bound.
                let mut bytes = 0usize;
                let mut replies = Vec::with_capacity(commands.len());
                for command in commands {
                    let more = reply_value_bytes(self.engine, self.now_ms, command);
                    if bytes.saturating_add(more) > MAX_REPLY_VALUE_BYTES {
                        replies.push(reply_too_large(bytes.saturating_add(more)));
                        continue;
                    }
                    let reply = self.execute(command);
                    let made = reply.weight(0).max(more);
                    if command.is_read() && bytes.saturating_add(made) > MAX_REPLY_VALUE_BYTES {
                        replies.push(reply_too_large(bytes.saturating_add(made)));
                        continue;
                    }
                    bytes = bytes.saturating_add(made);
                    replies.push(reply);
                }
                CommandResult::Array(replies)
            }
            Command::SetVer { key, version, value } => {
                let current = self.live(key).map(|s| s.version());
                let matches = match current {
                    None => *version == 0,
                    Some(v) => *version != 0 && v == *version,
                };
                if !matches {
                    return CommandResult::Value(None);
                }
                self.put(DEFAULT, key, value.clone(), None);
                CommandResult::Integer(i64::try_from(self.index).unwrap_or(i64::MAX))
            }
            Command::ReclaimExpired { limit } => {
                let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
                let expired: Vec<(ColumnFamily, Vec<u8>)> =
                    self.engine.expired(self.now_ms).take(limit).map(|(cf, k)| (cf, k.to_vec())).collect();
                let mut batch = WriteBatch::new();
                for (cf, key) in &expired {
                    batch.delete(*cf, key.clone());
                }
                if !batch.is_empty() {
                    *self.last_removal_index = self.index;
                }
                self.engine.write(batch);
                CommandResult::Integer(expired.len() as i64)
            }
            read_only => read(self.engine, self.now_ms, read_only),
        }
    }

    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        condition: SetCondition,
        expiry: Expiry,
        reply: SetReply,
    ) -> CommandResult {
        // A plain SET needs nothing of the old value, so it skips looking it up (the write finds
        // the key anyway) and copying it.
        let needs_old = !matches!(condition, SetCondition::Always)
            || matches!(expiry, Expiry::Keep)
            || matches!(reply, SetReply::OldValue);
        let old = if needs_old { self.live(key).cloned() } else { None };
        let allowed = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        if allowed {
            let expire_at_ms = match expiry {
                Expiry::Keep => old.as_ref().and_then(Stored::expire_at_ms),
                Expiry::Clear => None,
                Expiry::AfterMs(ms) => Some(self.now_ms.saturating_add(ms)),
                Expiry::AtMs(at) => Some(at),
            };
            self.put(DEFAULT, key, value, expire_at_ms);
        }
        match (reply, allowed) {
            (SetReply::Status, true) => CommandResult::Ok,
            (SetReply::Status, false) => CommandResult::Value(None),
            (SetReply::Flag, done) => CommandResult::Integer(i64::from(done)),
            (SetReply::OldValue, _) => CommandResult::Value(old.map(|s| s.value().to_vec())),
        }
    }

    fn expire(&mut self, key: &[u8], when: ExpireTime, condition: ExpireCondition) -> CommandResult {
        let Some(stored) = self.live(key).cloned() else { return CommandResult::Integer(0) };
        let now = i64::try_from(self.now_ms).unwrap_or(i64::MAX);
        let at = match when {
            ExpireTime::AfterMs(ms) => now.saturating_add(ms),
            ExpireTime::AtMs(at) => at,
        };
        let current = stored.expire_at_ms().map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        let allowed = match (condition, current) {
            (ExpireCondition::Always, _) => true,
            (ExpireCondition::NoTtl, current) => current.is_none(),
            (ExpireCondition::HasTtl, current) => current.is_some(),
            // No time to live counts as infinite.
            (ExpireCondition::Later, current) => current.is_some_and(|c| at > c),
            (ExpireCondition::Earlier, current) => current.is_none_or(|c| at < c),
            (ExpireCondition::EarlierWithTtl, current) => current.is_some_and(|c| at < c),
        };
        if !allowed {
            return CommandResult::Integer(0);
        }
        if at <= now {
            // Already in the past: the key goes now, as Redis deletes it.
            self.remove(DEFAULT, &[key.to_vec()]);
        } else {
            self.put(DEFAULT, key, stored.value(), Some(at as u64));
        }
        CommandResult::Integer(1)
    }

    /// True if the watched `key` may have been written after `watch_point`: written since, or
    /// gone (expired, or missing when some key was removed since — removals leave no version).
    fn watch_moved(&self, key: &[u8], watch_point: u64) -> bool {
        match self.engine.get_stored(DEFAULT, key) {
            Some(stored) if stored.is_live(self.now_ms) => stored.version() > watch_point,
            Some(_) => true,
            None => *self.last_removal_index > watch_point,
        }
    }
}

/// SETRANGE past the value limit.
const TOO_LONG: &str = "string exceeds maximum allowed size (proto-max-bulk-len)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_offsets_follow_redis() {
        let v = b"This is a string";
        assert_eq!(byte_range(v, 0, 3), b"This");
        assert_eq!(byte_range(v, -3, -1), b"ing");
        assert_eq!(byte_range(v, 0, -1), v);
        assert_eq!(byte_range(v, 10, 100), b"string");
        assert_eq!(byte_range(v, 5, 3), b"");
        assert_eq!(byte_range(v, -1, -5), b"");
        assert_eq!(byte_range(v, 100, 200), b"");
        assert_eq!(byte_range(b"", 0, -1), b"");
        assert_eq!(byte_range(v, -100, 1), b"Th");
    }

    #[test]
    fn literal_prefix_stops_at_the_first_special_byte() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a?c"), b"a");
        assert_eq!(literal_prefix(b"*"), b"");
        assert_eq!(literal_prefix(b"plain"), b"plain");
        assert_eq!(literal_prefix(b"x\\*"), b"x");
    }
}
