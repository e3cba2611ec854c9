//! Raw (0): the pixels as they are, in the viewer's format. Every client takes it.
use super::{Decode, Decoded, Encode, Pixels, push_rect_header};
use crate::framebuffer::{Framebuffer, Rect};
use crate::server::encoding;
use crate::{PixelFormat, RfbError};

/// Writes Raw rectangles.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

impl Encode for RawEncoder {
    fn encoding(&self) -> i32 {
        encoding::RAW
    }

    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16 {
        push_rect_header(out, pixels.rect, encoding::RAW);
        out.reserve(pixels.colours.len() * format.bytes_per_pixel() as usize);
        if *format == PixelFormat::rgb888() {
            for &colour in pixels.colours {
                out.extend_from_slice(&colour.to_le_bytes());
            }
        } else {
            for &colour in pixels.colours {
                format.encode_pixel(colour, out);
            }
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

/// Reads Raw rectangles.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decode for RawDecoder {
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError> {
        let length = rect.pixels() * format.bytes_per_pixel() as usize;
        let Some(data) = body.get(..length) else {
            return Ok(Decoded::NeedMore);
        };
        screen.put_pixels(rect, data, format)?;
        Ok(Decoded::Done(length))
    }
}
