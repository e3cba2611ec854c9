//! [`WireTransport`]: the relay's own WebSocket frame codec, for both legs of a session.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use proxy_core::{CloseFrame, Frame, MaskedPayload, TransportError, apply_mask};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::deflate::{
    DEFLATE_MIN_MESSAGE_BYTES, InflateError, PerMessageDeflate, deflate_message, inflate_message,
};
use crate::frame_header::{FrameHeader, HeaderError, OpCode, is_sendable_close_code};

/// Bytes asked of the socket per read while data keeps coming (the last read filled the room it
/// was given).
pub const WIRE_READ_CHUNK_BYTES: usize = 256 * 1024;

/// Bytes asked of the socket per read when the last read did not fill its room: small enough to
/// come from the allocator's fast paths, large enough for a burst of input events.
const QUIET_READ_BYTES: usize = 8 * 1024;

/// A payload at least this long is written as a segment of its own instead of being copied, and
/// a browser's binary message this long is passed on still masked; shorter payloads are copied
/// (and unmasked), which is cheaper than the bookkeeping.
const SEGMENT_MIN_BYTES: usize = 4 * 1024;

/// The most bytes reserved at once for the rest of one large frame.
const LARGE_FRAME_READ_BYTES: usize = 1024 * 1024;

/// Queued output beyond which the sink reports "not ready" until some of it is written.
const WRITE_HIGH_WATER_BYTES: usize = 256 * 1024;

/// The most segments handed to one vectored write.
const SEGMENTS_PER_WRITE: usize = 64;

/// Which end of the WebSocket this side of the relay plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireRole {
    /// We opened the connection (the upstream leg): frames we send are masked, frames we
    /// receive must not be.
    Client,
    /// We accepted the connection (the browser leg): frames we receive must be masked, frames
    /// we send are not.
    Server,
}

/// Size limits for received frames and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireLimits {
    /// The largest message (all fragments together) accepted; `None` for no limit.
    pub max_message_size: Option<usize>,
    /// The largest single frame accepted; `None` for no limit.
    pub max_frame_size: Option<usize>,
}

impl WireLimits {
    /// No limits at all (what [`Default`] gives): for tests and trusted peers only.
    pub const UNLIMITED: Self = Self {
        max_message_size: None,
        max_frame_size: None,
    };

    /// The same limit for frames and messages.
    pub fn max_message(bytes: usize) -> Self {
        Self {
            max_message_size: Some(bytes),
            max_frame_size: Some(bytes),
        }
    }
}

/// Why a received frame was refused as a protocol violation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireProtocolError {
    /// The frame header itself is invalid.
    #[error("invalid frame header")]
    Header(#[source] HeaderError),
    /// An RSV bit was set that no negotiated extension defines (RSV1 is permessage-deflate's,
    /// on the first frame of a data message only).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A message compressed with permessage-deflate is not valid deflate data.
    #[error("the compressed message does not inflate")]
    InvalidCompressedData(#[source] flate2::DecompressError),
    /// An opcode the protocol reserves.
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// A client sent an unmasked frame.
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A server sent a masked frame.
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// A control frame was fragmented or longer than 125 bytes.
    #[error("invalid control frame")]
    InvalidControlFrame,
    /// A continuation frame arrived with no fragmented message open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data message started while a fragmented one was still open.
    #[error("new message before the fragmented one was finished")]
    UnfinishedFragmentedMessage,
    /// A text message or close reason was not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8(#[source] std::str::Utf8Error),
    /// A close frame had a one-byte payload or a code that may not be sent.
    #[error("invalid close frame (code {0:?})")]
    InvalidCloseFrame(Option<u16>),
}

impl From<WireProtocolError> for TransportError {
    fn from(error: WireProtocolError) -> Self {
        match error {
            WireProtocolError::InvalidUtf8(_) => TransportError::InvalidPayload(Box::new(error)),
            other => TransportError::Protocol(Box::new(other)),
        }
    }
}

/// A WebSocket connection, after its handshake, seen as a stream and sink of relay
/// [`Frame`]s: the relay's own frame codec, for both legs of a session.
///
/// A general-purpose WebSocket library (tungstenite, say) copies every payload from its read
/// buffer into a message and again into its write buffer, and a relay on it unmasks every byte
/// a browser sends only to mask it again for the upstream. Neither is needed: a server's frames
/// are unmasked on both legs, and a browser's masked frame is already a valid frame for the
/// upstream, where the proxy is the client. This codec therefore
///
/// - reads into a buffer that exists only while data is arriving (released when the socket is
///   drained, so an idle session holds no read or write buffer at all): 8 KiB per read while
///   the socket is quiet, 256 KiB while data keeps coming, and a frame larger than that into an
///   allocation of its own, straight from the socket;
/// - cuts payloads out of that buffer without copying; a whole binary message of 4 KiB or more
///   from a browser stays masked ([`Frame::MaskedBinary`]), smaller ones and everything else are
///   unmasked in place;
/// - writes a frame as its header plus the payload [`Bytes`] with one vectored write for many
///   frames, copying only small payloads; as a client it sends a [`Frame::MaskedBinary`] with the
///   browser's own mask, untouched, and masks other payloads (in place when nobody else holds
///   them).
///
/// Frame headers are parsed and formatted by [`FrameHeader`](crate::FrameHeader). Pings are answered with pongs by the transport, close frames are parsed and
/// validated as RFC 6455 asks, fragmented messages are joined, text is checked to be UTF-8, and
/// frames and messages over the configured limits are refused. The relay's reply to a received
/// close is sent as the relay gives it; after a close frame has been received the stream ends.
#[derive(Debug)]
pub struct WireTransport<S> {
    stream: S,
    role: WireRole,
    limits: WireLimits,
    read: ReadState,
    write: WriteState,
    close_received: bool,
    close_sent: bool,
    /// permessage-deflate was negotiated: RSV1 marks compressed messages both ways.
    deflate: bool,
}

/// A fragmented message being joined.
#[derive(Debug)]
struct OpenMessage {
    is_text: bool,
    /// Its first frame had RSV1 set: the joined payload is deflated.
    compressed: bool,
    data: BytesMut,
}

#[derive(Debug, Default)]
struct ReadState {
    /// Bytes read and not yet parsed; no allocation while the socket is quiet.
    buffer: BytesMut,
    /// The last read filled the room it was given: more is probably waiting.
    busy: bool,
    /// Length (header included) of the frame at the start of `buffer`, once its header is in.
    frame_len: Option<usize>,
    /// A fragmented message being joined.
    fragments: Option<OpenMessage>,
    /// The socket reached end of stream.
    ended: bool,
}

#[derive(Debug, Default)]
struct WriteState {
    /// Headers and small payloads, appended until the next segment boundary.
    staging: BytesMut,
    /// Encoded output in order, waiting to be written.
    segments: VecDeque<Bytes>,
    /// Bytes in `staging` and `segments` together.
    queued: usize,
}

impl<S> WireTransport<S> {
    /// Wraps a connection whose WebSocket handshake is complete.
    pub fn new(stream: S, role: WireRole, limits: WireLimits) -> Self {
        Self::from_partially_read(stream, role, limits, BytesMut::new())
    }

    /// Wraps a connection whose handshake read `already_read` bytes past its end (the start of
    /// the first frames).
    pub fn from_partially_read(
        stream: S,
        role: WireRole,
        limits: WireLimits,
        already_read: BytesMut,
    ) -> Self {
        Self {
            stream,
            role,
            limits,
            read: ReadState {
                buffer: already_read,
                ..ReadState::default()
            },
            write: WriteState::default(),
            close_received: false,
            close_sent: false,
            deflate: false,
        }
    }

    /// With `Some`, messages are compressed as negotiated (permessage-deflate, see
    /// [`PerMessageDeflate`]): received messages with RSV1 are inflated, and sent data messages
    /// of [`DEFLATE_MIN_MESSAGE_BYTES`] or more are deflated when that makes them smaller.
    pub fn with_permessage_deflate(mut self, deflate: Option<PerMessageDeflate>) -> Self {
        self.deflate = deflate.is_some();
        self
    }

    /// Whether permessage-deflate is on for this connection.
    pub fn permessage_deflate(&self) -> bool {
        self.deflate
    }

    /// The connection underneath, by reference.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Bytes of buffer memory this transport holds right now (zero while quiet).
    pub fn buffer_capacity(&self) -> usize {
        self.read.buffer.capacity()
            + self.write.staging.capacity()
            + self.write.segments.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The relay's view of a socket error: a peer that went away is [`TransportError::ConnectionLost`].
pub(crate) fn io_transport_error(error: std::io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            TransportError::ConnectionLost
        }
        _ => TransportError::Io(error),
    }
}

fn check_limit(size: usize, limit: Option<usize>) -> Result<(), TransportError> {
    match limit {
        Some(limit) if size > limit => Err(TransportError::MessageTooLarge { size, limit }),
        _ => Ok(()),
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, WireProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WireProtocolError::InvalidCloseFrame(None)),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_sendable_close_code(code) {
                return Err(WireProtocolError::InvalidCloseFrame(Some(code)));
            }
            let reason = std::str::from_utf8(reason).map_err(WireProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame::new(code, reason)))
        }
    }
}

/// A parsed frame taken out of the read buffer, still masked if it came masked.
struct RawFrame {
    is_final: bool,
    /// RSV1: the first frame of a deflated message.
    compressed: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WireTransport<S> {
    /// Takes the next complete frame out of the read buffer, if one is there.
    fn parse_buffered(&mut self) -> Result<Option<RawFrame>, TransportError> {
        let read = &mut self.read;
        let Some((header, header_len)) =
            FrameHeader::parse(&read.buffer).map_err(WireProtocolError::Header)?
        else {
            return Ok(None);
        };
        if let OpCode::Reserved(code) = header.opcode {
            return Err(WireProtocolError::ReservedOpcode(code).into());
        }
        let payload_len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
        check_limit(payload_len, self.limits.max_frame_size)?;
        check_limit(payload_len, self.limits.max_message_size)?;
        let [compressed, rsv2, rsv3] = header.reserved_bits;
        let deflate_start = matches!(header.opcode, OpCode::Text | OpCode::Binary) && self.deflate;
        if rsv2 || rsv3 || (compressed && !deflate_start) {
            return Err(WireProtocolError::ReservedBits.into());
        }
        match (self.role, header.mask) {
            (WireRole::Server, None) => return Err(WireProtocolError::UnmaskedClientFrame.into()),
            (WireRole::Client, Some(_)) => return Err(WireProtocolError::MaskedServerFrame.into()),
            _ => {}
        }
        if header.opcode.is_control() && (!header.is_final || payload_len > 125) {
            return Err(WireProtocolError::InvalidControlFrame.into());
        }
        let frame_len = header_len.saturating_add(payload_len);
        if read.buffer.len() < frame_len {
            read.frame_len = Some(frame_len);
            return Ok(None);
        }
        read.frame_len = None;
        let payload = read.buffer.split_to(frame_len).split_off(header_len);
        if read.buffer.is_empty() {
            // Let go of the shared allocation, so a payload that filled it is owned alone.
            read.buffer = BytesMut::new();
        }
        Ok(Some(RawFrame {
            is_final: header.is_final,
            compressed,
            opcode: header.opcode,
            mask: header.mask,
            payload,
        }))
    }

    /// Turns a raw frame into what the relay sees; `None` while a fragmented message is open.
    fn accept_frame(&mut self, raw: RawFrame) -> Result<Option<Frame>, TransportError> {
        let RawFrame {
            is_final,
            compressed,
            opcode,
            mask,
            mut payload,
        } = raw;
        if let Some(mask) = mask {
            let whole_binary_message = is_final
                && opcode == OpCode::Binary
                && !compressed
                && self.read.fragments.is_none();
            if whole_binary_message && payload.len() >= SEGMENT_MIN_BYTES {
                // Passed on masked: the upstream leg sends it as it came.
                let payload = MaskedPayload::new(payload.freeze(), mask);
                return Ok(Some(Frame::MaskedBinary(payload)));
            }
            apply_mask(&mut payload, mask);
        }
        let data = match opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if !self.close_sent {
                    self.encode(OpCode::Pong, payload.clone(), None, false)?;
                }
                return Ok(Some(Frame::Ping(payload)));
            }
            OpCode::Pong => return Ok(Some(Frame::Pong(payload.freeze()))),
            OpCode::Close => {
                self.close_received = true;
                return Ok(Some(Frame::Close(parse_close(&payload)?)));
            }
            OpCode::Continuation => {
                let Some(mut open) = self.read.fragments.take() else {
                    return Err(WireProtocolError::UnexpectedContinuation.into());
                };
                check_limit(
                    open.data.len().saturating_add(payload.len()),
                    self.limits.max_message_size,
                )?;
                open.data.extend_from_slice(&payload);
                if !is_final {
                    self.read.fragments = Some(open);
                    return Ok(None);
                }
                open
            }
            OpCode::Text | OpCode::Binary => {
                if self.read.fragments.is_some() {
                    return Err(WireProtocolError::UnfinishedFragmentedMessage.into());
                }
                let open = OpenMessage {
                    is_text: opcode == OpCode::Text,
                    compressed,
                    data: payload,
                };
                if !is_final {
                    self.read.fragments = Some(open);
                    return Ok(None);
                }
                open
            }
            OpCode::Reserved(code) => {
                return Err(WireProtocolError::ReservedOpcode(code).into());
            }
        };
        let OpenMessage {
            is_text,
            compressed,
            data,
        } = data;
        let payload = if compressed {
            let limit = self.limits.max_message_size;
            inflate_message(&data, limit).map_err(|error| match error {
                InflateError::TooLarge { limit } => TransportError::MessageTooLarge {
                    size: limit.saturating_add(1),
                    limit,
                },
                InflateError::Corrupt(source) => {
                    WireProtocolError::InvalidCompressedData(source).into()
                }
            })?
        } else {
            data.freeze()
        };
        if is_text {
            std::str::from_utf8(&payload).map_err(WireProtocolError::InvalidUtf8)?;
            Ok(Some(Frame::Text(payload)))
        } else {
            Ok(Some(Frame::Binary(payload)))
        }
    }

    /// How many bytes the next read should ask for.
    fn next_read_size(&self) -> usize {
        let chunk = if self.read.busy {
            WIRE_READ_CHUNK_BYTES
        } else {
            QUIET_READ_BYTES
        };
        match self.read.frame_len {
            // The rest of a frame larger than a chunk: an allocation of its own.
            Some(frame_len) if frame_len - self.read.buffer.len() > WIRE_READ_CHUNK_BYTES => {
                (frame_len - self.read.buffer.len()).min(LARGE_FRAME_READ_BYTES)
            }
            // At least the rest of the frame, so it completes in one read if it has arrived.
            Some(frame_len) => (frame_len - self.read.buffer.len()).max(chunk),
            None => chunk,
        }
    }

    /// Reads once into the buffer: `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, TransportError>> {
        let wanted = self.next_read_size();
        let read = &mut self.read;
        read.buffer.reserve(wanted);
        let mut room = (&mut read.buffer).limit(wanted);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut room) {
            Poll::Pending => {
                if read.buffer.is_empty() {
                    read.buffer = BytesMut::new();
                }
                read.busy = false;
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(io_transport_error(error))),
            Poll::Ready(Ok(0)) => {
                read.ended = true;
                Poll::Ready(Ok(false))
            }
            Poll::Ready(Ok(count)) => {
                read.busy = count == wanted;
                Poll::Ready(Ok(true))
            }
        }
    }

    /// Appends one frame to the output queue. `premasked` is the mask a client-role payload
    /// already carries (the browser's); otherwise a client-role payload is masked here.
    /// `compressed` sets RSV1 (a deflated message).
    fn encode(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        premasked: Option<[u8; 4]>,
        compressed: bool,
    ) -> Result<(), TransportError> {
        let (mask, to_mask) = match (self.role, premasked) {
            (WireRole::Client, Some(mask)) => (Some(mask), None),
            (WireRole::Client, None) => {
                let mask = rand::random::<[u8; 4]>();
                (Some(mask), Some(mask))
            }
            (WireRole::Server, _) => (None, None),
        };
        let header = FrameHeader {
            is_final: true,
            reserved_bits: [compressed, false, false],
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let write = &mut self.write;
        write.queued += header.len() + payload.len();
        header.write_to(&mut write.staging);
        let payload = if payload.len() < SEGMENT_MIN_BYTES {
            Err(payload)
        } else {
            match to_mask {
                None => Ok(payload),
                Some(mask) => match payload.try_into_mut() {
                    Ok(mut owned) => {
                        apply_mask(&mut owned, mask);
                        Ok(owned.freeze())
                    }
                    Err(shared) => Err(shared),
                },
            }
        };
        match payload {
            Ok(segment) => {
                let staged = write.staging.split().freeze();
                write.segments.push_back(staged);
                write.segments.push_back(segment);
            }
            Err(small) => {
                let start = write.staging.len();
                write.staging.extend_from_slice(&small);
                if let Some(mask) = to_mask {
                    apply_mask(&mut write.staging[start..], mask);
                }
            }
        }
        Ok(())
    }

    /// Writes queued output until all of it is written or the socket is full.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let write = &mut self.write;
        if !write.staging.is_empty() {
            let staged = write.staging.split().freeze();
            write.segments.push_back(staged);
        }
        while !write.segments.is_empty() {
            // On the stack: this runs for every write on the data path.
            let mut slices = [IoSlice::new(&[]); SEGMENTS_PER_WRITE];
            let mut count = 0;
            for (slice, segment) in slices.iter_mut().zip(&write.segments) {
                *slice = IoSlice::new(segment);
                count += 1;
            }
            let written =
                ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))
                    .map_err(io_transport_error)?;
            if written == 0 {
                return Poll::Ready(Err(TransportError::ConnectionLost));
            }
            write.queued -= written;
            let mut left = written;
            while left > 0 {
                let Some(front) = write.segments.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    write.segments.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        // Drained: keep no memory for a quiet connection.
        write.staging = BytesMut::new();
        write.segments = VecDeque::new();
        Pin::new(&mut self.stream)
            .poll_flush(cx)
            .map_err(io_transport_error)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WireTransport<S> {
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.close_received || this.read.ended {
            return Poll::Ready(None);
        }
        // Pongs queued while reading go out without waiting for the relay's next flush.
        if this.write.queued > 0
            && let Poll::Ready(Err(error)) = this.poll_write_out(cx)
        {
            return Poll::Ready(Some(Err(error)));
        }
        loop {
            match this.parse_buffered() {
                Err(error) => return Poll::Ready(Some(Err(error))),
                Ok(Some(raw)) => match this.accept_frame(raw) {
                    Err(error) => return Poll::Ready(Some(Err(error))),
                    Ok(Some(frame)) => {
                        if matches!(frame, Frame::Ping(_)) {
                            // Best effort; a failure shows on the next write.
                            let _ = this.poll_write_out(cx);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(None) => continue,
                },
                Ok(None) => {}
            }
            match ready!(this.poll_fill(cx)) {
                Err(error) => return Poll::Ready(Some(Err(error))),
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Some(Err(TransportError::ConnectionLost))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for WireTransport<S> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self;
        if this.write.queued >= WRITE_HIGH_WATER_BYTES {
            if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(error));
            }
            if this.write.queued >= WRITE_HIGH_WATER_BYTES {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.close_sent {
            return Err(TransportError::AlreadyClosed);
        }
        let mut premasked = None;
        let (opcode, payload) = match frame {
            Frame::Binary(data) => (OpCode::Binary, data),
            Frame::MaskedBinary(payload) => match self.role {
                WireRole::Client => {
                    premasked = Some(payload.mask());
                    (OpCode::Binary, payload.masked_bytes().clone())
                }
                WireRole::Server => (OpCode::Binary, payload.unmask()),
            },
            Frame::Text(data) => {
                std::str::from_utf8(&data).map_err(WireProtocolError::InvalidUtf8)?;
                (OpCode::Text, data)
            }
            Frame::Ping(data) => (OpCode::Ping, data),
            Frame::Pong(data) => (OpCode::Pong, data),
            Frame::Close(close) => {
                self.close_sent = true;
                let payload = match close {
                    None => Bytes::new(),
                    Some(close) => {
                        let close = CloseFrame::new(close.code, close.reason);
                        let mut payload = BytesMut::with_capacity(2 + close.reason.len());
                        payload.put_u16(close.code);
                        payload.put_slice(close.reason.as_bytes());
                        payload.freeze()
                    }
                };
                (OpCode::Close, payload)
            }
        };
        let is_data = matches!(opcode, OpCode::Binary | OpCode::Text);
        if self.deflate
            && is_data
            && premasked.is_none()
            && payload.len() >= DEFLATE_MIN_MESSAGE_BYTES
            && let Some(compressed) = deflate_message(&payload)
        {
            return self.encode(opcode, compressed, None, true);
        }
        self.encode(opcode, payload, premasked, false)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_write_out(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.stream)
            .poll_shutdown(cx)
            .map_err(io_transport_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payloads_are_validated() {
        assert_eq!(parse_close(&[]).unwrap(), None);
        assert!(parse_close(&[3]).is_err());
        let close = parse_close(&[0x03, 0xE8, b'b', b'y', b'e'])
            .unwrap()
            .unwrap();
        assert_eq!((close.code, close.reason.as_str()), (1000, "bye"));
        // 1005 and 1006 are reserved for APIs and must never be sent.
        assert!(parse_close(&1005u16.to_be_bytes()).is_err());
        assert!(parse_close(&1006u16.to_be_bytes()).is_err());
        assert!(
            parse_close(&[0x0F, 0xA1, 0xFF]).is_err(),
            "reason not UTF-8"
        );
        assert_eq!(
            parse_close(&4001u16.to_be_bytes()).unwrap().unwrap().code,
            4001
        );
    }
}
