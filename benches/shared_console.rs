//! The shared console's per-viewer cost: building a viewer's update from the hub's 1280x800
//! framebuffer (a whole screen, as a late joiner gets, and a typing-sized change), in noVNC's
//! pixel format and in a 16-bit one; and the hub decoding a whole-screen Raw update.
//!
//! `cargo bench -p ws-proxy-benches --bench shared_console -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proxy_rfb::PixelFormat;
use proxy_rfb::framebuffer::{Framebuffer, Rect};
use proxy_rfb::upstream::UpstreamClient;
use proxy_rfb::viewer::ViewerServer;

const WIDTH: u16 = 1280;
const HEIGHT: u16 = 800;

fn screen() -> Framebuffer {
    let mut screen = Framebuffer::new(WIDTH, HEIGHT);
    let data: Vec<u8> = (0..u32::from(WIDTH) * u32::from(HEIGHT))
        .flat_map(|index| (index.wrapping_mul(2_654_435_761) & 0x00ff_ffff).to_le_bytes())
        .collect();
    if screen
        .put_pixels(screen.bounds(), &data, &PixelFormat::rgb888())
        .is_err()
    {
        panic!("cannot fill the bench screen");
    }
    screen
}

/// A viewer past its handshake, in `format`, that asked for an update.
fn ready_viewer(format: Option<[u8; 16]>) -> ViewerServer {
    let mut viewer = ViewerServer::new(WIDTH, HEIGHT, "bench");
    let mut input = b"RFB 003.008\n".to_vec();
    input.extend_from_slice(&[1, 1]);
    if let Some(format) = format {
        input.extend_from_slice(&[0, 0, 0, 0]);
        input.extend_from_slice(&format);
    }
    if viewer.feed(&input).is_err() {
        panic!("the bench viewer's handshake failed");
    }
    viewer.take_output();
    viewer
}

fn request(viewer: &mut ViewerServer, incremental: bool) {
    let mut message = vec![3, u8::from(incremental), 0, 0, 0, 0];
    message.extend_from_slice(&WIDTH.to_be_bytes());
    message.extend_from_slice(&HEIGHT.to_be_bytes());
    if viewer.feed(&message).is_err() {
        panic!("the bench request failed");
    }
}

const RGB565: [u8; 16] = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];

fn viewer_updates(c: &mut Criterion) {
    let screen = std::sync::Arc::new(screen());
    let mut group = c.benchmark_group("shared_console_viewer_update");
    let full_bytes = u64::from(WIDTH) * u64::from(HEIGHT) * 4;
    group.throughput(Throughput::Bytes(full_bytes));
    for (name, format) in [
        ("full_screen_rgb888", None),
        ("full_screen_rgb565", Some(RGB565)),
    ] {
        let mut viewer = ready_viewer(format);
        group.bench_function(name, |b| {
            b.iter(|| {
                request(&mut viewer, false);
                black_box(viewer.encode_update(&screen))
            })
        });
    }
    group.throughput(Throughput::Elements(1));
    let mut viewer = ready_viewer(None);
    request(&mut viewer, false);
    let _ = viewer.encode_update(&screen);
    let typed = [Rect {
        x: 130,
        y: 560,
        width: 16,
        height: 24,
    }];
    group.bench_function("typed_character_rgb888", |b| {
        b.iter(|| {
            viewer.damaged(&typed);
            request(&mut viewer, true);
            black_box(viewer.encode_update(&screen))
        })
    });
    group.finish();
}

fn hub_decoding(c: &mut Criterion) {
    let mut handshake = b"RFB 003.008\n".to_vec();
    handshake.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
    handshake.extend_from_slice(&WIDTH.to_be_bytes());
    handshake.extend_from_slice(&HEIGHT.to_be_bytes());
    handshake.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    handshake.extend_from_slice(&[0, 0, 0, 0]);
    let mut update = vec![0, 0, 0, 1, 0, 0, 0, 0];
    update.extend_from_slice(&WIDTH.to_be_bytes());
    update.extend_from_slice(&HEIGHT.to_be_bytes());
    update.extend_from_slice(&0i32.to_be_bytes());
    update.extend((0..u32::from(WIDTH) * u32::from(HEIGHT)).flat_map(|index| index.to_le_bytes()));
    let mut hub = UpstreamClient::new();
    if hub.feed(&handshake).is_err() {
        panic!("the bench hub's handshake failed");
    }
    let mut group = c.benchmark_group("shared_console_hub");
    group.throughput(Throughput::Bytes(update.len() as u64));
    group.bench_function("decode_full_screen_raw", |b| {
        b.iter(|| black_box(hub.feed(&update).map(|events| events.len())))
    });
    group.finish();
}

criterion_group!(benches, viewer_updates, hub_decoding);
criterion_main!(benches);
