//! The RFB client a shared console's hub speaks to the VM (sans-IO): feed it what the upstream
//! sends ([`UpstreamClient::feed`]), send what [`UpstreamClient::take_output`] returns.
//!
//! It does the handshake (3.3, 3.7 or 3.8; security None or VNC authentication) and reports
//! [`UpstreamEvent::Ready`]; the hub then says which pixel format and encodings to ask for
//! ([`UpstreamClient::configure`]: by default [`PixelFormat::rgb888`] and
//! [`REQUESTED_ENCODINGS`], Tight first, losslessly) and when to ask for an update
//! ([`UpstreamClient::request_update`]: a hub with no viewers asks for nothing). It decodes
//! every rectangle into its [`Framebuffer`] with the [`crate::codec`] decoders, and can hand
//! over each whole server message as it came ([`UpstreamClient::capture`]), so a viewer that
//! asked for what the VM sends gets the VM's own bytes.
//!
//! ```
//! use proxy_rfb::upstream::{UpstreamClient, UpstreamEvent};
//!
//! let mut client = UpstreamClient::new();
//! client.feed(b"RFB 003.008\n").unwrap();
//! assert_eq!(client.take_output(), b"RFB 003.008\n");
//! client.feed(&[1, 1]).unwrap(); // security types: None
//! assert_eq!(client.take_output(), [1]);
//! client.feed(&[0, 0, 0, 0]).unwrap(); // SecurityResult OK
//! assert_eq!(client.take_output(), [1]); // ClientInit: shared
//! let mut init = vec![0, 2, 0, 1]; // 2x1
//! init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
//! init.extend_from_slice(&[0, 0, 0, 2]);
//! init.extend_from_slice(b"vm");
//! let events = client.feed(&init).unwrap();
//! assert!(matches!(&events[0], UpstreamEvent::Ready { width: 2, height: 1, name } if name == "vm"));
//! assert_eq!(client.screen().width(), 2);
//! assert!(client.is_ready());
//! assert!(client.take_output().is_empty(), "nothing is asked for until the hub says so");
//! client.configure(proxy_rfb::PixelFormat::rgb888(), &proxy_rfb::upstream::REQUESTED_ENCODINGS);
//! client.request_update(false);
//! assert_eq!(client.take_output()[0], 0, "SetPixelFormat, SetEncodings, the request");
//! assert!(client.awaiting_update());
//! ```
use crate::codec::{Decode, Decoded};
use crate::framebuffer::{Framebuffer, Rect};
use crate::read::{i32_at, u16_at, u32_at};
use crate::server::encoding;
use crate::{PixelFormat, RfbError, Version, security};

/// ClientInit with the shared flag, so the VM keeps other clients connected.
const CLIENT_INIT_SHARED: u8 = 1;

/// The longest desktop name or clipboard text kept (longer ones are cut).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// What the upstream's stream meant, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamEvent {
    /// The handshake is done: the desktop's size and name.
    Ready {
        /// Width in pixels.
        width: u16,
        /// Height in pixels.
        height: u16,
        /// The desktop name.
        name: String,
    },
    /// A whole FramebufferUpdate was applied; these areas changed.
    Updated(Vec<Rect>),
    /// The desktop changed size (the screen is black where it grew).
    Resized {
        /// New width.
        width: u16,
        /// New height.
        height: u16,
    },
    /// A new cursor shape: `pixels` in [`PixelFormat::rgb888`], `mask` one bit per pixel.
    Cursor(CursorShape),
    /// A new desktop name.
    Named(String),
    /// The VM rang the bell.
    Bell,
    /// The VM's clipboard (Latin-1 text as RFB has it).
    Clipboard(Vec<u8>),
}

/// A cursor shape as the Cursor pseudo-encoding carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CursorShape {
    /// Hotspot.
    pub hotspot: (u16, u16),
    /// Size.
    pub width: u16,
    /// Size.
    pub height: u16,
    /// `width * height` pixels, 4 bytes each in [`PixelFormat::rgb888`].
    pub pixels: Vec<u8>,
    /// `(width + 7) / 8 * height` bytes, one bit per pixel, 1 = shown.
    pub mask: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    SecurityTypes,
    SecurityType33,
    SecurityResult,
    VncChallenge,
    SecurityFailureReason,
    ServerInit,
    Messages,
    /// Inside a FramebufferUpdate: rectangles left (`None`: until LastRect).
    Rects(Option<u16>),
    Raw {
        rect: Rect,
        row: u16,
        left: Option<u16>,
    },
    /// A rectangle in a compressed encoding, decoded once its body is complete.
    Body {
        rect: Rect,
        encoding: i32,
        left: Option<u16>,
    },
    Failed,
}

/// One whole server message as the VM sent it (after the handshake), and the rectangle
/// encodings it used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forwarded {
    /// The message's bytes.
    pub bytes: Vec<u8>,
    /// The encodings of its rectangles (pseudo-encodings included), each once.
    pub encodings: Vec<i32>,
}

/// The hub's RFB client. See the module docs.
#[derive(Debug)]
pub struct UpstreamClient {
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    version: Version,
    screen: std::sync::Arc<Framebuffer>,
    damage: Vec<Rect>,
    format: PixelFormat,
    password: Option<Vec<u8>>,
    decoders: Vec<(i32, Box<dyn Decode>)>,
    awaiting_update: bool,
    capture: bool,
    /// Whether rectangles are painted into the screen (see [`Self::set_painting`]).
    painting: bool,
    message: Forwarded,
    forwarded: Vec<Forwarded>,
}

impl std::fmt::Debug for dyn Decode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decode")
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The encodings a hub asks for by default, in preference order: Tight first (QEMU,
/// KubeVirt's VNC server, serves it; lossless because no quality level is asked for), then
/// the other compressed ones a VNC server may prefer, Raw last; the pseudo-encodings that
/// keep a framebuffer exact; compression level 2 (noVNC's default).
pub const REQUESTED_ENCODINGS: [i32; 11] = [
    encoding::TIGHT,
    encoding::ZRLE,
    encoding::ZLIB,
    encoding::COPY_RECT,
    encoding::RAW,
    encoding::DESKTOP_SIZE,
    encoding::CURSOR,
    encoding::DESKTOP_NAME,
    encoding::LAST_RECT,
    encoding::compression_level(2),
    encoding::EXTENDED_DESKTOP_SIZE,
];

impl UpstreamClient {
    /// A client waiting for the server's ProtocolVersion.
    pub fn new() -> Self {
        Self {
            state: State::Version,
            input: Vec::new(),
            output: Vec::new(),
            version: Version::V3_8,
            screen: std::sync::Arc::new(Framebuffer::new(0, 0)),
            damage: Vec::new(),
            format: PixelFormat::rgb888(),
            password: None,
            decoders: Vec::new(),
            awaiting_update: false,
            capture: false,
            painting: true,
            message: Forwarded::default(),
            forwarded: Vec::new(),
        }
    }

    /// Asks the VM for `format` (true colour) and `encodings` (each one this client decodes or
    /// a pseudo-encoding it follows; others are left out).
    pub fn configure(&mut self, format: PixelFormat, encodings: &[i32]) {
        self.format = format;
        let encodings: Vec<i32> = encodings
            .iter()
            .copied()
            .filter(|&encoding| Self::follows(encoding))
            .collect();
        self.output.extend_from_slice(&[0, 0, 0, 0]);
        self.output.extend_from_slice(&self.format.to_bytes());
        self.output.extend_from_slice(&[2, 0]);
        self.output
            .extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for encoding in encodings {
            self.output.extend_from_slice(&encoding.to_be_bytes());
        }
    }

    /// Whether this client can follow rectangles of `encoding` (or the pseudo-encoding only
    /// changes what the server does, like a compression level).
    pub fn follows(encoding: i32) -> bool {
        matches!(
            encoding,
            encoding::RAW
                | encoding::COPY_RECT
                | encoding::DESKTOP_SIZE
                | encoding::EXTENDED_DESKTOP_SIZE
                | encoding::CURSOR
                | encoding::DESKTOP_NAME
                | encoding::LAST_RECT
        ) || encoding::is_compression_level(encoding)
            || crate::codec::decoder_for(encoding).is_some()
    }

    /// The pixel format asked for.
    pub fn format(&self) -> &PixelFormat {
        &self.format
    }

    /// Asks the VM for an update of the whole screen (`incremental`: only what changed).
    pub fn request_update(&mut self, incremental: bool) {
        self.awaiting_update = true;
        self.output.push(3);
        self.output.push(u8::from(incremental));
        self.output.extend_from_slice(&[0, 0, 0, 0]);
        self.output
            .extend_from_slice(&self.screen.width().to_be_bytes());
        self.output
            .extend_from_slice(&self.screen.height().to_be_bytes());
    }

    /// Whether an update was asked for and has not come yet.
    pub fn awaiting_update(&self) -> bool {
        self.awaiting_update
    }

    /// With `false`, the stream is followed (and every decoder's compression state kept)
    /// without painting pixels: the screen goes stale, which a hub whose every viewer gets
    /// the VM's own messages does not mind; it asks for a whole screen when it paints again.
    pub fn set_painting(&mut self, paint: bool) {
        self.painting = paint;
        for (_, decoder) in &mut self.decoders {
            decoder.set_painting(paint);
        }
    }

    /// Whether rectangles are painted.
    pub fn is_painting(&self) -> bool {
        self.painting
    }

    /// Keeps (or stops keeping) every whole server message for [`Self::take_forwarded`].
    pub fn capture(&mut self, on: bool) {
        self.capture = on;
        if !on {
            self.message = Forwarded::default();
            self.forwarded.clear();
        }
    }

    /// The whole server messages completed since the last call (with [`Self::capture`] on).
    pub fn take_forwarded(&mut self) -> Vec<Forwarded> {
        std::mem::take(&mut self.forwarded)
    }

    /// A client that answers VNC authentication (security type 2) with `password` when the
    /// VM offers no None (only its first 8 bytes count, as in every VNC implementation).
    pub fn with_password(password: &[u8]) -> Self {
        Self {
            password: Some(password.to_vec()),
            ..Self::new()
        }
    }

    /// The VNC authentication response to `challenge`: DES with the password as the key, each
    /// key byte's bits reversed (RFC 6143 section 7.2.2, as implementations do it).
    fn vnc_response(&self, challenge: &[u8]) -> Vec<u8> {
        use des::cipher::{BlockEncrypt as _, KeyInit as _};
        let mut key = [0u8; 8];
        for (slot, byte) in key.iter_mut().zip(self.password.iter().flatten()) {
            *slot = byte.reverse_bits();
        }
        let cipher = des::Des::new(&key.into());
        let mut response = challenge.to_vec();
        for block in response.chunks_exact_mut(8) {
            cipher.encrypt_block(block.into());
        }
        response
    }

    /// Whether the handshake is done (the screen's size and name are known).
    pub fn is_ready(&self) -> bool {
        self.in_messages()
    }

    /// The screen as the upstream drew it so far.
    pub fn screen(&self) -> &Framebuffer {
        &self.screen
    }

    /// The screen as it is now, shared: encoders read it outside the hub's lock while the
    /// next update is applied to a copy (made only if a snapshot is still held then).
    pub fn snapshot(&self) -> std::sync::Arc<Framebuffer> {
        std::sync::Arc::clone(&self.screen)
    }

    fn screen_mut(&mut self) -> &mut Framebuffer {
        std::sync::Arc::make_mut(&mut self.screen)
    }

    /// Whether there are bytes to send to the upstream.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Bytes to send to the upstream now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Sends a client message as it is (a controller's input, already checked by the viewer's
    /// server).
    pub fn send_raw(&mut self, message: &[u8]) {
        self.output.extend_from_slice(message);
    }

    /// Feeds bytes from the upstream; returns what they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<UpstreamEvent>, RfbError> {
        if self.state == State::Failed {
            return Err(RfbError::AfterFailure);
        }
        let mut input = std::mem::take(&mut self.input);
        let mut events = Vec::new();
        let result = crate::read::consume(&mut input, bytes, |rest| {
            let in_messages = self.in_messages();
            let used = self.step(rest, &mut events)?;
            if self.capture && in_messages && used > 0 {
                self.message.bytes.extend_from_slice(&rest[..used]);
                if self.state == State::Messages {
                    self.forwarded.push(std::mem::take(&mut self.message));
                }
            }
            Ok(used)
        });
        self.input = input;
        if let Err(error) = result {
            self.state = State::Failed;
            return Err(error);
        }
        Ok(events)
    }

    fn in_messages(&self) -> bool {
        matches!(
            self.state,
            State::Messages | State::Rects(_) | State::Raw { .. } | State::Body { .. }
        )
    }

    /// Handles what `input` completes of the current state; how many bytes it used (0: more
    /// are needed).
    fn step(&mut self, input: &[u8], events: &mut Vec<UpstreamEvent>) -> Result<usize, RfbError> {
        match self.state {
            State::Version => {
                let Some(version) = input.get(..12) else {
                    return Ok(0);
                };
                // The client answers with the server's version (3.8 at most).
                self.version = Version::parse(version)?;
                self.state = if self.version == Version::V3_3 {
                    State::SecurityType33
                } else {
                    State::SecurityTypes
                };
                self.output.extend_from_slice(self.version.message());
                Ok(12)
            }
            State::SecurityType33 => {
                let Some(bytes) = input.get(..4) else {
                    return Ok(0);
                };
                match u32_at(bytes, 0) {
                    1 => {
                        self.output.push(CLIENT_INIT_SHARED);
                        self.state = State::ServerInit;
                    }
                    2 if self.password.is_some() => self.state = State::VncChallenge,
                    0 => self.state = State::SecurityFailureReason,
                    other => {
                        return Err(RfbError::UnsupportedSecurity(
                            u8::try_from(other).unwrap_or(u8::MAX),
                        ));
                    }
                }
                Ok(4)
            }
            State::SecurityTypes => {
                let Some(&count) = input.first() else {
                    return Ok(0);
                };
                if count == 0 {
                    self.state = State::SecurityFailureReason;
                    return Ok(1);
                }
                let Some(types) = input.get(1..1 + usize::from(count)) else {
                    return Ok(0);
                };
                if !types.contains(&security::NONE) {
                    if types.contains(&security::VNC) && self.password.is_some() {
                        self.output.push(security::VNC);
                        self.state = State::VncChallenge;
                        return Ok(1 + usize::from(count));
                    }
                    return Err(RfbError::UnsupportedSecurity(types[0]));
                }
                self.output.push(security::NONE);
                // 3.7 sends no SecurityResult for None.
                self.state = if self.version == Version::V3_7 {
                    self.output.push(CLIENT_INIT_SHARED);
                    State::ServerInit
                } else {
                    State::SecurityResult
                };
                Ok(1 + usize::from(count))
            }
            State::SecurityResult => {
                let Some(bytes) = input.get(..4) else {
                    return Ok(0);
                };
                if u32_at(bytes, 0) != 0 {
                    self.state = State::SecurityFailureReason;
                    return Ok(4);
                }
                self.output.push(CLIENT_INIT_SHARED);
                self.state = State::ServerInit;
                Ok(4)
            }
            State::VncChallenge => {
                let Some(challenge) = input.get(..16) else {
                    return Ok(0);
                };
                let response = self.vnc_response(challenge);
                self.output.extend_from_slice(&response);
                self.state = State::SecurityResult;
                Ok(16)
            }
            State::SecurityFailureReason => {
                Err(RfbError::Malformed("security handshake refused by the VM"))
            }
            State::ServerInit => {
                let Some(head) = input.get(..24) else {
                    return Ok(0);
                };
                let name_length = u32_at(head, 20) as usize;
                let Some(name) = input.get(24..24 + name_length.min(MAX_TEXT_BYTES)) else {
                    return Ok(0);
                };
                if name_length > MAX_TEXT_BYTES {
                    return Err(RfbError::Malformed("desktop name length"));
                }
                let (width, height) = (u16_at(head, 0), u16_at(head, 2));
                self.screen = std::sync::Arc::new(Framebuffer::new(0, 0));
                self.screen_mut().resize(width, height)?;
                let name = String::from_utf8_lossy(name).into_owned();
                events.push(UpstreamEvent::Ready {
                    width,
                    height,
                    name,
                });
                self.state = State::Messages;
                Ok(24 + name_length)
            }
            State::Messages => self.message(input, events),
            State::Rects(left) => self.rect_header(input, left, events),
            State::Raw { rect, row, left } => {
                let row_bytes = usize::from(rect.width) * self.format.bytes_per_pixel() as usize;
                let rows = (input.len() / row_bytes).min(usize::from(rect.height - row));
                if rows == 0 {
                    return Ok(0);
                }
                let area = Rect {
                    x: rect.x,
                    y: rect.y + row,
                    width: rect.width,
                    height: rows as u16,
                };
                if self.painting {
                    std::sync::Arc::make_mut(&mut self.screen).put_pixels(
                        area,
                        &input[..rows * row_bytes],
                        &self.format,
                    )?;
                }
                let row = row + rows as u16;
                self.state = if row == rect.height {
                    self.damage.push(rect);
                    self.after_rect(left, events)
                } else {
                    State::Raw { rect, row, left }
                };
                Ok(rows * row_bytes)
            }
            State::Body {
                rect,
                encoding,
                left,
            } => {
                let Some((_, decoder)) =
                    self.decoders.iter_mut().find(|(kind, _)| *kind == encoding)
                else {
                    return Err(RfbError::UnknownEncoding(encoding));
                };
                match decoder.decode(
                    rect,
                    input,
                    &self.format,
                    std::sync::Arc::make_mut(&mut self.screen),
                )? {
                    Decoded::NeedMore => Ok(0),
                    Decoded::Done(used) => {
                        self.damage.push(rect);
                        self.state = self.after_rect(left, events);
                        Ok(used)
                    }
                }
            }
            State::Failed => Err(RfbError::AfterFailure),
        }
    }

    fn message(
        &mut self,
        input: &[u8],
        events: &mut Vec<UpstreamEvent>,
    ) -> Result<usize, RfbError> {
        let Some(&kind) = input.first() else {
            return Ok(0);
        };
        match kind {
            0 => {
                let Some(head) = input.get(..4) else {
                    return Ok(0);
                };
                let count = u16_at(head, 2);
                self.state = if count == 0xffff {
                    State::Rects(None)
                } else if count == 0 {
                    self.after_rect(Some(0), events)
                } else {
                    State::Rects(Some(count))
                };
                Ok(4)
            }
            1 => {
                let Some(head) = input.get(..6) else {
                    return Ok(0);
                };
                let length = 6 + 6 * usize::from(u16_at(head, 4));
                Ok(if input.len() >= length { length } else { 0 })
            }
            2 => {
                events.push(UpstreamEvent::Bell);
                Ok(1)
            }
            3 => {
                let Some(head) = input.get(..8) else {
                    return Ok(0);
                };
                let length = i32_at(head, 4);
                // A negative length is the extended clipboard; its body is skipped whole.
                let body = length.unsigned_abs() as usize;
                if body > MAX_TEXT_BYTES {
                    return Err(RfbError::Malformed("server cut text length"));
                }
                let Some(text) = input.get(8..8 + body) else {
                    return Ok(0);
                };
                if length >= 0 {
                    events.push(UpstreamEvent::Clipboard(text.to_vec()));
                }
                Ok(8 + body)
            }
            other => Err(RfbError::UnknownServerMessage(other)),
        }
    }

    fn rect_header(
        &mut self,
        input: &[u8],
        left: Option<u16>,
        events: &mut Vec<UpstreamEvent>,
    ) -> Result<usize, RfbError> {
        let Some(head) = input.get(..12) else {
            return Ok(0);
        };
        let rect = Rect {
            x: u16_at(head, 0),
            y: u16_at(head, 2),
            width: u16_at(head, 4),
            height: u16_at(head, 6),
        };
        let left = left.map(|left| left - 1);
        let kind = i32_at(head, 8);
        if self.capture && !self.message.encodings.contains(&kind) {
            self.message.encodings.push(kind);
        }
        match kind {
            encoding::RAW => {
                if rect.clipped(self.screen.width(), self.screen.height()) != rect {
                    return Err(RfbError::Malformed("raw rectangle outside the screen"));
                }
                self.state = if rect.is_empty() {
                    self.after_rect(left, events)
                } else {
                    State::Raw { rect, row: 0, left }
                };
                Ok(12)
            }
            encoding::COPY_RECT => {
                let Some(source) = input.get(12..16) else {
                    return Ok(0);
                };
                if self.painting {
                    self.screen_mut()
                        .copy_rect(rect, u16_at(source, 0), u16_at(source, 2))?;
                }
                self.damage.push(rect);
                self.state = self.after_rect(left, events);
                Ok(16)
            }
            encoding::DESKTOP_SIZE => {
                self.screen_mut().resize(rect.width, rect.height)?;
                self.damage.push(self.screen.bounds());
                events.push(UpstreamEvent::Resized {
                    width: rect.width,
                    height: rect.height,
                });
                self.state = self.after_rect(left, events);
                Ok(12)
            }
            encoding::CURSOR => {
                let pixels = rect.pixels() * self.format.bytes_per_pixel() as usize;
                let mask = rect.width.div_ceil(8) as usize * rect.height as usize;
                let Some(body) = input.get(12..12 + pixels + mask) else {
                    return Ok(0);
                };
                let mut shape = Framebuffer::new(rect.width, rect.height);
                shape.put_pixels(shape.bounds(), &body[..pixels], &self.format)?;
                let mut rgb888 = Vec::with_capacity(rect.pixels() * 4);
                shape.encode_raw(shape.bounds(), &PixelFormat::rgb888(), &mut rgb888);
                events.push(UpstreamEvent::Cursor(CursorShape {
                    hotspot: (rect.x, rect.y),
                    width: rect.width,
                    height: rect.height,
                    pixels: rgb888,
                    mask: body[pixels..].to_vec(),
                }));
                self.state = self.after_rect(left, events);
                Ok(12 + pixels + mask)
            }
            encoding::DESKTOP_NAME => {
                let Some(length) = input.get(12..16) else {
                    return Ok(0);
                };
                let length = u32_at(length, 0) as usize;
                if length > MAX_TEXT_BYTES {
                    return Err(RfbError::Malformed("desktop name length"));
                }
                let Some(name) = input.get(16..16 + length) else {
                    return Ok(0);
                };
                events.push(UpstreamEvent::Named(
                    String::from_utf8_lossy(name).into_owned(),
                ));
                self.state = self.after_rect(left, events);
                Ok(16 + length)
            }
            encoding::LAST_RECT => {
                self.state = self.after_rect(Some(0), events);
                Ok(12)
            }
            // Acknowledgements of extensions a client asked for (a server answers them only
            // when asked; the hub does not ask, a recorded noVNC session does): no body, or
            // QEMU's one byte of keyboard LEDs.
            encoding::QEMU_EXTENDED_KEY_EVENT
            | encoding::QEMU_POINTER_MOTION_CHANGE
            | encoding::CONTINUOUS_UPDATES => {
                self.state = self.after_rect(left, events);
                Ok(12)
            }
            encoding::QEMU_LED_STATE => {
                if input.len() < 13 {
                    return Ok(0);
                }
                self.state = self.after_rect(left, events);
                Ok(13)
            }
            encoding::EXTENDED_DESKTOP_SIZE => {
                let Some(count) = input.get(12) else {
                    return Ok(0);
                };
                let length = 16 + 16 * usize::from(*count);
                if input.len() < length {
                    return Ok(0);
                }
                // x: who asked (0 the server, 1 this client, 2 another), y: an error code. The
                // screen layout is not kept: the hub's viewers get one screen.
                if rect.y == 0 {
                    self.screen_mut().resize(rect.width, rect.height)?;
                    self.damage.push(self.screen.bounds());
                    events.push(UpstreamEvent::Resized {
                        width: rect.width,
                        height: rect.height,
                    });
                }
                self.state = self.after_rect(left, events);
                Ok(length)
            }
            other => {
                if rect.clipped(self.screen.width(), self.screen.height()) != rect {
                    return Err(RfbError::Malformed("rectangle outside the screen"));
                }
                if !self.decoders.iter().any(|(kind, _)| *kind == other) {
                    let mut decoder =
                        crate::codec::decoder_for(other).ok_or(RfbError::UnknownEncoding(other))?;
                    decoder.set_painting(self.painting);
                    self.decoders.push((other, decoder));
                }
                self.state = State::Body {
                    rect,
                    encoding: other,
                    left,
                };
                Ok(12)
            }
        }
    }

    /// The state after a rectangle: the next one, or (the update done) messages again, with
    /// the update's damage reported and the next update asked for.
    fn after_rect(&mut self, left: Option<u16>, events: &mut Vec<UpstreamEvent>) -> State {
        if left != Some(0) {
            return State::Rects(left);
        }
        let damage = std::mem::take(&mut self.damage);
        events.push(UpstreamEvent::Updated(damage));
        self.awaiting_update = false;
        State::Messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_authentication_answers_the_challenge_as_vnc_servers_expect() {
        // The expected block was computed independently with OpenSSL: DES-ECB of eight zero
        // bytes under "password" with each key byte's bits reversed (0e86ceceeef64e26).
        let client = UpstreamClient::with_password(b"password");
        let challenge = [0u8; 16];
        let response = client.vnc_response(&challenge);
        let expected = [0xff, 0x97, 0x50, 0x2e, 0x94, 0x22, 0xf0, 0x89];
        assert_eq!(response[..8], expected);
        assert_eq!(response[8..], expected);
        // A different password gives a different answer; bytes beyond the eighth do not count.
        assert_ne!(
            UpstreamClient::with_password(b"passwore").vnc_response(&challenge),
            response
        );
        assert_eq!(
            UpstreamClient::with_password(b"password-long").vnc_response(&challenge),
            response
        );
    }

    #[test]
    fn vnc_authentication_is_used_only_when_none_is_not_offered() {
        let mut client = UpstreamClient::with_password(b"secret");
        client.feed(b"RFB 003.008\n").unwrap();
        client.take_output();
        client.feed(&[2, 2, 1]).unwrap();
        assert_eq!(client.take_output(), [1], "None is preferred");
        let mut client = UpstreamClient::with_password(b"secret");
        client.feed(b"RFB 003.008\n").unwrap();
        client.take_output();
        client.feed(&[1, 2]).unwrap();
        assert_eq!(client.take_output(), [2]);
        client.feed(&[7; 16]).unwrap();
        assert_eq!(client.take_output().len(), 16);
        client.feed(&[0, 0, 0, 0]).unwrap();
        assert_eq!(client.take_output(), [1], "ClientInit after the result");
        let mut without = UpstreamClient::new();
        without.feed(b"RFB 003.008\n").unwrap();
        assert_eq!(without.feed(&[1, 2]), Err(RfbError::UnsupportedSecurity(2)));
    }
}
