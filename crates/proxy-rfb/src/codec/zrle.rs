//! ZRLE (16, RFC 6143 section 7.7.6): the rectangle in 64x64 tiles, left to right and top to
//! bottom, each tile raw (0), solid (1), a packed palette (2 to 16 colours), plain RLE (128)
//! or palette RLE (130 to 255, up to 127 colours), pixels as CPIXELs
//! ([`CompactPixel::Zrle`]: 3 bytes for 32-bit formats whose colour fits three bytes), all of
//! it through one zlib stream per connection; a rectangle's body is a big-endian u32 length
//! and that many bytes of the stream.
//!
//! Choices:
//! - Per tile the encoder counts the colours (up to 127, in a small hash table) and the runs
//!   (which, as the RFC says, go on from one row of a tile to the next), works out the exact
//!   size each subencoding would take from those counts (as TigerVNC and libvncserver
//!   estimate, but exact: a palette run of one pixel is one byte) and writes only the
//!   smallest: solid when the tile has one colour, else the least of raw, plain RLE, palette
//!   RLE and packed palette.
//! - Colours are compared as the hub keeps them (0x00RRGGBB), not after conversion to the
//!   viewer's format: in formats with fewer bits two colours may become the same pixel and
//!   take two palette entries, which costs a little size, never correctness.
//! - Each rectangle ends with a sync flush. Compression levels 0 to 9 are zlib's levels one
//!   for one (see [`super::zlib`]); noVNC asks 2.
//! - The decoder waits for the whole body ([`Decoded::NeedMore`] leaves the inflater as it
//!   was), inflates at most what the rectangle's tiles could take, decodes all tiles before it
//!   paints any, and refuses unknown subencodings (17 to 127, 129), palette indexes beyond the
//!   palette, runs past the end of their tile, data short of the tiles or left over after
//!   them, and broken zlib data ([`RfbError::Malformed`]).
use flate2::{Compress, Decompress};

use super::zlib::{deflate_sync, inflate, length_prefixed, most_compressed, zlib_level};
use super::{CompactPixel, Decode, Decoded, Encode, Pixels, push_rect_header};
use crate::framebuffer::{Framebuffer, Rect};
use crate::server::encoding;
use crate::{PixelFormat, RfbError};

/// The side of a ZRLE tile.
const TILE: u16 = 64;

/// The most colours of a palette RLE tile.
const MAX_PALETTE: usize = 127;

/// CPIXELs of one format, with a shortcut for the hub's own rgb888.
#[derive(Debug, Clone, Copy)]
struct Cpixel {
    format: PixelFormat,
    size: usize,
    native: bool,
}

impl Cpixel {
    fn new(format: &PixelFormat) -> Self {
        Self {
            format: *format,
            size: CompactPixel::Zrle.size(format),
            native: *format == PixelFormat::rgb888(),
        }
    }

    fn push(&self, colour: u32, out: &mut Vec<u8>) {
        if self.native {
            out.extend_from_slice(&colour.to_le_bytes()[..3]);
        } else {
            CompactPixel::Zrle.push(colour, &self.format, out);
        }
    }

    /// The colour of `bytes` (exactly [`Self::size`] long).
    fn read(&self, bytes: &[u8]) -> u32 {
        if self.native {
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0])
        } else {
            CompactPixel::Zrle.read(bytes, &self.format)
        }
    }
}

/// A tile's colours in order of appearance, up to [`MAX_PALETTE`], with a small hash table.
#[derive(Debug, Clone)]
struct Palette {
    colours: Vec<u32>,
    /// Index + 1 of the colour hashed here (0: empty), probed linearly.
    slots: [u8; 256],
}

impl Palette {
    fn new() -> Self {
        Self {
            colours: Vec::with_capacity(MAX_PALETTE),
            slots: [0; 256],
        }
    }

    fn clear(&mut self) {
        self.colours.clear();
        self.slots = [0; 256];
    }

    fn slot(colour: u32) -> usize {
        (colour.wrapping_mul(0x9e37_79b1) >> 24) as usize
    }

    fn index(&self, colour: u32) -> Option<u8> {
        let mut slot = Self::slot(colour);
        loop {
            match self.slots[slot] {
                0 => return None,
                entry if self.colours[usize::from(entry - 1)] == colour => return Some(entry - 1),
                _ => slot = (slot + 1) & 255,
            }
        }
    }

    /// Adds `colour`; false when it is new and the palette is full.
    fn insert(&mut self, colour: u32) -> bool {
        let mut slot = Self::slot(colour);
        loop {
            match self.slots[slot] {
                0 => break,
                entry if self.colours[usize::from(entry - 1)] == colour => return true,
                _ => slot = (slot + 1) & 255,
            }
        }
        if self.colours.len() == MAX_PALETTE {
            return false;
        }
        self.colours.push(colour);
        self.slots[slot] = self.colours.len() as u8;
        true
    }
}

/// The runs of equal colours in a tile: (colour, length).
struct Runs<'a> {
    tile: &'a [u32],
    at: usize,
}

impl Iterator for Runs<'_> {
    type Item = (u32, usize);

    fn next(&mut self) -> Option<(u32, usize)> {
        let &colour = self.tile.get(self.at)?;
        let length = self.tile[self.at..]
            .iter()
            .position(|&other| other != colour)
            .unwrap_or(self.tile.len() - self.at);
        self.at += length;
        Some((colour, length))
    }
}

fn runs(tile: &[u32]) -> Runs<'_> {
    Runs { tile, at: 0 }
}

/// Bytes of a run length (the length minus one in bytes of 255 and a last one below 255).
fn run_length_bytes(length: usize) -> usize {
    (length - 1) / 255 + 1
}

fn push_run_length(length: usize, out: &mut Vec<u8>) {
    let mut rest = length - 1;
    while rest >= 255 {
        out.push(255);
        rest -= 255;
    }
    out.push(rest as u8);
}

/// Bits per packed-palette index for a palette of `size` (2 to 16) colours.
fn packed_bits(size: usize) -> usize {
    match size {
        2 => 1,
        3..=4 => 2,
        _ => 4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subencoding {
    Raw,
    Solid,
    Packed,
    PlainRle,
    PaletteRle,
}

/// Writes ZRLE rectangles through one stream (one encoder per connection).
pub struct ZrleEncoder {
    stream: Compress,
    /// The rectangle's tiles before compression.
    scratch: Vec<u8>,
    /// One tile's colours, row by row.
    tile: Vec<u32>,
    palette: Palette,
}

impl std::fmt::Debug for ZrleEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZrleEncoder")
            .field("total_in", &self.stream.total_in())
            .field("total_out", &self.stream.total_out())
            .finish()
    }
}

impl ZrleEncoder {
    /// A new stream at RFB compression level `compression` (0 to 9, zlib's level).
    pub fn new(compression: u8) -> Self {
        Self {
            stream: Compress::new(zlib_level(compression), true),
            scratch: Vec::new(),
            tile: Vec::with_capacity(usize::from(TILE) * usize::from(TILE)),
            palette: Palette::new(),
        }
    }

    /// Appends the tile in `self.tile` (`width` pixels a row) to `self.scratch`.
    fn encode_tile(&mut self, width: usize, cpixel: &Cpixel) {
        let tile = &self.tile;
        let size = cpixel.size;
        self.palette.clear();
        let (mut full, mut plain, mut palette_runs) = (false, 0, 0);
        for (colour, length) in runs(tile) {
            let length_bytes = run_length_bytes(length);
            plain += size + length_bytes;
            palette_runs += if length == 1 { 1 } else { 1 + length_bytes };
            if !full && !self.palette.insert(colour) {
                full = true;
            }
        }
        let colours = self.palette.colours.len();
        let (mut choice, mut best) = (Subencoding::Raw, tile.len() * size);
        if !full && colours == 1 {
            (choice, best) = (Subencoding::Solid, size);
        }
        if plain < best {
            (choice, best) = (Subencoding::PlainRle, plain);
        }
        if !full && colours > 1 {
            let palette_rle = colours * size + palette_runs;
            if palette_rle < best {
                (choice, best) = (Subencoding::PaletteRle, palette_rle);
            }
            if colours <= 16 {
                let height = tile.len() / width;
                let packed = colours * size + height * (width * packed_bits(colours)).div_ceil(8);
                if packed < best {
                    choice = Subencoding::Packed;
                }
            }
        }
        let out = &mut self.scratch;
        match choice {
            Subencoding::Raw => {
                out.push(0);
                for &colour in tile {
                    cpixel.push(colour, out);
                }
            }
            Subencoding::Solid => {
                out.push(1);
                cpixel.push(tile[0], out);
            }
            Subencoding::PlainRle => {
                out.push(128);
                for (colour, length) in runs(tile) {
                    cpixel.push(colour, out);
                    push_run_length(length, out);
                }
            }
            Subencoding::PaletteRle | Subencoding::Packed => {
                let rle = choice == Subencoding::PaletteRle;
                out.push(colours as u8 + if rle { 128 } else { 0 });
                for &colour in &self.palette.colours {
                    cpixel.push(colour, out);
                }
                let index = |colour| self.palette.index(colour).unwrap_or(0);
                if rle {
                    for (colour, length) in runs(tile) {
                        if length == 1 {
                            out.push(index(colour));
                        } else {
                            out.push(index(colour) | 128);
                            push_run_length(length, out);
                        }
                    }
                } else {
                    let bits = packed_bits(colours);
                    for row in tile.chunks_exact(width) {
                        let (mut byte, mut filled) = (0u8, 0);
                        for &colour in row {
                            byte = (byte << bits) | index(colour);
                            filled += bits;
                            if filled == 8 {
                                out.push(byte);
                                (byte, filled) = (0, 0);
                            }
                        }
                        if filled > 0 {
                            out.push(byte << (8 - filled));
                        }
                    }
                }
            }
        }
    }
}

/// The tiles of a `width` x `height` rectangle: (x, y, width, height) relative to it.
fn tiles(width: u16, height: u16) -> impl Iterator<Item = Rect> {
    (0..height).step_by(usize::from(TILE)).flat_map(move |y| {
        (0..width).step_by(usize::from(TILE)).map(move |x| Rect {
            x,
            y,
            width: TILE.min(width - x),
            height: TILE.min(height - y),
        })
    })
}

impl Encode for ZrleEncoder {
    fn encoding(&self) -> i32 {
        encoding::ZRLE
    }

    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16 {
        push_rect_header(out, pixels.rect, encoding::ZRLE);
        let cpixel = Cpixel::new(format);
        self.scratch.clear();
        for area in tiles(pixels.rect.width, pixels.rect.height) {
            self.tile.clear();
            for y in area.y..area.y + area.height {
                let row = pixels.row(y);
                self.tile
                    .extend_from_slice(&row[usize::from(area.x)..usize::from(area.x + area.width)]);
            }
            self.encode_tile(usize::from(area.width), &cpixel);
        }
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        deflate_sync(&mut self.stream, &self.scratch, out);
        let length = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
        out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        if self.scratch.capacity() > 1 << 22 {
            self.scratch = Vec::new();
        }
        1
    }
}

/// Reads ZRLE rectangles through one stream (one decoder per connection).
pub struct ZrleDecoder {
    stream: Decompress,
    /// The rectangle's tiles, inflated.
    scratch: Vec<u8>,
    /// The rectangle's colours, decoded.
    colours: Vec<u32>,
}

impl std::fmt::Debug for ZrleDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZrleDecoder")
            .field("total_in", &self.stream.total_in())
            .field("total_out", &self.stream.total_out())
            .finish()
    }
}

impl Default for ZrleDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZrleDecoder {
    /// A decoder at the start of a connection's stream.
    pub fn new() -> Self {
        Self {
            stream: Decompress::new(true),
            scratch: Vec::new(),
            colours: Vec::new(),
        }
    }
}

/// The inflated tiles, read front to back.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], RfbError> {
        let bytes = self
            .data
            .get(self.at..self.at.saturating_add(count))
            .ok_or(RfbError::Malformed("ZRLE data shorter than its tiles"))?;
        self.at += count;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, RfbError> {
        Ok(self.take(1)?[0])
    }

    /// A run length of at most `most` pixels.
    fn run_length(&mut self, most: usize) -> Result<usize, RfbError> {
        let mut length = 1;
        loop {
            let byte = self.byte()?;
            length += usize::from(byte);
            if length > most {
                return Err(RfbError::Malformed("ZRLE run past the end of its tile"));
            }
            if byte != 255 {
                return Ok(length);
            }
        }
    }

    fn palette(&mut self, size: usize, cpixel: &Cpixel) -> Result<Vec<u32>, RfbError> {
        let bytes = self.take(size * cpixel.size)?;
        Ok(bytes
            .chunks_exact(cpixel.size)
            .map(|pixel| cpixel.read(pixel))
            .collect())
    }
}

/// Decodes one tile (`width` x `height`) into `tile`.
fn decode_tile(
    reader: &mut Reader<'_>,
    width: usize,
    height: usize,
    cpixel: &Cpixel,
    tile: &mut Vec<u32>,
) -> Result<(), RfbError> {
    let count = width * height;
    tile.clear();
    match reader.byte()? {
        0 => {
            let bytes = reader.take(count * cpixel.size)?;
            tile.extend(
                bytes
                    .chunks_exact(cpixel.size)
                    .map(|pixel| cpixel.read(pixel)),
            );
        }
        1 => {
            let colour = cpixel.read(reader.take(cpixel.size)?);
            tile.resize(count, colour);
        }
        size @ 2..=16 => {
            let palette = reader.palette(usize::from(size), cpixel)?;
            let bits = packed_bits(palette.len());
            let row_bytes = (width * bits).div_ceil(8);
            let mask = (1u8 << bits) - 1;
            for _ in 0..height {
                let row = reader.take(row_bytes)?;
                for x in 0..width {
                    let bit = x * bits;
                    let index = (row[bit / 8] >> (8 - bits - bit % 8)) & mask;
                    let colour = palette.get(usize::from(index)).ok_or(RfbError::Malformed(
                        "ZRLE packed palette index beyond the palette",
                    ))?;
                    tile.push(*colour);
                }
            }
        }
        128 => {
            while tile.len() < count {
                let colour = cpixel.read(reader.take(cpixel.size)?);
                let length = reader.run_length(count - tile.len())?;
                tile.resize(tile.len() + length, colour);
            }
        }
        subencoding @ 130..=255 => {
            let palette = reader.palette(usize::from(subencoding - 128), cpixel)?;
            while tile.len() < count {
                let byte = reader.byte()?;
                let colour = *palette
                    .get(usize::from(byte & 127))
                    .ok_or(RfbError::Malformed(
                        "ZRLE palette RLE index beyond the palette",
                    ))?;
                let length = if byte & 128 == 0 {
                    1
                } else {
                    reader.run_length(count - tile.len())?
                };
                tile.resize(tile.len() + length, colour);
            }
        }
        _ => return Err(RfbError::Malformed("ZRLE subencoding (17 to 127 or 129)")),
    }
    Ok(())
}

impl Decode for ZrleDecoder {
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError> {
        let cpixel = Cpixel::new(format);
        // The most a valid rectangle inflates to: per tile a subencoding byte and a full
        // palette, per pixel a CPIXEL and a run length byte (plain RLE of single pixels).
        let tile_count =
            usize::from(rect.width.div_ceil(TILE)) * usize::from(rect.height.div_ceil(TILE));
        let most = tile_count * (1 + MAX_PALETTE * cpixel.size) + rect.pixels() * (cpixel.size + 1);
        let Some((data, length)) = length_prefixed(
            body,
            most_compressed(most),
            "ZRLE rectangle length (beyond what its tiles could need)",
        )?
        else {
            return Ok(Decoded::NeedMore);
        };
        format.check_true_colour()?;
        if rect.clipped(screen.width(), screen.height()) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        self.scratch.clear();
        let result = inflate(&mut self.stream, data, most, &mut self.scratch).and_then(|()| {
            let mut reader = Reader {
                data: &self.scratch,
                at: 0,
            };
            self.colours.clear();
            self.colours.resize(rect.pixels(), 0);
            let mut tile = Vec::with_capacity(usize::from(TILE) * usize::from(TILE));
            let stride = usize::from(rect.width);
            for area in tiles(rect.width, rect.height) {
                let width = usize::from(area.width);
                decode_tile(
                    &mut reader,
                    width,
                    usize::from(area.height),
                    &cpixel,
                    &mut tile,
                )?;
                for (row, colours) in tile.chunks_exact(width).enumerate() {
                    let start = (usize::from(area.y) + row) * stride + usize::from(area.x);
                    self.colours[start..start + width].copy_from_slice(colours);
                }
            }
            if reader.at != self.scratch.len() {
                return Err(RfbError::Malformed("ZRLE data left over after its tiles"));
            }
            screen.put_colours(rect, &self.colours)
        });
        if self.scratch.capacity() > 1 << 22 || self.colours.capacity() > 1 << 20 {
            (self.scratch, self.colours) = (Vec::new(), Vec::new());
        }
        result.map(|()| Decoded::Done(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;

    fn body_of(tiles: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        deflate_sync(
            &mut Compress::new(Compression::new(6), true),
            tiles,
            &mut data,
        );
        let mut body = (data.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(&data);
        body
    }

    fn decode(width: u16, height: u16, tiles: &[u8]) -> Result<Framebuffer, RfbError> {
        let mut screen = Framebuffer::new(width, height);
        let body = body_of(tiles);
        let decoded = ZrleDecoder::new().decode(
            screen.bounds(),
            &body,
            &PixelFormat::rgb888(),
            &mut screen,
        )?;
        assert_eq!(decoded, Decoded::Done(body.len()));
        Ok(screen)
    }

    fn row(screen: &Framebuffer, y: u16) -> Vec<u32> {
        (0..screen.width())
            .map(|x| screen.pixel(x, y).unwrap())
            .collect()
    }

    #[test]
    fn hand_built_tiles_of_every_subencoding_decode() {
        // Solid blue (CPIXEL little-endian: blue, green, red).
        let screen = decode(3, 1, &[1, 0xff, 0, 0]).unwrap();
        assert_eq!(row(&screen, 0), [0xff; 3]);
        // Raw.
        let screen = decode(2, 1, &[0, 1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(row(&screen, 0), [0x030201, 0x060504]);
        // Packed palette of 2, 3 pixels a row (1 bit each, rows padded): 101, 010.
        let screen = decode(3, 2, &[2, 0, 0, 0, 9, 9, 9, 0b1010_0000, 0b0100_0000]).unwrap();
        assert_eq!(row(&screen, 0), [0x090909, 0, 0x090909]);
        assert_eq!(row(&screen, 1), [0, 0x090909, 0]);
        // Plain RLE: 2 of one colour, then 298 (1 + 255 + 42) of another, over five rows.
        let mut tiles = vec![128, 1, 1, 1, 1, 2, 2, 2, 255, 42];
        let screen = decode(60, 5, &tiles).unwrap();
        assert_eq!(row(&screen, 0)[..3], [0x010101, 0x010101, 0x020202]);
        assert_eq!(row(&screen, 4), vec![0x020202; 60]);
        // Palette RLE: a single pixel of index 1, then index 0 for the rest.
        tiles = vec![130, 5, 5, 5, 7, 7, 7, 1, 128, 2];
        let screen = decode(2, 2, &tiles).unwrap();
        assert_eq!(row(&screen, 0), [0x070707, 0x050505]);
        assert_eq!(row(&screen, 1), [0x050505, 0x050505]);
        // Two tiles across: 64 pixels then 1.
        let screen = decode(65, 1, &[1, 1, 1, 1, 1, 2, 2, 2]).unwrap();
        assert_eq!(
            (screen.pixel(63, 0), screen.pixel(64, 0)),
            (Some(0x010101), Some(0x020202))
        );
    }

    #[test]
    fn sixteen_bit_cpixels_are_whole_pixels() {
        let rgb565 = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            max: [31, 63, 31],
            shift: [11, 5, 0],
        };
        // Solid pure green, big-endian 0x07e0.
        let mut screen = Framebuffer::new(2, 1);
        let body = body_of(&[1, 0x07, 0xe0]);
        let decoded = ZrleDecoder::new().decode(screen.bounds(), &body, &rgb565, &mut screen);
        assert_eq!(decoded, Ok(Decoded::Done(body.len())));
        assert_eq!(screen.pixel(1, 0), Some(0x00ff00));
    }

    #[test]
    fn bad_tiles_are_errors() {
        for (width, tiles) in [
            // Packed index 1 of... a palette of 3 uses index 3.
            (2u16, &[3u8, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0b1100_0000][..]),
            // Palette RLE index 2 of 2.
            (2, &[130, 0, 0, 0, 1, 1, 1, 2, 0]),
            // A run of 3 in a tile of 2.
            (2, &[128, 0, 0, 0, 2]),
            (2, &[130, 0, 0, 0, 1, 1, 1, 129, 2]),
            // Unknown subencodings.
            (2, &[17]),
            (2, &[129, 0, 0, 0, 0]),
            // Short and left over.
            (2, &[0, 1, 2, 3]),
            (2, &[1, 1, 2, 3, 4]),
            (2, &[]),
        ] {
            assert!(decode(width, 1, tiles).is_err(), "{tiles:?}");
        }
    }

    #[test]
    fn the_encoder_picks_the_cheapest_subencoding() {
        let format = PixelFormat::rgb888();
        let mut encoder = ZrleEncoder::new(0);
        let cpixel = Cpixel::new(&format);
        let mut subencoding = |tile: Vec<u32>, width: usize| {
            encoder.scratch.clear();
            encoder.tile = tile;
            encoder.encode_tile(width, &cpixel);
            encoder.scratch[0]
        };
        assert_eq!(subencoding(vec![5; 64 * 64], 64), 1);
        let two: Vec<u32> = (0..64 * 64).map(|i| (i % 3 == 0) as u32).collect();
        assert_eq!(subencoding(two, 64), 2);
        let stripes: Vec<u32> = (0..64 * 64).map(|i| (i / 7 % 20) as u32).collect();
        assert_eq!(subencoding(stripes, 64), 128 + 20);
        let runs: Vec<u32> = (0..64 * 64).map(|i| (i / 16) as u32).collect();
        assert_eq!(subencoding(runs, 64), 128);
        let noise: Vec<u32> = (0..64 * 64)
            .map(|i: u32| i.wrapping_mul(2654435761))
            .collect();
        assert_eq!(subencoding(noise, 64), 0);
    }
}
