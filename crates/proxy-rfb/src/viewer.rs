//! The RFB server a shared console's hub speaks to each viewer (sans-IO): its own handshake
//! with each browser (security None: the token already authenticated it), the viewer's own
//! pixel format and encodings, and updates built from the hub's [`Framebuffer`] for the areas
//! that changed since the viewer's last update ([`Damage`]), sent only when the viewer asked.
//!
//! A viewer that reads slowly asks less often, so its damage merges tile by tile and it gets
//! coarser, fewer updates; its memory stays one bit per tile. Input (keys, pointer, clipboard)
//! comes out as [`ViewerEvent`]s with the exact message bytes, for the hub to forward when the
//! viewer may control the VM.
//!
//! ```
//! use proxy_rfb::framebuffer::Framebuffer;
//! use proxy_rfb::viewer::ViewerServer;
//!
//! let screen = Framebuffer::new(2, 1);
//! let mut viewer = ViewerServer::new(2, 1, "ubuntu (2 watching)");
//! assert_eq!(viewer.take_output(), b"RFB 003.008\n");
//! viewer.feed(b"RFB 003.008\n").unwrap();
//! assert_eq!(viewer.take_output(), [1, 1]); // security None only
//! viewer.feed(&[1]).unwrap();
//! assert_eq!(viewer.take_output(), [0, 0, 0, 0]);
//! viewer.feed(&[1]).unwrap(); // ClientInit
//! let init = viewer.take_output();
//! assert_eq!(&init[..4], [0, 2, 0, 1]);
//! assert!(init.ends_with(b"ubuntu (2 watching)"));
//! // A full update request gets the whole screen at once.
//! viewer.feed(&[3, 0, 0, 0, 0, 0, 0, 2, 0, 1]).unwrap();
//! let update = viewer.encode_update(&screen).unwrap();
//! assert_eq!(&update[..4], [0, 0, 0, 1]); // one rectangle
//! assert_eq!(update.len(), 4 + 12 + 2 * 4);
//! ```
use crate::framebuffer::{Damage, Framebuffer, Rect};
use crate::read::{i32_at, u16_at};
use crate::server::encoding;
use crate::upstream::{CursorShape, MAX_TEXT_BYTES};
use crate::{PixelFormat, RfbError, Version, security};

/// What a viewer's stream meant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewerEvent {
    /// The handshake is done.
    Ready,
    /// A KeyEvent or PointerEvent: the exact message.
    Input(Vec<u8>),
    /// A ClientCutText: the exact message.
    Clipboard(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    SecurityChoice,
    ClientInit,
    Messages,
    Failed,
}

/// What the viewer said it can take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Supports {
    desktop_size: bool,
    cursor: bool,
    desktop_name: bool,
}

/// One viewer's RFB server. See the module docs.
#[derive(Debug)]
pub struct ViewerServer {
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    version: Version,
    name: String,
    format: PixelFormat,
    supports: Supports,
    /// The size the viewer knows (from ServerInit or the last DesktopSize it was sent).
    known: (u16, u16),
    /// The screen's current size.
    size: (u16, u16),
    requested: bool,
    damage: Damage,
    cursor: Option<CursorShape>,
    renamed: bool,
}

impl ViewerServer {
    /// A server for a `width` x `height` screen called `name`; its ProtocolVersion is queued.
    pub fn new(width: u16, height: u16, name: &str) -> Self {
        Self {
            state: State::Version,
            input: Vec::new(),
            output: b"RFB 003.008\n".to_vec(),
            version: Version::V3_8,
            name: name.to_owned(),
            format: PixelFormat::rgb888(),
            supports: Supports::default(),
            known: (width, height),
            size: (width, height),
            requested: false,
            damage: Damage::everything(width, height),
            cursor: None,
            renamed: false,
        }
    }

    /// Bytes to send to the viewer now (handshake answers).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        self.state == State::Messages
    }

    /// Feeds bytes from the viewer; returns what they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ViewerEvent>, RfbError> {
        if self.state == State::Failed {
            return Err(RfbError::AfterFailure);
        }
        let mut input = std::mem::take(&mut self.input);
        let mut events = Vec::new();
        let result = crate::read::consume(&mut input, bytes, |rest| self.step(rest, &mut events));
        self.input = input;
        if let Err(error) = result {
            self.state = State::Failed;
            return Err(error);
        }
        Ok(events)
    }

    fn step(&mut self, input: &[u8], events: &mut Vec<ViewerEvent>) -> Result<usize, RfbError> {
        match self.state {
            State::Version => {
                let Some(version) = input.get(..12) else {
                    return Ok(0);
                };
                self.version = Version::parse(version)?;
                if self.version == Version::V3_3 {
                    self.output
                        .extend_from_slice(&u32::from(security::NONE).to_be_bytes());
                    self.state = State::ClientInit;
                } else {
                    self.output.extend_from_slice(&[1, security::NONE]);
                    self.state = State::SecurityChoice;
                }
                Ok(12)
            }
            State::SecurityChoice => {
                let Some(&choice) = input.first() else {
                    return Ok(0);
                };
                if choice != security::NONE {
                    return Err(RfbError::UnsupportedSecurity(choice));
                }
                if self.version == Version::V3_8 {
                    self.output.extend_from_slice(&[0, 0, 0, 0]);
                }
                self.state = State::ClientInit;
                Ok(1)
            }
            State::ClientInit => {
                if input.is_empty() {
                    return Ok(0);
                }
                self.server_init();
                self.state = State::Messages;
                events.push(ViewerEvent::Ready);
                Ok(1)
            }
            State::Messages => self.message(input, events),
            State::Failed => Err(RfbError::AfterFailure),
        }
    }

    fn server_init(&mut self) {
        let (width, height) = self.size;
        self.known = self.size;
        self.output.extend_from_slice(&width.to_be_bytes());
        self.output.extend_from_slice(&height.to_be_bytes());
        self.output
            .extend_from_slice(&PixelFormat::rgb888().to_bytes());
        let name = self.name.as_bytes();
        self.output
            .extend_from_slice(&(name.len() as u32).to_be_bytes());
        self.output.extend_from_slice(name);
    }

    fn message(&mut self, input: &[u8], events: &mut Vec<ViewerEvent>) -> Result<usize, RfbError> {
        let Some(&kind) = input.first() else {
            return Ok(0);
        };
        let need = |length: usize| {
            if input.len() >= length {
                Some(length)
            } else {
                None
            }
        };
        match kind {
            0 => {
                let Some(length) = need(20) else { return Ok(0) };
                let format = PixelFormat::parse(&input[4..20])?;
                if !format.true_colour {
                    return Err(RfbError::Unsupported("colour-map pixel formats"));
                }
                self.format = format;
                // What was sent before was in the old format: send everything again.
                self.damage = Damage::everything(self.size.0, self.size.1);
                Ok(length)
            }
            2 => {
                let Some(head) = input.get(..4) else {
                    return Ok(0);
                };
                let length = 4 + 4 * usize::from(u16_at(head, 2));
                let Some(length) = need(length) else {
                    return Ok(0);
                };
                let mut supports = Supports::default();
                for offset in (4..length).step_by(4) {
                    match i32_at(input, offset) {
                        encoding::DESKTOP_SIZE => supports.desktop_size = true,
                        encoding::CURSOR => supports.cursor = true,
                        encoding::DESKTOP_NAME => supports.desktop_name = true,
                        _ => {}
                    }
                }
                self.supports = supports;
                Ok(length)
            }
            3 => {
                let Some(length) = need(10) else { return Ok(0) };
                if input[1] == 0 {
                    self.damage.mark(Rect {
                        x: u16_at(input, 2),
                        y: u16_at(input, 4),
                        width: u16_at(input, 6),
                        height: u16_at(input, 8),
                    });
                }
                self.requested = true;
                Ok(length)
            }
            4 | 5 => {
                let Some(length) = need(if kind == 4 { 8 } else { 6 }) else {
                    return Ok(0);
                };
                events.push(ViewerEvent::Input(input[..length].to_vec()));
                Ok(length)
            }
            6 => {
                let Some(head) = input.get(..8) else {
                    return Ok(0);
                };
                let body = i32_at(head, 4).unsigned_abs() as usize;
                if body > MAX_TEXT_BYTES {
                    return Err(RfbError::Malformed("client cut text length"));
                }
                let Some(length) = need(8 + body) else {
                    return Ok(0);
                };
                events.push(ViewerEvent::Clipboard(input[..length].to_vec()));
                Ok(length)
            }
            // EnableContinuousUpdates, fences and SetDesktopSize need extensions this server
            // never announced; a client that sends them anyway has them ignored.
            150 => Ok(need(10).unwrap_or(0)),
            248 => {
                let Some(head) = input.get(..9) else {
                    return Ok(0);
                };
                Ok(need(9 + usize::from(head[8])).unwrap_or(0))
            }
            251 => {
                let Some(head) = input.get(..8) else {
                    return Ok(0);
                };
                Ok(need(8 + 16 * usize::from(head[6])).unwrap_or(0))
            }
            other => Err(RfbError::UnknownClientMessage(other)),
        }
    }

    /// The hub's screen changed in `rects`.
    pub fn damaged(&mut self, rects: &[Rect]) {
        for &rect in rects {
            self.damage.mark(rect);
        }
    }

    /// The hub's screen is now `width` x `height`.
    pub fn resized(&mut self, width: u16, height: u16) {
        self.size = (width, height);
        self.damage = Damage::everything(width, height);
    }

    /// The desktop's name for this viewer changed (e.g. a viewer joined).
    pub fn renamed(&mut self, name: &str) {
        if name != self.name {
            self.name = name.to_owned();
            self.renamed = true;
        }
    }

    /// The VM's clipboard changed: sent to the viewer at once (a ServerCutText).
    pub fn clipboard(&mut self, text: &[u8]) {
        if self.is_ready() {
            self.output.extend_from_slice(&[3, 0, 0, 0]);
            self.output
                .extend_from_slice(&(text.len() as u32).to_be_bytes());
            self.output.extend_from_slice(text);
        }
    }

    /// The VM rang the bell: passed on at once.
    pub fn bell(&mut self) {
        if self.is_ready() {
            self.output.push(2);
        }
    }

    /// A new cursor shape.
    pub fn cursor(&mut self, shape: CursorShape) {
        self.cursor = Some(shape);
    }

    /// Whether the viewer asked for an update and there is something to send.
    pub fn wants_update(&self) -> bool {
        self.requested
            && self.is_ready()
            && (!self.damage.is_empty()
                || self.known != self.size
                || (self.renamed && self.supports.desktop_name)
                || (self.cursor.is_some() && self.supports.cursor))
    }

    /// The FramebufferUpdate for what changed since the last one, in the viewer's format, if
    /// the viewer asked for one and something changed; the request is then answered.
    pub fn encode_update(&mut self, screen: &Framebuffer) -> Option<Vec<u8>> {
        if !self.wants_update() {
            return None;
        }
        self.requested = false;
        let mut rects: Vec<Vec<u8>> = Vec::new();
        let mut body = Vec::new();
        let mut count: u16 = 0;
        if self.known != self.size && self.supports.desktop_size {
            let (width, height) = self.size;
            push_rect_header(
                &mut body,
                Rect {
                    x: 0,
                    y: 0,
                    width,
                    height,
                },
                encoding::DESKTOP_SIZE,
            );
            count += 1;
            self.known = self.size;
        }
        if self.renamed && self.supports.desktop_name {
            push_rect_header(
                &mut body,
                Rect {
                    x: 0,
                    y: 0,
                    width: 0,
                    height: 0,
                },
                encoding::DESKTOP_NAME,
            );
            body.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
            body.extend_from_slice(self.name.as_bytes());
            count += 1;
        }
        self.renamed = false;
        if self.supports.cursor
            && let Some(shape) = self.cursor.take()
        {
            let mut cursor = Framebuffer::new(shape.width, shape.height);
            if cursor
                .put_pixels(cursor.bounds(), &shape.pixels, &PixelFormat::rgb888())
                .is_ok()
            {
                let rect = Rect {
                    x: shape.hotspot.0,
                    y: shape.hotspot.1,
                    width: shape.width,
                    height: shape.height,
                };
                push_rect_header(&mut body, rect, encoding::CURSOR);
                cursor.encode_raw(cursor.bounds(), &self.format, &mut body);
                body.extend_from_slice(&shape.mask);
                count += 1;
            }
        }
        let (known_width, known_height) = self.known;
        for rect in self.damage.take_rects() {
            // A viewer that cannot resize keeps its first size: only that area is sent.
            let rect = rect
                .clipped(known_width, known_height)
                .clipped(screen.width(), screen.height());
            if rect.is_empty() {
                continue;
            }
            let mut raw = Vec::new();
            push_rect_header(&mut raw, rect, encoding::RAW);
            screen.encode_raw(rect, &self.format, &mut raw);
            rects.push(raw);
            count += 1;
        }
        let mut update =
            Vec::with_capacity(4 + body.len() + rects.iter().map(Vec::len).sum::<usize>());
        update.extend_from_slice(&[0, 0]);
        update.extend_from_slice(&count.to_be_bytes());
        update.extend_from_slice(&body);
        for raw in rects {
            update.extend_from_slice(&raw);
        }
        Some(update)
    }
}

fn push_rect_header(out: &mut Vec<u8>, rect: Rect, encoding: i32) {
    for value in [rect.x, rect.y, rect.width, rect.height] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}
