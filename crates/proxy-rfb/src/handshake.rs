//! What the two directions learn from each other during the handshake, and the values both
//! need afterwards (the pixel format decides where server rectangles end).
use crate::error::RfbError;

/// The RFB versions the protocol distinguishes (RFC 6143 section 7.1.1): 3.3, 3.7 and 3.8.
/// Other minor numbers are read as the nearest lower one (3.4 and 3.6 as 3.3, 3.889 as 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// RFB 3.3: the server picks the security type.
    V3_3,
    /// RFB 3.7: the client picks; no SecurityResult after None.
    V3_7,
    /// RFB 3.8: the client picks; SecurityResult always, with a reason on failure.
    V3_8,
}

impl Version {
    /// Parses the 12-byte ProtocolVersion message.
    pub fn parse(message: &[u8]) -> Result<Self, RfbError> {
        let text = std::str::from_utf8(message).map_err(|_| RfbError::BadVersion)?;
        let numbers = text
            .strip_prefix("RFB ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|rest| rest.split_once('.'))
            .filter(|(major, minor)| major.len() == 3 && minor.len() == 3)
            .and_then(|(major, minor)| {
                Some((major.parse::<u16>().ok()?, minor.parse::<u16>().ok()?))
            })
            .ok_or(RfbError::BadVersion)?;
        match numbers {
            (3, minor) if minor >= 8 => Ok(Version::V3_8),
            (3, 7) => Ok(Version::V3_7),
            (3, _) => Ok(Version::V3_3),
            _ => Err(RfbError::BadVersion),
        }
    }

    /// The 12-byte ProtocolVersion message of this version.
    pub fn message(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }
}

/// The security types the proxy can follow.
pub mod security {
    /// The handshake failed (3.3's type 0, or an empty list).
    pub const INVALID: u8 = 0;
    /// No authentication.
    pub const NONE: u8 = 1;
    /// VNC authentication (DES challenge and response).
    pub const VNC: u8 = 2;
}

/// A pixel format (RFC 6143 section 7.4): 16 bytes in ServerInit and SetPixelFormat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    /// 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Bits of colour in a pixel.
    pub depth: u8,
    /// Whether multi-byte pixels are big-endian.
    pub big_endian: bool,
    /// True colour (else a colour map).
    pub true_colour: bool,
    /// The largest red, green and blue values.
    pub max: [u16; 3],
    /// Where red, green and blue sit in a pixel.
    pub shift: [u8; 3],
}

impl PixelFormat {
    /// Parses the 16-byte pixel format.
    pub fn parse(bytes: &[u8]) -> Result<Self, RfbError> {
        let format = Self {
            bits_per_pixel: bytes[0],
            depth: bytes[1],
            big_endian: bytes[2] != 0,
            true_colour: bytes[3] != 0,
            max: [
                crate::read::u16_at(bytes, 4),
                crate::read::u16_at(bytes, 6),
                crate::read::u16_at(bytes, 8),
            ],
            shift: [bytes[10], bytes[11], bytes[12]],
        };
        if ![8, 16, 32].contains(&format.bits_per_pixel) {
            return Err(RfbError::Malformed("pixel format (bits per pixel)"));
        }
        Ok(format)
    }

    /// The 16 bytes of this pixel format, as [`parse`](Self::parse) reads them.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[
            self.bits_per_pixel,
            self.depth,
            u8::from(self.big_endian),
            u8::from(self.true_colour),
        ]);
        for (index, max) in self.max.iter().enumerate() {
            bytes[4 + 2 * index..6 + 2 * index].copy_from_slice(&max.to_be_bytes());
        }
        bytes[10..13].copy_from_slice(&self.shift);
        bytes
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> u64 {
        u64::from(self.bits_per_pixel / 8)
    }

    /// Bytes of a Tight TPIXEL: 3 for 32-bit true colour of depth 24 with 8-bit channels,
    /// else a whole pixel.
    pub fn tight_pixel_bytes(&self) -> u64 {
        if self.bits_per_pixel == 32 && self.depth == 24 && self.true_colour && self.max == [255; 3]
        {
            3
        } else {
            self.bytes_per_pixel()
        }
    }
}

/// What one direction's parser tells the other.
#[derive(Debug, Default, Clone)]
pub struct Negotiated {
    /// The version the client answered with (the session's version).
    pub client_version: Option<Version>,
    /// The server's version.
    pub server_version: Option<Version>,
    /// The security type in use: the client's choice (3.7, 3.8) or the server's (3.3).
    pub security: Option<u8>,
    /// The pixel format of server updates: ServerInit's, then each SetPixelFormat's.
    pub pixel_format: Option<PixelFormat>,
    /// The framebuffer size from ServerInit.
    pub framebuffer: Option<(u16, u16)>,
    /// The desktop name from ServerInit (lossy UTF-8).
    pub desktop_name: Option<String>,
    /// Whether the server ended the handshake with a failure.
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_the_three_the_protocol_knows() {
        assert_eq!(Version::parse(b"RFB 003.008\n"), Ok(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(Version::parse(b"RFB 003.003\n"), Ok(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.005\n"), Ok(Version::V3_3));
        for bad in [
            &b"RFB 004.000\n"[..],
            b"HTTP/1.1 200",
            b"RFB 003.008 ",
            b"RFB 03.0008\n",
        ] {
            assert_eq!(Version::parse(bad), Err(RfbError::BadVersion));
        }
    }

    #[test]
    fn versions_and_pixel_formats_write_what_they_parse() {
        for version in [Version::V3_3, Version::V3_7, Version::V3_8] {
            assert_eq!(Version::parse(version.message()), Ok(version));
        }
        let bytes = [16, 16, 1, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];
        assert_eq!(PixelFormat::parse(&bytes).unwrap().to_bytes(), bytes);
    }

    #[test]
    fn tight_pixels_are_three_bytes_for_24_bit_true_colour() {
        let mut bytes = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
        let format = PixelFormat::parse(&bytes).unwrap();
        assert_eq!(
            (format.bytes_per_pixel(), format.tight_pixel_bytes()),
            (4, 3)
        );
        bytes[1] = 32;
        assert_eq!(PixelFormat::parse(&bytes).unwrap().tight_pixel_bytes(), 4);
        bytes[0] = 12;
        assert!(PixelFormat::parse(&bytes).is_err());
    }
}
