//! The shared console's model, sans-IO: an upstream stream of random updates (Raw, CopyRect,
//! resizes) fed to the hub's [`UpstreamClient`] in random chunks, and viewers that join late,
//! stall, leave, each speaking to its own [`ViewerServer`] through a client-side decoder (an
//! `UpstreamClient` acting as the browser). However they interleave, no viewer's stream ever
//! fails to decode, and once everyone catches up every viewer's screen equals the hub's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proxy_rfb::framebuffer::{Framebuffer, Rect};
use proxy_rfb::upstream::{UpstreamClient, UpstreamEvent};
use proxy_rfb::viewer::{ViewerEvent, ViewerServer};
use proxy_rfb::{PixelFormat, encoding};

/// What a viewer's client asks for: each list puts another encoding first.
const CLIENT_ENCODINGS: [&[i32]; 6] = [
    &[encoding::RAW, encoding::DESKTOP_SIZE],
    &[
        encoding::TIGHT,
        encoding::compression_level(2),
        encoding::RAW,
        encoding::DESKTOP_SIZE,
    ],
    &[
        encoding::TIGHT,
        encoding::quality_level(6),
        encoding::compression_level(9),
        encoding::RAW,
        encoding::DESKTOP_SIZE,
    ],
    &[encoding::ZRLE, encoding::RAW, encoding::DESKTOP_SIZE],
    &[
        encoding::ZLIB,
        encoding::compression_level(1),
        encoding::RAW,
        encoding::DESKTOP_SIZE,
    ],
    &[encoding::HEXTILE, encoding::RAW, encoding::DESKTOP_SIZE],
];

/// The pixel formats clients ask for: the hub's own and noVNC's.
fn client_format(choice: usize) -> PixelFormat {
    match choice % 2 {
        0 => PixelFormat::rgb888(),
        _ => PixelFormat {
            shift: [0, 8, 16],
            ..PixelFormat::rgb888()
        },
    }
}

/// One step of the upstream's stream, as generated.
#[derive(Debug, Clone)]
enum Change {
    Raw {
        rect: (u16, u16, u16, u16),
        seed: u32,
    },
    Copy {
        rect: (u16, u16, u16, u16),
        from: (u16, u16),
    },
    Resize(u16, u16),
}

/// What a viewer does at a step.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// A viewer joins with these settings (see [`Viewer::join`]).
    Join(usize),
    Leave(usize),
    /// Deliver this viewer's pending bytes (both ways) and let it ask again.
    Pump(usize),
    /// An upstream change is applied next.
    Upstream,
}

fn server_handshake(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = b"RFB 003.008\n".to_vec();
    bytes.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    bytes.extend_from_slice(&4u32.to_be_bytes());
    bytes.extend_from_slice(b"test");
    bytes
}

fn rect_header(out: &mut Vec<u8>, x: u16, y: u16, w: u16, h: u16, encoding: i32) {
    for value in [x, y, w, h] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

/// The change as a FramebufferUpdate on a `size` screen (changes off the screen are clipped
/// or skipped, as a server only sends what is on it); the screen's new size.
fn encode(change: &Change, size: (u16, u16)) -> (Vec<u8>, (u16, u16)) {
    let mut out = vec![0, 0, 0, 1];
    let clip = |(x, y, w, h): (u16, u16, u16, u16)| {
        Rect {
            x,
            y,
            width: w,
            height: h,
        }
        .clipped(size.0, size.1)
    };
    match change {
        Change::Raw { rect, seed } => {
            let rect = clip(*rect);
            rect_header(&mut out, rect.x, rect.y, rect.width, rect.height, 0);
            let mut state = seed | 1;
            for _ in 0..usize::from(rect.width) * usize::from(rect.height) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                out.extend_from_slice(&(state & 0x00ff_ffff).to_le_bytes());
            }
            (out, size)
        }
        Change::Copy { rect, from } => {
            let rect = clip(*rect);
            let source = Rect {
                x: from.0,
                y: from.1,
                ..rect
            }
            .clipped(size.0, size.1);
            let rect = Rect {
                width: source.width,
                height: source.height,
                ..rect
            };
            rect_header(&mut out, rect.x, rect.y, rect.width, rect.height, 1);
            out.extend_from_slice(&source.x.to_be_bytes());
            out.extend_from_slice(&source.y.to_be_bytes());
            (out, size)
        }
        Change::Resize(width, height) => {
            rect_header(&mut out, 0, 0, *width, *height, -223);
            (out, (*width, *height))
        }
    }
}

struct Viewer {
    server: ViewerServer,
    client: UpstreamClient,
    to_client: Vec<u8>,
    encodings: &'static [i32],
    format: PixelFormat,
}

impl Viewer {
    fn join(screen: &Framebuffer, choice: usize) -> Self {
        let mut server = ViewerServer::new(screen.width(), screen.height(), "test");
        let to_client = server.take_output();
        Self {
            server,
            client: UpstreamClient::new(),
            to_client,
            encodings: CLIENT_ENCODINGS[choice % CLIENT_ENCODINGS.len()],
            format: client_format(choice / CLIENT_ENCODINGS.len()),
        }
    }

    /// Delivers everything pending both ways until neither side has more to say, answering
    /// the viewer's requests from `screen`.
    fn pump(&mut self, screen: &std::sync::Arc<Framebuffer>) {
        loop {
            let to_client = std::mem::take(&mut self.to_client);
            let mut progressed = !to_client.is_empty();
            if progressed {
                for event in self
                    .client
                    .feed(&to_client)
                    .expect("the viewer's stream decodes")
                {
                    match event {
                        UpstreamEvent::Ready { .. } => {
                            self.client.configure(self.format, self.encodings);
                            self.client.request_update(false);
                        }
                        UpstreamEvent::Updated(_) => self.client.request_update(true),
                        _ => {}
                    }
                }
            }
            let to_server = self.client.take_output();
            if !to_server.is_empty() {
                progressed = true;
                for event in self
                    .server
                    .feed(&to_server)
                    .expect("the client's stream parses")
                {
                    assert!(matches!(event, ViewerEvent::Ready), "{event:?}");
                }
                self.to_client.extend(self.server.take_output());
            }
            if let Some(update) = self.server.encode_update(screen) {
                progressed = true;
                self.to_client.extend(update);
            }
            if !progressed {
                return;
            }
        }
    }
}

fn change_strategy() -> impl Strategy<Value = Change> {
    let rect = (0u16..90, 0u16..90, 1u16..60, 1u16..60);
    prop_oneof![
        4 => (rect.clone(), any::<u32>()).prop_map(|(rect, seed)| Change::Raw { rect, seed }),
        2 => (rect, (0u16..90, 0u16..90)).prop_map(|(rect, from)| Change::Copy { rect, from }),
        1 => (1u16..100, 1u16..100).prop_map(|(w, h)| Change::Resize(w, h)),
    ]
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => (0usize..12).prop_map(Action::Join),
        1 => (0usize..4).prop_map(Action::Leave),
        3 => (0usize..4).prop_map(Action::Pump),
        3 => Just(Action::Upstream),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn viewers_joining_leaving_and_stalling_converge_on_the_hubs_screen(
        changes in proptest::collection::vec(change_strategy(), 1..30),
        actions in proptest::collection::vec(action_strategy(), 1..80),
        chunk in 1usize..5000,
    ) {
        let mut hub = UpstreamClient::new();
        let mut size = (80u16, 60u16);
        let mut stream = server_handshake(size.0, size.1);
        for change in &changes {
            let (bytes, new_size) = encode(change, size);
            stream.extend(bytes);
            size = new_size;
        }
        // The hub reads the upstream in `chunk`-byte pieces, one piece per Upstream action
        // (and the rest at the end); viewers act in between.
        let mut pieces = stream.chunks(chunk);
        let mut viewers: Vec<Viewer> = Vec::new();
        let apply = |events: Vec<UpstreamEvent>, viewers: &mut Vec<Viewer>| {
            for event in events {
                match event {
                    UpstreamEvent::Updated(rects) => {
                        for viewer in viewers.iter_mut() {
                            viewer.server.damaged(&rects);
                        }
                    }
                    UpstreamEvent::Resized { width, height } => {
                        for viewer in viewers.iter_mut() {
                            viewer.server.resized(width, height);
                        }
                    }
                    _ => {}
                }
            }
        };
        for action in actions {
            match action {
                Action::Join(choice) => {
                    if hub.screen().width() > 0 {
                        viewers.push(Viewer::join(hub.screen(), choice));
                    }
                }
                Action::Leave(index) => {
                    if index < viewers.len() {
                        viewers.remove(index);
                    }
                }
                Action::Pump(index) => {
                    let screen = hub.snapshot();
                    if let Some(viewer) = viewers.get_mut(index) {
                        viewer.pump(&screen);
                    }
                }
                Action::Upstream => {
                    if let Some(piece) = pieces.next() {
                        let events = hub.feed(piece).unwrap();
                        apply(events, &mut viewers);
                    }
                }
            }
        }
        for piece in pieces {
            let events = hub.feed(piece).unwrap();
            apply(events, &mut viewers);
        }
        // Late joiners too.
        viewers.push(Viewer::join(hub.screen(), 1));
        viewers.push(Viewer::join(hub.screen(), 9));
        let screen = hub.snapshot();
        for viewer in &mut viewers {
            viewer.pump(&screen);
            prop_assert_eq!(viewer.client.screen(), &*screen);
        }
    }
}

#[test]
fn a_viewer_that_never_asks_keeps_a_few_rectangles_however_much_changes() {
    let mut hub = UpstreamClient::new();
    hub.feed(&server_handshake(640, 480)).unwrap();
    let mut stalled = Viewer::join(hub.screen(), 1);
    stalled.pump(&hub.snapshot());
    // Thousands of updates while the viewer reads nothing: its pending state is a few merged
    // rectangles, not a queue of updates.
    for seed in 0..2000u32 {
        let change = Change::Raw {
            rect: ((seed * 37 % 600) as u16, (seed * 53 % 440) as u16, 40, 40),
            seed,
        };
        let (bytes, _) = encode(&change, (640, 480));
        for event in hub.feed(&bytes).unwrap() {
            if let UpstreamEvent::Updated(rects) = event {
                stalled.server.damaged(&rects);
            }
        }
    }
    assert!(stalled.server.pending_rects() <= proxy_rfb::framebuffer::MAX_DAMAGE_RECTS);
    // When it asks again it gets one update of the merged areas and is current.
    let screen = hub.snapshot();
    stalled.pump(&screen);
    assert_eq!(stalled.client.screen(), &*screen);
}
