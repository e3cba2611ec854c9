//! The RFC 6455 section 5.2 frame header: parsed from and formatted into bytes.

/// A frame's opcode (RFC 6455 section 5.2), the reserved ones kept with their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// `0x0`: a continuation of a fragmented message.
    Continuation,
    /// `0x1`: a text message (or its first fragment).
    Text,
    /// `0x2`: a binary message (or its first fragment).
    Binary,
    /// `0x8`: close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
    /// `0x3`–`0x7` and `0xB`–`0xF`: reserved for future use, never valid here.
    Reserved(u8),
}

impl OpCode {
    /// The opcode of the low four bits of `byte`.
    pub fn from_nibble(byte: u8) -> Self {
        match byte & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }

    /// The four-bit value on the wire.
    pub fn nibble(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(value) => value & 0x0F,
        }
    }

    /// Close, ping and pong (and the reserved control opcodes `0xB`–`0xF`).
    pub fn is_control(self) -> bool {
        self.nibble() & 0x08 != 0
    }
}

/// The fixed part of a frame: flags, opcode, mask and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: the last frame of its message.
    pub is_final: bool,
    /// RSV1–RSV3, in that order.
    pub reserved_bits: [bool; 3],
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// Bytes of payload that follow the header.
    pub payload_len: u64,
}

/// Why a frame header is not one RFC 6455 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A 64-bit length with its most significant bit set (RFC 6455 section 5.2).
    #[error("the 64-bit payload length has its most significant bit set")]
    LengthOutOfRange,
}

/// The longest header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER_BYTES: usize = 14;

impl FrameHeader {
    /// Parses the header at the start of `bytes`: `Ok(None)` until all of it is there, else the
    /// header and its length in bytes.
    pub fn parse(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
        let [first, second, rest @ ..] = bytes else {
            return Ok(None);
        };
        let (payload_len, length_bytes) = match second & 0x7F {
            126 => match rest {
                [high, low, ..] => (u64::from(u16::from_be_bytes([*high, *low])), 2),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(length) => (u64::from_be_bytes(*length), 8),
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        if payload_len >> 63 != 0 {
            return Err(HeaderError::LengthOutOfRange);
        }
        let rest = &rest[length_bytes..];
        let mask = if second & 0x80 != 0 {
            match rest.first_chunk::<4>() {
                Some(mask) => Some(*mask),
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader {
            is_final: first & 0x80 != 0,
            reserved_bits: [first & 0x40 != 0, first & 0x20 != 0, first & 0x10 != 0],
            opcode: OpCode::from_nibble(*first),
            mask,
            payload_len,
        };
        let header_len = 2 + length_bytes + if mask.is_some() { 4 } else { 0 };
        Ok(Some((header, header_len)))
    }

    /// The header's length in bytes once formatted.
    pub fn len(&self) -> usize {
        let length_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + length_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Always false: a header has at least two bytes (for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the header, in the shortest length encoding, to `out`.
    pub fn write_to(&self, out: &mut impl bytes::BufMut) {
        let [rsv1, rsv2, rsv3] = self.reserved_bits;
        let first = u8::from(self.is_final) << 7
            | u8::from(rsv1) << 6
            | u8::from(rsv2) << 5
            | u8::from(rsv3) << 4
            | self.opcode.nibble();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(first);
        match self.payload_len {
            short @ 0..=125 => out.put_u8(mask_bit | short as u8),
            medium @ 126..=0xFFFF => {
                out.put_u8(mask_bit | 126);
                out.put_u16(medium as u16);
            }
            long => {
                out.put_u8(mask_bit | 127);
                out.put_u64(long);
            }
        }
        if let Some(mask) = self.mask {
            out.put_slice(&mask);
        }
    }
}

/// Whether a close frame may carry `code` (RFC 6455 section 7.4 and the IANA registry): the
/// defined codes that may be sent (1000–1003, 1007–1014: 1012 service restart, 1013 try again
/// later and 1014 bad gateway are in the IANA registry, though Autobahn's older cases call them
/// invalid), and 3000–4999 for registered and private use. 1004–1006 and 1015 are reserved, the
/// rest of 1000–2999 unassigned.
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader {
            is_final: true,
            reserved_bits: [false; 3],
            opcode,
            mask,
            payload_len,
        }
    }

    #[test]
    fn every_length_encoding_round_trips() {
        for payload_len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let original = header(OpCode::Binary, mask, payload_len);
                let mut bytes = Vec::new();
                original.write_to(&mut bytes);
                assert_eq!(bytes.len(), original.len());
                for cut in 0..bytes.len() {
                    assert_eq!(FrameHeader::parse(&bytes[..cut]), Ok(None), "cut {cut}");
                }
                assert_eq!(
                    FrameHeader::parse(&bytes),
                    Ok(Some((original, bytes.len())))
                );
            }
        }
    }

    #[test]
    fn flags_and_opcodes_are_read_bit_by_bit() {
        let (parsed, len) = FrameHeader::parse(&[0x7B, 0x00]).unwrap().unwrap();
        assert_eq!(len, 2);
        assert!(!parsed.is_final);
        assert_eq!(parsed.reserved_bits, [true, true, true]);
        assert_eq!(parsed.opcode, OpCode::Reserved(0xB));
        assert!(parsed.opcode.is_control());
        assert!(!OpCode::Binary.is_control());
        for nibble in 0..16 {
            assert_eq!(OpCode::from_nibble(nibble).nibble(), nibble);
        }
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_is_refused() {
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(
            FrameHeader::parse(&bytes),
            Err(HeaderError::LengthOutOfRange)
        );
    }

    #[test]
    fn close_codes_follow_rfc_6455() {
        for code in [1000, 1001, 1003, 1007, 1011, 1013, 1014, 3000, 4000, 4999] {
            assert!(is_sendable_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!is_sendable_close_code(code), "{code}");
        }
    }
}
