//! Writes updates in each encoding the hub sends viewers, for noVNC's own decoders to read
//! (`e2e/tests/novnc-decoders.test.mjs` runs this and decodes the files in Node): the
//! independent decoder the encoders are checked against, beside this crate's own.
//!
//! Each file holds, for one encoding, random updates on a 320x240 screen in noVNC's pixel
//! format (32 bits, depth 24, red in the lowest byte) through one encoder, with restarts
//! (Tight's reset bits) now and then where the encoding has them, then the screen they must
//! leave; and a shared Tight stream as a member and as a viewer joining half-way receive it.
//! Records: `UPDT` x y width height (u16 each) rectangles (u32) length (u32) and the
//! rectangles; `RSET` (the encoder restarted); `DONE` width height (u16) and the screen as
//! RGBX bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proxy_rfb::codec::{EncoderSettings, Pixels};
use proxy_rfb::framebuffer::{Framebuffer, Rect};
use proxy_rfb::{PixelFormat, encoding};

const WIDTH: u16 = 320;
const HEIGHT: u16 = 240;

fn novnc_format() -> PixelFormat {
    PixelFormat {
        shift: [0, 8, 16],
        ..PixelFormat::rgb888()
    }
}

/// xorshift: the same updates every run.
struct Random(u32);

impl Random {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Text-like, few-colour, many-colour, smooth and solid content.
fn colours(random: &mut Random, rect: Rect, update: u32) -> Vec<u32> {
    let kind = random.next() % 5;
    (0..rect.pixels())
        .map(|pixel| match kind {
            0 => 0x00a8_a8a8,
            1 => {
                if (pixel * 7 + update as usize) % 11 < 3 {
                    0x00a8_a8a8
                } else {
                    0
                }
            }
            2 => [0, 0x00a8_a8a8, 0x0000_ff00, 0x00ff_0000, 0x0000_00ff][(pixel * 13) % 5],
            3 => random.next() & 0x00ff_ffff,
            _ => ((pixel as u32 % u32::from(rect.width)) * 0x0001_0101) & 0x00ff_ffff,
        })
        .collect()
}

/// One record of an update (with its rectangle count) in the files' format.
fn push_update(file: &mut Vec<u8>, rect: Rect, count: u16, body: &[u8]) {
    file.extend_from_slice(b"UPDT");
    for value in [rect.x, rect.y, rect.width, rect.height] {
        file.extend_from_slice(&value.to_be_bytes());
    }
    file.extend_from_slice(&u32::from(count).to_be_bytes());
    file.extend_from_slice(&(body.len() as u32).to_be_bytes());
    file.extend_from_slice(body);
}

fn push_done(file: &mut Vec<u8>, screen: &Framebuffer) {
    file.extend_from_slice(b"DONE");
    file.extend_from_slice(&WIDTH.to_be_bytes());
    file.extend_from_slice(&HEIGHT.to_be_bytes());
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let colour = screen.pixel(x, y).unwrap();
            file.extend_from_slice(&[(colour >> 16) as u8, (colour >> 8) as u8, colour as u8, 255]);
        }
    }
}

/// A shared Tight stream (dictionaries kept) as its first member receives it, and as a viewer
/// that joins half-way receives it: first its own full screen (stream 3, self-contained),
/// then the shared updates with a zlib header in front of each stream's first data.
fn write_shared_tight(member: &std::path::Path, joiner: &std::path::Path) {
    let format = novnc_format();
    let settings =
        EncoderSettings::from_encodings(&[encoding::TIGHT, encoding::compression_level(2)]);
    let mut shared = settings.shared_encoder();
    let mut screen = Framebuffer::new(WIDTH, HEIGHT);
    let mut random = Random(0x9e37_79b9);
    let (mut member_file, mut joiner_file) = (Vec::new(), Vec::new());
    let mut unstarted = [true; 4];
    for update in 0..160u32 {
        if update == 80 {
            let bounds = screen.bounds();
            let mut body = Vec::new();
            let count = settings.encoder().encode(
                Pixels::new(bounds, &screen.colours(bounds)),
                &format,
                &mut body,
            );
            push_update(&mut joiner_file, bounds, count, &body);
            assert!(shared.mark_join());
        }
        let width = (random.next() % 200 + 1) as u16;
        let height = (random.next() % 150 + 1) as u16;
        let rect = Rect {
            x: (random.next() % u32::from(WIDTH - width + 1)) as u16,
            y: (random.next() % u32::from(HEIGHT - height + 1)) as u16,
            width,
            height,
        };
        let colours = colours(&mut random, rect, update);
        screen.put_colours(rect, &colours).unwrap();
        let mut body = Vec::new();
        let count = shared.encode(Pixels::new(rect, &colours), &format, &mut body);
        let chunks = shared.take_join_chunks();
        push_update(&mut member_file, rect, count, &body);
        if update >= 80 {
            let spliced = proxy_rfb::codec::spliced_for_joiner(&body, &chunks, &mut unstarted);
            push_update(
                &mut joiner_file,
                rect,
                count,
                spliced.as_deref().unwrap_or(&body),
            );
        }
    }
    assert_eq!(
        unstarted[..3],
        [false; 3],
        "the joiner started streams 0..=2"
    );
    push_done(&mut member_file, &screen);
    push_done(&mut joiner_file, &screen);
    std::fs::write(member, member_file).unwrap();
    std::fs::write(joiner, joiner_file).unwrap();
}

fn write_stream(encoding: i32, path: &std::path::Path) {
    let format = novnc_format();
    let mut encoder =
        EncoderSettings::from_encodings(&[encoding, encoding::compression_level(2)]).encoder();
    assert_eq!(encoder.encoding(), encoding);
    let mut screen = Framebuffer::new(WIDTH, HEIGHT);
    let mut random = Random(0x2545_f491);
    let mut file = Vec::new();
    for update in 0..160u32 {
        if update % 23 == 22 && encoder.restart() {
            file.extend_from_slice(b"RSET");
        }
        let width = (random.next() % 200 + 1) as u16;
        let height = (random.next() % 150 + 1) as u16;
        let rect = Rect {
            x: (random.next() % u32::from(WIDTH - width + 1)) as u16,
            y: (random.next() % u32::from(HEIGHT - height + 1)) as u16,
            width,
            height,
        };
        let colours = colours(&mut random, rect, update);
        screen.put_colours(rect, &colours).unwrap();
        let mut body = Vec::new();
        let count = encoder.encode(Pixels::new(rect, &colours), &format, &mut body);
        push_update(&mut file, rect, count, &body);
    }
    push_done(&mut file, &screen);
    std::fs::write(path, file).unwrap();
}

#[test]
#[ignore = "writes files into $NOVNC_STREAMS_DIR for e2e/tests/novnc-decoders.test.mjs"]
fn write_a_stream_per_encoding_for_novnc() {
    let dir = std::path::PathBuf::from(std::env::var("NOVNC_STREAMS_DIR").unwrap());
    for (name, encoding) in [
        ("tight", encoding::TIGHT),
        ("zrle", encoding::ZRLE),
        ("hextile", encoding::HEXTILE),
        ("zlib", encoding::ZLIB),
        ("raw", encoding::RAW),
    ] {
        write_stream(encoding, &dir.join(format!("{name}.bin")));
    }
    write_shared_tight(&dir.join("tight-shared.bin"), &dir.join("tight-joiner.bin"));
}
