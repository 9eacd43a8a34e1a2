//! The WAL's record frame: `[len u32 LE][crc32 u32 LE of kind+payload][kind u8][payload]`.
//!
//! `len` counts the payload bytes only (not the kind byte). This file knows the frame and the rule
//! that tells a torn tail from corruption; it knows nothing about segments or Raft.

/// Bytes before the payload: length, checksum and kind.
pub const HEADER_BYTES: usize = 9;

/// Largest payload a record may carry, in bytes (the codec's own decode limit).
pub const MAX_PAYLOAD_BYTES: usize = crate::protocol::codec::MAX_DECODE_BYTES;

/// What a record's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An encoded `HardState`.
    HardState = 1,
    /// An encoded `Entry`.
    Entry = 2,
    /// An encoded `SnapshotMeta`: the log is compacted up to that index.
    SnapshotMarker = 3,
    /// An encoded `SnapshotMeta`: the log is compacted up to that index and every entry after it
    /// is discarded (a snapshot that the log disagrees with, Raft §7).
    LogCleared = 4,
    /// An encoded entry whose data is a membership change.
    ConfEntry = 5,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::HardState),
            2 => Some(RecordKind::Entry),
            3 => Some(RecordKind::SnapshotMarker),
            4 => Some(RecordKind::LogCleared),
            5 => Some(RecordKind::ConfEntry),
            _ => None,
        }
    }
}

/// Appends one framed record to `out`. The caller checks `payload.len() <= MAX_PAYLOAD_BYTES`.
pub fn frame(out: &mut Vec<u8>, kind: RecordKind, payload: &[u8]) {
    assert!(payload.len() <= MAX_PAYLOAD_BYTES, "payload of {} bytes over the record limit", payload.len());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind as u8]);
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// One record read back from a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Offset of the record's first header byte in the buffer.
    pub offset: usize,
    /// What the payload holds.
    pub kind: RecordKind,
    /// The payload bytes (checksum verified).
    pub payload: &'a [u8],
}

/// Why reading stopped before the end of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// The bytes from `offset` to the end look like an interrupted write; safe to cut off if this is
    /// the end of the log.
    TornTail {
        /// Where the torn record starts.
        offset: usize,
        /// What was found there.
        reason: String,
    },
    /// A record at `offset` is damaged and something that is not a torn write follows it.
    Corrupt {
        /// Where the damaged record starts.
        offset: usize,
        /// What was found there.
        reason: String,
    },
}

/// Checks whether a complete, valid record starts at `offset`; returns its end offset.
fn valid_record_at(buf: &[u8], offset: usize) -> Option<(RecordKind, usize)> {
    let header = buf.get(offset..offset + HEADER_BYTES)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let kind = RecordKind::from_byte(header[8])?;
    if len > MAX_PAYLOAD_BYTES {
        return None;
    }
    let end = offset + HEADER_BYTES + len;
    let payload = buf.get(offset + HEADER_BYTES..end)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[header[8]]);
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((kind, end))
}

/// Reads every record of `buf` in order, stopping at the first damaged one.
///
/// The rule for a record at `offset` that is incomplete (short header, or a length reaching past the
/// end of the buffer) or fails its checksum (or has an unknown kind, or a length over the limit):
///
/// * it is **corruption** if a complete record with a known kind and a matching checksum starts
///   anywhere after `offset` (valid data follows the damage, so it is not the end of a write that
///   was cut short), or if the damaged record's length fits in the buffer and the bytes after it
///   are not all zero (a full-length record with a bad checksum followed by more data);
/// * otherwise it is a **torn tail**: the last write was cut short, possibly leaving zero-filled
///   blocks (a file extended but never written reads back as zeros).
///
/// Zero bytes never form a valid record (kind 0 does not exist), so a zero-filled tail is torn.
pub fn scan(buf: &[u8]) -> (Vec<RawRecord<'_>>, Option<Damage>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        if let Some((kind, end)) = valid_record_at(buf, offset) {
            records.push(RawRecord { offset, kind, payload: &buf[offset + HEADER_BYTES..end] });
            offset = end;
            continue;
        }
        return (records, Some(classify_damage(buf, offset)));
    }
    (records, None)
}

/// Decides whether the damaged record at `offset` is a torn tail or corruption (see [`scan`]).
fn classify_damage(buf: &[u8], offset: usize) -> Damage {
    let rest = &buf[offset..];
    let reason = describe(rest);
    if rest.len() >= HEADER_BYTES {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if let Some(after) = rest.get(HEADER_BYTES.saturating_add(len)..) {
            if !after.is_empty() && after.iter().any(|&b| b != 0) {
                return Damage::Corrupt { offset, reason: format!("{reason}, followed by more data") };
            }
        }
    }
    if let Some(later) = next_valid_record(buf, offset) {
        return Damage::Corrupt {
            offset,
            reason: format!("{reason}, but a valid record follows at offset {later}"),
        };
    }
    Damage::TornTail { offset, reason }
}

/// The unit a disk writes whole or not at all, for telling torn writes apart, in bytes.
pub const SECTOR_BYTES: usize = 512;

/// Whether damage at `offset` can be a write torn inside space reserved ahead of it.
///
/// A log that writes into zeros it reserved earlier can be left, by a crash, with some sectors
/// of its last write on disk and others still zero. So if, between `offset` and the next valid
/// record (or the end), a piece cut at sector boundaries is all zeros and at least a record
/// header long, the damage is taken for such a write (etcd's WAL reads a zero sector inside its
/// last record the same way). So is damage whose bytes are zero from `offset` to the end of its
/// sector, however few: the write began there, and the sector holding its first bytes (the rest
/// of it synced before) never landed. Only the last segment may be read with this rule.
pub fn torn_into_reserved_space(buf: &[u8], offset: usize) -> bool {
    let end = next_valid_record(buf, offset).unwrap_or(buf.len());
    let mut start = offset;
    while start < end {
        let sector_end = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let stop = sector_end.min(end);
        let piece = &buf[start..stop];
        let whole_head = start == offset && stop == sector_end;
        if (piece.len() >= HEADER_BYTES || whole_head) && piece.iter().all(|&b| b == 0) {
            return true;
        }
        start = stop;
    }
    false
}

/// The kinds of the valid records from the first one after damage at `offset` on, in order.
pub fn kinds_after_damage(buf: &[u8], offset: usize) -> Vec<RecordKind> {
    let Some(next) = next_valid_record(buf, offset) else { return Vec::new() };
    scan(&buf[next..]).0.iter().map(|r| r.kind).collect()
}

/// Where the first valid record after damage at `offset` starts, if one does.
fn next_valid_record(buf: &[u8], offset: usize) -> Option<usize> {
    (offset + 1..buf.len()).find(|&at| valid_record_at(buf, at).is_some())
}

/// Says what is wrong with the record at the start of `rest`.
fn describe(rest: &[u8]) -> String {
    if rest.len() < HEADER_BYTES {
        return format!("short record header ({} of {HEADER_BYTES} bytes)", rest.len());
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if rest.iter().all(|&b| b == 0) {
        return format!("{} zero bytes", rest.len());
    }
    if RecordKind::from_byte(rest[8]).is_none() {
        return format!("unknown record kind {}", rest[8]);
    }
    if len > MAX_PAYLOAD_BYTES {
        return format!("record length {len} over the limit of {MAX_PAYLOAD_BYTES}");
    }
    if rest.len() < HEADER_BYTES + len {
        return format!("short record payload ({} of {len} bytes)", rest.len() - HEADER_BYTES);
    }
    "record checksum mismatch".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_records() -> Vec<u8> {
        let mut buf = Vec::new();
        frame(&mut buf, RecordKind::Entry, b"first");
        frame(&mut buf, RecordKind::HardState, b"second record");
        frame(&mut buf, RecordKind::SnapshotMarker, b"3");
        buf
    }

    #[test]
    fn framed_records_read_back() {
        let buf = three_records();
        let (records, damage) = scan(&buf);
        assert_eq!(damage, None);
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload).collect();
        assert_eq!(payloads, vec![&b"first"[..], b"second record", b"3"]);
        assert_eq!(records[1].kind, RecordKind::HardState);
    }

    #[test]
    fn every_truncation_of_the_last_record_is_a_torn_tail() {
        let buf = three_records();
        let last_start = HEADER_BYTES * 2 + 5 + 13;
        for cut in last_start + 1..buf.len() {
            let (records, damage) = scan(&buf[..cut]);
            assert_eq!(records.len(), 2, "cut at {cut}");
            assert!(
                matches!(damage, Some(Damage::TornTail { offset, .. }) if offset == last_start),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut buf = three_records();
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 4096]);
        assert!(matches!(scan(&buf).1, Some(Damage::TornTail { offset, .. }) if offset == end));
        // A record whose payload was never written (zeros) at the end is torn as well.
        let mut partly = three_records();
        let last = partly.len() - 1;
        partly[last] = 0;
        partly.extend_from_slice(&[0u8; 100]);
        assert!(matches!(scan(&partly).1, Some(Damage::TornTail { .. })));
    }

    #[test]
    fn bad_checksum_followed_by_data_is_corruption() {
        let mut buf = three_records();
        buf[HEADER_BYTES + 2] ^= 0x40;
        assert!(matches!(scan(&buf).1, Some(Damage::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn garbage_length_hiding_valid_records_is_corruption() {
        let mut buf = three_records();
        buf[3] = 0x7f; // The first record now claims a payload far past the end.
        assert!(matches!(scan(&buf).1, Some(Damage::Corrupt { offset: 0, .. })));
    }
}
