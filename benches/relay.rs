//! In-memory relay throughput: frames/s and bytes/s of `proxy_core::relay` for 16 B, 1 KiB and
//! 64 KiB frames, between two [`MemoryTransport`] pairs on one runtime thread, so the figure is
//! the relay's own cost (plus the in-memory channel's), not the network's.
//!
//! Run: `cargo bench -p ws-proxy-benches --bench relay -- --warm-up-time 1 --measurement-time 3`
// Bench harness: a failed setup or transfer must abort the run, so `expect` is the right tool.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{Frame, MemoryTransport, RelayConfig, relay};

/// Frames in flight per direction in each in-memory pair, about what a WebSocket's buffers hold.
const CAPACITY: usize = 64;

fn in_memory_relay(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("relay_in_memory");
    for size in [16usize, 1024, 64 * 1024] {
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: size as u64,
        });
        // One session per frame size, kept open across iterations as a console session would be.
        let (mut browser, client) = MemoryTransport::pair(CAPACITY);
        let (upstream, mut console) = MemoryTransport::pair(CAPACITY);
        let config = RelayConfig::default();
        let session = runtime
            .spawn(async move { relay(client, upstream, &config, std::future::pending()).await });
        let payload = Bytes::from(vec![0x5a; size]);
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = Instant::now();
                    let send = async {
                        for _ in 0..iterations {
                            browser
                                .feed(Frame::Binary(payload.clone()))
                                .await
                                .expect("relay accepts frames");
                        }
                        browser.flush().await.expect("relay accepts frames");
                    };
                    let receive = async {
                        for _ in 0..iterations {
                            console
                                .next()
                                .await
                                .expect("relay delivers frames")
                                .expect("no error");
                        }
                    };
                    tokio::join!(send, receive);
                    started.elapsed()
                })
            });
        });
        session.abort();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = in_memory_relay
}
criterion_main!(benches);
