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
        matches!(self, Frame::Binary(_) | Frame::Text(_))
    }

    /// The payload length in bytes (0 for a close frame).
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Binary(b) | Frame::Text(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
            Frame::Close(_) => 0,
        }
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
    fn long_reasons_are_cut_on_a_character_boundary() {
        let frame = CloseFrame::new(close_code::NORMAL, "é".repeat(100));
        assert_eq!(frame.reason.len(), 122);
        assert!(frame.reason.chars().all(|c| c == 'é'));
        assert_eq!(CloseFrame::new(4001, "short").reason, "short");
    }
}
