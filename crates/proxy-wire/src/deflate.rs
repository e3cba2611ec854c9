//! permessage-deflate (RFC 7692) on the browser leg: the negotiation, and the compression of
//! whole messages the codec does when it was negotiated.
//!
//! The proxy compresses without context takeover: every message is a deflate stream of its own,
//! so nothing is kept per session between messages, and the compressor and decompressor are
//! one per thread, reset before each message. A session with deflate therefore holds no more
//! memory than one without (what the measurement in `docs/performance.md` decided: on recorded
//! console traffic, per-message deflate saves most of the bytes of screens that change, and a
//! context per session would cost 100 to 300 KiB of state for each console). The browser is asked
//! for the same (`client_no_context_takeover`), so its messages are inflated by a fresh
//! decompressor too.
//!
//! ```
//! use proxy_wire::PerMessageDeflate;
//!
//! // What Chromium offers.
//! let deflate = PerMessageDeflate::negotiate(["permessage-deflate; client_max_window_bits"]);
//! assert_eq!(
//!     deflate.map(|accepted| accepted.response_header()),
//!     Some("permessage-deflate; client_no_context_takeover".to_owned())
//! );
//! // A client that limits the proxy's window cannot be served by its compressor.
//! assert_eq!(PerMessageDeflate::negotiate(["permessage-deflate; server_max_window_bits=10"]), None);
//! ```

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::handshake::list_elements;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// Messages shorter than this are sent as they are: deflate cannot make them meaningfully
/// smaller (an RFB cursor blink is 20 to 33 bytes) and it would cost a compressor pass.
pub const DEFLATE_MIN_MESSAGE_BYTES: usize = 128;

/// The empty stored block a sync flush ends with, which RFC 7692 section 7.2.1 removes from each
/// message and a receiver appends again.
const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Bytes the inflate output grows by while a message is decompressed.
const INFLATE_STEP_BYTES: usize = 16 * 1024;

/// permessage-deflate as the proxy agreed to it with one browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// The client asked the server not to keep its compression context (the proxy never does;
    /// saying so in the answer is then required).
    server_no_context_takeover: bool,
}

impl PerMessageDeflate {
    /// The first permessage-deflate offer among `Sec-WebSocket-Extensions` header values that
    /// the proxy can accept, or `None` (no offer, or none acceptable: then the session runs
    /// without compression, as with a client that offers nothing).
    ///
    /// An offer is refused when a parameter is unknown, repeated or has an invalid value, or
    /// when it limits the proxy's window (`server_max_window_bits` below 15: the compressor
    /// always uses a 32 KiB window).
    pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        header_values
            .into_iter()
            .flat_map(list_elements)
            .find_map(parse_offer)
    }

    /// The `Sec-WebSocket-Extensions` value of the `101` answer.
    pub fn response_header(&self) -> String {
        let mut header = format!("{PERMESSAGE_DEFLATE}; client_no_context_takeover");
        if self.server_no_context_takeover {
            header.push_str("; server_no_context_takeover");
        }
        header
    }
}

/// One offer (`permessage-deflate; param; param=value`), if acceptable.
fn parse_offer(offer: &str) -> Option<PerMessageDeflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut accepted = PerMessageDeflate {
        server_no_context_takeover: false,
    };
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (part, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => accepted.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(bits)) if window_bits(bits)? == 15 => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) => {
                window_bits(bits)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(accepted)
}

/// A window size parameter: 8 to 15, digits only.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Why a compressed message could not be inflated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// The payload is not a valid deflate stream.
    #[error("the compressed message is not valid deflate data")]
    Corrupt(#[source] flate2::DecompressError),
    /// Inflated, the message would be larger than the limit.
    #[error("the message inflates to more than {limit} bytes")]
    TooLarge {
        /// The message size limit.
        limit: usize,
    },
}

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `message` deflated as one message of its own (no context from earlier ones), without the
/// sync-flush tail; `None` when that would not be smaller than the message.
pub fn deflate_message(message: &[u8]) -> Option<Bytes> {
    COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        compressor.reset();
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut input = message;
        loop {
            let before = compressor.total_in();
            compressor
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            let consumed = usize::try_from(compressor.total_in() - before).ok()?;
            input = &input[consumed..];
            // The flush is complete once the input is used up with output room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= message.len() {
                return None;
            }
            out.reserve(out.capacity().max(1024));
        }
        let body = out.strip_suffix(&SYNC_FLUSH_TAIL)?.len();
        out.truncate(body);
        (out.len() < message.len()).then(|| Bytes::from(out))
    })
}

/// A message deflated by [`deflate_message`] or a browser (tail removed), inflated; more than
/// `limit` bytes of output is an error (a small message may inflate to a huge one).
pub fn inflate_message(compressed: &[u8], limit: Option<usize>) -> Result<Bytes, InflateError> {
    DECOMPRESSOR.with(|decompressor| {
        let mut decompressor = decompressor.borrow_mut();
        decompressor.reset(false);
        let mut out: Vec<u8> = Vec::new();
        for part in [compressed, &SYNC_FLUSH_TAIL[..]] {
            let mut input = part;
            loop {
                if out.len() == out.capacity() {
                    out.reserve(INFLATE_STEP_BYTES);
                }
                let before = decompressor.total_in();
                let status = decompressor
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(InflateError::Corrupt)?;
                if let Some(limit) = limit
                    && out.len() > limit
                {
                    return Err(InflateError::TooLarge { limit });
                }
                let consumed =
                    usize::try_from(decompressor.total_in() - before).unwrap_or(input.len());
                input = &input[consumed..];
                match status {
                    // A final block: whatever follows (the tail) is not part of the message.
                    Status::StreamEnd => return Ok(Bytes::from(out)),
                    Status::Ok | Status::BufError
                        if input.is_empty() && out.len() < out.capacity() =>
                    {
                        break;
                    }
                    Status::BufError if consumed == 0 && out.len() < out.capacity() => break,
                    Status::Ok | Status::BufError => {}
                }
            }
        }
        Ok(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<PerMessageDeflate> {
        PerMessageDeflate::negotiate([value])
    }

    #[test]
    fn the_offers_of_browsers_and_libraries_are_accepted() {
        for value in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "Permessage-Deflate; client_max_window_bits=12; server_max_window_bits=15",
            "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
        ] {
            let accepted = offer(value).unwrap_or_else(|| panic!("{value} refused"));
            assert_eq!(
                accepted.response_header(),
                "permessage-deflate; client_no_context_takeover"
            );
        }
        assert_eq!(
            offer("permessage-deflate; server_no_context_takeover")
                .unwrap()
                .response_header(),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
        );
    }

    #[test]
    fn offers_the_proxy_cannot_honour_or_that_are_malformed_are_declined() {
        for value in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(offer(value), None, "{value:?} accepted");
        }
        // The next offer is tried when the first cannot be honoured.
        assert!(
            PerMessageDeflate::negotiate([
                "permessage-deflate; server_max_window_bits=9",
                "permessage-deflate"
            ])
            .is_some()
        );
    }

    #[test]
    fn a_compressible_message_deflates_and_inflates_back() {
        let message: Vec<u8> = (0..20_000u32).map(|i| (i % 61) as u8).collect();
        let compressed = deflate_message(&message).unwrap();
        assert!(
            compressed.len() < message.len() / 10,
            "{}",
            compressed.len()
        );
        assert!(!compressed.ends_with(&SYNC_FLUSH_TAIL));
        assert_eq!(inflate_message(&compressed, None).unwrap(), message);
        // Each message stands alone: the same message compresses the same way again.
        assert_eq!(deflate_message(&message).unwrap(), compressed);
    }

    #[test]
    fn incompressible_and_empty_messages_are_sent_as_they_are() {
        let noise = test_support::noise(4096, 0x2545_f491_4f6c_dd1d);
        assert_eq!(deflate_message(&noise), None);
        assert_eq!(deflate_message(&[]), None);
        assert_eq!(inflate_message(&[], Some(0)).unwrap(), Bytes::new());
    }

    #[test]
    fn inflating_past_the_limit_or_garbage_is_an_error() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = deflate_message(&zeros).unwrap();
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        assert!(matches!(
            inflate_message(&bomb, Some(64 * 1024)),
            Err(InflateError::TooLarge { limit: 65536 })
        ));
        assert_eq!(
            inflate_message(&bomb, Some(1 << 20)).unwrap().len(),
            1 << 20
        );
        assert!(matches!(
            inflate_message(&[0xff, 0xff, 0xff], None),
            Err(InflateError::Corrupt(_))
        ));
    }
}
