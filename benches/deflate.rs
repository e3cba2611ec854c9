//! permessage-deflate on recorded console traffic: the proxy's own compressor
//! (`proxy_wire::deflate_message`, one message at a time, no context between messages) over the
//! server messages of three QEMU sessions recorded through the proxy (`e2e/record-traffic.mjs`;
//! the steady part of each, extracted into `benches/data/*-updates.bin`, each message a 4-byte
//! big-endian length and its bytes). Prints the bytes saved per mix (a count, the same on every
//! host) and measures the time per message set, from which docs/performance.md gives CPU per MiB.
//!
//! Run: `cargo bench -p ws-proxy-benches --bench deflate -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proxy_wire::{DEFLATE_MIN_MESSAGE_BYTES, deflate_message, inflate_message};

/// The recorded messages of one mix.
fn messages(mix: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/data/{mix}-updates.bin", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&path).expect("recorded messages");
    let mut messages = Vec::new();
    let mut rest = data.as_slice();
    while let [a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        messages.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    messages
}

/// What the proxy sends for one message: deflated when that is smaller, else as it is.
fn on_the_wire(message: &[u8]) -> usize {
    if message.len() < DEFLATE_MIN_MESSAGE_BYTES {
        return message.len();
    }
    deflate_message(message).map_or(message.len(), |compressed| compressed.len())
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for mix in ["idle", "typing", "scrolling"] {
        let messages = messages(mix);
        let plain: usize = messages.iter().map(Vec::len).sum();
        let sent: usize = messages.iter().map(|message| on_the_wire(message)).sum();
        for message in &messages {
            if let Some(compressed) = deflate_message(message) {
                let back = inflate_message(&compressed, None).expect("inflates");
                assert_eq!(back.as_ref(), message.as_slice());
            }
        }
        println!(
            "{mix}: {} messages, {plain} bytes, {sent} bytes sent with deflate ({:.1} % saved)",
            messages.len(),
            100.0 * (1.0 - sent as f64 / plain as f64)
        );
        group.throughput(Throughput::Bytes(plain as u64));
        group.bench_function(mix, |b| {
            b.iter(|| messages.iter().map(|m| on_the_wire(m)).sum::<usize>())
        });
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
