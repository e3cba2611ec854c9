//! The RFB server a shared console's hub speaks to each viewer (sans-IO): its own handshake
//! with each browser (security None: the token already authenticated it), the viewer's own
//! pixel format and encodings ([`EncoderSettings`]: the best encoding it offers, its
//! compression and quality levels, one encoder with its compression state per viewer), and
//! updates built from the hub's [`Framebuffer`] for the areas that changed since the viewer's
//! last update ([`Damage`]), sent only when the viewer asked.
//!
//! An update is planned under the hub's lock ([`ViewerServer::prepare_update`]: the changed
//! areas' colours are copied into an [`UpdatePlan`]) and encoded outside it
//! ([`UpdateJob::run`]), so one viewer's large encode never holds the others up. A viewer that
//! reads slowly asks less often, so its damage merges and it gets coarser, fewer updates; its
//! memory stays a few rectangles. Input (keys, pointer, clipboard) comes out as
//! [`ViewerEvent`]s with the exact message bytes, for the hub to forward when the viewer may
//! control the VM.
//!
//! ```
//! use proxy_rfb::framebuffer::Framebuffer;
//! use proxy_rfb::viewer::ViewerServer;
//!
//! let screen = std::sync::Arc::new(Framebuffer::new(2, 1));
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
use std::sync::Arc;

use crate::codec::{Encode, EncoderSettings, Pixels, push_rect_header};
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

/// The pseudo-encodings a viewer said it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Supports {
    /// DesktopSize: it follows resizes.
    pub desktop_size: bool,
    /// Cursor: it draws the cursor shape itself.
    pub cursor: bool,
    /// DesktopName.
    pub desktop_name: bool,
}

/// Everything that decides the bytes a viewer is sent for a change: viewers with equal
/// streams can be sent the same encoded update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamSettings {
    /// Its pixel format.
    pub format: PixelFormat,
    /// Its encoding and levels.
    pub encoder: EncoderSettings,
    /// The pseudo-encodings it takes.
    pub supports: Supports,
}

/// One update to send: planned under the hub's lock, encoded outside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdatePlan {
    /// A DesktopSize rectangle first.
    pub resize: Option<(u16, u16)>,
    /// A DesktopName rectangle.
    pub name: Option<String>,
    /// A Cursor rectangle.
    pub cursor: Option<CursorShape>,
    /// The changed areas.
    pub rects: Vec<Rect>,
    /// The screen they are read from (shared, not copied).
    pub screen: Option<Arc<Framebuffer>>,
}

/// Most pixels an encoder is handed at once: a larger area goes in bands of rows, so the
/// colours copied for an encode stay small (Tight and ZRLE split further themselves).
const BAND_PIXELS: usize = 1 << 16;

impl UpdatePlan {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.resize.is_none()
            && self.name.is_none()
            && self.cursor.is_none()
            && self.rects.is_empty()
    }

    /// The same without the screen its pixels come from (what it tells a viewer, and where).
    pub fn clone_without_pixels(&self) -> UpdatePlan {
        UpdatePlan {
            resize: self.resize,
            name: self.name.clone(),
            cursor: self.cursor.clone(),
            rects: self.rects.clone(),
            screen: None,
        }
    }

    /// The FramebufferUpdate message, pixels in `format` written by `encoder`.
    pub fn encode(&self, format: &PixelFormat, encoder: &mut dyn Encode) -> Vec<u8> {
        let mut update = Vec::with_capacity(64);
        update.extend_from_slice(&[0, 0, 0, 0]);
        let mut count: u32 = 0;
        if let Some((width, height)) = self.resize {
            push_rect_header(
                &mut update,
                Rect {
                    x: 0,
                    y: 0,
                    width,
                    height,
                },
                encoding::DESKTOP_SIZE,
            );
            count += 1;
        }
        if let Some(name) = &self.name {
            push_rect_header(&mut update, Rect::default(), encoding::DESKTOP_NAME);
            update.extend_from_slice(&(name.len() as u32).to_be_bytes());
            update.extend_from_slice(name.as_bytes());
            count += 1;
        }
        if let Some(shape) = &self.cursor {
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
                push_rect_header(&mut update, rect, encoding::CURSOR);
                cursor.encode_raw(cursor.bounds(), format, &mut update);
                update.extend_from_slice(&shape.mask);
                count += 1;
            }
        }
        if let Some(screen) = &self.screen {
            for rect in &self.rects {
                let band = band_height(rect.width);
                let mut y = rect.y;
                while y < rect.y + rect.height {
                    let part = Rect {
                        y,
                        height: band.min(rect.y + rect.height - y),
                        ..*rect
                    }
                    .clipped(screen.width(), screen.height());
                    y = y.saturating_add(band);
                    if part.is_empty() {
                        continue;
                    }
                    let colours = screen.colours(part);
                    count +=
                        u32::from(encoder.encode(Pixels::new(part, &colours), format, &mut update));
                }
            }
        }
        match u16::try_from(count) {
            Ok(count) => update[2..4].copy_from_slice(&count.to_be_bytes()),
            Err(_) => {
                // More rectangles than the count holds: end with LastRect instead.
                update[2..4].copy_from_slice(&[0xff, 0xff]);
                push_rect_header(&mut update, Rect::default(), encoding::LAST_RECT);
            }
        }
        update
    }
}

/// Rows per band for a rectangle `width` wide: at most [`BAND_PIXELS`], in whole 64-row tiles
/// when there is room (ZRLE's tiles then stay whole).
fn band_height(width: u16) -> u16 {
    let rows = (BAND_PIXELS / usize::from(width.max(1))).max(1);
    let rows = if rows >= 64 { rows / 64 * 64 } else { rows };
    u16::try_from(rows.min(usize::from(crate::framebuffer::MAX_SIDE))).unwrap_or(u16::MAX)
}

/// An update planned for one viewer with its encoder taken along, to run outside the hub's
/// lock; the encoder goes back with [`ViewerServer::finish_update`].
pub struct UpdateJob {
    plan: UpdatePlan,
    format: PixelFormat,
    encoder: Box<dyn Encode>,
}

impl std::fmt::Debug for UpdateJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateJob")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl UpdateJob {
    /// Encodes the update; returns it and the encoder.
    pub fn run(mut self) -> (Vec<u8>, Box<dyn Encode>) {
        let update = self.plan.encode(&self.format, self.encoder.as_mut());
        (update, self.encoder)
    }
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
    /// Whether it has asked for an update at all (its settings are known then).
    asked_once: bool,
    damage: Damage,
    cursor: Option<CursorShape>,
    renamed: bool,
    encodings: Vec<i32>,
    settings: EncoderSettings,
    /// `None` while an [`UpdateJob`] has it.
    encoder: Option<Box<dyn Encode>>,
    /// The next update starts the encoder's compression state afresh.
    restart: bool,
}

impl std::fmt::Debug for dyn Encode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encode({})", self.encoding())
    }
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
            asked_once: false,
            damage: Damage::everything(width, height),
            cursor: None,
            renamed: false,
            encodings: Vec::new(),
            settings: EncoderSettings::default(),
            encoder: Some(EncoderSettings::default().encoder()),
            restart: false,
        }
    }

    /// What decides this viewer's bytes (its format, encoding and pseudo-encodings).
    pub fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            format: self.format,
            encoder: self.settings,
            supports: self.supports,
        }
    }

    /// The encodings it offered, in its order.
    pub fn encodings(&self) -> &[i32] {
        &self.encodings
    }

    /// Whether it has asked for an update (so its format and encodings are known).
    pub fn has_asked(&self) -> bool {
        self.asked_once
    }

    /// The size it knows the screen to be.
    pub fn known_size(&self) -> (u16, u16) {
        self.known
    }

    /// Its own damage is sent again from scratch: the whole screen, the cursor and the name
    /// at the next update, with the encoder's compression state started afresh (after the
    /// viewer missed updates someone else encoded, or got another stream's bytes).
    pub fn resync(&mut self, cursor: Option<CursorShape>) {
        self.damage = Damage::everything(self.size.0, self.size.1);
        self.cursor = cursor;
        self.renamed = true;
        self.restart = true;
    }

    /// The next update starts its encoder's compression state afresh (it got another
    /// stream's bytes meanwhile).
    pub fn restart_encoder(&mut self) {
        self.restart = true;
    }

    /// An update built elsewhere (a shared stream) was sent to it: it now knows what that
    /// update told it, and its own damage is what changed after it.
    pub fn sent_elsewhere(&mut self, plan: &UpdatePlan) {
        if let Some(size) = plan.resize {
            self.known = size;
        }
        if plan.name.is_some() {
            self.renamed = false;
        }
        if plan.cursor.is_some() {
            self.cursor = None;
        }
    }

    /// Whether its encoder can start afresh and say so to its decoder (so it may join a
    /// shared stream in progress).
    pub fn can_restart(&self) -> bool {
        matches!(
            self.settings.encoding,
            encoding::RAW | encoding::TIGHT | encoding::HEXTILE
        )
    }

    /// Whether it has been sent everything (no damage, size, name or cursor owed).
    pub fn is_current(&self) -> bool {
        self.damage.is_empty()
            && self.known == self.size
            && !(self.renamed && self.supports.desktop_name)
            && !(self.cursor.is_some() && self.supports.cursor)
    }

    /// How many changed rectangles it holds for its next update.
    pub fn pending_rects(&self) -> usize {
        self.damage.rects().len()
    }

    /// The name it was last told.
    pub fn name(&self) -> &str {
        &self.name
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
                let mut encodings = Vec::with_capacity((length - 4) / 4);
                for offset in (4..length).step_by(4) {
                    let offered = i32_at(input, offset);
                    encodings.push(offered);
                    match offered {
                        encoding::DESKTOP_SIZE => supports.desktop_size = true,
                        encoding::CURSOR => supports.cursor = true,
                        encoding::DESKTOP_NAME => supports.desktop_name = true,
                        _ => {}
                    }
                }
                self.supports = supports;
                let settings = EncoderSettings::from_encodings(&encodings);
                if settings.encoding != self.settings.encoding {
                    // A new encoding: a fresh encoder, and everything again in it.
                    self.encoder = Some(settings.encoder());
                    self.damage = Damage::everything(self.size.0, self.size.1);
                }
                self.settings = settings;
                self.encodings = encodings;
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
                self.asked_once = true;
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

    /// The FramebufferUpdate for what changed since the last one, in the viewer's format and
    /// encoding, if the viewer asked for one and something changed; the request is then
    /// answered. (Plans, encodes and finishes in one go: [`Self::prepare_update`] splits it.)
    pub fn encode_update(&mut self, screen: &Arc<Framebuffer>) -> Option<Vec<u8>> {
        let job = self.prepare_update(screen)?;
        let (update, encoder) = job.run();
        self.finish_update(encoder);
        Some(update)
    }

    /// Plans the next update (as [`Self::encode_update`]) and hands it out with the encoder,
    /// to encode outside the hub's lock; `None` also while an earlier job has the encoder.
    pub fn prepare_update(&mut self, screen: &Arc<Framebuffer>) -> Option<UpdateJob> {
        if !self.wants_update() || self.encoder.is_none() {
            return None;
        }
        let plan = self.plan(screen);
        let mut encoder = self.encoder.take()?;
        if std::mem::take(&mut self.restart) {
            // An encoding that cannot tell its decoder to start afresh goes on with its
            // stream (the decoder's state is this encoder's).
            encoder.restart();
        }
        Some(UpdateJob {
            plan,
            format: self.format,
            encoder,
        })
    }

    /// The encoder back from an [`UpdateJob`].
    pub fn finish_update(&mut self, encoder: Box<dyn Encode>) {
        if encoder.encoding() == self.settings.encoding {
            self.encoder = Some(encoder);
        } else {
            // The viewer changed encodings meanwhile: the new one is already in place.
            self.encoder.get_or_insert_with(|| self.settings.encoder());
        }
    }

    fn plan(&mut self, screen: &Arc<Framebuffer>) -> UpdatePlan {
        self.requested = false;
        let mut plan = UpdatePlan::default();
        if self.known != self.size && self.supports.desktop_size {
            plan.resize = Some(self.size);
            self.known = self.size;
        }
        if self.renamed && self.supports.desktop_name {
            plan.name = Some(self.name.clone());
        }
        self.renamed = false;
        if self.supports.cursor {
            plan.cursor = self.cursor.take();
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
            plan.rects.push(rect);
        }
        if !plan.rects.is_empty() {
            plan.screen = Some(Arc::clone(screen));
        }
        plan
    }
}
