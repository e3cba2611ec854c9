//! What each encoding costs on recorded console traffic: reads session recordings (noVNC's
//! player format, as `--record` and `e2e/record-traffic.mjs` write them), follows the VM's
//! stream with the hub's own client, and writes every update the VM sent again in each
//! encoding a hub can send a viewer, at the viewer's pixel format, printing the bytes.
//!
//!     cargo run --release -p proxy-rfb --example reencode -- e2e/artifacts/traffic/*.js
//!
//! The VM's own bytes are what an unshared session (or a passthrough viewer) receives; the
//! other columns are what a hub's encoder would send for the same changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;

use proxy_rfb::codec::tight::{TightEncoder, TightSettings};
use proxy_rfb::codec::{Encode, EncoderSettings};
use proxy_rfb::upstream::{UpstreamClient, UpstreamEvent};
use proxy_rfb::viewer::UpdatePlan;
use proxy_rfb::{PixelFormat, encoding};

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: reencode RECORDING.js...");
        std::process::exit(2);
    }
    println!(
        "| recording | updates | from the VM | Tight (sync) | Tight (self-contained) | ZRLE | zlib | Hextile | Raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        report(&path, &test_support::playback::entries(&text));
    }
}

/// The client's pixel format and encodings from its SetPixelFormat and SetEncodings.
fn client_settings(client: &[u8]) -> (PixelFormat, Vec<i32>) {
    let (format, encodings) = test_support::playback::rfb_client_settings(client);
    let format = format.map_or_else(PixelFormat::rgb888, |bytes| {
        PixelFormat::parse(&bytes).unwrap()
    });
    (format, encodings)
}

fn report(path: &str, entries: &[test_support::playback::Entry]) {
    let client: Vec<u8> = entries
        .iter()
        .filter(|entry| entry.from_client)
        .flat_map(|entry| entry.bytes.clone())
        .collect();
    let (format, encodings) = client_settings(&client);
    let settings = EncoderSettings::from_encodings(&encodings);
    let mut encoders: Vec<Box<dyn Encode>> = vec![
        Box::new(TightEncoder::new(TightSettings {
            compression: settings.compression,
            jpeg_quality: settings.quality,
            ..TightSettings::default()
        })),
        Box::new(TightEncoder::new(TightSettings {
            compression: settings.compression,
            jpeg_quality: settings.quality,
            self_contained: true,
            ..TightSettings::default()
        })),
        EncoderSettings::from_encodings(&[
            encoding::ZRLE,
            encoding::compression_level(settings.compression),
        ])
        .encoder(),
        EncoderSettings::from_encodings(&[
            encoding::ZLIB,
            encoding::compression_level(settings.compression),
        ])
        .encoder(),
        EncoderSettings::from_encodings(&[encoding::HEXTILE]).encoder(),
        EncoderSettings::from_encodings(&[encoding::RAW]).encoder(),
    ];
    let mut totals = vec![0usize; encoders.len()];
    let mut vm = UpstreamClient::new();
    let mut from_vm = 0usize;
    let mut updates = 0usize;
    let mut handshake_done = false;
    for entry in entries.iter().filter(|entry| !entry.from_client) {
        if handshake_done {
            from_vm += entry.bytes.len();
        }
        let events = match vm.feed(&entry.bytes) {
            Ok(events) => events,
            Err(error) => {
                println!("| {path} | stopped at an update this client cannot decode: {error} |");
                return;
            }
        };
        for event in events {
            match event {
                UpstreamEvent::Ready { .. } => {
                    vm.configure(format, &encodings);
                    handshake_done = true;
                }
                UpstreamEvent::Updated(rects) => {
                    updates += 1;
                    let plan = UpdatePlan {
                        rects,
                        screen: Some(Arc::new(vm.screen().clone())),
                        ..UpdatePlan::default()
                    };
                    for (total, encoder) in totals.iter_mut().zip(&mut encoders) {
                        *total += plan.encode(&format, encoder.as_mut()).len();
                    }
                }
                _ => {}
            }
        }
    }
    let cell = |bytes: usize| format!("{bytes} ({:.2}x)", bytes as f64 / from_vm.max(1) as f64);
    println!(
        "| {path} | {updates} | {from_vm} | {} |",
        totals
            .iter()
            .map(|&bytes| cell(bytes))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}
