//! The transport seam: what the relay needs from a WebSocket implementation.
use futures_util::{Sink, Stream};

use crate::Frame;

/// Why a transport failed to read or write a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection ended without a close frame (reset, EOF mid-stream).
    #[error("connection lost without a close frame")]
    ConnectionLost,
    /// An I/O error on the underlying socket.
    #[error("i/o error on the connection")]
    Io(#[source] std::io::Error),
    /// The peer violated the WebSocket protocol.
    #[error("websocket protocol violation")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A data message was not what its type promises (a text message or close reason that is
    /// not UTF-8): closed with 1007, as RFC 6455 section 7.4.1 asks.
    #[error("invalid payload data")]
    InvalidPayload(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A message exceeded the configured maximum size.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the offending message (or the part seen so far).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The transport was already closed when it was used.
    #[error("the connection is already closed")]
    AlreadyClosed,
    /// The peer broke the protocol carried inside the WebSocket messages (an adapter above the
    /// WebSocket layer found it): both sides are closed with this frame, whose reason says why.
    #[error("application protocol violation: {}", .0.reason)]
    Violation(crate::CloseFrame),
}

impl TransportError {
    /// A stable, low-cardinality name of the error kind, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            TransportError::ConnectionLost => "connection_lost",
            TransportError::Io(_) => "io",
            TransportError::Protocol(_) => "protocol",
            TransportError::InvalidPayload(_) => "invalid_payload",
            TransportError::MessageTooLarge { .. } => "message_too_large",
            TransportError::AlreadyClosed => "already_closed",
            TransportError::Violation(_) => "violation",
        }
    }
}

/// A bidirectional frame transport: any WebSocket implementation (or an in-memory channel)
/// that yields [`Frame`]s as a [`Stream`] and accepts them as a [`Sink`].
///
/// What the relay expects of an implementation:
///
/// - **Batching.** `start_send` may buffer; `poll_flush` must push everything buffered to the
///   peer. The relay feeds frames while its source has more ready and flushes when it has none,
///   so a burst costs one flush. `poll_ready` returning `Pending` is how a slow peer slows the
///   relay down (backpressure); it should drive buffered data out as well.
/// - **Pings are answered by the transport.** A received ping is yielded for information only;
///   answering it with a pong is the transport's job (WebSocket libraries do it while reading).
///   The relay never forwards pings or pongs; it sends its own keepalive pings to the client.
/// - **Closing.** A received close frame is yielded as [`Frame::Close`]. The relay then sends one
///   close frame back to that side as the reply. A library that already queued the reply itself
///   (tungstenite echoes the peer's close) may treat that send as a no-op.
/// - **End of stream.** `None` means the connection is gone; if no close frame came first, the
///   relay treats the side as vanished.
pub trait FrameTransport:
    Stream<Item = Result<Frame, TransportError>> + Sink<Frame, Error = TransportError> + Unpin + Send
{
}

impl<T> FrameTransport for T where
    T: Stream<Item = Result<Frame, TransportError>>
        + Sink<Frame, Error = TransportError>
        + Unpin
        + Send
{
}
