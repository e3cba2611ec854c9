//! The client side of a session: the accepted WebSocket as a relay transport.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use proxy_core::{Frame, TransportError};
use proxy_upstream::WsTransport;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// The browser's WebSocket as a [`FrameTransport`](proxy_core::FrameTransport).
///
/// tungstenite queues the reply to a received close frame itself and refuses any later send
/// ("sending after closing"). The relay answers a close with a close of its own, so once the
/// client's close has been read, that answer is accepted here as a no-op and the next flush
/// writes tungstenite's queued reply, which completes the closing handshake.
#[derive(Debug)]
pub(crate) struct ClientTransport {
    inner: WsTransport<TcpStream>,
    peer_closed: bool,
}

impl ClientTransport {
    pub(crate) fn new(socket: WebSocketStream<TcpStream>) -> Self {
        Self {
            inner: WsTransport::new(socket),
            peer_closed: false,
        }
    }
}

impl Stream for ClientTransport {
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(Frame::Close(_)))) = &polled {
            self.peer_closed = true;
        }
        polled
    }
}

impl Sink<Frame> for ClientTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.peer_closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.peer_closed {
            return match frame {
                Frame::Close(_) => Ok(()),
                _ => Err(TransportError::AlreadyClosed),
            };
        }
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            // The queued close reply went out and tungstenite ended the connection: done.
            Poll::Ready(Err(TransportError::AlreadyClosed)) if self.peer_closed => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match Pin::new(&mut self.inner).poll_close(cx) {
            Poll::Ready(Err(TransportError::AlreadyClosed)) if self.peer_closed => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
