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

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` to bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value` after the bytes `prefix`, in one buffer.
pub fn encode_with_prefix<T: Serialize>(prefix: &[u8], value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = prefix.to_vec();
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
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
