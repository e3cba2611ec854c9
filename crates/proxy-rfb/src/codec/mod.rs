//! RFB rectangle encodings both ways: the hub decodes what the VM sends into its
//! [`Framebuffer`] ([`Decode`]), and encodes what changed for each viewer in the encoding the
//! viewer prefers ([`Encode`]), each with its own compression state (zlib streams live in the
//! encoder and decoder values, one per connection, as RFB requires).
//!
//! | encoding | encoder | decoder | state |
//! |---|---|---|---|
//! | Raw (0) | [`raw::RawEncoder`] | [`raw::RawDecoder`] | none |
//! | Hextile (5) | [`hextile::HextileEncoder`] | [`hextile::HextileDecoder`] | none |
//! | zlib (6) | [`zlib::ZlibEncoder`] | [`zlib::ZlibDecoder`] | one zlib stream |
//! | Tight (7) | [`tight::TightEncoder`] | [`tight::TightDecoder`] | four zlib streams, resettable |
//! | ZRLE (16) | [`zrle::ZrleEncoder`] | [`zrle::ZrleDecoder`] | one zlib stream |
//!
//! Encoders work on [`Pixels`], a copy of a rectangle's colours taken under the hub's lock, so
//! the encode itself runs outside it. Decoders see a rectangle's body as bytes arrive and say
//! [`Decoded::NeedMore`] without touching any state until the whole body is there.
//!
//! ```
//! use proxy_rfb::codec::{Decode, Decoded, Encode, Pixels};
//! use proxy_rfb::codec::raw::{RawDecoder, RawEncoder};
//! use proxy_rfb::framebuffer::{Framebuffer, Rect};
//! use proxy_rfb::PixelFormat;
//!
//! let format = PixelFormat::rgb888();
//! let rect = Rect { x: 0, y: 0, width: 2, height: 1 };
//! let colours = [0x00ff0000, 0x000000ff];
//! let mut out = Vec::new();
//! let count = RawEncoder.encode(Pixels::new(rect, &colours), &format, &mut out);
//! assert_eq!(count, 1);
//! let mut screen = Framebuffer::new(2, 1);
//! // The body follows the 12-byte rectangle header.
//! assert_eq!(RawDecoder.decode(rect, &out[12..], &format, &mut screen).unwrap(), Decoded::Done(8));
//! assert_eq!(screen.pixel(1, 0), Some(0x000000ff));
//! ```
use crate::framebuffer::{Framebuffer, Rect};
use crate::{PixelFormat, RfbError};

pub mod hextile;
pub mod raw;
pub mod tight;
pub mod zlib;
pub mod zrle;

/// A rectangle's colours (0x00RRGGBB, row by row), copied out of a framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixels<'a> {
    /// Where on the screen.
    pub rect: Rect,
    /// Exactly `rect.width * rect.height` colours.
    pub colours: &'a [u32],
}

impl<'a> Pixels<'a> {
    /// `colours` of `rect`.
    ///
    /// # Panics
    /// When `colours` does not hold exactly the rectangle's pixels (a caller's bug).
    pub fn new(rect: Rect, colours: &'a [u32]) -> Self {
        assert_eq!(colours.len(), rect.pixels(), "colours of the rectangle");
        Self { rect, colours }
    }

    /// The colour at (`x`, `y`) relative to the rectangle.
    pub fn at(&self, x: u16, y: u16) -> u32 {
        self.colours[usize::from(y) * usize::from(self.rect.width) + usize::from(x)]
    }

    /// One row, relative to the rectangle.
    pub fn row(&self, y: u16) -> &'a [u32] {
        let width = usize::from(self.rect.width);
        &self.colours[usize::from(y) * width..(usize::from(y) + 1) * width]
    }

    /// A sub-rectangle (`area` relative to this one) as its own colours.
    pub fn sub(&self, area: Rect) -> Vec<u32> {
        let mut colours = Vec::with_capacity(area.pixels());
        for y in area.y..area.y + area.height {
            let row = self.row(y);
            colours.extend_from_slice(&row[usize::from(area.x)..usize::from(area.x + area.width)]);
        }
        colours
    }
}

/// Writes rectangles of one encoding for one connection (its compression state included).
pub trait Encode: Send {
    /// The encoding number in the rectangle headers it writes.
    fn encoding(&self) -> i32;

    /// Appends `pixels` as one or more complete rectangles (12-byte headers included) in
    /// `format` (a true-colour format); returns how many rectangles it wrote.
    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16;

    /// Starts the compression state afresh in a way the stream tells the decoder (Tight's
    /// reset bits), so that a client whose decoder starts now can follow what comes next;
    /// `false` when the encoding cannot say so (ZRLE and zlib keep one stream for the whole
    /// connection). Stateless encodings need nothing.
    fn restart(&mut self) -> bool {
        false
    }

    /// Makes what comes next decodable by a client that starts receiving here, without
    /// telling the clients that received everything before to start afresh: each zlib
    /// stream's next use begins with a full flush, recorded ([`Self::take_join_chunks`]) so
    /// that the joining client's copy can carry the zlib header a new stream starts with
    /// ([`spliced_for_joiner`]). `false` when the encoding cannot (ZRLE, zlib); stateless
    /// encodings need nothing.
    fn mark_join(&mut self) -> bool {
        false
    }

    /// The join points written since the last call (offsets into the `out` given to
    /// [`Self::encode`]).
    fn take_join_chunks(&mut self) -> Vec<JoinChunk> {
        Vec::new()
    }
}

/// Where a Tight rectangle's zlib data begins a stream anew for a client that joins there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinChunk {
    /// The rectangle's control byte.
    pub control_at: usize,
    /// Its compact length.
    pub length_at: usize,
    /// Its zlib data.
    pub data_at: usize,
    /// The zlib data's length.
    pub data_length: usize,
    /// The zlib stream (0..=3).
    pub stream: u8,
    /// The data is the stream's very first: it carries its zlib header already.
    pub has_header: bool,
}

/// The zlib header a new stream starts with (deflate, 32 KiB window; the level bits are a
/// hint only).
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// `update` as a client that joins at it receives it: each join chunk on a stream that
/// client has not started yet (`unstarted`) gets the zlib header in front (and its length
/// grows by two); those streams are then started. `None` when nothing changes.
pub fn spliced_for_joiner(
    update: &[u8],
    chunks: &[JoinChunk],
    unstarted: &mut [bool; 4],
) -> Option<Vec<u8>> {
    let wanted: Vec<&JoinChunk> = chunks
        .iter()
        .filter(|chunk| unstarted[usize::from(chunk.stream & 3)])
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let mut spliced = Vec::with_capacity(update.len() + 4 * wanted.len());
    let mut copied = 0;
    for chunk in wanted {
        unstarted[usize::from(chunk.stream & 3)] = false;
        if chunk.has_header {
            continue;
        }
        spliced.extend_from_slice(&update[copied..chunk.length_at]);
        tight::push_compact_length(&mut spliced, chunk.data_length + ZLIB_HEADER.len());
        spliced.extend_from_slice(&ZLIB_HEADER);
        copied = chunk.data_at;
    }
    if copied == 0 {
        // Only streams whose data starts with its header: the bytes as they are.
        return None;
    }
    spliced.extend_from_slice(&update[copied..]);
    Some(spliced)
}

/// The encoding settings a viewer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncoderSettings {
    /// The rectangle encoding: the first of Tight, ZRLE, zlib, Hextile and Raw in the
    /// viewer's own order of preference.
    pub encoding: i32,
    /// The CompressLevel pseudo-encoding's level (default 2, noVNC's).
    pub compression: u8,
    /// The QualityLevel pseudo-encoding's level: JPEG allowed (Tight) at this quality.
    pub quality: Option<u8>,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        Self {
            encoding: crate::server::encoding::RAW,
            compression: 2,
            quality: None,
        }
    }
}

impl EncoderSettings {
    /// The settings a viewer's SetEncodings list asks for.
    pub fn from_encodings(encodings: &[i32]) -> Self {
        use crate::server::encoding;
        let mut settings = Self::default();
        if let Some(&chosen) = encodings
            .iter()
            .find(|&&offered| encoder_for(offered, &settings).is_some())
        {
            settings.encoding = chosen;
        }
        for &offered in encodings {
            if encoding::is_compression_level(offered) {
                settings.compression = (offered + 256) as u8;
            } else if encoding::is_quality_level(offered) {
                settings.quality = Some((offered + 32) as u8);
            }
        }
        settings
    }

    /// A fresh encoder for one viewer's own updates. Tight keeps to zlib stream 3 and makes
    /// each rectangle self-contained: streams 0..=2 stay unused for a shared stream the
    /// viewer may join ([`Self::shared_encoder`]), and stream 3 can restart under noVNC,
    /// whose zlib (pako) keeps an empty window after a reset of a used stream, so that any
    /// later reference across rectangles would fail.
    pub fn encoder(&self) -> Box<dyn Encode> {
        if self.encoding == crate::server::encoding::TIGHT {
            return Box::new(tight::TightEncoder::new(tight::TightSettings {
                compression: self.compression,
                jpeg_quality: self.quality,
                self_contained: true,
                single_stream: Some(3),
            }));
        }
        encoder_for(self.encoding, self).unwrap_or_else(|| Box::new(raw::RawEncoder))
    }

    /// A fresh encoder for a stream shared by every viewer with these settings: Tight on
    /// streams 0..=2 with each stream's dictionary kept across rectangles (scrolled text
    /// refers back to the lines it showed: half the bytes on a scrolling console), joined
    /// through join points ([`Encode::mark_join`]).
    pub fn shared_encoder(&self) -> Box<dyn Encode> {
        encoder_for(self.encoding, self).unwrap_or_else(|| Box::new(raw::RawEncoder))
    }
}

/// A fresh encoder for `encoding` with `settings`' levels, if this crate has one.
fn encoder_for(encoding: i32, settings: &EncoderSettings) -> Option<Box<dyn Encode>> {
    match encoding {
        crate::server::encoding::RAW => Some(Box::new(raw::RawEncoder)),
        crate::server::encoding::HEXTILE => Some(Box::new(hextile::HextileEncoder)),
        crate::server::encoding::ZLIB => {
            Some(Box::new(zlib::ZlibEncoder::new(settings.compression)))
        }
        crate::server::encoding::ZRLE => {
            Some(Box::new(zrle::ZrleEncoder::new(settings.compression)))
        }
        crate::server::encoding::TIGHT => {
            Some(Box::new(tight::TightEncoder::new(tight::TightSettings {
                compression: settings.compression,
                jpeg_quality: settings.quality,
                self_contained: false,
                single_stream: None,
            })))
        }
        _ => None,
    }
}

/// What a decoder made of the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The rectangle's body is not complete yet; nothing was changed.
    NeedMore,
    /// The rectangle was applied; its body was this many bytes.
    Done(usize),
}

/// Reads rectangles of one encoding for one connection (its compression state included).
pub trait Decode: Send {
    /// Applies the rectangle `rect` whose body (the bytes after its 12-byte header) starts
    /// `body`, sent in `format`, to `screen`. Returns [`Decoded::NeedMore`] without changing
    /// anything (no compression state either) while `body` holds less than the whole body.
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError>;

    /// With `false`, [`Self::decode`] keeps its compression state current but leaves the
    /// screen alone (a hub whose viewers all get the VM's own bytes needs no pixels); a
    /// decoder that cannot tell the two apart paints anyway.
    fn set_painting(&mut self, _paint: bool) {}
}

/// A fresh decoder for `encoding`, if this crate has one.
pub fn decoder_for(encoding: i32) -> Option<Box<dyn Decode>> {
    match encoding {
        crate::server::encoding::RAW => Some(Box::new(raw::RawDecoder)),
        crate::server::encoding::HEXTILE => Some(Box::new(hextile::HextileDecoder)),
        crate::server::encoding::ZLIB => Some(Box::new(zlib::ZlibDecoder::new())),
        crate::server::encoding::ZRLE => Some(Box::new(zrle::ZrleDecoder::new())),
        crate::server::encoding::TIGHT => Some(Box::new(tight::TightDecoder::new())),
        _ => None,
    }
}

/// Appends a rectangle header.
pub fn push_rect_header(out: &mut Vec<u8>, rect: Rect, encoding: i32) {
    for value in [rect.x, rect.y, rect.width, rect.height] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

/// Tight's TPIXEL and ZRLE's CPIXEL: 3 bytes for depth-24 formats (Tight: red, green, blue;
/// ZRLE: the three bytes that hold colour, in the format's byte order), otherwise the full
/// pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactPixel {
    /// Tight's TPIXEL.
    Tight,
    /// ZRLE's CPIXEL.
    Zrle,
}

impl CompactPixel {
    /// Bytes per pixel in `format`.
    pub fn size(self, format: &PixelFormat) -> usize {
        if self.is_compact(format) {
            3
        } else {
            format.bytes_per_pixel() as usize
        }
    }

    fn is_compact(self, format: &PixelFormat) -> bool {
        match self {
            CompactPixel::Tight => format.is_depth24_rgb(),
            // ZRLE: 32 bits per pixel whose colour bits all sit in the low three bytes (or
            // the high three), whatever the depth field says beyond that.
            CompactPixel::Zrle => {
                format.bits_per_pixel == 32 && format.depth <= 24 && {
                    let top = (0..3)
                        .map(|i| {
                            u32::from(format.shift[i])
                                + (32 - u32::from(format.max[i]).leading_zeros())
                        })
                        .max()
                        .unwrap_or(0);
                    let bottom = (0..3)
                        .map(|i| u32::from(format.shift[i]))
                        .min()
                        .unwrap_or(0);
                    top <= 24 || bottom >= 8
                }
            }
        }
    }

    /// Appends `colour` as this kind of pixel in `format`.
    pub fn push(self, colour: u32, format: &PixelFormat, out: &mut Vec<u8>) {
        if !self.is_compact(format) {
            format.encode_pixel(colour, out);
            return;
        }
        match self {
            CompactPixel::Tight => {
                out.extend_from_slice(&[(colour >> 16) as u8, (colour >> 8) as u8, colour as u8]);
            }
            CompactPixel::Zrle => {
                let mut pixel = Vec::with_capacity(4);
                format.encode_pixel(colour, &mut pixel);
                out.extend_from_slice(&self.trim(format, &pixel));
            }
        }
    }

    /// The colour of the pixel at the start of `bytes` (at least [`Self::size`] long).
    pub fn read(self, bytes: &[u8], format: &PixelFormat) -> u32 {
        if !self.is_compact(format) {
            return format.decode_pixel(&bytes[..format.bytes_per_pixel() as usize]);
        }
        match self {
            CompactPixel::Tight => {
                (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2])
            }
            CompactPixel::Zrle => {
                let low = self.low_bytes(format);
                let pixel = match (format.big_endian, low) {
                    (false, true) => [bytes[0], bytes[1], bytes[2], 0],
                    (false, false) => [0, bytes[0], bytes[1], bytes[2]],
                    (true, true) => [0, bytes[0], bytes[1], bytes[2]],
                    (true, false) => [bytes[0], bytes[1], bytes[2], 0],
                };
                format.decode_pixel(&pixel)
            }
        }
    }

    /// Whether a ZRLE CPIXEL is the pixel's three least significant bytes.
    fn low_bytes(self, format: &PixelFormat) -> bool {
        let top = (0..3)
            .map(|i| u32::from(format.shift[i]) + (32 - u32::from(format.max[i]).leading_zeros()))
            .max()
            .unwrap_or(0);
        top <= 24
    }

    fn trim(self, format: &PixelFormat, pixel: &[u8]) -> [u8; 3] {
        let low = self.low_bytes(format);
        match (format.big_endian, low) {
            (false, true) | (true, false) => [pixel[0], pixel[1], pixel[2]],
            (false, false) | (true, true) => [pixel[1], pixel[2], pixel[3]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn novncs_encodings_get_tight_at_its_levels_and_every_encoding_has_its_encoder() {
        use crate::server::encoding;
        // noVNC 1.6's SetEncodings, as sent to the hub (H.264 and TightPNG are not ours).
        let novnc = [
            1, 50, 7, -260, 16, 21, 5, 2, 6, 0, -26, -254, -223, -224, -258, -261, -308, -309,
            -312, -313, -307, -239,
        ];
        let settings = EncoderSettings::from_encodings(&novnc);
        assert_eq!(
            settings,
            EncoderSettings {
                encoding: encoding::TIGHT,
                compression: 2,
                quality: Some(6),
            }
        );
        for chosen in [
            encoding::TIGHT,
            encoding::ZRLE,
            encoding::ZLIB,
            encoding::HEXTILE,
            encoding::RAW,
        ] {
            let settings = EncoderSettings::from_encodings(&[chosen]);
            assert_eq!(settings.encoding, chosen);
            assert_eq!(settings.encoder().encoding(), chosen);
            assert!(decoder_for(chosen).is_some(), "{chosen}");
        }
        // Nothing this crate writes: Raw, which every client takes.
        assert_eq!(
            EncoderSettings::from_encodings(&[50, -260]).encoding,
            encoding::RAW
        );
    }

    #[test]
    fn compact_pixels_round_trip_in_both_byte_orders() {
        let colour = 0x00_12_34_56;
        let little = PixelFormat::rgb888();
        let big = PixelFormat {
            big_endian: true,
            ..PixelFormat::rgb888()
        };
        let novnc = PixelFormat {
            shift: [0, 8, 16],
            ..PixelFormat::rgb888()
        };
        for format in [little, big, novnc] {
            for kind in [CompactPixel::Tight, CompactPixel::Zrle] {
                let mut out = Vec::new();
                kind.push(colour, &format, &mut out);
                assert_eq!(out.len(), 3, "{kind:?} {format:?}");
                assert_eq!(kind.read(&out, &format), colour, "{kind:?} {format:?}");
            }
        }
        let mut out = Vec::new();
        CompactPixel::Tight.push(colour, &little, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56], "TPIXEL is red, green, blue");
        let mut out = Vec::new();
        CompactPixel::Zrle.push(colour, &little, &mut out);
        assert_eq!(
            out,
            [0x56, 0x34, 0x12],
            "CPIXEL keeps the format's byte order"
        );
    }
}
