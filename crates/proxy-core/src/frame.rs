use bytes::Bytes;

/// Close codes the relay and the server use (RFC 6455 section 7.4 and the 4xxx private range).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown, peer vanished).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
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

impl CloseFrame {
    /// A close frame with the given code and reason.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}
