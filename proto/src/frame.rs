//! The frame header: fixed size, versioned, with a hard payload limit checked
//! before any allocation.

/// Identifies a kmsp11 frame; anything else on the port is dropped.
pub const MAGIC: [u8; 4] = *b"KP11";
/// Major version in the high byte, minor in the low byte. Peers must share the major.
pub const PROTOCOL_VERSION: u16 = 0x0201;
pub const FRAME_HEADER_LEN: usize = 12;
/// The largest payload either side accepts (16 MiB): larger than any key,
/// certificate or single-part input a PKCS#11 client sends.
pub const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u16,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a kmsp11 frame (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0:#06x} (this side speaks {PROTOCOL_VERSION:#06x})")]
    Version(u16),
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(u32),
    #[error("reserved header bits set ({0:#06x})")]
    Reserved(u16),
}

impl FrameHeader {
    pub fn new(len: usize) -> Result<Self, FrameError> {
        let len = u32::try_from(len).map_err(|_| FrameError::TooLarge(u32::MAX))?;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        Ok(FrameHeader {
            version: PROTOCOL_VERSION,
            len,
        })
    }

    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[8..12].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Parses and validates a header; the payload length is within [`MAX_PAYLOAD`] on success.
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<Self, FrameError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version >> 8 != PROTOCOL_VERSION >> 8 {
            return Err(FrameError::Version(version));
        }
        let reserved = u16::from_be_bytes([bytes[6], bytes[7]]);
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        Ok(FrameHeader { version, len })
    }
}

/// Builds a complete frame: header then payload.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = FrameHeader::new(payload.len())?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = FrameHeader::new(1234).unwrap();
        assert_eq!(FrameHeader::parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn rejects_bad_headers() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = FrameHeader::new(1).unwrap().to_bytes();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            FrameHeader::parse(&b)
        };
        assert!(matches!(with(0, b"X"), Err(FrameError::BadMagic(_))));
        assert!(matches!(with(4, &[9]), Err(FrameError::Version(_))));
        let too_large = (MAX_PAYLOAD + 1).to_be_bytes();
        assert!(matches!(with(8, &too_large), Err(FrameError::TooLarge(_))));
        assert!(matches!(with(7, &[1]), Err(FrameError::Reserved(_))));
    }
}
