//! Shared consoles through the engine: several viewers of one VM on one upstream connection,
//! each decoded by a client-side RFB decoder; the same pixels for everyone, a late joiner's
//! full screen at once, controllers' keys reaching the VM and observers' not, the desktop name
//! counting viewers, the upstream closed after the last viewer left, and the viewer limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use proxy_auth::{ConsoleAccess, ConsoleRole};
use proxy_rfb::framebuffer::Framebuffer;
use proxy_rfb::upstream::{UpstreamClient, UpstreamEvent};
use proxy_rfb::{PixelFormat, encoding};
use proxy_server::ShareConfig;
use test_support::process::rss_kib;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const BOUND: Duration = Duration::from_secs(10);

/// noVNC 1.x's encodings (those the decoder here follows), in its order.
const NOVNC_ENCODINGS: [i32; 11] = [
    encoding::COPY_RECT,
    encoding::TIGHT,
    encoding::ZRLE,
    encoding::HEXTILE,
    encoding::ZLIB,
    encoding::RAW,
    encoding::quality_level(6),
    encoding::compression_level(2),
    encoding::DESKTOP_SIZE,
    encoding::LAST_RECT,
    encoding::DESKTOP_NAME,
];

/// noVNC's pixel format: 32 bits, depth 24, red in the lowest byte.
fn novnc_format() -> PixelFormat {
    PixelFormat {
        shift: [0, 8, 16],
        ..PixelFormat::rgb888()
    }
}

/// A viewer with a client-side RFB decoder: every byte the hub sends must decode.
struct Viewer {
    socket: Client,
    decoder: UpstreamClient,
    name: String,
}

impl Viewer {
    async fn open(addr: SocketAddr, role: ConsoleRole) -> Self {
        let token = console_token(
            VM_DESKTOP,
            Some(ConsoleAccess {
                role,
                ..ConsoleAccess::default()
            }),
        );
        let (socket, _) = connect(addr, &format!("/{token}/{VM_DESKTOP}"), "binary")
            .await
            .unwrap();
        let mut viewer = Self {
            socket,
            decoder: UpstreamClient::new(),
            name: String::new(),
        };
        viewer.until(|viewer| !viewer.name.is_empty()).await;
        viewer
    }

    /// Decodes one message from the hub and answers as a client does.
    async fn handle(&mut self, message: Message) {
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => return,
        };
        for event in self.decoder.feed(&bytes).expect("the hub's stream decodes") {
            match event {
                UpstreamEvent::Ready { name, .. } => {
                    self.name = name;
                    // As noVNC: its pixel format, its encodings, then the first request.
                    self.decoder.configure(novnc_format(), &NOVNC_ENCODINGS);
                    self.decoder.request_update(false);
                }
                UpstreamEvent::Named(name) => self.name = name,
                UpstreamEvent::Updated(_) => self.decoder.request_update(true),
                _ => {}
            }
        }
        let reply = self.decoder.take_output();
        if !reply.is_empty() {
            self.socket
                .send(Message::Binary(reply.into()))
                .await
                .unwrap();
        }
    }

    /// Reads and decodes until `done` holds.
    async fn until(&mut self, done: impl Fn(&Self) -> bool) {
        tokio::time::timeout(BOUND, async {
            while !done(self) {
                let message = self.socket.next().await.expect("stream ended").unwrap();
                self.handle(message).await;
            }
        })
        .await
        .expect("not within the bound");
    }

    /// Reads and decodes until the hub sends nothing for 300 ms (the screen is current).
    async fn settle(&mut self) {
        while let Ok(message) =
            tokio::time::timeout(Duration::from_millis(300), self.socket.next()).await
        {
            self.handle(message.expect("stream ended").unwrap()).await;
        }
    }

    fn screen(&self) -> &Framebuffer {
        self.decoder.screen()
    }

    async fn type_text(&mut self, text: &str) {
        for key in text.bytes() {
            for down in [1, 0] {
                let event = [4, down, 0, 0, 0, 0, 0, key];
                self.socket
                    .send(Message::Binary(Bytes::copy_from_slice(&event)))
                    .await
                    .unwrap();
            }
        }
    }
}

fn sharing(linger: Duration, max_viewers: usize) -> proxy_server::ServerConfig {
    let mut config = proxy_server::ServerConfig::default();
    config.drain_timeout = Duration::from_millis(200);
    config.relay.close_timeout = Duration::from_millis(500);
    // The relay pings each viewer's side of the hub as it pings an upstream: the hub must
    // answer, or every shared session would end after the keepalive timeout.
    // (Half a second each: a debug build's full-screen Tight encode on a loaded CI machine
    // can hold a viewer's relay task for over 100 ms.)
    config.relay.upstream_keepalive = Some(proxy_core::Keepalive {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
    });
    config.share_consoles = Some(ShareConfig {
        linger,
        max_viewers,
        ..ShareConfig::default()
    });
    config
}

fn desktop_dials(upstream: &KubevirtUpstream) -> usize {
    upstream
        .seen()
        .iter()
        .filter(|(path, _)| path.ends_with(&format!("/{VM_DESKTOP}/vnc")))
        .count()
}

#[tokio::test]
async fn viewers_share_one_upstream_see_the_same_screen_and_only_controllers_type() {
    let upstream = KubevirtUpstream::start().await;
    let proxy =
        Running::proxy(dev_proxy(&upstream).server_config(sharing(Duration::from_millis(300), 3)))
            .await;
    let mut student = Viewer::open(proxy.addr, ConsoleRole::Control).await;
    let mut instructor = Viewer::open(proxy.addr, ConsoleRole::Observer).await;
    assert_eq!(desktop_dials(&upstream), 1, "one upstream for both viewers");
    // Everyone sees how many are watching.
    student
        .until(|viewer| viewer.name.ends_with("(2 watching)"))
        .await;
    instructor
        .until(|viewer| viewer.name.ends_with("(2 watching)"))
        .await;

    // The student types; the keys reach the VM.
    let console = upstream.sim.console(VM_DESKTOP).unwrap();
    student.type_text("ls").await;
    typed(&console, "ls").await;
    // The observer's keys never reach the VM.
    instructor.type_text("rm").await;
    student.type_text("x").await;
    typed(&console, "lsx").await;
    // Both see the same pixels.
    student.settle().await;
    instructor.settle().await;
    assert_eq!(student.screen(), instructor.screen());
    assert_eq!(
        console.typed_text(),
        "lsx",
        "the observer's keys reached the VM"
    );
    let reference = student.screen().clone();
    // A late joiner gets the whole screen in its first update.
    let mut late = Viewer::open(proxy.addr, ConsoleRole::Observer).await;
    late.until(|viewer| viewer.screen() == &reference).await;
    assert_eq!(desktop_dials(&upstream), 1);
    // A fourth viewer is over the limit of three.
    let over = format!("/{}/{VM_DESKTOP}", console_token(VM_DESKTOP, None));
    assert_eq!(
        refused(proxy.addr, &over, "").await,
        (429, "too many viewers for this vm".to_owned())
    );

    // The first to leave does not disturb the others.
    drop(instructor);
    late.until(|viewer| viewer.name.ends_with("(2 watching)"))
        .await;
    student.type_text("y").await;
    typed(&console, "lsxy").await;
    student.settle().await;
    late.settle().await;
    assert_eq!(student.screen(), late.screen());
    assert_ne!(student.screen(), &reference);
    // When the last viewer leaves, the upstream is closed after the linger.
    drop(student);
    drop(late);
    tokio::time::timeout(BOUND, async {
        while upstream.sim.open_sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream stayed open after the last viewer left");
    assert_eq!(desktop_dials(&upstream), 1);
    proxy.stop().await;
}

async fn typed(console: &kubevirt_sim::rfb::Console, text: &str) {
    tokio::time::timeout(BOUND, async {
        while console.typed_text() != text {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the VM saw {:?}, not {text:?}", console.typed_text()));
}

/// The figures of docs/sharing.md: the real binary's RSS with one shared 1280x800 console and
/// 1, 2, 5 and 10 viewers that have each received the whole screen. Memory is bounded by the
/// framebuffer plus a small per-viewer state, whatever the viewers do.
#[tokio::test]
async fn a_hubs_memory_is_its_framebuffer_plus_a_little_per_viewer() {
    use kubevirt_sim::rfb::RfbOptions;
    use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
    let sim = KubevirtSim::start(
        SimConfig::new()
            .rfb_options(RfbOptions::new(1280, 800))
            .vm_in_namespace(NAMESPACE, VM_DESKTOP, VmBehavior::Rfb),
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start_with_url(
        &sim.base_url(),
        &[
            ("SECRET_KEY", SECRET),
            ("WS_PROXY_SHARE_CONSOLES", "true"),
            ("WS_PROXY_SHARE_MAX_VIEWERS", "10"),
            ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
        ],
    );
    let pid = proxy.child.id();
    let baseline = rss_kib(pid);
    let mut viewers = Vec::new();
    let mut figures = Vec::new();
    for count in [1usize, 2, 5, 10] {
        while viewers.len() < count {
            let mut viewer = Viewer::open(proxy.addr, ConsoleRole::Observer).await;
            viewer.until(|viewer| viewer.screen().width() == 1280).await;
            viewer.settle().await;
            viewers.push(viewer);
        }
        figures.push((count, rss_kib(pid)));
    }
    let per_viewer = figures[3].1.saturating_sub(figures[0].1) / 9;
    let hub = figures[0].1.saturating_sub(baseline);
    println!(
        "shared 1280x800 console: proxy RSS {baseline} KiB idle; {}; the hub about {hub} KiB with one viewer, about {per_viewer} KiB per further viewer",
        figures
            .iter()
            .map(|(count, rss)| format!("{count} viewers {rss} KiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The framebuffer is 4,000 KiB; a viewer's state is tiles and buffers, not a screen copy
    // (the last update's bytes may still sit in its socket buffers).
    assert!(per_viewer < 2048, "{per_viewer} KiB per viewer");
    drop(viewers);
    proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn a_viewer_that_stops_reading_slows_nobody_else() {
    let upstream = KubevirtUpstream::start().await;
    let proxy =
        Running::proxy(dev_proxy(&upstream).server_config(sharing(Duration::from_millis(300), 4)))
            .await;
    let mut student = Viewer::open(proxy.addr, ConsoleRole::Control).await;
    let mut watcher = Viewer::open(proxy.addr, ConsoleRole::Observer).await;
    // This one reads nothing from now on.
    let stalled = Viewer::open(proxy.addr, ConsoleRole::Observer).await;
    let console = upstream.sim.console(VM_DESKTOP).unwrap();
    let text: String = std::iter::repeat_n("abcdefghij", 20).collect();
    for chunk in text.as_bytes().chunks(20) {
        student.type_text(std::str::from_utf8(chunk).unwrap()).await;
        // The others keep up meanwhile (each key is an update for every viewer).
        tokio::join!(student.until(|_| true), watcher.until(|_| true));
    }
    tokio::time::timeout(BOUND, async {
        // The simulated console wraps its typed line.
        while console.typed_text().replace('\n', "") != text {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the student's keys did not all reach the VM");
    student.settle().await;
    watcher.settle().await;
    assert_eq!(student.screen(), watcher.screen());
    // The stalled viewer is still there (its damage merged, not queued) and catches up at once
    // when it reads again.
    let mut stalled = stalled;
    let screen = student.screen().clone();
    stalled.until(|viewer| viewer.screen() == &screen).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_vm_that_stops_answering_pings_ends_every_viewer_with_a_reason() {
    // A console that does the RFB handshake and then never reads again: it answers no ping.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // Answer the subprotocol the proxy offers, as virt-api does.
        let answer = |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static("plain.kubevirt.io"),
            );
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, answer)
            .await
            .unwrap();
        let mut greeting = b"RFB 003.008\n".to_vec();
        greeting.extend_from_slice(&[1, 1]);
        ws.send(Message::Binary(greeting.into())).await.unwrap();
        // Version, security choice, ClientInit and the first requests arrive; answer the
        // handshake once, then go silent.
        let _ = ws.next().await;
        let mut init = vec![0, 0, 0, 0, 0, 64, 0, 48];
        init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        init.extend_from_slice(&[0, 0, 0, 6]);
        init.extend_from_slice(b"silent");
        ws.send(Message::Binary(init.into())).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });
    let mut config = sharing(Duration::from_millis(300), 3);
    if let Some(share) = &mut config.share_consoles {
        share.upstream_keepalive = Some(proxy_core::Keepalive {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(200),
        });
    }
    let proxy = Running::proxy(dev_proxy_to(format!("ws://{addr}")).server_config(config)).await;
    let mut viewer = Viewer::open(proxy.addr, ConsoleRole::Control).await;
    let close = tokio::time::timeout(BOUND, async {
        loop {
            match viewer.socket.next().await {
                Some(Ok(Message::Close(frame))) => {
                    break frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                other => panic!("no close: {other:?}"),
            }
        }
    })
    .await
    .expect("the silent VM was not noticed");
    assert_eq!(
        close,
        Some((1011, "upstream keepalive ping timeout".to_owned()))
    );
    proxy.stop().await;
}

#[test]
fn sharing_and_recording_together_are_a_configuration_error() {
    let directory = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .env("SECRET_KEY", SECRET)
        .env("LOCAL_DEV_MODE", "yes")
        .env("WS_PROXY_SHARE_CONSOLES", "true")
        .env("WS_PROXY_RECORD_DIR", directory.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shared sessions are not recorded"),
        "{stderr}"
    );
}
