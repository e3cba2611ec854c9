//! A real RFB 3.8 client over the simulator's WebSocket sees the test pattern and its own input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dial, RfbClient, dial};
use kubevirt_sim::rfb::{BAR_COLOURS, PANEL_COLOUR, POINTER_COLOUR, PixelFormat, TYPED_COLOUR};
use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};

async fn rfb_sim() -> KubevirtSim {
    KubevirtSim::start(SimConfig::new().vm("ubuntu", VmBehavior::Rfb))
        .await
        .unwrap()
}

async fn connect(sim: &KubevirtSim) -> RfbClient {
    let ws = dial(
        sim,
        "default",
        "ubuntu",
        Dial {
            subprotocols: Some("plain.kubevirt.io"),
            ..Dial::default()
        },
    )
    .await;
    RfbClient::handshake(ws).await
}

fn assert_bars(update: &common::UpdateRect, width: u16) {
    let bar_width = width / BAR_COLOURS.len() as u16;
    for (index, colour) in BAR_COLOURS.iter().enumerate() {
        let x = bar_width * index as u16 + bar_width / 2;
        assert_eq!(update.pixel(x, 10), *colour, "bar {index} at x={x}");
    }
}

#[tokio::test]
async fn full_update_in_novnc_pixel_format_shows_the_test_pattern() {
    let sim = rfb_sim().await;
    let mut client = connect(&sim).await;
    assert_eq!((client.width, client.height), (800, 600));
    assert_eq!(client.name, "ws-proxy test VM (ubuntu)");
    assert_eq!(client.format, PixelFormat::SERVER_NATIVE);

    client.set_pixel_format(PixelFormat::NOVNC).await;
    client.set_encodings(&[0, 7, -223, -224]).await;
    client.request_update(false).await;
    let update = client.read_update().await;
    assert_eq!(update.len(), 1);
    let screen = &update[0];
    assert_eq!((screen.rect.width, screen.rect.height), (800, 600));
    assert_bars(screen, 800);
    assert_eq!(screen.pixel(2, 598), PANEL_COLOUR);
    // The title text is drawn in the panel: some pixels of its row are neither panel nor bar.
    let title_row = 600 - 240 + 12 + 3;
    let inked = (0..800)
        .filter(|x| screen.pixel(*x, title_row) != PANEL_COLOUR)
        .count();
    assert!(inked > 20, "title text visible ({inked} inked pixels)");
    // Every pixel the client decoded is what the console holds.
    let console = sim.console("ubuntu").unwrap();
    for (x, y) in [(0, 0), (399, 300), (799, 599), (123, 456)] {
        assert_eq!(Some(screen.pixel(x, y)), console.pixel(x, y));
    }
}

#[tokio::test]
async fn big_endian_32_bit_format_is_honoured() {
    let sim = rfb_sim().await;
    let mut client = connect(&sim).await;
    let big_endian = PixelFormat {
        big_endian: true,
        red_shift: 0,
        green_shift: 8,
        blue_shift: 16,
        ..PixelFormat::SERVER_NATIVE
    };
    client.set_pixel_format(big_endian).await;
    client.request_update(false).await;
    let update = client.read_update().await;
    assert_bars(&update[0], 800);
}

#[tokio::test]
async fn typed_key_appears_on_an_incremental_update() {
    let sim = rfb_sim().await;
    let mut client = connect(&sim).await;
    client.set_pixel_format(PixelFormat::NOVNC).await;
    client.request_update(false).await;
    let full = client.read_update().await;
    let typed_area = sim.console("ubuntu").unwrap().typed_area();
    let typed_ink = |rect: &common::UpdateRect| {
        (typed_area.y..typed_area.y + typed_area.height)
            .flat_map(|y| (typed_area.x..typed_area.x + typed_area.width).map(move |x| (x, y)))
            .filter(|(x, y)| rect.pixel(*x, *y) == TYPED_COLOUR)
            .count()
    };
    let prompt_ink = typed_ink(&full[0]);
    assert!(prompt_ink > 0, "the prompt is drawn");

    // Nothing changed yet: the incremental request is deferred, so the next update the client
    // receives is the one caused by the key press sent after it.
    client.request_update(true).await;
    client.type_key(u32::from(b'Q')).await;
    let update = client.read_update().await;
    assert!(
        update
            .iter()
            .all(|r| r.rect.width < 800 || r.rect.height < 600),
        "only changed rectangles are sent"
    );
    let typed = update
        .iter()
        .find(|r| r.rect == typed_area)
        .expect("the typed area was sent");
    assert!(typed_ink(typed) > prompt_ink, "the typed letter added ink");
    assert_eq!(sim.console("ubuntu").unwrap().typed_text(), "Q");
}

#[tokio::test]
async fn pointer_is_drawn_where_the_client_moved_it() {
    let sim = rfb_sim().await;
    let mut client = connect(&sim).await;
    client.request_update(false).await;
    client.read_update().await;
    client.pointer(1, 150, 100).await;
    client.request_update(true).await;
    let mut seen_pointer = false;
    // The pointer event and the request may be answered in one or two updates.
    for _ in 0..2 {
        let update = client.read_update().await;
        if let Some(rect) = update.iter().find(|r| {
            r.rect.x <= 150
                && 150 < r.rect.x + r.rect.width
                && r.rect.y <= 100
                && 100 < r.rect.y + r.rect.height
        }) {
            assert_eq!(rect.pixel(150, 100), POINTER_COLOUR);
            seen_pointer = true;
            break;
        }
        client.request_update(true).await;
    }
    assert!(seen_pointer, "an update covered the new pointer position");
    assert_eq!(sim.console("ubuntu").unwrap().pointer(), (150, 100, 1));
}

#[tokio::test]
async fn two_sessions_share_one_screen() {
    let sim = rfb_sim().await;
    let mut typist = connect(&sim).await;
    let mut watcher = connect(&sim).await;
    watcher.set_pixel_format(PixelFormat::NOVNC).await;
    watcher.request_update(false).await;
    watcher.read_update().await;
    watcher.request_update(true).await;
    typist.type_key(u32::from(b'z')).await;
    let update = watcher.read_update().await;
    let typed_area = sim.console("ubuntu").unwrap().typed_area();
    assert!(update.iter().any(|r| r.rect == typed_area));
    assert_eq!(sim.stats().sessions_open, 2);
}
