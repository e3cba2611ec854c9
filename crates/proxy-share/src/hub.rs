//! A hub's state under its lock: the upstream's RFB client and framebuffer, the viewers, and
//! the shared streams that let viewers with equal settings be sent one encoded update.
//!
//! Each viewer is in one of three modes:
//!
//! - **Passthrough**: it asked for what the hub asked the VM for (same pixel format, every
//!   encoding the VM may use), and has had the VM's stream from its start: it is sent the
//!   VM's own messages, untouched, as an unshared session would be. Only the viewers there
//!   when the hub asked the VM for its format can be (the VM's zlib streams cannot be joined
//!   later). The student alone at a console, the common case, costs the hub a decode.
//! - **Stream**: one encoded update per change for every viewer with the same
//!   [`StreamSettings`] ([`SharedStream`]): encoded once, lazily, by whichever member's relay
//!   needs it first, outside the hub's lock. A viewer joins a stream in progress when its
//!   encoder can say "start afresh" to its decoder (Tight's reset bits; Raw and Hextile keep no
//!   state).
//! - **Solo**: its own damage and encoder (ZRLE and zlib, whose one zlib stream per
//!   connection cannot be restarted, and any viewer catching up). A viewer that falls more
//!   than [`STREAM_LOG`] updates behind its stream (or whose VM bytes pile up) goes solo: its
//!   updates merge into a few coarser rectangles until it is current, then it rejoins.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use proxy_rfb::codec::{Encode, JoinChunk};
use proxy_rfb::framebuffer::Rect;
use proxy_rfb::upstream::{CursorShape, Forwarded, UpstreamClient, UpstreamEvent};
use proxy_rfb::viewer::{StreamSettings, UpdatePlan, ViewerServer};
use proxy_rfb::{PixelFormat, encoding};

use crate::Participant;

/// Updates a stream keeps for members that have not taken them; a member further behind goes
/// solo (its updates merge) so a stalled viewer never holds memory.
pub(crate) const STREAM_LOG: usize = 8;

/// Bytes of the VM's own messages a passthrough viewer may have waiting before it goes solo.
const PASSTHROUGH_BACKLOG: usize = 4 << 20;

/// One update of a shared stream.
pub(crate) struct StreamEntry {
    seq: u64,
    /// What the update tells its members besides pixels (kept after the encode).
    told: UpdatePlan,
    /// The update, until it is encoded (its pixels are freed then).
    plan: Mutex<Option<UpdatePlan>>,
    /// A viewer joins the stream at this update: the encoder marks a join point first.
    restart: bool,
    encoded: OnceLock<Bytes>,
    /// Where in `encoded` zlib streams begin anew for a joining viewer.
    join_chunks: OnceLock<Vec<JoinChunk>>,
}

impl StreamEntry {
    fn ready(seq: u64, bytes: Bytes) -> Arc<Self> {
        let entry = Self {
            seq,
            told: UpdatePlan::default(),
            plan: Mutex::new(None),
            restart: false,
            encoded: OnceLock::new(),
            join_chunks: OnceLock::new(),
        };
        let _ = entry.encoded.set(bytes);
        Arc::new(entry)
    }
}

/// The encoder of a shared stream, and how far it got.
pub(crate) struct StreamEncoder {
    encoder: Box<dyn Encode>,
    format: PixelFormat,
    /// Entries not encoded yet, in order (the encoder must see every one).
    pending: VecDeque<Arc<StreamEntry>>,
}

/// Viewers with equal settings, sent the same bytes.
pub(crate) struct SharedStream {
    settings: Option<StreamSettings>,
    encoder: Arc<Mutex<StreamEncoder>>,
    log: VecDeque<Arc<StreamEntry>>,
    next_seq: u64,
    restart_next: bool,
    /// The size, name and cursor its members were last sent.
    size: (u16, u16),
    name: String,
}

impl SharedStream {
    fn new(settings: Option<StreamSettings>, size: (u16, u16), name: &str) -> Self {
        let (encoder, format) = match settings {
            Some(settings) => (settings.encoder.shared_encoder(), settings.format),
            None => (
                proxy_rfb::codec::EncoderSettings::default().encoder(),
                PixelFormat::rgb888(),
            ),
        };
        Self {
            settings,
            encoder: Arc::new(Mutex::new(StreamEncoder {
                encoder,
                format,
                pending: VecDeque::new(),
            })),
            log: VecDeque::new(),
            next_seq: 0,
            restart_next: false,
            size,
            name: name.to_owned(),
        }
    }

    fn push(&mut self, plan: UpdatePlan) {
        let told = plan.clone_without_pixels();
        let entry = Arc::new(StreamEntry {
            seq: self.next_seq,
            told,
            plan: Mutex::new(Some(plan)),
            restart: std::mem::take(&mut self.restart_next),
            encoded: OnceLock::new(),
            join_chunks: OnceLock::new(),
        });
        self.next_seq += 1;
        lock(&self.encoder).pending.push_back(Arc::clone(&entry));
        self.log.push_back(entry);
    }

    fn push_ready(&mut self, bytes: Bytes) {
        self.log.push_back(StreamEntry::ready(self.next_seq, bytes));
        self.next_seq += 1;
    }
}

/// `entry`'s bytes as a member whose zlib streams `unstarted` have not begun yet receives
/// them (encoding every entry of `encoder` up to it first, in order, if nobody did).
pub(crate) fn encoded(
    encoder: &Mutex<StreamEncoder>,
    entry: &StreamEntry,
    unstarted: &mut [bool; 4],
) -> Bytes {
    let bytes = encoded_for_members(encoder, entry);
    if !unstarted.contains(&true) {
        return bytes;
    }
    let chunks = entry
        .join_chunks
        .get()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match proxy_rfb::codec::spliced_for_joiner(&bytes, chunks, unstarted) {
        Some(spliced) => Bytes::from(spliced),
        None => bytes,
    }
}

fn encoded_for_members(encoder: &Mutex<StreamEncoder>, entry: &StreamEntry) -> Bytes {
    if let Some(bytes) = entry.encoded.get() {
        return bytes.clone();
    }
    let mut state = lock(encoder);
    let StreamEncoder {
        encoder,
        format,
        pending,
    } = &mut *state;
    while let Some(next) = pending.front() {
        if next.seq > entry.seq {
            break;
        }
        if next.encoded.get().is_none() {
            if next.restart {
                encoder.mark_join();
            }
            let plan = lock(&next.plan).take().unwrap_or_default();
            let update = plan.encode(format, encoder.as_mut());
            let _ = next.join_chunks.set(encoder.take_join_chunks());
            let _ = next.encoded.set(Bytes::from(update));
        }
        pending.pop_front();
    }
    entry.encoded.get().cloned().unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which stream a viewer takes its updates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Its own damage and encoder.
    Solo,
    /// The VM's own messages; the next entry it takes.
    Passthrough { next: u64 },
    /// A shared stream (of these settings); the next entry it takes; the zlib streams it has
    /// not started yet (their first data reaches it with a zlib header in front).
    Stream {
        settings: StreamSettings,
        next: u64,
        unstarted: [bool; 4],
    },
}

pub(crate) struct ViewerSlot {
    /// Created once the upstream's screen is known (the viewer's ServerInit needs its size).
    pub(crate) server: Option<ViewerServer>,
    pub(crate) waker: Option<Waker>,
    pub(crate) participant: Participant,
    pub(crate) mode: Mode,
    /// Bytes it was sent: the hub's counter of bytes to viewers adds these up.
    pub(crate) sent: u64,
    /// It took the VM's stream or a shared one before: its Tight zlib streams 0..=2 are in
    /// use, and a client whose zlib cannot restart a used stream (noVNC) could not join
    /// another.
    pub(crate) shared_before: bool,
}

/// What a viewer's relay is handed next.
pub(crate) enum Next {
    /// Bytes ready now.
    Bytes(Vec<u8>),
    /// Bytes ready now, shared with other viewers.
    Shared(Bytes),
    /// An entry of a shared stream, to encode (if nobody did) outside the lock, for a member
    /// with these zlib streams not started.
    Entry(Arc<Mutex<StreamEncoder>>, Arc<StreamEntry>, [bool; 4]),
    /// A solo update to encode outside the lock.
    Job(proxy_rfb::viewer::UpdateJob),
    /// Nothing now.
    Nothing,
}

pub(crate) struct HubState {
    pub(crate) upstream: UpstreamClient,
    pub(crate) desktop: String,
    pub(crate) viewers: HashMap<u64, ViewerSlot>,
    pub(crate) next_viewer: u64,
    /// The upstream ended: every viewer is closed with this.
    pub(crate) ended: Option<proxy_core::CloseFrame>,
    /// When the last viewer left (the linger runs from here, whatever the VM sends).
    pub(crate) idle_since: Option<tokio::time::Instant>,
    /// The VM's format and encodings were asked for (from the first viewer that asked).
    configured: bool,
    passthrough: Option<SharedStream>,
    streams: HashMap<StreamSettings, SharedStream>,
    cursor: Option<CursorShape>,
    /// Bytes sent to every viewer of this hub so far.
    pub(crate) bytes_to_viewers: u64,
    /// Bytes the VM sent this hub so far.
    pub(crate) bytes_from_vm: u64,
    /// The screen was not painted for a while (every viewer took the VM's own messages) and
    /// a whole screen is on its way: no viewer is sent pixels from it until then.
    stale: bool,
}

impl HubState {
    pub(crate) fn new(upstream: UpstreamClient, desktop: String) -> Self {
        Self {
            upstream,
            desktop,
            viewers: HashMap::new(),
            next_viewer: 1,
            ended: None,
            idle_since: Some(tokio::time::Instant::now()),
            configured: false,
            passthrough: None,
            streams: HashMap::new(),
            cursor: None,
            bytes_to_viewers: 0,
            bytes_from_vm: 0,
            stale: false,
        }
    }

    pub(crate) fn name(&self) -> String {
        let watching = self.viewers.len();
        if watching > 1 {
            format!("{} ({watching} watching)", self.desktop)
        } else {
            self.desktop.clone()
        }
    }

    fn size(&self) -> (u16, u16) {
        (
            self.upstream.screen().width(),
            self.upstream.screen().height(),
        )
    }

    pub(crate) fn wake_all(&mut self) {
        for slot in self.viewers.values_mut() {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    /// A viewer joined (`id` is in `viewers`).
    pub(crate) fn joined(&mut self) {
        self.idle_since = None;
        if self.upstream.is_ready() {
            self.start_viewers();
        }
        self.rename_all();
        self.update_painting();
        self.ask_if_idle();
        self.wake_all();
    }

    /// Paints the VM's updates into the screen only while some viewer needs pixels from it
    /// (a viewer that does not take the VM's own messages); the student alone at a console
    /// then costs the hub an inflate, not a decode. When painting resumes the screen is stale
    /// until the whole screen, asked for at once, has come.
    fn update_painting(&mut self) {
        let paint = !self.configured
            || self.passthrough.is_none()
            || self
                .viewers
                .values()
                .any(|slot| !matches!(slot.mode, Mode::Passthrough { .. }));
        if paint == self.upstream.is_painting() {
            return;
        }
        self.upstream.set_painting(paint);
        if paint && self.upstream.is_ready() {
            self.stale = true;
            self.upstream.request_update(false);
        }
    }

    /// A viewer left.
    pub(crate) fn left(&mut self, id: u64) -> Option<ViewerSlot> {
        let slot = self.viewers.remove(&id)?;
        if self.viewers.is_empty() {
            self.idle_since = Some(tokio::time::Instant::now());
        }
        self.trim_streams();
        self.update_painting();
        self.rename_all();
        self.wake_all();
        Some(slot)
    }

    pub(crate) fn rename_all(&mut self) {
        let name = self.name();
        for slot in self.viewers.values_mut() {
            if let Some(server) = &mut slot.server {
                server.renamed(&name);
            }
        }
        let plan = UpdatePlan {
            name: Some(name.clone()),
            ..UpdatePlan::default()
        };
        for stream in self.streams.values_mut() {
            if stream.name != name {
                stream.name = name.clone();
                stream.push(plan.clone());
            }
        }
        if let Some(stream) = &mut self.passthrough
            && stream.name != name
        {
            stream.name = name.clone();
            // The VM's stream is not ours to encode: the name goes as an update of its own.
            let mut raw = proxy_rfb::codec::raw::RawEncoder;
            stream.push_ready(Bytes::from(plan.encode(&PixelFormat::rgb888(), &mut raw)));
        }
    }

    fn start_viewers(&mut self) {
        let (width, height) = self.size();
        let name = self.name();
        for slot in self.viewers.values_mut() {
            if slot.server.is_none() {
                slot.server = Some(ViewerServer::new(width, height, &name));
            }
        }
    }

    /// Asks the VM for an update when viewers are waiting and none is on its way.
    fn ask_if_idle(&mut self) {
        if self.configured && !self.viewers.is_empty() && !self.upstream.awaiting_update() {
            self.upstream.request_update(true);
        }
    }

    /// A viewer's settings may be known now: the first viewer to ask for an update decides
    /// what the hub asks the VM for; later, a viewer whose settings changed leaves its stream.
    pub(crate) fn settings_seen(&mut self, id: u64) {
        let Some(slot) = self.viewers.get_mut(&id) else {
            return;
        };
        let Some(server) = &slot.server else {
            return;
        };
        if !server.has_asked() {
            return;
        }
        if !self.configured {
            self.configure_from(id);
            return;
        }
        let changed = match slot.mode {
            Mode::Stream { settings, .. } => settings != server.stream_settings(),
            Mode::Passthrough { .. } => {
                self.passthrough.as_ref().and_then(|stream| stream.settings)
                    != Some(server.stream_settings())
            }
            Mode::Solo => false,
        };
        if changed {
            self.go_solo(id);
        }
    }

    /// Asks the VM for the format and encodings of viewer `id` when they can be passed through
    /// (a true-colour format, Tight among its encodings); otherwise for the hub's defaults.
    fn configure_from(&mut self, id: u64) {
        self.configured = true;
        let server = self.viewers[&id]
            .server
            .as_ref()
            .map(|server| (server.stream_settings(), server.encodings().to_vec()));
        let passthrough = server.filter(|(settings, encodings)| {
            settings.format.true_colour
                && settings.format.bits_per_pixel == 32
                && encodings.contains(&encoding::TIGHT)
        });
        match passthrough {
            Some((settings, encodings)) => {
                let asked: Vec<i32> = encodings
                    .iter()
                    .copied()
                    .filter(|&offered| {
                        UpstreamClient::follows(offered) && !encoding::is_quality_level(offered)
                    })
                    .collect();
                self.upstream.configure(settings.format, &asked);
                self.upstream.capture(true);
                let mut stream = SharedStream::new(None, self.size(), &self.name());
                stream.settings = Some(settings);
                self.passthrough = Some(stream);
                // Every viewer that asked for exactly this takes the VM's stream from here.
                for slot in self.viewers.values_mut() {
                    if let Some(server) = &slot.server
                        && server.has_asked()
                        && server.stream_settings().format == settings.format
                        && asked
                            .iter()
                            .all(|wanted| server.encodings().contains(wanted))
                    {
                        slot.mode = Mode::Passthrough { next: 0 };
                        slot.shared_before = true;
                    }
                }
            }
            None => {
                self.upstream.configure(
                    PixelFormat::rgb888(),
                    &proxy_rfb::upstream::REQUESTED_ENCODINGS,
                );
            }
        }
        self.upstream.request_update(false);
        self.update_painting();
    }

    /// What the upstream's stream meant, applied to every viewer.
    pub(crate) fn apply(&mut self, events: Vec<UpstreamEvent>) {
        let forwarded = self.upstream.take_forwarded();
        for event in events {
            match event {
                UpstreamEvent::Ready { name, .. } => {
                    self.desktop = name;
                    self.start_viewers();
                }
                UpstreamEvent::Updated(rects) => self.updated(&rects),
                UpstreamEvent::Resized { width, height } => {
                    let mut fixed_size = Vec::new();
                    for (id, slot) in &mut self.viewers {
                        if let Mode::Stream { settings, .. } = slot.mode
                            && !settings.supports.desktop_size
                        {
                            fixed_size.push(*id);
                        }
                        if let Some(server) = &mut slot.server {
                            server.resized(width, height);
                        }
                    }
                    for id in fixed_size {
                        self.go_solo(id);
                    }
                }
                UpstreamEvent::Cursor(shape) => {
                    self.cursor = Some(shape.clone());
                    for slot in self.viewers.values_mut() {
                        if let Some(server) = &mut slot.server {
                            server.cursor(shape.clone());
                        }
                    }
                    let plan = UpdatePlan {
                        cursor: Some(shape),
                        ..UpdatePlan::default()
                    };
                    for stream in self.streams.values_mut() {
                        if stream
                            .settings
                            .is_some_and(|settings| settings.supports.cursor)
                        {
                            stream.push(plan.clone());
                        }
                    }
                }
                UpstreamEvent::Named(name) => {
                    self.desktop = name;
                    self.rename_all();
                }
                UpstreamEvent::Clipboard(text) => {
                    self.each_own_output(|server| server.clipboard(&text))
                }
                UpstreamEvent::Bell => self.each_own_output(ViewerServer::bell),
                _ => {}
            }
        }
        self.forward(forwarded);
        self.ask_if_idle();
        self.wake_all();
    }

    /// Bells and clipboard for the viewers that do not get the VM's own messages.
    fn each_own_output(&mut self, mut tell: impl FnMut(&mut ViewerServer)) {
        for slot in self.viewers.values_mut() {
            if !matches!(slot.mode, Mode::Passthrough { .. })
                && let Some(server) = &mut slot.server
            {
                tell(server);
            }
        }
    }

    /// The VM's whole messages go to its passthrough viewers; one that did not ask for an
    /// encoding the VM used goes solo instead.
    fn forward(&mut self, forwarded: Vec<Forwarded>) {
        let Some(stream) = &mut self.passthrough else {
            return;
        };
        for message in forwarded {
            for (id, slot) in &mut self.viewers {
                let Mode::Passthrough { .. } = slot.mode else {
                    continue;
                };
                let takes_all = slot.server.as_ref().is_some_and(|server| {
                    message
                        .encodings
                        .iter()
                        .all(|used| server.encodings().contains(used))
                });
                if !takes_all {
                    tracing::debug!(
                        viewer = id,
                        "a passthrough viewer goes solo: the vm used an encoding it did not ask for"
                    );
                    slot.mode = Mode::Solo;
                    let cursor = self.cursor.clone();
                    if let Some(server) = &mut slot.server {
                        server.resync(cursor);
                    }
                }
            }
            stream.push_ready(Bytes::from(message.bytes));
        }
        let backlog: usize = stream
            .log
            .iter()
            .filter_map(|entry| entry.encoded.get())
            .map(Bytes::len)
            .sum();
        if backlog > PASSTHROUGH_BACKLOG || stream.log.len() > 4 * STREAM_LOG {
            let oldest = stream.log.front().map_or(0, |entry| entry.seq);
            let ids: Vec<u64> = self
                .viewers
                .iter()
                .filter(
                    |(_, slot)| matches!(slot.mode, Mode::Passthrough { next } if next <= oldest),
                )
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.go_solo(id);
            }
        }
        self.trim_streams();
    }

    fn updated(&mut self, rects: &[Rect]) {
        if self.stale {
            let (width, height) = self.size();
            let covered: usize = rects.iter().map(|rect| rect.pixels()).sum();
            self.stale = covered < usize::from(width) * usize::from(height);
        }
        for slot in self.viewers.values_mut() {
            if let (Mode::Solo, Some(server)) = (slot.mode, &mut slot.server) {
                server.damaged(rects);
            }
        }
        let size = self.size();
        let screen = self.upstream.snapshot();
        for stream in self.streams.values_mut() {
            let mut plan = UpdatePlan::default();
            if stream.size != size {
                stream.size = size;
                plan.resize = Some(size);
            }
            let area = if plan.resize.is_some() {
                vec![screen.bounds()]
            } else {
                rects.to_vec()
            };
            for rect in area {
                let rect = rect.clipped(size.0, size.1);
                if !rect.is_empty() {
                    plan.rects.push(rect);
                }
            }
            if !plan.rects.is_empty() {
                plan.screen = Some(Arc::clone(&screen));
            }
            if !plan.is_empty() {
                stream.push(plan);
            }
        }
        self.trim_streams();
    }

    /// Drops entries every member took, streams without members, and demotes members that
    /// fell too far behind.
    fn trim_streams(&mut self) {
        let mut behind: Vec<(u64, Vec<UpdatePlan>)> = Vec::new();
        for (key, stream) in &mut self.streams {
            let members: Vec<(u64, u64)> = self
                .viewers
                .iter()
                .filter_map(|(id, slot)| match slot.mode {
                    Mode::Stream { settings, next, .. } if settings == *key => Some((*id, next)),
                    _ => None,
                })
                .collect();
            trim(stream, &members, &mut behind);
        }
        self.streams.retain(|key, _| {
            self.viewers
                .values()
                .any(|slot| matches!(slot.mode, Mode::Stream { settings, .. } if settings == *key))
        });
        if let Some(stream) = &mut self.passthrough {
            let members: Vec<(u64, u64)> = self
                .viewers
                .iter()
                .filter_map(|(id, slot)| match slot.mode {
                    Mode::Passthrough { next } => Some((*id, next)),
                    _ => None,
                })
                .collect();
            if members.is_empty() {
                self.passthrough = None;
                self.upstream.capture(false);
            } else {
                let oldest = members.iter().map(|(_, next)| *next).min().unwrap_or(0);
                while stream.log.front().is_some_and(|entry| entry.seq < oldest) {
                    stream.log.pop_front();
                }
            }
        }
        for (id, missed) in behind {
            self.catch_up_alone(id, &missed);
        }
    }

    /// Viewer `id` fell behind its stream: it gets its own, merged updates of what it missed
    /// (and what changes meanwhile) until it is current, then rejoins.
    fn catch_up_alone(&mut self, id: u64, missed: &[UpdatePlan]) {
        let size = self.size();
        let cursor = self.cursor.clone();
        let Some(slot) = self.viewers.get_mut(&id) else {
            return;
        };
        slot.mode = Mode::Solo;
        tracing::debug!(session = %slot.participant.session, missed = missed.len(), "viewer fell behind its shared stream: its own merged updates until it is current");
        let Some(server) = &mut slot.server else {
            return;
        };
        server.restart_encoder();
        for told in missed {
            if told.resize.is_some() {
                server.resized(size.0, size.1);
            }
            if told.cursor.is_some()
                && let Some(shape) = &cursor
            {
                server.cursor(shape.clone());
            }
            server.damaged(&told.rects);
        }
    }

    /// Viewer `id` gets its own updates from now on, starting with the whole screen.
    fn go_solo(&mut self, id: u64) {
        let cursor = self.cursor.clone();
        if let Some(slot) = self.viewers.get_mut(&id) {
            slot.mode = Mode::Solo;
            if let Some(server) = &mut slot.server {
                server.resync(cursor);
            }
        }
        self.update_painting();
    }

    /// What viewer `id`'s relay is handed next.
    pub(crate) fn next_for(&mut self, id: u64) -> Next {
        let screen_size = self.size();
        let name = self.name();
        let Some(slot) = self.viewers.get_mut(&id) else {
            return Next::Nothing;
        };
        let Some(server) = &mut slot.server else {
            return Next::Nothing;
        };
        let output = server.take_output();
        if !output.is_empty() {
            return Next::Bytes(output);
        }
        match slot.mode {
            Mode::Passthrough { next } => {
                let Some(stream) = &self.passthrough else {
                    return Next::Nothing;
                };
                match stream.log.iter().find(|entry| entry.seq >= next) {
                    Some(entry) => {
                        slot.mode = Mode::Passthrough {
                            next: entry.seq + 1,
                        };
                        Next::Shared(entry.encoded.get().cloned().unwrap_or_default())
                    }
                    None => Next::Nothing,
                }
            }
            Mode::Stream {
                settings,
                next,
                unstarted,
            } => {
                let Some(stream) = self.streams.get(&settings) else {
                    return Next::Nothing;
                };
                match stream.log.iter().find(|entry| entry.seq >= next) {
                    Some(entry) => {
                        slot.mode = Mode::Stream {
                            settings,
                            next: entry.seq + 1,
                            unstarted,
                        };
                        if let Some(server) = &mut slot.server {
                            server.sent_elsewhere(&entry.told);
                        }
                        Next::Entry(Arc::clone(&stream.encoder), Arc::clone(entry), unstarted)
                    }
                    None => Next::Nothing,
                }
            }
            Mode::Solo => {
                if self.stale {
                    return Next::Nothing;
                }
                let job = server.prepare_update(&self.upstream.snapshot());
                // Once its own update has everything up to now, a viewer whose encoder can
                // start afresh takes the shared stream of its settings from the next change
                // on (the stream's next update restarts the compression state).
                let settings = server.stream_settings();
                // Tight joins once (its zlib streams 0..=2 start with the stream); Raw and
                // Hextile keep no state and join whenever they are current.
                let may_join = match settings.encoder.encoding {
                    encoding::RAW | encoding::HEXTILE => true,
                    encoding::TIGHT => !slot.shared_before,
                    _ => false,
                };
                if may_join
                    && server.has_asked()
                    && server.known_size() == screen_size
                    && server.is_current()
                {
                    let stream = self
                        .streams
                        .entry(settings)
                        .or_insert_with(|| SharedStream::new(Some(settings), screen_size, &name));
                    stream.restart_next = true;
                    slot.mode = Mode::Stream {
                        settings,
                        next: stream.next_seq,
                        unstarted: [true; 4],
                    };
                    slot.shared_before = true;
                    tracing::debug!(session = %slot.participant.session, "viewer takes the shared stream of its settings");
                }
                match job {
                    Some(job) => Next::Job(job),
                    None => Next::Nothing,
                }
            }
        }
    }

    /// Viewer `id` started the zlib streams not in `unstarted` (a join chunk reached it).
    pub(crate) fn started(&mut self, id: u64, unstarted: [bool; 4]) {
        if let Some(slot) = self.viewers.get_mut(&id)
            && let Mode::Stream {
                unstarted: ref mut kept,
                ..
            } = slot.mode
        {
            *kept = unstarted;
        }
    }

    /// An encoder is back from a solo job.
    pub(crate) fn finished(&mut self, id: u64, encoder: Box<dyn Encode>) {
        if let Some(server) = self
            .viewers
            .get_mut(&id)
            .and_then(|slot| slot.server.as_mut())
        {
            server.finish_update(encoder);
        }
    }
}

fn trim(
    stream: &mut SharedStream,
    members: &[(u64, u64)],
    behind: &mut Vec<(u64, Vec<UpdatePlan>)>,
) {
    let oldest_kept = stream.next_seq.saturating_sub(STREAM_LOG as u64);
    for &(id, next) in members {
        if next < oldest_kept {
            // What it missed, so that it catches up with just those areas.
            let missed = stream
                .log
                .iter()
                .filter(|entry| entry.seq >= next)
                .map(|entry| entry.told.clone())
                .collect();
            behind.push((id, missed));
        }
    }
    let oldest_needed = members
        .iter()
        .map(|(_, next)| *next)
        .filter(|next| *next >= oldest_kept)
        .min()
        .unwrap_or(stream.next_seq);
    while stream
        .log
        .front()
        .is_some_and(|entry| entry.seq < oldest_needed)
    {
        stream.log.pop_front();
    }
}
