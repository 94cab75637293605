//! Payload encoding. The only place that names the serialisation crate, so
//! that it can be swapped without touching callers.
//!
//! bincode 2 with fixed-width little-endian integers (a `CK_ULONG` is always
//! 8 bytes on the wire) and a decode limit equal to the frame limit, so a
//! hostile length prefix cannot make the decoder allocate more than a frame.

use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{FrameError, FrameHeader, FRAME_HEADER_LEN, MAX_PAYLOAD};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("payload does not encode: {0}")]
    Encode(String),
    #[error("{0} trailing bytes after the message")]
    TrailingData(usize),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ MAX_PAYLOAD as usize }>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes a message as a whole frame into `out` (cleared first): the
/// header, then the payload encoded in place after it, not copied into a
/// second buffer. The caller owns `out` whatever happens, and can wipe it
/// when the message carried a secret. A payload over [`MAX_PAYLOAD`] is
/// [`CodecError::Frame`].
pub fn encode_framed<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    out.resize(FRAME_HEADER_LEN, 0);
    bincode::serde::encode_into_std_write(value, out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let header = FrameHeader::new(out.len() - FRAME_HEADER_LEN)?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(())
}

/// Decodes exactly one message; truncated input and trailing bytes are errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingData(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn sample() -> Request {
        Request::SignInit(OpInit {
            session: 7,
            key: 9,
            mechanism: Mechanism {
                mechanism: 0x0d,
                param: MechParam::RsaPkcsPss {
                    hash_alg: 0x250,
                    mgf: 2,
                    salt_len: 32,
                },
            },
        })
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), sample());
    }

    #[test]
    fn a_framed_encoding_is_the_frame_of_the_encoding() {
        let mut out = vec![9u8; 3];
        encode_framed(&sample(), &mut out).unwrap();
        assert_eq!(
            out,
            crate::frame::frame(&encode(&sample()).unwrap()).unwrap()
        );
        let big = Request::SeedRandom(DataIn {
            session: 1,
            data: Some(vec![0; MAX_PAYLOAD as usize + 1]),
        });
        assert!(matches!(
            encode_framed(&big, &mut out),
            Err(CodecError::Frame(FrameError::TooLarge(_)))
        ));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = encode(&sample()).unwrap();
        for n in 0..bytes.len() {
            assert!(
                decode::<Request>(&bytes[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(CodecError::TrailingData(1))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // DataIn with a Vec length of 2^62: must fail, not try to allocate.
        let mut bytes = encode(&Request::SeedRandom(DataIn {
            session: 1,
            data: Some(vec![]),
        }))
        .unwrap();
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode::<Request>(&bytes).is_err());
    }

    /// Byte fields are encoded as slices for speed; the bytes on the wire must
    /// be exactly those of a plain sequence of u8 (an encoding never changes).
    #[test]
    fn byte_fields_keep_the_sequence_encoding() {
        #[derive(serde::Serialize)]
        struct Plain {
            session: u64,
            data: Option<Vec<u8>>,
        }
        let fast = encode(&DataIn {
            session: 5,
            data: Some(vec![1, 2, 3]),
        })
        .unwrap();
        let plain = encode(&Plain {
            session: 5,
            data: Some(vec![1, 2, 3]),
        })
        .unwrap();
        assert_eq!(fast, plain);
        assert_eq!(decode::<DataIn>(&plain).unwrap().data, Some(vec![1, 2, 3]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..512 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Request>(&buf);
            let _ = decode::<Response>(&buf);
        }
    }
}
