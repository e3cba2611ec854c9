//! ZRLE, zlib and Hextile both ways: random rectangles of every kind of content in the pixel
//! formats viewers ask for go through one encoder and one decoder per connection and come back
//! as they were (after the format's quantisation); every proper prefix of a body waits without
//! changing anything; random and broken bodies are errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;
use proxy_rfb::PixelFormat;
use proxy_rfb::codec::hextile::{HextileDecoder, HextileEncoder};
use proxy_rfb::codec::zlib::{ZlibDecoder, ZlibEncoder};
use proxy_rfb::codec::zrle::{ZrleDecoder, ZrleEncoder};
use proxy_rfb::codec::{Decode, Decoded, Encode, Pixels};
use proxy_rfb::framebuffer::{Framebuffer, Rect};

const SCREEN: (u16, u16) = (320, 210);

fn formats() -> [PixelFormat; 6] {
    let rgb888 = PixelFormat::rgb888();
    let rgb565 = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        max: [31, 63, 31],
        shift: [11, 5, 0],
    };
    [
        rgb888,
        PixelFormat {
            shift: [0, 8, 16],
            ..rgb888
        },
        PixelFormat {
            big_endian: true,
            ..rgb888
        },
        rgb565,
        PixelFormat {
            big_endian: true,
            ..rgb565
        },
        PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            big_endian: false,
            true_colour: true,
            max: [7, 7, 3],
            shift: [0, 3, 6],
        },
    ]
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    Zrle,
    Zlib,
    Hextile,
}

fn codec(index: usize, compression: u8) -> (Codec, Box<dyn Encode>, Box<dyn Decode>) {
    match index % 3 {
        0 => (
            Codec::Zrle,
            Box::new(ZrleEncoder::new(compression)),
            Box::new(ZrleDecoder::new()),
        ),
        1 => (
            Codec::Zlib,
            Box::new(ZlibEncoder::new(compression)),
            Box::new(ZlibDecoder::new()),
        ),
        _ => (
            Codec::Hextile,
            Box::new(HextileEncoder),
            Box::new(HextileDecoder),
        ),
    }
}

/// xorshift64*, enough for test pictures.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() >> 33) as usize % bound.max(1)
    }

    fn colour(&mut self) -> u32 {
        (self.next() >> 40) as u32 & 0x00ff_ffff
    }
}

/// A terminal-like picture: 8x16 character cells of stroke glyphs on a dark background, some
/// lines longer than others, a few coloured words and anti-aliased edges.
fn text_like(width: u16, height: u16, random: &mut Random) -> Vec<u32> {
    let (width, height) = (usize::from(width), usize::from(height));
    let background = 0x00_1e_1e_1e;
    let mut colours = vec![background; width * height];
    let columns = width / 8;
    for line in 0..height / 16 {
        let length = if random.below(4) == 0 {
            0
        } else {
            random.below(columns + 1)
        };
        let foreground = match random.below(6) {
            0 => 0x00_4e_c9_4e,
            1 => 0x00_56_9c_d6,
            _ => 0x00_d4_d4_d4,
        };
        for column in 0..length {
            if random.below(6) == 0 {
                continue; // a space
            }
            let (left, top) = (column * 8 + 1, line * 16 + 3);
            let mut put = |x: usize, y: usize, colour: u32| {
                colours[(top + y) * width + left + x] = colour;
            };
            for _ in 0..1 + random.below(3) {
                if random.below(2) == 0 {
                    let (x, from, to) = (random.below(6), random.below(5), 5 + random.below(6));
                    for y in from..to {
                        put(x, y, foreground);
                    }
                    if random.below(3) == 0 {
                        put((x + 1).min(5), from, 0x00_7a_7a_7a);
                    }
                } else {
                    let (y, from, to) = (random.below(11), random.below(3), 3 + random.below(4));
                    for x in from..to {
                        put(x, y, foreground);
                    }
                }
            }
        }
    }
    colours
}

/// Colours of one kind: solid, 2 colours, up to 16, runs, many, text-like.
fn picture(width: u16, height: u16, kind: usize, seed: u64) -> Vec<u32> {
    let mut random = Random(seed | 1);
    let count = usize::from(width) * usize::from(height);
    match kind % 6 {
        0 => vec![random.colour(); count],
        1 | 2 => {
            let palette: Vec<u32> = (0..if kind % 6 == 1 {
                2
            } else {
                2 + random.below(15)
            })
                .map(|_| random.colour())
                .collect();
            // Blocks as well as single pixels.
            let mut colours = Vec::with_capacity(count);
            while colours.len() < count {
                let colour = palette[random.below(palette.len())];
                let longest = if random.below(2) == 0 { 3 } else { 40 };
                let run = 1 + random.below(longest);
                colours.extend(std::iter::repeat_n(colour, run));
            }
            colours.truncate(count);
            colours
        }
        3 => {
            let palette: Vec<u32> = (0..40 + random.below(200))
                .map(|_| random.colour())
                .collect();
            let mut colours = Vec::with_capacity(count);
            while colours.len() < count {
                let colour = palette[random.below(palette.len())];
                colours.extend(std::iter::repeat_n(colour, 1 + random.below(300)));
            }
            colours.truncate(count);
            colours
        }
        4 => (0..count).map(|_| random.colour()).collect(),
        _ => text_like(width, height, &mut random),
    }
}

/// What `format` makes of `colour`.
fn quantised(colour: u32, format: &PixelFormat) -> u32 {
    let mut bytes = Vec::new();
    format.encode_pixel(colour, &mut bytes);
    format.decode_pixel(&bytes)
}

/// One rectangle to send: where, its content, the format.
#[derive(Debug, Clone)]
struct Case {
    rect: Rect,
    kind: usize,
    seed: u64,
    format: usize,
}

fn cases(max_width: u16, max_height: u16) -> impl Strategy<Value = Vec<Case>> {
    prop::collection::vec(
        (
            1..=max_width,
            1..=max_height,
            0..=SCREEN.0,
            0..=SCREEN.1,
            0usize..6,
            any::<u64>(),
            0usize..6,
        )
            .prop_map(|(width, height, x, y, kind, seed, format)| Case {
                rect: Rect {
                    x: x.min(SCREEN.0 - width),
                    y: y.min(SCREEN.1 - height),
                    width,
                    height,
                },
                kind,
                seed,
                format,
            }),
        1..5,
    )
}

/// Encodes one case; returns the body (after the 12-byte header) and the quantised colours.
fn encode(encoder: &mut dyn Encode, case: &Case) -> (Vec<u8>, Vec<u32>) {
    let format = formats()[case.format];
    let colours = picture(case.rect.width, case.rect.height, case.kind, case.seed);
    let mut out = Vec::new();
    let count = encoder.encode(Pixels::new(case.rect, &colours), &format, &mut out);
    assert_eq!(count, 1);
    assert_eq!(
        out[..8],
        {
            let r = case.rect;
            let mut header = Vec::new();
            for value in [r.x, r.y, r.width, r.height] {
                header.extend_from_slice(&value.to_be_bytes());
            }
            header
        }[..]
    );
    assert_eq!(
        i32::from_be_bytes([out[8], out[9], out[10], out[11]]),
        encoder.encoding()
    );
    let quantised = colours.iter().map(|&c| quantised(c, &format)).collect();
    (out.split_off(12), quantised)
}

fn round_trip(codec_index: usize, compression: u8, cases: &[Case]) -> Result<(), TestCaseError> {
    let (codec, mut encoder, mut decoder) = codec(codec_index, compression);
    let mut screen = Framebuffer::new(SCREEN.0, SCREEN.1);
    let mut expected = screen.clone();
    for case in cases {
        let (body, colours) = encode(encoder.as_mut(), case);
        let format = formats()[case.format];
        let decoded = decoder.decode(case.rect, &body, &format, &mut screen);
        prop_assert_eq!(
            decoded,
            Ok(Decoded::Done(body.len())),
            "{:?} {:?}",
            codec,
            case
        );
        expected.put_colours(case.rect, &colours).unwrap();
        prop_assert!(screen == expected, "{:?} {:?}", codec, case);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn zrle_round_trips(compression in 0u8..=9, cases in cases(300, 200)) {
        round_trip(0, compression, &cases)?;
    }

    #[test]
    fn zlib_round_trips(compression in 0u8..=9, cases in cases(300, 200)) {
        round_trip(1, compression, &cases)?;
    }

    #[test]
    fn hextile_round_trips(cases in cases(300, 200)) {
        round_trip(2, 0, &cases)?;
    }

    /// Every proper prefix of every body waits and changes nothing, the screen nor the stream
    /// (the next rectangles still decode), then the whole body decodes.
    #[test]
    fn prefixes_wait_and_change_nothing(codec_index in 0usize..3, cases in cases(40, 40)) {
        let (codec, mut encoder, mut decoder) = codec(codec_index, 2);
        let mut screen = Framebuffer::new(SCREEN.0, SCREEN.1);
        for case in &cases {
            let (body, colours) = encode(encoder.as_mut(), case);
            let format = formats()[case.format];
            let before = screen.clone();
            for end in 0..body.len() {
                let decoded = decoder.decode(case.rect, &body[..end], &format, &mut screen);
                prop_assert_eq!(decoded, Ok(Decoded::NeedMore), "{:?} {:?} {}", codec, case, end);
                prop_assert!(screen == before);
            }
            // More than the body (the next message's bytes) is fine too.
            let mut longer = body.clone();
            longer.extend_from_slice(&[0xff; 7]);
            let decoded = decoder.decode(case.rect, &longer, &format, &mut screen);
            prop_assert_eq!(decoded, Ok(Decoded::Done(body.len())));
            let mut expected = before;
            expected.put_colours(case.rect, &colours).unwrap();
            prop_assert!(screen == expected);
        }
    }

    /// Random bytes as a body: an answer, never a panic.
    #[test]
    fn random_bodies_never_panic(
        codec_index in 0usize..3,
        format in 0usize..6,
        width in 1u16..=70,
        height in 1u16..=40,
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        prefixed in any::<bool>(),
        deflated in any::<bool>(),
    ) {
        let (_, _, mut decoder) = codec(codec_index, 0);
        let format = formats()[format];
        let mut screen = Framebuffer::new(SCREEN.0, SCREEN.1);
        let rect = Rect { x: 3, y: 5, width, height };
        let body = if deflated {
            // Valid zlib around random tile data: the tile parser's turn.
            let mut data = Vec::with_capacity(bytes.len() * 2 + 64);
            Compress::new(Compression::new(1), true)
                .compress_vec(&bytes, &mut data, FlushCompress::Sync)
                .unwrap();
            let mut body = (data.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&data);
            body
        } else if prefixed {
            let mut body = (bytes.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&bytes);
            body
        } else {
            bytes
        };
        let _ = decoder.decode(rect, &body, &format, &mut screen);
    }
}

#[test]
fn empty_rectangles_round_trip_between_others() {
    for index in 0..3 {
        let (codec, mut encoder, mut decoder) = codec(index, 2);
        let mut screen = Framebuffer::new(SCREEN.0, SCREEN.1);
        for (width, height) in [(0, 5), (7, 3), (5, 0), (0, 0), (9, 9)] {
            let rect = Rect {
                x: 2,
                y: 1,
                width,
                height,
            };
            let colours = picture(width, height, 5, 3);
            let mut out = Vec::new();
            encoder.encode(
                Pixels::new(rect, &colours),
                &PixelFormat::rgb888(),
                &mut out,
            );
            let decoded = decoder.decode(rect, &out[12..], &PixelFormat::rgb888(), &mut screen);
            assert_eq!(decoded, Ok(Decoded::Done(out.len() - 12)), "{codec:?}");
            assert_eq!(screen.colours(rect), colours, "{codec:?}");
        }
    }
}

/// A zlib-style body (length, data) of `tiles` deflated by a fresh stream.
fn deflated_body(tiles: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(tiles.len() * 2 + 64);
    Compress::new(Compression::new(6), true)
        .compress_vec(tiles, &mut data, FlushCompress::Sync)
        .unwrap();
    let mut body = (data.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(&data);
    body
}

#[test]
fn truncated_and_overlong_zlib_data_are_errors() {
    let format = PixelFormat::rgb888();
    let rect = Rect {
        x: 0,
        y: 0,
        width: 8,
        height: 8,
    };
    let colours = picture(8, 8, 4, 7);
    for index in [0, 1] {
        let (_, mut encoder, _) = codec(index, 6);
        let mut out = Vec::new();
        encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
        let body = &out[12..];
        // The data cut short, its length saying so. (A cut within the sync flush's empty
        // block alone loses no pixel: it would show in the next rectangle.)
        for cut in [8, body.len() / 2] {
            let mut short = ((body.len() - 4 - cut) as u32).to_be_bytes().to_vec();
            short.extend_from_slice(&body[4..body.len() - cut]);
            let (_, _, mut decoder) = codec(index, 6);
            let mut screen = Framebuffer::new(8, 8);
            assert!(
                decoder.decode(rect, &short, &format, &mut screen).is_err(),
                "{index} {cut}"
            );
        }
        // A length no rectangle of 8x8 could need.
        let mut long = 10_000_000u32.to_be_bytes().to_vec();
        long.extend_from_slice(&body[4..]);
        let (_, _, mut decoder) = codec(index, 6);
        let mut screen = Framebuffer::new(8, 8);
        assert!(decoder.decode(rect, &long, &format, &mut screen).is_err());
    }
    // More pixels than the rectangle: zlib with 65 raw pixels, ZRLE with a second tile.
    let mut screen = Framebuffer::new(8, 8);
    let body = deflated_body(&[0; 65 * 4]);
    assert!(
        ZlibDecoder::new()
            .decode(rect, &body, &format, &mut screen)
            .is_err()
    );
    let body = deflated_body(&[1, 0, 0, 0, 1, 0, 0, 0]);
    assert!(
        ZrleDecoder::new()
            .decode(rect, &body, &format, &mut screen)
            .is_err()
    );
    // A rectangle off the screen.
    let body = deflated_body(&[1, 0, 0, 0]);
    let off = Rect { x: 4, ..rect };
    assert!(
        ZrleDecoder::new()
            .decode(off, &body, &format, &mut screen)
            .is_err()
    );
}

/// Sizes for the record (`cargo test -p proxy-rfb --test zrle_zlib_hextile -- --nocapture sizes`).
#[test]
fn sizes_at_compression_2() {
    let format = PixelFormat::rgb888();
    let samples = [
        (
            "720x400 text screen",
            720u16,
            400u16,
            text_like(720, 400, &mut Random(42)),
        ),
        (
            "32x2 rect",
            32,
            2,
            text_like(32, 16, &mut Random(7))[32 * 4..32 * 6].to_vec(),
        ),
        (
            "512x384 text area",
            512,
            384,
            text_like(512, 384, &mut Random(9)),
        ),
    ];
    for (name, width, height, colours) in samples {
        let rect = Rect {
            x: 0,
            y: 0,
            width,
            height,
        };
        let mut line = format!("{name}: raw {}", colours.len() * 4);
        for index in 0..3 {
            let (codec, mut encoder, mut decoder) = codec(index, 2);
            let mut out = Vec::new();
            let started = std::time::Instant::now();
            encoder.encode(Pixels::new(rect, &colours), &format, &mut out);
            let took = started.elapsed();
            let mut screen = Framebuffer::new(width, height);
            assert_eq!(
                decoder.decode(rect, &out[12..], &format, &mut screen),
                Ok(Decoded::Done(out.len() - 12))
            );
            assert_eq!(screen.colours(rect), colours);
            line += &format!(", {codec:?} {} ({took:?})", out.len());
        }
        eprintln!("{line}");
    }
}
