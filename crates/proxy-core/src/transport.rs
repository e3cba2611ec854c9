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
}

/// A bidirectional frame transport: any WebSocket implementation (or an in-memory channel)
/// that yields [`Frame`]s as a [`Stream`] and accepts them as a [`Sink`].
///
/// `poll_flush` must push buffered frames to the peer; the relay feeds frames while more are
/// ready and flushes when the source has nothing more ready.
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
