//! The server-to-client direction: the server's half of the handshake, then its messages with
//! the rectangle encodings QEMU sends (RFC 6143 section 7.6 and 7.7, and the extensions noVNC
//! and QEMU use), enough to know where every message ends.
use crate::error::RfbError;
use crate::handshake::{Negotiated, PixelFormat, Version, security};
use crate::read::{Collect, i32_at, skip, u16_at, u32_at};

/// The longest desktop name accepted in ServerInit.
pub const MAX_DESKTOP_NAME_BYTES: u32 = 64 * 1024;

/// Rectangle encodings and pseudo-encodings the parser follows.
pub mod encoding {
    #![allow(missing_docs)]
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const RRE: i32 = 2;
    pub const HEXTILE: i32 = 5;
    pub const ZLIB: i32 = 6;
    pub const TIGHT: i32 = 7;
    pub const ZRLE: i32 = 16;
    pub const TIGHT_PNG: i32 = -260;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const CURSOR: i32 = -239;
    pub const X_CURSOR: i32 = -240;
    pub const QEMU_POINTER_MOTION_CHANGE: i32 = -257;
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    pub const QEMU_AUDIO: i32 = -259;
    pub const QEMU_LED_STATE: i32 = -261;
    pub const DESKTOP_NAME: i32 = -307;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    pub const XVP: i32 = -309;
    pub const FENCE: i32 = -312;
    pub const CONTINUOUS_UPDATES: i32 = -313;

    /// The CompressLevel pseudo-encoding for `level` (0..=9).
    pub const fn compression_level(level: u8) -> i32 {
        -256 + level as i32
    }

    /// The QualityLevel pseudo-encoding for `level` (0..=9).
    pub const fn quality_level(level: u8) -> i32 {
        -32 + level as i32
    }

    /// Whether it is a CompressLevel pseudo-encoding.
    pub fn is_compression_level(encoding: i32) -> bool {
        (-256..=-247).contains(&encoding)
    }

    /// Whether it is a QualityLevel pseudo-encoding.
    pub fn is_quality_level(encoding: i32) -> bool {
        (-32..=-23).contains(&encoding)
    }
}

/// A server-to-client message, as far as the proxy tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerMessage {
    /// ProtocolVersion, security, SecurityResult, ServerInit.
    Handshake,
    /// FramebufferUpdate (0) with its rectangles.
    FramebufferUpdate,
    /// SetColourMapEntries (1).
    SetColourMapEntries,
    /// Bell (2).
    Bell,
    /// ServerCutText (3), plain or extended clipboard.
    ServerCutText,
    /// EndOfContinuousUpdates (150).
    EndOfContinuousUpdates,
    /// ServerFence (248).
    Fence,
    /// xvp (250).
    Xvp,
    /// QEMU audio (255, subtype 1).
    QemuAudio,
}

/// A run of consecutive bytes of one message, as [`ServerParser::feed`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPiece<'a> {
    /// The message the bytes belong to.
    pub message: ServerMessage,
    /// The bytes, exactly as the server sent them.
    pub bytes: &'a [u8],
    /// Whether these are the message's last bytes.
    pub ends_message: bool,
}

/// Where the parser goes when a skipped payload is through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    MessageType,
    NextRect,
    NextTile,
    HextileCount { coloured: bool },
    TightData,
    Failed,
    ServerInitDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    SecurityStart,
    Security33,
    SecurityTypeCount,
    SecurityTypes(usize),
    AwaitChoice,
    Challenge,
    SecurityResult,
    FailureReason,
    ServerInit,
    DesktopName(usize),
    MessageType,
    Header(usize),
    RectHeader,
    /// A rectangle encoding's fixed part, which says how long the rest is.
    RectFixed(usize),
    HextileSubencoding,
    HextileSubrectCount {
        coloured: bool,
    },
    TightControl,
    TightFilter,
    TightPalette,
    TightLength {
        byte: u8,
        value: u32,
    },
    AudioLength,
    Skip(u64, Then),
    Failed,
}

/// The rectangle being read and its progress through Hextile tiles.
#[derive(Debug, Clone, Copy, Default)]
struct Rect {
    width: u16,
    height: u16,
    encoding: i32,
    tile: u32,
    /// Tight: bytes of filtered pixel data before compression.
    tight_data: u64,
}

/// Follows the bytes a server sends, in any chunks.
#[derive(Debug)]
pub struct ServerParser {
    state: State,
    collect: Collect,
    message: ServerMessage,
    rects_left: u16,
    rect: Rect,
}

impl Default for ServerParser {
    fn default() -> Self {
        Self {
            state: State::Version,
            collect: Collect::default(),
            message: ServerMessage::Handshake,
            rects_left: 0,
            rect: Rect::default(),
        }
    }
}

impl ServerParser {
    /// A parser at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows `input`, the next bytes from the server, and hands every byte to `piece`
    /// exactly once, in order, labelled with its message. `negotiated` is shared with the
    /// [`ClientParser`](crate::ClientParser) of the same connection. After an error the
    /// parser refuses everything.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        negotiated: &mut Negotiated,
        mut piece: impl FnMut(ServerPiece<'_>),
    ) -> Result<(), RfbError> {
        let result = self.follow(&mut input, negotiated, &mut piece);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn follow(
        &mut self,
        input: &mut &[u8],
        negotiated: &mut Negotiated,
        piece: &mut impl FnMut(ServerPiece<'_>),
    ) -> Result<(), RfbError> {
        while !input.is_empty() {
            let state = self.state;
            // Skipped payloads are handed on as they arrive; everything else once collected.
            if let State::Skip(mut remaining, then) = state {
                let before = *input;
                let done = skip(input, &mut remaining);
                let consumed = &before[..before.len() - input.len()];
                if done {
                    let ends = self.finish(then, negotiated)?;
                    self.emit(piece, consumed, ends);
                } else {
                    self.state = State::Skip(remaining, then);
                    self.emit(piece, consumed, false);
                }
                continue;
            }
            let want = match state {
                State::Version => 12,
                State::Security33 | State::SecurityResult | State::FailureReason => 4,
                State::SecurityTypes(count) => count,
                State::Challenge => 16,
                State::ServerInit => 24,
                State::DesktopName(length) => length,
                State::Header(length) | State::RectFixed(length) => length,
                State::RectHeader => 12,
                State::AudioLength => 4,
                State::SecurityStart | State::AwaitChoice => 0,
                State::Failed => return Err(RfbError::AfterFailure),
                _ => 1,
            };
            let bytes = if want == 0 {
                Vec::new()
            } else {
                match self.collect.take(input, want) {
                    Some(bytes) => bytes,
                    None => return Ok(()),
                }
            };
            let ends = self.advance(&bytes, negotiated)?;
            self.emit(piece, &bytes, ends);
        }
        Ok(())
    }

    /// Moves on from `state` with its collected `bytes`; whether a message ended.
    fn advance(&mut self, bytes: &[u8], negotiated: &mut Negotiated) -> Result<bool, RfbError> {
        let pixel = || {
            negotiated
                .pixel_format
                .ok_or(RfbError::OutOfTurn("update before ServerInit"))
        };
        match self.state {
            State::Version => {
                negotiated.server_version = Some(Version::parse(bytes)?);
                self.state = State::SecurityStart;
                return Ok(true);
            }
            State::SecurityStart => {
                self.state = match negotiated.client_version {
                    None => {
                        return Err(RfbError::OutOfTurn(
                            "server data before the client's version",
                        ));
                    }
                    Some(Version::V3_3) => State::Security33,
                    Some(_) => State::SecurityTypeCount,
                };
            }
            State::Security33 => {
                let chosen = u32_at(bytes, 0);
                self.state = match chosen {
                    0 => State::FailureReason,
                    1 => State::ServerInit,
                    2 => State::Challenge,
                    other => {
                        return Err(RfbError::UnsupportedSecurity(
                            u8::try_from(other).unwrap_or(u8::MAX),
                        ));
                    }
                };
                if chosen != 0 {
                    negotiated.security = Some(chosen as u8);
                }
                return Ok(chosen != 0);
            }
            State::SecurityTypeCount => {
                self.state = match bytes[0] {
                    0 => State::FailureReason,
                    count => State::SecurityTypes(usize::from(count)),
                };
            }
            State::SecurityTypes(_) => {
                self.state = State::AwaitChoice;
                return Ok(true);
            }
            State::AwaitChoice => {
                let version = negotiated.client_version.unwrap_or(Version::V3_8);
                self.state = match negotiated.security {
                    None => {
                        return Err(RfbError::OutOfTurn(
                            "server data before the client's security choice",
                        ));
                    }
                    Some(security::NONE) if version == Version::V3_7 => State::ServerInit,
                    Some(security::NONE) => State::SecurityResult,
                    Some(security::VNC) => State::Challenge,
                    Some(other) => return Err(RfbError::UnsupportedSecurity(other)),
                };
            }
            State::Challenge => {
                self.state = State::SecurityResult;
                return Ok(true);
            }
            State::SecurityResult => {
                if u32_at(bytes, 0) == 0 {
                    self.state = State::ServerInit;
                } else if negotiated.client_version == Some(Version::V3_8) {
                    self.state = State::FailureReason;
                    return Ok(false);
                } else {
                    negotiated.failed = true;
                    self.state = State::Failed;
                }
                return Ok(true);
            }
            State::FailureReason => {
                return self.skip_then(u64::from(u32_at(bytes, 0)), Then::Failed, negotiated);
            }
            State::ServerInit => {
                negotiated.framebuffer = Some((u16_at(bytes, 0), u16_at(bytes, 2)));
                negotiated.pixel_format = Some(PixelFormat::parse(&bytes[4..20])?);
                let name_length = u32_at(bytes, 20);
                if name_length > MAX_DESKTOP_NAME_BYTES {
                    return Err(RfbError::Malformed("ServerInit (desktop name over 64 KiB)"));
                }
                if name_length == 0 {
                    negotiated.desktop_name = Some(String::new());
                    return self.finish(Then::ServerInitDone, negotiated);
                }
                self.state = State::DesktopName(name_length as usize);
            }
            State::DesktopName(_) => {
                negotiated.desktop_name = Some(String::from_utf8_lossy(bytes).into_owned());
                return self.finish(Then::ServerInitDone, negotiated);
            }
            State::MessageType => return self.message_type(bytes[0]),
            State::Header(_) => return self.after_header(bytes),
            State::RectHeader => {
                self.rect = Rect {
                    width: u16_at(bytes, 4),
                    height: u16_at(bytes, 6),
                    encoding: i32_at(bytes, 8),
                    ..Rect::default()
                };
                return self.rect_payload(pixel()?);
            }
            State::RectFixed(_) => {
                let format = pixel()?;
                let rest = match self.rect.encoding {
                    encoding::RRE => u64::from(u32_at(bytes, 0)) * (format.bytes_per_pixel() + 8),
                    encoding::EXTENDED_DESKTOP_SIZE => 16 * u64::from(bytes[0]),
                    // zlib, ZRLE, DesktopName: a 4-byte length.
                    _ => u64::from(u32_at(bytes, 0)),
                };
                return self.skip_then(rest, Then::NextRect, negotiated);
            }
            State::HextileSubencoding => {
                let format = pixel()?;
                let subencoding = bytes[0];
                let (tile_width, tile_height) = self.tile_size();
                let bpp = format.bytes_per_pixel();
                if subencoding & 1 != 0 {
                    let raw = u64::from(tile_width) * u64::from(tile_height) * bpp;
                    return self.skip_then(raw, Then::NextTile, negotiated);
                }
                let colours =
                    u64::from(subencoding & 2 != 0) * bpp + u64::from(subencoding & 4 != 0) * bpp;
                if subencoding & 8 != 0 {
                    let coloured = subencoding & 16 != 0;
                    return self.skip_then(colours, Then::HextileCount { coloured }, negotiated);
                }
                return self.skip_then(colours, Then::NextTile, negotiated);
            }
            State::HextileSubrectCount { coloured } => {
                let per = if coloured {
                    pixel()?.bytes_per_pixel() + 2
                } else {
                    2
                };
                return self.skip_then(u64::from(bytes[0]) * per, Then::NextTile, negotiated);
            }
            State::TightControl => return self.tight_control(bytes[0], pixel()?, negotiated),
            State::TightFilter => {
                let format = pixel()?;
                let pixels = u64::from(self.rect.width) * u64::from(self.rect.height);
                match bytes[0] {
                    0 | 2 => {
                        self.rect.tight_data = pixels * format.tight_pixel_bytes();
                        return self.tight_data(negotiated);
                    }
                    1 => self.state = State::TightPalette,
                    _ => return Err(RfbError::Malformed("Tight filter")),
                }
            }
            State::TightPalette => {
                let colours = u64::from(bytes[0]) + 1;
                let row = if colours == 2 {
                    u64::from(self.rect.width).div_ceil(8)
                } else {
                    u64::from(self.rect.width)
                };
                self.rect.tight_data = row * u64::from(self.rect.height);
                let palette = colours * pixel()?.tight_pixel_bytes();
                return self.skip_then(palette, Then::TightData, negotiated);
            }
            State::TightLength { byte, value } => {
                let value = value
                    | (u32::from(bytes[0] & if byte == 2 { 0xff } else { 0x7f }) << (7 * byte));
                if byte < 2 && bytes[0] & 0x80 != 0 {
                    self.state = State::TightLength {
                        byte: byte + 1,
                        value,
                    };
                } else {
                    return self.skip_then(u64::from(value), Then::NextRect, negotiated);
                }
            }
            State::AudioLength => {
                return self.skip_then(u64::from(u32_at(bytes, 0)), Then::MessageType, negotiated);
            }
            State::Skip(..) | State::Failed => unreachable!("handled in follow"),
        }
        Ok(false)
    }

    fn message_type(&mut self, message_type: u8) -> Result<bool, RfbError> {
        let (message, state) = match message_type {
            0 => (ServerMessage::FramebufferUpdate, State::Header(3)),
            1 => (ServerMessage::SetColourMapEntries, State::Header(5)),
            2 => {
                self.message = ServerMessage::Bell;
                self.state = State::MessageType;
                return Ok(true);
            }
            3 => (ServerMessage::ServerCutText, State::Header(7)),
            150 => {
                self.message = ServerMessage::EndOfContinuousUpdates;
                self.state = State::MessageType;
                return Ok(true);
            }
            248 => (ServerMessage::Fence, State::Header(8)),
            250 => (ServerMessage::Xvp, State::Header(3)),
            255 => (ServerMessage::QemuAudio, State::Header(3)),
            other => return Err(RfbError::UnknownServerMessage(other)),
        };
        self.message = message;
        self.state = state;
        Ok(false)
    }

    fn after_header(&mut self, header: &[u8]) -> Result<bool, RfbError> {
        let rest = match self.message {
            ServerMessage::FramebufferUpdate => {
                self.rects_left = u16_at(header, 1);
                if self.rects_left == 0 {
                    self.state = State::MessageType;
                    return Ok(true);
                }
                self.state = State::RectHeader;
                return Ok(false);
            }
            ServerMessage::SetColourMapEntries => 6 * u64::from(u16_at(header, 3)),
            ServerMessage::ServerCutText => u64::from(i32_at(header, 3).unsigned_abs()),
            ServerMessage::Fence => {
                if header[7] > 64 {
                    return Err(RfbError::Malformed("fence (payload over 64 bytes)"));
                }
                u64::from(header[7])
            }
            ServerMessage::Xvp => 0,
            ServerMessage::QemuAudio => {
                if header[0] != 1 {
                    return Err(RfbError::UnknownQemuMessage(header[0]));
                }
                match u16_at(header, 1) {
                    0 | 1 => 0,
                    2 => {
                        self.state = State::AudioLength;
                        return Ok(false);
                    }
                    _ => return Err(RfbError::Malformed("QEMU audio operation")),
                }
            }
            ServerMessage::Handshake
            | ServerMessage::Bell
            | ServerMessage::EndOfContinuousUpdates => 0,
        };
        if rest == 0 {
            self.state = State::MessageType;
            return Ok(true);
        }
        self.state = State::Skip(rest, Then::MessageType);
        Ok(false)
    }

    /// The state after a rectangle header.
    fn rect_payload(&mut self, format: PixelFormat) -> Result<bool, RfbError> {
        let (width, height) = (u64::from(self.rect.width), u64::from(self.rect.height));
        let bpp = format.bytes_per_pixel();
        let mask = width.div_ceil(8) * height;
        let next = match self.rect.encoding {
            encoding::RAW => Some(width * height * bpp),
            encoding::COPY_RECT => Some(4),
            encoding::CURSOR => Some(width * height * bpp + mask),
            encoding::X_CURSOR => Some(if width * height > 0 { 6 + 2 * mask } else { 0 }),
            encoding::QEMU_LED_STATE => Some(1),
            encoding::DESKTOP_SIZE
            | encoding::QEMU_POINTER_MOTION_CHANGE
            | encoding::QEMU_EXTENDED_KEY_EVENT
            | encoding::QEMU_AUDIO
            | encoding::XVP
            | encoding::FENCE
            | encoding::CONTINUOUS_UPDATES => Some(0),
            encoding::LAST_RECT => {
                self.rects_left = 1;
                None
            }
            encoding::RRE => {
                self.state = State::RectFixed(4 + bpp as usize);
                return Ok(false);
            }
            encoding::ZLIB | encoding::ZRLE | encoding::DESKTOP_NAME => {
                self.state = State::RectFixed(4);
                return Ok(false);
            }
            encoding::EXTENDED_DESKTOP_SIZE => {
                self.state = State::RectFixed(4);
                return Ok(false);
            }
            encoding::HEXTILE => {
                if width * height == 0 {
                    Some(0)
                } else {
                    self.state = State::HextileSubencoding;
                    return Ok(false);
                }
            }
            encoding::TIGHT | encoding::TIGHT_PNG => {
                self.state = State::TightControl;
                return Ok(false);
            }
            other => return Err(RfbError::UnknownEncoding(other)),
        };
        match next {
            Some(0) | None => self.rect_done(),
            Some(length) => {
                self.state = State::Skip(length, Then::NextRect);
                Ok(false)
            }
        }
    }

    fn tight_control(
        &mut self,
        control: u8,
        format: PixelFormat,
        negotiated: &mut Negotiated,
    ) -> Result<bool, RfbError> {
        match control >> 4 {
            0x08 => self.skip_then(format.tight_pixel_bytes(), Then::NextRect, negotiated),
            0x09 | 0x0A => {
                self.state = State::TightLength { byte: 0, value: 0 };
                Ok(false)
            }
            compression if compression < 0x08 => {
                if compression & 0x04 != 0 {
                    self.state = State::TightFilter;
                    Ok(false)
                } else {
                    let pixels = u64::from(self.rect.width) * u64::from(self.rect.height);
                    self.rect.tight_data = pixels * format.tight_pixel_bytes();
                    self.tight_data(negotiated)
                }
            }
            _ => Err(RfbError::Malformed("Tight compression control")),
        }
    }

    /// Tight pixel data: raw under 12 bytes, else a compact length and zlib data.
    fn tight_data(&mut self, negotiated: &mut Negotiated) -> Result<bool, RfbError> {
        if self.rect.tight_data < 12 {
            self.skip_then(self.rect.tight_data, Then::NextRect, negotiated)
        } else {
            self.state = State::TightLength { byte: 0, value: 0 };
            Ok(false)
        }
    }

    fn skip_then(
        &mut self,
        length: u64,
        then: Then,
        negotiated: &mut Negotiated,
    ) -> Result<bool, RfbError> {
        if length == 0 {
            return self.finish(then, negotiated);
        }
        self.state = State::Skip(length, then);
        Ok(false)
    }

    /// Continues after a skipped stretch; whether a message ended.
    fn finish(&mut self, then: Then, negotiated: &mut Negotiated) -> Result<bool, RfbError> {
        match then {
            Then::MessageType => {
                self.state = State::MessageType;
                Ok(true)
            }
            Then::Failed => {
                negotiated.failed = true;
                self.state = State::Failed;
                Ok(true)
            }
            Then::ServerInitDone => {
                self.state = State::MessageType;
                Ok(true)
            }
            Then::HextileCount { coloured } => {
                self.state = State::HextileSubrectCount { coloured };
                Ok(false)
            }
            Then::TightData => self.tight_data(negotiated),
            Then::NextTile => {
                self.rect.tile += 1;
                let (columns, rows) = (
                    u32::from(self.rect.width).div_ceil(16),
                    u32::from(self.rect.height).div_ceil(16),
                );
                if self.rect.tile < columns * rows {
                    self.state = State::HextileSubencoding;
                    Ok(false)
                } else {
                    self.rect_done()
                }
            }
            Then::NextRect => self.rect_done(),
        }
    }

    fn rect_done(&mut self) -> Result<bool, RfbError> {
        self.rects_left = self.rects_left.saturating_sub(1);
        if self.rects_left == 0 {
            self.state = State::MessageType;
            Ok(true)
        } else {
            self.state = State::RectHeader;
            Ok(false)
        }
    }

    fn tile_size(&self) -> (u16, u16) {
        let tile = self.rect.tile;
        let columns = u32::from(self.rect.width).div_ceil(16);
        let (column, row) = (tile % columns, tile / columns);
        let width = (u32::from(self.rect.width) - column * 16).min(16) as u16;
        let height = (u32::from(self.rect.height) - row * 16).min(16) as u16;
        (width, height)
    }

    fn emit(&self, piece: &mut impl FnMut(ServerPiece<'_>), bytes: &[u8], ends_message: bool) {
        if !bytes.is_empty() {
            piece(ServerPiece {
                message: self.message,
                bytes,
                ends_message,
            });
        }
    }
}
