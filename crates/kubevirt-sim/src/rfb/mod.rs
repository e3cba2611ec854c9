//! A small RFB (VNC) server, RFC 6143 version 3.8 (3.7 and 3.3 clients are served too):
//! security type None, Raw encoding, true-colour pixel formats of 8, 16 or 32 bits per pixel,
//! FramebufferUpdateRequest answered incrementally from a shared [`Console`].
//!
//! [`serve_rfb`] speaks the protocol over any byte stream; the simulator runs it behind the
//! WebSocket of the VNC subresource, and a test could as well run it on a TCP socket for a
//! desktop VNC viewer.
//!
//! # Why not `proxy-rfb`
//!
//! This server, its pixel formats and its screen are written apart from the proxy's own RFB
//! layer on purpose: it is the *independent oracle* the proxy's RFB code is tested against. The
//! observer filter, the recordings and the shared consoles' hub parse and re-encode what this
//! server sends; if both sides shared one parser or one pixel-format converter, a bug in it
//! would be agreed on by both and no test would see it. So the simulator depends on no proxy
//! crate for RFB, and the two implementations meet only on the wire (noVNC and QEMU are the
//! other two independent peers, in `e2e/`). Keep it that way: fix a protocol misunderstanding
//! in each, not by sharing code.

mod console;
mod font;
mod pixel;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub use console::{
    BAR_COLOURS, Console, MAX_SIZE, MIN_SIZE, PANEL_COLOUR, PANEL_HEIGHT, POINTER_COLOUR, Rect,
    RfbOptions, TEXT_COLOUR, TITLE, TYPED_COLOUR, TYPED_LINES,
};
pub use pixel::{PixelFormat, UnsupportedPixelFormat};

use console::Damage;
use pixel::PIXEL_FORMAT_LEN;

/// The version the server announces.
pub const PROTOCOL_VERSION: &[u8; 12] = b"RFB 003.008\n";
/// RFB security type "None".
pub const SECURITY_NONE: u8 = 1;
/// RFB Raw encoding.
pub const ENCODING_RAW: i32 = 0;
/// Longest ClientCutText the server reads (and discards).
pub const MAX_CUT_TEXT_BYTES: u32 = 1024 * 1024;

const MESSAGE_SET_PIXEL_FORMAT: u8 = 0;
const MESSAGE_SET_ENCODINGS: u8 = 2;
const MESSAGE_FRAMEBUFFER_UPDATE_REQUEST: u8 = 3;
const MESSAGE_KEY_EVENT: u8 = 4;
const MESSAGE_POINTER_EVENT: u8 = 5;
const MESSAGE_CLIENT_CUT_TEXT: u8 = 6;
const MESSAGE_FRAMEBUFFER_UPDATE: u8 = 0;
const MAX_ENCODINGS: u16 = 1024;
const CLIENT_MESSAGE_QUEUE: usize = 64;
/// More pending changed rectangles than this are merged into their bounding box.
const MAX_PENDING_RECTS: usize = 32;

/// Why an RFB session ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RfbError {
    /// Reading from or writing to the client failed (including the client going away mid-message).
    #[error("RFB connection failed")]
    Io(#[from] std::io::Error),
    /// The client's ProtocolVersion is not `RFB 003.00x`.
    #[error("the client sent a malformed ProtocolVersion")]
    BadProtocolVersion,
    /// The client picked a security type the server did not offer.
    #[error("the client chose security type {0}, only None (1) is offered")]
    UnsupportedSecurityType(u8),
    /// The client asked for a pixel format the server cannot produce.
    #[error("the client asked for an unsupported pixel format")]
    PixelFormat(#[from] UnsupportedPixelFormat),
    /// The client sent a message type this server does not know (it cannot be skipped).
    #[error("the client sent unknown message type {0}")]
    UnknownMessage(u8),
    /// A SetEncodings or ClientCutText message is larger than the server accepts.
    #[error("the client sent an oversized {0} message")]
    Oversized(&'static str),
}

/// A message from the client, as far as the server acts on it.
#[derive(Debug)]
enum ClientMessage {
    SetPixelFormat(PixelFormat),
    SetEncodings(Vec<i32>),
    UpdateRequest { incremental: bool, region: Rect },
    Key { down: bool, keysym: u32 },
    Pointer { buttons: u8, x: u16, y: u16 },
    CutText { bytes: u32 },
}

/// Serves one RFB session on `stream`, showing `console`, until the client goes away.
///
/// A client that closes its side cleanly between messages ends the session with `Ok(())`.
pub async fn serve_rfb<S>(
    stream: S,
    console: Arc<Console>,
    desktop_name: &str,
) -> Result<(), RfbError>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    handshake(&mut reader, &mut writer, &console, desktop_name).await?;
    let (messages, mut incoming) = mpsc::channel(CLIENT_MESSAGE_QUEUE);
    let read_loop = async move {
        while let Some(message) = read_client_message(&mut reader).await? {
            if messages.send(message).await.is_err() {
                break;
            }
        }
        Ok::<(), RfbError>(())
    };
    let mut session = Session::new(console);
    let write_loop = async move {
        let mut changes = session.console.subscribe();
        loop {
            tokio::select! {
                message = incoming.recv() => match message {
                    Some(message) => session.handle(message, &mut writer).await?,
                    None => return Ok(()),
                },
                changed = changes.changed(), if session.pending.is_some() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    session.answer_pending(&mut writer).await?;
                }
            }
        }
    };
    tokio::select! {
        result = read_loop => result,
        result = write_loop => result,
    }
}

async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    console: &Console,
    desktop_name: &str,
) -> Result<(), RfbError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(PROTOCOL_VERSION).await?;
    writer.flush().await?;
    let mut version = [0u8; 12];
    reader.read_exact(&mut version).await?;
    let minor = parse_client_version(&version)?;
    if minor >= 7 {
        writer.write_all(&[1, SECURITY_NONE]).await?;
        writer.flush().await?;
        let chosen = reader.read_u8().await?;
        if chosen != SECURITY_NONE {
            if minor >= 8 {
                let reason = b"only security type None is offered";
                writer.write_u32(1).await?;
                writer.write_u32(reason.len() as u32).await?;
                writer.write_all(reason).await?;
                writer.flush().await?;
            }
            return Err(RfbError::UnsupportedSecurityType(chosen));
        }
        if minor >= 8 {
            writer.write_u32(0).await?;
        }
    } else {
        writer.write_u32(u32::from(SECURITY_NONE)).await?;
    }
    writer.flush().await?;
    let _shared_flag = reader.read_u8().await?;
    let (width, height) = console.size();
    let mut server_init = Vec::with_capacity(24 + desktop_name.len());
    server_init.extend_from_slice(&width.to_be_bytes());
    server_init.extend_from_slice(&height.to_be_bytes());
    server_init.extend_from_slice(&PixelFormat::SERVER_NATIVE.to_bytes());
    server_init.extend_from_slice(&(desktop_name.len() as u32).to_be_bytes());
    server_init.extend_from_slice(desktop_name.as_bytes());
    writer.write_all(&server_init).await?;
    writer.flush().await?;
    Ok(())
}

/// The minor version a client speaks; unknown minors below 7 are served as 3.3 and above 8 as
/// 3.8, as RFC 6143 §7.1.1 asks.
fn parse_client_version(version: &[u8; 12]) -> Result<u8, RfbError> {
    let text = std::str::from_utf8(version).map_err(|_| RfbError::BadProtocolVersion)?;
    let numbers = text
        .strip_prefix("RFB ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|rest| rest.split_once('.'))
        .ok_or(RfbError::BadProtocolVersion)?;
    let major: u16 = numbers
        .0
        .parse()
        .map_err(|_| RfbError::BadProtocolVersion)?;
    let minor: u16 = numbers
        .1
        .parse()
        .map_err(|_| RfbError::BadProtocolVersion)?;
    match (major, minor) {
        (3, 0..=6) => Ok(3),
        (3, 7) => Ok(7),
        (3, _) => Ok(8),
        _ => Err(RfbError::BadProtocolVersion),
    }
}

/// Reads the next client message; `None` when the client closed between messages.
async fn read_client_message<R>(reader: &mut R) -> Result<Option<ClientMessage>, RfbError>
where
    R: AsyncRead + Unpin,
{
    let mut message_type = [0u8; 1];
    if reader.read(&mut message_type).await? == 0 {
        return Ok(None);
    }
    let message = match message_type[0] {
        MESSAGE_SET_PIXEL_FORMAT => {
            let mut body = [0u8; 3 + PIXEL_FORMAT_LEN];
            reader.read_exact(&mut body).await?;
            let mut format = [0u8; PIXEL_FORMAT_LEN];
            format.copy_from_slice(&body[3..]);
            ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&format))
        }
        MESSAGE_SET_ENCODINGS => {
            let _padding = reader.read_u8().await?;
            let count = reader.read_u16().await?;
            if count > MAX_ENCODINGS {
                return Err(RfbError::Oversized("SetEncodings"));
            }
            let mut encodings = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                encodings.push(reader.read_i32().await?);
            }
            ClientMessage::SetEncodings(encodings)
        }
        MESSAGE_FRAMEBUFFER_UPDATE_REQUEST => {
            let incremental = reader.read_u8().await? != 0;
            let x = reader.read_u16().await?;
            let y = reader.read_u16().await?;
            let width = reader.read_u16().await?;
            let height = reader.read_u16().await?;
            ClientMessage::UpdateRequest {
                incremental,
                region: Rect::new(x, y, width, height),
            }
        }
        MESSAGE_KEY_EVENT => {
            let down = reader.read_u8().await? != 0;
            let _padding = reader.read_u16().await?;
            let keysym = reader.read_u32().await?;
            ClientMessage::Key { down, keysym }
        }
        MESSAGE_POINTER_EVENT => {
            let buttons = reader.read_u8().await?;
            let x = reader.read_u16().await?;
            let y = reader.read_u16().await?;
            ClientMessage::Pointer { buttons, x, y }
        }
        MESSAGE_CLIENT_CUT_TEXT => {
            let mut padding = [0u8; 3];
            reader.read_exact(&mut padding).await?;
            // The extended-clipboard extension sends a negative length.
            let bytes = reader.read_i32().await?.unsigned_abs();
            if bytes > MAX_CUT_TEXT_BYTES {
                return Err(RfbError::Oversized("ClientCutText"));
            }
            let copied = tokio::io::copy(
                &mut (&mut *reader).take(u64::from(bytes)),
                &mut tokio::io::sink(),
            )
            .await?;
            if copied < u64::from(bytes) {
                return Err(RfbError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            ClientMessage::CutText { bytes }
        }
        unknown => return Err(RfbError::UnknownMessage(unknown)),
    };
    Ok(Some(message))
}

/// One client's view of the console: its pixel format, the changes it has not been sent yet
/// and an incremental request waiting for a change.
struct Session {
    console: Arc<Console>,
    format: PixelFormat,
    seen_generation: u64,
    unsent: Vec<Rect>,
    pending: Option<Rect>,
}

impl Session {
    fn new(console: Arc<Console>) -> Self {
        let seen_generation = console.generation();
        let unsent = vec![console.full_rect()];
        Self {
            console,
            format: PixelFormat::SERVER_NATIVE,
            seen_generation,
            unsent,
            pending: None,
        }
    }

    async fn handle<W>(&mut self, message: ClientMessage, writer: &mut W) -> Result<(), RfbError>
    where
        W: AsyncWrite + Unpin,
    {
        match message {
            ClientMessage::SetPixelFormat(format) => {
                format.validate()?;
                tracing::debug!(?format, "client set its pixel format");
                self.format = format;
            }
            ClientMessage::SetEncodings(encodings) => {
                tracing::debug!(?encodings, "client set its encodings; Raw is always used");
            }
            ClientMessage::UpdateRequest {
                incremental,
                region,
            } => {
                let region = region
                    .intersection(&self.console.full_rect())
                    .unwrap_or(Rect::new(0, 0, 0, 0));
                self.collect_changes();
                if incremental {
                    let rects = self.take_unsent_in(&region);
                    if rects.is_empty() {
                        self.pending = Some(region);
                    } else {
                        self.pending = None;
                        self.send_update(&rects, writer).await?;
                    }
                } else {
                    self.pending = None;
                    self.take_unsent_in(&region);
                    let rects: Vec<Rect> =
                        Some(region).filter(|r| !r.is_empty()).into_iter().collect();
                    self.send_update(&rects, writer).await?;
                }
            }
            ClientMessage::Key { down, keysym } => self.console.key_event(down, keysym),
            ClientMessage::Pointer { buttons, x, y } => self.console.pointer_event(buttons, x, y),
            ClientMessage::CutText { bytes } => {
                tracing::debug!(bytes, "client cut text ignored");
            }
        }
        Ok(())
    }

    async fn answer_pending<W>(&mut self, writer: &mut W) -> Result<(), RfbError>
    where
        W: AsyncWrite + Unpin,
    {
        let Some(region) = self.pending else {
            return Ok(());
        };
        self.collect_changes();
        let rects = self.take_unsent_in(&region);
        if !rects.is_empty() {
            self.pending = None;
            self.send_update(&rects, writer).await?;
        }
        Ok(())
    }

    fn collect_changes(&mut self) {
        let (damage, generation) = self.console.damage_since(self.seen_generation);
        self.seen_generation = generation;
        match damage {
            Damage::Everything => self.unsent = vec![self.console.full_rect()],
            Damage::Rects(rects) => self.unsent.extend(rects),
        }
        if self.unsent.len() > MAX_PENDING_RECTS {
            let merged = self
                .unsent
                .iter()
                .skip(1)
                .fold(self.unsent[0], |all, rect| all.union(rect));
            self.unsent = vec![merged];
        }
    }

    /// The unsent changes inside `region`; changes wholly inside it are no longer unsent.
    fn take_unsent_in(&mut self, region: &Rect) -> Vec<Rect> {
        let inside: Vec<Rect> = self
            .unsent
            .iter()
            .filter_map(|rect| rect.intersection(region))
            .collect();
        self.unsent.retain(|rect| !rect.is_inside(region));
        inside
    }

    async fn send_update<W>(&self, rects: &[Rect], writer: &mut W) -> Result<(), RfbError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut message = vec![MESSAGE_FRAMEBUFFER_UPDATE, 0];
        message.extend_from_slice(&(rects.len() as u16).to_be_bytes());
        for rect in rects {
            message.extend_from_slice(&rect.x.to_be_bytes());
            message.extend_from_slice(&rect.y.to_be_bytes());
            message.extend_from_slice(&rect.width.to_be_bytes());
            message.extend_from_slice(&rect.height.to_be_bytes());
            message.extend_from_slice(&ENCODING_RAW.to_be_bytes());
            self.console.encode_rect(rect, &self.format, &mut message);
        }
        writer.write_all(&message).await?;
        writer.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions_map_to_served_versions() {
        assert_eq!(parse_client_version(b"RFB 003.008\n").unwrap(), 8);
        assert_eq!(parse_client_version(b"RFB 003.007\n").unwrap(), 7);
        assert_eq!(parse_client_version(b"RFB 003.003\n").unwrap(), 3);
        assert_eq!(parse_client_version(b"RFB 003.005\n").unwrap(), 3);
        assert_eq!(parse_client_version(b"RFB 003.889\n").unwrap(), 8);
        assert!(parse_client_version(b"GET / HTTP/1").is_err());
        assert!(parse_client_version(b"RFB 004.000\n").is_err());
    }

    #[tokio::test]
    async fn serves_a_version_3_3_client_over_a_byte_stream() {
        let console = Arc::new(Console::new("old", &RfbOptions::default()));
        let (server_end, mut client) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve_rfb(server_end, console, "old client"));
        let mut version = [0u8; 12];
        client.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, PROTOCOL_VERSION);
        client.write_all(b"RFB 003.003\n").await.unwrap();
        assert_eq!(client.read_u32().await.unwrap(), u32::from(SECURITY_NONE));
        client.write_u8(1).await.unwrap();
        assert_eq!(client.read_u16().await.unwrap(), 800);
        assert_eq!(client.read_u16().await.unwrap(), 600);
        let mut format = [0u8; PIXEL_FORMAT_LEN];
        client.read_exact(&mut format).await.unwrap();
        assert_eq!(PixelFormat::from_bytes(&format), PixelFormat::SERVER_NATIVE);
        let name_len = client.read_u32().await.unwrap();
        let mut name = vec![0u8; name_len as usize];
        client.read_exact(&mut name).await.unwrap();
        assert_eq!(name, b"old client");
        drop(client);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refuses_a_colour_map_pixel_format() {
        let console = Arc::new(Console::new("vm", &RfbOptions::default()));
        let (server_end, mut client) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(serve_rfb(server_end, console, "vm"));
        let mut version = [0u8; 12];
        client.read_exact(&mut version).await.unwrap();
        client.write_all(PROTOCOL_VERSION).await.unwrap();
        let mut security = [0u8; 2];
        client.read_exact(&mut security).await.unwrap();
        client.write_u8(SECURITY_NONE).await.unwrap();
        assert_eq!(client.read_u32().await.unwrap(), 0);
        client.write_u8(0).await.unwrap();
        let mut server_init = [0u8; 24];
        client.read_exact(&mut server_init).await.unwrap();
        let name_len = u32::from_be_bytes(server_init[20..24].try_into().unwrap());
        let mut name = vec![0u8; name_len as usize];
        client.read_exact(&mut name).await.unwrap();
        let colour_map = PixelFormat {
            true_colour: false,
            ..PixelFormat::SERVER_NATIVE
        };
        let mut message = vec![MESSAGE_SET_PIXEL_FORMAT, 0, 0, 0];
        message.extend_from_slice(&colour_map.to_bytes());
        client.write_all(&message).await.unwrap();
        let result = server.await.unwrap();
        assert!(matches!(
            result,
            Err(RfbError::PixelFormat(UnsupportedPixelFormat::ColourMap))
        ));
    }
}
