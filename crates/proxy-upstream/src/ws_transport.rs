//! Adapter from `tokio-tungstenite` to the relay's [`FrameTransport`](proxy_core::FrameTransport) seam.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use proxy_core::{CloseFrame, Frame, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// A [`WebSocketStream`] seen as a stream and sink of relay [`Frame`]s.
///
/// Payloads move without copying in both directions (tungstenite's `Bytes` are the relay's).
/// tungstenite answers pings and echoes a received close frame by itself; this adapter keeps
/// that behaviour, so the relay's reply to a received close is not sent a second time (the
/// echo carries the same code and reason) and only flushes what tungstenite queued. Close
/// reasons longer than the wire allows are cut (see [`CloseFrame::new`]).
#[derive(Debug)]
pub struct WsTransport<S> {
    inner: WebSocketStream<S>,
    /// A close frame came from the peer, so tungstenite has queued its echo as our reply.
    close_received: bool,
}

impl<S> WsTransport<S> {
    /// Wraps an open WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            close_received: false,
        }
    }

    /// The wrapped WebSocket.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.inner
    }

    /// The wrapped WebSocket, by reference.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.inner
    }
}

fn frame_from_message(message: Message) -> Option<Frame> {
    Some(match message {
        Message::Binary(data) => Frame::Binary(data),
        Message::Text(text) => Frame::Text(text.into()),
        Message::Ping(data) => Frame::Ping(data),
        Message::Pong(data) => Frame::Pong(data),
        Message::Close(close) => Frame::Close(
            close.map(|close| CloseFrame::new(close.code.into(), close.reason.as_str())),
        ),
        // Raw frames are only ever written, never read.
        Message::Frame(_) => return None,
    })
}

fn message_from_frame(frame: Frame) -> Result<Message, TransportError> {
    Ok(match frame {
        Frame::Binary(data) => Message::Binary(data),
        Frame::Text(data) => Message::Text(
            Utf8Bytes::try_from(data).map_err(|error| TransportError::Protocol(Box::new(error)))?,
        ),
        Frame::Ping(data) => Message::Ping(data),
        Frame::Pong(data) => Message::Pong(data),
        Frame::Close(close) => Message::Close(close.map(|close| {
            let close = CloseFrame::new(close.code, close.reason);
            WsCloseFrame {
                code: close.code.into(),
                reason: close.reason.into(),
            }
        })),
    })
}

/// Maps a tungstenite error onto the relay's transport error.
pub(crate) fn transport_error(error: tungstenite::Error) -> TransportError {
    use tungstenite::Error as E;
    use tungstenite::error::{CapacityError, ProtocolError};
    match error {
        E::ConnectionClosed | E::AlreadyClosed => TransportError::AlreadyClosed,
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TransportError::ConnectionLost,
        E::Io(io) if is_connection_lost(&io) => TransportError::ConnectionLost,
        E::Io(io) => TransportError::Io(io),
        E::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            TransportError::MessageTooLarge {
                size,
                limit: max_size,
            }
        }
        other => TransportError::Protocol(Box::new(other)),
    }
}

fn is_connection_lost(error: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        error.kind(),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
    )
}

impl<S> Stream for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let message = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(transport_error(error))));
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            if let Some(frame) = frame_from_message(message) {
                if matches!(frame, Frame::Close(_)) {
                    self.close_received = true;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
        }
    }
}

impl<S> Sink<Frame> for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(transport_error)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.close_received && matches!(frame, Frame::Close(_)) {
            // tungstenite already queued the echo of the peer's close; flushing sends it.
            return Ok(());
        }
        let message = message_from_frame(frame)?;
        Pin::new(&mut self.inner)
            .start_send(message)
            .map_err(transport_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(transport_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(transport_error)
    }
}
