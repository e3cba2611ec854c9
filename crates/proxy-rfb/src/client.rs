//! The client-to-server direction: the client's half of the handshake, then its messages
//! (RFC 6143 section 7.5 and the extensions noVNC and QEMU use), each with its exact length.
use crate::error::RfbError;
use crate::handshake::{Negotiated, PixelFormat, Version, security};
use crate::read::{Collect, i32_at, skip, u16_at};

/// A client-to-server message, as far as the proxy tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientMessage {
    /// ProtocolVersion, the security choice, the VNC authentication response, ClientInit.
    Handshake,
    /// SetPixelFormat (0).
    SetPixelFormat,
    /// SetEncodings (2).
    SetEncodings,
    /// FramebufferUpdateRequest (3).
    FramebufferUpdateRequest,
    /// KeyEvent (4).
    KeyEvent,
    /// PointerEvent (5).
    PointerEvent,
    /// ClientCutText (6), plain or extended clipboard.
    ClientCutText,
    /// EnableContinuousUpdates (150).
    EnableContinuousUpdates,
    /// ClientFence (248).
    Fence,
    /// xvp (250): shutdown, reboot or reset of the machine.
    Xvp,
    /// SetDesktopSize (251): resizes the machine's screen.
    SetDesktopSize,
    /// gii (253): General Input Interface events.
    Gii,
    /// QEMU extended key event (255, subtype 0).
    QemuExtendedKeyEvent,
    /// QEMU audio (255, subtype 1).
    QemuAudio,
}

impl ClientMessage {
    /// Whether the message acts on the machine (keys, pointer, clipboard, power, screen size,
    /// input devices): what an observer may not send.
    pub fn is_input(self) -> bool {
        matches!(
            self,
            ClientMessage::KeyEvent
                | ClientMessage::PointerEvent
                | ClientMessage::ClientCutText
                | ClientMessage::Xvp
                | ClientMessage::SetDesktopSize
                | ClientMessage::Gii
                | ClientMessage::QemuExtendedKeyEvent
        )
    }

    /// A stable snake_case name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ClientMessage::Handshake => "handshake",
            ClientMessage::SetPixelFormat => "set_pixel_format",
            ClientMessage::SetEncodings => "set_encodings",
            ClientMessage::FramebufferUpdateRequest => "framebuffer_update_request",
            ClientMessage::KeyEvent => "key_event",
            ClientMessage::PointerEvent => "pointer_event",
            ClientMessage::ClientCutText => "client_cut_text",
            ClientMessage::EnableContinuousUpdates => "enable_continuous_updates",
            ClientMessage::Fence => "fence",
            ClientMessage::Xvp => "xvp",
            ClientMessage::SetDesktopSize => "set_desktop_size",
            ClientMessage::Gii => "gii",
            ClientMessage::QemuExtendedKeyEvent => "qemu_extended_key_event",
            ClientMessage::QemuAudio => "qemu_audio",
        }
    }
}

/// A run of consecutive bytes of one message, as [`ClientParser::feed`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPiece<'a> {
    /// The message the bytes belong to.
    pub message: ClientMessage,
    /// The bytes, exactly as the client sent them.
    pub bytes: &'a [u8],
    /// Whether these are the message's last bytes.
    pub ends_message: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    SecurityChoice,
    AwaitServerSecurity,
    AuthResponse,
    ClientInit,
    MessageType,
    QemuSubtype,
    /// The rest of a message's fixed part, which says how long the rest is.
    Header(usize),
    /// Payload bytes that only need counting.
    Skip(u64),
    Failed,
}

/// Follows the bytes a client sends, in any chunks.
#[derive(Debug)]
pub struct ClientParser {
    state: State,
    collect: Collect,
    message: ClientMessage,
}

impl Default for ClientParser {
    fn default() -> Self {
        Self {
            state: State::Version,
            collect: Collect::default(),
            message: ClientMessage::Handshake,
        }
    }
}

impl ClientParser {
    /// A parser at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows `input`, the next bytes from the client, and hands every byte to `piece`
    /// exactly once, in order, labelled with its message. `negotiated` is shared with the
    /// [`ServerParser`](crate::ServerParser) of the same connection. After an error the parser
    /// refuses everything.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        negotiated: &mut Negotiated,
        mut piece: impl FnMut(ClientPiece<'_>),
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
        piece: &mut impl FnMut(ClientPiece<'_>),
    ) -> Result<(), RfbError> {
        while !input.is_empty() || self.state == State::AwaitServerSecurity {
            match self.state {
                State::Failed => return Err(RfbError::AfterFailure),
                State::Version => {
                    let Some(bytes) = self.collect.take(input, 12) else {
                        return Ok(());
                    };
                    let version = Version::parse(&bytes)?;
                    negotiated.client_version = Some(version);
                    self.state = if version == Version::V3_3 {
                        State::AwaitServerSecurity
                    } else {
                        State::SecurityChoice
                    };
                    self.emit(piece, &bytes, true);
                }
                State::SecurityChoice => {
                    let Some(bytes) = self.collect.take(input, 1) else {
                        return Ok(());
                    };
                    self.state = match bytes[0] {
                        security::NONE => State::ClientInit,
                        security::VNC => State::AuthResponse,
                        other => return Err(RfbError::UnsupportedSecurity(other)),
                    };
                    negotiated.security = Some(bytes[0]);
                    self.emit(piece, &bytes, true);
                }
                State::AwaitServerSecurity => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    self.state = match negotiated.security {
                        None => {
                            return Err(RfbError::OutOfTurn(
                                "client data before the server's security type",
                            ));
                        }
                        Some(security::NONE) => State::ClientInit,
                        Some(security::VNC) => State::AuthResponse,
                        Some(other) => return Err(RfbError::UnsupportedSecurity(other)),
                    };
                }
                State::AuthResponse => {
                    let Some(bytes) = self.collect.take(input, 16) else {
                        return Ok(());
                    };
                    self.state = State::ClientInit;
                    self.emit(piece, &bytes, true);
                }
                State::ClientInit => {
                    let Some(bytes) = self.collect.take(input, 1) else {
                        return Ok(());
                    };
                    self.state = State::MessageType;
                    self.emit(piece, &bytes, true);
                }
                State::MessageType => {
                    let Some(bytes) = self.collect.take(input, 1) else {
                        return Ok(());
                    };
                    let (message, next) = match bytes[0] {
                        0 => (ClientMessage::SetPixelFormat, State::Header(19)),
                        2 => (ClientMessage::SetEncodings, State::Header(3)),
                        3 => (ClientMessage::FramebufferUpdateRequest, State::Skip(9)),
                        4 => (ClientMessage::KeyEvent, State::Skip(7)),
                        5 => (ClientMessage::PointerEvent, State::Skip(5)),
                        6 => (ClientMessage::ClientCutText, State::Header(7)),
                        150 => (ClientMessage::EnableContinuousUpdates, State::Skip(9)),
                        248 => (ClientMessage::Fence, State::Header(8)),
                        250 => (ClientMessage::Xvp, State::Skip(3)),
                        251 => (ClientMessage::SetDesktopSize, State::Header(7)),
                        253 => (ClientMessage::Gii, State::Header(3)),
                        255 => {
                            self.state = State::QemuSubtype;
                            continue;
                        }
                        other => return Err(RfbError::UnknownClientMessage(other)),
                    };
                    self.message = message;
                    self.state = next;
                    self.emit(piece, &bytes, false);
                }
                State::QemuSubtype => {
                    let Some(subtype) = self.collect.take(input, 1) else {
                        return Ok(());
                    };
                    let (message, next) = match subtype[0] {
                        0 => (ClientMessage::QemuExtendedKeyEvent, State::Skip(10)),
                        1 => (ClientMessage::QemuAudio, State::Header(2)),
                        other => return Err(RfbError::UnknownQemuMessage(other)),
                    };
                    self.message = message;
                    self.state = next;
                    self.emit(piece, &[255, subtype[0]], false);
                }
                State::Header(want) => {
                    let Some(bytes) = self.collect.take(input, want) else {
                        return Ok(());
                    };
                    let rest = self.payload_after_header(&bytes, negotiated)?;
                    self.state = if rest == 0 {
                        State::MessageType
                    } else {
                        State::Skip(rest)
                    };
                    self.emit(piece, &bytes, rest == 0);
                }
                State::Skip(mut remaining) => {
                    let before = *input;
                    let done = skip(input, &mut remaining);
                    self.state = if done {
                        State::MessageType
                    } else {
                        State::Skip(remaining)
                    };
                    let consumed = &before[..before.len() - input.len()];
                    self.emit(piece, consumed, done);
                }
            }
        }
        Ok(())
    }

    /// How many bytes follow a message's header (the bytes after the type byte, or after the
    /// subtype for QEMU messages).
    fn payload_after_header(
        &self,
        header: &[u8],
        negotiated: &mut Negotiated,
    ) -> Result<u64, RfbError> {
        Ok(match self.message {
            ClientMessage::SetPixelFormat => {
                negotiated.pixel_format = Some(PixelFormat::parse(&header[3..19])?);
                0
            }
            ClientMessage::SetEncodings => 4 * u64::from(u16_at(header, 1)),
            ClientMessage::ClientCutText => u64::from(i32_at(header, 3).unsigned_abs()),
            ClientMessage::Fence => {
                let length = header[7];
                if length > 64 {
                    return Err(RfbError::Malformed("fence (payload over 64 bytes)"));
                }
                u64::from(length)
            }
            ClientMessage::SetDesktopSize => 16 * u64::from(header[5]),
            ClientMessage::Gii => {
                let big_endian = header[0] & 0x80 != 0;
                let length = [header[1], header[2]];
                u64::from(if big_endian {
                    u16::from_be_bytes(length)
                } else {
                    u16::from_le_bytes(length)
                })
            }
            ClientMessage::QemuAudio => match u16_at(header, 0) {
                0 | 1 => 0,
                2 => 6,
                _ => return Err(RfbError::Malformed("QEMU audio operation")),
            },
            _ => 0,
        })
    }

    fn emit(&self, piece: &mut impl FnMut(ClientPiece<'_>), bytes: &[u8], ends_message: bool) {
        if !bytes.is_empty() {
            piece(ClientPiece {
                message: self.message,
                bytes,
                ends_message,
            });
        }
    }
}
