//! Tight (7) both ways: random screens through one encoder and one decoder (with stream
//! resets and fresh decoders joining), partial bodies, malformed input, JPEG, and the real
//! QEMU session's Tight rectangles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;
use proxy_rfb::codec::tight::{TightDecoder, TightEncoder, TightSettings};
use proxy_rfb::codec::{Decode, Decoded, Encode, Pixels};
use proxy_rfb::framebuffer::{Framebuffer, Rect};
use proxy_rfb::{PixelFormat, RfbError};

const RECORDING: &str = include_str!("data/qemu-seabios-session.js");

fn formats() -> Vec<PixelFormat> {
    let rgb565 = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        max: [31, 63, 31],
        shift: [11, 5, 0],
    };
    vec![
        PixelFormat::rgb888(),
        PixelFormat {
            shift: [0, 8, 16],
            ..PixelFormat::rgb888()
        },
        PixelFormat {
            big_endian: true,
            ..PixelFormat::rgb888()
        },
        rgb565,
        PixelFormat {
            big_endian: true,
            ..rgb565
        },
    ]
}

/// A colour as it comes back through `format`.
fn quantised(colour: u32, format: &PixelFormat) -> u32 {
    let mut bytes = Vec::new();
    format.encode_pixel(colour, &mut bytes);
    format.decode_pixel(&bytes)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }
}

/// Content kinds a screen shows.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Solid,
    Few,
    Many,
    Text,
    Smooth,
}

fn content(kind: Kind, width: u16, height: u16, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    let (w, h) = (usize::from(width), usize::from(height));
    let mut colours = vec![0u32; w * h];
    match kind {
        Kind::Solid => colours.fill(rng.next() & 0xff_ffff),
        Kind::Few => {
            let palette: Vec<u32> = (0..1 + rng.below(12))
                .map(|_| rng.next() & 0xff_ffff)
                .collect();
            let mut index = 0;
            for colour in &mut colours {
                if rng.below(6) == 0 {
                    index = rng.below(palette.len() as u32) as usize;
                }
                *colour = palette[index];
            }
        }
        Kind::Many => colours.iter_mut().for_each(|c| *c = rng.next() & 0xff_ffff),
        Kind::Text => text(&mut colours, w, h, rng.next(), 0x00_10_10_30, 0x00_c0_c0_c0),
        Kind::Smooth => {
            for y in 0..h {
                for x in 0..w {
                    let r = (x * 255 / w.max(1)) as u32;
                    let g = (y * 255 / h.max(1)) as u32;
                    let b = ((x + y) % 256) as u32;
                    colours[y * w + x] = (r << 16) | (g << 8) | b;
                }
            }
        }
    }
    colours
}

/// Glyph-like marks on a background: lines of a 9x16 cell grid, each cell a glyph of a
/// 64-glyph font (a few random strokes each) or a space; `seed` decides the text.
fn text(colours: &mut [u32], w: usize, h: usize, seed: u32, background: u32, foreground: u32) {
    let mut rng = Rng(u64::from(seed) | 1);
    let mut font_rng = Rng(0x5eed);
    let font: Vec<[u8; 10]> = (0..64)
        .map(|_| std::array::from_fn(|_| (font_rng.next() & 0x7f) as u8))
        .collect();
    colours.fill(background);
    for row in 0..h / 16 {
        let length = rng.below((w / 9) as u32 + 1) as usize;
        for column in 0..length {
            let letter = rng.below(80) as usize;
            let Some(glyph) = font.get(letter) else {
                continue; // a space
            };
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..7 {
                    if bits >> gx & 1 == 1 {
                        colours[(row * 16 + 3 + gy) * w + column * 9 + 1 + gx] = foreground;
                    }
                }
            }
        }
    }
}

/// Decodes every rectangle of `out` (which holds `count` of them) into `screen`.
fn decode_all(
    decoder: &mut TightDecoder,
    out: &[u8],
    count: u16,
    format: &PixelFormat,
    screen: &mut Framebuffer,
) -> Result<(), RfbError> {
    let mut at = 0;
    for _ in 0..count {
        let header = &out[at..at + 12];
        let rect = Rect {
            x: u16::from_be_bytes([header[0], header[1]]),
            y: u16::from_be_bytes([header[2], header[3]]),
            width: u16::from_be_bytes([header[4], header[5]]),
            height: u16::from_be_bytes([header[6], header[7]]),
        };
        assert_eq!(
            i32::from_be_bytes([header[8], header[9], header[10], header[11]]),
            7
        );
        assert!(rect.width <= 2048);
        at += 12;
        match decoder.decode(rect, &out[at..], format, screen)? {
            Decoded::Done(length) => at += length,
            Decoded::NeedMore => panic!("a complete rectangle needs more"),
        }
    }
    assert_eq!(at, out.len(), "bytes after the rectangles");
    Ok(())
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Solid),
        Just(Kind::Few),
        Just(Kind::Many),
        Just(Kind::Text),
        Just(Kind::Smooth)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_screens_round_trip_through_one_encoder_and_decoder(
        format_index in 0usize..5,
        compression in 0u8..10,
        updates in proptest::collection::vec(
            ((0u16..300, 0u16..200, 1u16..=300, 1u16..=200), kind(), any::<u64>(), 0u8..6),
            1..8,
        ),
    ) {
        let format = formats()[format_index];
        let (width, height) = (300u16, 200u16);
        let mut encoder = TightEncoder::new(TightSettings { compression, jpeg_quality: None, ..TightSettings::default()});
        let mut decoder = TightDecoder::new();
        let mut screen = Framebuffer::new(width, height);
        let mut expected = Framebuffer::new(width, height);
        for ((x, y, w, h), kind, seed, reset) in updates {
            let rect = Rect { x, y, width: w, height: h }.clipped(width, height);
            if rect.is_empty() {
                continue;
            }
            if reset == 0 {
                // A viewer joins here: a fresh decoder on a stream reset by the encoder.
                encoder.reset_streams();
                decoder = TightDecoder::new();
            }
            let colours = content(kind, rect.width, rect.height, seed);
            let mut out = Vec::new();
            let count = encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
            decode_all(&mut decoder, &out, count, &format, &mut screen).unwrap();
            let quantised: Vec<u32> = colours.iter().map(|&c| quantised(c, &format)).collect();
            expected.put_colours(rect, &quantised).unwrap();
            prop_assert_eq!(&screen, &expected);
        }
    }

    #[test]
    fn random_bytes_are_an_error_or_a_rectangle_never_a_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        control in any::<u8>(),
        (w, h) in (0u16..40, 0u16..40),
        format_index in 0usize..5,
    ) {
        let format = formats()[format_index];
        let mut screen = Framebuffer::new(40, 40);
        let mut decoder = TightDecoder::new();
        let mut bytes = vec![control];
        bytes.extend_from_slice(&body);
        let rect = Rect { x: 0, y: 0, width: w, height: h };
        let _ = decoder.decode(rect, &bytes, &format, &mut screen);
        // Random zlib data behind a valid-looking header.
        let mut bytes = vec![0x00, 0x7f];
        bytes.extend_from_slice(&body);
        let _ = decoder.decode(rect, &bytes, &format, &mut screen);
    }
}

#[test]
fn every_prefix_of_a_body_needs_more_and_changes_nothing() {
    let format = PixelFormat::rgb888();
    let rect = Rect {
        x: 3,
        y: 2,
        width: 100,
        height: 70,
    };
    for kind in [Kind::Solid, Kind::Few, Kind::Many, Kind::Text] {
        let colours = content(kind, rect.width, rect.height, 7);
        let mut encoder = TightEncoder::default();
        // Something before, so the streams are in use.
        let mut first = Vec::new();
        let first_count = encoder.encode(Pixels::new(rect, &colours), &format, &mut first);
        let colours = content(kind, rect.width, rect.height, 8);
        let mut out = Vec::new();
        let count = encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
        let mut decoder = TightDecoder::new();
        let mut screen = Framebuffer::new(120, 80);
        decode_all(&mut decoder, &first, first_count, &format, &mut screen).unwrap();
        // Rectangle by rectangle, every prefix of each body first.
        let mut at = 0;
        for _ in 0..count {
            let header = &out[at..at + 12];
            let rect = Rect {
                x: u16::from_be_bytes([header[0], header[1]]),
                y: u16::from_be_bytes([header[2], header[3]]),
                width: u16::from_be_bytes([header[4], header[5]]),
                height: u16::from_be_bytes([header[6], header[7]]),
            };
            at += 12;
            let before = screen.clone();
            let mut length = None;
            for end in at..=out.len() {
                match decoder
                    .decode(rect, &out[at..end], &format, &mut screen)
                    .unwrap()
                {
                    Decoded::NeedMore => assert_eq!(screen, before, "{kind:?}"),
                    Decoded::Done(done) => {
                        length = Some(done);
                        break;
                    }
                }
            }
            at += length.expect("the whole body decodes");
        }
        assert_eq!(at, out.len());
        let mut expected = Framebuffer::new(120, 80);
        expected.put_colours(rect, &colours).unwrap();
        assert_eq!(screen.colours(rect), expected.colours(rect), "{kind:?}");
    }
}

/// A basic-compression rectangle on `stream` with `filter` and its `data`, compressed with
/// a fresh stream (the reset bit set).
fn basic_rect(stream: u8, filter: &[u8], data: &[u8]) -> Vec<u8> {
    let mut body = vec![(0x40 | (stream << 4)) | (1 << stream)];
    body.extend_from_slice(filter);
    if data.len() < 12 {
        body.extend_from_slice(data);
        return body;
    }
    let mut compress = Compress::new(Compression::new(6), true);
    let mut compressed = Vec::with_capacity(data.len() + 100);
    compress
        .compress_vec(data, &mut compressed, FlushCompress::Sync)
        .unwrap();
    let length = compressed.len();
    assert!(length < 1 << 14);
    if length < 128 {
        body.push(length as u8);
    } else {
        body.extend_from_slice(&[(length as u8) | 0x80, (length >> 7) as u8]);
    }
    body.extend_from_slice(&compressed);
    body
}

#[test]
fn malformed_rectangles_are_errors() {
    let format = PixelFormat::rgb888();
    let rect = Rect {
        x: 0,
        y: 0,
        width: 8,
        height: 4,
    };
    let mut screen = Framebuffer::new(8, 4);
    let decode = |body: &[u8], screen: &mut Framebuffer| {
        TightDecoder::new().decode(rect, body, &format, screen)
    };
    // A palette of 3 colours, an index of 3.
    let mut filter = vec![1, 2];
    filter.extend_from_slice(&[0; 9]);
    let mut data = vec![0u8; 32];
    data[5] = 3;
    assert!(matches!(
        decode(&basic_rect(2, &filter, &data), &mut screen),
        Err(RfbError::Malformed(_))
    ));
    // The same with index 2 decodes.
    data[5] = 2;
    assert_eq!(
        decode(&basic_rect(2, &filter, &data), &mut screen),
        Ok(Decoded::Done(basic_rect(2, &filter, &data).len()))
    );
    // Data inflating longer than the rectangle.
    let long = vec![0u8; 33];
    assert!(decode(&basic_rect(2, &filter, &long), &mut screen).is_err());
    // Data inflating shorter (the zlib data cut, the length saying so).
    let full = basic_rect(2, &filter, &[1u8; 32]);
    let mut cut = full[..full.len() - 6].to_vec();
    let length_at = 2 + 1 + 9;
    cut[length_at] -= 6;
    assert!(decode(&cut, &mut screen).is_err());
    // Garbage for zlib data.
    let mut garbage = full.clone();
    for byte in &mut garbage[length_at + 1..] {
        *byte = 0xff;
    }
    assert!(decode(&garbage, &mut screen).is_err());
    // An unknown filter, an unknown control, a rectangle off the screen.
    assert!(decode(&[0x40, 3, 0, 0], &mut screen).is_err());
    assert!(decode(&[0xb0], &mut screen).is_err());
    let off = Rect { x: 4, ..rect };
    assert!(
        TightDecoder::new()
            .decode(off, &[0x80, 1, 2, 3], &format, &mut screen)
            .is_err()
    );
    // JPEG and PNG are refused as unsupported.
    assert_eq!(
        decode(&[0x90, 1, 0], &mut screen),
        Err(RfbError::Unsupported(
            "Tight JPEG rectangles (the hub asks losslessly)"
        ))
    );
    assert!(matches!(
        decode(&[0xa0, 1, 0], &mut screen),
        Err(RfbError::Unsupported(_))
    ));
}

/// The gradient filter as TightVNC's encoder applies it, for `format`'s TPIXELs.
fn gradient_filter(colours: &[u32], width: usize, format: &PixelFormat) -> Vec<u8> {
    let compact = format.is_depth24_rgb();
    let max: [i32; 3] = if compact {
        [255; 3]
    } else {
        format.max.map(i32::from)
    };
    let channels = |colour: u32| -> [i32; 3] {
        if compact {
            [
                (colour >> 16) as i32 & 255,
                (colour >> 8) as i32 & 255,
                colour as i32 & 255,
            ]
        } else {
            let mut bytes = Vec::new();
            format.encode_pixel(colour, &mut bytes);
            let raw = match (bytes.len(), format.big_endian) {
                (2, false) => u32::from(u16::from_le_bytes([bytes[0], bytes[1]])),
                (2, true) => u32::from(u16::from_be_bytes([bytes[0], bytes[1]])),
                (_, false) => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                (_, true) => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            };
            [0, 1, 2].map(|c| ((raw >> format.shift[c]) as i32) & max[c])
        }
    };
    let values: Vec<[i32; 3]> = colours.iter().map(|&c| channels(c)).collect();
    let height = colours.len() / width;
    let at = |x: isize, y: isize| -> [i32; 3] {
        if x < 0 || y < 0 {
            [0; 3]
        } else {
            values[y as usize * width + x as usize]
        }
    };
    let mut out = Vec::new();
    for y in 0..height as isize {
        for x in 0..width as isize {
            let value = at(x, y);
            let mut sent = [0u32; 3];
            for c in 0..3 {
                let estimate =
                    (at(x - 1, y)[c] + at(x, y - 1)[c] - at(x - 1, y - 1)[c]).clamp(0, max[c]);
                sent[c] = ((value[c] - estimate) & max[c]) as u32;
            }
            if compact {
                out.extend_from_slice(&sent.map(|v| v as u8));
            } else {
                let raw = (0..3).fold(0u32, |raw, c| raw | (sent[c] << format.shift[c]));
                match (format.bits_per_pixel, format.big_endian) {
                    (16, false) => out.extend_from_slice(&(raw as u16).to_le_bytes()),
                    (16, true) => out.extend_from_slice(&(raw as u16).to_be_bytes()),
                    (_, false) => out.extend_from_slice(&raw.to_le_bytes()),
                    (_, true) => out.extend_from_slice(&raw.to_be_bytes()),
                }
            }
        }
    }
    out
}

#[test]
fn gradient_rectangles_decode_in_every_format() {
    for format in formats() {
        for (width, height) in [(1u16, 1u16), (2, 1), (37, 23), (64, 64)] {
            for kind in [Kind::Smooth, Kind::Many, Kind::Text] {
                let colours = content(kind, width, height, 99);
                let data = gradient_filter(&colours, usize::from(width), &format);
                let body = basic_rect(3, &[2], &data);
                let rect = Rect {
                    x: 1,
                    y: 2,
                    width,
                    height,
                };
                let mut screen = Framebuffer::new(70, 70);
                let done = TightDecoder::new()
                    .decode(rect, &body, &format, &mut screen)
                    .unwrap();
                assert_eq!(done, Decoded::Done(body.len()));
                let expected: Vec<u32> = colours.iter().map(|&c| quantised(c, &format)).collect();
                assert_eq!(screen.colours(rect), expected, "{format:?} {kind:?}");
            }
        }
    }
}

#[test]
fn photos_go_as_jpeg_when_a_quality_is_set() {
    let format = PixelFormat::rgb888();
    let rect = Rect {
        x: 0,
        y: 0,
        width: 128,
        height: 96,
    };
    // A smooth picture with a little noise: many colours.
    let mut rng = Rng(5);
    let colours: Vec<u32> = content(Kind::Smooth, 128, 96, 1)
        .into_iter()
        .map(|c| c ^ (rng.next() & 0x03_0303))
        .collect();
    let mut encoder = TightEncoder::new(TightSettings {
        compression: 2,
        jpeg_quality: Some(6),
        ..TightSettings::default()
    });
    let mut out = Vec::new();
    assert_eq!(
        encoder.encode(Pixels::new(rect, &colours), &format, &mut out),
        1
    );
    assert_eq!(out[12], 0x90, "a JPEG rectangle");
    let (length, taken) = match (out[13], out[14], out[15]) {
        (a, b, c) if a & 0x80 != 0 && b & 0x80 != 0 => (
            usize::from(a & 0x7f) | (usize::from(b & 0x7f) << 7) | (usize::from(c) << 14),
            3,
        ),
        (a, b, _) if a & 0x80 != 0 => (usize::from(a & 0x7f) | (usize::from(b) << 7), 2),
        (a, _, _) => (usize::from(a), 1),
    };
    let jpeg = &out[13 + taken..];
    assert_eq!(jpeg.len(), length);
    assert!(length < colours.len() * 3 / 4, "JPEG is small: {length}");
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    let rgb = decoder.decode().unwrap();
    let info = decoder.info().unwrap();
    assert_eq!((info.width, info.height), (128, 96));
    let mut total = 0u64;
    for (pixel, &colour) in rgb.chunks_exact(3).zip(&colours) {
        for (channel, shift) in pixel.iter().zip([16, 8, 0]) {
            total += u64::from(channel.abs_diff((colour >> shift) as u8));
        }
    }
    let mean = total as f64 / (colours.len() * 3) as f64;
    assert!(mean < 8.0, "mean error {mean}");
    // The Tight decoder refuses it.
    let mut screen = Framebuffer::new(128, 96);
    assert!(matches!(
        TightDecoder::new().decode(rect, &out[12..], &format, &mut screen),
        Err(RfbError::Unsupported(_))
    ));
    // Lossless settings never send JPEG.
    let mut out = Vec::new();
    TightEncoder::default().encode(Pixels::new(rect, &colours), &format, &mut out);
    assert_ne!(out[12], 0x90);
}

/// Bytes of a JPEG or PNG rectangle's body (control, compact length, data), or `None` when
/// it is not complete.
fn compact_body_length(body: &[u8]) -> usize {
    let mut length = 0;
    for index in 0..3 {
        let byte = body[1 + index];
        if index == 2 {
            return 4 + (length | (usize::from(byte) << 14));
        }
        length |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return 2 + index + length;
        }
    }
    unreachable!()
}

#[test]
fn the_real_qemu_sessions_tight_rectangles_decode() {
    let entries = test_support::playback::entries(RECORDING);
    let stream = test_support::playback::stream(RECORDING, false);
    // The client's SetPixelFormat (type 0, 20 bytes) sets the format of the updates.
    let format = entries
        .iter()
        .filter(|entry| entry.from_client && entry.bytes.first() == Some(&0))
        .map(|entry| PixelFormat::parse(&entry.bytes[4..20]).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(format.shift, [0, 8, 16]);
    // Version (12), security types (2), SecurityResult (4), ServerInit (24 + name).
    let mut at = 12 + 2 + 4;
    let (width, height) = (
        u16::from_be_bytes([stream[at], stream[at + 1]]),
        u16::from_be_bytes([stream[at + 2], stream[at + 3]]),
    );
    assert_eq!((width, height), (720, 400));
    let name = u32::from_be_bytes(stream[at + 20..at + 24].try_into().unwrap()) as usize;
    at += 24 + name;
    let mut screen = Framebuffer::new(width, height);
    let mut decoder = TightDecoder::new();
    let (mut tight, mut jpeg, mut other) = (0, 0, 0);
    // noVNC asked for compression 2.
    let mut encoder = TightEncoder::default();
    let mut our_decoder = TightDecoder::new();
    let (mut qemu_bytes, mut ours_bytes) = (0, 0);
    let bpp = usize::from(format.bits_per_pixel / 8);
    while at < stream.len() {
        match stream[at] {
            0 => {
                let rects = u16::from_be_bytes([stream[at + 2], stream[at + 3]]);
                at += 4;
                for _ in 0..rects {
                    let header = &stream[at..at + 12];
                    let value = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
                    let rect = Rect {
                        x: value(0),
                        y: value(2),
                        width: value(4),
                        height: value(6),
                    };
                    let encoding = i32::from_be_bytes(header[8..12].try_into().unwrap());
                    at += 12;
                    let body = &stream[at..];
                    let (w, h) = (usize::from(rect.width), usize::from(rect.height));
                    at += match encoding {
                        7 if body[0] >> 4 == 0x9 || body[0] >> 4 == 0xA => {
                            jpeg += 1;
                            compact_body_length(body)
                        }
                        7 => {
                            tight += 1;
                            let length =
                                match decoder.decode(rect, body, &format, &mut screen).unwrap() {
                                    Decoded::Done(length) => length,
                                    Decoded::NeedMore => panic!("a recorded rectangle is cut"),
                                };
                            // The same rectangle through this encoder, for the bytes.
                            let colours = screen.colours(rect);
                            qemu_bytes += 12 + length;
                            let mut out = Vec::new();
                            let count =
                                encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
                            ours_bytes += out.len();
                            let mut check = screen.clone();
                            decode_all(&mut our_decoder, &out, count, &format, &mut check).unwrap();
                            assert_eq!(check, screen);
                            length
                        }
                        0 => {
                            other += 1;
                            screen
                                .put_pixels(rect, &body[..w * h * bpp], &format)
                                .unwrap();
                            w * h * bpp
                        }
                        1 => {
                            other += 1;
                            let sx = u16::from_be_bytes([body[0], body[1]]);
                            let sy = u16::from_be_bytes([body[2], body[3]]);
                            screen.copy_rect(rect, sx, sy).unwrap();
                            4
                        }
                        -239 => w * h * bpp + w.div_ceil(8) * h,
                        -223 => {
                            screen.resize(rect.width, rect.height).unwrap();
                            0
                        }
                        -308 => {
                            screen.resize(rect.width, rect.height).unwrap();
                            4 + 16 * usize::from(body[0])
                        }
                        -261 => 1,
                        -258 | -257 | -259 | -313 | -312 | -309 | -224 => 0,
                        other => panic!("encoding {other} in the recording"),
                    };
                }
            }
            2 | 150 => at += 1,
            3 => {
                let length = i32::from_be_bytes(stream[at + 4..at + 8].try_into().unwrap());
                at += 8 + length.unsigned_abs() as usize;
            }
            248 => at += 9 + usize::from(stream[at + 8]),
            other => panic!("server message {other} in the recording"),
        }
    }
    assert_eq!(at, stream.len());
    eprintln!(
        "QEMU's Tight rectangles: {qemu_bytes} bytes; the same through TightEncoder: {ours_bytes}"
    );
    assert!(
        ours_bytes <= qemu_bytes * 5 / 4,
        "{ours_bytes} bytes against QEMU's {qemu_bytes}"
    );
    assert!(tight > 0, "Tight rectangles in the recording");
    let mut seen = std::collections::HashSet::new();
    for y in 0..screen.height() {
        for x in 0..screen.width() {
            seen.insert(screen.pixel(x, y).unwrap());
        }
    }
    eprintln!(
        "{tight} Tight rectangles decoded, {jpeg} JPEG skipped, {other} others; colours {seen:x?}"
    );
    // SeaBIOS: grey text on black, a few per cent of the screen lit.
    let lit = (0..screen.height())
        .flat_map(|y| (0..screen.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| screen.pixel(x, y) != Some(0))
        .count();
    assert!(seen.len() >= 2, "text on a background: {seen:?}");
    assert!((500..720 * 400 / 4).contains(&lit), "{lit} pixels of text");
}

#[test]
fn wide_and_large_rectangles_are_split_within_tights_limits() {
    for format in [PixelFormat::rgb888(), formats()[4]] {
        for (kind, width, height) in [
            (Kind::Many, 3000u16, 40u16),
            (Kind::Text, 4100, 64),
            (Kind::Smooth, 700, 300),
            (Kind::Few, 2049, 50),
        ] {
            let rect = Rect {
                x: 5,
                y: 1,
                width,
                height,
            };
            let colours = content(kind, width, height, 11);
            let mut encoder = TightEncoder::default();
            let mut out = Vec::new();
            let count = encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
            assert!(count > 1, "{kind:?} split");
            let mut screen = Framebuffer::new(4200, 400);
            // decode_all checks every width is at most 2048.
            decode_all(&mut TightDecoder::new(), &out, count, &format, &mut screen).unwrap();
            let expected: Vec<u32> = colours.iter().map(|&c| quantised(c, &format)).collect();
            assert_eq!(screen.colours(rect), expected, "{kind:?} {format:?}");
        }
    }
}

/// Bytes for sample screens at compression 2 and 9 (printed; the module docs quote them).
#[test]
fn sample_screen_sizes() {
    let format = PixelFormat::rgb888();
    let full = |width: u16, height: u16, lines: usize, seed: u32| {
        let (w, h) = (usize::from(width), usize::from(height));
        let mut colours = vec![0u32; w * h];
        text(&mut colours, w, h, seed, 0x00_00_00_00, 0x00_aa_aa_aa);
        // Keep only `lines` lines of text.
        for pixel in colours.iter_mut().skip(lines * 16 * w) {
            *pixel = 0;
        }
        colours
    };
    let screen = Rect {
        x: 0,
        y: 0,
        width: 720,
        height: 400,
    };
    let mut cursor = vec![0x00ff_ffffu32; 64];
    cursor[3] = 0;
    cursor[40] = 0x0080_8080;
    let area = Rect {
        x: 0,
        y: 0,
        width: 512,
        height: 384,
    };
    let scrolled = {
        let before = full(512, 400, 25, 3);
        before[16 * 512..(16 + 384) * 512].to_vec()
    };
    let samples: Vec<(&str, Rect, Vec<u32>)> = vec![
        ("720x400 text, 25 lines", screen, full(720, 400, 25, 1)),
        ("720x400 text, 6 lines", screen, full(720, 400, 6, 2)),
        (
            "32x2 cursor strip",
            Rect {
                x: 10,
                y: 10,
                width: 32,
                height: 2,
            },
            cursor,
        ),
        ("512x384 text scrolled", area, scrolled),
    ];
    for (name, rect, colours) in samples {
        let mut sizes = Vec::new();
        for compression in [2, 9] {
            let mut encoder = TightEncoder::new(TightSettings {
                compression,
                jpeg_quality: None,
                ..TightSettings::default()
            });
            let mut out = Vec::new();
            let start = std::time::Instant::now();
            let count = encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
            let encoded = start.elapsed();
            let mut screen = Framebuffer::new(720, 400);
            let start = std::time::Instant::now();
            decode_all(&mut TightDecoder::new(), &out, count, &format, &mut screen).unwrap();
            let decoded = start.elapsed();
            assert_eq!(screen.colours(rect), colours, "{name}");
            sizes.push(format!(
                "compression {compression}: {} bytes in {count} rects (encode {encoded:?}, decode {decoded:?})",
                out.len()
            ));
        }
        eprintln!("{name}: {}", sizes.join("; "));
    }
}
