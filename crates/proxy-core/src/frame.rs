//! The frame model of the relay.
use bytes::Bytes;

/// Close codes the relay and the server use (RFC 6455 section 7.4 and the 4xxx private range).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown, peer vanished).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Reserved: never sent on the wire. Stands for "a close frame without a status code" where an
    /// API needs a number (RFC 6455 section 7.4.1), as in [`RelayOutcome`](crate::RelayOutcome).
    pub const NO_STATUS: u16 = 1005;
    /// A message's data was not consistent with its type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message broke a policy: the proxy uses it when it cannot follow the console protocol
    /// (see [`TransportError::Violation`](crate::TransportError::Violation)).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The endpoint hit an unexpected condition (the other side errored).
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// One WebSocket frame (message) as the relay sees it. Payloads are reference-counted
/// [`Bytes`], so moving a frame from one side to the other never copies its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A binary data message (the RFB stream of a VNC console).
    Binary(Bytes),
    /// A text data message; the payload is valid UTF-8.
    Text(Bytes),
    /// A binary data message still masked as the browser sent it (see [`MaskedPayload`]). A
    /// transport that sends client frames can write it with the same mask without touching a
    /// byte; any other transport unmasks it first.
    MaskedBinary(MaskedPayload),
    /// A ping control frame (at most 125 bytes of payload).
    Ping(Bytes),
    /// A pong control frame (at most 125 bytes of payload).
    Pong(Bytes),
    /// A close control frame, with an optional code and reason.
    Close(Option<CloseFrame>),
}

impl Frame {
    /// Whether this frame carries application data (binary or text), as opposed to control.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Frame::Binary(_) | Frame::Text(_) | Frame::MaskedBinary(_)
        )
    }

    /// The payload length in bytes (0 for a close frame).
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Binary(b) | Frame::Text(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
            Frame::MaskedBinary(payload) => payload.len(),
            Frame::Close(_) => 0,
        }
    }
}

/// A payload as a WebSocket client masked it (RFC 6455 section 5.3): each byte XOR
/// `mask[index % 4]` is the data.
///
/// A browser's frames reach the proxy masked, and the proxy is itself a client towards the
/// upstream, so it must send them masked again: keeping the browser's masked bytes and its mask
/// saves unmasking and re-masking every byte.
///
/// ```
/// use bytes::Bytes;
/// use proxy_core::MaskedPayload;
///
/// let mask = [1, 2, 3, 4];
/// let mut masked = b"RFB".to_vec();
/// proxy_core::apply_mask(&mut masked, mask);
/// let payload = MaskedPayload::new(Bytes::from(masked), mask);
/// assert_eq!(payload.len(), 3);
/// assert_eq!(payload.unmask(), Bytes::from_static(b"RFB"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedPayload {
    masked: Bytes,
    mask: [u8; 4],
}

impl MaskedPayload {
    /// Masked bytes and the mask they were masked with.
    pub fn new(masked: Bytes, mask: [u8; 4]) -> Self {
        Self { masked, mask }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.masked.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.masked.is_empty()
    }

    /// The masking key.
    pub fn mask(&self) -> [u8; 4] {
        self.mask
    }

    /// The bytes as they are on the wire (masked).
    pub fn masked_bytes(&self) -> &Bytes {
        &self.masked
    }

    /// The data, unmasked: in place when nothing else holds the bytes, else into a copy.
    pub fn unmask(self) -> Bytes {
        match self.masked.try_into_mut() {
            Ok(mut owned) => {
                apply_mask(&mut owned, self.mask);
                owned.freeze()
            }
            Err(shared) => {
                let mut copy = shared.to_vec();
                apply_mask(&mut copy, self.mask);
                Bytes::from(copy)
            }
        }
    }
}

/// XORs `data` with the repeating 4-byte `mask`, the first byte taking `mask[0]`: masks and
/// unmasks WebSocket payloads (RFC 6455 section 5.3).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// The code and reason of a WebSocket close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close status code (for example 1000, 1001, 1011 or a 4xxx application code).
    pub code: u16,
    /// A short human-readable reason (at most 123 bytes of UTF-8 on the wire).
    pub reason: String,
}

/// The longest close reason a close frame can carry: 125 bytes of control payload minus the code.
pub const MAX_CLOSE_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame with the given code and reason. A reason longer than
    /// [`MAX_CLOSE_REASON_LEN`] bytes is cut at the last character boundary that fits, so the
    /// frame is always valid on the wire.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_CLOSE_REASON_LEN {
            let mut cut = MAX_CLOSE_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self { code, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_twice_restores_the_data_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, mask);
            for (i, (masked, plain)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*masked, plain ^ mask[i % 4]);
            }
            apply_mask(&mut data, mask);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn shared_masked_bytes_are_unmasked_into_a_copy() {
        let mask = [9, 8, 7, 6];
        let mut masked = b"framebuffer".to_vec();
        apply_mask(&mut masked, mask);
        let masked = Bytes::from(masked);
        let still_held = masked.clone();
        let payload = MaskedPayload::new(masked, mask);
        assert_eq!(payload.unmask(), Bytes::from_static(b"framebuffer"));
        assert_ne!(
            still_held,
            Bytes::from_static(b"framebuffer"),
            "unmasked in place"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let frame = CloseFrame::new(close_code::NORMAL, "é".repeat(100));
        assert_eq!(frame.reason.len(), 122);
        assert!(frame.reason.chars().all(|c| c == 'é'));
        assert_eq!(CloseFrame::new(4001, "short").reason, "short");
    }
}
