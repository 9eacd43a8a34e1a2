//! The one place that knows the binary encoding (bincode) of wire frames, log entries and records.
//!
//! Everything else calls [`encode`] and [`decode`], so the encoding can be swapped in one file.

use serde::{de::DeserializeOwned, Serialize};

/// Largest encoded value [`decode`] accepts, in bytes: guards against a hostile length prefix.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Encoding failed (a value the format cannot represent).
    #[error("encode: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding, are truncated, or exceed the size limit.
    #[error("decode: {0}")]
    Decode(String),
    /// Bytes were left over after the value.
    #[error("decode: {0} trailing bytes")]
    Trailing(usize),
}

/// Serde adapters for lists of byte strings, so each is encoded as one run of bytes (as
/// `serde_bytes` does for one) rather than element by element: the same bytes on the wire,
/// far fewer calls.
pub mod byte_lists {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Serializes a list of byte strings.
    pub fn serialize<S: Serializer>(list: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(|b| Bytes::new(b)))
    }

    /// Deserializes a list of byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<ByteBuf>::deserialize(deserializer)?.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// Serde adapters for lists of byte-string pairs (see [`byte_lists`]).
pub mod byte_pairs {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Serializes a list of pairs of byte strings.
    pub fn serialize<S: Serializer>(pairs: &[(Vec<u8>, Vec<u8>)], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pairs.iter().map(|(k, v)| (Bytes::new(k), Bytes::new(v))))
    }

    /// Pairs of byte strings, as the fields using this adapter hold them.
    pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// Deserializes a list of pairs of byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        let pairs = Vec::<(ByteBuf, ByteBuf)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())).collect())
    }
}

/// Serde adapters for lists of (byte string, value) pairs (see [`byte_lists`]).
pub mod byte_keyed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Serializes a list of pairs keyed by byte strings.
    pub fn serialize<S: Serializer, T: Serialize>(
        pairs: &[(Vec<u8>, T)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pairs.iter().map(|(k, v)| (Bytes::new(k), v)))
    }

    /// Deserializes a list of pairs keyed by byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Vec<u8>, T)>, D::Error> {
        let pairs = Vec::<(ByteBuf, T)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(k, v)| (k.into_vec(), v)).collect())
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` to bytes, in a buffer of exactly their size.
///
/// Sized first because encoded entries live in the Raft log until the next snapshot: a buffer
/// grown by doubling held a 131-byte SET entry in 256 bytes, ~55 MB of the log's memory at the
/// default snapshot threshold.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_prefix(&[], value)
}

/// Encodes `value` after the bytes `prefix`, in one buffer of exactly their size.
pub fn encode_with_prefix<T: Serialize>(prefix: &[u8], value: &T) -> Result<Vec<u8>, CodecError> {
    let fail = |e: bincode::error::EncodeError| CodecError::Encode(e.to_string());
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).map_err(fail)?;
    let mut out = Vec::with_capacity(prefix.len() + size.bytes_written);
    out.extend_from_slice(prefix);
    bincode::serde::encode_into_writer(value, VecOut(&mut out), config()).map_err(fail)?;
    Ok(out)
}

/// Appends `n` as [`encode`] writes any integer (and a length): one byte up to 250, else a
/// marker byte and 2, 4 or 8 little-endian bytes. For encoders written by hand where serde's
/// per-field calls cost too much; their tests compare them with [`encode`].
pub fn put_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xFFFF => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// A bincode writer appending to a `Vec` (bincode's own is private).
struct VecOut<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecOut<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::{ColumnFamily, Command, Proposal, SessionTag};
    use serde::Deserialize;

    /// Byte fields as serde derives them by default: element by element.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Plain {
        one: Vec<u8>,
        maybe: Option<Vec<u8>>,
        list: Vec<Vec<u8>>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        keyed: Vec<(Vec<u8>, u64)>,
    }

    /// The same fields through the byte adapters.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Adapted {
        #[serde(with = "serde_bytes")]
        one: Vec<u8>,
        #[serde(with = "serde_bytes")]
        maybe: Option<Vec<u8>>,
        #[serde(with = "byte_lists")]
        list: Vec<Vec<u8>>,
        #[serde(with = "byte_pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        #[serde(with = "byte_keyed")]
        keyed: Vec<(Vec<u8>, u64)>,
    }

    // Logs, snapshots and peer frames written before the adapters must read back unchanged.
    #[test]
    fn byte_adapters_keep_the_encoding() {
        let long: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let plain = Plain {
            one: long.clone(),
            maybe: Some(b"v".to_vec()),
            list: vec![vec![], b"ab".to_vec(), long.clone()],
            pairs: vec![(b"k".to_vec(), long.clone()), (vec![], vec![0])],
            keyed: vec![(long.clone(), 300), (b"x".to_vec(), 0)],
        };
        let adapted = Adapted {
            one: plain.one.clone(),
            maybe: plain.maybe.clone(),
            list: plain.list.clone(),
            pairs: plain.pairs.clone(),
            keyed: plain.keyed.clone(),
        };
        let bytes = encode(&plain).expect("encodes");
        assert_eq!(encode(&adapted).expect("encodes"), bytes);
        assert_eq!(decode::<Adapted>(&bytes).expect("decodes"), adapted);
        let none = Plain { maybe: None, ..plain };
        let bytes = encode(&none).expect("encodes");
        assert_eq!(decode::<Adapted>(&bytes).expect("decodes").maybe, None);
        assert_eq!(
            decode::<Plain>(&encode(&Adapted { maybe: None, ..adapted }).expect("encodes")).expect("decodes"),
            none
        );
    }

    /// Encoded entries sit in the Raft log for a long time: no spare capacity, same bytes as before.
    #[test]
    fn encodings_fill_their_buffer_exactly() {
        let p = Proposal {
            request_id: 123_456,
            session: Some(SessionTag { client_id: 1, seq: 2 }),
            command: Command::Put {
                cf: ColumnFamily::Default,
                key: b"key:123456".to_vec(),
                value: vec![7; 100],
            },
        };
        let grown = bincode::serde::encode_to_vec(&p, config()).expect("encode");
        let bytes = encode(&p).expect("encode");
        assert_eq!(bytes, grown);
        assert_eq!(bytes.capacity(), bytes.len(), "grown by doubling it had {}", grown.capacity());
        let prefixed = encode_with_prefix(b"head", &p).expect("encode");
        assert_eq!(prefixed[..4], *b"head");
        assert_eq!(prefixed[4..], grown[..]);
        assert_eq!(prefixed.capacity(), prefixed.len());
    }

    #[test]
    fn proposal_round_trips() {
        let p = Proposal {
            request_id: 7,
            session: Some(SessionTag { client_id: 1, seq: 2 }),
            command: Command::Put { cf: ColumnFamily::Lock, key: b"k".to_vec(), value: vec![0, 255] },
        };
        let bytes = encode(&p).expect("encode");
        assert_eq!(decode::<Proposal>(&bytes).expect("decode"), p);
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let bytes = encode(&(1u64, b"abc".to_vec())).expect("encode");
        assert!(decode::<(u64, Vec<u8>)>(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode::<(u64, Vec<u8>)>(&longer), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn hostile_length_prefix_is_refused_without_allocating() {
        // A Vec<u8> whose varint length claims u64::MAX bytes.
        let bytes = [253u8, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
