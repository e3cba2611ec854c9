//! RFB pixel formats (RFC 6143 §7.4) and conversion of the console's 0xRRGGBB pixels into them.

/// A client's or the server's pixel format, as carried in ServerInit and SetPixelFormat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// Bits per pixel on the wire: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Useful bits in a pixel.
    pub depth: u8,
    /// Multi-byte pixels are sent most significant byte first.
    pub big_endian: bool,
    /// True-colour (the only mode the simulator serves; colour maps are refused).
    pub true_colour: bool,
    /// Largest red value.
    pub red_max: u16,
    /// Largest green value.
    pub green_max: u16,
    /// Largest blue value.
    pub blue_max: u16,
    /// Bit position of red.
    pub red_shift: u8,
    /// Bit position of green.
    pub green_shift: u8,
    /// Bit position of blue.
    pub blue_shift: u8,
}

/// Wire size of a pixel format.
pub(crate) const PIXEL_FORMAT_LEN: usize = 16;

/// Why a client's pixel format is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsupportedPixelFormat {
    /// Only 8, 16 and 32 bits per pixel exist in RFB.
    #[error("{0} bits per pixel is not 8, 16 or 32")]
    BitsPerPixel(u8),
    /// Colour-map formats are not served.
    #[error("colour-map pixel formats are not supported, only true colour")]
    ColourMap,
    /// A colour channel does not fit in the pixel.
    #[error("a colour channel's max or shift does not fit in {0} bits per pixel")]
    ChannelOutOfRange(u8),
}

impl PixelFormat {
    /// The server's native format, the one QEMU announces: 32 bpp, depth 24, little endian,
    /// red at bit 16, green at 8, blue at 0.
    pub const SERVER_NATIVE: Self = Self {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// The format noVNC asks for with SetPixelFormat: 32 bpp, depth 24, little endian,
    /// red at bit 0, green at 8, blue at 16 (bytes R, G, B, X in memory).
    pub const NOVNC: Self = Self {
        red_shift: 0,
        blue_shift: 16,
        ..Self::SERVER_NATIVE
    };

    /// Bytes per pixel on the wire.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Encodes this format as the 16 bytes of ServerInit / SetPixelFormat.
    pub fn to_bytes(&self) -> [u8; PIXEL_FORMAT_LEN] {
        let mut bytes = [0u8; PIXEL_FORMAT_LEN];
        bytes[0] = self.bits_per_pixel;
        bytes[1] = self.depth;
        bytes[2] = u8::from(self.big_endian);
        bytes[3] = u8::from(self.true_colour);
        bytes[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        bytes[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        bytes[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        bytes[10] = self.red_shift;
        bytes[11] = self.green_shift;
        bytes[12] = self.blue_shift;
        bytes
    }

    /// Decodes the 16 bytes of a SetPixelFormat message.
    pub fn from_bytes(bytes: &[u8; PIXEL_FORMAT_LEN]) -> Self {
        Self {
            bits_per_pixel: bytes[0],
            depth: bytes[1],
            big_endian: bytes[2] != 0,
            true_colour: bytes[3] != 0,
            red_max: u16::from_be_bytes([bytes[4], bytes[5]]),
            green_max: u16::from_be_bytes([bytes[6], bytes[7]]),
            blue_max: u16::from_be_bytes([bytes[8], bytes[9]]),
            red_shift: bytes[10],
            green_shift: bytes[11],
            blue_shift: bytes[12],
        }
    }

    /// Checks that the simulator can produce pixels in this format.
    pub fn validate(&self) -> Result<(), UnsupportedPixelFormat> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return Err(UnsupportedPixelFormat::BitsPerPixel(self.bits_per_pixel));
        }
        if !self.true_colour {
            return Err(UnsupportedPixelFormat::ColourMap);
        }
        let bits = u32::from(self.bits_per_pixel);
        let fits = |max: u16, shift: u8| {
            let channel_bits = u16::BITS - max.leading_zeros();
            u32::from(shift) + channel_bits <= bits
        };
        if !(fits(self.red_max, self.red_shift)
            && fits(self.green_max, self.green_shift)
            && fits(self.blue_max, self.blue_shift))
        {
            return Err(UnsupportedPixelFormat::ChannelOutOfRange(
                self.bits_per_pixel,
            ));
        }
        Ok(())
    }

    /// Appends `rgb` (0xRRGGBB) to `out` in this (validated) format.
    pub(crate) fn push_pixel(&self, rgb: u32, out: &mut Vec<u8>) {
        let scale = |value: u32, max: u16| (value * u32::from(max) + 127) / 255;
        let red = scale((rgb >> 16) & 0xff, self.red_max);
        let green = scale((rgb >> 8) & 0xff, self.green_max);
        let blue = scale(rgb & 0xff, self.blue_max);
        let value =
            (red << self.red_shift) | (green << self.green_shift) | (blue << self.blue_shift);
        match (self.bytes_per_pixel(), self.big_endian) {
            (4, false) => out.extend_from_slice(&value.to_le_bytes()),
            (4, true) => out.extend_from_slice(&value.to_be_bytes()),
            (2, false) => out.extend_from_slice(&(value as u16).to_le_bytes()),
            (2, true) => out.extend_from_slice(&(value as u16).to_be_bytes()),
            _ => out.push(value as u8),
        }
    }

    /// Reads one pixel in this format back into 0xRRGGBB (used by tests and tools that
    /// check what a client would see).
    pub fn decode_pixel(&self, bytes: &[u8]) -> Option<u32> {
        let value = match (self.bytes_per_pixel(), self.big_endian) {
            (4, false) => u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?),
            (4, true) => u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?),
            (2, false) => u32::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?)),
            (2, true) => u32::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?)),
            _ => u32::from(*bytes.first()?),
        };
        let unscale = |shift: u8, max: u16| {
            let channel = (value >> shift) & u32::from(max);
            if max == 0 {
                0
            } else {
                (channel * 255 + u32::from(max) / 2) / u32::from(max)
            }
        };
        Some(
            (unscale(self.red_shift, self.red_max) << 16)
                | (unscale(self.green_shift, self.green_max) << 8)
                | unscale(self.blue_shift, self.blue_max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORANGE: u32 = 0xff8000;

    #[test]
    fn round_trips_through_the_wire_encoding() {
        for format in [PixelFormat::SERVER_NATIVE, PixelFormat::NOVNC] {
            assert_eq!(PixelFormat::from_bytes(&format.to_bytes()), format);
        }
    }

    #[test]
    fn novnc_format_puts_red_in_the_first_byte() {
        let mut out = Vec::new();
        PixelFormat::NOVNC.push_pixel(ORANGE, &mut out);
        assert_eq!(out, [0xff, 0x80, 0x00, 0x00]);
        let mut out = Vec::new();
        PixelFormat::SERVER_NATIVE.push_pixel(ORANGE, &mut out);
        assert_eq!(out, [0x00, 0x80, 0xff, 0x00]);
    }

    #[test]
    fn big_endian_32_bit_reverses_the_bytes() {
        let format = PixelFormat {
            big_endian: true,
            ..PixelFormat::SERVER_NATIVE
        };
        let mut out = Vec::new();
        format.push_pixel(ORANGE, &mut out);
        assert_eq!(out, [0x00, 0xff, 0x80, 0x00]);
        assert_eq!(format.decode_pixel(&out), Some(ORANGE));
    }

    #[test]
    fn sixteen_bit_rgb565_scales_channels() {
        let format = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: false,
            true_colour: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        assert_eq!(format.validate(), Ok(()));
        let mut out = Vec::new();
        format.push_pixel(0xffffff, &mut out);
        assert_eq!(out, [0xff, 0xff]);
        assert_eq!(format.decode_pixel(&out), Some(0xffffff));
    }

    #[test]
    fn refuses_formats_it_cannot_produce() {
        let colour_map = PixelFormat {
            true_colour: false,
            ..PixelFormat::SERVER_NATIVE
        };
        assert_eq!(
            colour_map.validate(),
            Err(UnsupportedPixelFormat::ColourMap)
        );
        let odd = PixelFormat {
            bits_per_pixel: 24,
            ..PixelFormat::SERVER_NATIVE
        };
        assert_eq!(
            odd.validate(),
            Err(UnsupportedPixelFormat::BitsPerPixel(24))
        );
        let overflowing = PixelFormat {
            red_shift: 28,
            ..PixelFormat::SERVER_NATIVE
        };
        assert_eq!(
            overflowing.validate(),
            Err(UnsupportedPixelFormat::ChannelOutOfRange(32))
        );
    }
}
