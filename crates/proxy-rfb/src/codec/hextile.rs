//! Hextile (5, RFC 6143 section 7.7.4): the rectangle in 16x16 tiles, left to right and top to
//! bottom, each either raw pixels or a background colour with up to 255 subrectangles on it,
//! all of one foreground colour or each with its own; pixels are full pixels of the viewer's
//! format. No compression state: a rectangle stands alone.
//!
//! Choices:
//! - The encoder takes the tile's most frequent colour as its background (the current one on
//!   a tie) and covers every other pixel with subrectangles found greedily: from the first
//!   uncovered pixel, the larger of the widest-then-tallest and the tallest-then-widest block
//!   of its colour (a block may run over pixels of its colour already covered, which paints
//!   them again in the same colour). Two-colour tiles use the foreground, others coloured
//!   subrectangles. A tile goes raw when that is smaller, or when it would need more than
//!   255 subrectangles.
//! - Background and foreground are sent only when they differ from the last tile's, within a
//!   rectangle. Like libvncserver and TigerVNC the encoder sends both again after a raw tile
//!   and the foreground again after a coloured-subrectangle tile, where the RFC's wording
//!   leaves doubt; the decoder, like noVNC, keeps the last colours it was given.
//! - The decoder first walks the tiles' headers to find where the body ends
//!   ([`Decoded::NeedMore`] until it is all there), then decodes every tile before it paints.
//!   A non-raw tile before any background, foreground subrectangles before any foreground and
//!   subrectangles past their tile are [`RfbError::Malformed`]; the subencoding's unused high
//!   bits (32, 64, 128) are ignored, as the session's parser does.
use super::{Decode, Decoded, Encode, Pixels, push_rect_header};
use crate::framebuffer::{Framebuffer, Rect};
use crate::server::encoding;
use crate::{PixelFormat, RfbError};

const TILE: u16 = 16;

const RAW: u8 = 1;
const BACKGROUND: u8 = 2;
const FOREGROUND: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;

/// The tiles of a `width` x `height` rectangle, relative to it.
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

fn push_pixel(colour: u32, format: &PixelFormat, native: bool, out: &mut Vec<u8>) {
    if native {
        out.extend_from_slice(&colour.to_le_bytes());
    } else {
        format.encode_pixel(colour, out);
    }
}

/// Writes Hextile rectangles.
#[derive(Debug, Clone, Copy, Default)]
pub struct HextileEncoder;

/// One subrectangle: its colour, then x and y, then width - 1 and height - 1, a nibble each.
#[derive(Debug, Clone, Copy)]
struct Subrect {
    colour: u32,
    position: u8,
    size: u8,
}

/// The colours carried from one tile to the next.
#[derive(Debug, Clone, Copy, Default)]
struct Carried {
    background: Option<u32>,
    foreground: Option<u32>,
}

/// Finds the subrectangles covering every pixel of `tile` (`width` a row) that is not
/// `background`; `None` when there would be more than `most`.
fn subrects(
    tile: &[u32],
    width: usize,
    background: u32,
    most: usize,
    found: &mut Vec<Subrect>,
) -> Option<()> {
    found.clear();
    let height = tile.len() / width;
    let mut covered = [false; 256];
    let at = |x: usize, y: usize| tile[y * width + x];
    for y in 0..height {
        for x in 0..width {
            let colour = at(x, y);
            if colour == background || covered[y * width + x] {
                continue;
            }
            if found.len() == most {
                return None;
            }
            // Widest first, then as tall as that width allows.
            let wide = (x..width).take_while(|&x2| at(x2, y) == colour).count();
            let wide_tall = (y..height)
                .take_while(|&y2| (x..x + wide).all(|x2| at(x2, y2) == colour))
                .count();
            // Tallest first, then as wide as that height allows.
            let tall = (y..height).take_while(|&y2| at(x, y2) == colour).count();
            let tall_wide = (x..width)
                .take_while(|&x2| (y..y + tall).all(|y2| at(x2, y2) == colour))
                .count();
            let (w, h) = if wide * wide_tall >= tall * tall_wide {
                (wide, wide_tall)
            } else {
                (tall_wide, tall)
            };
            for row in covered[y * width..].chunks_mut(width).take(h) {
                row[x..x + w].fill(true);
            }
            found.push(Subrect {
                colour,
                position: ((x as u8) << 4) | y as u8,
                size: (((w - 1) as u8) << 4) | (h - 1) as u8,
            });
        }
    }
    Some(())
}

/// Appends one tile (`width` a row) and updates the carried colours.
fn encode_tile(
    tile: &[u32],
    width: usize,
    format: &PixelFormat,
    carried: &mut Carried,
    found: &mut Vec<Subrect>,
    out: &mut Vec<u8>,
) {
    let native = *format == PixelFormat::rgb888();
    let bpp = format.bytes_per_pixel() as usize;
    let raw_size = tile.len() * bpp;
    // The most frequent colour (the carried background on a tie) and how many there are.
    let mut sorted = [0u32; 256];
    let sorted = &mut sorted[..tile.len()];
    sorted.copy_from_slice(tile);
    sorted.sort_unstable();
    let (mut background, mut best, mut distinct) = (sorted[0], 0, 0);
    for run in sorted.chunk_by(|a, b| a == b) {
        distinct += 1;
        if run.len() > best || (run.len() == best && Some(run[0]) == carried.background) {
            (background, best) = (run[0], run.len());
        }
    }
    let foreground = (distinct == 2).then(|| {
        *sorted
            .iter()
            .find(|&&c| c != background)
            .unwrap_or(&background)
    });
    let per_subrect = if foreground.is_some() { 2 } else { 2 + bpp };
    let mut subencoding = 0;
    let mut size = 0;
    if carried.background != Some(background) {
        subencoding |= BACKGROUND;
        size += bpp;
    }
    if let Some(foreground) = foreground
        && carried.foreground != Some(foreground)
    {
        subencoding |= FOREGROUND;
        size += bpp;
    }
    // Room for subrectangles before raw is as small.
    let most = if distinct == 1 {
        0
    } else {
        raw_size.saturating_sub(size + 1) / per_subrect
    };
    let fits = distinct == 1 || subrects(tile, width, background, most.min(255), found).is_some();
    if !fits {
        out.push(RAW);
        for &colour in tile {
            push_pixel(colour, format, native, out);
        }
        *carried = Carried::default();
        return;
    }
    if distinct > 1 {
        subencoding |= ANY_SUBRECTS;
        if foreground.is_none() {
            subencoding |= SUBRECTS_COLOURED;
        }
    }
    out.push(subencoding);
    if subencoding & BACKGROUND != 0 {
        push_pixel(background, format, native, out);
    }
    carried.background = Some(background);
    if let Some(foreground) = foreground {
        if subencoding & FOREGROUND != 0 {
            push_pixel(foreground, format, native, out);
        }
        carried.foreground = Some(foreground);
    }
    if distinct > 1 {
        out.push(found.len() as u8);
        for subrect in found.iter() {
            if foreground.is_none() {
                push_pixel(subrect.colour, format, native, out);
            }
            out.extend_from_slice(&[subrect.position, subrect.size]);
        }
        if foreground.is_none() {
            carried.foreground = None;
        }
    }
}

impl Encode for HextileEncoder {
    fn encoding(&self) -> i32 {
        encoding::HEXTILE
    }

    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16 {
        push_rect_header(out, pixels.rect, encoding::HEXTILE);
        let mut carried = Carried::default();
        let mut found = Vec::new();
        let mut tile = Vec::with_capacity(256);
        for area in tiles(pixels.rect.width, pixels.rect.height) {
            tile.clear();
            for y in area.y..area.y + area.height {
                tile.extend_from_slice(
                    &pixels.row(y)[usize::from(area.x)..usize::from(area.x + area.width)],
                );
            }
            encode_tile(
                &tile,
                usize::from(area.width),
                format,
                &mut carried,
                &mut found,
                out,
            );
        }
        1
    }

    fn restart(&mut self) -> bool {
        true
    }

    fn mark_join(&mut self) -> bool {
        true
    }
}

/// Reads Hextile rectangles.
#[derive(Debug, Clone, Copy, Default)]
pub struct HextileDecoder;

/// Where the body of a `rect` Hextile rectangle ends, or `None` while `body` is short of it.
fn body_length(rect: Rect, body: &[u8], bpp: usize) -> Option<usize> {
    let mut at = 0;
    for area in tiles(rect.width, rect.height) {
        let subencoding = *body.get(at)?;
        at += 1;
        if subencoding & RAW != 0 {
            at += area.pixels() * bpp;
            continue;
        }
        at += usize::from(subencoding & BACKGROUND != 0) * bpp
            + usize::from(subencoding & FOREGROUND != 0) * bpp;
        if subencoding & ANY_SUBRECTS != 0 {
            let count = usize::from(*body.get(at)?);
            at += 1;
            let per = if subencoding & SUBRECTS_COLOURED != 0 {
                2 + bpp
            } else {
                2
            };
            at += count * per;
        }
    }
    (at <= body.len()).then_some(at)
}

/// A complete body, read front to back.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    format: &'a PixelFormat,
    bpp: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, RfbError> {
        let byte = *self
            .body
            .get(self.at)
            .ok_or(RfbError::Malformed("Hextile body"))?;
        self.at += 1;
        Ok(byte)
    }

    fn pixel(&mut self) -> Result<u32, RfbError> {
        let bytes = self
            .body
            .get(self.at..self.at + self.bpp)
            .ok_or(RfbError::Malformed("Hextile body"))?;
        self.at += self.bpp;
        Ok(self.format.decode_pixel(bytes))
    }
}

impl Decode for HextileDecoder {
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError> {
        let bpp = format.bytes_per_pixel() as usize;
        let Some(length) = body_length(rect, body, bpp) else {
            return Ok(Decoded::NeedMore);
        };
        format.check_true_colour()?;
        if rect.clipped(screen.width(), screen.height()) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        let mut reader = Reader {
            body: &body[..length],
            at: 0,
            format,
            bpp,
        };
        let stride = usize::from(rect.width);
        let mut colours = vec![0u32; rect.pixels()];
        let mut carried = Carried::default();
        for area in tiles(rect.width, rect.height) {
            let mut paint = |x: usize, y: usize, width: usize, height: usize, colour: u32| {
                for row in 0..height {
                    let start = (usize::from(area.y) + y + row) * stride + usize::from(area.x) + x;
                    colours[start..start + width].fill(colour);
                }
            };
            let subencoding = reader.byte()?;
            if subencoding & RAW != 0 {
                for y in 0..usize::from(area.height) {
                    for x in 0..usize::from(area.width) {
                        let colour = reader.pixel()?;
                        paint(x, y, 1, 1, colour);
                    }
                }
                continue;
            }
            if subencoding & BACKGROUND != 0 {
                carried.background = Some(reader.pixel()?);
            }
            if subencoding & FOREGROUND != 0 {
                carried.foreground = Some(reader.pixel()?);
            }
            let background = carried.background.ok_or(RfbError::Malformed(
                "Hextile tile without a background colour",
            ))?;
            let (width, height) = (usize::from(area.width), usize::from(area.height));
            paint(0, 0, width, height, background);
            if subencoding & ANY_SUBRECTS == 0 {
                continue;
            }
            for _ in 0..reader.byte()? {
                let colour = if subencoding & SUBRECTS_COLOURED != 0 {
                    reader.pixel()?
                } else {
                    carried.foreground.ok_or(RfbError::Malformed(
                        "Hextile subrectangle without a foreground colour",
                    ))?
                };
                let (position, size) = (reader.byte()?, reader.byte()?);
                let (x, y) = (usize::from(position >> 4), usize::from(position & 15));
                let (w, h) = (usize::from(size >> 4) + 1, usize::from(size & 15) + 1);
                if x + w > width || y + h > height {
                    return Err(RfbError::Malformed("Hextile subrectangle outside its tile"));
                }
                paint(x, y, w, h, colour);
            }
        }
        screen.put_colours(rect, &colours)?;
        Ok(Decoded::Done(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(width: u16, height: u16, body: &[u8]) -> Result<Framebuffer, RfbError> {
        let mut screen = Framebuffer::new(width, height);
        let format = PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            big_endian: false,
            true_colour: true,
            max: [7, 7, 3],
            shift: [0, 3, 6],
        };
        let decoded = HextileDecoder.decode(screen.bounds(), body, &format, &mut screen)?;
        assert_eq!(decoded, Decoded::Done(body.len()));
        Ok(screen)
    }

    #[test]
    fn hand_built_tiles_decode() {
        // Tile 1: background 7 (red), a foreground 0xc0 (blue) subrect at (1, 0) 2x1.
        // Tile 2 (x 16): background carried, a coloured (0x38, green) subrect at (0, 1).
        let body = [
            BACKGROUND | FOREGROUND | ANY_SUBRECTS,
            7,
            0xc0,
            1,
            0x10,
            0x10,
            ANY_SUBRECTS | SUBRECTS_COLOURED,
            1,
            0x38,
            0x01,
            0x00,
        ];
        let screen = decode(17, 2, &body).unwrap();
        let row = |y| {
            (0..17)
                .map(|x| screen.pixel(x, y).unwrap())
                .collect::<Vec<_>>()
        };
        let (red, green, blue) = (0xff0000, 0x00ff00, 0x0000ff);
        let mut expected = vec![red; 17];
        expected[1..3].fill(blue);
        assert_eq!(row(0), expected);
        let mut expected = vec![red; 17];
        expected[16] = green;
        assert_eq!(row(1), expected);
        // A raw tile, then a tile on the background carried from before it.
        let mut body = vec![BACKGROUND, 7, RAW];
        body.extend_from_slice(&[0xc0; 16]);
        body.push(0);
        let screen = decode(48, 1, &body).unwrap();
        let colours: Vec<u32> = (0..48).map(|x| screen.pixel(x, 0).unwrap()).collect();
        assert_eq!(colours[..16], [red; 16]);
        assert_eq!(colours[16..32], [blue; 16]);
        assert_eq!(colours[32..], [red; 16]);
    }

    #[test]
    fn bad_tiles_are_errors() {
        for body in [
            &[0u8][..],
            &[ANY_SUBRECTS | BACKGROUND, 1, 1, 0x00, 0x00],
            &[
                ANY_SUBRECTS | BACKGROUND | SUBRECTS_COLOURED,
                1,
                1,
                2,
                0xf0,
                0x10,
            ],
            &[ANY_SUBRECTS | BACKGROUND | FOREGROUND, 1, 2, 1, 0x01, 0x01],
        ] {
            assert!(decode(16, 2, body).is_err(), "{body:?}");
        }
    }
}
