//! Tight (7): rectangles as fills, palettes or full colour through four persistent zlib
//! streams (or JPEG), as TightVNC defined it and the RFB community document describes it.
//!
//! Every Tight rectangle starts with a control byte. Its low four bits ask the client to reset
//! zlib streams 0 to 3 before it reads the rectangle; the high four say what follows: 0x8 a
//! fill (one TPIXEL), 0x9 JPEG (a compact length and the JPEG file), 0xA TightPNG, and below
//! 0x8 "basic" compression with the stream number in bits 4-5 and bit 6 saying that a filter
//! byte follows (copy, palette or gradient). Filtered data shorter than 12 bytes is sent as it
//! is; longer data is a compact length (1 to 3 bytes) and that many bytes of the stream's zlib
//! output, flushed (`Z_SYNC_FLUSH`) so the client can decode the rectangle at once. A TPIXEL is
//! 3 bytes (R, G, B) for 32-bit depth-24 formats with 8-bit channels, else a whole pixel.
//!
//! # The encoder's choices
//!
//! - **Solid areas first** (as libvncserver and QEMU do): a rectangle of at least
//!   [`MIN_SPLIT_PIXELS`] is scanned in 16x16 tiles; at the first solid tile the largest solid
//!   area growing right and down from it is found, grown up, down, left and right a row or a
//!   column at a time, and sent as a fill (13-15 bytes with its header) when it covers at least
//!   [`MIN_SOLID_PIXELS`] (or the whole rectangle); the parts above, left, right and below are
//!   encoded the same way. A text console's background thus costs a few fills instead of
//!   compressed pixel data.
//! - **Split**: what is left is cut into pieces at most [`MAX_WIDTH`] (2048, Tight's limit)
//!   wide and of at most [`MAX_PIXELS`] (65536) pixels, as QEMU and libvncserver do at their
//!   higher levels; a full-colour piece whose TPIXELs exceed [`MAX_DATA`] (64 KiB) is cut into
//!   bands of rows (each looked at again), so no piece's uncompressed data is over 64 KiB.
//! - **Per piece**: one colour is a fill; two a palette with 1-bit rows (stream 1); up to the
//!   palette limit a palette with 8-bit indices (stream 2); more is the copy filter (TPIXELs,
//!   stream 0), or JPEG when [`TightSettings::jpeg_quality`] is set, the format has at least
//!   16 bits per pixel and the piece has at least [`JPEG_MIN_PIXELS`] pixels.
//! - **Palette limit**: 256 colours at every compression level, but never more than a quarter
//!   of the piece's pixels (QEMU divides the same way): indexed data is a third of the TPIXELs
//!   before zlib sees it, and zlib's time and output grow with its input, so a palette pays at
//!   any level as long as it is small beside the pixels it indexes.
//! - **zlib levels**: compression 0..=9 (the CompressLevel pseudo-encoding) gives the
//!   full-colour stream zlib level `max(1, compression)` and the palette streams one level
//!   more (at most 9), like QEMU's table: level 0 (stored) never pays on a network, and palette
//!   data is small and repetitive, so the extra effort there is cheap. noVNC's default (2)
//!   thus uses zlib 2 for pixels and 3 for palettes.
//! - **JPEG quality**: QualityLevel 0..=9 maps to JPEG quality 5, 10, 15, 25, 37, 50, 60, 70,
//!   75, 80 (QEMU's table).
//! - [`TightEncoder::reset_streams`] makes the next rectangle that uses each stream set its
//!   reset bit and start that stream afresh, so a viewer can join a stream in progress with a
//!   fresh decoder.
//!
//! Measured (compression 2 / 9, rgb888; the tests' `sample_screen_sizes`, glyphs of a
//! 64-glyph font on black): a 720x400 text screen, 25 lines: 14,180 / 14,138 bytes in 36
//! rectangles (Raw: 1,152,000); the same with 6 lines of text: 2,054 / 2,049 bytes; a 32x2
//! cursor-like strip of 3 colours: 52 / 52 bytes; a 512x384 text area scrolled by a line:
//! 9,495 / 9,473 bytes. The recorded QEMU session's Tight rectangles (SeaBIOS) cost QEMU 1,666
//! bytes and this encoder 1,706 at compression 2 (the rest is miniz_oxide against zlib).
//! Debug-build encode times are 10-40 ms for a full text screen.
//!
//! # The decoder
//!
//! [`TightDecoder`] reads fills, basic compression with the copy, palette (1-bit and 8-bit)
//! and gradient filters, the reset bits, short uncompressed data and compact lengths, with
//! four persistent inflate streams. It works out the whole body's length from the headers
//! before it touches a stream, so [`Decoded::NeedMore`] changes nothing. JPEG and TightPNG
//! rectangles are refused ([`RfbError::Unsupported`]): the hub asks its upstream losslessly.
//! Lengths, palette indices and the inflated size are checked: bad input is an error.
use super::{CompactPixel, Decode, Decoded, Encode, JoinChunk, Pixels, push_rect_header};
use crate::framebuffer::{Framebuffer, Rect};
use crate::server::encoding;
use crate::{PixelFormat, RfbError};
use flate2::{Compress, Compression, Decompress, FlushCompress};

/// The widest rectangle Tight allows.
pub const MAX_WIDTH: u16 = 2048;
/// The most pixels in one piece the encoder sends.
pub const MAX_PIXELS: usize = 65536;
/// The most uncompressed bytes of full-colour data in one piece.
pub const MAX_DATA: usize = 65536;
/// Rectangles at least this large are searched for solid areas.
pub const MIN_SPLIT_PIXELS: usize = 4096;
/// The smallest solid area sent as a fill of its own.
pub const MIN_SOLID_PIXELS: usize = 2048;
/// The smallest piece sent as JPEG (smaller ones go losslessly).
pub const JPEG_MIN_PIXELS: usize = 4096;
/// The side of the tiles the solid-area search looks at.
const SOLID_TILE: u16 = 16;
/// Data shorter than this is sent without zlib.
const MIN_TO_COMPRESS: usize = 12;
/// The largest value a compact length holds.
const MAX_COMPACT_LENGTH: usize = (1 << 22) - 1;
/// JPEG quality for each QualityLevel (QEMU's table).
const JPEG_QUALITY: [u8; 10] = [5, 10, 15, 25, 37, 50, 60, 70, 75, 80];

/// The zlib streams, as TightVNC numbers them.
const STREAM_FULL: usize = 0;
const STREAM_MONO: usize = 1;
const STREAM_INDEXED: usize = 2;

const CONTROL_FILL: u8 = 0x80;
const CONTROL_JPEG: u8 = 0x90;
const EXPLICIT_FILTER: u8 = 0x40;
const FILTER_COPY: u8 = 0;
const FILTER_PALETTE: u8 = 1;
const FILTER_GRADIENT: u8 = 2;

/// How hard the encoder works and whether it may lose detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TightSettings {
    /// 0..=9, from the CompressLevel pseudo-encodings (-256..=-247); see the module docs for
    /// the zlib levels it picks.
    pub compression: u8,
    /// 0..=9 from the QualityLevel pseudo-encodings (-32..=-23); `None` sends no JPEG.
    pub jpeg_quality: Option<u8>,
    /// Each rectangle's zlib data refers to nothing sent before it (a full flush instead of
    /// a sync flush), so a stream can restart under a client whose zlib cannot restart a
    /// stream it used: noVNC's pako keeps an empty window after a reset, and any later
    /// back-reference across rectangles then fails ("zlib inflate failed"). Costs the
    /// dictionary of earlier rectangles.
    pub self_contained: bool,
    /// Every zlib stream's data goes on this one stream id (0..=3), whatever the filter: a
    /// viewer's own encoder keeps to stream 3 so that streams 0..=2 stay unused until the
    /// viewer joins a shared stream (see [`TightEncoder`]'s join points).
    pub single_stream: Option<u8>,
}

impl Default for TightSettings {
    /// noVNC's default compression (2), lossless.
    fn default() -> Self {
        Self {
            compression: 2,
            jpeg_quality: None,
            self_contained: false,
            single_stream: None,
        }
    }
}

/// Writes Tight rectangles for one connection (its four zlib streams included).
#[derive(Debug)]
pub struct TightEncoder {
    settings: TightSettings,
    /// Created on first use (a viewer's own encoder uses one of the four).
    streams: [Option<Compress>; 4],
    /// Streams to start afresh (and say so) the next time they are used.
    reset: [bool; 4],
    /// Streams whose next use is a join point (a full flush first, recorded).
    join: [bool; 4],
    join_chunks: Vec<JoinChunk>,
    /// Filtered data of the piece being written.
    data: Vec<u8>,
    /// Its zlib output.
    compressed: Vec<u8>,
}

impl TightEncoder {
    /// An encoder at the start of a connection.
    pub fn new(settings: TightSettings) -> Self {
        let settings = TightSettings {
            compression: settings.compression.min(9),
            jpeg_quality: settings.jpeg_quality.map(|quality| quality.min(9)),
            ..settings
        };
        Self {
            settings,
            streams: [None, None, None, None],
            reset: [false; 4],
            join: [false; 4],
            join_chunks: Vec::new(),
            data: Vec::new(),
            compressed: Vec::new(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> TightSettings {
        self.settings
    }

    /// Changes the JPEG quality (`None`: lossless); the zlib streams go on as they are.
    pub fn set_jpeg_quality(&mut self, quality: Option<u8>) {
        self.settings.jpeg_quality = quality.map(|quality| quality.min(9));
    }

    /// Starts every zlib stream afresh at its next use, with the reset bit set in that
    /// rectangle's control byte: a viewer whose decoder starts now can follow from here on.
    pub fn reset_streams(&mut self) {
        self.reset = [true; 4];
    }

    /// Encodes `area` (relative to `pixels.rect`), searching it for solid areas first.
    fn encode_area(
        &mut self,
        pixels: &Pixels<'_>,
        area: Rect,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        if area.is_empty() {
            return;
        }
        if area.pixels() >= MIN_SPLIT_PIXELS
            && let Some((colour, best)) = find_solid_area(pixels, area)
        {
            let (right, bottom) = (area.x + area.width, area.y + area.height);
            let (best_right, best_bottom) = (best.x + best.width, best.y + best.height);
            // Above: no tile row there had a solid area large enough.
            self.encode_simple(
                pixels,
                Rect {
                    height: best.y - area.y,
                    ..area
                },
                format,
                out,
            );
            self.encode_area(
                pixels,
                Rect {
                    x: area.x,
                    y: best.y,
                    width: best.x - area.x,
                    height: best.height,
                },
                format,
                out,
            );
            self.fill(pixels, best, colour, format, out);
            self.encode_area(
                pixels,
                Rect {
                    x: best_right,
                    y: best.y,
                    width: right - best_right,
                    height: best.height,
                },
                format,
                out,
            );
            self.encode_area(
                pixels,
                Rect {
                    x: area.x,
                    y: best_bottom,
                    width: area.width,
                    height: bottom - best_bottom,
                },
                format,
                out,
            );
            return;
        }
        self.encode_simple(pixels, area, format, out);
    }

    /// Cuts `area` into pieces Tight and clients allow and encodes each.
    fn encode_simple(
        &mut self,
        pixels: &Pixels<'_>,
        area: Rect,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        if area.is_empty() {
            return;
        }
        let piece_width = area.width.min(MAX_WIDTH);
        let piece_height =
            (MAX_PIXELS / usize::from(piece_width)).clamp(1, usize::from(u16::MAX)) as u16;
        let mut y = area.y;
        while y < area.y + area.height {
            let height = piece_height.min(area.y + area.height - y);
            let mut x = area.x;
            while x < area.x + area.width {
                let width = piece_width.min(area.x + area.width - x);
                self.encode_piece(
                    pixels,
                    Rect {
                        x,
                        y,
                        width,
                        height,
                    },
                    format,
                    out,
                );
                x += width;
            }
            y += height;
        }
    }

    /// Encodes one piece (within Tight's limits) as a fill, a palette, JPEG or full colour.
    fn encode_piece(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        let count = piece.pixels();
        let limit = (count / 4).clamp(2, 256);
        let mut palette = Palette::default();
        let complete = rows(pixels, piece).all(|row| palette.add_all(row, limit));
        if complete {
            palette.sort();
            match palette.colours.len() {
                0 => {}
                1 => self.fill(pixels, piece, palette.colours[0], format, out),
                2 => self.mono(pixels, piece, &palette, format, out),
                _ => self.indexed(pixels, piece, &palette, format, out),
            }
            return;
        }
        if let Some(quality) = self.settings.jpeg_quality
            && format.bits_per_pixel >= 16
            && count >= JPEG_MIN_PIXELS
            && self.jpeg(pixels, piece, quality, out)
        {
            return;
        }
        let pixel_bytes = CompactPixel::Tight.size(format);
        if count * pixel_bytes > MAX_DATA {
            let band = (MAX_DATA / (pixel_bytes * usize::from(piece.width))).max(1) as u16;
            let mut y = piece.y;
            while y < piece.y + piece.height {
                let height = band.min(piece.y + piece.height - y);
                self.encode_piece(pixels, Rect { y, height, ..piece }, format, out);
                y += height;
            }
            return;
        }
        self.full_colour(pixels, piece, format, out);
    }

    fn fill(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        colour: u32,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        // Fills too keep to Tight's width limit.
        let mut x = piece.x;
        while x < piece.x + piece.width {
            let width = MAX_WIDTH.min(piece.x + piece.width - x);
            out.header(pixels, Rect { x, width, ..piece });
            out.bytes.push(CONTROL_FILL);
            CompactPixel::Tight.push(colour, format, &mut out.bytes);
            x += width;
        }
    }

    fn mono(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        palette: &Palette,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        let background = palette.colours[0];
        for row in rows(pixels, piece) {
            for byte in row.chunks(8) {
                let mut bits = 0u8;
                for (bit, &colour) in byte.iter().enumerate() {
                    if colour != background {
                        bits |= 0x80 >> bit;
                    }
                }
                data.push(bits);
            }
        }
        self.palette_rect(pixels, piece, palette, STREAM_MONO, &data, format, out);
        self.data = data;
    }

    fn indexed(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        palette: &Palette,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        let mut last = (palette.colours[0], 0u8);
        for row in rows(pixels, piece) {
            for &colour in row {
                if colour != last.0 {
                    last = (colour, palette.index(colour));
                }
                data.push(last.1);
            }
        }
        self.palette_rect(pixels, piece, palette, STREAM_INDEXED, &data, format, out);
        self.data = data;
    }

    #[allow(clippy::too_many_arguments)]
    fn palette_rect(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        palette: &Palette,
        stream: usize,
        data: &[u8],
        format: &PixelFormat,
        out: &mut Out,
    ) {
        out.header(pixels, piece);
        let control_at = out.bytes.len();
        out.bytes
            .push(self.control(stream, data.len()) | EXPLICIT_FILTER);
        out.bytes.push(FILTER_PALETTE);
        out.bytes.push((palette.colours.len() - 1) as u8);
        for &colour in &palette.colours {
            CompactPixel::Tight.push(colour, format, &mut out.bytes);
        }
        self.push_data(stream, data, &mut out.bytes, control_at);
    }

    fn full_colour(
        &mut self,
        pixels: &Pixels<'_>,
        piece: Rect,
        format: &PixelFormat,
        out: &mut Out,
    ) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        data.reserve(piece.pixels() * CompactPixel::Tight.size(format));
        let compact = format.is_depth24_rgb();
        for row in rows(pixels, piece) {
            if compact {
                for &colour in row {
                    data.extend_from_slice(&[
                        (colour >> 16) as u8,
                        (colour >> 8) as u8,
                        colour as u8,
                    ]);
                }
            } else {
                for &colour in row {
                    CompactPixel::Tight.push(colour, format, &mut data);
                }
            }
        }
        out.header(pixels, piece);
        // Stream 0 with no filter byte: the copy filter.
        let control_at = out.bytes.len();
        out.bytes.push(self.control(STREAM_FULL, data.len()));
        self.push_data(STREAM_FULL, &data, &mut out.bytes, control_at);
        self.data = data;
    }

    /// Writes `piece` as JPEG; false (nothing written) when the JPEG encoder refuses it.
    fn jpeg(&mut self, pixels: &Pixels<'_>, piece: Rect, quality: u8, out: &mut Out) -> bool {
        let mut rgb = std::mem::take(&mut self.data);
        rgb.clear();
        for row in rows(pixels, piece) {
            for &colour in row {
                rgb.extend_from_slice(&[(colour >> 16) as u8, (colour >> 8) as u8, colour as u8]);
            }
        }
        let mut jpeg = std::mem::take(&mut self.compressed);
        jpeg.clear();
        let encoder =
            jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY[usize::from(quality.min(9))]);
        let done = encoder
            .encode(
                &rgb,
                piece.width,
                piece.height,
                jpeg_encoder::ColorType::Rgb,
            )
            .is_ok()
            && jpeg.len() <= MAX_COMPACT_LENGTH;
        if done {
            out.header(pixels, piece);
            out.bytes.push(CONTROL_JPEG);
            push_compact_length(&mut out.bytes, jpeg.len());
            out.bytes.extend_from_slice(&jpeg);
        }
        self.data = rgb;
        self.compressed = jpeg;
        done
    }

    /// The control byte of basic compression on `stream` with `length` bytes of data: the
    /// stream's reset bit when the data goes through zlib and a reset is due.
    fn control(&self, stream: usize, length: usize) -> u8 {
        let stream = self.stream_id(stream);
        let reset = if length >= MIN_TO_COMPRESS && self.reset[stream] {
            1 << stream
        } else {
            0
        };
        ((stream as u8) << 4) | reset
    }

    /// The zlib stream id data of `stream`'s kind goes on.
    fn stream_id(&self, stream: usize) -> usize {
        self.settings
            .single_stream
            .map_or(stream, |only| usize::from(only.min(3)))
    }

    /// Appends `data` as it is (under 12 bytes) or as a compact length and zlib output; the
    /// rectangle's control byte is at `control_at` in `out`.
    fn push_data(&mut self, stream: usize, data: &[u8], out: &mut Vec<u8>, control_at: usize) {
        if data.len() < MIN_TO_COMPRESS {
            out.extend_from_slice(data);
            return;
        }
        let stream = self.stream_id(stream);
        if std::mem::take(&mut self.reset[stream]) {
            self.streams[stream] = None;
        }
        let settings = self.settings;
        let compress = self.streams[stream].get_or_insert_with(|| fresh_stream(&settings, stream));
        let compressed = &mut self.compressed;
        compressed.clear();
        compressed.reserve(data.len() + data.len() / 64 + 64);
        // A join point: a full flush first, so that nothing from here on refers to data
        // before it; a client starting here then needs only a zlib header in front. (An
        // unused stream starts with its header anyway.)
        let joining = std::mem::take(&mut self.join[stream]);
        let has_header = compress.total_out() == 0;
        if joining && !has_header {
            let _ = compress.compress_vec(&[], compressed, FlushCompress::Full);
        }
        let start = compress.total_in();
        let flush = if self.settings.self_contained {
            FlushCompress::Full
        } else {
            FlushCompress::Sync
        };
        loop {
            let consumed = (compress.total_in() - start) as usize;
            if compressed.capacity() - compressed.len() < 64 {
                compressed.reserve(compressed.capacity().max(1024));
            }
            // Compressing into a growing vector with valid input does not fail; if it ever
            // did, the data would be cut short and the client would report a malformed
            // rectangle rather than this process panicking.
            if compress
                .compress_vec(&data[consumed..], compressed, flush)
                .is_err()
            {
                break;
            }
            let consumed = (compress.total_in() - start) as usize;
            if consumed == data.len() && compressed.len() < compressed.capacity() {
                break;
            }
        }
        let length_at = out.len();
        push_compact_length(out, compressed.len());
        if joining {
            self.join_chunks.push(JoinChunk {
                control_at,
                length_at,
                data_at: out.len(),
                data_length: compressed.len(),
                stream: stream as u8,
                has_header,
            });
        }
        out.extend_from_slice(compressed);
    }
}

impl Default for TightEncoder {
    fn default() -> Self {
        Self::new(TightSettings::default())
    }
}

impl Encode for TightEncoder {
    fn encoding(&self) -> i32 {
        encoding::TIGHT
    }

    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16 {
        let area = Rect {
            x: 0,
            y: 0,
            ..pixels.rect
        };
        let mut writer = Out {
            bytes: std::mem::take(out),
            count: 0,
        };
        self.encode_area(&pixels, area, format, &mut writer);
        *out = writer.bytes;
        writer.count
    }

    fn restart(&mut self) -> bool {
        self.reset_streams();
        true
    }

    fn mark_join(&mut self) -> bool {
        self.join = [true; 4];
        true
    }

    fn take_join_chunks(&mut self) -> Vec<JoinChunk> {
        std::mem::take(&mut self.join_chunks)
    }
}

/// A zlib stream for `stream` at the level `settings` give it: full colour at the
/// compression level (at least 1), palettes one level higher (at most 9).
fn fresh_stream(settings: &TightSettings, stream: usize) -> Compress {
    let full = u32::from(settings.compression.max(1));
    let level = if stream == STREAM_FULL {
        full
    } else {
        (full + 1).min(9)
    };
    Compress::new(Compression::new(level), true)
}

/// Where rectangles go, and how many.
struct Out {
    bytes: Vec<u8>,
    count: u16,
}

impl Out {
    fn header(&mut self, pixels: &Pixels<'_>, piece: Rect) {
        let rect = Rect {
            x: pixels.rect.x + piece.x,
            y: pixels.rect.y + piece.y,
            ..piece
        };
        push_rect_header(&mut self.bytes, rect, encoding::TIGHT);
        self.count = self.count.wrapping_add(1);
    }
}

/// The rows of `area` (relative to `pixels.rect`).
fn rows<'a>(pixels: &Pixels<'a>, area: Rect) -> impl Iterator<Item = &'a [u32]> + use<'a> {
    let pixels = *pixels;
    (area.y..area.y + area.height)
        .map(move |y| &pixels.row(y)[usize::from(area.x)..usize::from(area.x + area.width)])
}

/// The colour of `area` if it has one.
fn solid(pixels: &Pixels<'_>, area: Rect) -> Option<u32> {
    let colour = pixels.at(area.x, area.y);
    rows(pixels, area)
        .all(|row| row.iter().all(|&pixel| pixel == colour))
        .then_some(colour)
}

/// The first large enough solid area of `area` (libvncserver's search), grown as far as it
/// goes; `None` when there is none.
fn find_solid_area(pixels: &Pixels<'_>, area: Rect) -> Option<(u32, Rect)> {
    let (right, bottom) = (area.x + area.width, area.y + area.height);
    let mut y = area.y;
    while y < bottom {
        let height = SOLID_TILE.min(bottom - y);
        let mut x = area.x;
        while x < right {
            let width = SOLID_TILE.min(right - x);
            let tile = Rect {
                x,
                y,
                width,
                height,
            };
            if let Some(colour) = solid(pixels, tile) {
                let best = best_solid_area(pixels, x, y, right - x, bottom - y, colour);
                if best.pixels() == area.pixels() || best.pixels() >= MIN_SOLID_PIXELS {
                    return Some((colour, extend_solid_area(pixels, area, best, colour)));
                }
            }
            x += width;
        }
        y += height;
    }
    None
}

/// The largest solid area of `colour` that starts at (`x`, `y`), grown tile by tile right
/// and down within `width` x `height`.
fn best_solid_area(
    pixels: &Pixels<'_>,
    x: u16,
    y: u16,
    width: u16,
    height: u16,
    colour: u32,
) -> Rect {
    let mut best = Rect {
        x,
        y,
        width: 0,
        height: 0,
    };
    let mut run = width;
    let mut dy = y;
    while dy < y + height {
        let tile_height = SOLID_TILE.min(y + height - dy);
        let first = Rect {
            x,
            y: dy,
            width: SOLID_TILE.min(run),
            height: tile_height,
        };
        if solid(pixels, first) != Some(colour) {
            break;
        }
        let mut dx = x + first.width;
        while dx < x + run {
            let tile = Rect {
                x: dx,
                y: dy,
                width: SOLID_TILE.min(x + run - dx),
                height: tile_height,
            };
            if solid(pixels, tile) != Some(colour) {
                break;
            }
            dx += tile.width;
        }
        run = dx - x;
        let candidate = Rect {
            x,
            y,
            width: run,
            height: dy + tile_height - y,
        };
        if candidate.pixels() > best.pixels() {
            best = candidate;
        }
        dy += tile_height;
    }
    best
}

/// Grows the solid `best` up, down, left and right within `area`, a row or column at a time.
fn extend_solid_area(pixels: &Pixels<'_>, area: Rect, mut best: Rect, colour: u32) -> Rect {
    let is = |rect: Rect| solid(pixels, rect) == Some(colour);
    while best.y > area.y
        && is(Rect {
            y: best.y - 1,
            height: 1,
            ..best
        })
    {
        best.y -= 1;
        best.height += 1;
    }
    while best.y + best.height < area.y + area.height
        && is(Rect {
            y: best.y + best.height,
            height: 1,
            ..best
        })
    {
        best.height += 1;
    }
    while best.x > area.x
        && is(Rect {
            x: best.x - 1,
            width: 1,
            ..best
        })
    {
        best.x -= 1;
        best.width += 1;
    }
    while best.x + best.width < area.x + area.width
        && is(Rect {
            x: best.x + best.width,
            width: 1,
            ..best
        })
    {
        best.width += 1;
    }
    best
}

/// The colours of a piece, in the order met, found through a small open-addressing table.
struct Palette {
    colours: Vec<u32>,
    /// How many pixels of each colour.
    counts: Vec<u32>,
    /// (colour, index) slots; `EMPTY` colours are free.
    slots: [(u32, u8); PALETTE_SLOTS],
}

const PALETTE_SLOTS: usize = 1024;
const EMPTY: u32 = u32::MAX;

impl Default for Palette {
    fn default() -> Self {
        Self {
            colours: Vec::new(),
            counts: Vec::new(),
            slots: [(EMPTY, 0); PALETTE_SLOTS],
        }
    }
}

impl Palette {
    fn slot(colour: u32) -> usize {
        (colour.wrapping_mul(0x9E37_79B1) >> 22) as usize
    }

    /// Adds the colours of `row`; false once there would be more than `limit` (at most 256).
    fn add_all(&mut self, row: &[u32], limit: usize) -> bool {
        let mut last = (EMPTY, 0usize);
        for &colour in row {
            if colour == last.0 {
                self.counts[last.1] += 1;
                continue;
            }
            let mut slot = Self::slot(colour);
            let index = loop {
                let (held, index) = self.slots[slot];
                if held == colour {
                    break usize::from(index);
                }
                if held == EMPTY {
                    if self.colours.len() >= limit {
                        return false;
                    }
                    self.slots[slot] = (colour, self.colours.len() as u8);
                    self.colours.push(colour);
                    self.counts.push(0);
                    break self.colours.len() - 1;
                }
                slot = (slot + 1) % PALETTE_SLOTS;
            };
            self.counts[index] += 1;
            last = (colour, index);
        }
        true
    }

    /// Puts the most frequent colours first (index 0: the background), so that indices stay
    /// alike from one rectangle to the next and zlib finds them in its history.
    fn sort(&mut self) {
        let mut order: Vec<(u32, u32)> = self
            .counts
            .iter()
            .zip(&self.colours)
            .map(|(&count, &colour)| (count, colour))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (index, &(_, colour)) in order.iter().enumerate() {
            let mut slot = Self::slot(colour);
            while self.slots[slot].0 != colour {
                slot = (slot + 1) % PALETTE_SLOTS;
            }
            self.slots[slot].1 = index as u8;
            self.colours[index] = colour;
        }
    }

    /// The index of a colour added before.
    fn index(&self, colour: u32) -> u8 {
        let mut slot = Self::slot(colour);
        for _ in 0..PALETTE_SLOTS {
            let (held, index) = self.slots[slot];
            if held == colour || held == EMPTY {
                return index;
            }
            slot = (slot + 1) % PALETTE_SLOTS;
        }
        0
    }
}

/// Appends Tight's compact length: 7 bits a byte, low first, the third byte whole.
pub(crate) fn push_compact_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
    } else if length < 0x4000 {
        out.extend_from_slice(&[(length as u8) | 0x80, (length >> 7) as u8]);
    } else {
        out.extend_from_slice(&[
            (length as u8) | 0x80,
            ((length >> 7) as u8) | 0x80,
            (length >> 14) as u8,
        ]);
    }
}

/// Reads a compact length at the start of `bytes`: (length, bytes it took), `None` when
/// incomplete.
fn read_compact_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for index in 0..3 {
        let byte = *bytes.get(index)?;
        if index == 2 {
            return Some((length | (usize::from(byte) << 14), 3));
        }
        length |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((length, index + 1));
        }
    }
    None
}

/// Reads Tight rectangles for one connection (its four inflate streams included).
#[derive(Debug)]
pub struct TightDecoder {
    streams: [Decompress; 4],
    /// Inflate only (see [`Decode::set_painting`]).
    skip_pixels: bool,
}

impl Default for TightDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TightDecoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        Self {
            streams: [0, 1, 2, 3].map(|_| Decompress::new(true)),
            skip_pixels: false,
        }
    }
}

/// How a basic-compression rectangle's pixel data is to be read.
enum Filter {
    Copy,
    Palette(Vec<u32>),
    Gradient,
}

impl Decode for TightDecoder {
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError> {
        format.check_true_colour()?;
        if rect.clipped(screen.width(), screen.height()) != rect {
            return Err(RfbError::Malformed("Tight rectangle outside the screen"));
        }
        let Some(&control) = body.first() else {
            return Ok(Decoded::NeedMore);
        };
        let pixel_bytes = CompactPixel::Tight.size(format);
        let resets = control & 0x0f;
        let mut at = 1;
        let (stream, filter) = match control >> 4 {
            0x8 => {
                let Some(pixel) = body.get(at..at + pixel_bytes) else {
                    return Ok(Decoded::NeedMore);
                };
                let colour = CompactPixel::Tight.read(pixel, format);
                self.reset(resets);
                if !self.skip_pixels {
                    screen.fill(rect, colour)?;
                }
                return Ok(Decoded::Done(at + pixel_bytes));
            }
            0x9 => {
                return Err(RfbError::Unsupported(
                    "Tight JPEG rectangles (the hub asks losslessly)",
                ));
            }
            0xA => {
                return Err(RfbError::Unsupported(
                    "TightPNG rectangles (the hub asks losslessly)",
                ));
            }
            kind if kind < 0x8 => {
                let stream = usize::from(kind & 0x3);
                if kind & 0x4 == 0 {
                    (stream, Filter::Copy)
                } else {
                    let Some(&filter) = body.get(at) else {
                        return Ok(Decoded::NeedMore);
                    };
                    at += 1;
                    match filter {
                        FILTER_COPY => (stream, Filter::Copy),
                        FILTER_GRADIENT => (stream, Filter::Gradient),
                        FILTER_PALETTE => {
                            let Some(&size) = body.get(at) else {
                                return Ok(Decoded::NeedMore);
                            };
                            at += 1;
                            let colours = usize::from(size) + 1;
                            let Some(entries) = body.get(at..at + colours * pixel_bytes) else {
                                return Ok(Decoded::NeedMore);
                            };
                            at += colours * pixel_bytes;
                            let palette = entries
                                .chunks_exact(pixel_bytes)
                                .map(|pixel| CompactPixel::Tight.read(pixel, format))
                                .collect();
                            (stream, Filter::Palette(palette))
                        }
                        _ => return Err(RfbError::Malformed("Tight filter")),
                    }
                }
            }
            _ => return Err(RfbError::Malformed("Tight compression control")),
        };
        let (width, height) = (usize::from(rect.width), usize::from(rect.height));
        let length = match &filter {
            Filter::Palette(palette) if palette.len() == 2 => width.div_ceil(8) * height,
            Filter::Palette(_) => width * height,
            Filter::Copy | Filter::Gradient => width * height * pixel_bytes,
        };
        let data;
        let inflated;
        if length < MIN_TO_COMPRESS {
            let Some(raw) = body.get(at..at + length) else {
                return Ok(Decoded::NeedMore);
            };
            at += length;
            self.reset(resets);
            data = raw;
        } else {
            let Some((compressed, taken)) = read_compact_length(&body[at..]) else {
                return Ok(Decoded::NeedMore);
            };
            at += taken;
            let Some(input) = body.get(at..at + compressed) else {
                return Ok(Decoded::NeedMore);
            };
            at += compressed;
            self.reset(resets);
            inflated = inflate(&mut self.streams[stream], input, length)?;
            data = &inflated;
        }
        if self.skip_pixels {
            return Ok(Decoded::Done(at));
        }
        let colours = match filter {
            Filter::Copy => data
                .chunks_exact(pixel_bytes)
                .map(|pixel| CompactPixel::Tight.read(pixel, format))
                .collect(),
            Filter::Palette(palette) if palette.len() == 2 => {
                let mut colours = Vec::with_capacity(width * height);
                for row in data.chunks_exact(width.div_ceil(8)) {
                    for x in 0..width {
                        let bit = (row[x / 8] >> (7 - x % 8)) & 1;
                        colours.push(palette[usize::from(bit)]);
                    }
                }
                colours
            }
            Filter::Palette(palette) => data
                .iter()
                .map(|&index| {
                    palette
                        .get(usize::from(index))
                        .copied()
                        .ok_or(RfbError::Malformed("Tight palette index"))
                })
                .collect::<Result<Vec<u32>, RfbError>>()?,
            Filter::Gradient => gradient(data, width, format),
        };
        screen.put_colours(rect, &colours)?;
        Ok(Decoded::Done(at))
    }

    fn set_painting(&mut self, paint: bool) {
        self.skip_pixels = !paint;
    }
}

impl TightDecoder {
    /// Starts the streams whose bits are set in `resets` afresh.
    fn reset(&mut self, resets: u8) {
        for (stream, decompress) in self.streams.iter_mut().enumerate() {
            if resets & (1 << stream) != 0 {
                // A new stream, with an empty window: data from before the reset must not
                // be referred to (as pako, noVNC's zlib, holds it).
                *decompress = Decompress::new(true);
            }
        }
    }
}

fn inflate(stream: &mut Decompress, input: &[u8], expected: usize) -> Result<Vec<u8>, RfbError> {
    let mut output = Vec::with_capacity(expected);
    super::zlib::inflate(stream, input, expected, &mut output)?;
    if output.len() != expected {
        return Err(RfbError::Malformed(
            "Tight zlib data (not the rectangle's length)",
        ));
    }
    Ok(output)
}

/// Undoes the gradient filter: each channel was sent as its difference from
/// `left + above - above-left` (clamped to the channel's range), modulo the range.
fn gradient(data: &[u8], width: usize, format: &PixelFormat) -> Vec<u32> {
    let compact = format.is_depth24_rgb();
    let pixel_bytes = CompactPixel::Tight.size(format);
    let max: [u32; 3] = if compact {
        [255; 3]
    } else {
        format.max.map(u32::from)
    };
    // The channels of one pixel as sent (before prediction is added back).
    let channels = |pixel: &[u8]| -> [u32; 3] {
        if compact {
            return [pixel[0], pixel[1], pixel[2]].map(u32::from);
        }
        let raw = raw_pixel(pixel, format);
        [0, 1, 2].map(|c| raw >> format.shift[c])
    };
    let mut above = vec![[0u32; 3]; width];
    let mut this = vec![[0u32; 3]; width];
    let mut colours = Vec::with_capacity(data.len() / pixel_bytes.max(1));
    for row in data.chunks_exact(width * pixel_bytes) {
        let mut left = [0u32; 3];
        let mut above_left = [0u32; 3];
        for (x, pixel) in row.chunks_exact(pixel_bytes).enumerate() {
            let sent = channels(pixel);
            let mut value = [0u32; 3];
            for c in 0..3 {
                let estimate = (i64::from(left[c]) + i64::from(above[x][c])
                    - i64::from(above_left[c]))
                .clamp(0, i64::from(max[c])) as u32;
                value[c] = sent[c].wrapping_add(estimate) & max[c];
            }
            this[x] = value;
            above_left = above[x];
            left = value;
            colours.push(if compact {
                (value[0] << 16) | (value[1] << 8) | value[2]
            } else {
                (scale(value[0], max[0]) << 16)
                    | (scale(value[1], max[1]) << 8)
                    | scale(value[2], max[2])
            });
        }
        std::mem::swap(&mut above, &mut this);
    }
    colours
}

/// A whole pixel's value in `format`'s byte order.
fn raw_pixel(pixel: &[u8], format: &PixelFormat) -> u32 {
    match (pixel.len(), format.big_endian) {
        (1, _) => u32::from(pixel[0]),
        (2, false) => u32::from(u16::from_le_bytes([pixel[0], pixel[1]])),
        (2, true) => u32::from(u16::from_be_bytes([pixel[0], pixel[1]])),
        (_, false) => u32::from_le_bytes([pixel[0], pixel[1], pixel[2], pixel[3]]),
        (_, true) => u32::from_be_bytes([pixel[0], pixel[1], pixel[2], pixel[3]]),
    }
}

/// A channel value of range 0..=`max` as 0..=255, rounding (as [`PixelFormat::decode_pixel`]).
fn scale(value: u32, max: u32) -> u32 {
    (value * 255 + max / 2) / max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths_take_one_to_three_bytes() {
        for (length, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
            (MAX_COMPACT_LENGTH, &[0xff, 0xff, 0xff]),
        ] {
            let mut out = Vec::new();
            push_compact_length(&mut out, length);
            assert_eq!(out, bytes, "{length}");
            assert_eq!(read_compact_length(&out), Some((length, out.len())));
            assert_eq!(read_compact_length(&out[..out.len() - 1]), None);
        }
    }

    #[test]
    fn a_solid_rectangle_is_one_fill() {
        let rect = Rect {
            x: 1,
            y: 2,
            width: 30,
            height: 20,
        };
        let colours = vec![0x0012_3456; rect.pixels()];
        let mut out = Vec::new();
        let count = TightEncoder::default().encode(
            Pixels::new(rect, &colours),
            &PixelFormat::rgb888(),
            &mut out,
        );
        assert_eq!(count, 1);
        assert_eq!(out[12..], [0x80, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn a_reset_sets_the_bit_of_each_stream_at_its_next_use() {
        let format = PixelFormat::rgb888();
        let rect = Rect {
            x: 0,
            y: 0,
            width: 16,
            height: 8,
        };
        // 16 bytes of bits: through zlib (under 12 they would go as they are).
        let mono: Vec<u32> = (0..128)
            .map(|i| if i % 3 == 0 { 0xffffff } else { 0 })
            .collect();
        let mut encoder = TightEncoder::default();
        let control = |encoder: &mut TightEncoder| {
            let mut out = Vec::new();
            encoder.encode(Pixels::new(rect, &mono), &format, &mut out);
            out[12]
        };
        assert_eq!(control(&mut encoder), 0x50, "stream 1, a filter, no reset");
        encoder.reset_streams();
        assert_eq!(control(&mut encoder), 0x52, "stream 1 reset");
        assert_eq!(control(&mut encoder), 0x50, "once");
    }
}
