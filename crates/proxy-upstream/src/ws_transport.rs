//! Adapter from `tokio-tungstenite` to the relay's [`FrameTransport`] seam.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use proxy_core::{CloseFrame, Frame, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// A [`WebSocketStream`] seen as a stream and sink of relay [`Frame`]s.
#[derive(Debug)]
pub struct WsTransport<S> {
    inner: WebSocketStream<S>,
}

impl<S> WsTransport<S> {
    /// Wraps an open WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self { inner }
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
    match message {
        Message::Binary(data) => Some(Frame::Binary(data)),
        Message::Text(text) => Some(Frame::Text(text.into())),
        Message::Ping(data) => Some(Frame::Ping(data)),
        Message::Pong(data) => Some(Frame::Pong(data)),
        Message::Close(close) => Some(Frame::Close(close.map(|c| CloseFrame {
            code: c.code.into(),
            reason: c.reason.as_str().to_owned(),
        }))),
        Message::Frame(_) => None,
    }
}

fn message_from_frame(frame: Frame) -> Result<Message, TransportError> {
    Ok(match frame {
        Frame::Binary(data) => Message::Binary(data),
        Frame::Text(data) => Message::Text(
            Utf8Bytes::try_from(data).map_err(|e| TransportError::Protocol(Box::new(e)))?,
        ),
        Frame::Ping(data) => Message::Ping(data),
        Frame::Pong(data) => Message::Pong(data),
        Frame::Close(close) => Message::Close(close.map(|c| WsCloseFrame {
            code: c.code.into(),
            reason: c.reason.into(),
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
            return match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(transport_error(error)))),
                Poll::Ready(Some(Ok(message))) => match frame_from_message(message) {
                    Some(frame) => Poll::Ready(Some(Ok(frame))),
                    None => continue,
                },
            };
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
