//! Adapter from `tokio-tungstenite` to the relay's [`FrameTransport`](proxy_core::FrameTransport)
//! seam: the `relayed_tungstenite` comparison column of `ws_loopback`, the path the proxy took
//! before it had its own codec ([`proxy_wire::WireTransport`]). Not used by any production crate.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_util::{Sink, Stream};
use proxy_core::{CloseFrame, Frame, TransportError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// tungstenite's read buffer on a relayed WebSocket (see [`relay_websocket_config`]).
///
/// tungstenite allocates its read buffer when the WebSocket opens, zero-fills up to this many
/// bytes before every read and reads at most this many bytes per call, so the size is both the
/// memory an idle connection holds and a cost on every read. Under a [`ReadAhead`] the socket
/// is still read in large chunks, so this stays small.
pub const RELAY_READ_BUFFER_BYTES: usize = 2 * 1024;

/// How many bytes a [`ReadAhead`] asks its stream for in one read.
pub const READ_AHEAD_BYTES: usize = 64 * 1024;

/// tungstenite settings for a WebSocket that [`relay`](proxy_core::relay) moves frames through:
/// the defaults with a [`RELAY_READ_BUFFER_BYTES`] read buffer instead of 128 KiB. Use it over a
/// [`ReadAhead`] stream; set the message and frame size limits on top.
pub fn relay_websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(RELAY_READ_BUFFER_BYTES)
}

/// A read-ahead buffer that exists only while its stream is busy.
///
/// A read first goes straight into the caller's buffer. Only when that read fills it (so more
/// is probably waiting) does the next read ask the inner stream for [`READ_AHEAD_BYTES`] at once
/// and serve the caller from that, so a WebSocket with a small read buffer still reads the socket
/// in large chunks under load. The read-ahead buffer is released as soon as the stream has been
/// drained (a short read fully handed out, or `Pending`): a quiet or lightly used connection
/// holds no read-ahead memory, and small messages are never copied twice. Writes pass straight
/// through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read from `inner` and not yet handed out; no allocation while quiet.
    ahead: BytesMut,
    /// The last read from `inner` filled its buffer: read ahead next time.
    busy: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`; nothing is allocated until reads fill the caller's buffer.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ahead: BytesMut::new(),
            busy: false,
        }
    }

    /// The wrapped stream, by reference.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many bytes are buffered: read from the stream, not yet handed out.
    pub fn buffered(&self) -> usize {
        self.ahead.len()
    }

    /// Bytes of read-ahead memory held right now (zero while the stream is quiet).
    pub fn buffer_capacity(&self) -> usize {
        self.ahead.capacity()
    }

    fn release(&mut self) {
        self.ahead = BytesMut::new();
        self.busy = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead.is_empty() {
            if !this.busy || buf.remaining() == 0 || buf.remaining() >= READ_AHEAD_BYTES {
                let wanted = buf.remaining();
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
                this.busy = matches!(polled, Poll::Ready(Ok(())))
                    && wanted > 0
                    && buf.filled().len() - before == wanted;
                return polled;
            }
            // Reuses the allocation while busy (nothing is buffered, so nothing moves).
            this.ahead.reserve(READ_AHEAD_BYTES);
            let room = this.ahead.capacity();
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.ahead) {
                Poll::Pending => {
                    this.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(read)) => this.busy = read == room,
            }
        }
        let handed_out = buf.remaining().min(this.ahead.len());
        buf.put_slice(&this.ahead[..handed_out]);
        this.ahead.advance(handed_out);
        if this.ahead.is_empty() && !this.busy {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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
        Frame::MaskedBinary(payload) => Message::Binary(payload.unmask()),
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
        E::Io(io) => io_transport_error(io),
        E::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            TransportError::MessageTooLarge {
                size,
                limit: max_size,
            }
        }
        other => TransportError::Protocol(Box::new(other)),
    }
}

/// Maps a socket error onto the relay's transport error: a reset, abort, broken pipe or early
/// EOF means the peer vanished ([`TransportError::ConnectionLost`]).
pub fn io_transport_error(error: io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            TransportError::ConnectionLost
        }
        _ => TransportError::Io(error),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::future::poll_fn;

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    use test_support::tcp_pair;

    fn pattern(len: usize) -> Vec<u8> {
        test_support::pattern(len, 0)
    }

    #[tokio::test]
    async fn small_reads_come_from_one_large_read_and_the_buffer_goes_when_quiet() {
        let (near, mut far) = tcp_pair().await;
        let mut reader = ReadAhead::new(near);
        assert_eq!(reader.buffer_capacity(), 0);
        let sent = pattern(10_000);
        // On loopback the whole write is queued at the receiver when write_all returns.
        far.write_all(&sent).await.unwrap();

        let mut chunk = [0u8; 1024];
        // The first read fills the caller's buffer directly, the second reads ahead.
        reader.read_exact(&mut chunk).await.unwrap();
        assert_eq!(reader.buffer_capacity(), 0);
        let mut received = chunk.to_vec();
        reader.read_exact(&mut chunk).await.unwrap();
        received.extend_from_slice(&chunk);
        assert_eq!(reader.buffered(), sent.len() - received.len());
        while received.len() < sent.len() {
            let read = reader.read(&mut chunk).await.unwrap();
            received.extend_from_slice(&chunk[..read]);
        }
        assert_eq!(received, sent);
        assert_eq!(
            reader.buffer_capacity(),
            0,
            "drained stream still holds a buffer"
        );

        let polled = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut chunk);
            Poll::Ready(Pin::new(&mut reader).poll_read(cx, &mut buf))
        })
        .await;
        assert!(polled.is_pending());
        assert_eq!(
            reader.buffer_capacity(),
            0,
            "quiet stream still holds a buffer"
        );

        drop(far);
        assert_eq!(reader.read(&mut chunk).await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn large_and_small_messages_cross_a_small_read_buffer_intact() {
        let (server_socket, client_socket) = tcp_pair().await;
        let mut server = WebSocketStream::from_raw_socket(
            ReadAhead::new(server_socket),
            Role::Server,
            Some(relay_websocket_config()),
        )
        .await;
        let mut client = WebSocketStream::from_raw_socket(client_socket, Role::Client, None).await;
        let large = pattern(300 * 1024);
        let messages: Vec<Vec<u8>> = std::iter::once(large.clone())
            .chain((0..100).map(|i| pattern(i * 37 + 1)))
            .chain(std::iter::once(large))
            .collect();

        let send = async {
            for message in &messages {
                client
                    .feed(Message::Binary(message.clone().into()))
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
        };
        let receive = async {
            let mut received = Vec::new();
            while received.len() < messages.len() {
                match server.next().await.unwrap().unwrap() {
                    Message::Binary(data) => received.push(data.to_vec()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            received
        };
        let ((), received) = tokio::join!(send, receive);
        assert_eq!(received, messages);
    }
}
