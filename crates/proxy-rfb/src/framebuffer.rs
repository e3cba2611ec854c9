//! The screen a shared console keeps (issue 16's hub): the upstream's updates are applied to
//! it, and each viewer is sent what changed since its last update, in its own pixel format.
//!
//! - [`Framebuffer`] holds the pixels as 0x00RRGGBB words, whatever format they arrived in.
//!   [`Framebuffer::put_pixels`] decodes a rectangle of Raw pixel data in any true-colour
//!   [`PixelFormat`]; [`Framebuffer::copy_rect`] applies a CopyRect; [`Framebuffer::resize`]
//!   a desktop size change (the new area is black).
//! - [`Damage`] is one viewer's set of changed areas, as the VM reported them (merged where
//!   they overlap), at most [`MAX_DAMAGE_RECTS`] of them, so that a slow viewer's pending
//!   updates merge into a few coarser rectangles instead of growing without bound.
//! - [`Framebuffer::encode_raw`] writes a rectangle as Raw pixel data in a viewer's format.
//!
//! ```
//! use proxy_rfb::framebuffer::{Damage, Framebuffer, Rect};
//! use proxy_rfb::PixelFormat;
//!
//! let format = PixelFormat::rgb888();
//! let mut screen = Framebuffer::new(4, 2);
//! let red = [0x00, 0x00, 0xff, 0x00]; // 0x00ff0000 little-endian: red
//! let area = Rect { x: 1, y: 0, width: 1, height: 1 };
//! screen.put_pixels(area, &red, &format).unwrap();
//! let mut damage = Damage::new(4, 2);
//! damage.mark(area);
//! let rects = damage.take_rects();
//! assert_eq!(rects, [area]); // as small as it was reported
//! let mut out = Vec::new();
//! screen.encode_raw(area, &format, &mut out);
//! assert_eq!(out, red);
//! ```
use crate::{PixelFormat, RfbError};

/// The largest screen a hub keeps (8K); beyond it a desktop size is refused.
pub const MAX_SIDE: u16 = 8192;

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
}

impl Rect {
    /// The rectangle cut to a `width` x `height` screen (empty when it lies outside).
    pub fn clipped(self, width: u16, height: u16) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Rect {
            x,
            y,
            width: self.width.min(width - x),
            height: self.height.min(height - y),
        }
    }

    /// Whether it covers no pixel.
    pub fn is_empty(self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// How many pixels it covers.
    pub fn pixels(self) -> usize {
        usize::from(self.width) * usize::from(self.height)
    }
}

impl PixelFormat {
    /// 32 bits per pixel, depth 24, little-endian, true colour, 8 bits each with red at 16,
    /// green at 8 and blue at 0: noVNC's default and what a hub asks its upstream for.
    pub fn rgb888() -> PixelFormat {
        PixelFormat {
            bits_per_pixel: 32,
            depth: 24,
            big_endian: false,
            true_colour: true,
            max: [255, 255, 255],
            shift: [16, 8, 0],
        }
    }

    /// Whether every colour fits in three bytes with 8 bits per channel (32 bits per pixel,
    /// depth 24, maxima 255): Tight's TPIXEL and ZRLE's CPIXEL are then 3 bytes.
    pub fn is_depth24_rgb(&self) -> bool {
        self.bits_per_pixel == 32 && self.depth == 24 && self.max == [255, 255, 255]
    }

    /// Checks the format is one a hub can decode and encode (true colour, sane maxima).
    pub fn check_true_colour(&self) -> Result<(), RfbError> {
        if !self.true_colour {
            return Err(RfbError::Unsupported("colour-map pixel formats"));
        }
        if self.max.contains(&0) || self.shift.iter().any(|&shift| shift >= self.bits_per_pixel) {
            return Err(RfbError::Malformed(
                "pixel format (colour maxima or shifts)",
            ));
        }
        Ok(())
    }

    /// The 0x00RRGGBB colour of one pixel in this format (`bytes`: one pixel's
    /// `bits_per_pixel / 8` bytes).
    pub fn decode_pixel(&self, bytes: &[u8]) -> u32 {
        let raw = match (bytes.len(), self.big_endian) {
            (1, _) => u32::from(bytes[0]),
            (2, false) => u32::from(u16::from_le_bytes([bytes[0], bytes[1]])),
            (2, true) => u32::from(u16::from_be_bytes([bytes[0], bytes[1]])),
            (_, false) => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            (_, true) => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        };
        let channel = |index: usize| {
            let max = u32::from(self.max[index]);
            let value = (raw >> self.shift[index]) & max;
            // Scale to 0..=255, rounding.
            (value * 255 + max / 2) / max
        };
        (channel(0) << 16) | (channel(1) << 8) | channel(2)
    }

    /// One 0x00RRGGBB colour as this format's pixel bytes, appended to `out`.
    pub fn encode_pixel(&self, colour: u32, out: &mut Vec<u8>) {
        let channel = |index: usize, value: u32| {
            let max = u32::from(self.max[index]);
            ((value * max + 127) / 255) << self.shift[index]
        };
        let raw = channel(0, (colour >> 16) & 0xff)
            | channel(1, (colour >> 8) & 0xff)
            | channel(2, colour & 0xff);
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(raw as u8),
            (16, false) => out.extend_from_slice(&(raw as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(raw as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&raw.to_le_bytes()),
            (_, true) => out.extend_from_slice(&raw.to_be_bytes()),
        }
    }
}

/// A screen's pixels, 0x00RRGGBB each, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u16,
    height: u16,
    pixels: Vec<u32>,
}

impl Framebuffer {
    /// A black screen of `width` x `height` (each at most [`MAX_SIDE`]).
    pub fn new(width: u16, height: u16) -> Self {
        let (width, height) = (width.min(MAX_SIDE), height.min(MAX_SIDE));
        Self {
            width,
            height,
            pixels: vec![0; usize::from(width) * usize::from(height)],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// The whole screen.
    pub fn bounds(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        }
    }

    /// The colour at (x, y), 0x00RRGGBB.
    pub fn pixel(&self, x: u16, y: u16) -> Option<u32> {
        (x < self.width && y < self.height)
            .then(|| self.pixels[usize::from(y) * usize::from(self.width) + usize::from(x)])
    }

    /// A new desktop size: what stays on screen keeps its pixels, the rest is black.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<(), RfbError> {
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(RfbError::Unsupported("desktops larger than 8192x8192"));
        }
        let mut pixels = vec![0; usize::from(width) * usize::from(height)];
        let (keep_width, keep_height) = (width.min(self.width), height.min(self.height));
        for row in 0..usize::from(keep_height) {
            let from = row * usize::from(self.width);
            let to = row * usize::from(width);
            pixels[to..to + usize::from(keep_width)]
                .copy_from_slice(&self.pixels[from..from + usize::from(keep_width)]);
        }
        *self = Self {
            width,
            height,
            pixels,
        };
        Ok(())
    }

    /// Writes a rectangle of Raw pixel data in `format` (rows top to bottom, `rect.width`
    /// pixels each). The rectangle must lie on the screen and `data` hold exactly its pixels.
    pub fn put_pixels(
        &mut self,
        rect: Rect,
        data: &[u8],
        format: &PixelFormat,
    ) -> Result<(), RfbError> {
        format.check_true_colour()?;
        if rect.clipped(self.width, self.height) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        let bytes_per_pixel = usize::from(format.bits_per_pixel / 8);
        if data.len() != rect.pixels() * bytes_per_pixel {
            return Err(RfbError::Malformed("raw rectangle length"));
        }
        if rect.is_empty() {
            return Ok(());
        }
        // The hub asks for rgb888, whose little-endian words are the stored colours already.
        let native = *format == PixelFormat::rgb888();
        for (row, source) in data
            .chunks_exact(usize::from(rect.width) * bytes_per_pixel)
            .enumerate()
        {
            let start = (usize::from(rect.y) + row) * usize::from(self.width) + usize::from(rect.x);
            let target = &mut self.pixels[start..start + usize::from(rect.width)];
            for (pixel, bytes) in target.iter_mut().zip(source.chunks_exact(bytes_per_pixel)) {
                *pixel = if native {
                    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0])
                } else {
                    format.decode_pixel(bytes)
                };
            }
        }
        Ok(())
    }

    /// Writes `colours` (0x00RRGGBB, row by row, exactly `rect`'s pixels) to `rect`, which
    /// must lie on the screen.
    pub fn put_colours(&mut self, rect: Rect, colours: &[u32]) -> Result<(), RfbError> {
        if rect.clipped(self.width, self.height) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        if colours.len() != rect.pixels() {
            return Err(RfbError::Malformed("rectangle length"));
        }
        if rect.is_empty() {
            return Ok(());
        }
        for (row, source) in colours.chunks_exact(usize::from(rect.width)).enumerate() {
            let start = (usize::from(rect.y) + row) * usize::from(self.width) + usize::from(rect.x);
            self.pixels[start..start + usize::from(rect.width)].copy_from_slice(source);
        }
        Ok(())
    }

    /// Paints `rect` (on the screen) in one colour.
    pub fn fill(&mut self, rect: Rect, colour: u32) -> Result<(), RfbError> {
        if rect.clipped(self.width, self.height) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        for row in 0..usize::from(rect.height) {
            let start = (usize::from(rect.y) + row) * usize::from(self.width) + usize::from(rect.x);
            self.pixels[start..start + usize::from(rect.width)].fill(colour);
        }
        Ok(())
    }

    /// A copy of `rect`'s colours (cut to the screen), row by row: what an encoder works on
    /// outside the hub's lock.
    pub fn colours(&self, rect: Rect) -> Vec<u32> {
        let rect = rect.clipped(self.width, self.height);
        let mut colours = Vec::with_capacity(rect.pixels());
        for row in 0..usize::from(rect.height) {
            let start = (usize::from(rect.y) + row) * usize::from(self.width) + usize::from(rect.x);
            colours.extend_from_slice(&self.pixels[start..start + usize::from(rect.width)]);
        }
        colours
    }

    /// Copies the area of `rect`'s size at (`source_x`, `source_y`) to `rect` (CopyRect), as if
    /// through a temporary copy (the areas may overlap).
    pub fn copy_rect(&mut self, rect: Rect, source_x: u16, source_y: u16) -> Result<(), RfbError> {
        let source = Rect {
            x: source_x,
            y: source_y,
            ..rect
        };
        if rect.clipped(self.width, self.height) != rect
            || source.clipped(self.width, self.height) != source
        {
            return Err(RfbError::Malformed("copy rectangle outside the screen"));
        }
        let width = usize::from(self.width);
        let rows: Vec<usize> = if source_y < rect.y {
            (0..usize::from(rect.height)).rev().collect()
        } else {
            (0..usize::from(rect.height)).collect()
        };
        for row in rows {
            let from = (usize::from(source_y) + row) * width + usize::from(source_x);
            let to = (usize::from(rect.y) + row) * width + usize::from(rect.x);
            self.pixels
                .copy_within(from..from + usize::from(rect.width), to);
        }
        Ok(())
    }

    /// Appends `rect` (on the screen) as Raw pixel data in `format`.
    pub fn encode_raw(&self, rect: Rect, format: &PixelFormat, out: &mut Vec<u8>) {
        let rect = rect.clipped(self.width, self.height);
        out.reserve(rect.pixels() * usize::from(format.bits_per_pixel / 8));
        // noVNC's format is rgb888: the stored colours are its little-endian words.
        let native = *format == PixelFormat::rgb888();
        for row in 0..usize::from(rect.height) {
            let start = (usize::from(rect.y) + row) * usize::from(self.width) + usize::from(rect.x);
            let colours = &self.pixels[start..start + usize::from(rect.width)];
            if native {
                for &colour in colours {
                    out.extend_from_slice(&colour.to_le_bytes());
                }
            } else {
                for &colour in colours {
                    format.encode_pixel(colour, out);
                }
            }
        }
    }
}

/// One viewer's changed areas, as the rectangles the VM reported (so a blinking cursor costs
/// a viewer what it costs the VM), merged where they overlap and kept disjoint. At most
/// [`MAX_DAMAGE_RECTS`] are kept: beyond, the two whose bounding box adds the fewest unchanged
/// pixels merge, so a viewer that misses many updates holds a few coarser rectangles, never a
/// growing list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    width: u16,
    height: u16,
    rects: Vec<Rect>,
}

/// Most rectangles one [`Damage`] keeps.
pub const MAX_DAMAGE_RECTS: usize = 24;

impl Rect {
    /// The smallest rectangle holding both.
    pub fn union(self, other: Rect) -> Rect {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = (u32::from(self.x) + u32::from(self.width))
            .max(u32::from(other.x) + u32::from(other.width));
        let bottom = (u32::from(self.y) + u32::from(self.height))
            .max(u32::from(other.y) + u32::from(other.height));
        Rect {
            x,
            y,
            width: (right - u32::from(x)) as u16,
            height: (bottom - u32::from(y)) as u16,
        }
    }

    /// Whether the two share a pixel.
    pub fn overlaps(self, other: Rect) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && u32::from(self.x) < u32::from(other.x) + u32::from(other.width)
            && u32::from(other.x) < u32::from(self.x) + u32::from(self.width)
            && u32::from(self.y) < u32::from(other.y) + u32::from(other.height)
            && u32::from(other.y) < u32::from(self.y) + u32::from(self.height)
    }

    /// Pixels the union of the two covers that neither does.
    fn waste(self, other: Rect) -> usize {
        self.union(other)
            .pixels()
            .saturating_sub(self.pixels() + other.pixels())
    }
}

impl Damage {
    /// Nothing changed yet on a `width` x `height` screen.
    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width,
            height,
            rects: Vec::new(),
        }
    }

    /// Everything on a `width` x `height` screen changed (a new viewer, a resize).
    pub fn everything(width: u16, height: u16) -> Self {
        let mut damage = Self::new(width, height);
        damage.mark(Rect {
            x: 0,
            y: 0,
            width,
            height,
        });
        damage
    }

    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// The changed rectangles, without taking them.
    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    /// Marks `rect` changed.
    pub fn mark(&mut self, rect: Rect) {
        let rect = rect.clipped(self.width, self.height);
        if rect.is_empty() {
            return;
        }
        self.insert(rect);
        while self.rects.len() > MAX_DAMAGE_RECTS {
            let mut best = (usize::MAX, 0, 1);
            for i in 0..self.rects.len() {
                for j in i + 1..self.rects.len() {
                    let waste = self.rects[i].waste(self.rects[j]);
                    if waste < best.0 {
                        best = (waste, i, j);
                    }
                }
            }
            let (_, i, j) = best;
            let merged = self.rects[i].union(self.rects[j]);
            self.rects.swap_remove(j);
            self.rects.swap_remove(i);
            self.insert(merged);
        }
    }

    /// Adds `rect`, merging it with every rectangle it overlaps (and with neighbours when the
    /// union wastes nothing) until the list is disjoint again.
    fn insert(&mut self, mut rect: Rect) {
        while let Some(index) = self
            .rects
            .iter()
            .position(|&kept| kept.overlaps(rect) || kept.waste(rect) == 0)
        {
            rect = rect.union(self.rects.swap_remove(index));
        }
        self.rects.push(rect);
    }

    /// The changed areas (disjoint, each on the screen), and nothing changed afterwards.
    pub fn take_rects(&mut self) -> Vec<Rect> {
        std::mem::take(&mut self.rects)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bgr565_big_endian() -> PixelFormat {
        PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            max: [31, 63, 31],
            shift: [0, 5, 11],
        }
    }

    #[test]
    fn pixels_convert_between_formats() {
        let mut screen = Framebuffer::new(2, 1);
        let rect = Rect {
            x: 0,
            y: 0,
            width: 2,
            height: 1,
        };
        // Pure red and pure blue in 565 with blue high, big-endian.
        let red = 31u16;
        let blue = 31u16 << 11;
        let data: Vec<u8> = [red, blue].iter().flat_map(|p| p.to_be_bytes()).collect();
        screen
            .put_pixels(rect, &data, &bgr565_big_endian())
            .unwrap();
        assert_eq!(screen.pixel(0, 0), Some(0x00ff_0000));
        assert_eq!(screen.pixel(1, 0), Some(0x0000_00ff));
        let mut out = Vec::new();
        screen.encode_raw(rect, &PixelFormat::rgb888(), &mut out);
        assert_eq!(out, [0, 0, 0xff, 0, 0xff, 0, 0, 0]);
        let mut back = Vec::new();
        screen.encode_raw(rect, &bgr565_big_endian(), &mut back);
        assert_eq!(back, data);
    }

    #[test]
    fn bad_rectangles_and_formats_are_refused() {
        let mut screen = Framebuffer::new(4, 4);
        let format = PixelFormat::rgb888();
        let outside = Rect {
            x: 3,
            y: 0,
            width: 2,
            height: 1,
        };
        assert!(screen.put_pixels(outside, &[0; 8], &format).is_err());
        let rect = Rect {
            x: 0,
            y: 0,
            width: 2,
            height: 1,
        };
        assert!(screen.put_pixels(rect, &[0; 7], &format).is_err());
        let colour_map = PixelFormat {
            true_colour: false,
            ..format
        };
        assert!(screen.put_pixels(rect, &[0; 8], &colour_map).is_err());
        assert!(screen.copy_rect(rect, 3, 3).is_err());
        assert!(screen.resize(MAX_SIDE + 1, 1).is_err());
    }

    #[test]
    fn resizing_keeps_what_stays_on_screen() {
        let mut screen = Framebuffer::new(2, 2);
        let format = PixelFormat::rgb888();
        let all = screen.bounds();
        let data: Vec<u8> = (1u32..=4).flat_map(|p| p.to_le_bytes()).collect();
        screen.put_pixels(all, &data, &format).unwrap();
        screen.resize(3, 1).unwrap();
        assert_eq!((screen.width(), screen.height()), (3, 1));
        assert_eq!(
            [screen.pixel(0, 0), screen.pixel(1, 0), screen.pixel(2, 0)],
            [Some(1), Some(2), Some(0)]
        );
    }

    fn screen_strategy() -> impl Strategy<Value = (u16, u16, Vec<u32>)> {
        (1u16..40, 1u16..40).prop_flat_map(|(width, height)| {
            (
                Just(width),
                Just(height),
                proptest::collection::vec(
                    0u32..0x0100_0000,
                    usize::from(width) * usize::from(height),
                ),
            )
        })
    }

    proptest! {
        #[test]
        fn copy_rect_matches_a_copy_through_a_temporary(
            (width, height, colours) in screen_strategy(),
            (x, y, w, h, sx, sy) in (0u16..40, 0u16..40, 1u16..40, 1u16..40, 0u16..40, 0u16..40),
        ) {
            let format = PixelFormat::rgb888();
            let mut screen = Framebuffer::new(width, height);
            let data: Vec<u8> = colours.iter().flat_map(|c| c.to_le_bytes()).collect();
            screen.put_pixels(screen.bounds(), &data, &format).unwrap();
            let rect = Rect { x, y, width: w, height: h };
            let before = screen.clone();
            match screen.copy_rect(rect, sx, sy) {
                Err(_) => {
                    let inside = |r: Rect| r.clipped(width, height) == r;
                    let source = Rect { x: sx, y: sy, ..rect };
                    prop_assert!(!inside(rect) || !inside(source));
                    prop_assert_eq!(&screen, &before);
                }
                Ok(()) => {
                    for py in 0..height {
                        for px in 0..width {
                            let inside = px >= x && px < x + w && py >= y && py < y + h;
                            let expected = if inside {
                                before.pixel(sx + (px - x), sy + (py - y))
                            } else {
                                before.pixel(px, py)
                            };
                            prop_assert_eq!(screen.pixel(px, py), expected);
                        }
                    }
                }
            }
        }

        #[test]
        fn damage_rects_cover_every_marked_pixel_once(
            (width, height) in (1u16..300, 1u16..300),
            marks in proptest::collection::vec((0u16..300, 0u16..300, 1u16..60, 1u16..60), 0..80),
        ) {
            let mut damage = Damage::new(width, height);
            let mut marked = vec![false; usize::from(width) * usize::from(height)];
            for (x, y, w, h) in marks {
                let rect = Rect { x, y, width: w, height: h };
                damage.mark(rect);
                let rect = rect.clipped(width, height);
                for py in rect.y..rect.y + rect.height {
                    for px in rect.x..rect.x + rect.width {
                        marked[usize::from(py) * usize::from(width) + usize::from(px)] = true;
                    }
                }
            }
            let rects = damage.take_rects();
            prop_assert!(rects.len() <= MAX_DAMAGE_RECTS);
            let mut covered = vec![0u8; marked.len()];
            for rect in &rects {
                prop_assert_eq!(rect.clipped(width, height), *rect);
                for py in rect.y..rect.y + rect.height {
                    for px in rect.x..rect.x + rect.width {
                        covered[usize::from(py) * usize::from(width) + usize::from(px)] += 1;
                    }
                }
            }
            for (index, was_marked) in marked.iter().enumerate() {
                prop_assert!(covered[index] <= 1, "pixel {} covered twice", index);
                if *was_marked {
                    prop_assert_eq!(covered[index], 1, "marked pixel {} not covered", index);
                }
            }
            prop_assert!(damage.is_empty());
        }

        #[test]
        fn raw_pixels_survive_a_round_trip_through_any_8_bit_channel_format(
            colours in proptest::collection::vec(0u32..0x0100_0000, 1..64),
            big_endian in any::<bool>(),
            order in 0usize..6,
        ) {
            let shifts = [[16, 8, 0], [0, 8, 16], [8, 16, 0], [0, 16, 8], [16, 0, 8], [8, 0, 16]];
            let format = PixelFormat {
                bits_per_pixel: 32,
                depth: 24,
                big_endian,
                true_colour: true,
                max: [255, 255, 255],
                shift: shifts[order],
            };
            let width = colours.len() as u16;
            let mut screen = Framebuffer::new(width, 1);
            let mut data = Vec::new();
            for &colour in &colours {
                format.encode_pixel(colour, &mut data);
            }
            screen.put_pixels(screen.bounds(), &data, &format).unwrap();
            let mut out = Vec::new();
            screen.encode_raw(screen.bounds(), &format, &mut out);
            prop_assert_eq!(out, data);
        }
    }
}
