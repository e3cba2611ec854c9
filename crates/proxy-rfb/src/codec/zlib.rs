//! zlib (6): Raw pixel data (in the viewer's format, row by row) through one zlib stream that
//! lives as long as the connection, each rectangle's body a big-endian u32 length and that many
//! bytes of the stream (the RFB community document, "zlib encoding").
//!
//! Choices:
//! - The encoder ends every rectangle with a sync flush (`Z_SYNC_FLUSH`), so the viewer can
//!   inflate the rectangle's bytes on their own while the dictionary carries over.
//! - Compression levels 0 to 9 (the viewer's CompressLevel pseudo-encoding, noVNC asks 2) are
//!   zlib's levels one for one, as TigerVNC does: 0 stores, 1 is fastest, 9 smallest. ZRLE
//!   ([`super::zrle`]) maps them the same way.
//! - The decoder waits for the whole body before it feeds the inflater ([`Decoded::NeedMore`]
//!   leaves the stream as it was); a length beyond what the rectangle's pixels could need
//!   compressed, output longer or shorter than the rectangle, or broken zlib data is
//!   [`RfbError::Malformed`].
//!
//! The zlib helpers here (`deflate_sync`, `inflate`) serve ZRLE as well.
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Decode, Decoded, Encode, Pixels, push_rect_header};
use crate::framebuffer::{Framebuffer, Rect};
use crate::server::encoding;
use crate::{PixelFormat, RfbError};

/// The zlib level of an RFB compression level (0 to 9; more is read as 9).
pub(crate) fn zlib_level(compression: u8) -> Compression {
    Compression::new(u32::from(compression.min(9)))
}

/// Appends all of `input` deflated through `stream`, ended with a sync flush (the stream
/// goes on with the next call).
pub(crate) fn deflate_sync(stream: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let mut consumed = 0;
    loop {
        let rest = input.len() - consumed;
        // Deflate's worst case (stored blocks) plus the flush marker.
        out.reserve(rest + rest / 8 + 64);
        let before = stream.total_in();
        let Ok(_) = stream.compress_vec(&input[consumed..], out, FlushCompress::Sync) else {
            // Only a misuse of the stream fails (none here); stop instead of looping.
            return;
        };
        consumed += usize::try_from(stream.total_in() - before).unwrap_or(rest);
        // The flush is complete once the output did not fill the room it had.
        if consumed >= input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

/// Inflates all of `input` (a rectangle's part of a connection's zlib stream) through
/// `stream`, appending at most `limit` bytes to `out`.
pub(crate) fn inflate(
    stream: &mut Decompress,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), RfbError> {
    let start = out.len();
    let mut consumed = 0;
    loop {
        let produced = out.len() - start;
        // Room for one byte beyond the limit, so that longer output shows.
        out.reserve((limit + 1 - produced).clamp(1, 1 << 16));
        let (before_in, before_out) = (stream.total_in(), stream.total_out());
        let status = stream
            .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .map_err(|_| RfbError::Malformed("zlib data"))?;
        let read = usize::try_from(stream.total_in() - before_in).unwrap_or(usize::MAX);
        consumed = consumed.saturating_add(read).min(input.len());
        if out.len() - start > limit {
            return Err(RfbError::Malformed(
                "zlib data longer than its rectangle needs",
            ));
        }
        if status == Status::StreamEnd {
            // The server ended the stream: nothing may follow in this rectangle (and the
            // next rectangle's data will not inflate).
            return if consumed == input.len() {
                Ok(())
            } else {
                Err(RfbError::Malformed("data after the end of the zlib stream"))
            };
        }
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
        if read == 0 && stream.total_out() == before_out {
            return Err(RfbError::Malformed("zlib data"));
        }
    }
}

/// Splits a zlib-style body (u32 length, then that many bytes) into its data and whole length,
/// or `None` while it is incomplete. `most` is the longest data a rectangle may have.
pub(crate) fn length_prefixed<'a>(
    body: &'a [u8],
    most: usize,
    what: &'static str,
) -> Result<Option<(&'a [u8], usize)>, RfbError> {
    let Some(prefix) = body.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > most {
        return Err(RfbError::Malformed(what));
    }
    Ok(body.get(4..4 + length).map(|data| (data, 4 + length)))
}

/// The longest compressed data `bytes` of output may take: deflate's stored blocks cost 5
/// bytes per 16 KiB at worst; the rest is generous room for flush markers.
pub(crate) fn most_compressed(bytes: usize) -> usize {
    bytes.saturating_add(bytes / 64).saturating_add(1 << 16)
}

/// Writes zlib rectangles through one stream (one encoder per connection).
pub struct ZlibEncoder {
    stream: Compress,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ZlibEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibEncoder")
            .field("total_in", &self.stream.total_in())
            .field("total_out", &self.stream.total_out())
            .finish()
    }
}

impl ZlibEncoder {
    /// A new stream at RFB compression level `compression` (0 to 9, zlib's level).
    pub fn new(compression: u8) -> Self {
        Self {
            stream: Compress::new(zlib_level(compression), true),
            scratch: Vec::new(),
        }
    }
}

impl Encode for ZlibEncoder {
    fn encoding(&self) -> i32 {
        encoding::ZLIB
    }

    fn encode(&mut self, pixels: Pixels<'_>, format: &PixelFormat, out: &mut Vec<u8>) -> u16 {
        push_rect_header(out, pixels.rect, encoding::ZLIB);
        self.scratch.clear();
        self.scratch
            .reserve(pixels.colours.len() * format.bytes_per_pixel() as usize);
        if *format == PixelFormat::rgb888() {
            for &colour in pixels.colours {
                self.scratch.extend_from_slice(&colour.to_le_bytes());
            }
        } else {
            for &colour in pixels.colours {
                format.encode_pixel(colour, &mut self.scratch);
            }
        }
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        deflate_sync(&mut self.stream, &self.scratch, out);
        let length = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
        out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        1
    }
}

/// Reads zlib rectangles through one stream (one decoder per connection).
pub struct ZlibDecoder {
    stream: Decompress,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ZlibDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibDecoder")
            .field("total_in", &self.stream.total_in())
            .field("total_out", &self.stream.total_out())
            .finish()
    }
}

impl Default for ZlibDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZlibDecoder {
    /// A decoder at the start of a connection's stream.
    pub fn new() -> Self {
        Self {
            stream: Decompress::new(true),
            scratch: Vec::new(),
        }
    }
}

impl Decode for ZlibDecoder {
    fn decode(
        &mut self,
        rect: Rect,
        body: &[u8],
        format: &PixelFormat,
        screen: &mut Framebuffer,
    ) -> Result<Decoded, RfbError> {
        let size = rect.pixels() * format.bytes_per_pixel() as usize;
        let Some((data, length)) = length_prefixed(
            body,
            most_compressed(size),
            "zlib rectangle length (beyond what its pixels need)",
        )?
        else {
            return Ok(Decoded::NeedMore);
        };
        format.check_true_colour()?;
        if rect.clipped(screen.width(), screen.height()) != rect {
            return Err(RfbError::Malformed("rectangle outside the screen"));
        }
        self.scratch.clear();
        let result = inflate(&mut self.stream, data, size, &mut self.scratch).and_then(|()| {
            if self.scratch.len() == size {
                screen.put_pixels(rect, &self.scratch, format)
            } else {
                Err(RfbError::Malformed("zlib data shorter than its rectangle"))
            }
        });
        // Big rectangles should not keep their buffer for the connection's life.
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new();
        }
        result.map(|()| Decoded::Done(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_built_rectangle_decodes() {
        // Two rgb888 pixels, deflated by an independent stream, in two rectangles.
        let mut stream = Compress::new(Compression::new(6), true);
        let mut screen = Framebuffer::new(2, 2);
        let mut decoder = ZlibDecoder::new();
        for (row, pixels) in [[1u8, 2, 3, 0, 4, 5, 6, 0], [7, 8, 9, 0, 10, 11, 12, 0]]
            .iter()
            .enumerate()
        {
            let mut data = Vec::new();
            deflate_sync(&mut stream, pixels, &mut data);
            let mut body = (data.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&data);
            let rect = Rect {
                x: 0,
                y: row as u16,
                width: 2,
                height: 1,
            };
            let format = PixelFormat::rgb888();
            assert_eq!(
                decoder.decode(rect, &body, &format, &mut screen),
                Ok(Decoded::Done(body.len()))
            );
        }
        assert_eq!(screen.pixel(1, 0), Some(0x060504));
        assert_eq!(screen.pixel(0, 1), Some(0x090807));
    }

    #[test]
    fn short_long_and_broken_data_are_errors() {
        let format = PixelFormat::rgb888();
        let rect = Rect {
            x: 0,
            y: 0,
            width: 2,
            height: 1,
        };
        let mut screen = Framebuffer::new(2, 1);
        for pixels in [&[1u8, 2, 3, 0][..], &[0; 12]] {
            let mut data = Vec::new();
            deflate_sync(
                &mut Compress::new(Compression::new(1), true),
                pixels,
                &mut data,
            );
            let mut body = (data.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&data);
            assert!(
                ZlibDecoder::new()
                    .decode(rect, &body, &format, &mut screen)
                    .is_err()
            );
        }
        let mut body = 6u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x78, 0x9c, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            ZlibDecoder::new()
                .decode(rect, &body, &format, &mut screen)
                .is_err()
        );
        let body = u32::MAX.to_be_bytes();
        assert!(
            ZlibDecoder::new()
                .decode(rect, &body, &format, &mut screen)
                .is_err()
        );
        assert_eq!(screen.pixel(0, 0), Some(0));
    }
}
